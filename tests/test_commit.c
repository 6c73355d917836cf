/* SPDX-License-Identifier: MIT */
/*
 * test_commit.c - commit modes and views: buffered slices (observed by
 * another process with pread), abort, async and batched commit, fault
 * injection through the syscall seam (EIO, ENOSPC from pwrite, fdatasync),
 * sub-slices handed to other threads, downgrade, memory files, SM_POPULATE.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "safemap-internal.h"
#include "testutil.h"

#define PG 4096

/* pread by another process: what the file holds for everyone else. */
static int reader_child(void *arg, int in, int out)
{
	const char *path = arg;
	char cmd[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	while (fd >= 0 && tu_recv(in, cmd, sizeof(cmd))) {
		long long off = atoll(cmd);
		uint64_t v = 0;
		if (pread(fd, &v, 8, (off_t)off) != 8)
			v = (uint64_t)-1;
		tu_send(out, "%llu", (unsigned long long)v);
	}
	return 0;
}

static uint64_t peek(struct tu_child *c, uint64_t off)
{
	char buf[64];

	tu_send(c->to, "%llu", (unsigned long long)off);
	ck_assert(tu_recv(c->from, buf, sizeof(buf)));
	return strtoull(buf, NULL, 10);
}

/* ---- seam recording --------------------------------------------------- */

static struct {
	int pwrites, fdatasyncs, msyncs;
	size_t pwrite_bytes;
	int fail_pwrite, fail_fdatasync, fail_fd; /* errno, or 0; fd to fail (-1 any) */
} seam;

static ssize_t rec_pwrite(int fd, const void *b, size_t n, off_t off)
{
	seam.pwrites++;
	seam.pwrite_bytes += n;
	if (seam.fail_pwrite) {
		errno = seam.fail_pwrite;
		return -1;
	}
	return pwrite(fd, b, n, off);
}

static int rec_fdatasync(int fd)
{
	seam.fdatasyncs++;
	if (seam.fail_fdatasync && (seam.fail_fd < 0 || seam.fail_fd == fd)) {
		errno = seam.fail_fdatasync;
		return -1;
	}
	return fdatasync(fd);
}

static int rec_msync(void *a, size_t n, int flags)
{
	seam.msyncs++;
	return msync(a, n, flags);
}

static void seam_record(void)
{
	memset(&seam, 0, sizeof(seam));
	seam.fail_fd = -1;
	sm_sys.pwrite = rec_pwrite;
	sm_sys.fdatasync = rec_fdatasync;
	sm_sys.msync = rec_msync;
}

static sm_file *open_rw(const char *p)
{
	sm_file *f;
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	return f;
}

/* ---- buffered --------------------------------------------------------- */

START_TEST(buffered_reaches_file_only_at_commit)
{
	const char *p = tu_tmpfile(16 * PG);
	sm_file *f = open_rw(p);
	struct tu_child c;
	sm_slice *w;
	uint64_t v;

	tu_spawn(&c, reader_child, (void *)p);
	ck_assert_int_eq(sm_map_write(f, 100, 16 * PG - 200, SM_BUFFERED, &w), 0);
	seam_record();
	ck_assert_int_eq(sm_put_u64(w, 0, 11), 0);
	ck_assert_int_eq(sm_put_u64(w, 9 * PG, 22), 0);
	ck_assert_int_eq(sm_get_u64(w, 9 * PG, &v), 0);
	ck_assert_uint_eq(v, 22);
	/* nobody else sees a half-written slice */
	ck_assert_uint_eq(peek(&c, 100), 0);
	ck_assert_uint_eq(peek(&c, 100 + 9 * PG), 0);
	ck_assert_int_eq(sm_commit(w, SM_SYNC), 0);
	ck_assert_uint_eq(peek(&c, 100), 11);
	ck_assert_uint_eq(peek(&c, 100 + 9 * PG), 22);
	/* only the dirty pages were written (the first clipped to the slice),
	 * then one flush */
	ck_assert_int_eq(seam.pwrites, 2);
	ck_assert_uint_eq(seam.pwrite_bytes, (PG - 100) + PG);
	ck_assert_int_eq(seam.fdatasyncs, 1);
	ck_assert_int_eq(seam.msyncs, 0);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_int_eq(sm_commit(w, SM_SYNC), 0); /* clean: no syscall */
	ck_assert_int_eq(seam.pwrites, 2);
	ck_assert_int_eq(seam.fdatasyncs, 1);
	sm_sys_reset();
	sm_release(w);
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}
END_TEST

START_TEST(abort_drops_buffered_changes)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w, *d;
	uint64_t v;

	ck_assert_int_eq(sm_map_write(f, 0, 4 * PG, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 8, 5), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(sm_put_u64(w, 8, 6), 0);
	ck_assert_int_eq(sm_put_u64(w, 3 * PG, 7), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 2);
	ck_assert_int_eq(sm_abort(w), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_int_eq(sm_get_u64(w, 8, &v), 0);
	ck_assert_uint_eq(v, 5); /* the committed value */
	ck_assert_int_eq(sm_get_u64(w, 3 * PG, &v), 0);
	ck_assert_uint_eq(v, 0);
	sm_release(w);
	/* direct slices cannot abort; read slices are not written */
	ck_assert_int_eq(sm_map_write(f, 0, PG, 0, &d), 0);
	ck_assert_int_eq(sm_abort(d), -ENOTSUP);
	sm_release(d);
	ck_assert_int_eq(sm_map_read(f, 0, PG, 0, &d), 0);
	ck_assert_int_eq(sm_abort(d), -EBADF);
	ck_assert_int_eq(sm_abort(NULL), -EINVAL);
	sm_release(d);
	sm_close(f);
}
END_TEST

/* A failed buffered commit stays dirty; once the fault clears, the retry
 * writes the right bytes (the private copy was kept). */
static void buffered_retry(int *which, int err)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	struct tu_child c;
	sm_slice *w;

	tu_spawn(&c, reader_child, (void *)p);
	ck_assert_int_eq(sm_map_write(f, 0, 4 * PG, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 2 * PG, 4242), 0);
	seam_record();
	*which = err;
	ck_assert_int_eq(sm_commit(w, 0), -err);
	ck_assert_int_eq(sm_dirty_pages(w), 1);
	ck_assert_int_eq(sm_commit(w, 0), -err);
	*which = 0;
	ck_assert_int_eq(sm_commit(w, 0), 0); /* not poisoned: a real retry */
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_uint_eq(peek(&c, 2 * PG), 4242);
	sm_sys_reset();
	sm_release(w);
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}

START_TEST(buffered_pwrite_eio_then_retry)
{
	buffered_retry(&seam.fail_pwrite, EIO);
}
END_TEST

START_TEST(buffered_pwrite_enospc_then_retry)
{
	buffered_retry(&seam.fail_pwrite, ENOSPC);
}
END_TEST

START_TEST(buffered_fdatasync_eio_then_retry)
{
	buffered_retry(&seam.fail_fdatasync, EIO);
}
END_TEST

START_TEST(buffered_fdatasync_enospc_then_retry)
{
	buffered_retry(&seam.fail_fdatasync, ENOSPC);
}
END_TEST

START_TEST(async_buffered_commit)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	struct tu_child c;
	sm_slice *w;

	tu_spawn(&c, reader_child, (void *)p);
	ck_assert_int_eq(sm_map_write(f, 0, 4 * PG, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, PG, 9), 0);
	seam_record();
	ck_assert_int_eq(sm_commit(w, SM_ASYNC), 0);
	ck_assert_int_eq(seam.pwrites, 1);
	ck_assert_int_eq(seam.fdatasyncs, 0);
	ck_assert_uint_eq(peek(&c, PG), 9); /* written, not yet flushed */
	ck_assert_int_eq(sm_commit(w, SM_SYNC), 0);
	ck_assert_int_eq(seam.fdatasyncs, 1);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	sm_sys_reset();
	sm_release(w);
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}
END_TEST

START_TEST(buffered_truncated_commit_is_enxio)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w;

	ck_assert_int_eq(sm_map_write(f, 0, 4 * PG, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 3 * PG, 1), 0);
	ck_assert_int_eq(truncate(p, PG), 0);
	/* a pwrite would resurrect the deliberately truncated bytes */
	ck_assert_int_eq(sm_commit(w, 0), -ENXIO);
	ck_assert_int_eq(sm_release(w), 0);
	sm_close(f);
}
END_TEST

/* ---- commit_many -------------------------------------------------------- */

START_TEST(commit_many_flushes_each_file_once)
{
	const char *p1 = tu_tmpfile(8 * PG), *p2 = tu_tmpfile(8 * PG);
	sm_file *f = open_rw(p1), *g = open_rw(p2);
	sm_slice *v[4];
	struct tu_child c;

	ck_assert_int_eq(sm_map_write(f, 0, 2 * PG, 0, &v[0]), 0);
	ck_assert_int_eq(sm_map_write(f, 4 * PG, 2 * PG, SM_BUFFERED, &v[1]), 0);
	ck_assert_int_eq(sm_map_write(g, 0, 2 * PG, SM_BUFFERED, &v[2]), 0);
	ck_assert_int_eq(sm_map_write(g, 4 * PG, 2 * PG, 0, &v[3]), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(sm_put_u64(v[i], 8, 100 + (uint64_t)i), 0);
	seam_record();
	ck_assert_int_eq(sm_commit_many(v, 4, 0), 0);
	ck_assert_int_eq(seam.fdatasyncs, 2);
	ck_assert_int_eq(seam.msyncs, 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(sm_dirty_pages(v[i]), 0);
	tu_spawn(&c, reader_child, (void *)p1);
	ck_assert_uint_eq(peek(&c, 4 * PG + 8), 101);
	ck_assert_int_eq(tu_wait(&c), 0);

	/* g's flush fails: its slices stay dirty, f's are clean, g is poisoned
	 * for direct commits (it had a direct slice in the batch) */
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(sm_put_u64(v[i], 16, 1), 0);
	seam_record();
	seam.fail_fdatasync = EIO;
	seam.fail_fd = g->fd;
	ck_assert_int_eq(sm_commit_many(v, 4, 0), -EIO);
	ck_assert_int_eq(sm_dirty_pages(v[0]), 0);
	ck_assert_int_eq(sm_dirty_pages(v[1]), 0);
	ck_assert_int_eq(sm_dirty_pages(v[2]), 1);
	ck_assert_int_eq(sm_dirty_pages(v[3]), 1);
	seam.fail_fdatasync = 0;
	ck_assert_int_eq(sm_commit(v[3], 0), -EIO);
	ck_assert_int_eq(sm_commit(v[2], 0), 0); /* buffered: an honest retry */

	ck_assert_int_eq(sm_commit_many(NULL, 1, 0), -EINVAL);
	ck_assert_int_eq(sm_commit_many(v, 0, 0), -EINVAL);
	ck_assert_int_eq(sm_commit_many(v, 4, 0x8000), -EINVAL);
	sm_slice *twice[2] = { v[0], v[0] };
	ck_assert_int_eq(sm_commit_many(twice, 2, 0), -EINVAL);
	sm_sys_reset();
	for (int i = 0; i < 4; i++)
		sm_release(v[i]);
	sm_close(f);
	sm_close(g);
}
END_TEST

/* ---- sub-slices ---------------------------------------------------------- */

struct sub_arg {
	sm_slice *s;
	uint64_t seen;
	int rc;
};

static void *sub_thread(void *p)
{
	struct sub_arg *a = p;

	a->rc = sm_get_u64(a->s, 0, &a->seen);
	if (a->rc == 0)
		a->rc = sm_put_u64(a->s, 8, a->seen + 1);
	if (a->rc == 0)
		a->rc = sm_commit(a->s, 0);
	if (a->rc == 0)
		a->rc = sm_release(a->s);
	return NULL;
}

START_TEST(sub_outlives_parent_and_crosses_threads)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w, *sub, *x = (sm_slice *)1;
	struct sub_arg a;
	pthread_t t;
	uint64_t v;
	int fd;

	ck_assert_int_eq(sm_map_write(f, 1000, 2 * PG, 0, &w), 0);
	ck_assert_int_eq(sm_sub(w, 100, 64, &sub), 0);
	ck_assert_uint_eq(sm_offset(sub), 1100);
	ck_assert_uint_eq(sm_length(sub), 64);
	ck_assert_int_eq(sm_put_u64(w, 100, 77), 0); /* same bytes, zero copy */
	ck_assert_int_eq(sm_get_u64(sub, 0, &v), 0);
	ck_assert_uint_eq(v, 77);
	ck_assert_int_eq(sm_get_u64(sub, 57, &v), -ERANGE);
	ck_assert_int_eq(sm_sub(w, 0, 0, &x), -EINVAL);
	ck_assert_ptr_null(x);
	ck_assert_int_eq(sm_sub(w, 2 * PG - 1, 2, &x), -ERANGE);
	ck_assert_int_eq(sm_sub(NULL, 0, 1, &x), -EINVAL);
	/* the parent goes; the sub keeps the lock and the mapping */
	ck_assert_int_eq(sm_release(w), 0);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 1000, 2 * PG), F_WRLCK);
	a = (struct sub_arg){ .s = sub };
	ck_assert_int_eq(pthread_create(&t, NULL, sub_thread, &a), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(a.rc, 0);
	ck_assert_uint_eq(a.seen, 77);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(pread(fd, &v, 8, 1108), 8);
	ck_assert_uint_eq(v, 78);
	close(fd);
	sm_close(f);
}
END_TEST

/* The page is the unit of dirtiness shared by a slice and its sub-slices:
 * committing a sub-slice writes the whole dirty pages it touches (clipped
 * to the parent's range), so a change the parent made in one of them
 * reaches the file and nothing is marked clean unwritten. */
static void sub_commit_keeps_parent_changes(bool many)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w, *sub, *other;
	struct tu_child c;
	uint8_t v;

	tu_spawn(&c, reader_child, (void *)p);
	/* the parent holds [100, 4 PG - 100); the sub views [200, 300) */
	ck_assert_int_eq(sm_map_write(f, 100, 4 * PG - 200, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_map_write(f, 4 * PG - 50, 50, SM_BUFFERED, &other), 0);
	ck_assert_int_eq(sm_sub(w, 100, 100, &sub), 0);
	ck_assert_int_eq(sm_put_u8(w, 0, 0xaa), 0);          /* file byte 100 */
	ck_assert_int_eq(sm_put_u8(w, 2 * PG, 0xcc), 0);     /* another page */
	ck_assert_int_eq(sm_put_u8(sub, 50, 0xbb), 0);       /* file byte 250 */
	ck_assert_int_eq(sm_put_u8(other, 0, 0xdd), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 2);
	ck_assert_int_eq(sm_dirty_pages(sub), 1);
	seam_record();
	if (many) {
		sm_slice *v2[2] = { other, sub };
		ck_assert_int_eq(sm_commit_many(v2, 2, 0), 0);
	} else {
		ck_assert_int_eq(sm_commit(sub, 0), 0);
	}
	ck_assert_int_eq(sm_dirty_pages(sub), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 1); /* the page the sub does not touch */
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_uint_eq(peek(&c, 96) >> 32 & 0xff, 0xaa); /* byte 100 */
	ck_assert_uint_eq(peek(&c, 248) >> 16 & 0xff, 0xbb); /* byte 250 */
	sm_sys_reset();
	/* the sub's commit wrote the whole first page of the hold, and only
	 * it: the parent's other page stayed dirty until its own commit */
	ck_assert_uint_eq(seam.pwrite_bytes, (PG - 100) + (many ? 50 : 0) + PG);
	ck_assert_uint_eq(peek(&c, 2 * PG + 96) >> 32 & 0xff, 0xcc);
	ck_assert_int_eq(sm_get_u8(w, 0, &v), 0);
	ck_assert_uint_eq(v, 0xaa);
	sm_release(sub);
	sm_release(w);
	sm_release(other);
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}

START_TEST(sub_commit_keeps_parent_changes_commit)
{
	sub_commit_keeps_parent_changes(false);
}
END_TEST

START_TEST(sub_commit_keeps_parent_changes_many)
{
	sub_commit_keeps_parent_changes(true);
}
END_TEST

/* sm_abort of a sub-slice drops the changes to its own bytes and keeps every
 * change outside them; a page it covers only partly stays dirty (it may
 * hold another view's change), a page it covers wholly becomes clean. */
START_TEST(sub_abort_keeps_parent_changes)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w, *sub, *big;
	struct tu_child c;
	uint8_t v;

	tu_spawn(&c, reader_child, (void *)p);
	ck_assert_int_eq(sm_map_write(f, 0, 4 * PG, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_put_u8(w, 250, 0x11), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(sm_sub(w, 200, 100, &sub), 0);
	ck_assert_int_eq(sm_put_u8(w, 100, 0xaa), 0);
	ck_assert_int_eq(sm_put_u8(sub, 50, 0xbb), 0); /* byte 250 */
	ck_assert_int_eq(sm_abort(sub), 0);
	ck_assert_int_eq(sm_get_u8(sub, 50, &v), 0);
	ck_assert_uint_eq(v, 0x11); /* the committed byte again */
	ck_assert_int_eq(sm_get_u8(w, 100, &v), 0);
	ck_assert_uint_eq(v, 0xaa); /* the parent's change is kept... */
	ck_assert_int_eq(sm_dirty_pages(w), 1); /* ...and still dirty */
	ck_assert_int_eq(sm_dirty_pages(sub), 1);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_uint_eq(peek(&c, 96) >> 32 & 0xff, 0xaa);
	ck_assert_uint_eq(peek(&c, 248) >> 16 & 0xff, 0x11);

	/* a sub over pages [1, 3) and a bit of page 3 */
	ck_assert_int_eq(sm_sub(w, PG, 2 * PG + 8, &big), 0);
	ck_assert_int_eq(sm_put_u8(w, PG + 1, 1), 0);      /* inside big */
	ck_assert_int_eq(sm_put_u8(big, 2 * PG, 2), 0);    /* page 3, inside big */
	ck_assert_int_eq(sm_put_u8(w, 3 * PG + 100, 3), 0); /* page 3, outside big */
	ck_assert_int_eq(sm_put_u8(w, 5, 4), 0);           /* page 0 */
	ck_assert_int_eq(sm_dirty_pages(w), 3);
	ck_assert_int_eq(sm_abort(big), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 2); /* pages 0 and 3 */
	ck_assert_int_eq(sm_dirty_pages(big), 1);
	ck_assert_int_eq(sm_get_u8(w, PG + 1, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(sm_get_u8(w, 3 * PG, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(sm_get_u8(w, 3 * PG + 100, &v), 0);
	ck_assert_uint_eq(v, 3);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_uint_eq(peek(&c, 3 * PG + 96) >> 32 & 0xff, 3);
	ck_assert_uint_eq(peek(&c, 0) >> 40 & 0xff, 4);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	/* the parent's abort still drops everything */
	ck_assert_int_eq(sm_put_u8(big, 0, 9), 0);
	ck_assert_int_eq(sm_put_u8(w, 0, 9), 0);
	ck_assert_int_eq(sm_abort(w), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_int_eq(sm_get_u8(big, 0, &v), 0);
	ck_assert_uint_eq(v, 0);
	sm_release(big);
	sm_release(sub);
	sm_release(w);
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}
END_TEST

/* sm_abort reads the pages back with load_copy's loop: EINTR is retried and
 * a short read continues (the library's pread resolves to this one in the
 * test program, which passes through unless told otherwise). */
static struct {
	int eintr; /* fail this many calls with EINTR */
	size_t chunk; /* return at most this many bytes per call, 0: all */
	int calls;
} preadf;

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	if (preadf.eintr > 0) {
		preadf.eintr--;
		preadf.calls++;
		errno = EINTR;
		return -1;
	}
	if (preadf.chunk && n > preadf.chunk) {
		n = preadf.chunk;
		preadf.calls++;
	}
	return (ssize_t)syscall(SYS_pread64, fd, buf, n, off);
}

START_TEST(abort_retries_eintr_and_short_reads)
{
	const char *p = tu_tmpfile(2 * PG);
	sm_file *f = open_rw(p);
	sm_slice *w;
	uint64_t v;

	ck_assert_int_eq(sm_map_write(f, 0, 2 * PG, SM_BUFFERED, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, PG + 1000, 77), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(sm_put_u64(w, PG + 1000, 88), 0);
	preadf.eintr = 2;
	ck_assert_int_eq(sm_abort(w), 0);
	ck_assert_int_eq(preadf.calls, 2);
	ck_assert_int_eq(sm_get_u64(w, PG + 1000, &v), 0);
	ck_assert_uint_eq(v, 77);
	ck_assert_int_eq(sm_put_u64(w, PG + 1000, 88), 0);
	preadf.calls = 0;
	preadf.chunk = 100;
	ck_assert_int_eq(sm_abort(w), 0);
	preadf.chunk = 0;
	ck_assert_int_ge(preadf.calls, 2);
	ck_assert_int_eq(sm_get_u64(w, PG + 1000, &v), 0);
	ck_assert_uint_eq(v, 77);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	sm_release(w);
	sm_close(f);
}
END_TEST

/* A sub-slice handed to another thread may commit while the parent is
 * written in the same page (SPEC §2 asks one thread per slice, and these
 * are two slices).  The commit writes the whole page; a parent write that
 * lands after the pwrite must stay dirty, not be marked clean by the end
 * of the commit, or the parent's next commit skips it. */
struct pwriter {
	sm_slice *w;
	uint64_t n, last;
	volatile int done;
	int rc;
};

static void *parent_writer(void *p)
{
	struct pwriter *a = p;

	for (a->last = 1; a->last <= a->n; a->last++)
		if ((a->rc = sm_put_u64(a->w, 8, a->last)) < 0)
			break;
	a->last--;
	__atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

START_TEST(sub_commit_races_parent_writes)
{
	const char *p = tu_tmpfile(2 * PG);
	sm_file *f = open_rw(p);
	struct tu_child c;

	tu_spawn(&c, reader_child, (void *)p);
	for (int round = 0; round < 8; round++) {
		struct pwriter a;
		sm_slice *w, *sub;
		pthread_t t;
		int commits = 0;

		ck_assert_int_eq(sm_map_write(f, 0, 2 * PG, SM_BUFFERED, &w), 0);
		ck_assert_int_eq(sm_sub(w, 100, 100, &sub), 0);
		a = (struct pwriter){ .w = w, .n = 200000 };
		ck_assert_int_eq(pthread_create(&t, NULL, parent_writer, &a), 0);
		while (!__atomic_load_n(&a.done, __ATOMIC_ACQUIRE)) {
			ck_assert_int_eq(sm_put_u8(sub, 0, (uint8_t)commits), 0);
			ck_assert_int_eq(sm_commit(sub, 0), 0);
			commits++;
		}
		ck_assert_int_eq(pthread_join(t, NULL), 0);
		ck_assert_int_eq(a.rc, 0);
		ck_assert_int_eq(sm_commit(w, 0), 0);
		ck_assert_msg(peek(&c, 8) == a.last, "round %d (%d commits): file has %llu, last write %llu",
			      round, commits, (unsigned long long)peek(&c, 8),
			      (unsigned long long)a.last);
		sm_release(sub);
		sm_release(w);
	}
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}
END_TEST

/* ---- sub-slices vs downgrade -------------------------------------------- */

/* sm_sub must read the parent's mode under f->lock, the lock sm_downgrade
 * changes it under: otherwise a sub-slice made while the parent is being
 * downgraded is writable under a read lock.  Made deterministic by holding
 * f->lock: the downgrade queues on it first, then sm_sub; the futex wakes
 * them in that order. */
struct race_arg {
	sm_slice *s, *sub;
	int rc;
	volatile pid_t tid;
	bool sub_not_downgrade;
};

static void *race_thread(void *p)
{
	struct race_arg *a = p;

	a->tid = gettid();
	if (a->sub_not_downgrade)
		a->rc = sm_sub(a->s, 0, 8, &a->sub);
	else
		a->rc = sm_downgrade(a->s);
	return NULL;
}

/* Wait until thread tid sleeps in futex (queued on the mutex). */
static void wait_futex(pid_t tid)
{
	char path[64], buf[64];
	long nr;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	for (int i = 0; i < 100000; i++) {
		FILE *fp = fopen(path, "r");
		nr = -1;
		if (fp && fgets(buf, sizeof(buf), fp))
			nr = strtol(buf, NULL, 10);
		if (fp)
			fclose(fp);
		if (nr == SYS_futex)
			return;
		usleep(100);
	}
	ck_abort_msg("thread %d never blocked on the file lock", (int)tid);
}

START_TEST(sub_during_downgrade_is_read_only)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f = open_rw(p);
	struct race_arg d, s;
	pthread_t td, ts;
	sm_slice *w;

	ck_assert_int_eq(sm_map_write(f, 0, PG, 0, &w), 0);
	d = (struct race_arg){ .s = w };
	s = (struct race_arg){ .s = w, .sub_not_downgrade = true };
	pthread_mutex_lock(&f->lock);
	ck_assert_int_eq(pthread_create(&td, NULL, race_thread, &d), 0);
	while (!d.tid)
		usleep(100);
	wait_futex(d.tid);
	ck_assert_int_eq(pthread_create(&ts, NULL, race_thread, &s), 0);
	while (!s.tid)
		usleep(100);
	wait_futex(s.tid);
	pthread_mutex_unlock(&f->lock);
	ck_assert_int_eq(pthread_join(td, NULL), 0);
	ck_assert_int_eq(pthread_join(ts, NULL), 0);
	ck_assert_int_eq(s.rc, 0);
	/* either the sub came first (and the downgrade refused), or the sub is
	 * a read slice like its parent */
	if (d.rc == 0) {
		ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, PG), F_RDLCK);
		ck_assert_int_eq(sm_put_u8(s.sub, 0, 1), -EBADF);
		ck_assert_int_eq(sm_commit(s.sub, 0), -EBADF);
	} else {
		ck_assert_int_eq(d.rc, -EBUSY);
		ck_assert_int_eq(sm_put_u8(s.sub, 0, 1), 0);
	}
	sm_release(s.sub);
	sm_release(w);
	sm_close(f);
}
END_TEST

/* ---- downgrade -------------------------------------------------------- */

START_TEST(downgrade_write_to_read)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_rw(p), *g = open_rw(p);
	sm_slice *w, *b, *sub, *r;
	uint64_t v;

	ck_assert_int_eq(sm_map_write(f, 0, PG, 0, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 0, 3), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(sm_map_read(g, 0, 8, 0, &r), -EBUSY);
	ck_assert_int_eq(sm_sub(w, 0, 16, &sub), 0);
	ck_assert_int_eq(sm_downgrade(w), -EBUSY); /* a writable sub is live */
	ck_assert_int_eq(sm_downgrade(sub), -EINVAL);
	sm_release(sub);
	ck_assert_int_eq(sm_downgrade(w), 0);
	ck_assert_int_eq(sm_downgrade(w), -EBADF);
	/* readers may now share it, writers may not */
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, PG), F_UNLCK);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, PG), F_RDLCK);
	ck_assert_int_eq(sm_map_read(g, 0, 8, 0, &r), 0);
	ck_assert_int_eq(sm_map_write(g, 0, 8, 0, &b), -EBUSY);
	ck_assert_int_eq(sm_put_u64(w, 0, 4), -EBADF);
	ck_assert_int_eq(sm_commit(w, 0), -EBADF);
	ck_assert_int_eq(sm_get_u64(w, 0, &v), 0);
	ck_assert_uint_eq(v, 3);
	/* in-process: the run is a read run now, shared by another read */
	sm_slice *r2;
	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &r2), 0);
	ck_assert_int_eq(sm_release(w), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 100), F_RDLCK); /* r2 and r hold it */
	sm_release(r2);
	sm_release(r);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);

	/* buffered with uncommitted changes: commit or abort first */
	ck_assert_int_eq(sm_map_write(f, 0, PG, SM_BUFFERED, &b), 0);
	ck_assert_int_eq(sm_put_u64(b, 0, 1), 0);
	ck_assert_int_eq(sm_downgrade(b), -EBUSY);
	ck_assert_int_eq(sm_abort(b), 0);
	ck_assert_int_eq(sm_downgrade(b), 0);
	ck_assert_int_eq(sm_map_read(f, 0, PG, 0, &r), 0);
	sm_release(r);
	sm_release(b);
	ck_assert_int_eq(sm_downgrade(NULL), -EINVAL);
	sm_close(f);
	sm_close(g);
}
END_TEST

/* ---- memory files ------------------------------------------------------ */

START_TEST(memory_file_same_api)
{
	static unsigned char buf[3 * PG];
	sm_file *m, *ro;
	sm_slice *w, *r, *x;
	uint64_t v;

	ck_assert_int_eq(sm_open_memory(NULL, 10, SM_RDWR, &m), -EINVAL);
	ck_assert_int_eq(sm_open_memory(buf, 0, SM_RDWR, &m), -EINVAL);
	ck_assert_int_eq(sm_open_memory(buf, 10, SM_RDWR | SM_CREATE, &m), -EINVAL);
	ck_assert_int_eq(sm_open_memory(buf, sizeof(buf), SM_RDWR, &m), 0);
	ck_assert_int_eq(sm_map_write(m, 10, 100, 0, &w), 0);
	ck_assert_int_eq(sm_put_u64_be(w, 0, 0x0102030405060708ull), 0);
	ck_assert_uint_eq(buf[10], 1);
	ck_assert_uint_eq(buf[17], 8);
	/* in-process range locks still apply */
	ck_assert_int_eq(sm_map_read(m, 50, 10, 0, &x), -EBUSY);
	ck_assert_int_eq(sm_map_read(m, 110, 10, 0, &r), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0); /* a no-op success */
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_int_eq(sm_put_u8(w, 50, 1), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 1);
	ck_assert_int_eq(sm_commit_many(&w, 1, 0), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	/* SM_ASYNC too: the buffer is the storage, so either call marks clean */
	ck_assert_int_eq(sm_put_u8(w, 51, 1), 0);
	ck_assert_int_eq(sm_commit(w, SM_ASYNC), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_int_eq(sm_put_u8(w, 52, 1), 0);
	ck_assert_int_eq(sm_commit_many(&w, 1, SM_ASYNC), 0);
	ck_assert_int_eq(sm_dirty_pages(w), 0);
	ck_assert_int_eq(sm_map_read(m, 3 * PG - 1, 2, 0, &x), -ERANGE);
	ck_assert_int_eq(sm_map_write(m, 3 * PG, 1, SM_EXTEND, &x), -ERANGE);
	ck_assert_int_eq(sm_map_write(m, 0, 1, SM_BUFFERED, &x), -ENOTSUP);
	ck_assert_int_eq(sm_get_u64(r, 2, &v), 0);
	sm_release(w);
	sm_release(r);
	ck_assert_int_eq(sm_close(m), 0);
	ck_assert_uint_eq(buf[10], 1); /* the buffer is the caller's */

	ck_assert_int_eq(sm_open_memory(buf, sizeof(buf), SM_RDONLY, &ro), 0);
	ck_assert_int_eq(sm_map_write(ro, 0, 1, 0, &x), -EBADF);
	ck_assert_int_eq(sm_close(ro), 0);
}
END_TEST

START_TEST(populate_prefaults)
{
	const char *p = tu_tmpfile(64 * PG);
	sm_file *f = open_rw(p);
	unsigned char vec[64];
	sm_slice *r;
	void *ptr;

	/* drop the file's pages from the cache first, as far as we can */
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	ck_assert_int_eq(sm_map_read(f, 0, 64 * PG, SM_POPULATE, &r), 0);
	ck_assert_int_eq(sm_unsafe_ptr(r, &ptr), 0);
	ck_assert_int_eq(mincore(ptr, 64 * PG, vec), 0);
	for (int i = 0; i < 64; i++)
		ck_assert_msg(vec[i] & 1, "page %d not resident after SM_POPULATE", i);
	sm_release(r);
	sm_close(f);
}
END_TEST

static Suite *commit_suite(void)
{
	Suite *s = suite_create("commit");
	TCase *tc;

	tc = tcase_create("buffered");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, buffered_reaches_file_only_at_commit);
	tcase_add_test(tc, abort_drops_buffered_changes);
	tcase_add_test(tc, buffered_pwrite_eio_then_retry);
	tcase_add_test(tc, buffered_pwrite_enospc_then_retry);
	tcase_add_test(tc, buffered_fdatasync_eio_then_retry);
	tcase_add_test(tc, buffered_fdatasync_enospc_then_retry);
	tcase_add_test(tc, async_buffered_commit);
	tcase_add_test(tc, buffered_truncated_commit_is_enxio);
	tcase_add_test(tc, commit_many_flushes_each_file_once);
	tcase_add_test(tc, sub_commit_keeps_parent_changes_commit);
	tcase_add_test(tc, sub_commit_keeps_parent_changes_many);
	tcase_add_test(tc, sub_abort_keeps_parent_changes);
	tcase_add_test(tc, abort_retries_eintr_and_short_reads);
	suite_add_tcase(s, tc);

	tc = tcase_create("views");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, sub_outlives_parent_and_crosses_threads);
	tcase_add_test(tc, downgrade_write_to_read);
	tcase_add_test(tc, sub_during_downgrade_is_read_only);
	tcase_add_test(tc, sub_commit_races_parent_writes);
	tcase_add_test(tc, memory_file_same_api);
	tcase_add_test(tc, populate_prefaults);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(commit_suite());
}
