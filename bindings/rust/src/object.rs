// SPDX-License-Identifier: MIT
//! Objects: files that appear under their name only when complete
//! (`sm_object_*`).
use super::*;

/// How many bytes [`Object`]'s `Write` gathers before writing them through
/// one mapping.
const BUF: usize = 64 * 1024;

/// A file that appears under `dir/name` only when [`Object::publish`]
/// succeeds, whole and durable: readers never see a partial object, and an
/// object that is aborted, dropped unpublished or cut short by a crash
/// leaves nothing behind.  Fill it with [`std::io::Write`] (appending from
/// offset 0; buffered, so call `publish` rather than relying on `Drop`) or
/// zero-copy through [`Object::map_write`].  Objects use no lock table.
/// `Send + Sync`.
///
/// ```
/// use std::io::Write;
/// # fn main() -> std::io::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("safemap-doc-object-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let mut o = safemap::Object::create(&dir, "report")?;
/// o.write_all(b"header\n")?;
/// {
///     let mut w = o.map_write(7, 5)?;            // zero-copy: a write slice
///     w.write_at(0, b"body\n")?;
/// }                                               // released before publishing
/// o.publish()?;                                   // durable, then visible
/// assert_eq!(std::fs::read(dir.join("report"))?, b"header\nbody\n");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
///
/// A slice of the object cannot be alive when it is published:
///
/// ```compile_fail,E0505
/// # fn f(dir: &std::path::Path) -> std::io::Result<()> {
/// let mut o = safemap::Object::create(dir, "x")?;
/// let mut w = o.map_write(0, 8)?;
/// o.publish()?; // move out of `o` while borrowed
/// w.put_u8(0, 1)?;
/// # Ok(()) }
/// ```
pub struct Object {
    ptr: NonNull<ffi::sm_object>,
    /// Bytes written through `Write` and not yet in the file.
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    pos: u64,
}

// SAFETY: an sm_object is plain state used by one thread at a time: every
// method that calls into the library takes `&mut self` or `self` (`&self`
// only reads Rust fields), so sharing `&Object` is harmless too.
unsafe impl Send for Object {}
unsafe impl Sync for Object {}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object").field("ptr", &self.ptr).field("pos", &self.position()).finish()
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: an unpublished object, aborted once.
        unsafe { ffi::sm_object_abort(self.ptr.as_ptr()) };
    }
}

impl Object {
    /// Starts an object to be published as `dir/name` (an unnamed file in
    /// `dir`).  Errors: `EINVAL` for an empty name or one with `/`, `.` or
    /// `..`; the errors of opening a file in `dir` (`ENOENT`, `EACCES`).
    pub fn create<P: AsRef<Path>>(dir: P, name: &str) -> io::Result<Object> {
        Object::create_flags(dir.as_ref(), name, 0)
    }

    /// [`Object::create`] for an object whose publication replaces an
    /// existing `dir/name` atomically (`SM_OBJECT_REPLACE`).
    pub fn create_replacing<P: AsRef<Path>>(dir: P, name: &str) -> io::Result<Object> {
        Object::create_flags(dir.as_ref(), name, ffi::SM_OBJECT_REPLACE)
    }

    fn create_flags(dir: &Path, name: &str, flags: c_int) -> io::Result<Object> {
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        let cdir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| invalid("safemap: path contains a NUL byte"))?;
        let cname = CString::new(name).map_err(|_| invalid("safemap: name contains a NUL byte"))?;
        let mut o = ptr::null_mut();
        // SAFETY: valid strings.
        check(unsafe { ffi::sm_object_create(cdir.as_ptr(), cname.as_ptr(), flags, &mut o) })?;
        let ptr = NonNull::new(o).ok_or_else(|| error(-ffi::ENOMEM))?;
        Ok(Object { ptr, buf: Vec::new(), pos: 0 })
    }

    /// Where the next `Write` goes: the number of bytes written through
    /// `Write` so far.
    pub fn position(&self) -> u64 {
        self.pos + self.buf.len() as u64
    }

    /// A write slice over `[off, off+len)` of the object, growing it to
    /// `off + len` if it is shorter: fill it in place, then drop it (or
    /// [`WriteSlice::release`]) before publishing.  It does not move the
    /// `Write` position.  Errors: those of [`File::map_write`] (`EINVAL`,
    /// `ERANGE`, `ENOSPC`, ...), and of writing out what `Write` buffered.
    pub fn map_write(&mut self, off: u64, len: u64) -> io::Result<WriteSlice<'_>> {
        self.flush_buf()?;
        let mut s = ptr::null_mut();
        // SAFETY: a live object; out is a valid pointer.
        check(unsafe { ffi::sm_object_map(self.ptr.as_ptr(), off, len, &mut s) })?;
        let s = NonNull::new(s).ok_or_else(|| error(-ffi::ENOMEM))?;
        Ok(WriteSlice { raw: Raw::new(s), _file: PhantomData })
    }

    /// Makes the object durable and links it under its name atomically,
    /// then syncs the directory.  Consumes the object on success; on error
    /// the [`PublishError`] gives it back (e.g. to [`Object::abort`] it, or
    /// to retry after removing a name in the way), and converts into an
    /// [`io::Error`] (dropping the object, which aborts it) so that `?`
    /// works.  Errors: `EEXIST` if the name exists (see
    /// [`Object::create_replacing`]), `EIO`/`ENOSPC` from the flush (sticky
    /// for this object), and link, rename and fsync errors.
    pub fn publish(mut self) -> Result<(), PublishError> {
        if let Err(error) = self.flush_buf() {
            return Err(PublishError { error, object: self });
        }
        // SAFETY: a live object with no live slice (they borrow it).
        let rc = unsafe { ffi::sm_object_publish(self.ptr.as_ptr()) };
        if rc < 0 {
            return Err(PublishError { error: error(rc), object: self });
        }
        // Published and freed by the library: no abort on drop.
        let mut this = ManuallyDrop::new(self);
        drop(std::mem::take(&mut this.buf));
        Ok(())
    }

    /// Drops the object: nothing is left under its name or beside it
    /// (dropping it does the same silently).
    pub fn abort(self) -> io::Result<()> {
        let mut this = ManuallyDrop::new(self);
        drop(std::mem::take(&mut this.buf));
        // SAFETY: aborted once (Drop is suppressed).
        check(unsafe { ffi::sm_object_abort(this.ptr.as_ptr()) })
    }

    /// Writes what `Write` gathered through one mapping.
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut s = ptr::null_mut();
        // SAFETY: a live object; out is a valid pointer.
        check(unsafe { ffi::sm_object_map(self.ptr.as_ptr(), self.pos, self.buf.len() as u64, &mut s) })?;
        let raw = Raw::new(NonNull::new(s).ok_or_else(|| error(-ffi::ENOMEM))?);
        let mut w = WriteSlice { raw, _file: PhantomData::<&File> };
        w.write_at(0, &self.buf)?;
        w.release()?;
        self.pos += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl Write for Object {
    /// Appends at [`Object::position`], gathering small writes.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > BUF {
            self.flush_buf()?;
        }
        if data.len() >= BUF {
            // Large writes go through their own mapping, without a copy here.
            let mut s = ptr::null_mut();
            // SAFETY: as in flush_buf.
            check(unsafe { ffi::sm_object_map(self.ptr.as_ptr(), self.pos, data.len() as u64, &mut s) })?;
            let raw = Raw::new(NonNull::new(s).ok_or_else(|| error(-ffi::ENOMEM))?);
            let mut w = WriteSlice { raw, _file: PhantomData::<&File> };
            w.write_at(0, data)?;
            w.release()?;
            self.pos += data.len() as u64;
            return Ok(data.len());
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(BUF);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    /// Writes the gathered bytes to the object's file (not durable: that
    /// is [`Object::publish`]).
    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

/// A failed [`Object::publish`]: the error and the object, still
/// unpublished and usable.  Converts into the [`io::Error`] (aborting the
/// object).
pub struct PublishError {
    error: io::Error,
    object: Object,
}

impl PublishError {
    /// Why publishing failed.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The object, to abort it or publish it again.
    pub fn into_object(self) -> Object {
        self.object
    }

    /// The error and the object.
    pub fn into_parts(self) -> (io::Error, Object) {
        (self.error, self.object)
    }
}

impl fmt::Debug for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishError").field("error", &self.error).finish()
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "safemap: publishing the object failed: {}", self.error)
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<PublishError> for io::Error {
    fn from(e: PublishError) -> io::Error {
        e.error
    }
}
