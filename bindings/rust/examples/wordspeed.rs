// SPDX-License-Identifier: MIT
//! ns per 8-byte word: the Rust accessor (`ReadSlice::get_u64_le`, over the
//! C library's public struct sm_view) vs a raw `read_volatile` loop over the
//! same mapping, and the library's exported `sm_get_u64_le` (one FFI call
//! per word) for reference.  Two sizes: 1 MiB (cache-resident: the cost of
//! the checks shows) and 64 MiB (memory-bound, as `make bench` figure 4).
//!
//! `cargo run --release --example wordspeed`
use std::io;
use std::time::Instant;

const WORDS_PER_RUN: u64 = 16 << 20;
const RUNS: usize = 5;

fn best(words: u64, mut f: impl FnMut() -> io::Result<u64>) -> io::Result<(f64, u64)> {
    let mut best = f64::MAX;
    let mut sum = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        sum = f()?;
        best = best.min(t.elapsed().as_nanos() as f64 / words as f64);
    }
    Ok((best, sum))
}

fn measure(file: &safemap::File, len: u64) -> io::Result<()> {
    let passes = std::cmp::max(1, WORDS_PER_RUN / (len / 8));
    let words = passes * (len / 8);
    let r = file.map_read_with(0, len, safemap::MapFlags::new().populate(true))?;

    let (accessor, s1) = best(words, || {
        let mut sum = 0u64;
        for _ in 0..passes {
            let mut off = 0;
            while off < len {
                sum = sum.wrapping_add(r.get_u64_le(off)?);
                off += 8;
            }
        }
        Ok(sum)
    })?;

    // SAFETY: nobody writes or truncates the scratch file meanwhile.
    let base = unsafe { r.as_bytes() }.as_ptr() as *const u64;
    let (raw, s2) = best(words, || {
        let mut sum = 0u64;
        for _ in 0..passes {
            for i in 0..(len / 8) as usize {
                // SAFETY: inside the mapping, 8-byte aligned (page-aligned base).
                sum = sum.wrapping_add(u64::from_le(unsafe { std::ptr::read_volatile(base.add(i)) }));
            }
        }
        Ok(sum)
    })?;

    let (ffi, s3) = best(words, || {
        let mut sum = 0u64;
        for _ in 0..passes {
            let mut off = 0;
            while off < len {
                sum = sum.wrapping_add(safemap::__private::ffi_get_u64_le(&r, off)?);
                off += 8;
            }
        }
        Ok(sum)
    })?;
    // The bulk path for hot loops: copy blocks with read_at (one bounds and
    // fault check per block), decode from the copy.
    let mut block = vec![0u8; 64 << 10];
    let (bulk, s4) = best(words, || {
        let mut sum = 0u64;
        for _ in 0..passes {
            let mut off = 0;
            while off < len {
                let n = std::cmp::min(block.len() as u64, len - off) as usize;
                r.read_at(off, &mut block[..n])?;
                for w in block[..n].chunks_exact(8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    sum = sum.wrapping_add(u64::from_le_bytes(b));
                }
                off += n as u64;
            }
        }
        Ok(sum)
    })?;
    assert!(s1 == s2 && s2 == s3 && s3 == s4, "sums differ: {} {} {} {}", s1, s2, s3, s4);

    println!("{:5} KiB slice, {} words per run, best of {}:", len >> 10, words, RUNS);
    println!("  Rust accessor get_u64_le    {:6.3} ns/word", accessor);
    println!("  raw read_volatile loop      {:6.3} ns/word", raw);
    println!("  FFI sm_get_u64_le per word  {:6.3} ns/word", ffi);
    println!("  bulk read_at 64 KiB+decode  {:6.3} ns/word", bulk);
    println!("  raw / accessor = {:.2}x (speed of the accessor relative to raw)", raw / accessor);
    Ok(())
}

fn main() -> io::Result<()> {
    let len_max: u64 = 64 << 20;
    let path = std::env::temp_dir().join(format!("safemap-wordspeed-{}", std::process::id()));
    std::fs::write(&path, (0..len_max).map(|i| (i * 7) as u8).collect::<Vec<u8>>())?;
    let file = safemap::OpenOptions::new().read(true).open(&path)?;
    let result = measure(&file, 1 << 20).and_then(|()| measure(&file, len_max));
    drop(file);
    let _ = std::fs::remove_file(&path);
    let mut t = path.into_os_string();
    t.push(".smlock");
    let _ = std::fs::remove_file(t);
    result
}
