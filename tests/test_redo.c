/* SPDX-License-Identifier: MIT */
/*
 * test_redo.c - buffered slices bound to log records: sm_slice_set_lsn,
 * sm_redo_lsn, sm_redo_done.  The write-ahead order of a bound commit,
 * observed at the syscall seam (every pwrite and fdatasync, per file); a
 * failed log flush failing the commit with the data file untouched;
 * bindings held until synced; trim stopping below held bindings; and the
 * same across processes: a live binder, a SIGKILLed one (held, reported,
 * cleared by sm_redo_done only), and after the lock table file is deleted;
 * binds racing trims in another process.
 */
#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "safemap-internal.h"
#include "testutil.h"

#define PAGE 4096
#define DATA_LEN (64 * PAGE)

static char dir[64], dpath[128], lpath[128];

static void paths(void)
{
	strcpy(dir, "/tmp/sm-redo-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(dpath, sizeof(dpath), "%s/data", dir);
	snprintf(lpath, sizeof(lpath), "%s/log", dir);
}

static void unpaths(void)
{
	char p[160];

	snprintf(p, sizeof(p), "%s.smlock", dpath);
	unlink(p);
	snprintf(p, sizeof(p), "%s.smlock", lpath);
	unlink(p);
	unlink(dpath);
	unlink(lpath);
	rmdir(dir);
}

static void open_both(sm_file **f, sm_log **l)
{
	sm_options o = { .size = sizeof(o), .create_size = DATA_LEN };

	ck_assert_int_eq(tu_open(dpath, SM_RDWR | SM_CREATE, &o, f), 0);
	ck_assert_int_eq(sm_log_open(lpath, SM_RDWR | SM_CREATE, NULL, l), 0);
}

static uint64_t append(sm_log *l, unsigned v)
{
	unsigned char rec[24];
	uint64_t lsn;

	memset(rec, (int)v, sizeof(rec));
	ck_assert_int_eq(sm_log_append(l, rec, sizeof(rec), &lsn), 0);
	return lsn;
}

static uint64_t committed(sm_log *l)
{
	uint64_t c;

	ck_assert_int_eq(smlog_slot_read(l, SLOT_COMMITTED, &c), 0);
	return c;
}

/* The first retained record, as an iterator from 0 sees it. */
static uint64_t first_retained(sm_log *l)
{
	sm_log_iter *it;
	sm_slice *r;
	uint64_t lsn = 0;
	int rc;

	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	rc = sm_log_iter_next(it, &r, &lsn);
	ck_assert_int_ge(rc, 0);
	if (rc == 1)
		sm_release(r);
	else
		lsn = committed(l);
	sm_log_iter_close(it);
	return lsn;
}

/* A buffered write slice of page p, byte 0 set to v. */
static sm_slice *dirty_page(sm_file *f, unsigned p, unsigned v)
{
	sm_slice *s;

	ck_assert_int_eq(sm_map_write(f, (uint64_t)p * PAGE, PAGE, SM_BUFFERED, &s), 0);
	ck_assert_int_eq(sm_put_u8(s, 0, (uint8_t)v), 0);
	return s;
}

static unsigned char file_byte(const char *path, off_t off)
{
	unsigned char b = 0xee;
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &b, 1, off), 1);
	close(fd);
	return b;
}

/* --- the syscall seam: what was written and flushed, in order ----------- */
#define EV_MAX 256
static struct ev {
	char op; /* 'w' pwrite, 's' fdatasync */
	int fd;
} evs[EV_MAX];
static int nev, fail_sync_fd = -1;
static struct sm_sys real;

static ssize_t rec_pwrite(int fd, const void *b, size_t n, off_t off)
{
	if (nev < EV_MAX)
		evs[nev++] = (struct ev){ 'w', fd };
	return real.pwrite(fd, b, n, off);
}

static int rec_fdatasync(int fd)
{
	if (nev < EV_MAX)
		evs[nev++] = (struct ev){ 's', fd };
	if (fd == fail_sync_fd) {
		errno = EIO;
		return -1;
	}
	return real.fdatasync(fd);
}

static void seam_on(void)
{
	real = sm_sys;
	nev = 0;
	sm_sys.pwrite = rec_pwrite;
	sm_sys.fdatasync = rec_fdatasync;
}

static void seam_off(void)
{
	sm_sys_reset();
	fail_sync_fd = -1;
}

/* Index of the first event (op, fd) at or after from, or -1. */
static int ev_find(char op, int fd, int from)
{
	for (int i = from; i < nev; i++)
		if (evs[i].op == op && evs[i].fd == fd)
			return i;
	return -1;
}

/* The data file's first page write comes after a flush of the log. */
static void assert_log_first(sm_log *l, sm_file *f)
{
	int w = ev_find('w', f->fd, 0), s = ev_find('s', l->fd, 0);

	ck_assert_int_ge(w, 0);
	ck_assert_msg(s >= 0 && s < w, "data pwrite (event %d) before the log's flush (event %d)",
		      w, s);
}

START_TEST(test_write_ahead_order)
{
	sm_file *f;
	sm_log *l;
	sm_slice *s, *v[2];
	uint64_t lsn;

	paths();
	open_both(&f, &l);
	for (int flags = 0; flags <= 2; flags++) {
		/* sm_commit SM_SYNC, SM_ASYNC, then sm_commit_many */
		s = dirty_page(f, 1, 10 + (unsigned)flags);
		lsn = append(l, 1);
		ck_assert_int_eq(sm_slice_set_lsn(s, l, lsn), 0);
		ck_assert_uint_lt(committed(l), lsn + 1); /* not durable yet */
		seam_on();
		if (flags == 2) {
			v[0] = s;
			ck_assert_int_eq(sm_commit_many(v, 1, 0), 0);
		} else {
			ck_assert_int_eq(sm_commit(s, flags == 1 ? SM_ASYNC : 0), 0);
		}
		seam_off();
		assert_log_first(l, f);
		ck_assert_uint_gt(committed(l), lsn); /* published too */
		if (flags == 1)
			ck_assert_int_eq(sm_commit(s, 0), 0);
		ck_assert_int_eq(sm_release(s), 0);
	}
	/* A record committed before the bind: the binding itself (in the
	 * log's header) must be durable before the page, so the log is
	 * flushed again. */
	s = dirty_page(f, 4, 4);
	lsn = append(l, 4);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, lsn), 0);
	seam_on();
	ck_assert_int_eq(sm_commit(s, 0), 0);
	seam_off();
	assert_log_first(l, f);
	ck_assert_int_eq(sm_release(s), 0);
	/* Two slices, two records, one sm_commit_many: the log first. */
	v[0] = dirty_page(f, 2, 1);
	v[1] = dirty_page(f, 3, 1);
	ck_assert_int_eq(sm_slice_set_lsn(v[0], l, append(l, 2)), 0);
	ck_assert_int_eq(sm_slice_set_lsn(v[1], l, append(l, 3)), 0);
	seam_on();
	ck_assert_int_eq(sm_commit_many(v, 2, 0), 0);
	seam_off();
	assert_log_first(l, f);
	ck_assert_int_eq(sm_release(v[0]), 0);
	ck_assert_int_eq(sm_release(v[1]), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* The log's flush fails: the commit fails, nothing reaches the data file,
 * the slice stays dirty; an unbound slice of the same file still commits. */
START_TEST(test_log_eio)
{
	sm_file *f;
	sm_log *l;
	sm_slice *s, *u, *v[1];

	paths();
	open_both(&f, &l);
	s = dirty_page(f, 4, 0x5a);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, append(l, 9)), 0);
	seam_on();
	fail_sync_fd = l->fd;
	ck_assert_int_eq(sm_commit(s, 0), -EIO);
	ck_assert_int_eq(ev_find('w', f->fd, 0), -1);
	v[0] = s;
	ck_assert_int_eq(sm_commit_many(v, 1, 0), -EIO);
	ck_assert_int_eq(sm_commit(s, SM_ASYNC), -EIO);
	ck_assert_int_eq(ev_find('w', f->fd, 0), -1); /* no page written */
	seam_off();
	ck_assert_int_eq(file_byte(dpath, 4 * PAGE), 0);
	ck_assert_int_eq(sm_dirty_pages(s), 1);
	/* the binding is still held */
	ck_assert_int_eq(sm_log_close(l), -EBUSY);
	u = dirty_page(f, 5, 0x77);
	ck_assert_int_eq(sm_commit(u, 0), 0);
	ck_assert_int_eq(file_byte(dpath, 5 * PAGE), 0x77);
	ck_assert_int_eq(sm_release(u), 0);
	ck_assert_int_eq(sm_release(s), 0); /* dirty bound slice: dropped */
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

START_TEST(test_bind_errors)
{
	sm_file *f, *m;
	sm_log *l, *ro;
	sm_slice *s, *d, *r, *t;
	uint64_t a, b, c, x;
	static unsigned char mem[PAGE];
	sm_options nt = { .size = sizeof(nt), .flags = SM_OPT_NO_TABLE };
	sm_file *fn;

	paths();
	open_both(&f, &l);
	a = append(l, 1);
	b = append(l, 2);
	c = append(l, 3);
	ck_assert_int_eq(sm_log_commit(l), 0);
	s = dirty_page(f, 0, 1);
	ck_assert_int_eq(sm_map_write(f, PAGE, PAGE, 0, &d), 0);
	ck_assert_int_eq(sm_map_read(f, 2 * PAGE, PAGE, 0, &r), 0);
	ck_assert_int_eq(sm_slice_set_lsn(NULL, l, a), -EINVAL);
	ck_assert_int_eq(sm_slice_set_lsn(s, NULL, a), -EINVAL);
	ck_assert_int_eq(sm_slice_set_lsn(d, l, a), -EINVAL); /* direct */
	ck_assert_int_eq(sm_slice_set_lsn(r, l, a), -EINVAL); /* read */
	ck_assert_int_eq(sm_slice_set_lsn(s, l, committed(l)), -EINVAL); /* the tail */
	ck_assert_int_eq(sm_slice_set_lsn(s, l, c + 4096), -EINVAL);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a + 4), -EINVAL);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, 8), -EINVAL);
	ck_assert_int_eq(sm_log_open(lpath, SM_RDONLY, NULL, &ro), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, ro, a), -EBADF);
	ck_assert_int_eq(sm_log_trim(l, b), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), -ESTALE); /* trimmed */
	ck_assert_int_eq(sm_dirty_pages(s), 1);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, b), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, ro, c), -EBADF);
	/* another handle of the same log: one handle per slice */
	{
		sm_log *l2;
		ck_assert_int_eq(sm_log_open(lpath, SM_RDWR, NULL, &l2), 0);
		ck_assert_int_eq(sm_slice_set_lsn(s, l2, c), -EINVAL);
		ck_assert_int_eq(sm_log_close(l2), 0);
	}
	/* redo point: -ENOTSUP without a table; a bound record below the tail */
	ck_assert_int_eq(sm_open_memory(mem, sizeof(mem), SM_RDWR, &m), 0);
	ck_assert_int_eq(sm_redo_lsn(m, l, &x), -ENOTSUP);
	ck_assert_int_eq(sm_redo_done(m, l, c), -ENOTSUP);
	ck_assert_int_eq(sm_close(m), 0);
	{
		char p2[160];
		snprintf(p2, sizeof(p2), "%s/other", dir);
		nt.create_size = PAGE;
		ck_assert_int_eq(sm_open(p2, SM_RDWR | SM_CREATE, &nt, &fn), 0);
		ck_assert_int_eq(sm_redo_lsn(fn, l, &x), -ENOTSUP);
		ck_assert_int_eq(sm_redo_done(fn, l, c), -ENOTSUP);
		ck_assert_int_eq(sm_close(fn), 0);
		unlink(p2);
	}
	ck_assert_int_eq(sm_redo_lsn(f, l, NULL), -EINVAL);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, b);
	ck_assert_int_eq(sm_redo_lsn(f, ro, &x), 0); /* any handle sees it */
	ck_assert_uint_eq(x, b);
	ck_assert_int_eq(sm_redo_done(f, ro, c), -EBADF);
	ck_assert_int_eq(sm_redo_done(f, l, c + 4), -EINVAL);
	ck_assert_int_eq(sm_redo_done(f, l, committed(l) + 8), -EINVAL);
	ck_assert_int_eq(sm_redo_done(f, l, a), -EINVAL);
	/* a live binding is never cleared by sm_redo_done */
	ck_assert_int_eq(sm_redo_done(f, l, committed(l)), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, b);
	/* a second buffered slice keeps the area entry: the lowest first */
	t = dirty_page(f, 3, 3);
	ck_assert_int_eq(sm_slice_set_lsn(t, l, c), 0);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, c);
	ck_assert_int_eq(sm_abort(t), 0); /* clean: dropped */
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	sm_release(t);
	sm_release(s);
	sm_release(d);
	sm_release(r);
	ck_assert_int_eq(sm_log_close(ro), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* Held until synced: the redo point and the trim stop at the first bound
 * record until an SM_SYNC commit; after SM_ASYNC, until a later flush of
 * the file, also once the slice is released. */
START_TEST(test_held_until_synced)
{
	sm_file *f;
	sm_log *l;
	sm_slice *s, *u;
	uint64_t a, b, c, x;

	paths();
	open_both(&f, &l);
	append(l, 0);
	s = dirty_page(f, 0, 1);
	a = append(l, 1);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), 0);
	ck_assert_int_eq(sm_put_u8(s, 1, 2), 0);
	b = append(l, 2);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, b), 0); /* first stays a */
	ck_assert_int_eq(sm_log_commit(l), 0);
	c = committed(l);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_log_trim(l, c), 0);
	ck_assert_uint_eq(first_retained(l), a); /* stopped below the binding */
	ck_assert_int_eq(sm_commit(s, SM_ASYNC), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_release(s), 0); /* written, not flushed: still held */
	ck_assert_int_eq(sm_log_trim(l, c), 0);
	ck_assert_uint_eq(first_retained(l), a);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	u = dirty_page(f, 7, 7); /* any SM_SYNC commit of the file flushes it */
	ck_assert_int_eq(sm_commit(u, 0), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, c);
	ck_assert_int_eq(sm_log_trim(l, c), 0);
	ck_assert_uint_eq(first_retained(l), c);
	ck_assert_int_eq(file_byte(dpath, 0), 1);
	ck_assert_int_eq(file_byte(dpath, 1), 2);
	/* again, flushed by an SM_SYNC commit that has nothing to write */
	s = dirty_page(f, 1, 5);
	a = append(l, 5);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), 0);
	ck_assert_int_eq(sm_commit(s, SM_ASYNC), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_map_write(f, 9 * PAGE, PAGE, SM_BUFFERED, &s), 0);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	c = committed(l);
	/* released dirty, never written: dropped (its records describe it) */
	s = dirty_page(f, 2, 9);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, append(l, 3)), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_lt(x, committed(l) + 1);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	ck_assert_int_eq(file_byte(dpath, 2 * PAGE), 0);
	sm_release(u);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* Many bound slices of one file through one handle, committed in a
 * shuffled order (and one bound lower later): the redo point is always the
 * lowest first LSN still held. */
START_TEST(test_many_bindings)
{
	enum { N = 14 };
	sm_slice *s[N];
	uint64_t first[N], x, lo;
	unsigned order[N], seed = 7;
	sm_file *f;
	sm_log *l;

	paths();
	open_both(&f, &l);
	for (unsigned i = 0; i < N; i++) {
		s[i] = dirty_page(f, i, i + 1);
		first[i] = append(l, i);
		ck_assert_int_eq(sm_slice_set_lsn(s[i], l, first[i]), 0);
		order[i] = i;
	}
	/* slice 9 also describes record 0's change: bound lower */
	ck_assert_int_eq(sm_slice_set_lsn(s[9], l, first[0]), 0);
	first[9] = first[0];
	for (unsigned i = N - 1; i > 0; i--) {
		unsigned j = (unsigned)rand_r(&seed) % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (unsigned k = 0; k < N; k++) {
		ck_assert_int_eq(sm_commit(s[order[k]], 0), 0);
		ck_assert_int_eq(sm_release(s[order[k]]), 0);
		s[order[k]] = NULL;
		lo = committed(l);
		for (unsigned i = 0; i < N; i++)
			if (s[i] && first[i] < lo)
				lo = first[i];
		ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
		ck_assert_uint_eq(x, lo);
	}
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* A trim that has announced its target (as a trimmer does before it reads
 * the bindings, here one stopped at that moment): a bind below the target
 * fails -ESTALE, since the trim may not have seen it; at or above, it holds. */
START_TEST(test_bind_sees_trim_target)
{
	sm_file *f;
	sm_log *l;
	sm_slice *s;
	uint64_t a, b, x;
	uint64_t *target;

	paths();
	open_both(&f, &l);
	a = append(l, 1);
	b = append(l, 2);
	ck_assert_int_eq(sm_log_commit(l), 0);
	target = (uint64_t *)(void *)(l->hdr->v.base + WORD_TRIMMING);
	__atomic_store_n(target, htole64(b), __ATOMIC_SEQ_CST);
	s = dirty_page(f, 0, 1);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), -ESTALE);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l)); /* nothing left held */
	ck_assert_int_eq(sm_slice_set_lsn(s, l, b), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), -ESTALE); /* lowering it too */
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, b);
	__atomic_store_n(target, 0, __ATOMIC_SEQ_CST);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	sm_release(s);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* --- across processes ----------------------------------------------------- */

/* A binder: appends two records, binds a dirty page to both, commits the
 * log (acknowledged), reports the first LSN, then waits for a line and
 * ("sync") commits the slice, ("odd") leaves its entry's seq odd, or is
 * killed. */
static int binder(void *arg, int in, int out)
{
	unsigned page = (unsigned)(uintptr_t)arg;
	char line[32];
	sm_file *f;
	sm_log *l;
	sm_slice *s;
	uint64_t a, b;

	if (tu_open(dpath, SM_RDWR, NULL, &f) < 0 || sm_log_open(lpath, SM_RDWR, NULL, &l) < 0)
		return 1;
	if (sm_map_write(f, (uint64_t)page * PAGE, PAGE, SM_BUFFERED, &s) < 0)
		return 2;
	if (sm_put_u8(s, 0, 0xab) < 0)
		return 2;
	if (sm_log_append(l, "binder-1", 8, &a) < 0 || sm_slice_set_lsn(s, l, a) < 0)
		return 3;
	if (sm_put_u8(s, 1, 0xcd) < 0)
		return 3;
	if (sm_log_append(l, "binder-2", 8, &b) < 0 || sm_slice_set_lsn(s, l, b) < 0 ||
	    sm_log_commit(l) < 0)
		return 4;
	tu_send(out, "%llu %llu", (unsigned long long)a, (unsigned long long)b);
	if (!tu_recv(in, line, sizeof(line)))
		return 0;
	if (strcmp(line, "sync") == 0) {
		if (sm_commit(s, 0) < 0)
			return 5;
		tu_send(out, "0");
		(void)tu_recv(in, line, sizeof(line));
	} else if (strcmp(line, "odd") == 0) {
		/* as if killed in the middle of a tag change of the slice: its
		 * entry's seq stays odd */
		__atomic_fetch_add(&f->table->slots[s->h->slot].seq, 1, __ATOMIC_SEQ_CST);
		tu_send(out, "0");
		(void)tu_recv(in, line, sizeof(line));
	}
	sm_release(s);
	sm_log_close(l);
	sm_close(f);
	return 0;
}

static void spawn_binder(struct tu_child *c, unsigned page, uint64_t *a, uint64_t *b)
{
	char line[64];
	unsigned long long x, y;

	tu_spawn(c, binder, (void *)(uintptr_t)page);
	ck_assert(tu_recv(c->from, line, sizeof(line)));
	ck_assert_int_eq(sscanf(line, "%llu %llu", &x, &y), 2);
	*a = x;
	*b = y;
}

START_TEST(test_procs_live_and_synced)
{
	struct tu_child c;
	sm_file *f;
	sm_log *l;
	uint64_t a, b, x, pre;

	paths();
	open_both(&f, &l);
	pre = append(l, 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	spawn_binder(&c, 3, &a, &b);
	ck_assert_uint_gt(a, pre);
	for (int i = 0; i < 4; i++)
		append(l, 10);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_log_trim(l, committed(l)), 0);
	ck_assert_uint_eq(first_retained(l), a);
	ck_assert_int_eq(sm_redo_done(f, l, committed(l)), 0); /* alive: untouched */
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	tu_send(c.to, "sync");
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	ck_assert_int_eq(file_byte(dpath, 3 * PAGE), 0xab);
	ck_assert_int_eq(sm_log_trim(l, committed(l)), 0);
	ck_assert_uint_eq(first_retained(l), committed(l));
	tu_send(c.to, "bye");
	ck_assert_int_eq(tu_wait(&c), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* A SIGKILLed binder: its binding stays held (trim stops below it, the
 * redo point reports it), also after the lock table file is deleted and
 * every handle reopened; sm_redo_done clears it, once a sm_redo_lsn saw
 * its owner dead; a straddling one counts from the redo_done LSN. */
START_TEST(test_procs_killed)
{
	struct tu_child c, c2;
	sm_file *f;
	sm_log *l;
	uint64_t a, b, a2, b2, x, mid;
	char p[160];

	paths();
	open_both(&f, &l);
	append(l, 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	spawn_binder(&c, 5, &a, &b);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	spawn_binder(&c2, 6, &a2, &b2);
	kill(c2.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c2), 128 + SIGKILL);
	ck_assert_uint_gt(a2, b);
	append(l, 1);
	ck_assert_int_eq(sm_log_commit(l), 0);
	/* the table goes; every handle is reopened */
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	snprintf(p, sizeof(p), "%s.smlock", dpath);
	ck_assert_int_eq(unlink(p), 0);
	open_both(&f, &l);
	ck_assert_int_eq(sm_redo_done(f, l, committed(l)), 0); /* no sm_redo_lsn yet: nothing */
	ck_assert_int_eq(sm_log_trim(l, committed(l)), 0);
	ck_assert_uint_eq(first_retained(l), a);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(file_byte(dpath, 5 * PAGE), 0); /* its page never written */
	/* recovery replayed up to the second binder's second record: the
	 * first binder's binding ends there, the second's straddles it */
	mid = b2;
	ck_assert_int_eq(sm_redo_done(f, l, mid), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, mid);
	ck_assert_int_eq(sm_log_trim(l, committed(l)), 0);
	ck_assert_uint_eq(first_retained(l), mid);
	ck_assert_int_eq(sm_redo_done(f, l, committed(l)), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	ck_assert_int_eq(sm_log_trim(l, committed(l)), 0);
	ck_assert_uint_eq(first_retained(l), committed(l));
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* How many entries over page p are listed, and how many of them stale. */
static int stale_over(sm_file *f, unsigned p, int *stale)
{
	sm_holder h[8];
	int n = sm_holders(f, (uint64_t)p * PAGE, PAGE, h, 8);

	ck_assert_int_ge(n, 0);
	*stale = 0;
	for (int i = 0; i < n && i < 8; i++)
		*stale += h[i].state == SM_STALE;
	return n;
}

/* A SIGKILLed binder's dirty bound page stays held, as a stale entry,
 * against every slice of anybody (read, write, a new opener that takes
 * its owner number, after a reap; sm_test says so too) but an SM_RECOVER
 * slice of a caller that asked sm_redo_lsn about that log (not another);
 * sm_redo_done frees it.  Other pages are free.  Loop 1: the binder died
 * in the middle of a tag change (its entry's seq odd). */
START_TEST(test_dead_binder_fenced)
{
	struct tu_child c;
	sm_file *f, *g;
	sm_log *l, *l2;
	sm_slice *s;
	uint64_t a, b, x;
	int stale;
	char l2path[160];

	paths();
	open_both(&f, &l);
	spawn_binder(&c, 5, &a, &b);
	if (_i == 1) {
		tu_send(c.to, "odd");
		ck_assert_int_eq(tu_recv_int(c.from), 0);
	}
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_eq(sm_map_read(f, 5 * PAGE, PAGE, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_test(f, 5 * PAGE, PAGE, SM_LOCK_READ), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 4 * PAGE, 2 * PAGE, SM_BUFFERED, &s), -EBUSY);
	ck_assert_int_eq(stale_over(f, 5, &stale), 1);
	ck_assert_int_eq(stale, 1);
	ck_assert_int_eq(sm_map_read(f, 6 * PAGE, PAGE, 0, &s), 0); /* beside it: free */
	ck_assert_int_eq(sm_release(s), 0);
	/* no reaping frees it: the lazy reaper, a new opener taking the dead
	 * owner's number */
	ck_assert_int_ge(smt_reap(f->table, false), 0);
	ck_assert_int_eq(tu_open(dpath, SM_RDWR, NULL, &g), 0);
	ck_assert_int_eq(sm_map_read(g, 5 * PAGE, PAGE, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_map_read(f, 5 * PAGE, PAGE, 0, &s), -EBUSY);
	ck_assert_int_eq(stale_over(g, 5, &stale), 1);
	ck_assert_int_eq(stale, 1);
	/* the recovery pass: SM_RECOVER passes once sm_redo_lsn was asked
	 * about the binder's log, not about another */
	ck_assert_int_eq(sm_map_write(f, 5 * PAGE, PAGE, SM_BUFFERED | SM_RECOVER, &s), -EBUSY);
	snprintf(l2path, sizeof(l2path), "%s/log2", dir);
	ck_assert_int_eq(sm_log_open(l2path, SM_RDWR | SM_CREATE, NULL, &l2), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l2, &x), 0);
	ck_assert_int_eq(sm_map_write(f, 5 * PAGE, PAGE, SM_BUFFERED | SM_RECOVER, &s), -EBUSY);
	ck_assert_int_eq(sm_log_close(l2), 0);
	unlink(l2path);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_map_write(f, 5 * PAGE, PAGE, SM_BUFFERED | SM_RECOVER, &s), 0);
	ck_assert_int_eq(sm_put_u8(s, 0, 0xab), 0);
	ck_assert_int_eq(sm_put_u8(s, 1, 0xcd), 0);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_map_read(g, 5 * PAGE, PAGE, 0, &s), -EBUSY); /* not redone yet */
	ck_assert_int_eq(sm_redo_done(f, l, committed(l)), 0);
	ck_assert_int_eq(sm_map_read(g, 5 * PAGE, PAGE, 0, &s), 0);
	uint8_t v;
	ck_assert_int_eq(sm_get_u8(s, 1, &v), 0);
	ck_assert_int_eq(v, 0xcd);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(stale_over(f, 5, &stale), 0);
	ck_assert_int_eq(sm_close(g), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* A table rebuilt after a corruption (nobody attached) keeps a dead
 * binder's bound page held; recovery frees it. */
START_TEST(test_rebuild_keeps_the_fence)
{
	struct tu_child c;
	sm_file *f;
	sm_log *l;
	sm_slice *s;
	uint64_t a, b, x;
	char tpath[160];
	int fd;

	paths();
	open_both(&f, &l);
	ck_assert_int_eq(sm_close(f), 0);
	spawn_binder(&c, 5, &a, &b);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	snprintf(tpath, sizeof(tpath), "%s.smlock", dpath);
	ck_assert_int_ge(fd = open(tpath, O_WRONLY | O_CLOEXEC), 0);
	ck_assert_int_eq(pwrite(fd, "garbage!", 8, 0), 8); /* the magic: rebuilt at the next open */
	close(fd);
	ck_assert_int_eq(tu_open(dpath, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_read(f, 5 * PAGE, PAGE, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_map_read(f, 6 * PAGE, PAGE, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_map_write(f, 5 * PAGE, PAGE, SM_BUFFERED | SM_RECOVER, &s), 0);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_redo_done(f, l, committed(l)), 0);
	ck_assert_int_eq(sm_map_read(f, 5 * PAGE, PAGE, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* lockctl reap leaves a dead binder's bound page held; reap --bound (for a
 * log that was lost) frees it, and says what it dropped. */
START_TEST(test_lockctl_reap_bound)
{
	static char lockctl[4096], cmd[8192], out[512];
	struct tu_child c;
	sm_file *f;
	sm_log *l;
	sm_slice *s;
	uint64_t a, b;
	FILE *p;

	tu_sibling("../tools/lockctl", lockctl, sizeof(lockctl));
	paths();
	open_both(&f, &l);
	spawn_binder(&c, 5, &a, &b);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	snprintf(cmd, sizeof(cmd), "'%s' reap '%s' 2>&1", lockctl, dpath);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(sm_map_read(f, 5 * PAGE, PAGE, 0, &s), -EBUSY);
	/* lockctl check sees it too, for readers as well (exit 1: held) */
	snprintf(cmd, sizeof(cmd), "'%s' check '%s' %d %d r >/dev/null 2>&1", lockctl, dpath, 5 * PAGE + 10, 10);
	int st = system(cmd);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "lockctl check: status 0x%x", (unsigned)st);
	snprintf(cmd, sizeof(cmd), "'%s' check '%s' %d %d r >/dev/null 2>&1", lockctl, dpath, 6 * PAGE, 10);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "'%s' reap --bound '%s' 2>&1", lockctl, dpath);
	ck_assert_ptr_nonnull(p = popen(cmd, "r"));
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	ck_assert_int_eq(pclose(p), 0);
	ck_assert_msg(strstr(out, "dropped 1 bound entry") != NULL, "%s", out);
	ck_assert_int_eq(sm_map_read(f, 5 * PAGE, PAGE, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* The bindings area: 60 binders that synced (their entries idle) and were
 * then killed leave nothing held and nothing claimed; 48 killed while
 * holding fill it (-ENOSPC) until a recovery pass clears them. */
START_TEST(test_area_reuse_and_full)
{
	struct tu_child c;
	sm_file *f;
	sm_log *l;
	sm_slice *s;
	uint64_t a, b, x;

	paths();
	open_both(&f, &l);
	for (int i = 0; i < 60; i++) {
		spawn_binder(&c, 1, &a, &b);
		tu_send(c.to, "sync");
		ck_assert_int_eq(tu_recv_int(c.from), 0);
		kill(c.pid, SIGKILL);
		ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	}
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	for (int i = 0; i < 48; i++) {
		/* each its own page: a dead binder's page stays fenced */
		spawn_binder(&c, 8 + (unsigned)i, &a, &b);
		kill(c.pid, SIGKILL);
		ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	}
	s = dirty_page(f, 3, 3);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, append(l, 3)), -ENOSPC);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_lt(x, committed(l));
	a = append(l, 4);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_redo_done(f, l, a), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, a), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, a);
	ck_assert_int_eq(sm_commit(s, 0), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* A trimmer process trims to the committed tail as fast as it can while
 * this process appends, commits and binds the record just committed: every
 * bind either fails -ESTALE or holds (the record stays retained until the
 * slice is synced). */
static int trimmer(void *arg, int in, int out)
{
	sm_log *l;
	uint64_t c;

	(void)arg;
	(void)in;
	if (sm_log_open(lpath, SM_RDWR, NULL, &l) < 0)
		return 1;
	tu_send(out, "0");
	for (;;) {
		if (smlog_slot_read(l, SLOT_COMMITTED, &c) < 0 || sm_log_trim(l, c) < 0)
			return 2;
	}
}

START_TEST(test_bind_races_trim)
{
	struct tu_child c;
	sm_file *f;
	sm_log *l;
	sm_log_iter *it;
	int held = 0, stale = 0;

	paths();
	open_both(&f, &l);
	tu_spawn_ready(&c, trimmer, NULL);
	for (int i = 0; i < 400; i++) {
		sm_slice *s = dirty_page(f, (unsigned)i % 8, 1);
		uint64_t lsn = append(l, 1);
		int rc;
		ck_assert_int_eq(sm_log_commit(l), 0);
		rc = sm_slice_set_lsn(s, l, lsn);
		ck_assert(rc == 0 || rc == -ESTALE);
		if (rc == 0) {
			held++;
			/* held: the record is retained for as long as needed */
			append(l, 2);
			ck_assert_int_eq(sm_log_commit(l), 0);
			ck_assert_int_eq(sm_log_iter_open(l, lsn, &it), 0);
			sm_log_iter_close(it);
			ck_assert_int_eq(sm_commit(s, 0), 0);
		} else {
			stale++;
		}
		sm_release(s);
	}
	kill(c.pid, SIGKILL);
	tu_wait(&c);
	ck_assert_int_gt(held + stale, 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* Threads binding and committing their own pages through one log handle
 * while another process trims: nothing fails (but a bind's -ESTALE, when a
 * group commit and a trim got to the record first: then it is appended
 * again), and at the end nothing is held. */
struct tput {
	sm_file *f;
	sm_log *l;
	unsigned page;
	int err;
};

static void *thread_puts(void *arg)
{
	struct tput *t = arg;

	for (int i = 0; i < 150 && !t->err; i++) {
		sm_slice *s;
		uint64_t lsn;
		unsigned char rec[16] = { (unsigned char)t->page };
		if ((t->err = sm_map_write(t->f, (uint64_t)t->page * PAGE, PAGE, SM_BUFFERED, &s)) < 0)
			break;
		/* another thread's commit may commit the record, and the
		 * trimmer discard it, before the bind: append it again */
		do
			t->err = sm_log_append(t->l, rec, sizeof(rec), &lsn);
		while (t->err == 0 && (t->err = sm_slice_set_lsn(s, t->l, lsn)) == -ESTALE);
		if (t->err == 0 && (t->err = sm_put_u64_le(s, 0, lsn)) == 0)
			t->err = sm_commit(s, i % 3 == 0 ? SM_ASYNC : 0);
		if (t->err == 0 && i % 3 == 0)
			t->err = sm_commit(s, 0);
		if (sm_release(s) < 0 && !t->err)
			t->err = -EIO;
	}
	return NULL;
}

START_TEST(test_threads_bind)
{
	struct tu_child c;
	struct tput t[4];
	pthread_t th[4];
	sm_file *f;
	sm_log *l;
	uint64_t x;

	paths();
	open_both(&f, &l);
	tu_spawn_ready(&c, trimmer, NULL);
	for (unsigned i = 0; i < 4; i++) {
		t[i] = (struct tput){ f, l, i, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, thread_puts, &t[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
		ck_assert_int_eq(t[i].err, 0);
	}
	kill(c.pid, SIGKILL);
	tu_wait(&c);
	ck_assert_int_eq(sm_redo_lsn(f, l, &x), 0);
	ck_assert_uint_eq(x, committed(l));
	for (unsigned i = 0; i < 4; i++) {
		uint64_t v;
		int fd = open(dpath, O_RDONLY);
		ck_assert_int_eq(pread(fd, &v, 8, (off_t)i * PAGE), 8);
		close(fd);
		ck_assert_uint_gt(v, 0);
		ck_assert_uint_lt(v, committed(l));
	}
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unpaths();
}
END_TEST

/* examples/redo: puts, puts killed once their record is durable (before
 * the page is written), checkpoints, and the lock table deleted at random,
 * each a new process that recovers at open; every acknowledged put is read
 * back against this test's own record, and a checkpoint leaves nothing
 * retained. */
START_TEST(example_crash_recover)
{
	static char tool[4096], cmd[8192 + 256], out[256];
	char vals[40][16] = { { 0 } };
	unsigned seed = 31;
	sm_log *l;

	tu_sibling("../examples/redo", tool, sizeof(tool));
	paths();
	for (int round = 0; round < 60; round++) {
		unsigned k = (unsigned)rand_r(&seed) % 40, what = (unsigned)rand_r(&seed) % 8;
		int rc;
		if (what == 0) {
			snprintf(cmd, sizeof(cmd), "'%s' '%s' checkpoint", tool, dir);
			ck_assert_int_eq(tu_capture(out, sizeof(out), cmd), 0);
			ck_assert_int_eq(sm_log_open(lpath, SM_RDWR, NULL, &l), 0);
			ck_assert_uint_eq(first_retained(l), committed(l)); /* all trimmed */
			ck_assert_int_eq(sm_log_close(l), 0);
			continue;
		}
		if (what == 1) {
			snprintf(cmd, sizeof(cmd), "%s.smlock", dpath);
			unlink(cmd);
			continue;
		}
		snprintf(vals[k], sizeof(vals[k]), "v%d", round);
		snprintf(cmd, sizeof(cmd), "'%s' '%s' %s %u %s 2>&1", tool, dir,
			 what < 5 ? "crash" : "put", k, vals[k]);
		rc = tu_capture(out, sizeof(out), cmd);
		ck_assert_msg(rc == (what < 5 ? 128 + SIGKILL : 0), "%s: %d %s", cmd, rc, out);
	}
	for (unsigned k = 0; k < 40; k++) {
		snprintf(cmd, sizeof(cmd), "'%s' '%s' get %u", tool, dir, k);
		if (!vals[k][0]) {
			ck_assert_int_eq(tu_capture(out, sizeof(out), cmd), 1);
			continue;
		}
		ck_assert_int_eq(tu_capture(out, sizeof(out), cmd), 0);
		out[strcspn(out, "\n")] = 0;
		ck_assert_str_eq(out, vals[k]);
	}
	unpaths();
}
END_TEST

/* examples/redo, three putter processes at once on shared pages, one of
 * them SIGKILLed at a random moment and restarted (recovering while the
 * others put) again and again; then every key is read back against the
 * acknowledgements the putters printed: the last acknowledged value, or
 * the one put in flight when its putter was killed (durable but not yet
 * acknowledged), nothing older, nothing else. */
#define NPUT 3
#define KILLS 30

struct putter {
	struct tu_lines l;
	unsigned id, inc;
};

static long last_ack[NPUT][KILLS + NPUT + 1]; /* [id][incarnation]: last acked seq */
static char acked[30][40];                     /* [key]: last acked value */

static void putter_start(struct putter *p, const char *tool, unsigned id)
{
	char ids[16], incs[16];

	snprintf(ids, sizeof(ids), "%u", id);
	snprintf(incs, sizeof(incs), "%u", p->inc);
	p->id = id;
	tu_lines_exec(&p->l, (char *const[]){ (char *)tool, dir, "loop", ids, incs, "0", NULL });
}

/* An acknowledgement a putter printed. */
static void putter_line(char *line, void *arg)
{
	struct putter *p = arg;
	unsigned key, vid, vinc;
	long seq;

	ck_assert_int_eq(sscanf(line, "%u %u.%u.%ld", &key, &vid, &vinc, &seq), 4);
	ck_assert(key < 30 && vid == p->id && vinc == p->inc);
	snprintf(acked[key], sizeof(acked[key]), "%u.%u.%ld", vid, vinc, seq);
	last_ack[p->id][vinc] = seq;
}

static void putter_kill(struct putter *p, unsigned id)
{
	int st;

	kill(p->l.pid, SIGKILL);
	ck_assert_int_eq(waitpid(p->l.pid, &st, 0), p->l.pid);
	ck_assert_msg(WIFSIGNALED(st), "putter %u exited %d before the kill", id, WEXITSTATUS(st));
	tu_lines_read(&p->l, true, putter_line, p); /* the rest of what it printed */
	close(p->l.out);
}

START_TEST(example_concurrent_putters_killed)
{
	static char tool[4096], cmd[8192 + 256], out[256];
	struct putter p[NPUT];
	unsigned seed = 131, next_inc = NPUT;
	long nacks = 0;

	tu_sibling("../examples/redo", tool, sizeof(tool));
	paths();
	memset(last_ack, 0, sizeof(last_ack));
	memset(acked, 0, sizeof(acked));
	for (unsigned i = 0; i < NPUT; i++) {
		p[i].inc = i;
		putter_start(&p[i], tool, i);
	}
	for (int k = 0; k < KILLS; k++) {
		unsigned v = (unsigned)rand_r(&seed) % NPUT;
		usleep(2000 + (unsigned)rand_r(&seed) % 20000);
		for (unsigned i = 0; i < NPUT; i++)
			tu_lines_read(&p[i].l, false, putter_line, &p[i]);
		putter_kill(&p[v], v);
		p[v].inc = next_inc++;
		putter_start(&p[v], tool, v);
	}
	usleep(20000);
	for (unsigned i = 0; i < NPUT; i++)
		putter_kill(&p[i], i);
	for (unsigned i = 0; i < NPUT; i++)
		for (unsigned n = 0; n < next_inc; n++)
			nacks += last_ack[i][n];
	ck_assert_int_gt(nacks, 0); /* the putters got somewhere */
	if (getenv("SAFEMAP_TEST_VERBOSE"))
		printf("%ld puts acknowledged across %u incarnations\n", nacks, next_inc);
	for (unsigned key = 0; key < 30; key++) {
		unsigned vid, vinc;
		long seq;
		snprintf(cmd, sizeof(cmd), "'%s' '%s' get %u", tool, dir, key);
		if (tu_capture(out, sizeof(out), cmd) != 0) {
			ck_assert_msg(!acked[key][0], "key %u: acknowledged %s, now none", key,
				      acked[key]);
			continue;
		}
		out[strcspn(out, "\n")] = 0;
		ck_assert_int_eq(sscanf(out, "%u.%u.%ld", &vid, &vinc, &seq), 3);
		ck_assert_uint_eq(vid, key % 3);
		ck_assert(vinc < next_inc);
		if (strcmp(out, acked[key]) == 0)
			continue;
		/* not the last acknowledged value: the put in flight at its
		 * putter's kill, of this key, after that acknowledgement */
		ck_assert_msg(seq == last_ack[vid][vinc] + 1 && vid + 3 * (unsigned)(seq % 10) == key,
			      "key %u: %s, acknowledged %s", key, out, acked[key]);
		if (acked[key][0]) {
			unsigned aid, ainc;
			long aseq;
			ck_assert_int_eq(sscanf(acked[key], "%u.%u.%ld", &aid, &ainc, &aseq), 3);
			ck_assert_msg(vinc > ainc || (vinc == ainc && seq > aseq),
				      "key %u: %s older than acknowledged %s", key, out, acked[key]);
		}
	}
	unpaths();
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("redo");
	TCase *tc = tcase_create("redo");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_write_ahead_order);
	tcase_add_test(tc, test_log_eio);
	tcase_add_test(tc, test_bind_errors);
	tcase_add_test(tc, test_held_until_synced);
	tcase_add_test(tc, test_many_bindings);
	tcase_add_test(tc, test_bind_sees_trim_target);
	tcase_add_test(tc, test_procs_live_and_synced);
	tcase_add_test(tc, test_procs_killed);
	tcase_add_loop_test(tc, test_dead_binder_fenced, 0, 2);
	tcase_add_test(tc, test_lockctl_reap_bound);
	tcase_add_test(tc, test_rebuild_keeps_the_fence);
	tcase_add_test(tc, test_area_reuse_and_full);
	tcase_add_test(tc, test_bind_races_trim);
	tcase_add_test(tc, test_threads_bind);
	tcase_add_test(tc, example_crash_recover);
	tcase_add_test(tc, example_concurrent_putters_killed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
