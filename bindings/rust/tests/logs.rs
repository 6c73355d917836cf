// SPDX-License-Identifier: MIT
//! Logs: append, commit, iterate (copying, lending, slices), senders from
//! several threads, and trim (when the C library has `sm_log_trim`).
mod common;

use common::*;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::PathBuf;

/// A scratch path for a log (removed with its lock table on drop).
fn log_path(name: &str) -> Scratch {
    let s = Scratch::new(name, 0);
    std::fs::remove_file(s.path()).unwrap();
    s
}

fn all(log: &safemap::Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.iter(from).unwrap().collect::<std::io::Result<_>>().unwrap()
}

#[test]
fn appended_records_are_seen_after_commit_only() {
    let s = log_path("log-basic");
    assert!(safemap::Log::open(s.path(), false).is_err(), "opened a missing log without create");
    let log = safemap::Log::open(s.path(), true).unwrap();
    assert!(all(&log, 0).is_empty());
    let a = log.append(b"alpha").unwrap();
    let b = log.append(&[7u8; 1000]).unwrap();
    assert!(b > a);
    assert!(all(&log, 0).is_empty(), "uncommitted records are visible");
    log.commit().unwrap();
    assert_eq!(all(&log, 0), vec![(a, b"alpha".to_vec()), (b, vec![7u8; 1000])]);
    assert_eq!(all(&log, b), vec![(b, vec![7u8; 1000])]);
    // Another handle (as another process would) sees the same.
    let other = safemap::Log::open_read_only(s.path()).unwrap();
    assert_eq!(all(&other, 0).len(), 2);
    assert_eq!(code(&other.append(b"x").unwrap_err()), -EBADF);
    assert_eq!(code(&log.append(b"").unwrap_err()), -EINVAL);
    assert_eq!(code(&log.iter(a + 1).err().unwrap()), -EINVAL);
    drop(log);
    drop(other);
    // Durable: a new open finds them.
    let log = safemap::Log::open(s.path(), false).unwrap();
    assert_eq!(all(&log, 0).len(), 2);
}

#[test]
fn an_iterator_at_the_tail_sees_later_commits() {
    let s = log_path("log-tail");
    let log = safemap::Log::open(s.path(), true).unwrap();
    log.append(b"one").unwrap();
    log.commit().unwrap();
    let mut it = log.iter(0).unwrap();
    assert_eq!(it.next().unwrap().unwrap().1, b"one");
    assert!(it.next().is_none());
    let lsn = log.append(b"two").unwrap();
    assert!(it.next().is_none(), "an uncommitted record was yielded");
    log.commit().unwrap();
    assert_eq!(it.next().unwrap().unwrap(), (lsn, b"two".to_vec()));
    assert!(it.next().is_none());
}

#[test]
fn next_ref_and_next_slice_see_what_next_copies() {
    let s = log_path("log-zero-copy");
    let log = safemap::Log::open(s.path(), true).unwrap();
    let mut want = Vec::new();
    for i in 1..=50u32 {
        let rec: Vec<u8> = (0..i * 37).map(|j| (j % 251) as u8 ^ i as u8).collect();
        want.push((log.append(&rec).unwrap(), rec));
    }
    log.commit().unwrap();
    let mut it = log.iter(0).unwrap();
    let mut got = Vec::new();
    while let Some(r) = it.next_ref() {
        let (lsn, bytes) = r.unwrap();
        got.push((lsn, bytes.to_vec()));
    }
    assert_eq!(got, want);
    let mut it = log.iter(0).unwrap();
    let mut slices = Vec::new();
    while let Some(r) = it.next_slice() {
        slices.push(r.unwrap());
    }
    drop(it); // record slices outlive their iterator
    assert_eq!(slices.len(), want.len());
    for ((lsn, sl), (wl, wb)) in slices.iter().zip(&want) {
        assert_eq!(lsn, wl);
        assert_eq!(sl.len(), wb.len() as u64);
        let mut buf = vec![0u8; wb.len()];
        sl.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, wb);
        assert_eq!(code(&sl.read_at(1, &mut buf).unwrap_err()), -ERANGE);
    }
}

#[test]
fn senders_on_several_threads_are_durable_and_in_order() {
    const THREADS: u32 = 6;
    const EACH: u32 = 150;
    let s = log_path("log-senders");
    let path: PathBuf = s.path().to_path_buf();
    let log = safemap::Log::open(&path, true).unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = log.sender();
            let path = path.clone();
            std::thread::spawn(move || {
                let mut lsns = Vec::new();
                for i in 0..EACH {
                    let mut rec = t.to_le_bytes().to_vec();
                    rec.extend_from_slice(&i.to_le_bytes());
                    rec.resize(8 + (i as usize % 13) * 7, t as u8);
                    let lsn = tx.send(&rec).unwrap();
                    if i % 50 == 0 {
                        // Committed when send returns: a new handle sees it.
                        let peek = safemap::Log::open_read_only(&path).unwrap();
                        let (l, b) = peek.iter(lsn).unwrap().next().unwrap().unwrap();
                        assert_eq!((l, &b[..]), (lsn, &rec[..]));
                    }
                    lsns.push(lsn);
                }
                lsns
            })
        })
        .collect();
    let sent: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(log); // the senders are gone: this closes the log
    let log = safemap::Log::open_read_only(&path).unwrap();
    let recs = all(&log, 0);
    assert_eq!(recs.len(), (THREADS * EACH) as usize);
    let mut next: HashMap<u32, u32> = HashMap::new();
    let mut by_lsn = HashMap::new();
    for (lsn, b) in &recs {
        let t = u32::from_le_bytes(b[0..4].try_into().unwrap());
        let i = u32::from_le_bytes(b[4..8].try_into().unwrap());
        let n = next.entry(t).or_insert(0);
        assert_eq!(i, *n, "sender {}'s records out of order", t);
        *n += 1;
        assert_eq!(b.len(), 8 + (i as usize % 13) * 7);
        by_lsn.insert(*lsn, (t, i));
    }
    for (t, lsns) in sent.iter().enumerate() {
        for (i, lsn) in lsns.iter().enumerate() {
            assert_eq!(by_lsn.get(lsn), Some(&(t as u32, i as u32)), "send returned a wrong LSN");
        }
    }
}

#[test]
fn sender_keeps_the_log_open() {
    let s = log_path("log-sender-owns");
    let tx = {
        let log = safemap::Log::open(s.path(), true).unwrap();
        log.sender()
    };
    let tx2 = tx.clone();
    let lsn = std::thread::spawn(move || tx2.send(b"late").unwrap()).join().unwrap();
    drop(tx);
    let log = safemap::Log::open(s.path(), false).unwrap();
    assert_eq!(all(&log, 0), vec![(lsn, b"late".to_vec())]);
}

#[test]
fn log_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send_static<T: Send + Clone + 'static>() {}
    send_sync::<safemap::Log>();
    send_sync::<safemap::LogSender>();
    send_static::<safemap::LogSender>();
    fn send<T: Send>() {}
    send::<safemap::LogIter<'static>>();
}

#[test]
fn opening_a_file_that_is_no_log_fails() {
    let s = Scratch::new("log-not-a-log", 4096);
    let e = safemap::Log::open(s.path(), false).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::WouldBlock);
    assert!(safemap::error_code(&e).is_some());
}

#[cfg(safemap_log_trim)]
#[test]
fn trim_discards_records_below_the_point() {
    const ESTALE: i32 = 116;
    let s = log_path("log-trim");
    let log = safemap::Log::open(s.path(), true).unwrap();
    let lsns: Vec<u64> = (0..100u32).map(|i| log.append(&[i as u8; 100]).unwrap()).collect();
    log.commit().unwrap();
    let mut behind = log.iter(lsns[10]).unwrap();
    log.trim(lsns[40]).unwrap();
    log.trim(lsns[20]).unwrap(); // below the first retained record: nothing to do
    let recs = all(&log, 0);
    assert_eq!(recs.len(), 60);
    assert_eq!(recs[0], (lsns[40], vec![40u8; 100]));
    assert_eq!(code(&log.iter(lsns[10]).err().unwrap()), -ESTALE);
    assert_eq!(code(&behind.next().unwrap().unwrap_err()), -ESTALE);
    assert_eq!(code(&log.trim(lsns[50] + 1).unwrap_err()), -EINVAL);
    // LSNs do not change; a new handle agrees.
    drop(behind);
    drop(log);
    let log = safemap::Log::open(s.path(), false).unwrap();
    assert_eq!(all(&log, lsns[99]), vec![(lsns[99], vec![99u8; 100])]);
}

#[cfg(safemap_log_trim)]
#[test]
fn trim_gives_disk_space_back() {
    use std::os::unix::fs::MetadataExt;
    let s = log_path("log-trim-space");
    let log = safemap::Log::open(s.path(), true).unwrap();
    let rec = vec![0x5au8; 256 * 1024];
    let lsns: Vec<u64> = (0..48).map(|_| log.append(&rec).unwrap()).collect(); // 12 MiB
    log.commit().unwrap();
    let before = std::fs::metadata(s.path()).unwrap().blocks() * 512;
    log.trim(lsns[47]).unwrap();
    let after = std::fs::metadata(s.path()).unwrap().blocks() * 512;
    // Everything below the last record goes back, less at most 4 MiB.
    assert!(
        before - after.min(before) >= (47 * 256 * 1024) - (4 << 20),
        "allocated {} bytes before the trim, {} after",
        before,
        after
    );
    assert_eq!(all(&log, 0), vec![(lsns[47], rec)]);
}

/// Counted as skipped (ignored): `Log::trim` is not built, the library's
/// `safemap.h` has no `sm_log_trim`.
#[cfg(not(safemap_log_trim))]
#[test]
#[ignore]
fn trim_is_not_built_without_sm_log_trim() {}
