// SPDX-License-Identifier: MIT
//! README.md's Rust example is examples/readme.rs, word for word (so that
//! it compiles in every `cargo test`), and it runs.
use std::path::Path;

#[test]
fn readme_rust_example_is_examples_readme_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = match std::fs::read_to_string(root.join("../../README.md")) {
        Ok(t) => t,
        Err(_) => {
            eprintln!("SKIP: no ../../README.md (crate outside the safemap tree)");
            return;
        }
    };
    let block: String = readme
        .lines()
        .skip_while(|l| *l != "```rust")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{}\n", l))
        .collect();
    let example = std::fs::read_to_string(root.join("examples/readme.rs")).unwrap();
    assert!(!block.is_empty(), "README.md has no ```rust block");
    assert_eq!(block, example, "README.md's ```rust block differs from examples/readme.rs");

    // cargo test builds the examples beside the test binaries' directory.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples/readme");
    if !bin.exists() {
        eprintln!("SKIP running it: {} not built", bin.display());
        return;
    }
    let out = std::process::Command::new(&bin).output().unwrap();
    assert!(out.status.success(), "{:?}", out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("busy: held by pid"), "{}", text);
    assert!(text.contains("42 hello"), "{}", text);
}
