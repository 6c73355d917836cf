// SPDX-License-Identifier: MIT
//! The crate's file and slice API in one process.
mod common;

use common::*;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send_static<T: Send + 'static>() {}

#[test]
fn types_are_send_and_sync() {
    assert_send_sync::<safemap::File>();
    assert_send_sync::<safemap::ReadSlice<'static>>();
    assert_send_sync::<safemap::WriteSlice<'static>>();
    assert_send_sync::<safemap::OwnedReadSlice>();
    assert_send_static::<safemap::OwnedReadSlice>();
    assert_send_sync::<std::io::Error>();
}

#[test]
fn open_options() {
    let s = Scratch::new("open", 64);
    let e = safemap::OpenOptions::new().open(s.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = safemap::OpenOptions::new().read(true).create(true).open(s.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = safemap::OpenOptions::new().read(true).table_locks(true).no_table(true).open(s.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    {
        // table-authority mode: same API, conflicts decided in the table
        let a = safemap::OpenOptions::new().read(true).write(true).table_locks(true).open(s.path()).unwrap();
        let b = safemap::OpenOptions::new().read(true).write(true).table_locks(true).open(s.path()).unwrap();
        let r = a.map_read(0, 64).unwrap();
        assert_eq!(r.get_u8(63).unwrap(), 63);
        let e = b.map_write(10, 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        assert_eq!(safemap::holders_of(&e).len(), 1);
        // the other mode is refused while table-mode users are attached
        let e = safemap::OpenOptions::new().read(true).open(s.path()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(71)); // EPROTO
    }
    let missing = s.path().with_extension("missing");
    let e = safemap::OpenOptions::new().read(true).open(&missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.raw_os_error(), Some(2));
    let created = Scratch { path: s.path().with_extension("created") };
    let f = safemap::OpenOptions::new().read(true).write(true).create(true).open(created.path()).unwrap();
    let mut w = f.map_write_with(0, 100, safemap::MapFlags::new().extend(true)).unwrap();
    w.put_u8(99, 1).unwrap();
    w.commit().unwrap();
    drop(w);
    assert_eq!(std::fs::metadata(created.path()).unwrap().len(), 100);
    let f = safemap::File::open(s.path()).unwrap();
    assert_eq!(f.map_read(0, 64).unwrap().get_u8(63).unwrap(), 63);
}

#[test]
fn words_round_trip_at_every_alignment() {
    let s = Scratch::new("words", 256);
    let f = s.rw();
    let mut w = f.map_write(0, 256).unwrap();
    for off in 0..9u64 {
        let base = off * 24;
        w.put_u64_le(base, 0x0102_0304_0506_0708).unwrap();
        w.put_u32_be(base + 8, 0x0a0b_0c0d).unwrap();
        w.put_u16_le(base + 12, 0xbeef).unwrap();
        w.put_u16_be(base + 14, 0xcafe).unwrap();
        w.put_u8(base + 16, 0x5a).unwrap();
        w.put_u64(base + 17, 0xfeed_f00d_dead_beef).unwrap();
        let mut b = [0u8; 8];
        w.read_at(base, &mut b).unwrap();
        assert_eq!(b, [8, 7, 6, 5, 4, 3, 2, 1]);
        w.read_at(base + 8, &mut b[..4]).unwrap();
        assert_eq!(&b[..4], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(w.get_u64_be(base).unwrap(), 0x0807_0605_0403_0201);
        assert_eq!(w.get_u64_le(base).unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(w.get_u32_le(base + 8).unwrap(), 0x0d0c_0b0a);
        assert_eq!(w.get_u32_be(base + 8).unwrap(), 0x0a0b_0c0d);
        assert_eq!(w.get_u16_le(base + 12).unwrap(), 0xbeef);
        assert_eq!(w.get_u16_be(base + 14).unwrap(), 0xcafe);
        assert_eq!(w.get_u16(base + 14).unwrap(), u16::from_ne_bytes([0xca, 0xfe]));
        assert_eq!(w.get_u8_be(base + 16).unwrap(), 0x5a);
        assert_eq!(w.get_u64(base + 17).unwrap(), 0xfeed_f00d_dead_beef);
        assert_eq!(w.get_u32(base + 8).unwrap(), u32::from_ne_bytes([0x0a, 0x0b, 0x0c, 0x0d]));
    }
    w.put_u8_le(255, 1).unwrap();
    w.put_u8_be(254, 2).unwrap();
    w.put_u16(252, 3).unwrap();
    w.put_u32(248, 4).unwrap();
    w.put_u32_le(244, 5).unwrap();
    w.put_u64_be(236, 6).unwrap();
    assert_eq!(w.get_u8_le(255).unwrap(), 1);
    assert_eq!(w.get_u8(254).unwrap(), 2);
    assert_eq!(w.get_u16(252).unwrap(), 3);
    assert_eq!(w.get_u32(248).unwrap(), 4);
    assert_eq!(w.get_u32_le(244).unwrap(), 5);
    assert_eq!(w.get_u64_be(236).unwrap(), 6);
    w.commit().unwrap();
    drop(w);
    let data = std::fs::read(s.path()).unwrap();
    assert_eq!(&data[24..32], &[8, 7, 6, 5, 4, 3, 2, 1]);
    // The Rust accessor and the library's exported function agree.
    let r = f.map_read(0, 256).unwrap();
    for off in 0..249 {
        assert_eq!(r.get_u64_le(off).unwrap(), safemap::__private::ffi_get_u64_le(&r, off).unwrap());
    }
}

#[test]
fn bounds_are_erange() {
    let s = Scratch::new("bounds", 4096 * 2);
    let f = s.rw();
    let r = f.map_read(100, 100).unwrap();
    assert_eq!(r.len(), 100);
    assert_eq!(r.offset(), 100);
    assert!(!r.is_empty());
    assert_eq!(r.get_u8(99).unwrap(), 199);
    for e in [
        r.get_u8(100).unwrap_err(),
        r.get_u16_le(99).unwrap_err(),
        r.get_u64_be(93).unwrap_err(),
        r.get_u32(u64::MAX - 1).unwrap_err(),
        r.read_at(90, &mut [0u8; 11]).unwrap_err(),
        r.sub(50, 51).unwrap_err(),
    ] {
        assert_eq!(code(&e), -ERANGE, "{:?}", e);
        assert_eq!(e.raw_os_error(), Some(ERANGE));
    }
    r.read_at(100, &mut []).unwrap();
    assert_eq!(code(&f.map_read(8000, 4096).unwrap_err()), -ERANGE);
    assert_eq!(code(&f.map_read(0, 0).unwrap_err()), -EINVAL);
    let mut w = f.map_write(1000, 8).unwrap();
    assert_eq!(code(&w.put_u64_le(1, 0).unwrap_err()), -ERANGE);
    assert_eq!(code(&w.write_at(4, &[0; 5]).unwrap_err()), -ERANGE);
    assert_eq!(code(&f.map_write(8000, 4096).unwrap_err()), -ERANGE);
    let ro = s.ro();
    assert_eq!(code(&ro.map_write(0, 8).unwrap_err()), -EBADF);
}

#[test]
fn conflicts_are_would_block_with_holders() {
    let s = Scratch::new("conflict", 4096);
    let a = safemap::OpenOptions::new().read(true).write(true).tag("writer-a").open(s.path()).unwrap();
    let b = s.rw();
    let w = a.map_write(0, 100).unwrap();
    let e = b.map_read(50, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert_eq!(e.raw_os_error(), None);
    assert_eq!(code(&e), -EBUSY);
    assert!(!e.to_string().is_empty());
    let holders = safemap::holders_of(&e);
    assert_eq!(holders.len(), 1, "{:?}", holders);
    let h = &holders[0];
    assert_eq!(h.pid as u32, std::process::id());
    assert_eq!(h.mode, safemap::Mode::Write);
    assert_eq!(h.state, safemap::HolderState::Held);
    assert_eq!(h.tag, "writer-a");
    assert_eq!((h.off, h.len), (0, 100));
    assert!(h.since > 0);
    // The same File: a write overlapping any slice of it conflicts too.
    let e = a.map_write(99, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    // Readers share.
    let r1 = b.map_read(200, 10).unwrap();
    let r2 = a.map_read(200, 10).unwrap();
    assert_eq!(b.holders(0, 4096).unwrap().len(), 3);
    drop((r1, r2));
    // Released: the region is free again.
    drop(w);
    b.map_write(0, 100).unwrap();
    // Other errors carry no holders.
    assert!(safemap::holders_of(&b.map_read(0, 0).unwrap_err()).is_empty());
}

#[test]
fn no_table_means_no_holders() {
    let s = Scratch::new("notable", 4096);
    let a = safemap::OpenOptions::new().read(true).write(true).no_table(true).open(s.path()).unwrap();
    let _w = a.map_write(0, 10).unwrap();
    let e = a.map_write(0, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
    assert!(safemap::holders_of(&e).is_empty());
    assert_eq!(code(&a.holders(0, 10).unwrap_err()), -ENOTSUP);
}

#[test]
fn sub_slices_outlive_their_parent() {
    let s = Scratch::new("sub", 8192);
    let f = s.rw();
    let r = f.map_read(1000, 5000).unwrap();
    let sub = r.sub(100, 200).unwrap();
    drop(r);
    assert_eq!(sub.offset(), 1100);
    assert_eq!(sub.len(), 200);
    assert_eq!(sub.get_u8(0).unwrap(), (1100 % 251) as u8);
    let subsub = sub.sub(199, 1).unwrap();
    assert_eq!(subsub.get_u8(0).unwrap(), (1299 % 251) as u8);
    // The lock lives while a sub-slice does.
    assert_eq!(f.map_write(1000, 1).unwrap_err().kind(), ErrorKind::WouldBlock);
    drop((sub, subsub));
    let mut w = f.map_write(0, 8192).unwrap();
    {
        let mut part = w.sub_mut(4096, 16).unwrap();
        part.put_u32_le(0, 77).unwrap();
    }
    let view = w.sub(4096, 16).unwrap();
    w.put_u32_le(4100, 78).unwrap();
    assert_eq!(view.get_u32_le(0).unwrap(), 77);
    assert_eq!(view.get_u32_le(4).unwrap(), 78);
    assert_eq!(w.dirty_pages(), 1);
    w.commit().unwrap();
    assert_eq!(w.dirty_pages(), 0);
}

#[test]
fn owned_slices_go_to_threads() {
    let s = Scratch::new("owned", 65536);
    let f = s.ro();
    let owned = f.map_read_owned(0, 65536).unwrap();
    drop(f); // the owned slice keeps the file alive
    let blob = owned.sub(4096, 8192).unwrap();
    let t = std::thread::spawn(move || {
        let mut sum = 0u64;
        for off in 0..blob.len() {
            sum += u64::from(blob.get_u8(off).unwrap());
        }
        sum
    });
    let want: u64 = (4096..4096 + 8192u64).map(|i| i % 251).sum();
    assert_eq!(t.join().unwrap(), want);
    assert_eq!(owned.get_u8(300).unwrap(), (300 % 251) as u8);
}

#[test]
fn scoped_threads_share_a_borrowed_slice() {
    let s = Scratch::new("scoped", 4096 * 4);
    let f = s.ro();
    let r = f.map_read(0, 4096 * 4).unwrap();
    let sums: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4u64)
            .map(|i| {
                let r = &r;
                sc.spawn(move || (0..4096).map(|j| u64::from(r.get_u8(i * 4096 + j).unwrap())).sum())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, sum) in sums.iter().enumerate() {
        let want: u64 = (i as u64 * 4096..(i as u64 + 1) * 4096).map(|j| j % 251).sum();
        assert_eq!(*sum, want);
    }
}

#[test]
fn cursors_read_write_seek() {
    let s = Scratch::new("cursor", 4096);
    let f = s.rw();
    let mut w = f.map_write(10, 20).unwrap();
    {
        let mut c = w.cursor();
        c.write_all(b"hello").unwrap();
        assert_eq!(c.position(), 5);
        assert_eq!(c.seek(SeekFrom::End(-5)).unwrap(), 15);
        c.write_all(b"world").unwrap();
        assert_eq!(c.write(b"!").unwrap(), 0);
        assert_eq!(c.seek(SeekFrom::End(-1)).unwrap(), 19);
        assert_eq!(c.write_all(b"xy").unwrap_err().kind(), ErrorKind::WriteZero);
        assert!(c.seek(SeekFrom::Current(-100)).is_err());
        c.seek(SeekFrom::Start(0)).unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        c.flush().unwrap();
    }
    w.commit().unwrap();
    drop(w);
    let r = f.map_read(10, 20).unwrap();
    let mut all = Vec::new();
    let mut c = r.cursor();
    c.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(&all[..5], b"hello");
    assert_eq!(&all[15..19], b"worl");
    c.seek(SeekFrom::Start(100)).unwrap();
    assert_eq!(c.read(&mut [0u8; 4]).unwrap(), 0);
    assert_eq!(&std::fs::read(s.path()).unwrap()[10..15], b"hello");
}

#[test]
fn buffered_commit_and_abort() {
    let s = Scratch::new("buffered", 8192);
    let f = s.rw();
    let mut w = f.map_write_buffered(4096, 4096).unwrap();
    w.put_u64_le(0, 0x1122_3344_5566_7788).unwrap();
    // Nothing reaches the file before commit.
    let disk = std::fs::read(s.path()).unwrap();
    assert_eq!(disk[4096], (4096 % 251) as u8);
    assert_eq!(w.dirty_pages(), 1);
    w.commit().unwrap();
    assert_eq!(w.dirty_pages(), 0);
    let disk = std::fs::read(s.path()).unwrap();
    assert_eq!(&disk[4096..4104], &0x1122_3344_5566_7788u64.to_le_bytes());
    w.put_u64_le(0, 1).unwrap();
    w.abort().unwrap();
    assert_eq!(w.get_u64_le(0).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(w.dirty_pages(), 0);
    // Direct slices cannot abort.
    let mut d = f.map_write(0, 4096).unwrap();
    assert_eq!(code(&d.abort().unwrap_err()), -ENOTSUP);
    d.fill(0, 0xab, 4096).unwrap();
    d.fill(0, 0, 0).unwrap();
    assert_eq!(d.get_u32_le(4092).unwrap(), 0xabab_abab);
    safemap::commit_many(&mut [&mut d, &mut w]).unwrap();
    assert_eq!(d.dirty_pages(), 0);
    d.release().unwrap();
    w.release().unwrap();
    assert_eq!(std::fs::read(s.path()).unwrap()[100], 0xab);
}

#[test]
fn raw_escape_marks_dirty() {
    let s = Scratch::new("escape", 8192);
    let f = s.rw();
    let mut w = f.map_write(0, 8192).unwrap();
    unsafe {
        let b = w.as_bytes_mut();
        b[5000] = 42;
    }
    assert_eq!(w.dirty_pages(), 2);
    w.commit().unwrap();
    let r = w.sub(0, 8192).unwrap();
    assert_eq!(unsafe { r.as_bytes() }[5000], 42);
    assert_eq!(std::fs::read(s.path()).unwrap()[5000], 42);
}

#[test]
fn truncation_is_an_error_not_a_crash() {
    let s = Scratch::new("trunc", 4096 * 4);
    let f = s.rw();
    let r = f.map_read(4096, 4096 * 3).unwrap();
    let mut w = f.map_write_with(0, 4096, safemap::MapFlags::new()).unwrap();
    w.put_u8(0, 1).unwrap();
    assert_eq!(r.get_u64_le(2 * 4096).unwrap(), u64::from_le_bytes({
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            *x = ((3 * 4096 + i) % 251) as u8;
        }
        b
    }));
    // Another opener (no locks needed to truncate) cuts the file to 100 bytes.
    std::fs::OpenOptions::new().write(true).open(s.path()).unwrap().set_len(100).unwrap();
    let e = r.get_u64_le(2 * 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(e.raw_os_error(), None);
    assert_eq!(code(&e), -ENXIO);
    // The slice is dead from then on, for every accessor.
    assert_eq!(r.get_u8(0).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    assert_eq!(r.read_at(0, &mut [0u8; 4]).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    // The write slice [0, 4096) still lies in the file's last (partial) page:
    // its commit now fails because the slice extends past end of file.
    assert_eq!(w.commit().unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn view_mirrors_the_library() {
    let s = Scratch::new("view", 4096 * 3);
    let f = s.rw();
    let r = f.map_read(5000, 300).unwrap();
    let (base, len, state, _dirty, flags, shift) = safemap::__private::view_of(&r);
    assert_eq!(base, safemap::__private::unsafe_ptr(&r).unwrap());
    assert_eq!(len, 300);
    assert_eq!(state, 0);
    assert_eq!(flags & 1, 0);
    assert!((12..=16).contains(&shift), "page_shift {}", shift);
    let w = f.map_write(100, 10).unwrap();
    let (_, len, state, dirty, flags, _) = safemap::__private::view_of_write(&w);
    assert_eq!((len, state, dirty, flags & 1), (10, 0, true, 1));
    assert_eq!(safemap::VIEW_VERSION, 1);
}

#[test]
fn writes_after_truncation_are_errors() {
    let s = Scratch::new("trunc-write", 4096 * 3);
    let f = s.rw();
    let mut w = f.map_write(0, 4096 * 3).unwrap();
    w.put_u64_le(8192, 1).unwrap();
    std::fs::OpenOptions::new().write(true).open(s.path()).unwrap().set_len(10).unwrap();
    let e = w.put_u64_le(8192, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(code(&e), -ENXIO);
    assert_eq!(w.write_at(8000, &[1; 300]).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    assert_eq!(w.commit().unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn many_holders_are_all_listed() {
    let s = Scratch::new("holders", 4096);
    let f = s.ro();
    let slices: Vec<_> = (0..40).map(|i| f.map_read(i * 100, 50).unwrap()).collect();
    let hs = f.holders(0, 4096).unwrap();
    assert_eq!(hs.len(), 40);
    assert!(hs.iter().all(|h| h.mode == safemap::Mode::Read && h.len == 50));
    drop(slices);
    assert!(f.holders(0, 4096).unwrap().is_empty());
}

#[test]
fn create_size_makes_a_new_file_whole() {
    let s = Scratch::new("create-size", 0);
    std::fs::remove_file(s.path()).unwrap();
    let opts = || {
        let mut o = safemap::OpenOptions::new();
        o.read(true).write(true).create(true).create_size(3 * 4096);
        o
    };
    let f = opts().open(s.path()).unwrap();
    assert_eq!(std::fs::metadata(s.path()).unwrap().len(), 3 * 4096);
    let mut w = f.map_write(0, 3 * 4096).unwrap(); // no extend needed
    w.put_u64_le(3 * 4096 - 8, 1).unwrap();
    drop(w);
    // An existing file is not resized.
    std::fs::OpenOptions::new().write(true).open(s.path()).unwrap().set_len(100).unwrap();
    drop(opts().open(s.path()).unwrap());
    assert_eq!(std::fs::metadata(s.path()).unwrap().len(), 100);
    // Without create it is refused.
    let e = safemap::OpenOptions::new().read(true).write(true).create_size(10).open(s.path()).unwrap_err();
    assert_eq!(code(&e), -EINVAL);
}
