// SPDX-License-Identifier: MIT
//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A scratch file (and its `.smlock` lock table), removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// A file of `len` bytes, byte i = i % 251.
    pub fn new(name: &str, len: usize) -> Scratch {
        let dir = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("safemap-rs-{}-{}-{}", name, std::process::id(), n));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, data).unwrap();
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rw(&self) -> safemap::File {
        safemap::OpenOptions::new().read(true).write(true).open(&self.path).unwrap()
    }

    pub fn ro(&self) -> safemap::File {
        safemap::OpenOptions::new().read(true).open(&self.path).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let mut t = self.path.clone().into_os_string();
        t.push(".smlock");
        let _ = std::fs::remove_file(t);
    }
}

/// The safemap code of an error (negative errno).
pub fn code(e: &std::io::Error) -> i32 {
    safemap::error_code(e).unwrap_or_else(|| panic!("no safemap code in {:?}", e))
}

pub const ENXIO: i32 = 6;
pub const EBADF: i32 = 9;
pub const EBUSY: i32 = 16;
pub const EINVAL: i32 = 22;
pub const ERANGE: i32 = 34;
pub const ENOTSUP: i32 = 95;
