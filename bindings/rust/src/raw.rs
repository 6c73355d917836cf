// SPDX-License-Identifier: MIT
//! The C slice under every slice type: the word accessors over the public
//! `struct sm_view` (the C header's inline fast path, in Rust).
use super::*;

/// One C slice; released on drop.  The view's base, length and state
/// pointer are constant for the slice's life (version 1 of struct sm_view):
/// they are copied here once, so that the compiler can keep them in
/// registers across a loop of accesses (the volatile accesses in between
/// would otherwise force a reload of each field, every time).
pub(crate) struct Raw {
    pub(crate) s: NonNull<ffi::sm_slice>,
    pub(crate) base: *mut u8,
    pub(crate) len: u64,
    pub(crate) state: *const u32,
}

// SAFETY: the C library allows concurrent reads through one slice; writes,
// commit and release need one thread at a time, which `&mut` (and ownership,
// for release) guarantees.  A slice may be handed to another thread.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: released once; a release error is reported by `release`.
        unsafe { ffi::sm_release(self.s.as_ptr()) };
        crate::log::slice_released();
    }
}

/// A machine word the accessors read and write.
pub(crate) trait Word: Copy {
    const N: usize;
    /// A volatile load: one access whatever the alignment (single-copy
    /// atomic at natural alignment), as the C header's packed volatile
    /// access compiles to.
    unsafe fn load(p: *const u8) -> Self;
    /// A volatile store, likewise.
    unsafe fn store(p: *mut u8, v: Self);
}

// A byte: any address is aligned.
impl Word for u8 {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> u8 {
        ptr::read_volatile(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: u8) {
        ptr::write_volatile(p, v)
    }
}

// Wider words: x86-64 and AArch64 load and store any alignment with one instruction.
// An `asm!` block is opaque to the optimiser (never merged, split, cached
// or removed), which is what volatile means here; `ptr::read_volatile`
// would need an aligned pointer, and over a byte array it compiles to one
// access per byte.
#[cfg(target_arch = "x86_64")]
macro_rules! word {
    ($t:ty, $reg:literal, $mov:literal) => {
        impl Word for $t {
            const N: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            unsafe fn load(p: *const u8) -> $t {
                let x: $t;
                std::arch::asm!(concat!($mov, " {x", $reg, "}, [{p}]"), p = in(reg) p, x = lateout(reg) x,
                                options(nostack, preserves_flags, readonly));
                x
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: $t) {
                std::arch::asm!(concat!("mov [{p}], {x", $reg, "}"), p = in(reg) p, x = in(reg) v,
                                options(nostack, preserves_flags));
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
mod words {
    use super::Word;
    word!(u16, ":x", "mov");
    word!(u32, ":e", "mov");
    word!(u64, ":r", "mov");
}

#[cfg(target_arch = "aarch64")]
macro_rules! word {
    ($t:ty, $reg:literal, $ld:literal, $st:literal) => {
        impl Word for $t {
            const N: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            unsafe fn load(p: *const u8) -> $t {
                let x: u64;
                std::arch::asm!(concat!($ld, " {x", $reg, "}, [{p}]"), p = in(reg) p, x = lateout(reg) x,
                                options(nostack, preserves_flags, readonly));
                x as $t
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: $t) {
                std::arch::asm!(concat!($st, " {x", $reg, "}, [{p}]"), p = in(reg) p, x = in(reg) v as u64,
                                options(nostack, preserves_flags));
            }
        }
    };
}
#[cfg(target_arch = "aarch64")]
mod words {
    use super::Word;
    word!(u16, ":w", "ldrh", "strh");
    word!(u32, ":w", "ldr", "str");
    word!(u64, "", "ldr", "str");
}

// Elsewhere: a volatile access of the word type when aligned, else one
// volatile access per byte.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
macro_rules! word {
    ($t:ty) => {
        impl Word for $t {
            const N: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            unsafe fn load(p: *const u8) -> $t {
                if p as usize % Self::N == 0 {
                    ptr::read_volatile(p as *const $t)
                } else {
                    <$t>::from_ne_bytes(ptr::read_volatile(p as *const [u8; std::mem::size_of::<$t>()]))
                }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: $t) {
                if p as usize % Self::N == 0 {
                    ptr::write_volatile(p as *mut $t, v)
                } else {
                    ptr::write_volatile(p as *mut [u8; std::mem::size_of::<$t>()], v.to_ne_bytes())
                }
            }
        }
    };
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod words {
    use super::Word;
    use std::ptr;
    word!(u16);
    word!(u32);
    word!(u64);
}

impl Raw {
    pub(crate) fn new(s: NonNull<ffi::sm_slice>) -> Raw {
        let v = s.as_ptr() as *const ffi::sm_view;
        // SAFETY: every sm_slice begins with struct sm_view.
        unsafe { Raw { s, base: (*v).base, len: (*v).len, state: (*v).state } }
    }

    #[inline(always)]
    pub(crate) fn view(&self) -> *const ffi::sm_view {
        self.s.as_ptr() as *const ffi::sm_view
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn offset(&self) -> u64 {
        unsafe { ffi::sm_offset(self.s.as_ptr()) }
    }

    /// The C inline fast path: bounds check, one volatile load, one load of
    /// the state word; the library computes the error when a check fails.
    #[inline(always)]
    pub(crate) fn get<T: Word>(&self, off: u64) -> io::Result<T> {
        // SAFETY: the access lies inside [base, base+len), which stays
        // mapped until the slice is released (a page lost to truncation is
        // replaced by a zero page by the SIGBUS guard); the state word lives
        // as long as the mapping.
        unsafe {
            let len = self.len;
            if off < len && len - off >= T::N as u64 {
                let x = T::load(self.base.add(off as usize));
                if ptr::read_volatile(self.state) == 0 {
                    return Ok(x);
                }
                return self.slow(off, T::N, 0).map(|()| x);
            }
        }
        Err(self.fail(off, T::N, 0))
    }

    #[inline(always)]
    pub(crate) fn put<T: Word>(&mut self, off: u64, x: T) -> io::Result<()> {
        let v = self.view();
        // SAFETY: as in get; a write slice's view has a dirty bitmap covering
        // its pages, updated atomically as the C inline path does.
        unsafe {
            let len = self.len;
            if (*v).flags & ffi::SM_VIEW_WRITE != 0 && off < len && len - off >= T::N as u64 {
                T::store(self.base.add(off as usize), x);
                if ptr::read_volatile(self.state) != 0 {
                    self.slow(off, T::N, 1)?;
                }
                mark(v, off, T::N as u64);
                return Ok(());
            }
        }
        Err(self.fail(off, T::N, 1))
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn slow(&self, off: u64, n: usize, write: c_int) -> io::Result<()> {
        // SAFETY: a live slice.
        check(unsafe { ffi::sm__access_fail(self.s.as_ptr(), off, n as u64, write) })
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn fail(&self, off: u64, n: usize, write: c_int) -> io::Error {
        // SAFETY: a live slice.
        let rc = unsafe { ffi::sm__access_fail(self.s.as_ptr(), off, n as u64, write) };
        error(if rc < 0 { rc } else { -ffi::ERANGE })
    }

    pub(crate) fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return if off <= self.len() { Ok(()) } else { Err(error(-ffi::ERANGE)) };
        }
        // SAFETY: buf is valid for buf.len() bytes.
        check(unsafe { ffi::sm_read(self.s.as_ptr(), off, buf.as_mut_ptr() as *mut c_void, buf.len()) })
    }

    pub(crate) fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return if off <= self.len() { Ok(()) } else { Err(error(-ffi::ERANGE)) };
        }
        // SAFETY: buf is valid for buf.len() bytes.
        check(unsafe { ffi::sm_write(self.s.as_ptr(), off, buf.as_ptr() as *const c_void, buf.len()) })
    }

    pub(crate) fn sub(&self, off: u64, len: u64) -> io::Result<Raw> {
        let mut s = ptr::null_mut();
        // SAFETY: a live slice; sm_sub only takes references under the file lock.
        check(unsafe { ffi::sm_sub(self.s.as_ptr(), off, len, &mut s) })?;
        Ok(Raw::new(NonNull::new(s).ok_or_else(|| error(-ffi::ENOMEM))?))
    }

    pub(crate) fn release(self) -> io::Result<()> {
        let this = ManuallyDrop::new(self);
        // SAFETY: released exactly once (Drop is suppressed).
        let rc = unsafe { ffi::sm_release(this.s.as_ptr()) };
        crate::log::slice_released();
        check(rc)
    }

    /// Raw bytes of the slice.
    pub(crate) unsafe fn bytes(&self) -> &[u8] {
        let v = self.view();
        std::slice::from_raw_parts((*v).base, (*v).len as usize)
    }
}

/// Sets the dirty bits of the pages of `[off, off+n)` (C's `sm__mark`).
#[inline(always)]
pub(crate) unsafe fn mark(v: *const ffi::sm_view, off: u64, n: u64) {
    let shift = (*v).page_shift;
    let first = ((*v).dirty_off + off) >> shift;
    let last = ((*v).dirty_off + off + n - 1) >> shift;
    for p in first..=last {
        let bit = 1u64 << (p & 63);
        // SAFETY: the bitmap is shared with C, which accesses it atomically.
        let word = &*((*v).dirty.add((p >> 6) as usize) as *const AtomicU64);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }
}
