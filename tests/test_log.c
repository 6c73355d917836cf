/* SPDX-License-Identifier: MIT */
/*
 * test_log.c - sm_log: framing and iteration, whole records from several
 * processes (3 x 1000, each exactly once), SIGKILL of an appender at random
 * points (readers see a prefix of whole records holding every committed
 * one, and the log goes on), group commit counted through the syscall seam,
 * a group-commit leader killed mid-fdatasync (its waiters go on), tail
 * repair after a crash, ENOSPC and EIO injected through the seam.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <limits.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crc32c.h"
#include "safemap-internal.h"
#include "testutil.h"

#define HDR 4096

/* A record of writer w, number i: its length and every byte follow from
 * (w, i), so a reader can check it is whole. */
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

/* Check a record slice: returns 1 with (w, i) if whole, else 0. */
static int rec_check(sm_slice *s, unsigned *w, unsigned *i)
{
	size_t n = sm_length(s);
	unsigned char *got = malloc(n), *want = malloc(n);
	int ok;

	ck_assert(got && want && n >= 8);
	ck_assert_int_eq(sm_read(s, 0, got, n), 0);
	memcpy(w, got, 4);
	memcpy(i, got + 4, 4);
	rec_fill(want, *w, *i, n);
	ok = n == rec_len(*w, *i) && memcmp(got, want, n) == 0;
	free(got);
	free(want);
	return ok;
}

static int append_one(sm_log *l, unsigned w, unsigned i, uint64_t *lsn)
{
	unsigned char buf[8 + 5000];
	size_t n = rec_len(w, i);

	rec_fill(buf, w, i, n);
	return sm_log_append(l, buf, n, lsn);
}

/* Count the committed records from the start, checking each. */
static int count_records(sm_log *l)
{
	sm_log_iter *it;
	sm_slice *r;
	uint64_t lsn;
	unsigned w, i;
	int n = 0, rc;

	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	while ((rc = sm_log_iter_next(it, &r, &lsn)) == 1) {
		ck_assert(rec_check(r, &w, &i));
		sm_release(r);
		n++;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	return n;
}

START_TEST(crc32c_known_values)
{
	ck_assert_uint_eq(sm_crc32c(0, "123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(sm_crc32c(sm_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
	{
		unsigned char z[32] = { 0 };
		ck_assert_uint_eq(sm_crc32c(0, z, 32), 0x8a9136aau); /* RFC 3720 B.4 */
	}
	{
		/* Long buffers (another implementation: ISA-L when built with it),
		 * at every alignment and across the switch-over length, against
		 * the bit-at-a-time definition. */
		static unsigned char b[9000];
		for (size_t k = 0; k < sizeof(b); k++)
			b[k] = (unsigned char)(k * 131 + (k >> 7));
		for (size_t n = 1; n < sizeof(b) - 8; n = n * 3 / 2 + 1)
			for (size_t a = 0; a < 8; a += 3) {
				uint32_t c = 0xffffffffu;
				for (size_t k = 0; k < n; k++) {
					c ^= b[a + k];
					for (int j = 0; j < 8; j++)
						c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
				}
				ck_assert_uint_eq(sm_crc32c(0, b + a, n), ~c);
				ck_assert_uint_eq(sm_crc32c(sm_crc32c(0, b + a, n / 3), b + a + n / 3,
							    n - n / 3), ~c);
			}
	}
}
END_TEST

START_TEST(append_commit_iterate)
{
	const char *path = tu_tmpfile(0);
	sm_log *l, *ro;
	sm_log_iter *it, *it2;
	sm_slice *r;
	uint64_t lsn[5], got;
	unsigned w, i;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	ck_assert_int_eq(sm_log_open(path, SM_RDONLY, NULL, &ro), 0);
	for (unsigned k = 0; k < 5; k++)
		ck_assert_int_eq(append_one(l, 1, k, &lsn[k]), 0);
	ck_assert_uint_eq(lsn[0], HDR);
	for (unsigned k = 1; k < 5; k++)
		ck_assert_uint_eq(lsn[k], lsn[k - 1] + ((8 + rec_len(1, k - 1) + 7) & ~7u));

	/* Appended but not committed: invisible. */
	ck_assert_int_eq(sm_log_iter_open(ro, 0, &it), 0);
	ck_assert_int_eq(sm_log_iter_next(it, &r, &got), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	/* The same iterator sees records committed since. */
	for (unsigned k = 0; k < 5; k++) {
		ck_assert_int_eq(sm_log_iter_next(it, &r, &got), 1);
		ck_assert_uint_eq(got, lsn[k]);
		ck_assert(rec_check(r, &w, &i));
		ck_assert_uint_eq(w, 1);
		ck_assert_uint_eq(i, k);
		/* Zero-copy read view of the payload only. */
		ck_assert_uint_eq(sm_offset(r), lsn[k] + 8);
		ck_assert_int_eq(sm_write(r, 0, "x", 1), -EBADF);
		sm_release(r);
	}
	ck_assert_int_eq(sm_log_iter_next(it, &r, &got), 0);
	/* The log cannot close under its iterator. */
	ck_assert_int_eq(sm_log_close(ro), -EBUSY);
	ck_assert_int_eq(sm_log_iter_close(it), 0);

	/* from_lsn: a record's LSN, the committed tail, nothing else. */
	ck_assert_int_eq(sm_log_iter_open(ro, lsn[3], &it2), 0);
	ck_assert_int_eq(sm_log_iter_next(it2, &r, &got), 1);
	ck_assert_uint_eq(got, lsn[3]);
	sm_release(r);
	ck_assert_int_eq(sm_log_iter_close(it2), 0);
	ck_assert_int_eq(sm_log_iter_open(ro, lsn[3] + 8, &it2), -EINVAL);
	ck_assert_int_eq(sm_log_iter_open(ro, lsn[3] + 1, &it2), -EINVAL);
	ck_assert_int_eq(sm_log_iter_open(ro, 100, &it2), -EINVAL);
	ck_assert_int_eq(sm_log_iter_open(ro, 1u << 30, &it2), -EINVAL);

	/* Bad arguments. */
	ck_assert_int_eq(sm_log_append(l, "x", 0, NULL), -EINVAL);
	ck_assert_int_eq(sm_log_append(l, NULL, 1, NULL), -EINVAL);
	ck_assert_int_eq(sm_log_append(ro, "x", 1, NULL), -EBADF);
	ck_assert_int_eq(sm_log_commit(ro), -EBADF);
	ck_assert_int_eq(sm_log_open(path, SM_RDONLY | SM_CREATE, NULL, &ro), -EINVAL);
	ck_assert_int_eq(sm_log_open(path, 0, NULL, &ro), -EINVAL);
	ck_assert_int_eq(sm_log_close(NULL), -EINVAL);
	ck_assert_int_eq(sm_log_close(ro), 0);
	ck_assert_int_eq(sm_log_close(l), 0);

	/* Reopened: the records are there; not a log: -EINVAL. */
	ck_assert_int_eq(sm_log_open(path, SM_RDONLY, NULL, &ro), 0);
	ck_assert_int_eq(count_records(ro), 5);
	ck_assert_int_eq(sm_log_close(ro), 0);
	{
		const char *junk = tu_tmpfile(8192);
		ck_assert_int_eq(sm_log_open(junk, SM_RDWR, NULL, &ro), -EINVAL);
	}
}
END_TEST

/* Record slices outlive the iterator and the log. */
/* The pointer walk: the same records, LSNs and bytes as the slice walk,
 * across window boundaries (big records, more than one 1 MiB window), and
 * it follows new commits.  A log truncated under it: the bytes read as
 * zeros (no crash) and the next call says -ENXIO. */
START_TEST(iterate_by_pointer)
{
	const char *path = tu_tmpfile(0);
	unsigned char want[8 + 5000];
	const void *p;
	sm_log_iter *it;
	sm_log *l;
	size_t len;
	uint64_t lsn[2100], got;
	unsigned k;
	int fd;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	for (k = 0; k < 2000; k++)
		ck_assert_int_eq(append_one(l, 2, k, &lsn[k]), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	ck_assert_int_eq(sm_log_iter_next_ptr(it, NULL, &len, NULL), -EINVAL);
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, NULL, NULL), -EINVAL);
	for (k = 0; k < 2000; k++) {
		ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &len, &got), 1);
		ck_assert_uint_eq(got, lsn[k]);
		ck_assert_uint_eq(len, rec_len(2, k));
		rec_fill(want, 2, k, len);
		ck_assert(memcmp(p, want, len) == 0);
	}
	ck_assert_uint_gt(lsn[1999], 1u << 20); /* crossed a window */
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &len, &got), 0);
	/* Records committed since. */
	for (k = 2000; k < 2100; k++)
		ck_assert_int_eq(append_one(l, 2, k, &lsn[k]), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &len, &got), 1);
	ck_assert_uint_eq(got, lsn[2000]);
	ck_assert_int_eq(sm_log_iter_close(it), 0);

	/* Truncated under the iterator's window. */
	ck_assert_int_eq(sm_log_iter_open(l, lsn[10], &it), 0);
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &len, &got), 1);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, HDR), 0);
	close(fd);
	ck_assert_int_eq(((const unsigned char *)p)[len - 1], 0); /* zeros, no SIGBUS */
	ck_assert_int_eq(sm_log_iter_next_ptr(it, &p, &len, &got), -ENXIO);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

START_TEST(record_outlives_log)
{
	const char *path = tu_tmpfile(0);
	sm_log *l;
	sm_log_iter *it;
	sm_slice *r;
	unsigned w, i;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	ck_assert_int_eq(append_one(l, 2, 3, NULL), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	ck_assert_int_eq(sm_log_iter_next(it, &r, NULL), 1);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert(rec_check(r, &w, &i));
	ck_assert_int_eq(sm_release(r), 0);
}
END_TEST

/* A fork child shares the parent's open file description (and with it
 * the kernel-lock mutexes): its handle is stale. */
static sm_log *parent_log;
static int stale_child(void *arg, int in, int out)
{
	sm_log_iter *it;

	(void)arg, (void)in;
	tu_send(out, "%d %d %d", sm_log_append(parent_log, "x", 1, NULL),
		sm_log_commit(parent_log), sm_log_iter_open(parent_log, 0, &it));
	return 0;
}

START_TEST(fork_child_is_stale)
{
	const char *path = tu_tmpfile(0);
	struct tu_child c;
	char line[64];

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &parent_log), 0);
	tu_spawn(&c, stale_child, NULL);
	ck_assert(tu_recv(c.from, line, sizeof(line)));
	ck_assert_int_eq(tu_wait(&c), 0);
	snprintf(line + 32, 32, "%d %d %d", -ESTALE, -ESTALE, -ESTALE);
	ck_assert_str_eq(line, line + 32);
	ck_assert_int_eq(append_one(parent_log, 1, 0, NULL), 0);
	ck_assert_int_eq(sm_log_commit(parent_log), 0);
	ck_assert_int_eq(sm_log_close(parent_log), 0);
}
END_TEST

/* ---- several processes ------------------------------------------------- */

#define NPROC 3
#define NREC 1000

struct app_arg {
	const char *path;
	unsigned w, n, commit_every;
};

static int appender(void *arg, int in, int out)
{
	struct app_arg *a = arg;
	char line[16];
	sm_log *l;
	int rc;

	if ((rc = sm_log_open(a->path, SM_RDWR | SM_CREATE, NULL, &l)) < 0)
		return 10;
	tu_send(out, "ready");
	if (!tu_recv(in, line, sizeof(line)))
		return 11;
	for (unsigned i = 0; i < a->n; i++) {
		if (append_one(l, a->w, i, NULL) < 0)
			return 12;
		if ((i + 1) % a->commit_every == 0 && sm_log_commit(l) < 0)
			return 13;
	}
	if (sm_log_commit(l) < 0)
		return 14;
	return sm_log_close(l) < 0 ? 15 : 0;
}

/* A reader following the log while it grows: every record whole, each
 * writer's records in order and once, until it has seen them all. */
static int follower(void *arg, int in, int out)
{
	const char *path = arg;
	static unsigned char seen[NPROC][NREC];
	unsigned next[NPROC] = { 0 };
	sm_log *l;
	sm_log_iter *it;
	sm_slice *r;
	unsigned w, i;
	int rc, n = 0;

	(void)in;
	if (sm_log_open(path, SM_RDONLY, NULL, &l) < 0 || sm_log_iter_open(l, 0, &it) < 0)
		return 10;
	tu_send(out, "ready");
	while (n < NPROC * NREC) {
		if ((rc = sm_log_iter_next(it, &r, NULL)) < 0)
			return 11;
		if (rc == 0) {
			sched_yield(); /* at the committed tail: poll again */
			continue;
		}
		if (!rec_check(r, &w, &i) || w >= NPROC || i >= NREC || seen[w][i] || i != next[w])
			return 12;
		seen[w][i] = 1;
		next[w]++;
		sm_release(r);
		n++;
	}
	sm_log_iter_close(it);
	return sm_log_close(l) < 0 ? 13 : 0;
}

START_TEST(three_appenders_exactly_once)
{
	struct tu_child rd;
	const char *path = tu_tmpfile(0);
	struct tu_child c[NPROC];
	struct app_arg a[NPROC];
	char line[16];
	static unsigned char seen[NPROC][NREC];
	unsigned next[NPROC] = { 0 };
	sm_log *l;
	sm_log_iter *it;
	sm_slice *r;
	uint64_t lsn, prev = 0;
	unsigned w, i;
	int rc, n = 0;

	for (int k = 0; k < NPROC; k++) {
		a[k] = (struct app_arg){ path, (unsigned)k, NREC, (unsigned)(3 + k * 10) };
		tu_spawn(&c[k], appender, &a[k]);
	}
	for (int k = 0; k < NPROC; k++)
		ck_assert(tu_recv(c[k].from, line, sizeof(line)));
	tu_spawn(&rd, follower, (void *)path);
	ck_assert(tu_recv(rd.from, line, sizeof(line)));
	for (int k = 0; k < NPROC; k++)
		tu_send(c[k].to, "go");
	for (int k = 0; k < NPROC; k++)
		ck_assert_int_eq(tu_wait(&c[k]), 0);
	ck_assert_int_eq(tu_wait(&rd), 0);

	ck_assert_int_eq(sm_log_open(path, SM_RDONLY, NULL, &l), 0);
	ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
	while ((rc = sm_log_iter_next(it, &r, &lsn)) == 1) {
		ck_assert(rec_check(r, &w, &i));
		ck_assert_uint_lt(w, NPROC);
		ck_assert_uint_lt(i, NREC);
		ck_assert_int_eq(seen[w][i], 0);
		seen[w][i] = 1;
		/* Each process's records in its own order. */
		ck_assert_uint_eq(i, next[w]);
		next[w]++;
		ck_assert_uint_gt(lsn, prev);
		prev = lsn;
		sm_release(r);
		n++;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(n, NPROC * NREC);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/*
 * SIGKILL at random points: the child appends records of round r (some
 * large, so the kill often lands mid-record) and commits every few, telling
 * the parent after each commit how many records are committed; the parent
 * kills it after a random number of reports.  Then the log holds exactly a
 * prefix of each round's records (whole, in order) that includes every
 * record reported committed, and a new appender continues it.
 */
struct kill_arg {
	const char *path;
	unsigned round;
	unsigned seed;
};

static int doomed(void *arg, int in, int out)
{
	struct kill_arg *a = arg;
	unsigned seed = a->seed;
	sm_log *l;

	(void)in;
	if (sm_log_open(a->path, SM_RDWR | SM_CREATE, NULL, &l) < 0)
		return 10;
	for (unsigned i = 0;; i++) {
		if (append_one(l, 100 + a->round, i, NULL) < 0)
			return 12;
		if (rand_r(&seed) % 3 == 0) {
			if (sm_log_commit(l) < 0)
				return 13;
			tu_send(out, "%u", i + 1);
		}
	}
}

#define KILL_ROUNDS 100

START_TEST(sigkill_appender_prefix)
{
	const char *path = tu_tmpfile(0);
	unsigned committed[KILL_ROUNDS], count[KILL_ROUNDS] = { 0 };
	unsigned seed = 12345;
	sm_log *l;

	for (unsigned r = 0; r < KILL_ROUNDS; r++) {
		struct kill_arg a = { path, r, rand_r(&seed) };
		struct tu_child c;
		unsigned reports = 1 + rand_r(&seed) % 8;
		char line[32];

		committed[r] = 0;
		tu_spawn(&c, doomed, &a);
		for (unsigned k = 0; k < reports; k++) {
			ck_assert(tu_recv(c.from, line, sizeof(line)));
			committed[r] = (unsigned)atoi(line);
		}
		kill(c.pid, SIGKILL);
		ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	}

	/* A new appender repairs the tail and continues the log. */
	ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l), 0);
	ck_assert_int_eq(append_one(l, 7, 0, NULL), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	{
		sm_log_iter *it;
		sm_slice *rec;
		unsigned w, i, last_w = 0;
		int rc;

		ck_assert_int_eq(sm_log_iter_open(l, 0, &it), 0);
		while ((rc = sm_log_iter_next(it, &rec, NULL)) == 1) {
			ck_assert_msg(rec_check(rec, &w, &i), "torn record");
			sm_release(rec);
			last_w = w;
			if (w == 7)
				continue;
			ck_assert_uint_ge(w, 100);
			ck_assert_uint_lt(w, 100 + KILL_ROUNDS);
			/* Rounds in order, each a prefix of its records. */
			for (unsigned r = w - 100 + 1; r < KILL_ROUNDS; r++)
				ck_assert_uint_eq(count[r], 0);
			ck_assert_uint_eq(i, count[w - 100]);
			count[w - 100]++;
		}
		ck_assert_int_eq(rc, 0);
		ck_assert_uint_eq(last_w, 7);
		ck_assert_int_eq(sm_log_iter_close(it), 0);
	}
	for (unsigned r = 0; r < KILL_ROUNDS; r++)
		ck_assert_msg(count[r] >= committed[r], "round %u: %u records, %u committed", r,
			      count[r], committed[r]);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/* ---- group commit ------------------------------------------------------- */

static int nsyncs;
static int count_fdatasync(int fd)
{
	__atomic_fetch_add(&nsyncs, 1, __ATOMIC_RELAXED);
	return fdatasync(fd);
}

#define GC_THREADS 4
#define GC_RECS 100

static void *gc_thread(void *arg)
{
	sm_log *l = arg;
	static unsigned next_w;
	unsigned w = __atomic_fetch_add(&next_w, 1, __ATOMIC_RELAXED);

	for (unsigned i = 0; i < GC_RECS; i++) {
		if (append_one(l, w, i, NULL) < 0 || sm_log_commit(l) < 0)
			return (void *)1;
	}
	return NULL;
}

START_TEST(group_commit_shares_flushes)
{
	const char *path = tu_tmpfile(0);
	pthread_t t[GC_THREADS];
	sm_log *l;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	sm_sys.fdatasync = count_fdatasync;
	for (int k = 0; k < GC_THREADS; k++)
		ck_assert_int_eq(pthread_create(&t[k], NULL, gc_thread, l), 0);
	for (int k = 0; k < GC_THREADS; k++) {
		void *ret;
		ck_assert_int_eq(pthread_join(t[k], &ret), 0);
		ck_assert_ptr_null(ret);
	}
	sm_sys_reset();
	ck_assert_int_le(nsyncs, GC_THREADS * GC_RECS);
	ck_assert_msg(nsyncs < GC_THREADS * GC_RECS, "%d flushes for %d commits", nsyncs,
		      GC_THREADS * GC_RECS);
	ck_assert_int_eq(count_records(l), GC_THREADS * GC_RECS);
	/* Nothing new: no flush at all. */
	nsyncs = 0;
	sm_sys.fdatasync = count_fdatasync;
	ck_assert_int_eq(sm_log_commit(l), 0);
	sm_sys_reset();
	ck_assert_int_eq(nsyncs, 0);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/*
 * A group-commit leader killed mid-fdatasync: the child leads a flush whose
 * fdatasync never returns (the seam tells the parent, then blocks); the
 * parent's committer finds the flush running and waits for it.  After the
 * SIGKILL nobody will ever wake it: its bounded wait must notice the dead
 * leader, lead the flush itself and commit both records (the child's was
 * placed whole, so it is kept).  Without the liveness check this test hangs
 * until the case's timeout.
 */
static int stuck_out = -1;
static int stuck_fdatasync(int fd)
{
	(void)fd;
	tu_send(stuck_out, "flushing");
	while (pause() < 0 || errno == EINTR)
		; /* until SIGKILL */
	return -1;
}

static int stuck_leader(void *arg, int in, int out)
{
	sm_log *l;

	(void)in;
	if (sm_log_open(arg, SM_RDWR, NULL, &l) < 0 || append_one(l, 8, 0, NULL) < 0)
		return 10;
	stuck_out = out;
	sm_sys.fdatasync = stuck_fdatasync;
	return sm_log_commit(l) < 0 ? 11 : 12; /* never returns */
}

struct waiter {
	sm_log *l;
	pid_t tid; /* set before the commit */
	int rc;
};

static void *waiting_commit(void *arg)
{
	struct waiter *w = arg;

	__atomic_store_n(&w->tid, gettid(), __ATOMIC_RELEASE);
	w->rc = sm_log_commit(w->l);
	return NULL;
}

/* Whether thread tid is blocked in a futex call (its /proc syscall line). */
static bool in_futex(pid_t tid)
{
	char p[64], line[64] = "";
	FILE *f;

	snprintf(p, sizeof(p), "/proc/self/task/%d/syscall", (int)tid);
	if (!(f = fopen(p, "r")))
		return false;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	return atoi(line) == SYS_futex;
}

START_TEST(leader_killed_mid_flush)
{
	const char *path = tu_tmpfile(0);
	struct waiter w = { 0 };
	struct tu_child c;
	char line[32];
	pthread_t t;
	sm_log *l;
	pid_t tid;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	tu_spawn(&c, stuck_leader, (void *)path);
	ck_assert(tu_recv(c.from, line, sizeof(line)));
	ck_assert_str_eq(line, "flushing");
	ck_assert_int_eq(append_one(l, 8, 1, NULL), 0);
	w.l = l;
	ck_assert_int_eq(pthread_create(&t, NULL, waiting_commit, &w), 0);
	/* Until the committer sleeps on the running flush (no sleep here:
	 * poll its state).  It may also sleep on the futex between bounded
	 * waits, which is the same state. */
	while (!(tid = __atomic_load_n(&w.tid, __ATOMIC_ACQUIRE)))
		sched_yield();
	while (!in_futex(tid))
		sched_yield();
	ck_assert_int_eq(count_records(l), 0); /* nothing committed yet */
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(w.rc, 0);
	ck_assert_int_eq(count_records(l), 2);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/* ---- system calls per record ------------------------------------------------ */

#define SC_RECS 100

/* Traced: one appender, a warm-up record (the first reserves space), then
 * SC_RECS records each appended and committed between two getppid marks. */
static void sc_child(const char *path)
{
	unsigned char rec[100];
	sm_log *l;

	memset(rec, 'r', sizeof(rec));
	if (sm_log_open(path, SM_RDWR, NULL, &l) < 0 ||
	    sm_log_append(l, rec, sizeof(rec), NULL) < 0 || sm_log_commit(l) < 0)
		_exit(10);
	(void)syscall(SYS_getppid);
	for (int i = 0; i < SC_RECS; i++)
		if (sm_log_append(l, rec, sizeof(rec), NULL) < 0 || sm_log_commit(l) < 0)
			_exit(11);
	(void)syscall(SYS_getppid);
	_exit(sm_log_close(l) < 0 ? 12 : 0);
}

/* One appender committing each record makes at most 6 system calls per
 * record (append: the append mutex's lock and unlock, one pwrite; commit:
 * the flush mutex's lock and unlock, one fdatasync), and never a
 * sched_yield (on a busy machine it hands the CPU away for a time slice)
 * or a futex call (nobody to wake) -- also in a log whose header still
 * counts sleeping committers that were killed (the first opener clears
 * the count).  Counted with ptrace. */
START_TEST(one_appender_syscalls)
{
	const char *path = tu_tmpfile(0);
	long counts[512] = { 0 }, total = 0;
	uint32_t leaked[2] = { 3, 3 }; /* WAITERS, WOKEN: three killed while asleep */
	int marks = 0, st, fd;
	char comm[32];
	sm_log *l;
	pid_t pid;

	tu_comm(comm, sizeof(comm));
	if (strncmp(comm, "memcheck", 8) == 0) {
		printf("SKIP one_appender_syscalls: valgrind makes system calls of its own\n");
		return;
	}
	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, leaked, sizeof(leaked), 320), (ssize_t)sizeof(leaked));
	close(fd);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
			_exit(20);
		raise(SIGSTOP);
		sc_child(path);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFSTOPPED(st));
	ck_assert_int_eq(ptrace(PTRACE_SETOPTIONS, pid, NULL,
				(void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)), 0);
	for (;;) {
		struct __ptrace_syscall_info si;
		ck_assert_int_eq(ptrace(PTRACE_SYSCALL, pid, NULL, NULL), 0);
		ck_assert_int_eq(waitpid(pid, &st, 0), pid);
		if (WIFEXITED(st) || WIFSIGNALED(st))
			break;
		if (!WIFSTOPPED(st) || WSTOPSIG(st) != (SIGTRAP | 0x80))
			continue;
		ck_assert_int_gt(ptrace(PTRACE_GET_SYSCALL_INFO, pid, (void *)sizeof(si), &si), 0);
		if (si.op != PTRACE_SYSCALL_INFO_ENTRY)
			continue;
		if (si.entry.nr == SYS_getppid) {
			marks++;
			continue;
		}
		if (marks == 1 && si.entry.nr < 512) {
			counts[si.entry.nr]++;
			total++;
		}
	}
	ck_assert(WIFEXITED(st));
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	ck_assert_int_eq(marks, 2);
	ck_assert_int_eq(counts[SYS_sched_yield], 0);
	ck_assert_int_eq(counts[SYS_futex], 0);
	ck_assert_int_eq(counts[SYS_fdatasync], SC_RECS);
	ck_assert_msg(total <= 6 * SC_RECS, "%ld system calls for %d records (fcntl %ld, pwrite %ld)",
		      total, SC_RECS, counts[SYS_fcntl], counts[SYS_pwrite64]);
}
END_TEST

/* ---- crash repair -------------------------------------------------------- */

/* As after a machine crash: the tail slot reached the disk, the record it
 * covers did not (garbage there).  A read-write open cuts it; readers never
 * saw it; the next record goes where it was. */
START_TEST(open_cuts_lost_record)
{
	const char *path = tu_tmpfile(0);
	unsigned char slot[16], junk[40];
	uint64_t lsn, t, nt;
	sm_log *l;
	int fd;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	ck_assert_int_eq(append_one(l, 3, 0, NULL), 0);
	ck_assert_int_eq(append_one(l, 3, 1, &lsn), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_log_close(l), 0);

	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, slot, 16, 128), 16);
	memcpy(&t, slot, 8);
	memset(junk, 0, sizeof(junk));
	junk[0] = 30; /* a length, then a wrong CRC */
	junk[4] = 0x55;
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), (off_t)t), (ssize_t)sizeof(junk));
	nt = t + 40;
	memcpy(slot, &nt, 8);
	nt = ~nt;
	memcpy(slot + 8, &nt, 8);
	ck_assert_int_eq(pwrite(fd, slot, 16, 128), 16);
	close(fd);

	ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l), 0);
	ck_assert_int_eq(count_records(l), 2);
	ck_assert_int_eq(append_one(l, 3, 2, &lsn), 0);
	ck_assert_uint_eq(lsn, t);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(count_records(l), 3);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

/* ---- fault injection ----------------------------------------------------- */

static int fail_errno;
static int fail_fallocate(int fd, int mode, off_t off, off_t len)
{
	(void)fd, (void)mode, (void)off, (void)len;
	errno = fail_errno;
	return -1;
}
static int fail_fdatasync(int fd)
{
	(void)fd;
	errno = fail_errno;
	return -1;
}
static ssize_t fail_pwrite(int fd, const void *b, size_t n, off_t off)
{
	(void)fd, (void)b, (void)n, (void)off;
	errno = fail_errno;
	return -1;
}

START_TEST(append_enospc_from_reservation)
{
	const char *path = tu_tmpfile(0);
	unsigned char big[1 << 16];
	uint64_t lsn, lsn2;
	sm_log *l;

	memset(big, 7, sizeof(big));
	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	ck_assert_int_eq(append_one(l, 4, 0, &lsn), 0);
	fail_errno = ENOSPC;
	sm_sys.fallocate = fail_fallocate;
	/* Past the reserved space: the disk is full. */
	for (int k = 0; k < 64; k++) {
		int rc = sm_log_append(l, big, sizeof(big), NULL);
		if (rc < 0) {
			ck_assert_int_eq(rc, -ENOSPC);
			break;
		}
		ck_assert_int_lt(k, 63);
	}
	sm_sys_reset();
	/* The failure left no trace; the log goes on. */
	ck_assert_int_eq(append_one(l, 4, 1, &lsn2), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
}
END_TEST

START_TEST(commit_eio_is_sticky)
{
	const char *path = tu_tmpfile(0);
	sm_log *l, *l2;

	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	ck_assert_int_eq(append_one(l, 5, 0, NULL), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	ck_assert_int_eq(append_one(l, 5, 1, NULL), 0);
	fail_errno = EIO;
	sm_sys.fdatasync = fail_fdatasync;
	ck_assert_int_eq(sm_log_commit(l), -EIO);
	sm_sys_reset();
	/* Not published: readers still see one record. */
	ck_assert_int_eq(count_records(l), 1);
	/* The handle stays failed (the kernel reports EIO once). */
	ck_assert_int_eq(sm_log_commit(l), -EIO);
	ck_assert_int_eq(sm_log_close(l), 0);
	ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l2), 0);
	ck_assert_int_eq(count_records(l2), 2);
	ck_assert_int_eq(sm_log_close(l2), 0);
}
END_TEST

/* Every seam call on every path fails in turn with EIO and ENOSPC: each
 * public call returns the error (never crashes), and the log is whole
 * afterwards. */
START_TEST(every_step_fails_cleanly)
{
	static const int errs[] = { EIO, ENOSPC };

	for (unsigned e = 0; e < 2; e++) {
		for (int which = 0; which < 3; which++) {
			const char *path = tu_tmpfile(0);
			sm_log *l;
			int rc, n = 0;

			ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
			fail_errno = errs[e];
			if (which == 0)
				sm_sys.fallocate = fail_fallocate;
			else if (which == 1)
				sm_sys.fdatasync = fail_fdatasync;
			else
				sm_sys.pwrite = fail_pwrite;
			for (unsigned i = 0; i < 3; i++) {
				rc = append_one(l, 6, i, NULL);
				ck_assert(rc == 0 || rc == -errs[e]);
				n += rc == 0;
			}
			rc = sm_log_commit(l);
			ck_assert(rc == 0 || rc == -errs[e]);
			sm_sys_reset();
			ck_assert_int_eq(sm_log_close(l), 0);
			/* Reopened: whatever was appended whole is there. */
			ck_assert_int_eq(sm_log_open(path, SM_RDWR, NULL, &l), 0);
			ck_assert_int_eq(count_records(l), n);
			ck_assert_int_eq(sm_log_close(l), 0);
			/* Failing open itself (writing or flushing the header). */
			if (which == 0)
				continue;
			path = tu_tmpfile(0);
			fail_errno = errs[e];
			if (which == 1)
				sm_sys.fdatasync = fail_fdatasync;
			else
				sm_sys.pwrite = fail_pwrite;
			ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), -errs[e]);
			sm_sys_reset();
			/* A later open initialises it. */
			ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
			ck_assert_int_eq(count_records(l), 0);
			ck_assert_int_eq(sm_log_close(l), 0);
		}
	}
}
END_TEST

/* ---- examples/wal: puts from several processes, checkpoints meanwhile -- */

static char wal_tool[PATH_MAX], wal_dir[PATH_MAX];

static int run_wal(void *arg, int in, int out)
{
	char **argv = arg;

	(void)in, (void)out;
	execv(wal_tool, argv);
	return 127;
}

static int checkpointer(void *arg, int in, int out)
{
	(void)arg;
	for (int k = 0; k < 5; k++) {
		char *argv[] = { wal_tool, wal_dir, "checkpoint", NULL };
		struct tu_child c;
		tu_spawn(&c, run_wal, argv);
		if (tu_wait(&c) != 0)
			return 1;
	}
	(void)in, (void)out;
	return 0;
}

START_TEST(wal_example_several_processes)
{
	char *fa[] = { wal_tool, wal_dir, "fill", "a", "150", NULL };
	char *fb[] = { wal_tool, wal_dir, "fill", "b", "150", NULL };
	char *fc[] = { wal_tool, wal_dir, "fill", "c", "150", NULL };
	char cmd[4 * PATH_MAX + 64], line[256], path[PATH_MAX + 300];
	struct tu_child c[4];
	const char *t = getenv("TMPDIR");
	int lines = 0;
	FILE *p;

	tu_sibling("../examples/wal", wal_tool, sizeof(wal_tool));
	snprintf(wal_dir, sizeof(wal_dir), "%s/safemap-wal.XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(wal_dir));
	tu_spawn(&c[0], run_wal, fa);
	tu_spawn(&c[1], run_wal, fb);
	tu_spawn(&c[2], checkpointer, NULL);
	tu_spawn(&c[3], run_wal, fc);
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(tu_wait(&c[k]), 0);

	/* Every put is there once, whatever snapshot was published when. */
	snprintf(cmd, sizeof(cmd), "'%s' '%s' checkpoint && '%s' '%s' dump", wal_tool, wal_dir,
		 wal_tool, wal_dir);
	ck_assert_ptr_nonnull(p = popen(cmd, "r"));
	while (fgets(line, sizeof(line), p)) {
		char who;
		int i, v;
		ck_assert_int_eq(sscanf(line, "%c%d=v%d", &who, &i, &v), 3);
		ck_assert(who == 'a' || who == 'b' || who == 'c');
		ck_assert_int_eq(i, v);
		lines++;
	}
	ck_assert_int_eq(pclose(p), 0);
	ck_assert_int_eq(lines, 450);

	snprintf(cmd, sizeof(cmd), "'%s' '%s' get b42", wal_tool, wal_dir);
	ck_assert_ptr_nonnull(p = popen(cmd, "r"));
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), p));
	ck_assert_str_eq(line, "v42\n");
	ck_assert_int_eq(pclose(p), 0);

	{
		DIR *d = opendir(wal_dir);
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.' &&
			    (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
				continue;
			/* no hidden leftovers: wal.log, its lock table, snapshot */
			ck_assert_msg(e->d_name[0] != '.', "left behind: %s", e->d_name);
			snprintf(path, sizeof(path), "%s/%s", wal_dir, e->d_name);
			unlink(path);
		}
		closedir(d);
		rmdir(wal_dir);
	}
}
END_TEST

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc;

	tc = tcase_create("basic");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, crc32c_known_values);
	tcase_add_test(tc, append_commit_iterate);
	tcase_add_test(tc, iterate_by_pointer);
	tcase_add_test(tc, record_outlives_log);
	tcase_add_test(tc, open_cuts_lost_record);
	tcase_add_test(tc, fork_child_is_stale);
	suite_add_tcase(s, tc);

	tc = tcase_create("appenders");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, three_appenders_exactly_once);
	suite_add_tcase(s, tc);

	tc = tcase_create("sigkill");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, sigkill_appender_prefix);
	suite_add_tcase(s, tc);

	tc = tcase_create("group");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, group_commit_shares_flushes);
	tcase_add_test(tc, leader_killed_mid_flush);
	tcase_add_test(tc, one_appender_syscalls);
	suite_add_tcase(s, tc);

	tc = tcase_create("wal");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, wal_example_several_processes);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, append_enospc_from_reservation);
	tcase_add_test(tc, commit_eio_is_sticky);
	tcase_add_test(tc, every_step_fails_cleanly);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(log_suite());
}
