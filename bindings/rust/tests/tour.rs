// SPDX-License-Identifier: MIT
//! Every part of the API once, written as a user's program would: file,
//! slices, a conflict, a range lock, timed waits, a log with senders, a
//! slice bound to the log, an object.  Fails to compile if a name or
//! signature changes.
mod common;

use common::Scratch;
use std::io::Write;
use std::time::Duration;

#[test]
fn the_whole_api_in_one_program() -> std::io::Result<()> {
    let s = Scratch::new("tour", 0);
    let path = s.path();
    let (off, len) = (0u64, 64u64);
    let file = safemap::OpenOptions::new().read(true).write(true).create(true).open(path)?;
    file.map_write_with(0, 4096, safemap::MapFlags::new().extend(true))?.commit()?;
    {
        let mut w: safemap::WriteSlice<'_> = file.map_write(off, len)?;
        w.put_u64_le(0, 7)?;
        w.write_at(8, &[1, 2, 3])?;
        w.commit()?;
    }
    let r: safemap::ReadSlice<'_> = file.map_read(off, len)?;
    let v: u64 = r.get_u64_le(0)?;
    assert_eq!(v, 7);
    let mut buf = [0u8; 3];
    r.read_at(8, &mut buf)?;
    let sub = r.sub(8, 3)?;
    let owned: safemap::OwnedReadSlice = file.map_read_owned(off, len)?;
    let bytes: &[u8] = unsafe { r.as_bytes() };
    assert_eq!(&bytes[8..11], &buf);
    match file.map_write(0, 10) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let holders = safemap::holders_of(&e);
            assert!(!holders.is_empty());
        }
        other => panic!("expected a conflict, got {:?}", other.map(|_| ())),
    }
    drop((r, sub, owned));

    let g: safemap::RangeLock<'_> = file.lock(off, len, safemap::Mode::Write)?;
    drop(g);
    let g = file.lock_timeout(off, len, safemap::Mode::Read, Duration::from_millis(50))?;
    drop(g);
    let w = file.map_write_timeout(off, len, Duration::from_millis(50))?;
    drop(w);
    let r = file.map_read_timeout(off, len, Duration::from_millis(50))?;
    drop(r);

    let logs = Scratch::new("tour-log", 0);
    std::fs::remove_file(logs.path())?;
    let log = safemap::Log::open(logs.path(), /*create*/ true)?;
    let lsn: u64 = log.append(b"record")?;
    log.commit()?;
    #[cfg(safemap_log_trim)]
    log.trim(lsn)?;
    for rec in log.iter(0)? {
        let (l, bytes): (u64, Vec<u8>) = rec?;
        assert_eq!((l, &bytes[..]), (lsn, &b"record"[..]));
    }
    let tx: safemap::LogSender = log.sender();
    let sent = std::thread::spawn(move || tx.send(b"rec")).join().unwrap()?;
    assert!(sent > lsn);

    // A buffered slice bound to the log record that describes its change.
    #[cfg(safemap_redo)]
    {
        let mut w: safemap::WriteSlice<'_> = file.map_write_buffered(off, len)?;
        w.put_u64_le(0, 8)?;
        let lsn = log.append(b"put 8")?;
        w.set_lsn(&log, lsn)?;
        w.commit()?; // the log first, then the page
        drop(w);
        let redo: u64 = file.redo_lsn(&log)?;
        let r = file.map_read_with(off, len, safemap::MapFlags::new().recover(true))?;
        assert_eq!(r.get_u64_le(0)?, 8);
        file.redo_done(&log, lsn)?;
        log.trim(redo)?;
    }

    let dir = std::env::temp_dir().join(format!("safemap-rs-tour-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut o = safemap::Object::create(&dir, "name")?;
    o.write_all(b"...")?;
    o.publish()?;
    assert_eq!(std::fs::read(dir.join("name"))?, b"...");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
