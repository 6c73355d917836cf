// SPDX-License-Identifier: MIT
//! Links libsafemap (dynamically) and checks the header's view version.
//!
//! Where the library comes from, in order:
//! 1. `SAFEMAP_LIB_DIR` (an explicit override, e.g. the in-tree `lib/.libs`
//!    used by `make check-rust`); `SAFEMAP_INCLUDE_DIR` names the header's
//!    directory;
//! 2. `pkg-config safemap` (the `pkg-config` program, run directly);
//! 3. the library built in this source tree (`../../lib/.libs`), if any.
//!
//! The library's directory is published as the `links` metadata key
//! `lib_dir`: a dependent's build script reads it as `DEP_SAFEMAP_LIB_DIR`
//! and adds the rpath to its own binaries (see the crate's README).  The
//! rpath added here (`rustc-link-arg`) reaches only this crate's own tests,
//! examples and doctests, never a dependent's binary.
//!
//! The Rust accessors read the public `struct sm_view` directly, so the
//! header's `SM_VIEW_VERSION` must be the one this crate mirrors.  Functions
//! newer than some installed headers are bound only when the header
//! declares them: `sm_log_trim` sets `cfg(safemap_log_trim)`;
//! `sm_slice_set_lsn`, `sm_redo_lsn`, `sm_redo_done` and `SM_RECOVER`
//! together set `cfg(safemap_redo)`.
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `SM_VIEW_VERSION` mirrored by `src/ffi.rs`.
const VIEW_VERSION: u32 = 1;

fn pkg_config(args: &[&str]) -> Option<String> {
    let prog = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = Command::new(prog).args(args).arg("safemap").output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// Links the library in `dir`, publishes `dir` as `lib_dir`, and adds it
/// to the rpath of this crate's own tests and examples.
fn link_dir(dir: &Path) {
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=safemap");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:lib_dir={}", dir.display());
}

/// Whether the header declares the function `name` (`int name(`, as the
/// header's prototypes are written; a mention in a comment does not count).
fn declares(header: &str, name: &str) -> bool {
    header.contains(&format!("int {}(", name))
}

/// The minor version of the `rustc` that builds the crate (0 if unknown).
fn rustc_minor() -> u32 {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = match Command::new(rustc).arg("--version").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => return 0,
    };
    // "rustc 1.63.0 (...)"
    out.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1)).and_then(|m| m.parse().ok()).unwrap_or(0)
}

fn main() {
    for v in ["SAFEMAP_LIB_DIR", "SAFEMAP_INCLUDE_DIR", "PKG_CONFIG", "PKG_CONFIG_PATH"] {
        println!("cargo:rerun-if-env-changed={}", v);
    }
    println!("cargo:rerun-if-changed=build.rs");
    // Rust 1.80 and later check cfg names (1.63's cargo warns at the line).
    if rustc_minor() >= 80 {
        println!("cargo:rustc-check-cfg=cfg(safemap_log_trim)");
        println!("cargo:rustc-check-cfg=cfg(safemap_redo)");
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let tree_include = manifest.join("../../include");
    let mut include: Option<PathBuf> = env::var_os("SAFEMAP_INCLUDE_DIR").map(PathBuf::from);

    if let Some(dir) = env::var_os("SAFEMAP_LIB_DIR") {
        link_dir(Path::new(&dir));
    } else if let Some(libs) = pkg_config(&["--libs"]) {
        if let Some(dir) = pkg_config(&["--variable=pcfiledir"]) {
            println!("cargo:rerun-if-changed={}/safemap.pc", dir.trim());
        }
        let mut lib_dir = None;
        for flag in libs.split_whitespace() {
            if let Some(d) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={}", d);
                if lib_dir.is_none() && Path::new(d).is_dir() {
                    lib_dir = Some(d.to_string());
                }
            } else if let Some(l) = flag.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={}", l);
            }
        }
        // No -L: the library is in the linker's default path, and
        // `libdir` names it.
        let lib_dir = lib_dir.or_else(|| pkg_config(&["--variable=libdir"]).map(|d| d.trim().to_string()));
        if let Some(d) = lib_dir.filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", d);
            println!("cargo:lib_dir={}", d);
        }
        if include.is_none() {
            if let Some(cflags) = pkg_config(&["--cflags-only-I"]) {
                include = cflags
                    .split_whitespace()
                    .filter_map(|f| f.strip_prefix("-I"))
                    .map(PathBuf::from)
                    .find(|d| d.join("safemap.h").is_file());
            }
        }
    } else {
        let tree = manifest.join("../../lib/.libs");
        if tree.join("libsafemap.so").exists() {
            link_dir(&tree.canonicalize().unwrap_or(tree));
        } else {
            panic!(
                "libsafemap not found: install it (pkg-config safemap), or build the C \
                 library in this tree, or set SAFEMAP_LIB_DIR (and SAFEMAP_INCLUDE_DIR)"
            );
        }
    }
    if include.is_none() && tree_include.join("safemap.h").is_file() {
        include = Some(tree_include);
    }

    // The layout of struct sm_view is part of the ABI and versioned.
    match include.map(|d| d.join("safemap.h")) {
        Some(h) if h.is_file() => {
            println!("cargo:rerun-if-changed={}", h.display());
            let text = fs::read_to_string(&h).expect("read safemap.h");
            let found = text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("#define"), Some("SM_VIEW_VERSION"), Some(v)) => v.parse::<u32>().ok(),
                    _ => None,
                }
            });
            match found {
                Some(v) if v == VIEW_VERSION => {}
                Some(v) => panic!(
                    "{}: SM_VIEW_VERSION is {}, this crate mirrors version {}",
                    h.display(),
                    v,
                    VIEW_VERSION
                ),
                None => panic!("{}: no SM_VIEW_VERSION", h.display()),
            }
            let dir = h.parent().unwrap().canonicalize().unwrap();
            println!("cargo:rustc-env=SAFEMAP_HEADER_DIR={}", dir.display());
            println!("cargo:include={}", dir.display());
            if declares(&text, "sm_log_trim") {
                println!("cargo:rustc-cfg=safemap_log_trim");
            }
            let recover = text.lines().any(|l| l.split_whitespace().take(2).eq(["#define", "SM_RECOVER"]));
            if recover && ["sm_slice_set_lsn", "sm_redo_lsn", "sm_redo_done"].iter().all(|f| declares(&text, f)) {
                println!("cargo:rustc-cfg=safemap_redo");
            }

        }
        _ => {
            println!("cargo:warning=safemap.h not found: SM_VIEW_VERSION not checked");
            println!("cargo:rustc-env=SAFEMAP_HEADER_DIR=");
        }
    }
}
