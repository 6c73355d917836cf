// SPDX-License-Identifier: MIT
//! A dependent's binary: a slice, a range lock, a log and an object, in a
//! scratch directory given as the first argument.  Prints "ok".
use std::io::Write;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args_os().nth(1).expect("usage: safemap-dependent DIR"));
    let data = dir.join("data");
    std::fs::write(&data, [0u8; 4096])?;
    let file = safemap::OpenOptions::new().read(true).write(true).open(&data)?;
    {
        let _guard = file.lock(4096, 4096, safemap::Mode::Write)?;
        let mut w = file.map_write(0, 8)?;
        w.put_u64_le(0, 42)?;
        w.commit()?;
    }
    assert_eq!(file.map_read(0, 8)?.get_u64_le(0)?, 42);

    let log = safemap::Log::open(dir.join("log"), true)?;
    let lsn = log.sender().send(b"record")?;
    let (first, bytes) = log.iter(0)?.next().expect("a record")?;
    assert_eq!((first, &bytes[..]), (lsn, &b"record"[..]));

    let mut o = safemap::Object::create(&dir, "object")?;
    o.write_all(b"whole")?;
    o.publish()?;
    assert_eq!(std::fs::read(dir.join("object"))?, b"whole");
    println!("ok");
    Ok(())
}
