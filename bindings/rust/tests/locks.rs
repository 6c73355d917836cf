// SPDX-License-Identifier: MIT
//! Range locks (`File::lock`) and waiting with a time limit
//! (`lock_timeout`, `map_read_timeout`, `map_write_timeout`), in one
//! process: two `File`s of one path conflict as two processes do.
mod common;

use common::*;
use safemap::Mode;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

const EDEADLK: i32 = 35;
const ETIMEDOUT: i32 = 110;

#[test]
fn range_lock_conflicts_with_other_files_ranges_and_slices() {
    let s = Scratch::new("lock-conflict", 4096);
    let a = s.rw();
    let b = s.rw();
    let g = a.lock(0, 100, Mode::Write).unwrap();
    assert_eq!((g.offset(), g.len(), g.mode()), (0, 100, Mode::Write));
    let e = b.lock(50, 10, Mode::Read).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(code(&e), -EBUSY);
    assert_eq!(e.raw_os_error(), None);
    let holders = safemap::holders_of(&e);
    assert_eq!(holders.len(), 1, "{:?}", holders);
    assert_eq!((holders[0].mode, holders[0].off, holders[0].len), (Mode::Write, 0, 100));
    assert_eq!(holders[0].pid, std::process::id() as i32);
    // A slice of either file conflicts too, the locking file's own included.
    assert_eq!(b.map_read(0, 10).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(a.map_read(0, 10).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(a.lock(99, 1, Mode::Read).unwrap_err().kind(), ErrorKind::WouldBlock);
    // Outside the range everything is free.
    let _r = b.lock(100, 10, Mode::Write).unwrap();
    b.map_read(200, 10).unwrap();
    drop(g);
    let r1 = b.lock(0, 100, Mode::Read).unwrap();
    let r2 = a.lock(0, 50, Mode::Read).unwrap(); // readers share
    assert_eq!(a.lock(0, 1, Mode::Write).unwrap_err().kind(), ErrorKind::WouldBlock);
    r1.unlock().unwrap();
    r2.unlock().unwrap();
    a.lock(0, 100, Mode::Write).unwrap().unlock().unwrap();
}

#[test]
fn range_lock_conflicts_with_a_slice_held_first() {
    let s = Scratch::new("lock-slice", 4096);
    let a = s.rw();
    let b = s.rw();
    let w = a.map_write(0, 4096).unwrap();
    assert_eq!(b.lock(4000, 10, Mode::Read).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(a.lock(4000, 10, Mode::Read).unwrap_err().kind(), ErrorKind::WouldBlock);
    drop(w);
    b.lock(4000, 10, Mode::Read).unwrap();
}

#[test]
fn range_lock_past_end_of_file_and_bad_arguments() {
    let s = Scratch::new("lock-args", 100);
    let a = s.rw();
    let g = a.lock(1 << 40, 1 << 20, Mode::Write).unwrap(); // past EOF: fine, no growth
    assert_eq!(std::fs::metadata(s.path()).unwrap().len(), 100);
    assert_eq!(s.rw().lock((1 << 40) + 5, 1, Mode::Read).unwrap_err().kind(), ErrorKind::WouldBlock);
    drop(g);
    assert_eq!(code(&a.lock(0, 0, Mode::Read).unwrap_err()), -EINVAL);
    assert_eq!(code(&a.lock(u64::MAX - 10, 100, Mode::Read).unwrap_err()), -ERANGE);
    let ro = s.ro();
    assert_eq!(code(&ro.lock(0, 10, Mode::Write).unwrap_err()), -EBADF);
    ro.lock(0, 10, Mode::Read).unwrap();
}

#[test]
fn range_lock_is_listed_with_the_files_tag() {
    let s = Scratch::new("lock-tag", 100);
    let a = safemap::OpenOptions::new().read(true).write(true).tag("ranger").open(s.path()).unwrap();
    let _g = a.lock(10, 20, Mode::Read).unwrap();
    let h = s.rw().holders(0, 100).unwrap();
    assert_eq!(h.len(), 1, "{:?}", h);
    assert_eq!((h[0].tag.as_str(), h[0].mode, h[0].off, h[0].len), ("ranger", Mode::Read, 10, 20));
}

#[test]
fn range_lock_can_be_dropped_on_another_thread() {
    let s = Scratch::new("lock-send", 100);
    let a = s.rw();
    let g = a.lock(0, 10, Mode::Write).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(move || drop(g));
    });
    a.lock(0, 10, Mode::Write).unwrap();
}

/// A write lock on `[off, off+len)` of `path`, taken and later dropped by
/// another thread (through its own `File`): waiting for it is no deadlock.
struct HeldElsewhere {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeldElsewhere {
    /// Held until `release` is called, or for `hold` at most.
    fn new(path: &std::path::Path, off: u64, len: u64, hold: Duration) -> HeldElsewhere {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let f = safemap::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            let g = f.lock(off, len, Mode::Write).unwrap();
            ready_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(hold);
            drop(g);
        });
        ready_rx.recv().unwrap();
        HeldElsewhere { release: Some(release_tx), thread: Some(thread) }
    }

    fn release(mut self) {
        drop(self.release.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for HeldElsewhere {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn lock_timeout_times_out_while_held() {
    let s = Scratch::new("lock-timeout", 4096);
    let held = HeldElsewhere::new(s.path(), 0, 100, Duration::from_secs(60));
    let t = Duration::from_millis(60);
    {
        let f = &s.rw();
        let start = Instant::now();
        let e = f.lock_timeout(10, 10, Mode::Read, t).unwrap_err();
        assert!(start.elapsed() >= t, "gave up after {:?}", start.elapsed());
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{:?}", e);
        assert_eq!(code(&e), -ETIMEDOUT);
        assert!(!safemap::is_deadlock(&e));
        let e = f.map_read_timeout(10, 10, t).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{:?}", e);
        let e = f.map_write_timeout(90, 20, t).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{:?}", e);
        // Free regions need no waiting.
        f.map_write_timeout(100, 10, t).unwrap();
    }
    held.release();
}

#[test]
fn zero_timeout_tries_once() {
    let s = Scratch::new("lock-zero", 4096);
    let held = HeldElsewhere::new(s.path(), 0, 100, Duration::from_secs(60));
    let f = s.rw();
    let e = f.lock_timeout(0, 1, Mode::Write, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    held.release();
    f.lock_timeout(0, 1, Mode::Write, Duration::ZERO).unwrap();
}

#[test]
fn lock_timeout_gets_the_region_when_it_is_released() {
    let s = Scratch::new("lock-wait", 4096);
    let t = Duration::from_secs(20);
    {
        let f = &s.rw();
        // Held for 50 ms by another thread: each wait gets it then.
        let hold = Duration::from_millis(50);
        let _held = HeldElsewhere::new(s.path(), 0, 100, hold);
        let start = Instant::now();
        let r = f.lock_timeout(0, 100, Mode::Write, t).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40), "{:?}", start.elapsed());
        drop(r);
        let _held = HeldElsewhere::new(s.path(), 200, 10, hold);
        let mut ws = f.map_write_timeout(200, 10, t).unwrap();
        ws.put_u8(0, 1).unwrap();
        drop(ws);
        let _held = HeldElsewhere::new(s.path(), 0, 10, hold);
        let r = f.map_read_timeout(0, 10, t).unwrap();
        let other = s.rw();
        let r2 = other.map_read(0, 10).unwrap(); // and then shares
        assert_eq!(r.get_u8(0).unwrap(), r2.get_u8(0).unwrap());
    }
}

#[test]
fn waiting_on_the_callers_own_hold_is_edeadlk() {
    let s = Scratch::new("lock-deadlk", 4096);
    let t = Duration::from_secs(20);
    {
        let f = &s.rw();
        // Held by this thread through the same File, and through another.
        let other = s.rw();
        for holder in [f, &other] {
            let w = holder.map_write(0, 100).unwrap();
            let start = Instant::now();
            let e = f.lock_timeout(50, 1, Mode::Read, t).unwrap_err();
            assert!(safemap::is_deadlock(&e), "{:?}", e);
            assert_eq!(code(&e), -EDEADLK);
            assert_eq!(e.kind(), ErrorKind::Other);
            let e = f.map_write_timeout(0, 1, t).unwrap_err();
            assert!(safemap::is_deadlock(&e), "{:?}", e);
            assert!(start.elapsed() < t, "waited the whole timeout");
            drop(w);
            f.lock_timeout(0, 100, Mode::Write, t).unwrap();
        }
    }
}

#[test]
fn hold_of_another_thread_is_waited_for_not_edeadlk() {
    let s = Scratch::new("lock-other-thread", 4096);
    let f = s.rw();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|sc| {
        let f2 = &f;
        sc.spawn(move || {
            let g = f2.lock(0, 10, Mode::Write).unwrap();
            tx.send(()).unwrap();
            let _ = done_rx.recv_timeout(Duration::from_millis(80));
            drop(g);
        });
        rx.recv().unwrap();
        // Same File, another thread's hold: polling waits it out.
        let e = f.lock_timeout(0, 10, Mode::Write, Duration::from_millis(20)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{:?}", e);
        let g = f.lock_timeout(0, 10, Mode::Write, Duration::from_secs(20)).unwrap();
        drop(done_tx);
        drop(g);
    });
}

#[test]
fn a_waiter_is_listed_as_waiting_and_woken_by_the_release() {
    let s = Scratch::new("lock-listed", 4096);
    let holder = s.rw();
    let waiter = safemap::OpenOptions::new().read(true).write(true).tag("waiter").open(s.path()).unwrap();
    std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::channel();
        let holder = &holder;
        let held = sc.spawn(move || {
            let g = holder.lock(0, 100, Mode::Write).unwrap();
            tx.send(()).unwrap();
            // Until the waiter shows in the lock table.
            let start = Instant::now();
            while !holder.holders(0, 100).unwrap().iter().any(|h| h.state == safemap::HolderState::Waiting) {
                assert!(start.elapsed() < Duration::from_secs(20), "no waiter listed");
                std::thread::sleep(Duration::from_millis(1));
            }
            let w = holder.holders(0, 100).unwrap().into_iter().find(|h| h.state == safemap::HolderState::Waiting);
            assert_eq!(w.unwrap().tag, "waiter");
            drop(g);
        });
        rx.recv().unwrap();
        let g = waiter.lock_timeout(50, 10, Mode::Read, Duration::from_secs(20)).unwrap();
        held.join().unwrap();
        drop(g);
    });
}
