// SPDX-License-Identifier: MIT
//! Range locks without a mapping (`sm_lock`), and waiting for a region with
//! a time limit.
//!
//! # Where the per-call time limit comes from
//!
//! Libraries whose `safemap.h` declares `sm_lock_timed`,
//! `sm_map_read_timed` and `sm_map_write_timed` (the build script looks and
//! sets `cfg(safemap_timed)`) take a bound per call: every timed wait is the
//! C library's wait (listed as waiting, woken by the release, cycles of
//! waiters across processes found).
//!
//! Older libraries bound `SM_WAIT` only by the file's `sm_options.wait_ns`,
//! fixed when the file is opened.  A second `sm_file` per timeout would not
//! do: its locks would belong to another open file description, so they
//! would conflict with this `File`'s own slices and ranges where
//! `File::lock` does not.  So [`FileInner::acquire`] does this there, on the
//! `File`'s own `sm_file`:
//!
//! * a timeout equal to the file's bound ([`OpenOptions::wait_timeout`],
//!   10 s by default) is one `SM_WAIT` call: the C library's wait itself;
//! * any other timeout retries the fail-fast acquisition with a backoff
//!   (50 us doubling to 2 ms) until it succeeds or the time is up
//!   (`ETIMEDOUT`); a conflicting hold of the calling thread itself is
//!   `EDEADLK` at once, as in the C wait.
use super::*;
use std::os::raw::c_char;
#[cfg(not(safemap_timed))]
use std::time::Instant;

/// `sm_options.wait_ns == 0` means this many ns (10 s).
pub(crate) const DEFAULT_WAIT_NS: u64 = 10_000_000_000;

/// A duration as `sm_options.wait_ns`: at least 1 ns (0 would mean the
/// default), and `SM_WAIT_FOREVER` when it does not fit in 64 bits.
pub(crate) fn duration_ns(d: Duration) -> u64 {
    let ns = d.as_nanos();
    if ns >= u128::from(ffi::SM_WAIT_FOREVER) {
        ffi::SM_WAIT_FOREVER
    } else {
        (ns as u64).max(1)
    }
}

#[cfg(not(safemap_timed))]
extern "C" {
    // glibc 2.30 and later (Debian 12 has 2.36).
    fn gettid() -> i32;
}

impl Mode {
    fn lock_flag(self) -> c_int {
        match self {
            Mode::Read => ffi::SM_LOCK_READ,
            Mode::Write => ffi::SM_LOCK_WRITE,
        }
    }
}

/// How an acquisition waits for conflicting holders.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all: `EBUSY` (the plain call, no `SM_WAIT`).
    No,
    /// Up to the file's own bound (the plain call with `SM_WAIT`).
    #[cfg_attr(safemap_timed, allow(dead_code))]
    FileBound,
    /// Up to this many ns (the `_timed` call; never 0: that fails fast).
    #[cfg_attr(not(safemap_timed), allow(dead_code))]
    Ns(u64),
}

impl Wait {
    /// The flags for the plain call (`SM_WAIT` or 0).
    pub(crate) fn flag(self) -> c_int {
        match self {
            Wait::FileBound => ffi::SM_WAIT,
            _ => 0,
        }
    }
}

impl FileInner {
    /// Runs `attempt` until it succeeds or fails otherwise than by a
    /// conflict; with `timeout == None`, once (a conflict is `WouldBlock`,
    /// naming the region for [`holders_of`]).
    pub(crate) fn acquire<T>(
        self: &Arc<Self>,
        off: u64,
        len: u64,
        write: bool,
        timeout: Option<Duration>,
        mut attempt: impl FnMut(Wait) -> Result<T, c_int>,
    ) -> io::Result<T> {
        let rc = match timeout {
            None => match attempt(Wait::No) {
                Ok(x) => return Ok(x),
                Err(rc) => rc,
            },
            #[cfg(safemap_timed)]
            Some(t) => {
                let _ = write; // the C wait finds deadlocks itself
                match attempt(Wait::Ns(duration_ns(t))) {
                    Ok(x) => return Ok(x),
                    Err(rc) => rc,
                }
            }
            #[cfg(not(safemap_timed))]
            Some(t) if duration_ns(t) == self.wait_ns => match attempt(Wait::FileBound) {
                Ok(x) => return Ok(x),
                Err(rc) => rc,
            },
            #[cfg(not(safemap_timed))]
            Some(t) => {
                let deadline = Instant::now().checked_add(t);
                let mut pause = Duration::from_micros(50);
                loop {
                    let rc = match attempt(Wait::No) {
                        Ok(x) => return Ok(x),
                        Err(rc) => rc,
                    };
                    if rc != -ffi::EBUSY {
                        break rc;
                    }
                    if self.held_by_this_thread(off, len, write) {
                        break -ffi::EDEADLK;
                    }
                    let now = Instant::now();
                    let left = match deadline {
                        Some(d) if now >= d => break -ffi::ETIMEDOUT,
                        Some(d) => d - now,
                        None => pause,
                    };
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
            }
        };
        let conflict = if rc == -ffi::EBUSY { Some(Conflict { file: Arc::clone(self), off, len }) } else { None };
        Err(error_in(rc, conflict))
    }

    /// Whether the calling thread itself holds a region conflicting with
    /// `[off, off+len)` (through any `File` of this process), read from the
    /// lock table: waiting for it would never end.  `false` without a table.
    #[cfg(not(safemap_timed))]
    fn held_by_this_thread(&self, off: u64, len: u64, write: bool) -> bool {
        let holders = match self.holders(off, len) {
            Ok(h) => h,
            Err(_) => return false,
        };
        let pid = std::process::id() as i32;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { gettid() };
        holders.iter().any(|h| {
            h.state == HolderState::Held && (write || h.mode == Mode::Write) && h.pid == pid && h.tid == tid
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
    /// go.  Errors as `lock`, plus: `TimedOut` (`ETIMEDOUT`) when the time
    /// is up, and `EDEADLK` (kind `Other`, see [`is_deadlock`]) when waiting
    /// would never end (the calling thread holds a conflicting region
    /// itself, or, for a timeout equal to the file's
    /// [`OpenOptions::wait_timeout`], the wait would close a cycle of
    /// waiters across processes).
    ///
    /// The wait is the C library's (the waiter is listed in the lock table
    /// and woken by the release) when the library takes a bound per call
    /// (`sm_lock_timed`), or the timeout equals the file's own bound; else
    /// it retries with a short backoff (at most 2 ms between tries).
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

    /// The file's bound for `SM_WAIT` ([`OpenOptions::wait_timeout`]);
    /// `Duration::MAX` when it has none.
    pub fn wait_bound(&self) -> Duration {
        if self.inner.wait_ns == ffi::SM_WAIT_FOREVER {
            Duration::MAX
        } else {
            Duration::from_nanos(self.inner.wait_ns)
        }
    }

    fn lock_waiting(&self, off: u64, len: u64, mode: Mode, timeout: Option<Duration>) -> io::Result<RangeLock<'_>> {
        let f = self.inner.ptr.as_ptr();
        let r = self.inner.acquire(off, len, mode == Mode::Write, timeout, |wait| {
            let mut r = ptr::null_mut();
            let flags = mode.lock_flag() | wait.flag();
            let tag = ptr::null::<c_char>(); // the file's own tag
            // SAFETY: a live sm_file; out is a valid pointer.
            let rc = unsafe {
                match wait {
                    #[cfg(safemap_timed)]
                    Wait::Ns(ns) => ffi::sm_lock_timed(f, off, len, flags, ns, tag, &mut r),
                    _ => ffi::sm_lock(f, off, len, flags, tag, &mut r),
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
