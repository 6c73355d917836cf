// SPDX-License-Identifier: MIT
//! A mapped cache made recoverable by a log: write slices bound to log
//! records (write-ahead commits, the redo point, trims held below it), a
//! killed binder's page fenced until a recovery pass, and a log dropped
//! before its bound slices.  The peer processes are this test binary run
//! again (the `peer` test, driven by SAFEMAP_TEST_PEER; without it, `peer`
//! does nothing).
#![cfg(safemap_redo)]
mod common;

use common::*;
use safemap::{File, HolderState, Log, MapFlags};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const PAGE: u64 = 4096;
const ESTALE: i32 = 116;

/// A data file of 16 pages (byte i = i % 251) and a log beside it.
struct Store {
    data: Scratch,
    log: Scratch,
}

impl Store {
    fn new(name: &str) -> Store {
        let log = Scratch::new(&format!("{}-log", name), 0);
        std::fs::remove_file(log.path()).unwrap();
        Store { data: Scratch::new(name, 16 * PAGE as usize), log }
    }

    fn file(&self) -> File {
        self.data.rw()
    }

    fn log(&self) -> Log {
        Log::open(self.log.path(), true).unwrap()
    }

    /// Bytes of the data file, read with plain std::fs (what reached it).
    fn on_disk(&self, off: u64, len: usize) -> Vec<u8> {
        let all = std::fs::read(self.data.path()).unwrap();
        all[off as usize..off as usize + len].to_vec()
    }
}

fn records(log: &Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.iter(from).unwrap().collect::<std::io::Result<_>>().unwrap()
}

/// How many of this process's file descriptors are open on `path`.
fn fds_on(path: &Path) -> usize {
    let want = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path()).map(|p| p == want).unwrap_or(false))
        .count()
}

/// A committed marker record: its LSN is above every record before it.
fn marker(log: &Log) -> u64 {
    let m = log.append(b"marker").unwrap();
    log.commit().unwrap();
    m
}

#[test]
fn a_bound_commit_commits_the_log_first() {
    let st = Store::new("redo-wal");
    let file = st.file();
    let log = st.log();
    let reader = Log::open_read_only(st.log.path()).unwrap(); // as another process
    let mut w = file.map_write_buffered(3 * PAGE, PAGE).unwrap();
    w.put_u64_le(0, 0x1122_3344).unwrap();
    let a = log.append(b"put 3 first").unwrap();
    w.set_lsn(&log, a).unwrap();
    w.put_u64_le(8, 0x5566_7788).unwrap();
    let b = log.append(b"put 3 second").unwrap();
    w.set_lsn(&log, b).unwrap();
    // Neither the records nor the page are anywhere yet.
    assert!(records(&reader, 0).is_empty());
    assert_eq!(st.on_disk(3 * PAGE, 8), (3 * PAGE..3 * PAGE + 8).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    // The slice's commit commits the log (no Log::commit was called)...
    w.commit().unwrap();
    assert_eq!(records(&reader, 0), vec![(a, b"put 3 first".to_vec()), (b, b"put 3 second".to_vec())]);
    // ...then writes the page.
    assert_eq!(st.on_disk(3 * PAGE, 16)[..8], 0x1122_3344u64.to_le_bytes());
    assert_eq!(st.on_disk(3 * PAGE + 8, 8), 0x5566_7788u64.to_le_bytes());
    // Reopened from scratch, the log has both records.
    drop((w, reader, log));
    drop(file);
    let log = st.log();
    assert_eq!(records(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(), vec![a, b]);
}

#[test]
fn binding_errors() {
    let st = Store::new("redo-errors");
    let file = st.file();
    let log = st.log();
    let a = log.append(b"a").unwrap();
    // A direct slice could reach the file at any moment: no binding.
    let mut d = file.map_write(0, PAGE).unwrap();
    assert_eq!(code(&d.set_lsn(&log, a).unwrap_err()), -EINVAL);
    drop(d);
    let mut w = file.map_write_buffered(0, PAGE).unwrap();
    assert_eq!(code(&w.set_lsn(&log, a + 1).unwrap_err()), -EINVAL); // not aligned
    assert_eq!(code(&w.set_lsn(&log, a + 4096).unwrap_err()), -EINVAL); // beyond the tail
    let ro = Log::open_read_only(st.log.path()).unwrap();
    assert_eq!(code(&w.set_lsn(&ro, a).unwrap_err()), -EBADF);
    w.set_lsn(&log, a).unwrap();
    // One log handle per slice.
    let other = st.log();
    assert_eq!(code(&w.set_lsn(&other, a).unwrap_err()), -EINVAL);
    w.put_u8(0, 1).unwrap();
    w.commit().unwrap();
    // A trimmed record cannot be bound.
    let b = log.append(b"b").unwrap();
    log.commit().unwrap();
    log.trim(b).unwrap();
    let mut w2 = file.map_write_buffered(PAGE, PAGE).unwrap();
    assert_eq!(code(&w2.set_lsn(&log, a).unwrap_err()), -ESTALE);
    w2.set_lsn(&log, b).unwrap();
    // redo_done takes a committed record's LSN or the committed tail.
    assert_eq!(code(&file.redo_done(&log, b + 8).unwrap_err()), -EINVAL);
    assert_eq!(code(&file.redo_done(&log, a).unwrap_err()), -EINVAL); // trimmed
    assert_eq!(code(&file.redo_done(&ro, b).unwrap_err()), -EBADF);
    // Without a lock table nothing vouches for the bindings: no guess.
    let bare = safemap::OpenOptions::new().read(true).write(true).no_table(true).open(st.data.path()).unwrap();
    assert_eq!(code(&bare.redo_lsn(&log).unwrap_err()), -ENOTSUP);
    assert_eq!(code(&bare.redo_done(&log, b).unwrap_err()), -ENOTSUP);
}

#[test]
fn the_redo_point_is_held_until_the_bound_slice_is_synced() {
    let st = Store::new("redo-held");
    let file = st.file();
    let log = st.log();
    let pre = marker(&log);
    assert!(file.redo_lsn(&log).unwrap() > pre, "nothing bound: the committed tail");
    let mut w = file.map_write_buffered(0, PAGE).unwrap();
    w.put_u8(0, 1).unwrap();
    let a = log.append(b"a").unwrap();
    w.set_lsn(&log, a).unwrap();
    let b = log.append(b"b").unwrap();
    w.set_lsn(&log, b).unwrap(); // the first LSN stays a
    let m = marker(&log);
    assert_eq!(file.redo_lsn(&log).unwrap(), a);
    // A checkpoint stops below the binding.
    log.trim(m).unwrap();
    assert_eq!(records(&log, 0)[0].0, a);
    // A synchronous commit ends the binding: the redo point moves on.
    w.commit().unwrap();
    let tail = file.redo_lsn(&log).unwrap();
    assert!(tail > m);
    log.trim(tail).unwrap();
    assert!(records(&log, 0).is_empty());

    // After an asynchronous commit the binding outlives the slice, until
    // a synchronous commit of the same file.
    w.put_u8(0, 2).unwrap();
    let c = log.append(b"c").unwrap();
    w.set_lsn(&log, c).unwrap();
    w.commit_async().unwrap();
    assert_eq!(records(&log, c).len(), 1, "the async commit committed the log");
    drop(w);
    marker(&log);
    assert_eq!(file.redo_lsn(&log).unwrap(), c);
    let mut other = file.map_write_buffered(5 * PAGE, PAGE).unwrap();
    other.put_u8(0, 9).unwrap();
    other.commit().unwrap();
    assert!(file.redo_lsn(&log).unwrap() > c);

    // A dirty bound slice released (or aborted) takes its binding, and
    // its changes, with it.
    let mut w = file.map_write_buffered(0, PAGE).unwrap();
    w.put_u8(0, 3).unwrap();
    let d = log.append(b"d").unwrap();
    w.set_lsn(&log, d).unwrap();
    marker(&log);
    assert_eq!(file.redo_lsn(&log).unwrap(), d);
    w.abort().unwrap();
    assert!(file.redo_lsn(&log).unwrap() > d);
    assert_eq!(st.on_disk(0, 1), [2]);
}

#[test]
fn a_log_dropped_before_its_bound_slices_closes_after_them() {
    let st = Store::new("redo-drop-log");
    let file = st.file();
    let log = st.log();
    assert!(fds_on(st.log.path()) > 0);
    // Bound, then the Log dropped: the slice's commit still commits it.
    let mut w = file.map_write_buffered(0, PAGE).unwrap();
    w.put_u8(0, 0x42).unwrap();
    let a = log.append(b"a").unwrap();
    w.set_lsn(&log, a).unwrap();
    drop(log);
    assert!(fds_on(st.log.path()) > 0, "closed under a bound slice");
    w.commit().unwrap();
    assert_eq!(records(&Log::open_read_only(st.log.path()).unwrap(), 0), vec![(a, b"a".to_vec())]);
    drop(w);
    assert_eq!(fds_on(st.log.path()), 0, "the log handle was not closed after its slice");

    // A read view of a bound, dirty slice keeps the binding (and the
    // handle) until it goes too.
    let log = st.log();
    let mut w = file.map_write_buffered(PAGE, PAGE).unwrap();
    let view = w.sub(0, 8).unwrap();
    w.put_u8(0, 0x43).unwrap();
    let b = log.append(b"b").unwrap();
    w.set_lsn(&log, b).unwrap();
    drop(log);
    drop(w);
    assert!(fds_on(st.log.path()) > 0, "closed under a bound slice's view");
    assert_eq!(view.get_u8(0).unwrap(), 0x43);
    drop(view);
    assert_eq!(fds_on(st.log.path()), 0, "the log handle was not closed after the view");
    let log = st.log();
    let m = marker(&log);
    let redo = file.redo_lsn(&log).unwrap();
    assert!(redo > m && records(&log, redo).is_empty(), "a released dirty slice's binding is left");
}

// ---------------------------------------------------------------------------
// Other processes

struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Peer {
    /// A binder in a new process: it maps page `page` of the store as a
    /// buffered slice, changes bytes 0 and 1, binds two records ("binder-1"
    /// and "binder-2") and commits the log, not the page.  Returns the
    /// peer and the two LSNs.
    fn bind(st: &Store, page: u64) -> (Peer, u64, u64) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "peer", "--nocapture", "--test-threads=1", "--quiet"])
            .env("SAFEMAP_TEST_PEER", format!("bind {}", page))
            .env("SAFEMAP_TEST_PATH", st.data.path())
            .env("SAFEMAP_TEST_LOG", st.log.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the peer");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut p = Peer { child, stdin, out };
        let lsns = p.expect("lsns");
        let mut w = lsns.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        let (a, b) = (w.next().unwrap(), w.next().unwrap());
        (p, a, b)
    }

    /// The rest of the first line the peer prints that starts with `what`.
    fn expect(&mut self, what: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line).unwrap() == 0 {
                panic!("peer exited before saying {:?}", what);
            }
            if let Some(rest) = line.trim().strip_prefix(what) {
                return rest.to_string();
            }
            if let Some(err) = line.strip_prefix("peer error:") {
                panic!("peer failed: {}", err.trim());
            }
        }
    }

    fn say(&mut self, what: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{}", what).unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "peer exit status {:?}", st);
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[test]
fn peer() {
    let role = match std::env::var("SAFEMAP_TEST_PEER") {
        Ok(r) => r,
        Err(_) => return,
    };
    if let Err(e) = run_peer(&role) {
        println!("peer error: {}", e);
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// `bind PAGE`: see `Peer::bind`; then, for each line "sync" on stdin,
/// commit the slice and say "synced"; release it when stdin closes.
fn run_peer(role: &str) -> std::io::Result<()> {
    let page: u64 = role.strip_prefix("bind ").expect("role").parse().unwrap();
    let file = safemap::OpenOptions::new()
        .read(true)
        .write(true)
        .tag("binder")
        .open(std::env::var("SAFEMAP_TEST_PATH").unwrap())?;
    let log = Log::open(std::env::var("SAFEMAP_TEST_LOG").unwrap(), false)?;
    let mut w = file.map_write_buffered(page * PAGE, PAGE)?;
    w.put_u8(0, 0xab)?;
    let a = log.append(b"binder-1")?;
    w.set_lsn(&log, a)?;
    w.put_u8(1, 0xcd)?;
    let b = log.append(b"binder-2")?;
    w.set_lsn(&log, b)?;
    log.commit()?;
    println!("lsns {} {}", a, b);
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        if line? == "sync" {
            w.commit()?;
            println!("synced");
            std::io::stdout().flush()?;
        }
    }
    Ok(())
}

#[test]
fn a_live_binder_in_another_process_holds_the_redo_point() {
    let st = Store::new("redo-live");
    let file = st.file();
    let log = st.log();
    let pre = marker(&log);
    let (mut peer, a, b) = Peer::bind(&st, 3);
    assert!(a > pre && b > a);
    let m = marker(&log);
    assert_eq!(file.redo_lsn(&log).unwrap(), a);
    log.trim(m).unwrap(); // stops below the binding
    assert_eq!(records(&log, 0)[0], (a, b"binder-1".to_vec()));
    // A recovery pass does not touch a live holder's binding.
    file.redo_done(&log, m).unwrap();
    assert_eq!(file.redo_lsn(&log).unwrap(), a);
    // Its page is held the usual way: by a live writer.
    assert_eq!(file.map_read(3 * PAGE, 1).unwrap_err().kind(), ErrorKind::WouldBlock);
    peer.say("sync");
    peer.expect("synced");
    assert!(file.redo_lsn(&log).unwrap() > m);
    assert_eq!(st.on_disk(3 * PAGE, 2), [0xab, 0xcd]);
    peer.finish();
}

#[test]
fn a_killed_binder_leaves_its_page_fenced_until_recovery() {
    let st = Store::new("redo-kill");
    let file = st.file();
    let log = st.log();
    let (peer, a, b) = Peer::bind(&st, 5);
    peer.kill();
    // Its change exists only in the log: the page is refused to everyone,
    // to every File, and however long one waits.
    let e = file.map_read(5 * PAGE, PAGE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    let holders = safemap::holders_of(&e);
    assert!(
        holders.iter().any(|h| h.state == HolderState::Stale && h.off <= 5 * PAGE && h.off + h.len > 5 * PAGE),
        "{:?}",
        holders
    );
    assert_eq!(file.map_write_buffered(4 * PAGE, 2 * PAGE).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(file.lock(5 * PAGE, 1, safemap::Mode::Read).unwrap_err().kind(), ErrorKind::WouldBlock);
    let other = st.file();
    assert_eq!(other.map_read(5 * PAGE, 1).unwrap_err().kind(), ErrorKind::WouldBlock);
    let e = other.map_read_timeout(5 * PAGE, 1, Duration::from_millis(50)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    other.map_read(6 * PAGE, PAGE).unwrap(); // beside it: free
    assert_eq!(st.on_disk(5 * PAGE, 2), [(5 * PAGE % 251) as u8, ((5 * PAGE + 1) % 251) as u8]);

    // The recovery pass.  Before redo_lsn, SM_RECOVER gets no further.
    let recover = MapFlags::new().buffered(true).recover(true);
    assert_eq!(file.map_write_with(5 * PAGE, PAGE, recover).unwrap_err().kind(), ErrorKind::WouldBlock);
    let from = file.redo_lsn(&log).unwrap();
    assert_eq!(from, a);
    let replay = records(&log, from);
    assert_eq!(replay, vec![(a, b"binder-1".to_vec()), (b, b"binder-2".to_vec())]);
    // Only the recovering File's SM_RECOVER slices pass.
    assert_eq!(other.map_write_with(5 * PAGE, PAGE, recover).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(file.map_read(5 * PAGE, 1).unwrap_err().kind(), ErrorKind::WouldBlock);
    let mut w = file.map_write_with(5 * PAGE, PAGE, recover).unwrap();
    for (lsn, rec) in &replay {
        match &rec[..] {
            b"binder-1" => w.put_u8(0, 0xab).unwrap(),
            _ => w.put_u8(1, 0xcd).unwrap(),
        }
        assert!(*lsn >= from);
    }
    w.commit().unwrap();
    drop(w);
    assert_eq!(other.map_read(5 * PAGE, 1).unwrap_err().kind(), ErrorKind::WouldBlock, "freed before redo_done");
    let m = marker(&log);
    file.redo_done(&log, m).unwrap();
    // Redone: free for everyone, with the dead process's change.
    let r = other.map_read(5 * PAGE, PAGE).unwrap();
    assert_eq!((r.get_u8(0).unwrap(), r.get_u8(1).unwrap()), (0xab, 0xcd));
    drop(r);
    assert!(file.holders(5 * PAGE, PAGE).unwrap().iter().all(|h| h.state != HolderState::Stale));
    let tail = file.redo_lsn(&log).unwrap();
    assert!(tail > m);
    log.trim(tail).unwrap();
    assert!(records(&log, 0).is_empty());
}
