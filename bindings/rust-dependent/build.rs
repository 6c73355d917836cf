// SPDX-License-Identifier: MIT
// The three lines the safemap crate's README gives a dependent's build script.
fn main() {
    if let Ok(dir) = std::env::var("DEP_SAFEMAP_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
    }
}
