// SPDX-License-Identifier: MIT
//! Cursors over slices: `std::io::Read`, `Write` and `Seek`.
use super::*;

pub(crate) fn seek_to(pos: u64, len: u64, to: SeekFrom) -> io::Result<u64> {
    let (base, delta) = match to {
        SeekFrom::Start(n) => return Ok(n),
        SeekFrom::End(d) => (len, d),
        SeekFrom::Current(d) => (pos, d),
    };
    let new = if delta >= 0 { base.checked_add(delta as u64) } else { base.checked_sub(delta.unsigned_abs()) };
    new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "safemap: seek before byte 0 or overflow"))
}

fn cursor_read(raw: &Raw, pos: &mut u64, buf: &mut [u8]) -> io::Result<usize> {
    let len = raw.len();
    if *pos >= len || buf.is_empty() {
        return Ok(0);
    }
    let n = std::cmp::min(buf.len() as u64, len - *pos) as usize;
    raw.read_at(*pos, &mut buf[..n])?;
    *pos += n as u64;
    Ok(n)
}

/// A [`Read`] + [`Seek`] cursor over a read slice (or a read view of a write
/// slice).  Reading at the end gives `Ok(0)`.
pub struct ReadCursor<'s> {
    pub(crate) raw: &'s Raw,
    pub(crate) pos: u64,
}

impl ReadCursor<'_> {
    /// The position, relative to the slice.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for ReadCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        cursor_read(self.raw, &mut self.pos, buf)
    }
}

impl Seek for ReadCursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_to(self.pos, self.raw.len(), to)?;
        Ok(self.pos)
    }
}

/// A [`Read`] + [`Write`] + [`Seek`] cursor over a write slice.  Writing at
/// the end gives `Ok(0)` (so `write_all` fails with `WriteZero`); `flush`
/// does nothing: call [`WriteSlice::commit`].
pub struct WriteCursor<'s> {
    pub(crate) raw: &'s mut Raw,
    pub(crate) pos: u64,
}

impl WriteCursor<'_> {
    /// The position, relative to the slice.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for WriteCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        cursor_read(self.raw, &mut self.pos, buf)
    }
}

impl Write for WriteCursor<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = self.raw.len();
        if self.pos >= len || buf.is_empty() {
            return Ok(0);
        }
        let n = std::cmp::min(buf.len() as u64, len - self.pos) as usize;
        self.raw.write_at(self.pos, &buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for WriteCursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_to(self.pos, self.raw.len(), to)?;
        Ok(self.pos)
    }
}
