/* SPDX-License-Identifier: MIT */
/*
 * bench_tmode.c - SPEC §8's table-authority figures (issues 15 and 32),
 * each with its baselines measured in the same run: medians of several
 * rounds in which the contenders alternate, the ratio, the target.
 *
 *   bench/bench_tmode [-r REPS] [-d DIR] [-f A|B|C|D|E] [-s STOPS]
 *
 *   A. map + first read + release of a 4 KiB read slice from a cached
 *      window: table mode vs an LMDB read transaction (mdb_txn_renew +
 *      mdb_get + mdb_txn_reset on a small environment; only when configure
 *      found liblmdb) and vs the raw sequence done by hand (F_OFD_SETLK +
 *      mmap + read + munmap + unlock, as bench/bench figure 1); kernel mode
 *      in the same run.
 *   B. 100,000 other regions held, by another process and by the measuring
 *      sm_file itself, vs none held (three table-mode files, rounds
 *      alternating): (a) sm_lock + sm_unlock of one and the same region;
 *      (b) sm_lock of 2,048 random new regions in a row, then their
 *      sm_unlock (slot claims from the freed list and the cursor both);
 *      figure A's slice.  Kernel mode's slice with 10,000 held by another
 *      process as the comparison (100,000 kernel locks would take minutes).
 *   C. 2 and 8 processes on random non-overlapping 4 KiB slices of one
 *      cached window: throughput, table mode vs kernel mode; read slices
 *      (the lock path), then 1 in 4 a write slice (which fallocates).
 *   D. contended: 2/4/8 processes on overlapping slices in a shared 1 MiB:
 *      busy rate and throughput, both modes.
 *   E. no stall: N and 2N processes (N = online CPUs) on fail-fast random
 *      4 KiB slices while a supervisor stops one of them (SIGSTOP, 1-2 ms,
 *      STOPS times per mode, 1,000 by default) at random moments: the
 *      other processes' latency of a map call plus its release, p99.9 and
 *      maximum, table mode beside kernel mode (runs alternating), and the
 *      refusals (-EBUSY) of regions in each process's own range, which
 *      nobody else touches: must be 0.  Beside them, in both modes: calls
 *      over 1 ms, and calls that lasted through a whole stop of another
 *      process (a stall makes one a stop; with more processes than CPUs
 *      the scheduler makes them too, in both modes); each process's first
 *      call is a warm-up, timed apart.
 *
 * Before the library has SM_OPT_TABLE_LOCKS (sm_open says -EINVAL) it
 * prints the kernel-mode figures and "table mode: not available".  The
 * whole run takes about a minute here (2 CPUs).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LMDB
#include <lmdb.h>
#endif

#include "bench-util.h"
#include "safemap.h"

#ifndef SM_OPT_TABLE_LOCKS /* until the library has SPEC §12's mode */
#define SM_OPT_TABLE_LOCKS 0x8u
#endif

#define PG 4096
#define NOINLINE __attribute__((noinline))
#define SPAN_A (1ull << 20)  /* figure A's slices: 256 pages of one cached window */
#define FILE_SIZE (32ull << 20)
#define HELD_BASE (16ull << 20)

static int reps = 5;
static char dir[256] = "/var/tmp";
static char kpath[512], tpath[512]; /* kernel-mode and table-mode files */
static int table_ok;

static void remove_file(const char *p)
{
	char t[600];

	unlink(p);
	snprintf(t, sizeof(t), "%s.smlock", p);
	unlink(t);
}

static int open_mode(const char *p, int table, sm_file **f)
{
	sm_options o = { .size = sizeof(o), .flags = table ? SM_OPT_TABLE_LOCKS : 0 };
	return sm_open(p, SM_RDWR, &o, f);
}

static int raw_lock(int fd, short type, uint64_t off, uint64_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = (off_t)len };
	return fcntl(fd, F_OFD_SETLK, &fl);
}

/* One row: a's median, b's median, a/b, the target.  NAN medians print as
 * "n/a" (a contender that is not available). */
static void row(const char *name, const char *an, const double *a, const char *bn, const double *b,
		int n, const char *unit, const char *target)
{
	double x = a ? median(a, n) : 0, y = b ? median(b, n) : 0;
	char ratio[32] = "  n/a";

	if (a && b && y > 0)
		snprintf(ratio, sizeof(ratio), "%.3fx", x / y);
	printf("  %-40s %s %9.1f %-5s %s %9.1f %-5s ratio %s  (target %s)\n", name, an, x, unit, bn, y,
	       unit, ratio, target);
}

/* ---- A and B: one 4 KiB read slice, map + first read + release --------- */

NOINLINE static void slices(sm_file *f, long iters)
{
	for (long i = 0; i < iters; i++) {
		uint64_t off = ((uint64_t)i * 7 * PG) % SPAN_A;
		sm_slice *s;
		uint8_t b;
		int rc = sm_map_read(f, off, PG, 0, &s);
		if (rc < 0 || (rc = sm_get_u8(s, 0, &b)) < 0 || (rc = sm_release(s)) < 0)
			die("slice", rc);
	}
}

NOINLINE static void raw_slices(int fd, long iters)
{
	for (long i = 0; i < iters; i++) {
		uint64_t off = ((uint64_t)i * 7 * PG) % SPAN_A;
		if (raw_lock(fd, F_RDLCK, off, PG) < 0)
			die("F_OFD_SETLK", 0);
		volatile uint8_t *p = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, (off_t)off);
		if (p == MAP_FAILED)
			die("mmap", 0);
		(void)p[0];
		munmap((void *)p, PG);
		raw_lock(fd, F_UNLCK, off, PG);
	}
}

#ifdef HAVE_LMDB
static MDB_env *env;
static MDB_txn *rtxn;
static MDB_dbi dbi;
static char lmdb_dir[600];

static void lmdb_setup(void)
{
	MDB_txn *t;
	char *val = calloc(1, PG);
	int rc;

	snprintf(lmdb_dir, sizeof(lmdb_dir), "%s/safemap-bench-lmdb.%d", dir, (int)getpid());
	if (mkdir(lmdb_dir, 0755) < 0)
		die(lmdb_dir, 0);
	if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_mapsize(env, 16u << 20)) ||
	    (rc = mdb_env_open(env, lmdb_dir, MDB_NOSYNC, 0644)) || (rc = mdb_txn_begin(env, NULL, 0, &t)) ||
	    (rc = mdb_dbi_open(t, NULL, 0, &dbi))) {
		fprintf(stderr, "bench_tmode: lmdb: %s\n", mdb_strerror(rc));
		exit(1);
	}
	for (uint32_t k = 0; k < 256; k++) { /* the same 1 MiB as the slices: 256 values of 4 KiB */
		MDB_val key = { sizeof(k), &k }, v = { PG, val };
		if ((rc = mdb_put(t, dbi, &key, &v, 0))) {
			fprintf(stderr, "bench_tmode: mdb_put: %s\n", mdb_strerror(rc));
			exit(1);
		}
	}
	if ((rc = mdb_txn_commit(t)) || (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &rtxn))) {
		fprintf(stderr, "bench_tmode: lmdb: %s\n", mdb_strerror(rc));
		exit(1);
	}
	mdb_txn_reset(rtxn);
	free(val);
}

NOINLINE static void lmdb_reads(long iters)
{
	for (long i = 0; i < iters; i++) {
		uint32_t k = (uint32_t)((i * 7) % 256);
		MDB_val key = { sizeof(k), &k }, v;
		int rc;
		if ((rc = mdb_txn_renew(rtxn)) || (rc = mdb_get(rtxn, dbi, &key, &v))) {
			fprintf(stderr, "bench_tmode: mdb_get: %s\n", mdb_strerror(rc));
			exit(1);
		}
		(void)*(volatile const char *)v.mv_data; /* the first read */
		mdb_txn_reset(rtxn);
	}
}

static void lmdb_teardown(void)
{
	char p[700];

	mdb_txn_abort(rtxn);
	mdb_env_close(env);
	snprintf(p, sizeof(p), "%s/data.mdb", lmdb_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/lock.mdb", lmdb_dir);
	unlink(p);
	rmdir(lmdb_dir);
}
#endif

/* Iterations for ~TARGET_S seconds per round, from a short trial: the
 * contenders differ by 1000x (and a loaded machine by more). */
#define TARGET_S 0.06
static long calibrate(void (*fn)(void *, long), void *arg)
{
	long n = 16;
	double t;

	for (;;) {
		double t0 = now();
		fn(arg, n);
		t = now() - t0;
		if (t > TARGET_S / 8 || n >= 1L << 24)
			break;
		n *= 4;
	}
	n = (long)((double)n * TARGET_S / (t > 0 ? t : 1e-9));
	return n < 16 ? 16 : n;
}

static double time_per_op(void (*fn)(void *, long), void *arg, long iters)
{
	double t0 = now();
	fn(arg, iters);
	return (now() - t0) / (double)iters * 1e9;
}

static void sm_fn(void *f, long n) { slices(f, n); }
static void raw_fn(void *fd, long n) { raw_slices(*(int *)fd, n); }
#ifdef HAVE_LMDB
static void lmdb_fn(void *unused, long n) { lmdb_reads(n); }
#endif

/* ns per slice of `iters` slices (after the caller's warm-up). */
static double time_slices(sm_file *f, long iters)
{
	return time_per_op(sm_fn, f, iters);
}

/* Another process holding n regions until told to stop: table mode,
 * sm_lock read ranges of 32 bytes at HELD_BASE + i * 64; kernel mode, raw
 * OFD read locks there (as bench/bench figure 2). */
static pid_t hold_in_child(const char *p, int table, int n, int *stop_fd)
{
	int ready[2], stop[2];
	pid_t pid;
	char c = 0;

	if (pipe(ready) < 0 || pipe(stop) < 0)
		die("pipe", 0);
	if ((pid = fork()) == 0) {
		close(stop[1]);
		close(ready[0]);
		if (table) {
			sm_file *f;
			sm_range *r;
			int rc = open_mode(p, 1, &f);
			for (int i = 0; rc == 0 && i < n; i++)
				rc = sm_lock(f, HELD_BASE + (uint64_t)i * 64, 32, SM_LOCK_READ, NULL, &r);
			if (rc < 0) {
				fprintf(stderr, "bench_tmode: holding %d regions: %s\n", n, sm_strerror(rc));
				_exit(1);
			}
		} else {
			int fd = open(p, O_RDONLY | O_CLOEXEC);
			for (int i = 0; i < n; i++)
				if (raw_lock(fd, F_RDLCK, HELD_BASE + (uint64_t)i * 64, 32) < 0)
					_exit(1);
		}
		(void)!write(ready[1], "r", 1);
		(void)!read(stop[0], &c, 1); /* EOF: the parent is done */
		_exit(0);
	}
	close(ready[1]);
	close(stop[0]);
	if (read(ready[0], &c, 1) != 1)
		die("holder child failed", -EIO);
	close(ready[0]);
	*stop_fd = stop[1];
	return pid;
}

static void release_child(pid_t pid, int stop)
{
	close(stop);
	waitpid(pid, NULL, 0);
}

/* ---- B: sm_lock ranges with 100,000 others held ------------------------ */

/* Figure B's regions are 32 bytes at HELD_BASE + j * 64 + 32, j < NHELD: the
 * gaps between the held ranges, so every search goes through the crowded
 * part of the holders' indexes, and nothing measured ever overlaps a held
 * range. */
#define NHELD 100000
#define CHURN 2048 /* new regions locked in a row, then released: > the 512 freed slots an owner keeps */
#define GAP(j) (HELD_BASE + (uint64_t)(j) * 64 + 32)

static uint32_t *churn_js; /* CHURN_BATCHES batches of CHURN distinct gap indexes */
#define CHURN_BATCHES 64

static void make_churn_js(void)
{
	uint8_t *used = calloc(NHELD, 1);
	unsigned seed = 12345;

	churn_js = malloc(sizeof(*churn_js) * CHURN * CHURN_BATCHES);
	if (!used || !churn_js)
		die("malloc", 0);
	for (int b = 0; b < CHURN_BATCHES; b++) {
		uint32_t *js = churn_js + (size_t)b * CHURN;
		for (int i = 0; i < CHURN; i++) {
			uint32_t j;
			do
				j = (uint32_t)rand_r(&seed) % NHELD;
			while (used[j]);
			used[j] = 1;
			js[i] = j;
		}
		for (int i = 0; i < CHURN; i++)
			used[js[i]] = 0;
	}
	free(used);
}

/* (a) lock + unlock of one and the same region, n times */
NOINLINE static void relock(sm_file *f, long n)
{
	for (long i = 0; i < n; i++) {
		sm_range *r;
		int rc = sm_lock(f, GAP(NHELD / 2), 32, SM_LOCK_WRITE, NULL, &r);
		if (rc < 0 || (rc = sm_unlock(r)) < 0)
			die("sm_lock (re-lock)", rc);
	}
}

/* (b) n locks of random new regions and n releases: CHURN held at a time,
 * locked in a row, then released in a row (so slots come from the freed
 * list and from the claim cursor both). */
static long churn_batch;
NOINLINE static void churn(sm_file *f, long n)
{
	static sm_range *held[CHURN];

	for (long done = 0; done < n;) {
		const uint32_t *js = churn_js + (size_t)(churn_batch++ % CHURN_BATCHES) * CHURN;
		int k = n - done < CHURN ? (int)(n - done) : CHURN, rc;
		for (int i = 0; i < k; i++)
			if ((rc = sm_lock(f, GAP(js[i]), 32, SM_LOCK_WRITE, NULL, &held[i])) < 0)
				die("sm_lock (churn)", rc);
		for (int i = 0; i < k; i++)
			if ((rc = sm_unlock(held[i])) < 0)
				die("sm_unlock (churn)", rc);
		done += k;
	}
}

static void relock_fn(void *f, long n) { relock(f, n); }
static void churn_fn(void *f, long n) { churn(f, n); }

static void figure_a(void)
{
	long ti = 0, ki, ri, li = 0;
	double tm[64], km[64], raw[64], lm[64];
	sm_file *kf, *tf = NULL;
	int fd, rc;

	make_file_at(kpath, FILE_SIZE);
	make_file_at(tpath, FILE_SIZE);
	if ((rc = open_mode(kpath, 0, &kf)) < 0)
		die("sm_open (kernel mode)", rc);
	if (table_ok && (rc = open_mode(tpath, 1, &tf)) < 0)
		die("sm_open (table mode)", rc);
	fd = open(kpath, O_RDWR | O_CLOEXEC);
	/* warm windows, page cache, size caches while calibrating */
#ifdef HAVE_LMDB
	lmdb_setup();
	li = calibrate(lmdb_fn, NULL);
#endif
	ki = calibrate(sm_fn, kf);
	ri = calibrate(raw_fn, &fd);
	if (tf)
		ti = calibrate(sm_fn, tf);
	for (int r = 0; r < reps; r++) {
		if (tf)
			tm[r] = time_slices(tf, ti);
		raw[r] = time_per_op(raw_fn, &fd, ri);
		km[r] = time_slices(kf, ki);
#ifdef HAVE_LMDB
		lm[r] = time_per_op(lmdb_fn, NULL, li);
#else
		(void)li;
		lm[r] = 0;
#endif
	}
	printf("A. map + first read + release of a 4 KiB read slice from a cached window\n");
	if (tf) {
#ifdef HAVE_LMDB
		row("table mode vs an LMDB read txn (renew+get+reset)", "table", tm, "lmdb", lm, reps, "ns/op",
		    "<= 1.0x");
#else
		printf("  LMDB: not installed (configure did not find liblmdb: apt-get install liblmdb-dev)\n");
#endif
		row("table mode vs the raw OFD+mmap sequence", "table", tm, "raw", raw, reps, "ns/op", "<= 0.05x");
	} else {
		printf("  table mode: not available (sm_open refuses SM_OPT_TABLE_LOCKS)\n");
#ifndef HAVE_LMDB
		printf("  LMDB: not installed (configure did not find liblmdb: apt-get install liblmdb-dev)\n");
#endif
	}
	row("kernel mode vs the raw OFD+mmap sequence", "kernel", km, "raw", raw, reps, "ns/op", "<= 1.0x (SPEC 8)");
#ifdef HAVE_LMDB
	row("kernel mode vs an LMDB read txn", "kernel", km, "lmdb", lm, reps, "ns/op", "(comparison)");
	lmdb_teardown();
#endif
	close(fd);
	sm_close(kf);
	if (tf)
		sm_close(tf);
	remove_file(kpath);
	remove_file(tpath);
}

/* Table mode: three files alike but for who holds NHELD ranges (nobody,
 * another process, the measured sm_file itself); each round times every
 * operation on each, in an order that turns from round to round.  Kernel
 * mode: the slice with 10,000 held by another process, for comparison. */
static void figure_b(void)
{
	enum { NONE, OTHER, SELF, NC };
	static const char *cname[NC] = { "none", "other", "self" };
	char path[NC][600];
	sm_file *f[NC];
	sm_range **mine = NULL;
	double rl[NC][64], ch[NC][64], sl[NC][64];
	long rli, chi, sli;
	int stop = -1, rc;
	pid_t pid = -1;

	printf("B. 100,000 other regions held (sm_lock, 32 bytes each) by another process, or by the\n"
	       "   measuring sm_file itself, vs none held: same table size, same regions\n");
	if (table_ok) {
		make_churn_js();
		for (int c = 0; c < NC; c++) {
			snprintf(path[c], sizeof(path[c]), "%s.b%d", tpath, c);
			make_file_at(path[c], FILE_SIZE);
			if ((rc = open_mode(path[c], 1, &f[c])) < 0)
				die("sm_open (table mode)", rc);
		}
		double t0 = now();
		pid = hold_in_child(path[OTHER], 1, NHELD, &stop);
		printf("  (another process took 100,000 sm_lock ranges in %.2f s", now() - t0);
		t0 = now();
		if (!(mine = malloc(sizeof(*mine) * NHELD)))
			die("malloc", 0);
		for (int i = 0; i < NHELD; i++)
			if ((rc = sm_lock(f[SELF], HELD_BASE + (uint64_t)i * 64, 32, SM_LOCK_READ, NULL, &mine[i])) < 0)
				die("sm_lock (holding 100,000)", rc);
		printf(", this one in %.2f s)\n", now() - t0);
		rli = calibrate(relock_fn, f[NONE]);
		chi = calibrate(churn_fn, f[NONE]);
		sli = calibrate(sm_fn, f[NONE]);
		for (int c = 0; c < NC; c++) { /* warm-up: windows, nodes, freed lists */
			relock(f[c], rli / 4);
			churn(f[c], CHURN * 2);
			slices(f[c], sli / 4);
		}
		for (int r = 0; r < reps; r++)
			for (int i = 0; i < NC; i++) {
				int c = (r + i) % NC;
				rl[c][r] = time_per_op(relock_fn, f[c], rli);
				ch[c][r] = time_per_op(churn_fn, f[c], chi);
				sl[c][r] = time_per_op(sm_fn, f[c], sli);
			}
		for (int c = OTHER; c <= SELF; c++) {
			char name[64];
			snprintf(name, sizeof(name), "(a) re-lock one region, held by %s", cname[c]);
			row(name, "held", rl[c], "none", rl[NONE], reps, "ns/op", "<= 1.2x");
		}
		for (int c = OTHER; c <= SELF; c++) {
			char name[64];
			snprintf(name, sizeof(name), "(b) lock+release new regions, by %s", cname[c]);
			row(name, "held", ch[c], "none", ch[NONE], reps, "ns/op", "<= 1.2x");
		}
		for (int c = OTHER; c <= SELF; c++) {
			char name[64];
			snprintf(name, sizeof(name), "4 KiB read slice (figure A), by %s", cname[c]);
			row(name, "held", sl[c], "none", sl[NONE], reps, "ns/op", "<= 1.2x");
		}
		release_child(pid, stop);
		for (int i = 0; i < NHELD; i++)
			(void)sm_unlock(mine[i]);
		free(mine);
		free(churn_js);
		for (int c = 0; c < NC; c++) {
			sm_close(f[c]);
			remove_file(path[c]);
		}
	} else {
		printf("  table mode: not available\n");
	}
	{
		double km[64], kh[64];
		sm_file *kf;

		make_file_at(kpath, FILE_SIZE);
		if ((rc = open_mode(kpath, 0, &kf)) < 0)
			die("sm_open (kernel mode)", rc);
		long ki = calibrate(sm_fn, kf);
		for (int r = 0; r < reps; r++)
			km[r] = time_slices(kf, ki);
		pid = hold_in_child(kpath, 0, 10000, &stop);
		long kih = calibrate(sm_fn, kf);
		for (int r = 0; r < reps; r++)
			kh[r] = time_slices(kf, kih);
		release_child(pid, stop);
		row("kernel mode slice, 10,000 held by another", "held", kh, "none", km, reps, "ns/op",
		    "(comparison)");
		sm_close(kf);
		remove_file(kpath);
	}
}

/* ---- C and D: throughput of several processes ----------------------------- */

/* Each worker takes random 4 KiB slices for `secs`, 1 in `wfrac` a write
 * (0: none).  Non-overlapping: pages of a 2 MiB region (one cached window)
 * whose index modulo nproc is the worker's, so workers never conflict and
 * the lock path, not mmap, is measured.  Overlapping: anywhere in a shared
 * 1 MiB at 64-byte offsets (conflicts fail fast and count as busy). */
static void worker(const char *p, int table, int id, int nproc, int overlap, int wfrac, double secs,
		   int out)
{
	const uint64_t pages = (2ull << 20) / PG;
	unsigned seed = (unsigned)id * 7919u + 1;
	long ops = 0, busy = 0;
	sm_file *f;

	if (open_mode(p, table, &f) < 0)
		_exit(1);
	double end = now() + secs;
	while (now() < end) {
		for (int k = 0; k < 64; k++) {
			uint64_t off = overlap ? (uint64_t)(rand_r(&seed) % (int)(((1 << 20) - PG) / 64)) * 64
					       : ((uint64_t)rand_r(&seed) % (pages / (uint64_t)nproc) * (uint64_t)nproc +
						  (uint64_t)id) * PG;
			int write = wfrac && rand_r(&seed) % wfrac == 0;
			sm_slice *s;
			uint8_t b;
			int rc = write ? sm_map_write(f, off, PG, 0, &s) : sm_map_read(f, off, PG, 0, &s);
			if (rc == -EBUSY) {
				busy++;
				continue;
			}
			if (rc < 0 || (write ? sm_put_u8(s, 0, 1) : sm_get_u8(s, 0, &b)) < 0)
				_exit(2);
			sm_release(s);
			ops++;
		}
	}
	sm_close(f);
	dprintf(out, "%ld %ld\n", ops, busy);
	_exit(0);
}

static double run_procs(const char *p, int table, int nproc, int overlap, int wfrac, double secs,
			double *busy_rate)
{
	int pp[2];
	long total = 0, busy = 0, o, b;

	if (pipe(pp) < 0)
		die("pipe", 0);
	for (int i = 0; i < nproc; i++)
		if (fork() == 0) {
			close(pp[0]);
			worker(p, table, i, nproc, overlap, wfrac, secs, pp[1]);
		}
	close(pp[1]);
	FILE *in = fdopen(pp[0], "r");
	while (fscanf(in, "%ld %ld", &o, &b) == 2) {
		total += o;
		busy += b;
	}
	fclose(in);
	while (wait(NULL) > 0)
		;
	*busy_rate = (double)busy / secs;
	return (double)total / secs;
}

static void procs_row(const char *label, int nproc, int overlap, int wfrac, double secs, const char *target)
{
	const int r3 = reps < 3 ? reps : 3;
	double t[8], k[8], tb[8], kb[8];
	char name[96];

	for (int r = 0; r < r3; r++) {
		if (table_ok)
			t[r] = run_procs(tpath, 1, nproc, overlap, wfrac, secs, &tb[r]);
		k[r] = run_procs(kpath, 0, nproc, overlap, wfrac, secs, &kb[r]);
	}
	snprintf(name, sizeof(name), "%d processes, %s", nproc, label);
	if (!table_ok) {
		printf("  %-40s table mode: not available; kernel %9.1f op/s (busy %.0f/s)\n", name, median(k, r3),
		       median(kb, r3));
		return;
	}
	row(name, "table", t, "kernel", k, r3, "op/s", target);
	if (overlap) {
		snprintf(name, sizeof(name), "%d processes, refused", nproc);
		row(name, "table", tb, "kernel", kb, r3, "/s", "(comparison)");
	}
}

static void figures_c_d(int which)
{
	const double secs = 0.5;

	make_file_at(kpath, FILE_SIZE);
	make_file_at(tpath, FILE_SIZE);
	if (which == 'C') {
		printf("C. random non-overlapping 4 KiB slices in a 2 MiB region (the pages of each process\n"
		       "   are its own), %.1f s per run, throughput\n", secs);
		procs_row("read slices", 2, 0, 0, secs, ">= 10x");
		procs_row("read slices", 8, 0, 0, secs, ">= 4x");
		procs_row("1 in 4 a write slice", 2, 0, 4, secs, "(with fallocate)");
		procs_row("1 in 4 a write slice", 8, 0, 4, secs, "(with fallocate)");
	} else {
		printf("D. contended: random 4 KiB slices (1 in 4 a write) anywhere in a shared 1 MiB, %.1f s\n"
		       "   per run: throughput and refused (-EBUSY) per second\n", secs);
		for (int n = 2; n <= 8; n *= 2)
			procs_row("throughput", n, 1, 4, secs, "(comparison)");
	}
	remove_file(kpath);
	remove_file(tpath);
}

/* ---- E: no stall -------------------------------------------------------- */

/* N processes take fail-fast 4 KiB slices (1 in 4 a write) at random pages:
 * half in a shared 1 MiB (conflicts: -EBUSY is a true answer there), half
 * in the process's own 256 KiB, which nobody else ever touches, so -EBUSY
 * there is a false refusal.  A supervisor SIGSTOPs one of them at random
 * moments for 1-2 ms each.  A sample is one map call plus its release
 * (the first access between them is not timed); a call of the stopped
 * process during its stop is left out: the process's stop sequence (odd
 * while it is being stopped) changed across the call or was odd. */
#define E_SHARED (1ull << 20)
#define E_OWN (256ull << 10)
#define E_NLONG 4096
#define E_NB (64 + 40 * 32) /* latency histogram: exact below 64 ns, then 32 per octave */

struct e_worker {
	uint64_t hist[E_NB];
	uint64_t max_ns, ops, busy_shared, busy_own, left_out, over_1ms;
	uint64_t through;  /* calls that lasted through a whole stop of another process */
	uint32_t nlong;    /* calls of 0.5 ms or more: when (the first E_NLONG) */
	struct { uint64_t t0, t1; } longs[E_NLONG];
	uint64_t first_ns; /* the process's first map + release (a warm-up, not in the figures) */
	uint32_t seq;   /* the supervisor's: odd while this process is being stopped */
	int failed;     /* a call failed with something else than -EBUSY */
	char pad[56];
};

struct e_shared {
	int go, done, ready;
	struct e_worker w[];
};

static int stops = 1000;

static int e_bucket(uint64_t ns)
{
	if (ns < 64)
		return (int)ns;
	int e = 63 - __builtin_clzll(ns); /* >= 6 */
	int b = 64 + (e - 6) * 32 + (int)((ns >> (e - 5)) & 31);
	return b < E_NB ? b : E_NB - 1;
}

static uint64_t e_bucket_top(int b) /* the largest value of bucket b */
{
	if (b < 64)
		return (uint64_t)b;
	int e = (b - 64) / 32 + 6, sub = (b - 64) % 32;
	return ((uint64_t)(32 + sub + 1) << (e - 5)) - 1;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void e_worker_run(const char *p, int table, int id, struct e_shared *sh)
{
	struct e_worker *w = &sh->w[id];
	unsigned seed = (unsigned)id * 7919u + (unsigned)getpid();
	const uint64_t own = E_SHARED + (uint64_t)id * E_OWN;
	sm_file *f;
	int rc;

	if ((rc = open_mode(p, table, &f)) < 0) {
		fprintf(stderr, "bench_tmode: worker sm_open: %s\n", sm_strerror(rc));
		_exit(1);
	}
	/* warm-up, not timed but the first call: a map of every page of the
	 * process's own range and of the shared MiB (windows, index nodes) */
	for (uint64_t off = 0; off < E_SHARED + E_OWN; off += PG) {
		sm_slice *s;
		uint64_t t0 = now_ns();
		rc = sm_map_read(f, off < E_SHARED ? off : own + off - E_SHARED, PG, 0, &s);
		if (rc == 0)
			rc = sm_release(s);
		if (off == 0)
			w->first_ns = now_ns() - t0;
		if (rc < 0 && rc != -EBUSY) {
			fprintf(stderr, "bench_tmode: worker %d: %s\n", id, sm_strerror(rc));
			_exit(1);
		}
	}
	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_ACQ_REL);
	while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
		usleep(100);
	while (!__atomic_load_n(&sh->done, __ATOMIC_RELAXED)) {
		for (int k = 0; k < 64; k++) {
			unsigned x = (unsigned)rand_r(&seed);
			bool mine = x & 1, write = (x >> 1) % 4 == 0;
			uint64_t off = mine ? own + (x >> 3) % (E_OWN / PG) * PG : (x >> 3) % (E_SHARED / PG) * PG;
			sm_slice *s;
			uint32_t s0 = __atomic_load_n(&w->seq, __ATOMIC_ACQUIRE);
			uint64_t t0 = now_ns();
			rc = write ? sm_map_write(f, off, PG, 0, &s) : sm_map_read(f, off, PG, 0, &s);
			uint64_t t1 = now_ns(), lat = t1 - t0;
			if (rc == 0) {
				uint8_t b;
				if (write ? sm_put_u8(s, 0, 1) : sm_get_u8(s, 0, &b)) {
					w->failed = 1;
					_exit(2);
				}
				t0 = now_ns();
				rc = sm_release(s);
				lat += now_ns() - t0;
				if (rc < 0) {
					w->failed = 1;
					_exit(2);
				}
			} else if (rc == -EBUSY) {
				if (mine)
					w->busy_own++;
				else
					w->busy_shared++;
			} else {
				fprintf(stderr, "bench_tmode: worker %d: %s\n", id, sm_strerror(rc));
				w->failed = 1;
				_exit(2);
			}
			uint32_t s1 = __atomic_load_n(&w->seq, __ATOMIC_ACQUIRE);
			if (s0 != s1 || (s0 & 1)) {
				w->left_out++;
				continue;
			}
			w->ops++;
			w->hist[e_bucket(lat)]++;
			w->over_1ms += lat >= 1000000;
			if (lat >= 500000 && w->nlong < E_NLONG) {
				w->longs[w->nlong].t0 = t1 - lat;
				w->longs[w->nlong++].t1 = now_ns();
			}
			if (lat > w->max_ns)
				w->max_ns = lat;
		}
	}
	sm_close(f);
	_exit(0);
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* One run: n workers, nstops stops; adds the workers' figures into acc. */
static void e_run(const char *p, int table, int n, int nstops, struct e_worker *acc, unsigned *seed)
{
	size_t sz = sizeof(struct e_shared) + (size_t)n * sizeof(struct e_worker);
	struct e_shared *sh = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct { uint64_t a, b; int v; } *win = calloc((size_t)nstops, sizeof(*win));
	pid_t pids[256];
	int st;

	if (sh == MAP_FAILED || !win)
		die("mmap", 0);
	for (int i = 0; i < n; i++) {
		if ((pids[i] = fork()) < 0)
			die("fork", 0);
		if (pids[i] == 0)
			e_worker_run(p, table, i, sh);
	}
	while (__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE) < n)
		usleep(1000);
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	sleep_ns(20000000); /* 20 ms running before the first stop */
	for (int s = 0; s < nstops; s++) {
		int v = rand_r(seed) % n;
		sleep_ns(100000 + (uint64_t)(rand_r(seed) % 900000)); /* 0.1-1 ms between stops */
		__atomic_add_fetch(&sh->w[v].seq, 1, __ATOMIC_ACQ_REL);
		kill(pids[v], SIGSTOP);
		if (waitpid(pids[v], &st, WUNTRACED) < 0 || !WIFSTOPPED(st))
			die("a worker did not stop", -EIO);
		win[s].v = v;
		win[s].a = now_ns();
		sleep_ns(1000000 + (uint64_t)(rand_r(seed) % 1000000)); /* stopped 1-2 ms */
		win[s].b = now_ns();
		kill(pids[v], SIGCONT);
		__atomic_add_fetch(&sh->w[v].seq, 1, __ATOMIC_ACQ_REL);
	}
	sleep_ns(20000000);
	__atomic_store_n(&sh->done, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < n; i++) {
		if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || sh->w[i].failed)
			die("a worker failed", -EIO);
		struct e_worker *w = &sh->w[i];
		for (int b = 0; b < E_NB; b++)
			acc->hist[b] += w->hist[b];
		if (w->max_ns > acc->max_ns)
			acc->max_ns = w->max_ns;
		acc->ops += w->ops;
		acc->busy_shared += w->busy_shared;
		acc->busy_own += w->busy_own;
		acc->left_out += w->left_out;
		acc->over_1ms += w->over_1ms;
		if (w->first_ns > acc->first_ns)
			acc->first_ns = w->first_ns;
		for (uint32_t l = 0; l < w->nlong; l++)
			for (int k = 0; k < nstops; k++)
				if (win[k].v != i && w->longs[l].t0 <= win[k].a && w->longs[l].t1 >= win[k].b) {
					acc->through++;
					break;
				}
	}
	munmap(sh, sz);
	free(win);
}

static double e_quantile_us(const struct e_worker *a, double q)
{
	uint64_t want = (uint64_t)((double)a->ops * q), seen = 0;

	for (int b = 0; b < E_NB; b++)
		if ((seen += a->hist[b]) > want)
			return (double)e_bucket_top(b) / 1e3;
	return (double)a->max_ns / 1e3;
}

static void figure_e(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned seed = 4242;

	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > 64)
		ncpu = 64;
	printf("E. no stall: N processes on random 4 KiB slices (fail-fast map + release, 1 in 4 a write;\n"
	       "   half in a shared 1 MiB, half in the process's own 256 KiB) while one of them, at random,\n"
	       "   is stopped (SIGSTOP) for 1-2 ms, %d times per mode; the OTHER processes' latency of a\n"
	       "   map call plus its release, table mode vs kernel mode, runs alternating\n", stops);
	if (!table_ok) {
		printf("  table mode: not available\n");
		return;
	}
	for (int n = (int)ncpu; n <= 2 * ncpu; n += (int)ncpu) {
		struct e_worker *acc = calloc(2, sizeof(*acc)); /* [0] table, [1] kernel */
		char name[64];
		double p[2], mx[2];

		if (!acc)
			die("calloc", 0);
		make_file_at(kpath, E_SHARED + (uint64_t)n * E_OWN);
		make_file_at(tpath, E_SHARED + (uint64_t)n * E_OWN);
		/* table, kernel, kernel, table: half the stops each */
		for (int half = 0; half < 2; half++)
			for (int i = 0; i < 2; i++) {
				int m = half ? 1 - i : i;
				e_run(m ? kpath : tpath, !m, n, (stops + 1 - half) / 2, &acc[m], &seed);
			}
		for (int m = 0; m < 2; m++) {
			p[m] = e_quantile_us(&acc[m], 0.999);
			mx[m] = (double)acc[m].max_ns / 1e3;
		}
		snprintf(name, sizeof(name), "%d processes (%ld CPUs): p99.9", n, ncpu);
		row(name, "table", &p[0], "kernel", &p[1], 1, "us", "<= 1.5x");
		snprintf(name, sizeof(name), "%d processes (%ld CPUs): max", n, ncpu);
		row(name, "table", &mx[0], "kernel", &mx[1], 1, "us", "<= 1.5x");
		printf("  %-40s table %9llu       kernel %9llu       %s\n", "  refused in its own range (must be 0)",
		       (unsigned long long)acc[0].busy_own, (unsigned long long)acc[1].busy_own,
		       acc[0].busy_own || acc[1].busy_own ? "VIOLATION" : "ok");
		printf("  %-40s table %9llu       kernel %9llu       (comparison: preemptions count)\n",
		       "  calls over 1 ms", (unsigned long long)acc[0].over_1ms,
		       (unsigned long long)acc[1].over_1ms);
		printf("  %-40s table %9llu       kernel %9llu       (kernel: the scheduler)\n",
		       "  calls through a whole stop of another", (unsigned long long)acc[0].through,
		       (unsigned long long)acc[1].through);
		printf("  %-40s table %9.1f us    kernel %9.1f us    (not in the figures)\n",
		       "  (a process's first call, the slowest)", (double)acc[0].first_ns / 1e3,
		       (double)acc[1].first_ns / 1e3);
		printf("  %-40s table %9llu       kernel %9llu\n", "  (calls timed)",
		       (unsigned long long)acc[0].ops, (unsigned long long)acc[1].ops);
		printf("  %-40s table %9llu       kernel %9llu       (comparison)\n",
		       "  (refused in the shared MiB)", (unsigned long long)acc[0].busy_shared,
		       (unsigned long long)acc[1].busy_shared);
		free(acc);
		remove_file(kpath);
		remove_file(tpath);
	}
}

static int probe_table_mode(void)
{
	sm_file *f;
	int rc;

	make_file_at(tpath, PG);
	rc = open_mode(tpath, 1, &f);
	if (rc == 0)
		sm_close(f);
	remove_file(tpath);
	if (rc == 0)
		return 1;
	if (rc != -EINVAL && rc != -ENOTSUP)
		die("sm_open with SM_OPT_TABLE_LOCKS", rc);
	return 0;
}

int main(int argc, char **argv)
{
	int only = 0, c;
	double t0 = now();

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt(argc, argv, "r:d:f:s:")) != -1) {
		switch (c) {
		case 'r': reps = atoi(optarg) < 1 ? 1 : atoi(optarg) > 64 ? 64 : atoi(optarg); break;
		case 'd': snprintf(dir, sizeof(dir), "%s", optarg); break;
		case 'f': only = optarg[0] & ~0x20; break;
		case 's': stops = atoi(optarg) < 1 ? 1 : atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench_tmode [-r REPS] [-d DIR] [-f A|B|C|D|E] [-s STOPS]\n");
			return 2;
		}
	}
	snprintf(kpath, sizeof(kpath), "%s/safemap-bench-kernel.%d", dir, (int)getpid());
	snprintf(tpath, sizeof(tpath), "%s/safemap-bench-table.%d", dir, (int)getpid());
	table_ok = probe_table_mode();
	printf("safemap bench_tmode: table-authority mode (SM_OPT_TABLE_LOCKS), %d repetitions, medians, "
	       "files in %s%s\n", reps, dir, table_ok ? "" : " -- table mode: not available");
	if (!only || only == 'A')
		figure_a();
	if (!only || only == 'B')
		figure_b();
	if (!only || only == 'C')
		figures_c_d('C');
	if (!only || only == 'D')
		figures_c_d('D');
	if (!only || only == 'E')
		figure_e();
	printf("(bench_tmode took %.0f s)\n", now() - t0);
	return 0;
}
