// SPDX-License-Identifier: MIT
//! The Rust mirror of struct sm_view (and sm_options, sm_holder) matches the
//! C header: a small C program compiled against it prints sizes and offsets.
use std::process::Command;

#[test]
fn structs_match_the_header() {
    let dir = env!("SAFEMAP_HEADER_DIR");
    if dir.is_empty() {
        eprintln!("SKIP structs_match_the_header: safemap.h not found at build time");
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let tmp = std::env::temp_dir().join(format!("safemap-rs-layout-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let src = tmp.join("layout.c");
    let exe = tmp.join("layout");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stddef.h>
#include <safemap.h>
#define O(f) (unsigned long)offsetof(struct sm_view, f)
int main(void)
{
	printf("%d %lu %lu %lu %lu %lu %lu %lu %lu %lu %lu\n", SM_VIEW_VERSION,
	       (unsigned long)sizeof(struct sm_view), O(base), O(len), O(state), O(dirty),
	       O(dirty_off), O(flags), O(page_shift),
	       (unsigned long)sizeof(sm_options), (unsigned long)sizeof(sm_holder));
	return 0;
}
"#,
    )
    .unwrap();
    let st = match Command::new(&cc).arg("-I").arg(dir).arg(&src).arg("-o").arg(&exe).status() {
        Ok(st) => st,
        Err(e) => {
            eprintln!("SKIP structs_match_the_header: no C compiler ({}: {})", cc, e);
            return;
        }
    };
    assert!(st.success(), "compiling the layout probe failed");
    let out = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    let nums: Vec<usize> =
        String::from_utf8(out.stdout).unwrap().split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(nums[0] as u32, safemap::VIEW_VERSION, "SM_VIEW_VERSION");
    let (size, offsets) = safemap::__private::view_layout();
    assert_eq!(nums[1], size, "sizeof(struct sm_view)");
    assert_eq!(&nums[2..9], &offsets[..], "offsets of struct sm_view's fields");
    let (opt, holder) = safemap::__private::other_sizes();
    assert_eq!(nums[9], opt, "sizeof(sm_options)");
    assert_eq!(nums[10], holder, "sizeof(sm_holder)");
}
