// SPDX-License-Identifier: MIT
//! `LogSender::send` from several threads shares flushes (group commit):
//! this test binary counts the library's `fdatasync` calls by defining
//! `fdatasync` itself (the dynamic linker binds libsafemap's call to the
//! executable's definition, which counts and calls the C library's).  The
//! counting `fdatasync` also takes 2 ms, as a slow disk does, so that
//! senders queue behind a flush whatever the test machine's disk.
//! Alone in its binary: every flush of the process is counted.
use std::os::raw::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static FLUSHES: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void;
}

/// `RTLD_NEXT` (glibc): the next definition after this object's.
const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;

#[no_mangle]
pub extern "C" fn fdatasync(fd: c_int) -> c_int {
    FLUSHES.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2));
    // SAFETY: glibc's fdatasync has this signature.
    unsafe {
        let real = dlsym(RTLD_NEXT, b"fdatasync\0".as_ptr() as *const c_char);
        assert!(!real.is_null(), "no fdatasync after this binary's");
        let real: extern "C" fn(c_int) -> c_int = std::mem::transmute(real);
        real(fd)
    }
}

#[test]
fn senders_share_flushes() {
    const THREADS: usize = 8;
    const EACH: usize = 40;
    let dir = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("safemap-rs-log-group-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let log = safemap::Log::open(&path, true).unwrap();
    // The seam works: one commit of one record is one flush.
    log.append(b"first").unwrap();
    let before = FLUSHES.load(Ordering::SeqCst);
    log.commit().unwrap();
    let one = FLUSHES.load(Ordering::SeqCst) - before;
    assert_eq!(one, 1, "a commit made {} flushes (is fdatasync counted?)", one);

    let before = FLUSHES.load(Ordering::SeqCst);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = log.sender();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..EACH {
                    tx.send(format!("{}:{}", t, i).as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let flushes = FLUSHES.load(Ordering::SeqCst) - before;
    let sends = THREADS * EACH;
    eprintln!("{} sends from {} threads: {} flushes", sends, THREADS, flushes);
    assert!(flushes >= 1);
    assert!(flushes * 2 <= sends, "{} sends made {} flushes: not shared", sends, flushes);
    assert_eq!(log.iter(0).unwrap().count(), sends + 1);
    drop(log);
    let _ = std::fs::remove_file(&path);
}
