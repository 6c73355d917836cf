// SPDX-License-Identifier: MIT
//! Safe memory-mapped windows of shared files, over the C library libsafemap.
//!
//! A [`File`] is a shared file that cooperating processes map piecewise.
//! Each mapped region is a *slice* held under an OFD byte-range lock for its
//! whole life: a [`ReadSlice`] under a read lock, a [`WriteSlice`] under a
//! write lock.  Slices are opaque: every access is bounds-checked and reads
//! or writes the mapping with volatile accesses, so the compiler never caches
//! bytes another process may change, and a `&[u8]` is only available through
//! the `unsafe` [`ReadSlice::as_bytes`].
//!
//! * **Conflicts fail fast**: mapping a region another process (or another
//!   [`File`]) holds in a conflicting mode returns an error of kind
//!   [`io::ErrorKind::WouldBlock`]; [`holders_of`] says who holds it.
//! * **Truncation is an error, never a crash**: if another process shrinks
//!   the file under a slice, the next access to a vanished page returns an
//!   error of kind [`io::ErrorKind::UnexpectedEof`] (libsafemap's `SIGBUS`
//!   guard maps a zero page over it) and the slice is dead from then on.
//! * **Commit is explicit**: [`WriteSlice::commit`] makes the writes durable
//!   and reports I/O errors.  `Drop` releases the lock and never commits,
//!   because it could not report a failure.
//! * **Lifetimes**: a [`ReadSlice<'f>`]/[`WriteSlice<'f>`] borrows its
//!   [`File`]; an [`OwnedReadSlice`] keeps the file alive itself and can be
//!   sent to another thread.
//!
//! The word accessors (`get_u64_le`, `put_u32_be`, ...) are implemented in
//! Rust over the C library's public `struct sm_view` (version 1): a bounds
//! check, one volatile access and one load of the slice's fault-state word,
//! as in the C header's inline fast path; only a failed check calls into the
//! library for the precise error.
//!
//! # Speed
//!
//! An accessor costs a compare, the access and one more load; a raw
//! `read_volatile` loop over the same mapping has neither check.
//! `cargo run --release --example wordspeed` prints both, and the library's
//! exported function (one call per word) for reference.  For a hot loop
//! over many words, copy blocks with [`ReadSlice::read_at`] (one check per
//! block, `memcpy` speed) and decode from the copy.
//!
//! # Range locks, waiting, logs and objects
//!
//! * [`File::lock`] locks a byte range without mapping it ([`RangeLock`],
//!   unlocked on drop), with the same conflicts as slices.
//! * [`File::lock_timeout`], [`File::map_read_timeout`] and
//!   [`File::map_write_timeout`] wait up to a [`Duration`] for conflicting
//!   holders: `TimedOut` when the time is up, `EDEADLK` ([`is_deadlock`])
//!   when waiting could never end.
//! * A [`Log`] appends records at the tail of a shared file and commits
//!   them with one flush shared by concurrent committers; a [`LogSender`]
//!   is a channel into it whose `send` returns once the record is durable.
//! * An [`Object`] is a file written in full ([`std::io::Write`], or
//!   zero-copy through [`Object::map_write`]) that appears under its name
//!   only when published.
//! * A buffered [`WriteSlice`] bound to the [`Log`] records that describe
//!   its changes ([`WriteSlice::set_lsn`]) reaches the file only after
//!   them: a mapped cache made recoverable by its log, with checkpoints
//!   ([`File::redo_lsn`]) and recovery ([`MapFlags::recover`],
//!   [`File::redo_done`]).
//!
//! # Building
//!
//! `build.rs` links libsafemap dynamically: from `SAFEMAP_LIB_DIR` when it
//! is set (`SAFEMAP_INCLUDE_DIR` names the header's directory), else
//! through `pkg-config safemap`, else from the C library built in the
//! enclosing source tree (`../../lib/.libs`).  It refuses a `safemap.h`
//! whose `SM_VIEW_VERSION` is not the one this crate reads.  In the
//! safemap tree, `make check-rust` runs `cargo test --offline` against the
//! library just built.
//!
//! The rpath the build script adds reaches only this crate's own tests and
//! examples, not the binaries of a crate that depends on it.  The crate
//! declares `links = "safemap"` and publishes the library's directory as
//! the metadata key `lib_dir`, so a dependent's build script sees it as
//! `DEP_SAFEMAP_LIB_DIR`; for its binaries to find a library that is not in
//! the loader's path (without `LD_LIBRARY_PATH`), that build script adds
//! the rpath:
//!
//! ```no_run
//! // build.rs of a crate that depends on safemap
//! fn main() {
//!     if let Ok(dir) = std::env::var("DEP_SAFEMAP_LIB_DIR") {
//!         println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
//!     }
//! }
//! ```
//!
//! # Errors
//!
//! Failures are [`io::Error`]s.  Conflicts (`EBUSY`, kind `WouldBlock`),
//! truncation (`ENXIO`, kind `UnexpectedEof`) and deadlocking waits
//! (`EDEADLK`, kind `Other`: [`is_deadlock`]) are custom errors carrying the
//! safemap code ([`error_code`]); their `raw_os_error()` is `None`.  A wait
//! that runs out of time is `ETIMEDOUT`, kind `TimedOut`.  Every
//! other code is an [`io::Error::from_raw_os_error`]: `ERANGE` for an access
//! or region out of bounds, `EBADF` for a write slice of a read-only file,
//! `EIO`/`ENOSPC` from commit, and so on.
//!
//! # Use case: a parser hands a blob to a worker thread
//!
//! A record header is parsed in place; the blob it describes becomes a
//! zero-copy sub-slice that another thread reads while the parser goes on.
//! [`File::map_read_owned`] gives a `Send + 'static` slice:
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let path = std::env::temp_dir().join(format!("safemap-doc-parser-{}", std::process::id()));
//! # { let mut f = std::fs::File::create(&path)?;
//! #   use std::io::Write; let mut rec = vec![0u8; 8]; rec[..8].copy_from_slice(&4096u64.to_le_bytes());
//! #   rec.extend(std::iter::repeat(7u8).take(4096)); f.write_all(&rec)?; }
//! let file = safemap::OpenOptions::new().read(true).open(&path)?;
//! let record = file.map_read_owned(0, 8 + 4096)?;
//! let blob_len = record.get_u64_le(0)?;              // the header: a length
//! let blob = record.sub(8, blob_len)?;                // zero-copy, owns its lock
//! drop(record);                                       // the sub-slice keeps it alive
//! let worker = std::thread::spawn(move || -> std::io::Result<u64> {
//!     let mut sum = 0u64;
//!     let mut buf = [0u8; 512];
//!     for off in (0..blob.len()).step_by(buf.len()) {
//!         blob.read_at(off, &mut buf)?;
//!         sum += buf.iter().map(|&b| u64::from(b)).sum::<u64>();
//!     }
//!     Ok(sum)
//! });
//! assert_eq!(worker.join().unwrap()?, 7 * 4096);
//! # drop(file); let _ = std::fs::remove_file(&path);
//! # let mut p = path.into_os_string(); p.push(".smlock"); let _ = std::fs::remove_file(p);
//! # Ok(()) }
//! ```
//!
//! Borrowed slices are `Send` and `Sync` too, so scoped threads can share
//! one [`ReadSlice`] without an `Arc`.
//!
//! # Use case: a page compactor
//!
//! One write window for the destination page, several read windows over the
//! source pages; each window locks only its own range, so other processes
//! keep working on the rest of the file.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! # let path = std::env::temp_dir().join(format!("safemap-doc-compact-{}", std::process::id()));
//! const PAGE: u64 = 4096;
//! let file = safemap::OpenOptions::new().read(true).write(true).create(true).open(&path)?;
//! {
//!     // Set up: pages 1..=3 hold one 8-byte record each at offset 0.
//!     let mut init = file.map_write_with(0, 4 * PAGE, safemap::MapFlags::new().extend(true))?;
//!     for page in 1..4u64 {
//!         init.put_u64_le(page * PAGE, 100 + page)?;
//!     }
//!     init.commit()?;
//! }
//! let sources: Vec<safemap::ReadSlice<'_>> = (1..4)
//!     .map(|page| file.map_read(page * PAGE, PAGE))
//!     .collect::<std::io::Result<_>>()?;
//! let mut dest = file.map_write(0, PAGE)?;            // the one write window
//! let mut out = dest.cursor();
//! for src in &sources {
//!     let record = src.get_u64_le(0)?;
//!     std::io::Write::write_all(&mut out, &record.to_le_bytes())?;
//! }
//! drop(out);
//! dest.commit()?;                                     // explicit, fallible
//! assert_eq!(dest.get_u64_le(16)?, 103);
//! # drop(sources); drop(dest); drop(file); let _ = std::fs::remove_file(&path);
//! # let mut p = path.into_os_string(); p.push(".smlock"); let _ = std::fs::remove_file(p);
//! # Ok(()) }
//! ```
//!
//! # Use case: explicit commit with error handling
//!
//! A failed commit leaves the slice dirty.  A direct slice cannot be retried
//! honestly (Linux reports a write-back error once), so libsafemap poisons
//! the file: reopen it and redo the work.  A buffered slice
//! ([`File::map_write_buffered`]) keeps its private copy and can retry, or
//! drop its changes with [`WriteSlice::abort`].
//!
//! ```
//! use std::io::{self, ErrorKind};
//!
//! fn store(file: &safemap::File, off: u64, value: u64) -> io::Result<()> {
//!     let mut w = match file.map_write_buffered(off, 8) {
//!         Err(e) if e.kind() == ErrorKind::WouldBlock => {
//!             for h in safemap::holders_of(&e) {
//!                 eprintln!("busy: held by pid {} ({}) since {} ns", h.pid, h.comm, h.since);
//!             }
//!             return Err(e);
//!         }
//!         other => other?,
//!     };
//!     w.put_u64_le(0, value)?;
//!     match w.commit() {
//!         Ok(()) => Ok(()),
//!         Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
//!             // Another process truncated the file under the slice.
//!             Err(e)
//!         }
//!         Err(e) => {
//!             // The changes are still in the private copy: retry once,
//!             // else drop them; either way report the first error.
//!             if w.commit().is_err() {
//!                 w.abort()?;
//!             }
//!             Err(e)
//!         }
//!     }
//! }
//! # fn main() -> io::Result<()> {
//! # let path = std::env::temp_dir().join(format!("safemap-doc-commit-{}", std::process::id()));
//! # std::fs::write(&path, [0u8; 64])?;
//! # let file = safemap::OpenOptions::new().read(true).write(true).open(&path)?;
//! store(&file, 8, 42)?;
//! assert_eq!(file.map_read(8, 8)?.get_u64_le(0)?, 42);
//! # drop(file); let _ = std::fs::remove_file(&path);
//! # let mut p = path.into_os_string(); p.push(".smlock"); let _ = std::fs::remove_file(p);
//! # Ok(()) }
//! ```
//!
//! # Misuse is a compile error
//!
//! No slice outlives its [`File`]:
//!
//! ```compile_fail,E0597
//! # fn f(path: &std::path::Path) -> std::io::Result<()> {
//! let slice;
//! {
//!     let file = safemap::OpenOptions::new().read(true).open(path)?;
//!     slice = file.map_read(0, 8)?;
//! } // `file` dropped here while still borrowed
//! slice.get_u64_le(0)?;
//! # Ok(()) }
//! ```
//!
//! No `&mut` aliasing: two writing cursors over one write slice, or a write
//! while bytes borrowed from the slice are alive, do not compile:
//!
//! ```compile_fail,E0499
//! # fn f(file: &safemap::File) -> std::io::Result<()> {
//! let mut w = file.map_write(0, 16)?;
//! let mut a = w.cursor();
//! let mut b = w.cursor(); // second mutable borrow
//! std::io::Write::write_all(&mut a, b"x")?;
//! std::io::Write::write_all(&mut b, b"y")?;
//! # Ok(()) }
//! ```
//!
//! ```compile_fail,E0502
//! # fn f(file: &safemap::File) -> std::io::Result<()> {
//! let mut w = file.map_write(0, 16)?;
//! let bytes: &[u8] = unsafe { w.as_bytes() };
//! w.put_u8(0, 1)?; // mutable borrow while `bytes` is alive
//! assert_eq!(bytes[0], 1);
//! # Ok(()) }
//! ```
//!
//! A write slice cannot be committed after it is released:
//!
//! ```compile_fail,E0382
//! # fn f(file: &safemap::File) -> std::io::Result<()> {
//! let mut w = file.map_write(0, 16)?;
//! w.put_u8(0, 1)?;
//! w.release()?;
//! w.commit()?; // use of moved value
//! # Ok(()) }
//! ```
//!
//! A borrowed slice cannot be sent to a thread that may outlive the file
//! (use [`File::map_read_owned`] or scoped threads):
//!
//! ```compile_fail,E0597
//! # fn f(file: safemap::File) -> std::io::Result<()> {
//! let r = file.map_read(0, 8)?;
//! std::thread::spawn(move || r.get_u8(0)); // `file` does not live long enough
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]
// The crate docs show a dependent's build script, whose `main` is the point.
#![allow(clippy::needless_doctest_main)]

mod cursor;
mod ffi;
mod lock;
mod log;
mod object;
mod raw;
#[cfg(safemap_redo)]
mod redo;

pub use crate::cursor::{ReadCursor, WriteCursor};
use crate::raw::Raw;

pub use crate::lock::RangeLock;
pub use crate::log::{Log, LogIter, LogSender};
pub use crate::object::{Object, PublishError};

use std::ffi::{CStr, CString};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The version of the C library's `struct sm_view` this crate reads
/// (`SM_VIEW_VERSION` in `safemap.h`; `build.rs` checks the header).
pub const VIEW_VERSION: u32 = ffi::SM_VIEW_VERSION;

// ---------------------------------------------------------------------------
// Errors

/// A safemap error carried inside an [`io::Error`] (conflicts and
/// truncation; see the crate docs).  Reach it with [`error_code`] or
/// `err.get_ref()` and `downcast_ref::<safemap::Error>()`.
pub struct Error {
    code: i32,
    conflict: Option<Conflict>,
}

/// The region whose mapping failed with `EBUSY`, for [`holders_of`].
struct Conflict {
    file: Arc<FileInner>,
    off: u64,
    len: u64,
}

impl Error {
    /// The safemap code: a negative errno value (`-EBUSY`, `-ENXIO`, ...).
    pub fn code(&self) -> i32 {
        self.code
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.code).field("message", &strerror(self.code));
        if let Some(c) = &self.conflict {
            d.field("off", &c.off).field("len", &c.len);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&strerror(self.code))
    }
}

impl std::error::Error for Error {}

/// libsafemap's explanation of a code (`sm_strerror`).
pub fn strerror(code: i32) -> String {
    // SAFETY: sm_strerror returns a static, NUL-terminated string, never NULL.
    unsafe { CStr::from_ptr(ffi::sm_strerror(code)) }.to_string_lossy().into_owned()
}

#[cold]
#[inline(never)]
fn error(rc: c_int) -> io::Error {
    error_in(rc, None)
}

#[cold]
#[inline(never)]
fn error_in(rc: c_int, conflict: Option<Conflict>) -> io::Error {
    let code = if rc < 0 { rc } else { -rc };
    match -code {
        ffi::EBUSY => io::Error::new(io::ErrorKind::WouldBlock, Error { code, conflict }),
        ffi::ENXIO => io::Error::new(io::ErrorKind::UnexpectedEof, Error { code, conflict: None }),
        // Kind `Other` on every Rust version (`ErrorKind::Deadlock` is newer
        // than 1.63): test it with `is_deadlock` or `error_code`.
        ffi::EDEADLK => io::Error::new(io::ErrorKind::Other, Error { code, conflict: None }),
        e => io::Error::from_raw_os_error(e),
    }
}

fn check(rc: c_int) -> io::Result<()> {
    if rc < 0 {
        Err(error(rc))
    } else {
        Ok(())
    }
}

/// The safemap code of an error returned by this crate, as a negative errno
/// value: the code of a conflict or truncation [`Error`], or minus the OS
/// error number; `None` for other errors.
pub fn error_code(err: &io::Error) -> Option<i32> {
    if let Some(e) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        return Some(e.code);
    }
    err.raw_os_error().map(|e| -e)
}

/// Whether `err` says that waiting would deadlock (`EDEADLK`, kind
/// [`io::ErrorKind::Other`]): the region is held by the calling thread
/// itself, or the wait would close a cycle of waiters.
pub fn is_deadlock(err: &io::Error) -> bool {
    error_code(err) == Some(-ffi::EDEADLK)
}

/// Who holds the region whose mapping failed with `err` (a conflict, kind
/// [`io::ErrorKind::WouldBlock`]), read from the lock table with
/// `sm_holders` when called.  Empty for other errors, when the file has no
/// lock table, or when the holders have gone meanwhile.  The error keeps
/// the file open until it is dropped.
pub fn holders_of(err: &io::Error) -> Vec<Holder> {
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error { conflict: Some(c), .. }) => c.file.holders(c.off, c.len).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A lock mode: of a [`Holder`], or asked of [`File::lock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A read (shared) lock.
    Read,
    /// A write (exclusive) lock.
    Write,
}

/// State of a [`Holder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// Holds the region.
    Held,
    /// Waits for the region.
    Waiting,
    /// Its process is gone (the kernel lock went with it).
    Stale,
}

/// One holder of a region, from the file's lock table (`sm_holder`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Process id (for display: pids are reused and differ across namespaces).
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// Process start time, clock ticks since boot.
    pub start_time: u64,
    /// Inode of the holder's pid namespace.
    pub pidns: u64,
    /// Program name.
    pub comm: String,
    /// The holder's tag ([`OpenOptions::tag`]).
    pub tag: String,
    /// Lock mode.
    pub mode: Mode,
    /// Held, waiting or stale.
    pub state: HolderState,
    /// File offset of the held region.
    pub off: u64,
    /// Length of the held region.
    pub len: u64,
    /// Acquired at, ns since the epoch (`CLOCK_REALTIME`).
    pub since: u64,
}

fn c_text(s: &[c_char]) -> String {
    let bytes: Vec<u8> = s.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Holder {
    fn from_c(h: &ffi::sm_holder) -> Holder {
        Holder {
            pid: h.pid,
            tid: h.tid,
            start_time: h.start_time,
            pidns: h.pidns,
            comm: c_text(&h.comm),
            tag: c_text(&h.tag),
            mode: if h.mode == ffi::SM_MODE_WRITE { Mode::Write } else { Mode::Read },
            state: match h.state {
                ffi::SM_WAITING => HolderState::Waiting,
                ffi::SM_STALE => HolderState::Stale,
                _ => HolderState::Held,
            },
            off: h.off,
            len: h.len,
            since: h.since,
        }
    }
}

// ---------------------------------------------------------------------------
// Files

/// Options to open a [`File`], in the style of [`std::fs::OpenOptions`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    create: bool,
    tag: Option<String>,
    table_locks: bool,
    no_table: bool,
    table_required: bool,
    create_size: u64,
}

impl OpenOptions {
    /// All options off.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Open for read slices.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.read = read;
        self
    }

    /// Open for write slices too (`SM_RDWR`).
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.write = write;
        self
    }

    /// Create the file (mode `0666 & ~umask`) if it is missing; needs `write`.
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.create = create;
        self
    }

    /// A label for this opener's locks, shown by [`holders_of`] and `lockctl`.
    pub fn tag(&mut self, tag: &str) -> &mut OpenOptions {
        self.tag = Some(tag.to_string());
        self
    }

    /// Table-authority mode (`SM_OPT_TABLE_LOCKS`): the lock table
    /// decides exclusion, so an uncontended slice makes no system call.  Every
    /// process using the file must open it in this mode (the other mode gets
    /// an `EPROTO` error); not with [`OpenOptions::no_table`], nor on a network
    /// filesystem (`EREMOTE`).  See safemap(7).
    pub fn table_locks(&mut self, on: bool) -> &mut OpenOptions {
        self.table_locks = on;
        self
    }

    /// Use kernel locks only, without a lock table (`SM_OPT_NO_TABLE`):
    /// [`holders_of`] then finds nobody.
    pub fn no_table(&mut self, on: bool) -> &mut OpenOptions {
        self.no_table = on;
        self
    }

    /// Fail to open if the lock table is unusable (`SM_OPT_TABLE_REQUIRED`).
    pub fn table_required(&mut self, on: bool) -> &mut OpenOptions {
        self.table_required = on;
        self
    }

    /// With [`OpenOptions::create`]: a file this open creates appears under
    /// its name already `len` bytes long (zeros), so that processes opening
    /// it at the same time all see it whole; an existing file keeps its
    /// size.  0 (the default): created empty.
    pub fn create_size(&mut self, len: u64) -> &mut OpenOptions {
        self.create_size = len;
        self
    }

    /// Opens (or creates) the file at `path`.
    pub fn open<P: AsRef<Path>>(&self, path: P) -> io::Result<File> {
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        if !self.read && !self.write {
            return Err(invalid("safemap: open needs read or write"));
        }
        if self.create && !self.write {
            return Err(invalid("safemap: create needs write"));
        }
        let cpath = CString::new(path.as_ref().as_os_str().as_bytes())
            .map_err(|_| invalid("safemap: path contains a NUL byte"))?;
        let ctag = match &self.tag {
            Some(t) => Some(CString::new(t.as_str()).map_err(|_| invalid("safemap: tag contains a NUL byte"))?),
            None => None,
        };
        let mut flags = if self.write { ffi::SM_RDWR } else { ffi::SM_RDONLY };
        if self.create {
            flags |= ffi::SM_CREATE;
        }
        let mut optflags = 0;
        if self.no_table {
            optflags |= ffi::SM_OPT_NO_TABLE;
        }
        if self.table_required {
            optflags |= ffi::SM_OPT_TABLE_REQUIRED;
        }
        if self.table_locks {
            optflags |= ffi::SM_OPT_TABLE_LOCKS;
        }
        let opt = ffi::sm_options {
            size: std::mem::size_of::<ffi::sm_options>() as u32,
            flags: optflags,
            tag: ctag.as_ref().map_or(ptr::null(), |t| t.as_ptr()),
            table_dir: ptr::null(),
            wait_ns: 0,
            create_size: self.create_size,
            reserved: [0; 3],
        };
        let mut f = ptr::null_mut();
        // SAFETY: valid NUL-terminated strings and options that outlive the call.
        check(unsafe { ffi::sm_open(cpath.as_ptr(), flags, &opt, &mut f) })?;
        let ptr = NonNull::new(f).ok_or_else(|| error(-ffi::ENOMEM))?;
        Ok(File { inner: Arc::new(FileInner { ptr }) })
    }
}

struct FileInner {
    ptr: NonNull<ffi::sm_file>,
}

// SAFETY: every sm_file call may be made from any thread (the library locks
// internally); sm_close runs once, from Drop.
unsafe impl Send for FileInner {}
unsafe impl Sync for FileInner {}

impl Drop for FileInner {
    fn drop(&mut self) {
        // SAFETY: the last reference; live C slices defer the real close.
        unsafe { ffi::sm_close(self.ptr.as_ptr()) };
    }
}

impl FileInner {
    fn holders(&self, off: u64, len: u64) -> io::Result<Vec<Holder>> {
        let mut cap = 16usize;
        loop {
            let mut v: Vec<ffi::sm_holder> = Vec::with_capacity(cap);
            // SAFETY: room for cap entries; sm_holders writes at most cap.
            let n = unsafe { ffi::sm_holders(self.ptr.as_ptr(), off, len, v.as_mut_ptr(), cap) };
            check(n)?;
            let n = n as usize;
            if n <= cap {
                unsafe { v.set_len(n) };
                return Ok(v.iter().map(Holder::from_c).collect());
            }
            cap = n + 8;
        }
    }

    fn map(self: &Arc<Self>, off: u64, len: u64, flags: c_int, write: bool) -> io::Result<Raw> {
        self.map_waiting(off, len, flags, write, None)
    }

    /// Maps, waiting up to `timeout` for a conflicting holder (`None`: fail
    /// fast with `WouldBlock`).
    fn map_waiting(
        self: &Arc<Self>,
        off: u64,
        len: u64,
        flags: c_int,
        write: bool,
        timeout: Option<Duration>,
    ) -> io::Result<Raw> {
        let f = self.ptr.as_ptr();
        let s = self.acquire(off, len, timeout, |wait| {
            let mut s = ptr::null_mut();
            // SAFETY: a live sm_file; out is a valid pointer.
            let rc = unsafe {
                match (wait, write) {
                    (Some(ns), true) => ffi::sm_map_write_timed(f, off, len, flags, ns, &mut s),
                    (Some(ns), false) => ffi::sm_map_read_timed(f, off, len, flags, ns, &mut s),
                    (None, true) => ffi::sm_map_write(f, off, len, flags, &mut s),
                    (None, false) => ffi::sm_map_read(f, off, len, flags, &mut s),
                }
            };
            if rc < 0 {
                Err(rc)
            } else {
                NonNull::new(s).ok_or(-ffi::ENOMEM)
            }
        })?;
        Ok(Raw::new(s))
    }
}

/// Flags for [`File::map_read_with`] and [`File::map_write_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MapFlags(c_int);

impl MapFlags {
    /// Direct (shared) mapping, fail fast on conflicts.
    pub fn new() -> MapFlags {
        MapFlags(ffi::SM_DIRECT)
    }
    /// Write slices: a private copy written to the file only at commit
    /// (`SM_BUFFERED`).
    pub fn buffered(self, on: bool) -> MapFlags {
        self.set(ffi::SM_BUFFERED, on)
    }
    /// Write slices: may grow the file (`SM_EXTEND`).
    pub fn extend(self, on: bool) -> MapFlags {
        self.set(ffi::SM_EXTEND, on)
    }
    /// Pre-fault the slice's pages (`SM_POPULATE`).
    pub fn populate(self, on: bool) -> MapFlags {
        self.set(ffi::SM_POPULATE, on)
    }
    fn set(self, bit: c_int, on: bool) -> MapFlags {
        MapFlags(if on { self.0 | bit } else { self.0 & !bit })
    }
}

/// A shared file opened with [`OpenOptions`].  `Send + Sync`: slices of one
/// `File` may be mapped and used from many threads.  Dropping it closes the
/// file once no [`OwnedReadSlice`] (or error from [`holders_of`]) uses it.
pub struct File {
    inner: Arc<FileInner>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File").field("ptr", &self.inner.ptr).finish()
    }
}

impl File {
    /// Opens `path` read-only (shorthand for `OpenOptions::new().read(true)`).
    pub fn open<P: AsRef<Path>>(path: P) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Maps `[off, off+len)` under a read lock.  Errors: `WouldBlock` if a
    /// writer holds an overlapping region, `ERANGE` past end of file,
    /// `EINVAL` for a zero length.
    pub fn map_read(&self, off: u64, len: u64) -> io::Result<ReadSlice<'_>> {
        self.map_read_with(off, len, MapFlags::new())
    }

    /// [`File::map_read`] with flags.
    pub fn map_read_with(&self, off: u64, len: u64, flags: MapFlags) -> io::Result<ReadSlice<'_>> {
        let raw = self.inner.map(off, len, flags.0, false)?;
        Ok(ReadSlice { raw, _file: PhantomData })
    }

    /// Maps `[off, off+len)` under a read lock as a slice that owns a
    /// reference to the file: `Send + 'static`.
    pub fn map_read_owned(&self, off: u64, len: u64) -> io::Result<OwnedReadSlice> {
        let raw = self.inner.map(off, len, ffi::SM_DIRECT, false)?;
        Ok(OwnedReadSlice { raw, _file: Arc::clone(&self.inner) })
    }

    /// Maps `[off, off+len)` under a write lock, directly: writes go to the
    /// shared page cache at once (visible to other processes, and possibly
    /// written to disk before any commit).  Errors: `WouldBlock` if any
    /// overlapping region is held (also by a slice of this `File`),
    /// `EBADF` on a read-only file, `ERANGE` past end of file (see
    /// [`MapFlags::extend`]), `ENOSPC` if blocks cannot be reserved.
    pub fn map_write(&self, off: u64, len: u64) -> io::Result<WriteSlice<'_>> {
        self.map_write_with(off, len, MapFlags::new())
    }

    /// [`File::map_write`] with a private copy that reaches the file only
    /// at [`WriteSlice::commit`] (`SM_BUFFERED`).
    pub fn map_write_buffered(&self, off: u64, len: u64) -> io::Result<WriteSlice<'_>> {
        self.map_write_with(off, len, MapFlags::new().buffered(true))
    }

    /// [`File::map_write`] with flags.
    pub fn map_write_with(&self, off: u64, len: u64, flags: MapFlags) -> io::Result<WriteSlice<'_>> {
        let raw = self.inner.map(off, len, flags.0, true)?;
        Ok(WriteSlice { raw, _file: PhantomData })
    }

    /// Who holds regions overlapping `[off, off+len)`, this process's own
    /// slices included (`sm_holders`).  `ENOTSUP` without a lock table.
    pub fn holders(&self, off: u64, len: u64) -> io::Result<Vec<Holder>> {
        self.inner.holders(off, len)
    }
}

// ---------------------------------------------------------------------------
// Slices

// The C slice under every slice type: src/raw.rs.

macro_rules! getters {
    ($($name:ident $t:ty, $conv:expr, $order:literal;)*) => {$(
        #[doc = concat!("Reads the ", stringify!($t), " at `off` (", $order,
                        ", any alignment) with one volatile load.  Errors: `ERANGE` outside the slice, ",
                        "`UnexpectedEof` if the file shrank under it.")]
        #[inline]
        pub fn $name(&self, off: u64) -> io::Result<$t> {
            self.raw.get::<$t>(off).map($conv)
        }
    )*};
}

macro_rules! putters {
    ($($name:ident $t:ty, $conv:expr, $order:literal;)*) => {$(
        #[doc = concat!("Writes the ", stringify!($t), " at `off` (", $order,
                        ", any alignment) with one volatile store and marks its page dirty.  ",
                        "Errors: `ERANGE` outside the slice, `UnexpectedEof` if the file shrank under it.")]
        #[inline]
        pub fn $name(&mut self, off: u64, v: $t) -> io::Result<()> {
            self.raw.put::<$t>(off, ($conv)(v))
        }
    )*};
}

macro_rules! read_methods {
    () => {
        /// The slice's length in bytes.
        pub fn len(&self) -> u64 {
            self.raw.len()
        }

        /// Always `false`: slices are never empty.
        pub fn is_empty(&self) -> bool {
            self.raw.len() == 0
        }

        /// The file offset of the slice's byte 0.
        pub fn offset(&self) -> u64 {
            self.raw.offset()
        }

        /// Copies `buf.len()` bytes at `off` (relative to the slice) into
        /// `buf`.  Errors: `ERANGE` if they are not all inside the slice,
        /// `UnexpectedEof` if the file shrank under it.
        pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            self.raw.read_at(off, buf)
        }

        /// The slice's bytes as a plain slice: the only raw escape.
        ///
        /// # Safety
        ///
        /// For as long as the returned slice lives, nothing may write these
        /// bytes (no other process, no other thread, no other slice or
        /// sub-slice of this process, e.g. the [`WriteSlice`] a read view
        /// was made from) and the file must not be truncated under them:
        /// either would change memory behind a `&[u8]`.
        /// Truncation cannot crash the process (the `SIGBUS` guard maps a
        /// zero page), but the bytes silently become zeros.
        pub unsafe fn as_bytes(&self) -> &[u8] {
            self.raw.bytes()
        }

        getters! {
            get_u8 u8, |x| x, "one byte";
            get_u8_le u8, |x| x, "one byte";
            get_u8_be u8, |x| x, "one byte";
            get_u16 u16, |x| x, "native byte order";
            get_u16_le u16, u16::from_le, "little-endian";
            get_u16_be u16, u16::from_be, "big-endian";
            get_u32 u32, |x| x, "native byte order";
            get_u32_le u32, u32::from_le, "little-endian";
            get_u32_be u32, u32::from_be, "big-endian";
            get_u64 u64, |x| x, "native byte order";
            get_u64_le u64, u64::from_le, "little-endian";
            get_u64_be u64, u64::from_be, "big-endian";
        }
    };
}

/// A region mapped under a read lock, borrowed from its [`File`].  Released
/// (unlocked) on drop.  `Send + Sync`.
pub struct ReadSlice<'f> {
    raw: Raw,
    _file: PhantomData<&'f File>,
}

impl<'f> ReadSlice<'f> {
    read_methods!();

    /// A zero-copy view of `[off, off+len)` of this slice (`off` relative to
    /// it).  It borrows the file, not this slice, and keeps the mapping and
    /// lock alive after this slice is dropped.
    pub fn sub(&self, off: u64, len: u64) -> io::Result<ReadSlice<'f>> {
        Ok(ReadSlice { raw: self.raw.sub(off, len)?, _file: PhantomData })
    }

    /// A reading cursor over the slice, at position 0.
    pub fn cursor(&self) -> ReadCursor<'_> {
        ReadCursor { raw: &self.raw, pos: 0 }
    }

    /// Unlocks and frees the slice now, reporting an unlock error (dropping
    /// it does the same silently).
    pub fn release(self) -> io::Result<()> {
        self.raw.release()
    }
}

/// A read slice that keeps its file alive: `Send + 'static`, for handing
/// to another thread.  Has the read methods of [`ReadSlice`].
pub struct OwnedReadSlice {
    raw: Raw,
    _file: Arc<FileInner>,
}

impl OwnedReadSlice {
    read_methods!();

    /// A zero-copy, owned view of `[off, off+len)` of this slice.
    pub fn sub(&self, off: u64, len: u64) -> io::Result<OwnedReadSlice> {
        Ok(OwnedReadSlice { raw: self.raw.sub(off, len)?, _file: Arc::clone(&self._file) })
    }

    /// A reading cursor over the slice, at position 0.
    pub fn cursor(&self) -> ReadCursor<'_> {
        ReadCursor { raw: &self.raw, pos: 0 }
    }

    /// Unlocks and frees the slice now, reporting an unlock error.
    pub fn release(self) -> io::Result<()> {
        self.raw.release()
    }
}

/// A region mapped under a write lock, borrowed from its [`File`]: the
/// seed's "write window".  Writes need `&mut self`; [`WriteSlice::commit`]
/// makes them durable.  Drop releases the lock and never commits.
pub struct WriteSlice<'f> {
    raw: Raw,
    _file: PhantomData<&'f File>,
}

impl<'f> WriteSlice<'f> {
    read_methods!();

    putters! {
        put_u8 u8, |x| x, "one byte";
        put_u8_le u8, |x| x, "one byte";
        put_u8_be u8, |x| x, "one byte";
        put_u16 u16, |x| x, "native byte order";
        put_u16_le u16, u16::to_le, "little-endian";
        put_u16_be u16, u16::to_be, "big-endian";
        put_u32 u32, |x| x, "native byte order";
        put_u32_le u32, u32::to_le, "little-endian";
        put_u32_be u32, u32::to_be, "big-endian";
        put_u64 u64, |x| x, "native byte order";
        put_u64_le u64, u64::to_le, "little-endian";
        put_u64_be u64, u64::to_be, "big-endian";
    }

    /// Copies `buf` to `off` (relative to the slice).  Errors: `ERANGE` if
    /// it does not fit, `UnexpectedEof` if the file shrank under the slice.
    pub fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.raw.write_at(off, buf)
    }

    /// Sets `n` bytes at `off` to `byte`.
    pub fn fill(&mut self, off: u64, byte: u8, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: a live slice.
        check(unsafe { ffi::sm_fill(self.raw.s.as_ptr(), off, c_int::from(byte), n) })
    }

    /// A read-only zero-copy view of `[off, off+len)` that borrows the file,
    /// not this slice (it may outlive it, as in C).  It sees this slice's
    /// writes at once.
    pub fn sub(&self, off: u64, len: u64) -> io::Result<ReadSlice<'f>> {
        Ok(ReadSlice { raw: self.raw.sub(off, len)?, _file: PhantomData })
    }

    /// A writable zero-copy view of `[off, off+len)`, borrowing this slice
    /// mutably.  It shares the dirty state: committing either commits both.
    pub fn sub_mut(&mut self, off: u64, len: u64) -> io::Result<WriteSlice<'_>> {
        Ok(WriteSlice { raw: self.raw.sub(off, len)?, _file: PhantomData })
    }

    /// A reading and writing cursor over the slice, at position 0.
    pub fn cursor(&mut self) -> WriteCursor<'_> {
        WriteCursor { raw: &mut self.raw, pos: 0 }
    }

    /// The slice's bytes, writable: the raw escape for writes.  The whole
    /// slice is marked dirty, so the next commit writes it all.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, nothing else may read or write these
    /// bytes: no other process, no other thread, no other slice of this
    /// process (such as a read view made with [`WriteSlice::sub`]); and the
    /// file must not be truncated under them.
    pub unsafe fn as_bytes_mut(&mut self) -> &mut [u8] {
        let v = self.raw.view();
        ffi::sm_mark_dirty(self.raw.s.as_ptr(), 0, (*v).len);
        std::slice::from_raw_parts_mut((*v).base, (*v).len as usize)
    }

    /// Makes the slice's dirty pages durable (`sm_commit`, `SM_SYNC`).  The
    /// slice stays usable.  On error the slice stays dirty; a failed direct
    /// commit poisons the file (see the crate docs); `UnexpectedEof` if the
    /// file shrank under the slice.
    pub fn commit(&mut self) -> io::Result<()> {
        // SAFETY: a live slice, used by one thread (&mut).
        check(unsafe { ffi::sm_commit(self.raw.s.as_ptr(), ffi::SM_SYNC) })
    }

    /// Starts write-back of the dirty pages without waiting (`SM_ASYNC`).
    pub fn commit_async(&mut self) -> io::Result<()> {
        // SAFETY: as commit.
        check(unsafe { ffi::sm_commit(self.raw.s.as_ptr(), ffi::SM_ASYNC) })
    }

    /// Drops the uncommitted changes of a buffered slice.  `ENOTSUP` for a
    /// direct slice (its writes are already in the page cache).
    pub fn abort(&mut self) -> io::Result<()> {
        // SAFETY: as commit.
        check(unsafe { ffi::sm_abort(self.raw.s.as_ptr()) })
    }

    /// The number of dirty (uncommitted) pages, 0 when clean.
    pub fn dirty_pages(&self) -> usize {
        // SAFETY: a live slice.
        let n = unsafe { ffi::sm_dirty_pages(self.raw.s.as_ptr()) };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }

    /// Unlocks and frees the slice now, without committing, reporting an
    /// unlock error.  The slice cannot be used (or committed) afterwards.
    pub fn release(self) -> io::Result<()> {
        self.raw.release()
    }
}

/// Commits many write slices with one flush per file (`sm_commit_many`).
/// Returns the first error; [`WriteSlice::dirty_pages`] then tells which
/// slices are still dirty.
pub fn commit_many(slices: &mut [&mut WriteSlice<'_>]) -> io::Result<()> {
    if slices.is_empty() {
        return Ok(());
    }
    let mut v: Vec<*mut ffi::sm_slice> = slices.iter().map(|s| s.raw.s.as_ptr()).collect();
    // SAFETY: distinct live slices (each borrowed mutably).
    check(unsafe { ffi::sm_commit_many(v.as_mut_ptr(), v.len(), ffi::SM_SYNC) })
}

// Cursors: src/cursor.rs.

macro_rules! debug_slice {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t)).field("offset", &self.offset()).field("len", &self.len()).finish()
            }
        }
    )*};
}

debug_slice!(ReadSlice<'_>, WriteSlice<'_>, OwnedReadSlice);

#[doc(hidden)]
pub mod __private {
    //! For tests and the `wordspeed` example only: not a stable API.
    use super::*;

    /// `struct sm_view`'s size and field offsets, as mirrored here.
    pub fn view_layout() -> (usize, [usize; 7]) {
        let v = std::mem::MaybeUninit::<ffi::sm_view>::uninit();
        let b = v.as_ptr() as usize;
        // SAFETY: addr_of! on fields of an uninitialised value reads nothing.
        let o = unsafe {
            let p = v.as_ptr();
            [
                ptr::addr_of!((*p).base) as usize - b,
                ptr::addr_of!((*p).len) as usize - b,
                ptr::addr_of!((*p).state) as usize - b,
                ptr::addr_of!((*p).dirty) as usize - b,
                ptr::addr_of!((*p).dirty_off) as usize - b,
                ptr::addr_of!((*p).flags) as usize - b,
                ptr::addr_of!((*p).page_shift) as usize - b,
            ]
        };
        (std::mem::size_of::<ffi::sm_view>(), o)
    }

    /// `sizeof(sm_options)` and `sizeof(sm_holder)` as mirrored here.
    pub fn other_sizes() -> (usize, usize) {
        (std::mem::size_of::<ffi::sm_options>(), std::mem::size_of::<ffi::sm_holder>())
    }

    /// The view of a slice: (base, len, state, dirty is non-null, flags, page_shift).
    pub fn view_of(s: &ReadSlice<'_>) -> (usize, u64, u32, bool, u32, u32) {
        view(&s.raw)
    }

    /// As [`view_of`], for a write slice.
    pub fn view_of_write(s: &WriteSlice<'_>) -> (usize, u64, u32, bool, u32, u32) {
        view(&s.raw)
    }

    fn view(r: &Raw) -> (usize, u64, u32, bool, u32, u32) {
        let v = r.view();
        unsafe {
            (
                (*v).base as usize,
                (*v).len,
                ptr::read_volatile((*v).state),
                !(*v).dirty.is_null(),
                (*v).flags,
                (*v).page_shift,
            )
        }
    }

    /// `sm_unsafe_ptr` of a slice, as an address.
    pub fn unsafe_ptr(s: &ReadSlice<'_>) -> io::Result<usize> {
        let mut p = ptr::null_mut();
        check(unsafe { ffi::sm_unsafe_ptr(s.raw.s.as_ptr(), &mut p) })?;
        Ok(p as usize)
    }

    /// One FFI call per word: the library's exported `sm_get_u64_le`.
    pub fn ffi_get_u64_le(s: &ReadSlice<'_>, off: u64) -> io::Result<u64> {
        let mut x = 0u64;
        check(unsafe { ffi::sm_get_u64_le(s.raw.s.as_ptr(), off, &mut x) })?;
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::seek_to;
    use crate::raw::Word;

    #[test]
    fn errors_map_to_kinds() {
        let e = error(-ffi::EBUSY);
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(e.raw_os_error(), None);
        assert_eq!(error_code(&e), Some(-ffi::EBUSY));
        assert!(holders_of(&e).is_empty());
        let e = error(-ffi::ENXIO);
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(error_code(&e), Some(-ffi::ENXIO));
        assert!(format!("{:?}", e).contains("-6"));
        let e = error(-ffi::ERANGE);
        assert_eq!(e.raw_os_error(), Some(ffi::ERANGE));
        assert_eq!(error_code(&e), Some(-ffi::ERANGE));
        assert_eq!(error_code(&io::Error::new(io::ErrorKind::Other, "x")), None);
        assert!(!strerror(-ffi::ENXIO).is_empty());
    }

    #[test]
    fn seeking() {
        assert_eq!(seek_to(5, 10, SeekFrom::Start(100)).unwrap(), 100);
        assert_eq!(seek_to(5, 10, SeekFrom::End(-3)).unwrap(), 7);
        assert_eq!(seek_to(5, 10, SeekFrom::Current(2)).unwrap(), 7);
        assert_eq!(seek_to(5, 10, SeekFrom::Current(-5)).unwrap(), 0);
        assert!(seek_to(5, 10, SeekFrom::Current(-6)).is_err());
        assert!(seek_to(u64::MAX, 10, SeekFrom::Current(1)).is_err());
    }

    #[test]
    fn map_flags() {
        let f = MapFlags::new().buffered(true).extend(true).populate(true);
        assert_eq!(f.0, ffi::SM_BUFFERED | ffi::SM_EXTEND | ffi::SM_POPULATE);
        assert_eq!(f.extend(false).0, ffi::SM_BUFFERED | ffi::SM_POPULATE);
    }

    #[test]
    fn unaligned_words_load_and_store() {
        let mut buf = [0u8; 24];
        for off in 0..8 {
            unsafe {
                let p = buf.as_mut_ptr().add(off);
                <u64 as Word>::store(p, 0x1122_3344_5566_7788);
                assert_eq!(<u64 as Word>::load(p), 0x1122_3344_5566_7788);
                <u32 as Word>::store(p.add(8), 0xdead_beef);
                assert_eq!(<u32 as Word>::load(p.add(8)), 0xdead_beef);
                <u16 as Word>::store(p.add(12), 0xabcd);
                assert_eq!(<u16 as Word>::load(p.add(12)), 0xabcd);
            }
            assert_eq!(&buf[off..off + 8], &0x1122_3344_5566_7788u64.to_ne_bytes());
        }
    }
}
