// SPDX-License-Identifier: MIT
//! Objects: written with `Write` and zero-copy slices, published whole or
//! aborted without a trace; a failed publish gives the object back.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const EEXIST: i32 = 17;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let base = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let d = base.join(format!("safemap-rs-obj-{}-{}-{}", name, std::process::id(), n));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// The names in the directory, sorted (hidden ones included).
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[test]
fn written_object_appears_whole_only_when_published() {
    let d = Dir::new("publish");
    let mut o = safemap::Object::create(d.path(), "obj").unwrap();
    let small = pattern(1000, 1);
    let big = pattern(300_000, 2); // more than the gathering buffer
    for chunk in small.chunks(7) {
        o.write_all(chunk).unwrap();
    }
    o.write_all(&big).unwrap();
    o.write_all(b"tail").unwrap();
    assert_eq!(o.position(), (small.len() + big.len() + 4) as u64);
    o.flush().unwrap();
    assert!(d.names().is_empty(), "visible before publish: {:?}", d.names());
    o.publish().unwrap();
    let mut want = small;
    want.extend_from_slice(&big);
    want.extend_from_slice(b"tail");
    assert_eq!(std::fs::read(d.path().join("obj")).unwrap(), want);
    assert_eq!(d.names(), vec!["obj".to_string()]);
}

#[test]
fn map_write_fills_in_place() {
    let d = Dir::new("map");
    let mut o = safemap::Object::create(d.path(), "pages").unwrap();
    o.write_all(b"head").unwrap(); // gathered, written before the slice is made
    {
        let mut w = o.map_write(4096, 4096).unwrap();
        for i in 0..512u64 {
            w.put_u64_le(i * 8, i).unwrap();
        }
        let mut sub = w.sub_mut(0, 8).unwrap();
        sub.put_u64_le(0, 0xfeed).unwrap();
    }
    o.publish().unwrap();
    let bytes = std::fs::read(d.path().join("pages")).unwrap();
    assert_eq!(bytes.len(), 8192);
    assert_eq!(&bytes[..4], b"head");
    assert!(bytes[4..4096].iter().all(|&b| b == 0));
    assert_eq!(u64::from_le_bytes(bytes[4096..4104].try_into().unwrap()), 0xfeed);
    assert_eq!(u64::from_le_bytes(bytes[8184..8192].try_into().unwrap()), 511);
}

#[test]
fn abort_and_drop_leave_nothing_behind() {
    let d = Dir::new("abort");
    let mut o = safemap::Object::create(d.path(), "a").unwrap();
    o.write_all(&pattern(100_000, 3)).unwrap();
    o.abort().unwrap();
    let mut o = safemap::Object::create(d.path(), "b").unwrap();
    o.write_all(b"dropped").unwrap();
    o.map_write(0, 10).unwrap().put_u8(0, 1).unwrap();
    drop(o);
    assert!(d.names().is_empty(), "left behind: {:?}", d.names());
}

#[test]
fn failed_publish_gives_the_object_back() {
    let d = Dir::new("exists");
    std::fs::write(d.path().join("name"), b"old").unwrap();
    let mut o = safemap::Object::create(d.path(), "name").unwrap();
    o.write_all(b"new contents").unwrap();
    let err = o.publish().unwrap_err();
    assert_eq!(safemap::error_code(err.error()), Some(-EEXIST));
    assert_eq!(std::fs::read(d.path().join("name")).unwrap(), b"old");
    // Still usable: write more, clear the way, publish again.
    let mut o = err.into_object();
    o.write_all(b", more").unwrap();
    std::fs::remove_file(d.path().join("name")).unwrap();
    o.publish().unwrap();
    assert_eq!(std::fs::read(d.path().join("name")).unwrap(), b"new contents, more");
    assert_eq!(d.names(), vec!["name".to_string()]);
}

#[test]
fn publish_error_converts_for_the_question_mark() {
    let d = Dir::new("question");
    std::fs::write(d.path().join("x"), b"old").unwrap();
    let run = || -> std::io::Result<()> {
        let mut o = safemap::Object::create(d.path(), "x")?;
        o.write_all(b"y")?;
        o.publish()?;
        Ok(())
    };
    let e = run().unwrap_err();
    assert_eq!(safemap::error_code(&e), Some(-EEXIST));
    assert_eq!(d.names(), vec!["x".to_string()], "the failed object was not aborted");
}

#[test]
fn replacing_object_replaces_the_name() {
    let d = Dir::new("replace");
    std::fs::write(d.path().join("cfg"), b"old").unwrap();
    let mut o = safemap::Object::create_replacing(d.path(), "cfg").unwrap();
    o.write_all(b"new").unwrap();
    o.publish().unwrap();
    assert_eq!(std::fs::read(d.path().join("cfg")).unwrap(), b"new");
    assert_eq!(d.names(), vec!["cfg".to_string()]);
}

#[test]
fn bad_names_are_invalid() {
    let d = Dir::new("names");
    for bad in ["", "a/b", ".", ".."] {
        let e = safemap::Object::create(d.path(), bad).unwrap_err();
        assert_eq!(safemap::error_code(&e), Some(-22), "{:?}", bad);
    }
    assert!(safemap::Object::create(d.path().join("missing"), "x").is_err());
}

#[test]
fn object_and_its_publish_error_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<safemap::Object>();
    send_sync::<safemap::PublishError>();
    // `?` also converts a PublishError into the usual boxed error.
    let d = Dir::new("boxed");
    let run = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut o = safemap::Object::create(d.path(), "b")?;
        o.write_all(b"boxed")?;
        o.publish()?;
        Ok(())
    };
    run().unwrap();
    assert!(run().unwrap_err().to_string().contains("publish"));
}
