/* SPDX-License-Identifier: MIT */
/*
 * test_log_trim.c - sm_log_trim: -EINVAL and -ESTALE cases (in this
 * process and another), disk space given back (allocated blocks measured),
 * never a changed byte under an iterator's window or a live record slice
 * (deferred, then given back by a later trim), reopen after trim, a log
 * from before trimming existed, SIGKILL before and after every system call
 * of a trim (nothing retained lost, nothing trimmed back), and trims
 * racing appenders and iterators in several processes.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"
#include "testutil.h"

#define HDR 4096

/* A record of writer w, number i: its length and bytes follow from (w, i). */
static size_t rec_len(unsigned w, unsigned i)
{
	static const size_t lens[] = { 1, 7, 8, 9, 100, 333, 4096, 5000 };
	return 8 + lens[(w * 7 + i) % 8];
}

static void rec_fill(unsigned char *b, unsigned w, unsigned i, size_t n)
{
	memcpy(b, &w, 4);
	memcpy(b + 4, &i, 4);
	for (size_t k = 8; k < n; k++)
		b[k] = (unsigned char)(w * 31 + i * 7 + k);
}

/* 1 with (w, i) if the n bytes at p are a whole record, else 0. */
static int rec_ok(const void *p, size_t n, unsigned *w, unsigned *i)
{
	unsigned char want[8 + 5000];

	if (n < 8 || n > sizeof(want))
		return 0;
	memcpy(w, p, 4);
	memcpy(i, (const char *)p + 4, 4);
	rec_fill(want, *w, *i, n);
	return n == rec_len(*w, *i) && memcmp(p, want, n) == 0;
}

static int slice_ok(sm_slice *s, unsigned *w, unsigned *i)
{
	unsigned char got[8 + 5000];
	size_t n = sm_length(s);

	return n <= sizeof(got) && sm_read(s, 0, got, n) == 0 && rec_ok(got, n, w, i);
}

static int append_one(sm_log *l, unsigned w, unsigned i, uint64_t *lsn)
{
	unsigned char buf[8 + 5000];
	size_t n = rec_len(w, i);

	rec_fill(buf, w, i, n);
	return sm_log_append(l, buf, n, lsn);
}

/* Walk from 0: count the records (each checked whole), and the first LSN. */
static int walk(sm_log *l, uint64_t *first)
{
	sm_log_iter *it;
	const void *p;
	size_t n;
	uint64_t lsn;
	unsigned w, i;
	int k = 0, rc;

	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	while ((rc = sm_log_iter_next_ptr(it, &p, &n, &lsn)) == 1) {
		ck_assert(rec_ok(p, n, &w, &i));
		if (k++ == 0 && first)
			*first = lsn;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	return k;
}

static uint64_t allocated(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

static uint64_t tail_of(const char *path)
{
	unsigned char b[8];
	uint64_t t;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, b, 8, 64), 8); /* the committed tail's slot */
	close(fd);
	memcpy(&t, b, 8);
	return t;
}

/* ---- -EINVAL, -ESTALE ---------------------------------------------------- */

static sm_log *parent_log;
static uint64_t lsns[40];

static int stale_reader(void *arg, int in, int out)
{
	const char *path = arg;
	sm_log *l;
	sm_log_iter *it;
	int a, b, c;

	(void)in;
	if (sm_log_open(path, SM_RDONLY, NULL, &l) < 0)
		return 10;
	a = sm_log_iter_open(l, lsns[3], &it);     /* trimmed */
	b = sm_log_iter_open(l, lsns[3] + 4, &it); /* trimmed (no boundary check) */
	c = sm_log_iter_open(l, 8, &it);           /* below the first-ever record */
	tu_send(out, "%d %d %d %d", a, b, c, sm_log_trim(l, lsns[30]));
	return sm_log_close(l) < 0 ? 11 : 0;
}

START_TEST(trim_einval_and_estale)
{
	const char *path = tu_tmpfile(0);
	sm_log_iter *it, *past, *ahead;
	struct tu_child c;
	const void *p;
	size_t n;
	uint64_t lsn, first, tail;
	unsigned w, i;
	char line[64], want[64];

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &parent_log), 0);
	for (unsigned k = 0; k < 40; k++)
		ck_assert_int_eq(append_one(parent_log, 1, k, &lsns[k]), 0);
	ck_assert_int_eq(sm_log_commit(parent_log), 0);
	ck_assert_int_eq(append_one(parent_log, 1, 40, &tail), 0); /* not committed */

	/* Not a record boundary; past the committed tail (an uncommitted record). */
	ck_assert_int_eq(sm_log_trim(parent_log, lsns[5] + 8), -EINVAL);
	ck_assert_int_eq(sm_log_trim(parent_log, lsns[5] + 4), -EINVAL);
	/* (tail itself is the committed tail: a valid trim point, kept for later) */
	ck_assert_int_eq(sm_log_trim(parent_log, tail + 8), -EINVAL);
	ck_assert_int_eq(sm_log_trim(parent_log, tail + 4096), -EINVAL);
	ck_assert_int_eq(sm_log_trim(NULL, lsns[1]), -EINVAL);
	ck_assert_int_eq(walk(parent_log, &first), 40); /* nothing happened */
	ck_assert_uint_eq(first, HDR);
	/* At or below the first retained record: nothing to do. */
	ck_assert_int_eq(sm_log_trim(parent_log, 0), 0);
	ck_assert_int_eq(sm_log_trim(parent_log, HDR), 0);
	ck_assert_int_eq(walk(parent_log, NULL), 40);

	/* it sits at record 6 (current record 5), past at record 20. */
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[5], &it), 0);
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &n, &lsn), 1);
	ck_assert_uint_eq(lsn, lsns[5]);
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[20], &past), 0);

	ck_assert_int_eq(sm_log_trim(parent_log, lsns[10]), 0);
	ck_assert_int_eq(walk(parent_log, &first), 30);
	ck_assert_uint_eq(first, lsns[10]);
	/* The iterator below the trim point: -ESTALE, on every call. */
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &n, &lsn), -ESTALE);
	ck_assert_int_eq(sm_log_iter_next(it, (sm_slice **)&p, &lsn), -ESTALE);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	/* The one past it goes on. */
	ck_assert_int_eq(sm_log_iter_next_ptr(past, &p, &n, &lsn), 1);
	ck_assert_uint_eq(lsn, lsns[20]);
	ck_assert(rec_ok(p, n, &w, &i) && i == 20);
	/* Opening below the trim point: -ESTALE whatever the offset; below the
	 * first-ever record: -EINVAL. */
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[3], &it), -ESTALE);
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[3] + 4, &it), -ESTALE);
	ck_assert_int_eq(sm_log_iter_open(parent_log, HDR, &it), -ESTALE);
	ck_assert_int_eq(sm_log_iter_open(parent_log, 8, &it), -EINVAL);
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[10] + 8, &it), -EINVAL);
	/* Trims at or below the trim point: 0, whatever they name. */
	ck_assert_int_eq(sm_log_trim(parent_log, lsns[4]), 0);
	ck_assert_int_eq(sm_log_trim(parent_log, lsns[4] + 4), 0);
	ck_assert_int_eq(sm_log_trim(parent_log, lsns[10]), 0);
	ck_assert_int_eq(walk(parent_log, NULL), 30);

	/* Another process sees the same; a read-only log cannot trim. */
	tu_spawn(&c, stale_reader, (void *)path);
	ck_assert(tu_recv(c.from, line, sizeof(line)));
	ck_assert_int_eq(tu_wait(&c), 0);
	snprintf(want, sizeof(want), "%d %d %d %d", -ESTALE, -ESTALE, -EINVAL, -EBADF);
	ck_assert_str_eq(line, want);

	/* Trim by another handle under an iterator of this one: -ESTALE. */
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[12], &ahead), 0);
	{
		sm_log *l2;
		ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l2), 0);
		ck_assert_int_eq(sm_log_trim(l2, lsns[15]), 0);
		ck_assert_int_eq(sm_log_close(l2), 0);
	}
	ck_assert_int_eq(sm_log_iter_next_ptr(ahead, &p, &n, &lsn), -ESTALE);
	ck_assert_int_eq(sm_log_iter_close(ahead), 0);
	ck_assert_int_eq(sm_log_iter_next_ptr(past, &p, &n, &lsn), 1);
	ck_assert_uint_eq(lsn, lsns[21]);
	ck_assert_int_eq(sm_log_iter_close(past), 0);

	/* Up to the committed tail: the log is empty, and goes on. */
	ck_assert_int_eq(sm_log_commit(parent_log), 0); /* record 40 */
	tail = tail_of(path);
	ck_assert_int_eq(sm_log_trim(parent_log, tail), 0);
	ck_assert_int_eq(walk(parent_log, NULL), 0);
	ck_assert_int_eq(sm_log_iter_open(parent_log, lsns[39], &it), -ESTALE);
	ck_assert_int_eq(append_one(parent_log, 1, 41, &lsn), 0);
	ck_assert_uint_eq(lsn, tail); /* LSNs never change */
	ck_assert_int_eq(sm_log_commit(parent_log), 0);
	ck_assert_int_eq(walk(parent_log, &first), 1);
	ck_assert_uint_eq(first, tail);
	ck_assert_int_eq(sm_log_close(parent_log), 0);
}
END_TEST

/* ---- space, deferral, reopen --------------------------------------------- */

#define NBIG 12000

START_TEST(trim_gives_space_back)
{
	const char *path = tu_tmpfile(0);
	static uint64_t at[NBIG];
	unsigned char frame[8];
	sm_log_iter *it;
	sm_slice *held;
	sm_log *l;
	const void *p;
	size_t n;
	uint64_t lsn, a0, a1, a2, a3, first;
	unsigned w, i;
	int fd;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	for (unsigned k = 0; k < NBIG; k++)
		ck_assert_int_eq(append_one(l, 2, k, &at[k]), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	a0 = allocated(path);
	ck_assert_uint_ge(a0, at[NBIG - 1]);

	/* An iterator whose window starts at record 4000 (its current one). */
	ck_assert_int_eq(sm_log_iter_open(l, at[4000], &it), 0);
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &n, &lsn), 1);
	ck_assert_int_eq(sm_log_trim(l, at[8000]), 0);
	a1 = allocated(path);
	/* Given back: everything below the window, less at most 4 MiB... */
	ck_assert_uint_le(a1 + (at[4000] - HDR), a0 + (4u << 20));
	ck_assert_uint_ge(a0 - a1, at[4000] - HDR - (64u << 10));
	/* ...and not one byte under the iterator's current record. */
	ck_assert(rec_ok(p, n, &w, &i) && i == 4000);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, frame, 8, (off_t)at[4000]), 8);
	ck_assert_uint_eq(frame[0] | frame[1] << 8, rec_len(2, 4000));
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &n, &lsn), -ESTALE);
	ck_assert_int_eq(sm_log_iter_close(it), 0);

	/* A live record slice at 9000 (its window released with its iterator). */
	ck_assert_int_eq(sm_log_iter_open(l, at[9000], &it), 0);
	ck_assert_int_eq(sm_log_iter_next(it, &held, &lsn), 1);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	/* At the trim point: nothing to discard, the deferred space goes back. */
	ck_assert_int_eq(sm_log_trim(l, at[8000]), 0);
	a2 = allocated(path);
	ck_assert_uint_le(a2 + (at[8000] - HDR), a0 + (64u << 10));
	/* Past the slice: its bytes stay. */
	ck_assert_int_eq(sm_log_trim(l, at[11000]), 0);
	ck_assert(slice_ok(held, &w, &i) && i == 9000);
	ck_assert_int_eq(pread(fd, frame, 8, (off_t)at[9000]), 8);
	ck_assert_uint_eq(frame[0] | frame[1] << 8, rec_len(2, 9000));
	ck_assert_int_eq(sm_release(held), 0);
	ck_assert_int_eq(sm_log_trim(l, at[11000]), 0);
	a3 = allocated(path);
	ck_assert_uint_le(a3 + (at[11000] - HDR), a0 + (64u << 10));
	close(fd);
	ck_assert_int_eq(sm_log_close(l), 0);

	/* Reopened (read-write: recovery; read-only): the retained records,
	 * from the trim point, and the log goes on at the same LSNs. */
	ck_assert_int_eq(sm_log_open(path, SM_RDONLY, NULL, &l), 0);
	ck_assert_int_eq(walk(l, &first), NBIG - 11000);
	ck_assert_uint_eq(first, at[11000]);
	ck_assert_int_eq(sm_log_iter_open(l, at[10], &it), -ESTALE);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l), 0);
	ck_assert_int_eq(walk(l, &first), NBIG - 11000);
	ck_assert_uint_eq(first, at[11000]);
	ck_assert_int_eq(append_one(l, 2, NBIG, &lsn), 0);
	ck_assert_uint_eq(lsn, tail_of(path));
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(walk(l, NULL), NBIG - 11000 + 1);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/* A log written before trimming existed: its header is zeros where the
 * trim slots are.  It reads from its first record and trims. */
START_TEST(log_without_trim_slots)
{
	const char *path = tu_tmpfile(0);
	unsigned char zeros[64] = { 0 };
	uint64_t at[10], first;
	sm_log *l;
	int fd;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	for (unsigned k = 0; k < 10; k++)
		ck_assert_int_eq(append_one(l, 3, k, &at[k]), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, zeros, sizeof(zeros), 256), (ssize_t)sizeof(zeros));
	close(fd);
	ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l), 0);
	ck_assert_int_eq(walk(l, &first), 10);
	ck_assert_uint_eq(first, HDR);
	ck_assert_int_eq(sm_log_trim(l, at[4]), 0);
	ck_assert_int_eq(walk(l, &first), 6);
	ck_assert_uint_eq(first, at[4]);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/* ---- SIGKILL at every step ------------------------------------------------ */

/* The child dies before (mode 0) or after (mode 1) its kill_at-th call
 * through the system-call seam, telling the parent first whether the trim
 * point's slot had been written (as the file says: the slot may be stored
 * through a mapping, not with a seam call). */
static int kill_at, kill_mode, calls, kill_out;
static const char *kill_path;
static uint64_t kill_lsn;

static void maybe_die(int when)
{
	if (when == kill_mode && calls == kill_at) {
		unsigned char b[8];
		uint64_t v = 0;
		int fd = open(kill_path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && pread(fd, b, 8, 256) == 8)
			memcpy(&v, b, 8);
		tu_send(kill_out, "%d", v == kill_lsn);
		raise(SIGKILL);
	}
}

static ssize_t k_pwrite(int fd, const void *b, size_t n, off_t off)
{
	ssize_t r;

	calls++;
	maybe_die(0);
	r = pwrite(fd, b, n, off);
	maybe_die(1);
	return r;
}

static int k_fdatasync(int fd)
{
	int r;

	calls++;
	maybe_die(0);
	r = fdatasync(fd);
	maybe_die(1);
	return r;
}

static int k_fallocate(int fd, int mode, off_t off, off_t len)
{
	int r;

	calls++;
	maybe_die(0);
	r = fallocate(fd, mode, off, len);
	maybe_die(1);
	return r;
}

struct trim_arg {
	const char *path;
	uint64_t lsn;
};

static int killed_trimmer(void *arg, int in, int out)
{
	struct trim_arg *a = arg;
	sm_log *l;
	int rc;

	(void)in;
	if (sm_log_open(a->path, SM_RDWR, NULL, &l) < 0)
		return 10;
	kill_out = out;
	kill_path = a->path;
	kill_lsn = a->lsn;
	sm_sys.pwrite = k_pwrite;
	sm_sys.fdatasync = k_fdatasync;
	sm_sys.fallocate = k_fallocate;
	rc = sm_log_trim(l, a->lsn);
	sm_sys_reset();
	tu_send(out, "done %d", rc);
	return sm_log_close(l) < 0 ? 11 : 0;
}

START_TEST(trim_sigkill_every_step)
{
	int rounds = 0;

	for (kill_mode = 0; kill_mode < 2; kill_mode++) {
		for (kill_at = 1;; kill_at++) {
			const char *path = tu_tmpfile(0);
			struct trim_arg a = { path, 0 };
			uint64_t at[300], first, a0, a1;
			struct tu_child c;
			char line[32];
			sm_log *l;
			int st, n;

			ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
			for (unsigned k = 0; k < 300; k++)
				ck_assert_int_eq(append_one(l, 4, k, &at[k]), 0);
			ck_assert_int_eq(sm_log_commit(l), 0);
			ck_assert_int_eq(sm_log_close(l), 0);
			a0 = allocated(path);
			a.lsn = at[250];
			tu_spawn(&c, killed_trimmer, &a);
			ck_assert(tu_recv(c.from, line, sizeof(line)));
			st = tu_wait(&c);
			rounds++;

			/* Reopen (recovery runs): either all 300 records or the
			 * 50 from the trim point, each whole. */
			ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l), 0);
			n = walk(l, &first);
			if (st == 0) {
				/* Not killed: the trim ran to its end. */
				ck_assert_str_eq(line, "done 0");
				ck_assert_int_eq(n, 50);
				ck_assert_uint_eq(first, at[250]);
				ck_assert_uint_le(allocated(path) + (at[250] - HDR), a0 + 8192);
				ck_assert_int_eq(sm_log_close(l), 0);
				break;
			}
			ck_assert_int_eq(st, 128 + SIGKILL);
			if (strcmp(line, "1") == 0) {
				/* The trim point was written: never undone. */
				ck_assert_int_eq(n, 50);
				ck_assert_uint_eq(first, at[250]);
			} else {
				ck_assert_str_eq(line, "0");
				ck_assert_int_eq(n, 300);
				ck_assert_uint_eq(first, HDR);
			}
			/* The trim again: done, and all the space given back. */
			ck_assert_int_eq(sm_log_trim(l, at[250]), 0);
			a1 = allocated(path);
			ck_assert_uint_le(a1 + (at[250] - HDR), a0 + 8192);
			ck_assert_int_eq(walk(l, &first), 50);
			ck_assert_uint_eq(first, at[250]);
			ck_assert_int_eq(append_one(l, 4, 300, NULL), 0);
			ck_assert_int_eq(sm_log_commit(l), 0);
			ck_assert_int_eq(walk(l, NULL), 51);
			ck_assert_int_eq(sm_log_close(l), 0);
			ck_assert_int_lt(kill_at, 50);
		}
	}
	/* At least: before and after the flush and the punch (the slots may be
	 * stores, not calls), and a last round not killed in each mode. */
	ck_assert_int_ge(rounds, 2 * 3);
}
END_TEST

/* ---- several processes ------------------------------------------------------ */

#define NW 2
#define NPER 400

struct proc_arg {
	const char *path;
	unsigned w;
};

static bool stop_asked(int in)
{
	struct pollfd pf = { .fd = in, .events = POLLIN };

	return poll(&pf, 1, 0) > 0;
}

static int appender(void *arg, int in, int out)
{
	struct proc_arg *a = arg;
	sm_log *l;

	(void)in, (void)out;
	if (sm_log_open(a->path, SM_RDWR, NULL, &l) < 0)
		return 10;
	for (unsigned i = 0; i < NPER; i++) {
		if (append_one(l, a->w, i, NULL) < 0)
			return 11;
		if (sm_log_commit(l) < 0)
			return 12;
	}
	return sm_log_close(l) < 0 ? 13 : 0;
}

/* Walks from 0 again and again, by pointer or (holding a few record slices
 * across calls) by slice: every record whole, each writer's in order; a
 * trim shows only as -ESTALE.  Sends how many -ESTALE it met. */
static int reader(void *arg, int in, int out)
{
	struct proc_arg *a = arg;
	sm_slice *held[4] = { 0 };
	unsigned last[NW + 1], w, i, hw[4], hi[4];
	int stale = 0, rc;
	sm_log *l;

	if (sm_log_open(a->path, SM_RDONLY, NULL, &l) < 0)
		return 10;
	while (!stop_asked(in)) {
		sm_log_iter *it;
		unsigned k = 0;

		if ((rc = sm_log_iter_open(l, 0, &it)) == -ESTALE) {
			stale++; /* trimmed between reading the trim point and the record */
			continue;
		}
		if (rc < 0)
			return 11;
		memset(last, 0xff, sizeof(last));
		for (;;) {
			const void *p;
			size_t n;
			if (a->w == 0) {
				rc = sm_log_iter_next_ptr(it, &p, &n, NULL);
				if (rc == 1 && !rec_ok(p, n, &w, &i))
					return 12;
			} else {
				sm_slice *s;
				rc = sm_log_iter_next(it, &s, NULL);
				if (rc == 1) {
					if (!slice_ok(s, &w, &i))
						return 12;
					/* Keep it a while: a trim must not touch it. */
					if (held[k % 4]) {
						if (!slice_ok(held[k % 4], &hw[k % 4], &hi[k % 4]))
							return 13;
						sm_release(held[k % 4]);
					}
					held[k % 4] = s;
					k++;
				}
			}
			if (rc == -ESTALE) {
				stale++;
				break;
			}
			if (rc < 0)
				return 14;
			if (rc == 0)
				break;
			if (w > NW || (w > 0 && last[w] != ~0u && i != last[w] + 1))
				return 15;
			last[w] = i;
		}
		sm_log_iter_close(it);
	}
	for (int k = 0; k < 4; k++)
		if (held[k]) {
			if (!slice_ok(held[k], &w, &i))
				return 16;
			sm_release(held[k]);
		}
	tu_send(out, "%d", stale);
	return sm_log_close(l) < 0 ? 17 : 0;
}

/* Trims to a committed record a few records on from the first, again and
 * again: every trim returns 0.  Sends how many it did. */
static int trimmer(void *arg, int in, int out)
{
	struct proc_arg *a = arg;
	unsigned seed = 7;
	int trims = 0, rc;
	sm_log *l;

	if (sm_log_open(a->path, SM_RDWR, NULL, &l) < 0)
		return 10;
	while (!stop_asked(in)) {
		sm_log_iter *it;
		uint64_t lsn = 0, first = 0;
		unsigned skip = rand_r(&seed) % 16;
		const void *p;
		size_t n;

		if ((rc = sm_log_iter_open(l, 0, &it)) == -ESTALE)
			continue; /* another trimmer?  none here: but harmless */
		if (rc < 0)
			return 11;
		for (unsigned k = 0; k <= skip; k++) {
			if ((rc = sm_log_iter_next_ptr(it, &p, &n, &lsn)) < 0)
				return 12;
			if (rc == 0)
				break;
			if (k == 0)
				first = lsn;
		}
		/* The iterator's window would hold the bytes: close it first. */
		sm_log_iter_close(it);
		if (rc == 1 && lsn > first) {
			if (sm_log_trim(l, lsn) != 0)
				return 13;
			trims++;
		}
		usleep(1000);
	}
	tu_send(out, "%d", trims);
	return sm_log_close(l) < 0 ? 14 : 0;
}

START_TEST(trim_under_appenders_and_readers)
{
	const char *path = tu_tmpfile(0);
	struct proc_arg ap[NW], rd[2], tr = { path, 0 };
	struct tu_child app[NW], rdc[2], trc;
	unsigned last[NW + 1], w, i;
	sm_log_iter *it;
	char line[32];
	const void *p;
	size_t n;
	sm_log *l;
	int rc;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	for (unsigned k = 0; k < 50; k++)
		ck_assert_int_eq(append_one(l, 0, k, NULL), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	for (int k = 0; k < 2; k++) {
		rd[k] = (struct proc_arg){ path, (unsigned)k };
		tu_spawn(&rdc[k], reader, &rd[k]);
	}
	tu_spawn(&trc, trimmer, &tr);
	for (unsigned k = 0; k < NW; k++) {
		ap[k] = (struct proc_arg){ path, k + 1 };
		tu_spawn(&app[k], appender, &ap[k]);
	}
	for (unsigned k = 0; k < NW; k++)
		ck_assert_int_eq(tu_wait(&app[k]), 0);
	tu_send(trc.to, "stop");
	ck_assert(tu_recv(trc.from, line, sizeof(line)));
	ck_assert_int_eq(tu_wait(&trc), 0);
	ck_assert_int_gt(atoi(line), 0);
	for (int k = 0; k < 2; k++) {
		tu_send(rdc[k].to, "stop");
		ck_assert(tu_recv(rdc[k].from, line, sizeof(line)));
		ck_assert_int_eq(tu_wait(&rdc[k]), 0);
	}

	/* What is retained: each writer's records, a suffix ending at its last. */
	memset(last, 0xff, sizeof(last));
	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	while ((rc = sm_log_iter_next_ptr(it, &p, &n, NULL)) == 1) {
		ck_assert(rec_ok(p, n, &w, &i));
		ck_assert_uint_le(w, NW);
		if (w > 0 && last[w] != ~0u)
			ck_assert_uint_eq(i, last[w] + 1);
		last[w] = i;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	for (unsigned k = 1; k <= NW; k++)
		ck_assert(last[k] == NPER - 1 || last[k] == ~0u);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

static Suite *trim_suite(void)
{
	Suite *s = suite_create("log_trim");
	TCase *tc;

	tc = tcase_create("basic");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, trim_einval_and_estale);
	tcase_add_test(tc, trim_gives_space_back);
	tcase_add_test(tc, log_without_trim_slots);
	suite_add_tcase(s, tc);

	tc = tcase_create("sigkill");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, trim_sigkill_every_step);
	suite_add_tcase(s, tc);

	tc = tcase_create("procs");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, trim_under_appenders_and_readers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(trim_suite());
}
