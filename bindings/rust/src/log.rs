// SPDX-License-Identifier: MIT
//! Logs: records appended at the tail of a shared file, made durable by a
//! group commit, read back by iterators (`sm_log_*`).
use super::*;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};

struct LogInner {
    ptr: NonNull<ffi::sm_log>,
}

// SAFETY: an sm_log may be used by several threads at once (the library
// serialises appends and flushes with its own mutexes); sm_log_close runs
// once, from Drop, after every iterator (which borrows a `Log`) is gone.
unsafe impl Send for LogInner {}
unsafe impl Sync for LogInner {}

impl Drop for LogInner {
    fn drop(&mut self) {
        // SAFETY: the last reference, no iterator left.  EBUSY: a live
        // slice is still bound through the handle, which stays valid.
        if unsafe { ffi::sm_log_close(self.ptr.as_ptr()) } == -ffi::EBUSY {
            defer_close(self.ptr);
        }
    }
}

/// A log handle dropped while a slice was bound through it (a
/// [`WriteSlice::set_lsn`] binding): `sm_log_close` refused it (`EBUSY`),
/// so it is closed at a later slice release, once no bound slice is left.
/// Nothing else uses it meanwhile but the C library, for those slices.
struct Deferred(NonNull<ffi::sm_log>);

// SAFETY: only sm_log_close is called on it, from any thread, under the
// mutex.
unsafe impl Send for Deferred {}

static DEFERRED: Mutex<Vec<Deferred>> = Mutex::new(Vec::new());
/// How many handles wait in DEFERRED: a slice release reads only this.
static PENDING: AtomicUsize = AtomicUsize::new(0);

fn deferred() -> MutexGuard<'static, Vec<Deferred>> {
    DEFERRED.lock().unwrap_or_else(|e| e.into_inner())
}

fn defer_close(log: NonNull<ffi::sm_log>) {
    let mut v = deferred();
    PENDING.fetch_add(1, Ordering::SeqCst);
    v.push(Deferred(log));
    // The last bound slice may have gone since the refusal, its release
    // having seen nothing pending: try once more.
    close_deferred(&mut v);
}

fn close_deferred(v: &mut Vec<Deferred>) {
    v.retain(|d| {
        // SAFETY: a handle no `Log` refers to; refused (EBUSY) it is left
        // as it was, otherwise it is freed and forgotten here.
        let busy = unsafe { ffi::sm_log_close(d.0.as_ptr()) } == -ffi::EBUSY;
        if !busy {
            PENDING.fetch_sub(1, Ordering::SeqCst);
        }
        busy
    });
}

/// Called after every slice release: closes the deferred log handles that
/// no bound slice holds any longer.  One atomic load when there are none.
#[inline]
pub(crate) fn slice_released() {
    if PENDING.load(Ordering::SeqCst) != 0 {
        close_deferred(&mut deferred());
    }
}

impl LogInner {
    fn append(&self, rec: &[u8]) -> io::Result<u64> {
        let mut lsn = 0u64;
        // SAFETY: rec is valid for rec.len() bytes; a zero length is EINVAL.
        check(unsafe { ffi::sm_log_append(self.ptr.as_ptr(), rec.as_ptr() as *const c_void, rec.len(), &mut lsn) })?;
        Ok(lsn)
    }

    fn commit(&self) -> io::Result<()> {
        // SAFETY: a live log.
        check(unsafe { ffi::sm_log_commit(self.ptr.as_ptr()) })
    }
}

/// A log: records (byte strings, not empty) appended at the tail of a
/// shared file by any number of threads and processes, each whole, named by
/// its LSN (its byte offset in the file, increasing); durable after a
/// commit, which several committers share (one flush for all: group
/// commit).  Iterators see committed records only, each checksum-checked.
/// `Send + Sync`: share it with `&Log` or an `Arc`, or hand out
/// [`LogSender`]s.  Dropping it closes the log once no sender uses it and
/// no write slice is bound through it (`WriteSlice::set_lsn`).
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let path = std::env::temp_dir().join(format!("safemap-doc-log-{}", std::process::id()));
/// let log = safemap::Log::open(&path, true)?;
/// let first = log.append(b"hello")?;
/// log.append(b"world")?;
/// log.commit()?;                                // both durable, one flush
/// let recs: Vec<(u64, Vec<u8>)> = log.iter(0)?.collect::<std::io::Result<_>>()?;
/// assert_eq!(recs[0], (first, b"hello".to_vec()));
/// assert_eq!(recs[1].1, b"world");
/// # drop(log); let _ = std::fs::remove_file(&path);
/// # Ok(()) }
/// ```
///
/// An iterator cannot outlive its log:
///
/// ```compile_fail,E0597
/// # fn f(path: &std::path::Path) -> std::io::Result<()> {
/// let it;
/// {
///     let log = safemap::Log::open(path, false)?;
///     it = log.iter(0)?;
/// } // `log` dropped here while still borrowed
/// drop(it);
/// # Ok(()) }
/// ```
pub struct Log {
    inner: Arc<LogInner>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log").field("ptr", &self.inner.ptr).finish()
    }
}

impl Log {
    /// Opens the log at `path` for reading and appending; `create`: create
    /// and initialise it if it is missing.  Opening repairs the tail after a
    /// crash (a torn record past the committed tail is cut; whole records
    /// left there are committed).  Errors: `EINVAL` if the file is not a
    /// log, `EBADMSG` for a corrupt header, and the errors of opening a file.
    pub fn open<P: AsRef<Path>>(path: P, create: bool) -> io::Result<Log> {
        let flags = ffi::SM_RDWR | if create { ffi::SM_CREATE } else { 0 };
        Log::open_flags(path.as_ref(), flags)
    }

    /// Opens an existing log for reading only ([`Log::append`] and
    /// [`Log::commit`] are then `EBADF`).
    pub fn open_read_only<P: AsRef<Path>>(path: P) -> io::Result<Log> {
        Log::open_flags(path.as_ref(), ffi::SM_RDONLY)
    }

    fn open_flags(path: &Path, flags: c_int) -> io::Result<Log> {
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "safemap: path contains a NUL byte"))?;
        let mut l = ptr::null_mut();
        // SAFETY: a valid path; NULL options are the defaults.
        check(unsafe { ffi::sm_log_open(cpath.as_ptr(), flags, ptr::null(), &mut l) })?;
        let ptr = NonNull::new(l).ok_or_else(|| error(-ffi::ENOMEM))?;
        Ok(Log { inner: Arc::new(LogInner { ptr }) })
    }

    /// Appends one record and returns its LSN.  It is visible to iterators,
    /// and durable, only after a commit (of any thread or process).
    /// Errors: `EINVAL` for an empty record, `EBADF` on a read-only log,
    /// `ERANGE` for a record of 4 GiB or more, `ENOSPC` if space cannot be
    /// reserved, `EIO`.
    pub fn append(&self, rec: &[u8]) -> io::Result<u64> {
        self.inner.append(rec)
    }

    /// Makes every record appended so far (by anyone) durable, then visible
    /// to iterators.  Concurrent commits share one flush.  A flush error
    /// (`EIO`, `ENOSPC`, ...) is sticky: later commits through this `Log`
    /// return it too (Linux reports a write-back error only once).
    pub fn commit(&self) -> io::Result<()> {
        self.inner.commit()
    }

    /// Discards every record whose LSN is below `lsn` (a committed record's
    /// LSN, or the committed tail) and gives their disk space back; LSNs do
    /// not change.  A trim point at or below the first retained record does
    /// nothing.  Afterwards an iterator opened at a discarded LSN, or
    /// standing below the trim point, fails with `ESTALE`; `iter(0)` starts
    /// at the first retained record.  Errors: `EINVAL` for an LSN that is
    /// not a record's, `EBADF` on a read-only log.
    ///
    /// Available when the C library has `sm_log_trim` (the build script
    /// looks for it in `safemap.h`).
    #[cfg(safemap_log_trim)]
    pub fn trim(&self, lsn: u64) -> io::Result<()> {
        // SAFETY: a live log.
        check(unsafe { ffi::sm_log_trim(self.inner.ptr.as_ptr(), lsn) })
    }

    /// An iterator over the committed records from `from`: 0 (the first
    /// record), a committed record's LSN, or the committed tail (it then
    /// yields only records committed later).  Errors: `EINVAL` if `from` is
    /// none of those.
    pub fn iter(&self, from: u64) -> io::Result<LogIter<'_>> {
        let mut it = ptr::null_mut();
        // SAFETY: a live log; the iterator borrows it.
        check(unsafe { ffi::sm_log_iter_open(self.inner.ptr.as_ptr(), from, &mut it) })?;
        let it = NonNull::new(it).ok_or_else(|| error(-ffi::ENOMEM))?;
        Ok(LogIter { it, done: false, _log: PhantomData })
    }

    /// A sending end for this log: `Clone + Send + 'static`, it keeps the
    /// log open.
    pub fn sender(&self) -> LogSender {
        LogSender { inner: Arc::clone(&self.inner) }
    }

    #[cfg(safemap_redo)]
    pub(crate) fn as_ptr(&self) -> *mut ffi::sm_log {
        self.inner.ptr.as_ptr()
    }
}

/// A channel into a [`Log`]: [`LogSender::send`] appends a record and
/// returns its LSN once it is durable.  Clone it for each thread; records
/// sent at the same time share one flush (group commit), and the records of
/// one sender are in the log in the order it sent them.  `Clone + Send +
/// Sync + 'static`; it keeps the log open.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let path = std::env::temp_dir().join(format!("safemap-doc-sender-{}", std::process::id()));
/// let log = safemap::Log::open(&path, true)?;
/// let workers: Vec<_> = (0..4u8)
///     .map(|t| {
///         let tx = log.sender();
///         std::thread::spawn(move || tx.send(&[t; 16]))   // returns when durable
///     })
///     .collect();
/// for w in workers {
///     w.join().unwrap()?;
/// }
/// assert_eq!(log.iter(0)?.count(), 4);
/// # drop(log); let _ = std::fs::remove_file(&path);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LogSender {
    inner: Arc<LogInner>,
}

impl fmt::Debug for LogSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSender").field("log", &self.inner.ptr).finish()
    }
}

impl LogSender {
    /// Appends `rec` and commits: returns its LSN when it is durable (with
    /// every record appended before it).  Concurrent sends share flushes.
    /// Errors: those of [`Log::append`] and [`Log::commit`]; after a commit
    /// error the record may be in the log but is not known to be durable.
    pub fn send(&self, rec: &[u8]) -> io::Result<u64> {
        let lsn = self.inner.append(rec)?;
        self.inner.commit()?;
        Ok(lsn)
    }
}

/// An iterator over a [`Log`]'s committed records, from [`Log::iter`].  As
/// an [`Iterator`] it yields `(lsn, bytes)` copies; [`LogIter::next_ref`]
/// lends the bytes in place and [`LogIter::next_slice`] gives a zero-copy
/// [`ReadSlice`].  At the committed tail it yields `None`; calling again
/// later yields the records committed since.  After an error it yields
/// `None` (open a new iterator).  `Send`.
pub struct LogIter<'l> {
    it: NonNull<ffi::sm_log_iter>,
    done: bool,
    _log: PhantomData<&'l Log>,
}

// SAFETY: an iterator is used by one thread at a time (`&mut self`) and
// may move between threads.
unsafe impl Send for LogIter<'_> {}

impl fmt::Debug for LogIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogIter").field("ptr", &self.it).finish()
    }
}

impl Drop for LogIter<'_> {
    fn drop(&mut self) {
        // SAFETY: closed once; record slices it gave stay valid.
        unsafe { ffi::sm_log_iter_close(self.it.as_ptr()) };
    }
}

impl<'l> LogIter<'l> {
    fn result<T>(&mut self, rc: c_int, x: impl FnOnce() -> T) -> Option<io::Result<T>> {
        match rc {
            1 => Some(Ok(x())),
            0 => None,
            rc => {
                self.done = true;
                Some(Err(error(if rc < 0 { rc } else { -ffi::EIO })))
            }
        }
    }

    /// The next record's LSN and payload, in place, without a copy or a
    /// slice: for hot loops.  The bytes are valid until the next call on
    /// the iterator (the borrow ends there).  Committed records are never
    /// written again, so the bytes do not change; only a truncation of the
    /// log file from outside the library could turn them into zeros (never
    /// a crash), and the next call then fails with `UnexpectedEof`.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let path = std::env::temp_dir().join(format!("safemap-doc-next-ref-{}", std::process::id()));
    /// # let log = safemap::Log::open(&path, true)?;
    /// # for i in 1..=3u8 { log.append(&[i; 3])?; } log.commit()?;
    /// let mut it = log.iter(0)?;
    /// let mut sum = 0u64;
    /// while let Some(rec) = it.next_ref() {
    ///     let (_lsn, bytes) = rec?;
    ///     sum += bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
    /// }
    /// assert_eq!(sum, 3 * (1 + 2 + 3));
    /// # drop(it); drop(log); let _ = std::fs::remove_file(&path);
    /// # Ok(()) }
    /// ```
    ///
    /// The bytes cannot be kept across the next call:
    ///
    /// ```compile_fail,E0499
    /// # fn f(log: &safemap::Log) -> std::io::Result<()> {
    /// let mut it = log.iter(0)?;
    /// let (_, a) = it.next_ref().unwrap()?;
    /// let (_, b) = it.next_ref().unwrap()?; // second mutable borrow while `a` is alive
    /// assert_eq!(a, b);
    /// # Ok(()) }
    /// ```
    // Not `Iterator::next`: the item borrows the iterator.
    #[allow(clippy::should_implement_trait)]
    pub fn next_ref(&mut self) -> Option<io::Result<(u64, &[u8])>> {
        if self.done {
            return None;
        }
        let (mut p, mut n, mut lsn) = (ptr::null(), 0usize, 0u64);
        // SAFETY: a live iterator; out pointers are valid.
        let rc = unsafe { ffi::sm_log_iter_next_ptr(self.it.as_ptr(), &mut p, &mut n, &mut lsn) };
        // SAFETY: on 1, [p, p+n) is the payload inside the iterator's
        // mapping, valid until the next call on it (which needs `&mut self`,
        // so this borrow has ended); committed bytes are never rewritten.
        self.result(rc, || (lsn, unsafe { std::slice::from_raw_parts(p as *const u8, n) }))
    }

    /// The next record as a zero-copy [`ReadSlice`] of its payload, which
    /// holds a read lock on it and may outlive the iterator (not the log).
    pub fn next_slice(&mut self) -> Option<io::Result<(u64, ReadSlice<'l>)>> {
        if self.done {
            return None;
        }
        let (mut s, mut lsn) = (ptr::null_mut(), 0u64);
        // SAFETY: a live iterator; out pointers are valid.
        let rc = unsafe { ffi::sm_log_iter_next(self.it.as_ptr(), &mut s, &mut lsn) };
        match NonNull::new(s) {
            Some(s) if rc == 1 => Some(Ok((lsn, ReadSlice { raw: Raw::new(s), _file: PhantomData }))),
            _ if rc == 1 => self.result(-ffi::ENOMEM, || unreachable!()),
            _ => self.result(rc, || unreachable!()),
        }
    }
}

impl Iterator for LogIter<'_> {
    type Item = io::Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| r.map(|(lsn, b)| (lsn, b.to_vec())))
    }
}
