// SPDX-License-Identifier: MIT
//! Range locks without a mapping (`sm_lock`), and waiting for a region with
//! a time limit.
//!
//! A timed wait is the C library's own (`sm_lock_timed`,
//! `sm_map_read_timed`, `sm_map_write_timed`: a bound per call): the waiter
//! is listed in the lock table, woken by the release, and a wait on the
//! caller's own hold or in a cycle of waiters across processes is `EDEADLK`.
use super::*;
use std::os::raw::c_char;

/// A duration as a C wait bound: at least 1 ns (0 would mean "fail fast",
/// `EBUSY`, where a zero timeout is `ETIMEDOUT` after one try), and
/// `SM_WAIT_FOREVER` when it does not fit in 64 bits.
fn duration_ns(d: Duration) -> u64 {
    let ns = d.as_nanos();
    if ns >= u128::from(ffi::SM_WAIT_FOREVER) {
        ffi::SM_WAIT_FOREVER
    } else {
        (ns as u64).max(1)
    }
}

impl Mode {
    fn lock_flag(self) -> c_int {
        match self {
            Mode::Read => ffi::SM_LOCK_READ,
            Mode::Write => ffi::SM_LOCK_WRITE,
        }
    }
}

impl FileInner {
    /// Runs `attempt` once: given `None`, it fails fast (a conflict is
    /// `WouldBlock`, naming the region for [`holders_of`]); given
    /// `Some(ns)`, it waits up to `ns` (the `_timed` call).
    pub(crate) fn acquire<T>(
        self: &Arc<Self>,
        off: u64,
        len: u64,
        timeout: Option<Duration>,
        attempt: impl FnOnce(Option<u64>) -> Result<T, c_int>,
    ) -> io::Result<T> {
        attempt(timeout.map(duration_ns)).map_err(|rc| {
            let conflict = if rc == -ffi::EBUSY { Some(Conflict { file: Arc::clone(self), off, len }) } else { None };
            error_in(rc, conflict)
        })
    }
}

/// A byte range locked without a mapping ([`File::lock`]), borrowed from
/// its [`File`]: the same lock as a slice's (an OFD lock and a lock table
/// entry), so it conflicts with slices and ranges of other processes, other
/// `File`s and, as slices do, with this `File`'s own overlapping slices and
/// ranges.  The range may lie past the end of the file.  Dropping it
/// unlocks.  `Send + Sync`.
///
/// A range lock cannot outlive its file:
///
/// ```compile_fail,E0597
/// # fn f(path: &std::path::Path) -> std::io::Result<()> {
/// let guard;
/// {
///     let file = safemap::OpenOptions::new().read(true).write(true).open(path)?;
///     guard = file.lock(0, 8, safemap::Mode::Write)?;
/// } // `file` dropped here while still borrowed
/// drop(guard);
/// # Ok(()) }
/// ```
pub struct RangeLock<'f> {
    r: NonNull<ffi::sm_range>,
    off: u64,
    len: u64,
    mode: Mode,
    _file: PhantomData<&'f File>,
}

// SAFETY: sm_unlock may run on any thread; a range has no other methods.
unsafe impl Send for RangeLock<'_> {}
unsafe impl Sync for RangeLock<'_> {}

impl fmt::Debug for RangeLock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeLock").field("off", &self.off).field("len", &self.len).field("mode", &self.mode).finish()
    }
}

impl RangeLock<'_> {
    /// The first locked byte.
    pub fn offset(&self) -> u64 {
        self.off
    }

    /// The number of locked bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always `false`: a range is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lock's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Unlocks now, reporting an unlock error (dropping it does the same
    /// silently).
    pub fn unlock(self) -> io::Result<()> {
        let this = ManuallyDrop::new(self);
        // SAFETY: unlocked exactly once (Drop is suppressed).
        check(unsafe { ffi::sm_unlock(this.r.as_ptr()) })
    }
}

impl Drop for RangeLock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocked once; sm_unlock frees the range in every case.
        unsafe { ffi::sm_unlock(self.r.as_ptr()) };
    }
}

impl File {
    /// Locks `[off, off+len)` in `mode` without mapping it (`sm_lock`),
    /// failing fast.  Errors: `WouldBlock` if a conflicting region is held
    /// (by another process, another `File`, or a slice or range of this
    /// one; [`holders_of`] names the holders), `EBADF` for a write lock on
    /// a read-only file, `EINVAL` for a zero length, `ERANGE` if `off + len`
    /// passes `i64::MAX`.
    pub fn lock(&self, off: u64, len: u64, mode: Mode) -> io::Result<RangeLock<'_>> {
        self.lock_waiting(off, len, mode, None)
    }

    /// [`File::lock`], waiting up to `timeout` for conflicting holders to
    /// go (`Duration::MAX`: no bound).  Errors as `lock`, plus: `TimedOut`
    /// (`ETIMEDOUT`) when the time is up (a zero timeout tries once), and
    /// `EDEADLK` (kind `Other`, see [`is_deadlock`]) when waiting would
    /// never end: the calling thread holds a conflicting region itself
    /// (through any `File`), or the wait would close a cycle of waiters
    /// across processes.  The waiter is listed in the lock table (state
    /// waiting) and woken when the region is released.
    pub fn lock_timeout(&self, off: u64, len: u64, mode: Mode, timeout: Duration) -> io::Result<RangeLock<'_>> {
        self.lock_waiting(off, len, mode, Some(timeout))
    }

    /// [`File::map_read`], waiting up to `timeout` as [`File::lock_timeout`] does.
    pub fn map_read_timeout(&self, off: u64, len: u64, timeout: Duration) -> io::Result<ReadSlice<'_>> {
        let raw = self.inner.map_waiting(off, len, ffi::SM_DIRECT, false, Some(timeout))?;
        Ok(ReadSlice { raw, _file: PhantomData })
    }

    /// [`File::map_write`], waiting up to `timeout` as [`File::lock_timeout`] does.
    pub fn map_write_timeout(&self, off: u64, len: u64, timeout: Duration) -> io::Result<WriteSlice<'_>> {
        let raw = self.inner.map_waiting(off, len, ffi::SM_DIRECT, true, Some(timeout))?;
        Ok(WriteSlice { raw, _file: PhantomData })
    }

    fn lock_waiting(&self, off: u64, len: u64, mode: Mode, timeout: Option<Duration>) -> io::Result<RangeLock<'_>> {
        let f = self.inner.ptr.as_ptr();
        let r = self.inner.acquire(off, len, timeout, |wait| {
            let mut r = ptr::null_mut();
            let tag = ptr::null::<c_char>(); // the file's own tag
            // SAFETY: a live sm_file; out is a valid pointer.
            let rc = unsafe {
                match wait {
                    Some(ns) => ffi::sm_lock_timed(f, off, len, mode.lock_flag(), ns, tag, &mut r),
                    None => ffi::sm_lock(f, off, len, mode.lock_flag(), tag, &mut r),
                }
            };
            if rc < 0 {
                Err(rc)
            } else {
                NonNull::new(r).ok_or(-ffi::ENOMEM)
            }
        })?;
        Ok(RangeLock { r, off, len, mode, _file: PhantomData })
    }
}
