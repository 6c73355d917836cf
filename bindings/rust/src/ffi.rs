// SPDX-License-Identifier: MIT
//! Hand-written declarations of the C API (`include/safemap.h`).
//!
//! Kept in step with the header by hand; `tests/layout.rs` compiles a C
//! program against the header and compares sizes and offsets, and
//! `build.rs` refuses a header whose `SM_VIEW_VERSION` differs from
//! [`SM_VIEW_VERSION`].
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_char, c_int, c_void};

/// The version of `struct sm_view` mirrored here (`SM_VIEW_VERSION`).
pub const SM_VIEW_VERSION: u32 = 1;
pub const SM_VIEW_WRITE: u32 = 0x1;

pub const SM_RDONLY: c_int = 0x0001;
pub const SM_RDWR: c_int = 0x0002;
pub const SM_CREATE: c_int = 0x0004;

pub const SM_DIRECT: c_int = 0x0000;
pub const SM_BUFFERED: c_int = 0x0010;
pub const SM_WAIT: c_int = 0x0020;
pub const SM_EXTEND: c_int = 0x0040;
pub const SM_POPULATE: c_int = 0x0080;
pub const SM_RECOVER: c_int = 0x80000;

pub const SM_SYNC: c_int = 0x0000;
pub const SM_ASYNC: c_int = 0x0100;

pub const SM_LOCK_READ: c_int = 0x10000;
pub const SM_LOCK_WRITE: c_int = 0x20000;

pub const SM_OBJECT_REPLACE: c_int = 0x1;

/// A wait bound (`sm_options.wait_ns`, the `_timed` calls): none.
pub const SM_WAIT_FOREVER: u64 = u64::MAX;

pub const SM_OPT_TABLE_REQUIRED: u32 = 0x1;
pub const SM_OPT_NO_TABLE: u32 = 0x2;
pub const SM_OPT_REFUSE_NETFS: u32 = 0x4;
pub const SM_OPT_TABLE_LOCKS: u32 = 0x8;

pub const SM_MODE_READ: c_int = 1;
pub const SM_MODE_WRITE: c_int = 2;
pub const SM_HELD: c_int = 1;
pub const SM_WAITING: c_int = 2;
pub const SM_STALE: c_int = 3;

// Linux errno values (the same on every Linux architecture this targets).
pub const EIO: c_int = 5;
pub const ENXIO: c_int = 6;
pub const EBADF: c_int = 9;
pub const ENOMEM: c_int = 12;
pub const EEXIST: c_int = 17;
pub const EBUSY: c_int = 16;
pub const EINVAL: c_int = 22;
pub const ERANGE: c_int = 34;
pub const EDEADLK: c_int = 35;
pub const ENOTSUP: c_int = 95;
pub const ETIMEDOUT: c_int = 110;
pub const ESTALE: c_int = 116;

#[repr(C)]
pub struct sm_file {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct sm_slice {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct sm_range {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct sm_log {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct sm_log_iter {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct sm_object {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct sm_options {
    pub size: u32,
    pub flags: u32,
    pub tag: *const c_char,
    pub table_dir: *const c_char,
    pub wait_ns: u64,
    pub create_size: u64,
    pub reserved: [u64; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct sm_holder {
    pub size: u32,
    pub pid: i32,
    pub tid: i32,
    pub start_time: u64,
    pub pidns: u64,
    pub comm: [c_char; 16],
    pub tag: [c_char; 32],
    pub mode: c_int,
    pub state: c_int,
    pub off: u64,
    pub len: u64,
    pub since: u64,
}

/// `struct sm_view`, version 1: every `sm_slice` begins with it.
#[repr(C)]
pub struct sm_view {
    pub base: *mut u8,
    pub len: u64,
    pub state: *const u32,
    pub dirty: *mut u64,
    pub dirty_off: u64,
    pub flags: u32,
    pub page_shift: u32,
}

extern "C" {
    pub fn sm_open(path: *const c_char, flags: c_int, opt: *const sm_options, out: *mut *mut sm_file) -> c_int;
    pub fn sm_close(f: *mut sm_file) -> c_int;

    pub fn sm_map_read(f: *mut sm_file, off: u64, len: u64, flags: c_int, out: *mut *mut sm_slice) -> c_int;
    pub fn sm_map_write(f: *mut sm_file, off: u64, len: u64, flags: c_int, out: *mut *mut sm_slice) -> c_int;
    pub fn sm_release(s: *mut sm_slice) -> c_int;
    pub fn sm_sub(s: *mut sm_slice, off: u64, len: u64, out: *mut *mut sm_slice) -> c_int;
    pub fn sm_downgrade(s: *mut sm_slice) -> c_int;
    pub fn sm_offset(s: *const sm_slice) -> u64;
    pub fn sm_length(s: *const sm_slice) -> u64;

    pub fn sm_read(s: *const sm_slice, off: u64, dst: *mut c_void, n: usize) -> c_int;
    pub fn sm_write(s: *mut sm_slice, off: u64, src: *const c_void, n: usize) -> c_int;
    pub fn sm_fill(s: *mut sm_slice, off: u64, byte: c_int, n: usize) -> c_int;

    pub fn sm_get_u64_le(s: *const sm_slice, off: u64, out: *mut u64) -> c_int;
    pub fn sm_put_u64_le(s: *mut sm_slice, off: u64, v: u64) -> c_int;

    pub fn sm_unsafe_ptr(s: *mut sm_slice, out: *mut *mut c_void) -> c_int;
    pub fn sm_mark_dirty(s: *mut sm_slice, off: u64, len: u64) -> c_int;

    pub fn sm_commit(s: *mut sm_slice, flags: c_int) -> c_int;
    pub fn sm_commit_many(v: *mut *mut sm_slice, n: usize, flags: c_int) -> c_int;
    pub fn sm_abort(s: *mut sm_slice) -> c_int;
    pub fn sm_dirty_pages(s: *const sm_slice) -> c_int;

    pub fn sm_lock(f: *mut sm_file, off: u64, len: u64, flags: c_int, tag: *const c_char, out: *mut *mut sm_range) -> c_int;
    pub fn sm_unlock(r: *mut sm_range) -> c_int;
    pub fn sm_lock_timed(f: *mut sm_file, off: u64, len: u64, flags: c_int, timeout_ns: u64, tag: *const c_char, out: *mut *mut sm_range) -> c_int;
    pub fn sm_map_read_timed(f: *mut sm_file, off: u64, len: u64, flags: c_int, timeout_ns: u64, out: *mut *mut sm_slice) -> c_int;
    pub fn sm_map_write_timed(f: *mut sm_file, off: u64, len: u64, flags: c_int, timeout_ns: u64, out: *mut *mut sm_slice) -> c_int;

    pub fn sm_log_open(path: *const c_char, flags: c_int, opt: *const sm_options, out: *mut *mut sm_log) -> c_int;
    pub fn sm_log_append(log: *mut sm_log, rec: *const c_void, len: usize, lsn: *mut u64) -> c_int;
    pub fn sm_log_commit(log: *mut sm_log) -> c_int;
    pub fn sm_log_close(log: *mut sm_log) -> c_int;
    pub fn sm_log_iter_open(log: *mut sm_log, from_lsn: u64, out: *mut *mut sm_log_iter) -> c_int;
    pub fn sm_log_iter_next(it: *mut sm_log_iter, rec: *mut *mut sm_slice, lsn: *mut u64) -> c_int;
    pub fn sm_log_iter_next_ptr(it: *mut sm_log_iter, rec: *mut *const c_void, len: *mut usize, lsn: *mut u64) -> c_int;
    pub fn sm_log_iter_close(it: *mut sm_log_iter) -> c_int;
    // Declared only when the header has it (build.rs sets the cfg).
    #[cfg(safemap_log_trim)]
    pub fn sm_log_trim(log: *mut sm_log, lsn: u64) -> c_int;
    #[cfg(safemap_redo)]
    pub fn sm_slice_set_lsn(s: *mut sm_slice, log: *mut sm_log, lsn: u64) -> c_int;
    #[cfg(safemap_redo)]
    pub fn sm_redo_lsn(f: *mut sm_file, log: *mut sm_log, lsn: *mut u64) -> c_int;
    #[cfg(safemap_redo)]
    pub fn sm_redo_done(f: *mut sm_file, log: *mut sm_log, lsn: u64) -> c_int;

    pub fn sm_object_create(dir: *const c_char, name: *const c_char, flags: c_int, out: *mut *mut sm_object) -> c_int;
    pub fn sm_object_map(o: *mut sm_object, off: u64, len: u64, out: *mut *mut sm_slice) -> c_int;
    pub fn sm_object_publish(o: *mut sm_object) -> c_int;
    pub fn sm_object_abort(o: *mut sm_object) -> c_int;

    pub fn sm_holders(f: *mut sm_file, off: u64, len: u64, out: *mut sm_holder, cap: usize) -> c_int;
    pub fn sm_strerror(err: c_int) -> *const c_char;

    pub fn sm__access_fail(s: *const sm_slice, off: u64, n: u64, write: c_int) -> c_int;
}
