// SPDX-License-Identifier: MIT
//! A mapped cache made recoverable by a log: buffered write slices bound
//! to the log records that describe their changes (`sm_slice_set_lsn`,
//! `sm_redo_lsn`, `sm_redo_done`, `SM_RECOVER`).
use super::*;

impl WriteSlice<'_> {
    /// Binds the changes made so far in this buffered slice (mapped with
    /// [`File::map_write_buffered`] or [`MapFlags::buffered`]) to the
    /// records of `log` that describe them: from the slice's first bound
    /// LSN up to and including the record at `lsn`, a record appended
    /// through any [`Log`] of that log file, by any process.  Bind each
    /// record as you append it (at least the first record that changes a
    /// clean slice), and before you acknowledge the write.  From then on:
    ///
    /// * **Write-ahead.**  Every commit of the slice ([`WriteSlice::commit`],
    ///   [`WriteSlice::commit_async`], [`commit_many`]) first commits the
    ///   log up to the highest bound record, as [`Log::commit`] does
    ///   (durable, then visible to every process's iterators), and only
    ///   then writes pages: no byte of the slice reaches the file before
    ///   its records are durable.  If they already are, the commit costs
    ///   nothing more.  An error of the log's flush fails the commit with
    ///   no page written; the slice stays dirty.
    /// * **Held until synced.**  The binding holds from the bind until the
    ///   slice's pages are synced to the file: a [`WriteSlice::commit`]
    ///   that leaves the slice clean ends it.  After
    ///   [`WriteSlice::commit_async`] it stays held, also once the slice is
    ///   released, until a later `commit` or [`commit_many`] of the same
    ///   file in this process (or a recovery pass's [`File::redo_done`]).
    ///   A failed commit keeps it.  Releasing (dropping) or aborting a
    ///   dirty bound slice drops it with the changes, which the log still
    ///   describes: an engine never does that after acknowledging.
    /// * **No premature trim.**  While the binding is held, [`Log::trim`]
    ///   in any process never discards a record at or above its first LSN
    ///   (it stops below), and [`File::redo_lsn`] reports it: also after
    ///   this process dies, after a power loss, and when the lock table
    ///   file was deleted (bindings are kept in the log file itself).
    /// * **A dead process's changes stay fenced.**  If this process dies
    ///   while the slice has bound changes not yet written to the file,
    ///   its range stays held (by nobody: [`HolderState::Stale`] in
    ///   [`holders_of`]) and every overlapping slice or range lock of any
    ///   process fails with `WouldBlock` (the `_timeout` calls wait), until
    ///   a recovery pass has redone the changes ([`File::redo_done`]).
    ///   Only that pass's slices, mapped with [`MapFlags::recover`] through
    ///   a [`File`] on which [`File::redo_lsn`] was called, get through.
    ///
    /// Binding again keeps the lowest LSN for redo and the highest for the
    /// flush.  A slice is bound through one [`Log`]: binding it through
    /// another one, even of the same file, is `EINVAL`.  The [`Log`] may be
    /// dropped before its bound slices: its handle stays open for them
    /// (their commits still commit the log first) and is closed when the
    /// last of them is released.
    ///
    /// Errors: `EINVAL` for a direct or read-only slice, an LSN that is not
    /// 8-byte aligned or lies at or beyond the log's appended tail, or a
    /// slice bound through another [`Log`]; `EBADF` for a log opened
    /// read-only; `ESTALE` if [`Log::trim`] discarded the record, or is
    /// discarding it (a record another committer made durable can be
    /// trimmed by a checkpoint before it is bound: append it again and
    /// bind the new LSN); `ENOSPC` if the log's bindings area is full (48
    /// entries: one per open [`Log`] and data file it binds slices of, and
    /// dead processes' until [`File::redo_done`]); `UnexpectedEof` if the
    /// file shrank under the slice.
    ///
    /// A store of 8-byte values in 4 KiB pages, each page starting with
    /// the LSN of the last record applied to it (its page LSN, which makes
    /// replaying a record twice harmless): recovery at open, a put that is
    /// durable when it returns, and a checkpoint.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("safemap-doc-redo-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// use safemap::MapFlags;
    /// const PAGE: u64 = 4096;
    /// let file = safemap::OpenOptions::new().read(true).write(true).create(true)
    ///     .create_size(16 * PAGE).open(dir.join("data"))?;
    /// let log = safemap::Log::open(dir.join("log"), true)?;
    ///
    /// // Recovery: replay the log from the redo point into the pages that
    /// // lack a record, through slices that pass a dead process's fence.
    /// let from = file.redo_lsn(&log)?;
    /// for rec in log.iter(from)? {
    ///     let (lsn, rec) = rec?;
    ///     if rec.len() != 16 {
    ///         continue; // a marker
    ///     }
    ///     let key = u64::from_le_bytes(rec[..8].try_into().unwrap());
    ///     let (page, slot) = (key % 16 * PAGE, 8 + key / 16 % 511 * 8);
    ///     let mut w = file.map_write_with(page, PAGE, MapFlags::new().buffered(true).recover(true))?;
    ///     if w.get_u64_le(0)? < lsn {
    ///         w.write_at(slot, &rec[8..])?;
    ///         w.put_u64_le(0, lsn)?;
    ///         w.commit()?;
    ///     }
    /// }
    /// let marker = log.append(b"recovered")?; // every replayed binding is below it
    /// log.commit()?;
    /// file.redo_done(&log, marker)?;
    ///
    /// // A put: the record, bound, then the page; durable when commit returns.
    /// let (key, value) = (35u64, 7u64);
    /// let (page, slot) = (key % 16 * PAGE, 8 + key / 16 % 511 * 8);
    /// let mut w = file.map_write_buffered(page, PAGE)?; // the page's records in LSN order
    /// let rec: Vec<u8> = key.to_le_bytes().iter().chain(&value.to_le_bytes()).copied().collect();
    /// let lsn = log.append(&rec)?;
    /// w.set_lsn(&log, lsn)?;
    /// w.put_u64_le(slot, value)?;
    /// w.put_u64_le(0, lsn)?;
    /// w.commit()?;                                       // the log first, then the page
    /// drop(w);
    ///
    /// // A checkpoint: with the dirty slices committed, trim to the redo point.
    /// log.trim(file.redo_lsn(&log)?)?;
    /// assert_eq!(log.iter(0)?.count(), 0);
    /// # drop(file); drop(log); let _ = std::fs::remove_dir_all(&dir);
    /// # Ok(()) }
    /// ```
    pub fn set_lsn(&mut self, log: &Log, lsn: u64) -> io::Result<()> {
        // SAFETY: a live slice (one thread: &mut) and a live log handle;
        // the handle outlives every slice bound through it (see Log's Drop).
        check(unsafe { ffi::sm_slice_set_lsn(self.raw.s.as_ptr(), log.as_ptr(), lsn) })
    }
}

impl File {
    /// The redo point of this file in `log`: the lowest first LSN of every
    /// binding ([`WriteSlice::set_lsn`]) of the file to the log still held,
    /// by any process, live or dead, or the log's committed tail if that
    /// is lower.  Everything below it is durable in the file: a checkpoint
    /// (once the dirty slices are committed) trims the log there with
    /// [`Log::trim`], and recovery replays the log from there.
    ///
    /// It also notes which holders of those bindings are dead at this
    /// moment, for [`File::redo_done`], and lets this `File`'s slices
    /// mapped with [`MapFlags::recover`] pass the fence of dead processes'
    /// bound changes.
    ///
    /// Errors: `ENOTSUP` if the file has no lock table
    /// ([`OpenOptions::no_table`], or the table could not be opened): the
    /// bindings cannot be vouched for, so no point is guessed; `EBADMSG`
    /// for a corrupt log header.
    pub fn redo_lsn(&self, log: &Log) -> io::Result<u64> {
        let mut lsn = 0u64;
        // SAFETY: a live file and log; lsn is a valid out pointer.
        check(unsafe { ffi::sm_redo_lsn(self.inner.ptr.as_ptr(), log.as_ptr(), &mut lsn) })?;
        Ok(lsn)
    }

    /// Ends a recovery pass that replayed `log` into this file up to `lsn`
    /// (a committed record's LSN, or the committed tail) and committed the
    /// replayed pages: the bindings of the file whose holder was already
    /// dead at this `File`'s last [`File::redo_lsn`] with `log`, and whose
    /// highest bound LSN is below `lsn`, stop counting (the redo point
    /// moves past them, and their ranges are free again); one that reaches
    /// `lsn` or beyond counts from `lsn` on.  Live holders' bindings are
    /// never touched.  Append a marker record after the replay, commit it
    /// and pass its LSN: every replayed binding then lies below it.
    ///
    /// Errors: `EINVAL` if `lsn` is neither a committed record's LSN nor
    /// the committed tail (a trimmed record is no longer one); `EBADF` for
    /// a log opened read-only; `ENOTSUP` as [`File::redo_lsn`].
    pub fn redo_done(&self, log: &Log, lsn: u64) -> io::Result<()> {
        // SAFETY: a live file and log.
        check(unsafe { ffi::sm_redo_done(self.inner.ptr.as_ptr(), log.as_ptr(), lsn) })
    }
}

impl MapFlags {
    /// A recovery pass's slice (`SM_RECOVER`): when a process dies while
    /// its buffered slice has changes bound to a log
    /// ([`WriteSlice::set_lsn`]) that are not yet in the file, that range
    /// stays held against every other slice and range lock (`WouldBlock`,
    /// a [`HolderState::Stale`] holder) until a recovery pass has redone
    /// it ([`File::redo_done`]).  A slice mapped with this flag through a
    /// [`File`] on which [`File::redo_lsn`] was called is not refused by
    /// such ranges (live holders still conflict); without that call the
    /// flag changes nothing.
    pub fn recover(self, on: bool) -> MapFlags {
        self.set(ffi::SM_RECOVER, on)
    }
}
