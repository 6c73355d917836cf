use std::io::{self, ErrorKind};

fn main() -> io::Result<()> {
    let path = std::env::temp_dir().join(format!("readme-rs-{}.db", std::process::id()));
    std::fs::write(&path, [0u8; 8192])?;
    let file = safemap::OpenOptions::new().read(true).write(true).tag("readme").open(&path)?;

    let mut w = file.map_write(0, 4096)?; // write lock on [0, 4096)
    w.put_u64_le(0, 42)?;
    w.write_at(8, b"hello")?;
    w.commit()?; // explicit and fallible: Drop never commits

    // A conflicting window fails fast, and the error names the holder.
    match file.map_read(0, 16) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            for h in safemap::holders_of(&e) {
                println!("busy: held by pid {} ({}, tag {})", h.pid, h.comm, h.tag);
            }
        }
        other => panic!("expected a conflict, got {:?}", other.map(|_| ())),
    }
    drop(w); // releases the lock

    let r = file.map_read(0, 4096)?; // read lock, shared with other readers
    let mut hello = [0u8; 5];
    r.read_at(8, &mut hello)?;
    println!("{} {}", r.get_u64_le(0)?, String::from_utf8_lossy(&hello));

    // Out of bounds is an error, never a crash.
    assert_eq!(r.get_u64_le(4090).unwrap_err().raw_os_error(), Some(34)); // ERANGE

    drop(r);
    drop(file);
    std::fs::remove_file(&path)?;
    let mut table = path.into_os_string();
    table.push(".smlock");
    std::fs::remove_file(table)
}
