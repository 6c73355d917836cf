// SPDX-License-Identifier: MIT
//! Multi-process tests: this test binary re-executes itself as the peer
//! (the `peer` test below, selected with `--exact` and driven by the
//! SAFEMAP_TEST_PEER environment variable; without it, `peer` does nothing).
mod common;

use common::*;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Peer {
    /// Runs `role` on `path` in a new process and waits until it says `ready`.
    fn start(role: &str, path: &std::path::Path) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "peer", "--nocapture", "--test-threads=1", "--quiet"])
            .env("SAFEMAP_TEST_PEER", role)
            .env("SAFEMAP_TEST_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the peer");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut p = Peer { child, stdin, out };
        p.expect("ready");
        p
    }

    fn expect(&mut self, what: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line).unwrap() == 0 {
                panic!("peer exited before saying {:?}", what);
            }
            if line.trim() == what {
                return;
            }
            if let Some(err) = line.strip_prefix("peer error:") {
                panic!("peer failed: {}", err.trim());
            }
        }
    }

    /// Tells the peer to finish (closes its stdin) and checks its exit status.
    fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "peer exit status {:?}", st);
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// The peer's side.  Roles: `hold-write OFF LEN`, `hold-read OFF LEN`
/// (hold a slice until stdin closes), `lock-write OFF LEN` (hold a range
/// lock until stdin closes), `put OFF VALUE` (write, commit, exit),
/// `truncate LEN` (shrink the file with plain std::fs, exit), `log-send N`
/// (the path is a log: send N records "PID:I" as soon as stdin closes).
#[test]
fn peer() {
    let role = match std::env::var("SAFEMAP_TEST_PEER") {
        Ok(r) => r,
        Err(_) => return,
    };
    let path = std::env::var("SAFEMAP_TEST_PATH").unwrap();
    if let Err(e) = run_peer(&role, &path) {
        println!("peer error: {}", e);
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn run_peer(role: &str, path: &str) -> std::io::Result<()> {
    let words: Vec<&str> = role.split_whitespace().collect();
    let num = |i: usize| words[i].parse::<u64>().unwrap();
    if words[0] == "log-send" {
        let tx = safemap::Log::open(path, false)?.sender();
        println!("ready");
        std::io::stdout().flush().unwrap();
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
        for i in 0..num(1) {
            tx.send(format!("{}:{}", std::process::id(), i).as_bytes())?;
        }
        return Ok(());
    }
    let file = safemap::OpenOptions::new().read(true).write(true).tag("peer").open(path)?;
    let wait_stdin = || {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    };
    let ready = || {
        println!("ready");
        std::io::stdout().flush().unwrap();
    };
    match words[0] {
        "hold-write" => {
            let _w = file.map_write(num(1), num(2))?;
            ready();
            wait_stdin();
        }
        "lock-write" => {
            let _g = file.lock(num(1), num(2), safemap::Mode::Write)?;
            ready();
            wait_stdin();
        }
        "hold-read" => {
            let _r = file.map_read(num(1), num(2))?;
            ready();
            wait_stdin();
        }
        "put" => {
            let mut w = file.map_write(num(1), 8)?;
            w.put_u64_le(0, num(2))?;
            w.commit()?;
            ready();
        }
        "truncate" => {
            std::fs::OpenOptions::new().write(true).open(path)?.set_len(num(1))?;
            ready();
        }
        r => panic!("unknown role {}", r),
    }
    Ok(())
}

/// Retries `f` until it stops failing with WouldBlock (the peer's exit
/// releases its locks asynchronously to our wait()).
fn eventually<T>(mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r.unwrap(),
        }
    }
}

#[test]
fn region_held_by_another_process_is_would_block() {
    let s = Scratch::new("procs-conflict", 8192);
    let peer = Peer::start("hold-write 0 4096", s.path());
    let f = s.rw();
    let e = f.map_write(100, 8).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(code(&e), -EBUSY);
    let e = f.map_read(4095, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    let holders = safemap::holders_of(&e);
    assert_eq!(holders.len(), 1, "{:?}", holders);
    assert_eq!(holders[0].pid, peer.pid());
    assert_eq!(holders[0].tag, "peer");
    assert_eq!(holders[0].mode, safemap::Mode::Write);
    assert_eq!((holders[0].off, holders[0].len), (0, 4096));
    // The rest of the file is free.
    f.map_write(4096, 4096).unwrap().put_u8(0, 1).unwrap();
    peer.finish();
    let mut w = eventually(|| f.map_write(0, 8192));
    w.put_u8(0, 2).unwrap();
}

#[test]
fn readers_share_across_processes() {
    let s = Scratch::new("procs-share", 4096);
    let peer = Peer::start("hold-read 0 4096", s.path());
    let f = s.rw();
    let r = f.map_read(0, 4096).unwrap();
    assert_eq!(r.get_u8(10).unwrap(), 10);
    assert_eq!(f.map_write(0, 1).unwrap_err().kind(), ErrorKind::WouldBlock);
    let holders = f.holders(0, 4096).unwrap();
    assert_eq!(holders.len(), 2, "{:?}", holders);
    assert!(holders.iter().all(|h| h.mode == safemap::Mode::Read));
    drop(r);
    peer.finish();
    eventually(|| f.map_write(0, 1));
}

#[test]
fn killed_holder_frees_its_region() {
    let s = Scratch::new("procs-kill", 4096);
    let mut peer = Peer::start("hold-write 0 100", s.path());
    let f = s.rw();
    assert_eq!(f.map_write(0, 100).unwrap_err().kind(), ErrorKind::WouldBlock);
    peer.child.kill().unwrap();
    peer.child.wait().unwrap();
    let mut w = eventually(|| f.map_write(0, 100));
    w.put_u64_le(0, 5).unwrap();
    w.commit().unwrap();
}

#[test]
fn committed_writes_are_seen_by_another_process() {
    let s = Scratch::new("procs-put", 4096);
    let f = s.rw();
    {
        let r = f.map_read(64, 8).unwrap();
        assert_eq!(r.get_u8(0).unwrap(), 64);
    }
    let peer = Peer::start("put 64 123456789", s.path());
    peer.finish();
    let r = eventually(|| f.map_read(64, 8));
    assert_eq!(r.get_u64_le(0).unwrap(), 123_456_789);
}

#[test]
fn truncation_by_another_process_is_an_error() {
    let s = Scratch::new("procs-trunc", 4096 * 8);
    let f = s.rw();
    let r = f.map_read(4096, 4096 * 7).unwrap();
    let mut w = f.map_write(0, 4096).unwrap();
    assert_eq!(r.get_u32_le(4096 * 6).unwrap() & 0xff, ((4096 * 7) % 251) as u32);
    let peer = Peer::start("truncate 10", s.path());
    peer.finish();
    let e = r.get_u32_le(4096 * 6).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(code(&e), -ENXIO);
    let mut buf = [0u8; 16];
    assert_eq!(r.read_at(0, &mut buf).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    w.put_u8(0, 1).unwrap(); // in the file's last, partial page: no error
    assert_eq!(w.commit().unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn range_lock_held_by_another_process() {
    let s = Scratch::new("procs-range", 4096);
    let peer = Peer::start("lock-write 0 100", s.path());
    let f = s.rw();
    let e = f.lock(50, 1, safemap::Mode::Read).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    let holders = safemap::holders_of(&e);
    assert_eq!(holders.len(), 1, "{:?}", holders);
    assert_eq!((holders[0].pid, holders[0].tag.as_str()), (peer.pid(), "peer"));
    assert_eq!(f.map_read(0, 10).unwrap_err().kind(), ErrorKind::WouldBlock);
    f.lock(100, 10, safemap::Mode::Write).unwrap();
    // Waiting for it gives up at the time limit.
    let t = Duration::from_millis(50);
    let start = Instant::now();
    let e = f.lock_timeout(0, 1, safemap::Mode::Write, t).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{:?}", e);
    assert!(start.elapsed() >= t);
    // Meanwhile the lock table lists nobody waiting: the waiter has gone.
    assert!(f.holders(0, 100).unwrap().iter().all(|h| h.state != safemap::HolderState::Waiting));
    peer.finish();
    eventually(|| f.lock(0, 100, safemap::Mode::Write));
}

#[test]
fn lock_timeout_waits_for_another_process_to_let_go() {
    let s = Scratch::new("procs-range-wait", 4096);
    let t = Duration::from_secs(20);
    let f = s.rw();
    {
        let peer = Peer::start("lock-write 0 100", s.path());
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            peer.finish();
        });
        let start = Instant::now();
        let mut w = f.map_write_timeout(0, 100, t).unwrap();
        assert!(start.elapsed() < t);
        w.put_u8(0, 9).unwrap();
        stopper.join().unwrap();
    }
}

#[test]
fn log_senders_in_two_processes_interleave_whole_records() {
    const N: u64 = 300;
    let s = Scratch::new("procs-log", 0);
    std::fs::remove_file(s.path()).unwrap();
    let log = safemap::Log::open(s.path(), true).unwrap();
    let peer = Peer::start(&format!("log-send {}", N), s.path());
    let tx = log.sender();
    let me = std::process::id();
    let mine = std::thread::spawn(move || {
        (0..N).map(|i| tx.send(format!("{}:{}", me, i).as_bytes()).unwrap()).collect::<Vec<u64>>()
    });
    peer.finish(); // starts its sends, and waits for them
    let mine = mine.join().unwrap();
    let mut next = std::collections::HashMap::new();
    let mut count = 0;
    for rec in log.iter(0).unwrap() {
        let (lsn, bytes) = rec.unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let (pid, i) = text.split_once(':').unwrap();
        let (pid, i): (u32, u64) = (pid.parse().unwrap(), i.parse().unwrap());
        let n = next.entry(pid).or_insert(0u64);
        assert_eq!(i, *n, "process {}'s records out of order", pid);
        *n += 1;
        if pid == me {
            assert_eq!(mine[i as usize], lsn);
        }
        count += 1;
    }
    assert_eq!(count, 2 * N);
    assert_eq!(next.len(), 2);
}
