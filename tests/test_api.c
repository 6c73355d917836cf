/* SPDX-License-Identifier: MIT */
/*
 * test_api.c - unit tests of the public API in one process: arguments and
 * error codes, accessors, dirty tracking and commit (through the syscall
 * seam), in-process range counting checked against the kernel with raw
 * F_OFD_GETLK probes from another open file description, the mapping cache,
 * deferred close, and threads.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"
#include "testutil.h"

#define PG 4096

static sm_file *open_rw(const char *path)
{
	sm_file *f;
	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	return f;
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void pread_all(const char *path, off_t off, void *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, n, off), (ssize_t)n);
	close(fd);
}

/* ---- open / close ---------------------------------------------------- */

START_TEST(open_bad_arguments)
{
	const char *p = tu_tmpfile(PG);
	sm_options o;
	sm_file *f = (sm_file *)1;

	ck_assert_int_eq(sm_open(NULL, SM_RDWR, NULL, &f), -EINVAL);
	ck_assert_ptr_null(f);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, NULL), -EINVAL);
	ck_assert_int_eq(sm_open("", SM_RDWR, NULL, &f), -EINVAL);
	ck_assert_int_eq(sm_open(p, 0, NULL, &f), -EINVAL);
	ck_assert_int_eq(sm_open(p, SM_RDONLY | SM_RDWR, NULL, &f), -EINVAL);
	ck_assert_int_eq(sm_open(p, SM_RDWR | 0x1000, NULL, &f), -EINVAL);

	memset(&o, 0, sizeof(o));
	o.flags = 0x100; /* unknown */
	ck_assert_int_eq(sm_open(p, SM_RDWR, &o, &f), -EINVAL);
	memset(&o, 0, sizeof(o));
	o.reserved[2] = 1;
	ck_assert_int_eq(sm_open(p, SM_RDWR, &o, &f), -EINVAL);
	memset(&o, 0, sizeof(o));
	o.size = 4; /* too small to hold any field */
	ck_assert_int_eq(sm_open(p, SM_RDWR, &o, &f), -EINVAL);
	ck_assert_ptr_null(f);
}
END_TEST

START_TEST(open_options_forward_compatible)
{
	const char *p = tu_tmpfile(PG);
	struct {
		sm_options o;
		uint64_t newer_field;
	} big;
	sm_file *f;

	memset(&big, 0, sizeof(big));
	big.o.size = sizeof(big);
	big.o.tag = "compactor";
	ck_assert_int_eq(sm_open(p, SM_RDWR, &big.o, &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	big.newer_field = 7; /* a field this library does not know: refuse */
	ck_assert_int_eq(sm_open(p, SM_RDWR, &big.o, &f), -EINVAL);
	/* size 0 means "this version" */
	big.o.size = 0;
	ck_assert_int_eq(sm_open(p, SM_RDWR, &big.o, &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(open_errors_from_the_system)
{
	const char *p = tu_tmpfile(PG);
	char dir[PATH_MAX], missing[PATH_MAX + 16], fifo[PATH_MAX + 16];
	sm_file *f;

	snprintf(missing, sizeof(missing), "%s.missing", p);
	ck_assert_int_eq(sm_open(missing, SM_RDWR, NULL, &f), -ENOENT);
	strcpy(dir, p);
	*strrchr(dir, '/') = '\0';
	ck_assert_int_eq(sm_open(dir, SM_RDONLY, NULL, &f), -EISDIR);
	/* A FIFO must be refused at once, not block the opener. */
	snprintf(fifo, sizeof(fifo), "%s.fifo", p);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	ck_assert_int_eq(sm_open(fifo, SM_RDONLY, NULL, &f), -EINVAL);
	unlink(fifo);
	/* SM_CREATE creates */
	ck_assert_int_eq(sm_open(missing, SM_RDWR | SM_CREATE, NULL, &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(file_size(missing), 0);
	unlink(missing);
}
END_TEST

START_TEST(descriptors_are_cloexec)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f1, *f2;
	int bad;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f1), 0);
	ck_assert_int_eq(sm_open(p, SM_RDONLY, NULL, &f2), 0);
	ck_assert_int_eq(tu_fds_on(p, &bad), 2);
	ck_assert_int_eq(bad, 0);
	sm_close(f1);
	sm_close(f2);
	ck_assert_int_eq(tu_fds_on(p, &bad), 0);
}
END_TEST

START_TEST(close_is_deferred_until_last_release)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *s;
	uint32_t v;
	int bad;

	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &s), 0);
	ck_assert_int_eq(sm_close(f), 0);
	/* The slice still works and still holds its lock. */
	ck_assert_int_eq(sm_put_u32(s, 0, 0xdeadbeef), 0);
	ck_assert_int_eq(sm_get_u32(s, 0, &v), 0);
	ck_assert_uint_eq(v, 0xdeadbeef);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 100), F_WRLCK);
	ck_assert_int_eq(tu_fds_on(p, &bad), 1);
	ck_assert_int_eq(sm_close(f), -EBADF); /* already closing */
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(tu_fds_on(p, &bad), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 100), F_UNLCK);
	ck_assert_int_eq(sm_close(NULL), -EINVAL);
}
END_TEST

/* ---- mapping arguments ------------------------------------------------- */

START_TEST(map_bad_arguments)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p), *ro;
	sm_slice *s = (sm_slice *)1;

	ck_assert_int_eq(sm_map_read(NULL, 0, 1, 0, &s), -EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(sm_map_read(f, 0, 0, 0, &s), -EINVAL);
	ck_assert_int_eq(sm_map_write(f, 0, 0, 0, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0x10000, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read(f, 0, 1, SM_EXTEND, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read(f, INT64_MAX, 2, 0, &s), -ERANGE);
	ck_assert_int_eq(sm_map_read(f, UINT64_MAX, 1, 0, &s), -ERANGE);
	ck_assert_int_eq(sm_map_write(f, 1, UINT64_MAX, SM_EXTEND, &s), -ERANGE);
	/* beyond end of file */
	ck_assert_int_eq(sm_map_read(f, 4 * PG - 1, 2, 0, &s), -ERANGE);
	ck_assert_int_eq(sm_map_read(f, 4 * PG, 1, 0, &s), -ERANGE);
	ck_assert_int_eq(sm_map_write(f, 4 * PG, 1, 0, &s), -ERANGE);
	ck_assert_int_eq(sm_map_read(f, 4 * PG - 1, 1, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	/* buffered read slices make no sense; an uncontended SM_WAIT map
	 * does not wait (tests/test_wait.c has the rest) */
	ck_assert_int_eq(sm_map_read(f, 0, 1, SM_BUFFERED, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read(f, 0, 1, SM_WAIT, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 1, SM_WAIT, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	/* write slice on a read-only file */
	ck_assert_int_eq(sm_open(p, SM_RDONLY, NULL, &ro), 0);
	ck_assert_int_eq(sm_map_write(ro, 0, 1, 0, &s), -EBADF);
	ck_assert_int_eq(sm_map_read(ro, 0, 1, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_release(NULL), -EINVAL);
	ck_assert_uint_eq(sm_offset(NULL), 0);
	ck_assert_uint_eq(sm_length(NULL), 0);
	sm_close(ro);
	sm_close(f);
	/* nothing left locked */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
}
END_TEST

START_TEST(extend_grows_the_file)
{
	const char *p = tu_tmpfile(0);
	sm_file *f = open_rw(p);
	sm_slice *s;
	char buf[6];

	ck_assert_int_eq(sm_map_write(f, 3 * PG + 10, 5000, SM_EXTEND, &s), 0);
	ck_assert_uint_eq(file_size(p), 3 * PG + 10 + 5000);
	ck_assert_uint_eq(sm_offset(s), 3 * PG + 10);
	ck_assert_uint_eq(sm_length(s), 5000);
	ck_assert_int_eq(sm_write(s, 4994, "hello", 6), 0);
	ck_assert_int_eq(sm_commit(s, SM_SYNC), 0);
	pread_all(p, 3 * PG + 10 + 4994, buf, 6);
	ck_assert_str_eq(buf, "hello");
	ck_assert_int_eq(sm_release(s), 0);
	/* A slice inside the file never shrinks or grows it. */
	ck_assert_int_eq(sm_map_write(f, 0, 10, SM_EXTEND, &s), 0);
	ck_assert_uint_eq(file_size(p), 3 * PG + 10 + 5000);
	sm_release(s);
	sm_close(f);
}
END_TEST

/* ---- accessors ----------------------------------------------------- */

START_TEST(read_write_fill_roundtrip)
{
	const char *p = tu_tmpfile(3 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w, *r;
	char buf[PG + 100], file[PG + 100];

	/* unaligned slice spanning pages */
	ck_assert_int_eq(sm_map_write(f, 1000, PG + 100, 0, &w), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7);
	ck_assert_int_eq(sm_write(w, 0, buf, sizeof(buf)), 0);
	ck_assert_int_eq(sm_fill(w, 10, 0xab, 20), 0);
	memset(buf + 10, 0xab, 20);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	pread_all(p, 1000, file, sizeof(file));
	ck_assert_mem_eq(file, buf, sizeof(buf));
	ck_assert_int_eq(sm_release(w), 0);

	ck_assert_int_eq(sm_map_read(f, 1000, PG + 100, 0, &r), 0);
	memset(file, 0, sizeof(file));
	ck_assert_int_eq(sm_read(r, 0, file, sizeof(file)), 0);
	ck_assert_mem_eq(file, buf, sizeof(buf));
	ck_assert_int_eq(sm_release(r), 0);
	sm_close(f);
}
END_TEST

START_TEST(accessor_errors)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *w, *r;
	char buf[16];
	uint64_t v64;
	uint8_t v8;
	void *ptr;

	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &w), 0);
	ck_assert_int_eq(sm_map_read(f, 200, 100, 0, &r), 0);

	ck_assert_int_eq(sm_read(NULL, 0, buf, 1), -EINVAL);
	ck_assert_int_eq(sm_read(r, 0, NULL, 1), -EINVAL);
	ck_assert_int_eq(sm_read(r, 0, buf, 0), -EINVAL);
	ck_assert_int_eq(sm_read(r, 100, buf, 1), -ERANGE);
	ck_assert_int_eq(sm_read(r, 95, buf, 6), -ERANGE);
	ck_assert_int_eq(sm_read(r, UINT64_MAX, buf, 2), -ERANGE);
	ck_assert_int_eq(sm_read(r, 1, buf, SIZE_MAX), -ERANGE);
	ck_assert_int_eq(sm_write(r, 0, buf, 1), -EBADF);
	ck_assert_int_eq(sm_write(w, 0, NULL, 1), -EINVAL);
	ck_assert_int_eq(sm_write(w, 0, buf, 0), -EINVAL);
	ck_assert_int_eq(sm_write(w, 99, buf, 2), -ERANGE);
	ck_assert_int_eq(sm_write(NULL, 0, buf, 1), -EINVAL);
	ck_assert_int_eq(sm_fill(r, 0, 1, 1), -EBADF);
	ck_assert_int_eq(sm_fill(w, 0, 256, 1), -EINVAL);
	ck_assert_int_eq(sm_fill(w, 0, -1, 1), -EINVAL);
	ck_assert_int_eq(sm_fill(w, 0, 1, 0), -EINVAL);
	ck_assert_int_eq(sm_fill(w, 100, 1, 1), -ERANGE);

	ck_assert_int_eq(sm_get_u64(NULL, 0, &v64), -EINVAL);
	ck_assert_int_eq(sm_get_u64(r, 0, NULL), -EINVAL);
	ck_assert_int_eq(sm_get_u64(r, 93, &v64), -ERANGE);
	ck_assert_int_eq(sm_get_u64(r, 92, &v64), 0);
	ck_assert_int_eq(sm_get_u8(r, 100, &v8), -ERANGE);
	ck_assert_int_eq(sm_get_u64(r, UINT64_MAX - 3, &v64), -ERANGE);
	ck_assert_int_eq(sm_put_u64(r, 0, 1), -EBADF);
	ck_assert_int_eq(sm_put_u64(NULL, 0, 1), -EINVAL);
	ck_assert_int_eq(sm_put_u64(w, 93, 1), -ERANGE);
	ck_assert_int_eq(sm_put_u16_be(w, 99, 1), -ERANGE);
	/* the exported (non-inline) functions agree */
	ck_assert_int_eq((sm_get_u64)(r, 93, &v64), -ERANGE);
	ck_assert_int_eq((sm_put_u64)(r, 0, 1), -EBADF);
	ck_assert_int_eq((sm_get_u32_le)(NULL, 0, NULL), -EINVAL);

	ck_assert_int_eq(sm_mark_dirty(NULL, 0, 1), -EINVAL);
	ck_assert_int_eq(sm_mark_dirty(w, 0, 0), -EINVAL);
	ck_assert_int_eq(sm_mark_dirty(r, 0, 1), -EBADF);
	ck_assert_int_eq(sm_mark_dirty(w, 50, 51), -ERANGE);
	ck_assert_int_eq(sm_mark_dirty(w, 50, 50), 0);

	ck_assert_int_eq(sm_unsafe_ptr(NULL, &ptr), -EINVAL);
	ck_assert_int_eq(sm_unsafe_ptr(w, NULL), -EINVAL);
	ck_assert_int_eq(sm_unsafe_ptr(w, &ptr), 0);
	ck_assert_ptr_nonnull(ptr);

	ck_assert_int_eq(sm_commit(NULL, 0), -EINVAL);
	ck_assert_int_eq(sm_commit(w, 0x4000), -EINVAL);
	ck_assert_int_eq(sm_commit(r, 0), -EBADF);
	sm_release(w);
	sm_release(r);
	sm_close(f);
}
END_TEST

START_TEST(word_accessors_byte_order_and_alignment)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *w;
	unsigned char file[64];
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;
	uint8_t v8;

	ck_assert_int_eq(sm_map_write(f, 0, 64, 0, &w), 0);
	/* odd offsets: any alignment works */
	ck_assert_int_eq(sm_put_u64_le(w, 1, 0x0102030405060708ull), 0);
	ck_assert_int_eq(sm_put_u64_be(w, 9, 0x0102030405060708ull), 0);
	ck_assert_int_eq(sm_put_u32_le(w, 17, 0x0a0b0c0d), 0);
	ck_assert_int_eq(sm_put_u32_be(w, 21, 0x0a0b0c0d), 0);
	ck_assert_int_eq(sm_put_u16_le(w, 25, 0x1122), 0);
	ck_assert_int_eq(sm_put_u16_be(w, 27, 0x1122), 0);
	ck_assert_int_eq(sm_put_u8(w, 29, 0x99), 0);
	ck_assert_int_eq(sm_put_u64(w, 33, 0x1122334455667788ull), 0);
	ck_assert_int_eq((sm_put_u32_be)(w, 41, 0xcafef00d), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	pread_all(p, 0, file, sizeof(file));
	const unsigned char le64[] = { 8, 7, 6, 5, 4, 3, 2, 1 }, be64[] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	ck_assert_mem_eq(file + 1, le64, 8);
	ck_assert_mem_eq(file + 9, be64, 8);
	const unsigned char le32[] = { 0xd, 0xc, 0xb, 0xa }, be32[] = { 0xa, 0xb, 0xc, 0xd };
	ck_assert_mem_eq(file + 17, le32, 4);
	ck_assert_mem_eq(file + 21, be32, 4);
	ck_assert_uint_eq(file[25], 0x22);
	ck_assert_uint_eq(file[26], 0x11);
	ck_assert_uint_eq(file[27], 0x11);
	ck_assert_uint_eq(file[28], 0x22);
	ck_assert_uint_eq(file[29], 0x99);
	const unsigned char be32b[] = { 0xca, 0xfe, 0xf0, 0x0d };
	ck_assert_mem_eq(file + 41, be32b, 4);

	ck_assert_int_eq(sm_get_u64_le(w, 1, &v64), 0);
	ck_assert_uint_eq(v64, 0x0102030405060708ull);
	ck_assert_int_eq(sm_get_u64_be(w, 9, &v64), 0);
	ck_assert_uint_eq(v64, 0x0102030405060708ull);
	ck_assert_int_eq(sm_get_u64_be(w, 1, &v64), 0);
	ck_assert_uint_eq(v64, 0x0807060504030201ull);
	ck_assert_int_eq(sm_get_u32_le(w, 17, &v32), 0);
	ck_assert_uint_eq(v32, 0x0a0b0c0d);
	ck_assert_int_eq((sm_get_u32_be)(w, 21, &v32), 0);
	ck_assert_uint_eq(v32, 0x0a0b0c0d);
	ck_assert_int_eq(sm_get_u16_le(w, 25, &v16), 0);
	ck_assert_uint_eq(v16, 0x1122);
	ck_assert_int_eq(sm_get_u16_be(w, 27, &v16), 0);
	ck_assert_uint_eq(v16, 0x1122);
	ck_assert_int_eq(sm_get_u8_be(w, 29, &v8), 0);
	ck_assert_uint_eq(v8, 0x99);
	ck_assert_int_eq(sm_get_u64(w, 33, &v64), 0);
	ck_assert_uint_eq(v64, 0x1122334455667788ull);
	ck_assert_int_eq((sm_get_u64)(w, 33, &v64), 0);
	ck_assert_uint_eq(v64, 0x1122334455667788ull);
	sm_release(w);
	sm_close(f);
}
END_TEST

/* A store through a read slice's raw pointer must fault, not change the
 * file: read slices use read-only windows even on a read-write file. */
START_TEST(read_slice_pointer_is_read_only)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *r;
	void *ptr;

	ck_assert_int_eq(sm_map_read(f, 0, 16, 0, &r), 0);
	ck_assert_int_eq(sm_unsafe_ptr(r, &ptr), 0);
	*(volatile char *)ptr = 1; /* SIGSEGV expected */
}
END_TEST

/* ---- commit and dirty tracking (through the syscall seam) ----------- */

static struct {
	int calls;
	size_t bytes;
	int fail_with; /* errno to return, or 0 to pass through */
} msync_log;

static int recording_msync(void *addr, size_t len, int flags)
{
	msync_log.calls++;
	msync_log.bytes += len;
	ck_assert_uint_eq((uintptr_t)addr % PG, 0);
	if (msync_log.fail_with) {
		errno = msync_log.fail_with;
		return -1;
	}
	return msync(addr, len, flags);
}

static void log_reset(void)
{
	memset(&msync_log, 0, sizeof(msync_log));
	sm_sys.msync = recording_msync;
}

START_TEST(commit_flushes_only_dirty_pages)
{
	/* 64 MiB sparse file, one slice over all of it. */
	const uint64_t size = 64ull << 20;
	const char *p = tu_tmpfile((off_t)size);
	sm_file *f = open_rw(p);
	sm_slice *w;
	uint64_t v;
	void *ptr;

	ck_assert_int_eq(sm_map_write(f, 0, size, 0, &w), 0);
	log_reset();
	ck_assert_int_eq(sm_commit(w, 0), 0); /* clean: nothing to flush */
	ck_assert_int_eq(msync_log.calls, 0);

	ck_assert_int_eq(sm_put_u64(w, 100 * PG + 8, 42), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(msync_log.calls, 1);
	ck_assert_uint_eq(msync_log.bytes, PG);

	log_reset();
	ck_assert_int_eq(sm_commit(w, 0), 0); /* committed pages are clean */
	ck_assert_int_eq(msync_log.calls, 0);

	/* two separate runs, one of them straddling a page boundary */
	ck_assert_int_eq(sm_put_u8(w, 3 * PG, 1), 0);
	ck_assert_int_eq(sm_put_u64(w, 10 * PG - 4, 2), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(msync_log.calls, 2);
	ck_assert_uint_eq(msync_log.bytes, 3 * PG);

	/* sm_fill over many words, sm_write at the very end, mark_dirty */
	log_reset();
	ck_assert_int_eq(sm_fill(w, PG, 7, 200 * PG), 0);
	ck_assert_int_eq(sm_write(w, size - 3, "abc", 3), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(msync_log.calls, 2);
	ck_assert_uint_eq(msync_log.bytes, 201 * PG);

	log_reset();
	ck_assert_int_eq(sm_unsafe_ptr(w, &ptr), 0);
	((char *)ptr)[5 * PG] = 9;
	ck_assert_int_eq(sm_mark_dirty(w, 5 * PG, 1), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(msync_log.calls, 1);
	ck_assert_int_eq(sm_get_u64(w, 100 * PG + 8, &v), 0);
	ck_assert_uint_eq(v, 0x0707070707070707ull); /* the fill covered it */
	sm_sys_reset();
	sm_release(w);
	sm_close(f);
}
END_TEST

START_TEST(failed_commit_stays_dirty_and_poisons)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p), *g;
	sm_slice *w, *w2;

	ck_assert_int_eq(sm_map_write(f, 0, PG, 0, &w), 0);
	ck_assert_int_eq(sm_map_write(f, 2 * PG, PG, 0, &w2), 0);
	ck_assert_int_eq(sm_put_u32(w, 0, 1), 0);
	log_reset();
	msync_log.fail_with = EIO;
	ck_assert_int_eq(sm_commit(w, 0), -EIO);
	ck_assert_int_eq(msync_log.calls, 1);
	/* the fault clears, but Linux would now report success with the data
	 * gone: the file stays poisoned, for every direct commit */
	msync_log.fail_with = 0;
	ck_assert_int_eq(sm_commit(w, 0), -EIO);
	ck_assert_int_eq(sm_commit(w2, 0), -EIO);
	ck_assert_int_eq(msync_log.calls, 1);
	sm_release(w);
	sm_release(w2);
	sm_close(f);

	/* reopening clears it; ENOSPC is passed through the same way */
	g = open_rw(p);
	ck_assert_int_eq(sm_map_write(g, 0, PG, 0, &w), 0);
	ck_assert_int_eq(sm_put_u32(w, 0, 1), 0);
	msync_log.fail_with = ENOSPC;
	ck_assert_int_eq(sm_commit(w, 0), -ENOSPC);
	msync_log.fail_with = 0;
	ck_assert_int_eq(sm_commit(w, 0), -ENOSPC);
	sm_sys_reset();
	sm_release(w);
	sm_close(g);
	g = open_rw(p);
	ck_assert_int_eq(sm_map_write(g, 0, PG, 0, &w), 0);
	ck_assert_int_eq(sm_put_u32(w, 0, 1), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	sm_release(w);
	sm_close(g);
}
END_TEST

static int async_calls;
static int recording_sfr(int fd, off_t off, off_t n, unsigned flags)
{
	async_calls++;
	ck_assert_uint_eq(flags, SYNC_FILE_RANGE_WRITE);
	return sync_file_range(fd, off, n, flags);
}

START_TEST(async_commit_starts_writeback_and_sync_completes)
{
	const char *p = tu_tmpfile(8 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w;

	ck_assert_int_eq(sm_map_write(f, 0, 8 * PG, 0, &w), 0);
	ck_assert_int_eq(sm_put_u32(w, 3 * PG, 5), 0);
	log_reset();
	sm_sys.sync_file_range = recording_sfr;
	ck_assert_int_eq(sm_commit(w, SM_ASYNC), 0);
	ck_assert_int_eq(async_calls, 1);
	ck_assert_int_eq(msync_log.calls, 0);
	/* still dirty: the later SM_SYNC commit flushes and waits */
	ck_assert_int_eq(sm_commit(w, SM_SYNC), 0);
	ck_assert_int_eq(msync_log.calls, 1);
	ck_assert_int_eq(sm_commit(w, SM_SYNC), 0);
	ck_assert_int_eq(msync_log.calls, 1);
	sm_sys_reset();
	sm_release(w);
	sm_close(f);
}
END_TEST

static int fail_fallocate_enospc(int fd, int mode, off_t off, off_t len)
{
	errno = ENOSPC;
	return -1;
}

static int fail_fallocate_notsup(int fd, int mode, off_t off, off_t len)
{
	errno = EOPNOTSUPP;
	return -1;
}

START_TEST(map_write_reserves_blocks)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w = (sm_slice *)1;
	int bad;

	sm_sys.fallocate = fail_fallocate_enospc;
	ck_assert_int_eq(sm_map_write(f, 0, PG, 0, &w), -ENOSPC);
	ck_assert_ptr_null(w);
	/* the failed map left no lock and no slice behind */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(tu_fds_on(p, &bad), 0);

	/* a filesystem that cannot reserve: map anyway, SM_EXTEND still grows */
	f = open_rw(p);
	sm_sys.fallocate = fail_fallocate_notsup;
	ck_assert_int_eq(sm_map_write(f, 0, PG, 0, &w), 0);
	sm_release(w);
	ck_assert_int_eq(sm_map_write(f, 6 * PG, PG, SM_EXTEND, &w), 0);
	ck_assert_uint_eq(file_size(p), 7 * PG);
	sm_release(w);
	sm_sys_reset();
	sm_close(f);
}
END_TEST

/* An SM_EXTEND map that fails must leave the file's size (and its blocks)
 * as it found them.  ext4 on a full disk fails fallocate with ENOSPC after
 * allocating part of the range, and mode 0 has then already grown i_size
 * over that part: the fake below does the same (half the range, then
 * ENOSPC).  Hole punching and growth steps pass through. */
static struct {
	int calls;
	bool grow_meanwhile; /* another process grows the file during the call */
	const char *path;
} extend;

static int half_then_enospc(int fd, int mode, off_t off, off_t len)
{
	extend.calls++;
	if (mode & FALLOC_FL_PUNCH_HOLE)
		return fallocate(fd, mode, off, len);
	if (fallocate(fd, mode, off, len / 2) < 0)
		return -1;
	if (extend.grow_meanwhile)
		ck_assert_int_eq(truncate(extend.path, off + len + 16 * PG), 0);
	errno = ENOSPC;
	return -1;
}

static ssize_t pwrite_enospc(int fd, const void *b, size_t n, off_t off)
{
	errno = ENOSPC;
	return -1;
}

static uint64_t file_blocks(const char *path)
{
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks;
}

START_TEST(failed_extend_leaves_file_size)
{
	const char *p = tu_tmpfile(2 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w = (sm_slice *)1;
	uint64_t blocks = file_blocks(p);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100 * PG, .l_len = 1 };
	int fd;

	/* the reservation runs out of space half way */
	extend = (typeof(extend)){ .path = p };
	sm_sys.fallocate = half_then_enospc;
	ck_assert_int_eq(sm_map_write(f, 2 * PG, 64 * PG, SM_EXTEND, &w), -ENOSPC);
	ck_assert_ptr_null(w);
	ck_assert_uint_eq(file_size(p), 2 * PG);
	ck_assert_uint_eq(file_blocks(p), blocks); /* the partial reservation is given back */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	ck_assert_int_eq(sm_map_write(f, PG, 64 * PG, SM_EXTEND | SM_BUFFERED, &w), -ENOSPC);
	ck_assert_uint_eq(file_size(p), 2 * PG);

	/* a failure after the reservation (the growth itself) as well */
	sm_sys_reset();
	blocks = file_blocks(p);
	sm_sys.pwrite = pwrite_enospc;
	ck_assert_int_eq(sm_map_write(f, 2 * PG, 64 * PG, SM_EXTEND, &w), -ENOSPC);
	ck_assert_uint_eq(file_size(p), 2 * PG);
	ck_assert_uint_eq(file_blocks(p), blocks);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);

	/* someone else holds bytes past the end (and may be growing the
	 * file): the size stays, nothing is truncated, their lock stays */
	sm_sys_reset();
	sm_sys.fallocate = half_then_enospc;
	fd = open(p, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	ck_assert_int_eq(sm_map_write(f, 2 * PG, 64 * PG, SM_EXTEND, &w), -ENOSPC);
	ck_assert_uint_eq(file_size(p), 2 * PG);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 100 * PG, 1), F_WRLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 100 * PG), F_UNLCK);
	close(fd);

	/* someone grew the file past our range meanwhile: never shrink it */
	extend.grow_meanwhile = true;
	ck_assert_int_eq(sm_map_write(f, 2 * PG, 64 * PG, SM_EXTEND, &w), -ENOSPC);
	ck_assert_uint_eq(file_size(p), 82 * PG);
	sm_sys_reset();
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);

	/* and a map that succeeds grows the file as asked */
	ck_assert_int_eq(sm_map_write(f, 100 * PG, 10, SM_EXTEND, &w), 0);
	ck_assert_uint_eq(file_size(p), 100 * PG + 10);
	sm_release(w);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* ---- in-process range counting (SPEC §3.2) --------------------------- */

START_TEST(overlapping_reads_share_bytes)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *a, *b;

	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &a), 0);
	ck_assert_int_eq(sm_map_read(f, 50, 100, 0, &b), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 150), F_RDLCK);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 150), F_UNLCK);
	ck_assert_int_eq(sm_release(a), 0);
	/* only the bytes no other slice covers are unlocked */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 50), F_UNLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 50, 1), F_RDLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 149, 1), F_RDLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 150, 1), F_UNLCK);
	ck_assert_int_eq(sm_release(b), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

START_TEST(write_conflicts_in_process_leave_kernel_lock_alone)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *r, *w, *x = (sm_slice *)1;

	ck_assert_int_eq(sm_map_read(f, 100, 100, 0, &r), 0);
	/* write over read: refused, the kernel lock stays a read lock */
	ck_assert_int_eq(sm_map_write(f, 150, 10, 0, &x), -EBUSY);
	ck_assert_ptr_null(x);
	ck_assert_int_eq(sm_map_write(f, 0, 101, 0, &x), -EBUSY);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 100, 100), F_UNLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 100, 100), F_RDLCK);
	/* adjacent is fine */
	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &w), 0);
	/* read over write and write over write: refused, write lock intact */
	ck_assert_int_eq(sm_map_read(f, 99, 1, 0, &x), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 50, 10, 0, &x), -EBUSY);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 100), F_WRLCK);
	ck_assert_int_eq(sm_release(r), 0);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 100), F_WRLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 100, 100), F_UNLCK);
	ck_assert_int_eq(sm_release(w), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

START_TEST(two_files_conflict_like_two_processes)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p), *g = open_rw(p);
	sm_slice *a, *b, *x;

	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &a), 0);
	ck_assert_int_eq(sm_map_read(g, 50, 100, 0, &b), 0);
	ck_assert_int_eq(sm_release(b), 0);
	ck_assert_int_eq(sm_map_write(g, 50, 100, 0, &x), -EBUSY);
	ck_assert_int_eq(sm_map_write(g, 100, 100, 0, &b), 0);
	ck_assert_int_eq(sm_map_read(f, 150, 1, 0, &x), -EBUSY);
	sm_close(f);
	sm_close(g);
	ck_assert_int_eq(sm_release(a), 0);
	ck_assert_int_eq(sm_release(b), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
}
END_TEST

/* Random acquire/release against a byte-level model; after every step
 * each byte's kernel state (probed from another description) must match. */
START_TEST(random_ranges_match_a_model)
{
	enum { BYTES = 48, SLOTS = 24, STEPS = 600 };
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	sm_slice *held[SLOTS] = { 0 };
	int rd[BYTES] = { 0 }, wr[BYTES] = { 0 };
	unsigned seed = 12345;

	for (int step = 0; step < STEPS; step++) {
		int i = rand_r(&seed) % SLOTS;
		if (held[i]) {
			uint64_t o = sm_offset(held[i]), l = sm_length(held[i]);
			int write = ((struct sm_slice *)held[i])->write;
			ck_assert_int_eq(sm_release(held[i]), 0);
			held[i] = NULL;
			for (uint64_t b = o; b < o + l; b++)
				write ? wr[b]-- : rd[b]--;
		} else {
			int write = rand_r(&seed) % 4 == 0;
			uint64_t o = (uint64_t)(rand_r(&seed) % BYTES);
			uint64_t l = 1 + (uint64_t)(rand_r(&seed) % (BYTES - o < 12 ? BYTES - o : 12));
			bool conflict = false;
			for (uint64_t b = o; b < o + l; b++)
				conflict |= wr[b] > 0 || (write && rd[b] > 0);
			int rc = write ? sm_map_write(f, o, l, 0, &held[i])
				       : sm_map_read(f, o, l, 0, &held[i]);
			ck_assert_int_eq(rc, conflict ? -EBUSY : 0);
			if (!rc)
				for (uint64_t b = o; b < o + l; b++)
					write ? wr[b]++ : rd[b]++;
		}
		for (int b = 0; b < BYTES; b++) {
			int want = wr[b] ? F_WRLCK : rd[b] ? F_RDLCK : F_UNLCK;
			ck_assert_msg(tu_probe(p, F_WRLCK, b, 1) == want,
				      "step %d byte %d: kernel disagrees with model", step, b);
		}
	}
	for (int i = 0; i < SLOTS; i++)
		if (held[i])
			ck_assert_int_eq(sm_release(held[i]), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

/* ---- mapping cache ------------------------------------------------- */

START_TEST(ten_thousand_regions)
{
	enum { N = 10000 };
	const char *p = tu_tmpfile((off_t)N * 64);
	sm_file *f = open_rw(p);
	static sm_slice *s[N];
	int vmas = tu_vma_count();

	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(sm_map_read(f, (uint64_t)i * 64, 32, 0, &s[i]), 0);
		ck_assert_int_eq(sm_put_u8(s[i], 0, 1), -EBADF);
	}
	/* slices share windows: a handful of mappings, not one per slice */
	ck_assert_int_lt(tu_vma_count() - vmas, 32); /* allocator arenas too */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 32, 32), F_UNLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 64 * 5000, 1), F_RDLCK);
	for (int i = 0; i < N; i += 2)
		ck_assert_int_eq(sm_release(s[i]), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 32), F_UNLCK);
	for (int i = 1; i < N; i += 2)
		ck_assert_int_eq(sm_release(s[i]), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

START_TEST(windows_large_and_crossing_slices)
{
	const uint64_t M = 1 << 20;
	const char *p = tu_tmpfile((off_t)(8 * M));
	sm_file *f = open_rw(p);
	sm_slice *a, *b, *c, *r;
	uint64_t v;

	/* a slice crossing the 1 MiB step, one larger than a step, one at the
	 * end of the file */
	ck_assert_int_eq(sm_map_write(f, M - 8, 16, 0, &a), 0);
	ck_assert_int_eq(sm_map_write(f, 2 * M + 5, 3 * M, 0, &b), 0);
	ck_assert_int_eq(sm_map_write(f, 8 * M - 8, 8, 0, &c), 0);
	ck_assert_int_eq(sm_put_u64(a, 4, 0x1111), 0);
	ck_assert_int_eq(sm_put_u64(b, 3 * M - 8, 0x2222), 0);
	ck_assert_int_eq(sm_put_u64(c, 0, 0x3333), 0);
	ck_assert_int_eq(sm_commit(a, 0), 0);
	ck_assert_int_eq(sm_commit(b, 0), 0);
	ck_assert_int_eq(sm_commit(c, 0), 0);
	sm_release(a);
	sm_release(b);
	sm_release(c);
	ck_assert_int_eq(sm_map_read(f, 0, 8 * M, 0, &r), 0);
	ck_assert_int_eq(sm_get_u64(r, M - 4, &v), 0);
	ck_assert_uint_eq(v, 0x1111);
	ck_assert_int_eq(sm_get_u64(r, 5 * M - 3, &v), 0);
	ck_assert_uint_eq(v, 0x2222);
	ck_assert_int_eq(sm_get_u64(r, 8 * M - 8, &v), 0);
	ck_assert_uint_eq(v, 0x3333);
	sm_release(r);
	/* many windows: idle ones beyond the cache bound are unmapped */
	int vmas = tu_vma_count();
	for (int round = 0; round < 2; round++)
		for (uint64_t i = 0; i < 8; i++) {
			ck_assert_int_eq(sm_map_read(f, i * M + 10, 10, SM_POPULATE, &r), 0);
			ck_assert_int_eq(sm_get_u8(r, 0, (uint8_t *)&v), 0);
			sm_release(r);
		}
	ck_assert_int_le(tu_vma_count() - vmas, 8 + 2);
	sm_close(f);
}
END_TEST

/* ---- threads --------------------------------------------------------- */

struct thread_arg {
	sm_file *f;
	unsigned seed;
	int ok, busy;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;

	for (int i = 0; i < 3000; i++) {
		uint64_t off = (uint64_t)(rand_r(&a->seed) % 4000), len = 1 + rand_r(&a->seed) % 96;
		bool write = rand_r(&a->seed) % 3 == 0;
		sm_slice *s;
		int rc = write ? sm_map_write(a->f, off, len, 0, &s) : sm_map_read(a->f, off, len, 0, &s);
		if (rc == -EBUSY) {
			a->busy++;
			continue;
		}
		if (rc != 0)
			return (void *)1;
		a->ok++;
		if (write && sm_put_u8(s, 0, 1) != 0)
			return (void *)1;
		if (sm_release(s) != 0)
			return (void *)1;
	}
	return NULL;
}

START_TEST(threads_share_one_file)
{
	const char *p = tu_tmpfile(2 * PG);
	sm_file *f = open_rw(p);
	struct thread_arg a[4];
	pthread_t t[4];
	void *ret;

	for (int i = 0; i < 4; i++) {
		a[i] = (struct thread_arg){ .f = f, .seed = (unsigned)i + 1 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, thread_main, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(t[i], &ret), 0);
		ck_assert_ptr_null(ret);
		ck_assert_int_gt(a[i].ok, 0);
	}
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

/* ---- errors -------------------------------------------------------- */

START_TEST(strerror_explains_every_code)
{
	const int codes[] = { EBUSY, ENOLCK, ETIMEDOUT, EDEADLK, ENXIO, ERANGE, EINVAL,
			      EBADF, ESTALE, ENOTSUP, EIO, ENOSPC, ENOMEM };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *m = sm_strerror(-codes[i]);
		ck_assert_ptr_nonnull(m);
		ck_assert_str_eq(m, sm_strerror(codes[i]));
		ck_assert_str_ne(m, strerror(codes[i])); /* safemap's own words */
	}
	ck_assert_str_eq(sm_strerror(0), "success");
	ck_assert_ptr_nonnull(sm_strerror(INT_MIN));
	ck_assert_ptr_nonnull(sm_strerror(-99999));
	ck_assert_str_eq(sm_strerror(-EMFILE), strerror(EMFILE)); /* not safemap's own */
}
END_TEST

static Suite *api_suite(void)
{
	Suite *s = suite_create("api");
	TCase *tc;

	tc = tcase_create("open");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, open_bad_arguments);
	tcase_add_test(tc, open_options_forward_compatible);
	tcase_add_test(tc, open_errors_from_the_system);
	tcase_add_test(tc, descriptors_are_cloexec);
	tcase_add_test(tc, close_is_deferred_until_last_release);
	suite_add_tcase(s, tc);

	tc = tcase_create("map");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, map_bad_arguments);
	tcase_add_test(tc, extend_grows_the_file);
	tcase_add_test(tc, map_write_reserves_blocks);
	tcase_add_test(tc, failed_extend_leaves_file_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("access");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, read_write_fill_roundtrip);
	tcase_add_test(tc, accessor_errors);
	tcase_add_test(tc, word_accessors_byte_order_and_alignment);
	tcase_add_test_raise_signal(tc, read_slice_pointer_is_read_only, SIGSEGV);
	suite_add_tcase(s, tc);

	tc = tcase_create("commit");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, commit_flushes_only_dirty_pages);
	tcase_add_test(tc, failed_commit_stays_dirty_and_poisons);
	tcase_add_test(tc, async_commit_starts_writeback_and_sync_completes);
	suite_add_tcase(s, tc);

	tc = tcase_create("ranges");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, overlapping_reads_share_bytes);
	tcase_add_test(tc, write_conflicts_in_process_leave_kernel_lock_alone);
	tcase_add_test(tc, two_files_conflict_like_two_processes);
	tcase_add_test(tc, random_ranges_match_a_model);
	tcase_add_test(tc, ten_thousand_regions);
	tcase_add_test(tc, windows_large_and_crossing_slices);
	tcase_add_test(tc, threads_share_one_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, strerror_explains_every_code);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(api_suite());
}
