// SPDX-License-Identifier: MIT
//! Links libsafemap (dynamically) and checks the header's view version.
//!
//! Where the library comes from, in order:
//! 1. `SAFEMAP_LIB_DIR` (an explicit override, e.g. the in-tree `lib/.libs`
//!    used by `make check-rust`): `-L` that directory and add it to the rpath
//!    so that tests and examples run without `LD_LIBRARY_PATH`;
//!    `SAFEMAP_INCLUDE_DIR` names the header's directory;
//! 2. `pkg-config safemap` (the `pkg-config` program, run directly);
//! 3. the library built in this source tree (`../../lib/.libs`), if any.
//!
//! The Rust accessors read the public `struct sm_view` directly, so the
//! header's `SM_VIEW_VERSION` must be the one this crate mirrors.
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

fn link_dir(dir: &Path) {
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=safemap");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}

fn main() {
    for v in ["SAFEMAP_LIB_DIR", "SAFEMAP_INCLUDE_DIR", "PKG_CONFIG", "PKG_CONFIG_PATH"] {
        println!("cargo:rerun-if-env-changed={}", v);
    }
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let tree_include = manifest.join("../../include");
    let mut include: Option<PathBuf> = env::var_os("SAFEMAP_INCLUDE_DIR").map(PathBuf::from);

    if let Some(dir) = env::var_os("SAFEMAP_LIB_DIR") {
        link_dir(Path::new(&dir));
    } else if let Some(libs) = pkg_config(&["--libs"]) {
        if let Some(dir) = pkg_config(&["--variable=pcfiledir"]) {
            println!("cargo:rerun-if-changed={}/safemap.pc", dir.trim());
        }
        for flag in libs.split_whitespace() {
            if let Some(d) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={}", d);
            } else if let Some(l) = flag.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={}", l);
            }
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
        }
        _ => {
            println!("cargo:warning=safemap.h not found: SM_VIEW_VERSION not checked");
            println!("cargo:rustc-env=SAFEMAP_HEADER_DIR=");
        }
    }
}
