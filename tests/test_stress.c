/* SPDX-License-Identifier: MIT */
/*
 * test_stress.c - processes x threads on random ranges of one file, with
 * exact invariants (SPEC §9):
 *   - a writer stamps every word of its range with (id, sequence), commits,
 *     and before releasing checks that every word still carries its stamp:
 *     no other writer ever overlapped it;
 *   - a reader checksums its range when mapped and again before release:
 *     nothing changed under a read lock;
 *   - every commit a writer reports is appended to its log, and at the end
 *     each writer's log holds its sequence numbers 1..n exactly once;
 *   - when all workers have released everything, /proc/locks holds no
 *     lock on the data file (table mode: none but the fence of SPEC §12.4,
 *     read locks over [0, 2^62) and the band above it) and sm_holders
 *     reports no holder: no leaked lock;
 *   - nothing deadlocks (a Check timeout would fire).
 * SAFEMAP_STRESS_SECONDS sets the duration (default 20; check-valgrind
 * uses less).  The operation counts are printed.  It runs in both lock
 * modes: tests/test_stress-table is this program with
 * SAFEMAP_TEST_MODE=table (SM_OPT_TABLE_LOCKS, SPEC §12).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

#define NPROC 4
#define NTHREAD 3
#define FILE_SIZE (256 * 1024)
#define MAX_LEN 2048

struct counters {
	long reads, writes, commits, busy, violations;
};

struct worker {
	sm_file *f;
	int id;
	unsigned seed;
	double end;
	FILE *log;
	struct counters c;
	uint64_t seq;
	char why[160];
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t stamp(int id, uint64_t seq)
{
	return (uint64_t)id << 48 | seq;
}

static void *work(void *p)
{
	struct worker *w = p;

	while (now() < w->end) {
		uint64_t off = (uint64_t)(rand_r(&w->seed) % (FILE_SIZE - MAX_LEN)) & ~7ull;
		uint64_t len = 8 + ((uint64_t)(rand_r(&w->seed) % MAX_LEN) & ~7ull);
		bool write = rand_r(&w->seed) % 3 == 0;
		int flags = write && rand_r(&w->seed) % 2 ? SM_BUFFERED : 0;
		sm_slice *s;
		uint64_t v;
		int rc = write ? sm_map_write(w->f, off, len, flags, &s) : sm_map_read(w->f, off, len, 0, &s);

		if (rc == -EBUSY) {
			w->c.busy++;
			continue;
		}
		if (rc < 0) {
			snprintf(w->why, sizeof(w->why), "map: %s", sm_strerror(rc));
			w->c.violations++;
			return NULL;
		}
		if (write) {
			uint64_t st = stamp(w->id, ++w->seq);
			for (uint64_t o = 0; o < len; o += 8)
				if (sm_put_u64_le(s, o, st) < 0)
					w->c.violations++;
			if ((rc = sm_commit(s, 0)) < 0) {
				snprintf(w->why, sizeof(w->why), "commit: %s", sm_strerror(rc));
				w->c.violations++;
			} else {
				w->c.commits++;
				fprintf(w->log, "%d %llu\n", w->id, (unsigned long long)w->seq);
			}
			for (uint64_t o = 0; o < len; o += 8)
				if (sm_get_u64_le(s, o, &v) < 0 || v != st) {
					snprintf(w->why, sizeof(w->why),
						 "writer %d: word at %llu changed under its write lock", w->id,
						 (unsigned long long)(off + o));
					w->c.violations++;
					break;
				}
			w->c.writes++;
		} else {
			uint64_t a = 0, b = 0;
			for (uint64_t o = 0; o < len; o += 8)
				if (sm_get_u64_le(s, o, &v) == 0)
					a = a * 31 + v;
			sched_yield(); /* give writers a chance to (wrongly) interfere */
			for (uint64_t o = 0; o < len; o += 8)
				if (sm_get_u64_le(s, o, &v) == 0)
					b = b * 31 + v;
			if (a != b) {
				snprintf(w->why, sizeof(w->why), "reader %d: range changed under its read lock",
					 w->id);
				w->c.violations++;
			}
			w->c.reads++;
		}
		sm_release(s);
	}
	return NULL;
}

struct proc_arg {
	const char *path, *logdir;
	double seconds;
};

/* One process: NTHREAD threads on one sm_file (and a second sm_file for
 * one of them, so two descriptions of one process conflict too). */
static int process(void *arg, int in, int out)
{
	struct proc_arg *a = arg;
	struct worker w[NTHREAD];
	pthread_t t[NTHREAD];
	sm_file *f, *g;
	char buf[16], logpath[4200];
	int id;

	ck_assert(tu_recv(in, buf, sizeof(buf)));
	id = atoi(buf);
	if (tu_open(a->path, SM_RDWR, NULL, &f) < 0 || tu_open(a->path, SM_RDWR, NULL, &g) < 0)
		return 3;
	double end = now() + a->seconds;
	for (int i = 0; i < NTHREAD; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].f = i == 0 ? g : f;
		w[i].id = id * NTHREAD + i + 1;
		w[i].seed = (unsigned)w[i].id * 2654435761u;
		w[i].end = end;
		snprintf(logpath, sizeof(logpath), "%s/log.%d", a->logdir, w[i].id);
		w[i].log = fopen(logpath, "we");
		if (!w[i].log)
			return 4;
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	struct counters sum = { 0 };
	const char *why = "";
	for (int i = 0; i < NTHREAD; i++) {
		pthread_join(t[i], NULL);
		fclose(w[i].log);
		sum.reads += w[i].c.reads;
		sum.writes += w[i].c.writes;
		sum.commits += w[i].c.commits;
		sum.busy += w[i].c.busy;
		sum.violations += w[i].c.violations;
		if (w[i].why[0])
			why = w[i].why;
	}
	tu_send(out, "%ld %ld %ld %ld %ld %s", sum.reads, sum.writes, sum.commits, sum.busy,
		sum.violations, why);
	/* everything released: wait while the parent checks /proc/locks */
	ck_assert(tu_recv(in, buf, sizeof(buf)));
	sm_close(f);
	sm_close(g);
	return 0;
}

/* Kernel locks on path; in table mode the fence's are not counted: read
 * locks that start at 0 and end at 2^62 - 1, or lie at or above 2^62. */
static int locks_on(const char *path)
{
	struct stat st;
	char line[512];
	int n = 0;
	FILE *f;

	ck_assert_int_eq(stat(path, &st), 0);
	f = fopen("/proc/locks", "re");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		unsigned long long ino, start = 0;
		char type[16] = "", end[32] = "";
		char *p = strchr(line, ':');
		if (p && sscanf(p + 1, "%*s %*s %15s %*d %x:%x:%llu %llu %31s", type, &maj, &min, &ino, &start, end) >= 4 &&
		    makedev(maj, min) == st.st_dev && ino == (unsigned long long)st.st_ino) {
			/* the library's marks above 2^62 (both modes) and table
			 * mode's fence are no regions */
			bool mark = strcmp(type, "READ") == 0 && start >= 1ull << 62;
			bool fence = strcmp(type, "READ") == 0 && start == 0 &&
				     strtoull(end, NULL, 10) == (1ull << 62) - 1;
			if (!mark && !(tu_table_mode() && fence))
				n++;
		}
	}
	fclose(f);
	return n;
}

START_TEST(processes_and_threads_on_random_ranges)
{
	TU_REQUIRE_MODE();
	const char *p = tu_tmpfile(FILE_SIZE);
	const char *env = getenv("SAFEMAP_STRESS_SECONDS");
	struct proc_arg a = { p, NULL, env ? atof(env) : 20.0 };
	struct tu_child c[NPROC];
	struct counters total = { 0 };
	char logdir[4200], line[512];
	double t0 = now();

	if (a.seconds <= 0)
		a.seconds = 20.0;
	snprintf(logdir, sizeof(logdir), "%s.logs", p);
	ck_assert_int_eq(mkdir(logdir, 0755), 0);
	a.logdir = logdir;
	for (int i = 0; i < NPROC; i++)
		tu_spawn(&c[i], process, &a);
	for (int i = 0; i < NPROC; i++)
		tu_send(c[i].to, "%d", i);
	for (int i = 0; i < NPROC; i++) {
		struct counters k;
		char why[256] = "";
		ck_assert(tu_recv(c[i].from, line, sizeof(line)));
		ck_assert_int_ge(sscanf(line, "%ld %ld %ld %ld %ld %255[^\n]", &k.reads, &k.writes, &k.commits,
					&k.busy, &k.violations, why),
				 5);
		ck_assert_msg(k.violations == 0, "process %d: %ld violations: %s", i, k.violations, why);
		total.reads += k.reads;
		total.writes += k.writes;
		total.commits += k.commits;
		total.busy += k.busy;
	}
	/* every worker released all its slices: no lock may remain, and the
	 * table names no holder */
	ck_assert_int_eq(locks_on(p), 0);
	{
		sm_file *f;
		sm_holder h[4];
		ck_assert_int_eq(tu_open(p, SM_RDONLY, NULL, &f), 0);
		int n = sm_holders(f, 0, FILE_SIZE, h, 4);
		ck_assert_msg(n == 0, "%d holders left, the first %d:%s [%llu, +%llu)", n, n > 0 ? h[0].pid : 0,
			      n > 0 && h[0].mode == SM_MODE_WRITE ? "w" : "r",
			      n > 0 ? (unsigned long long)h[0].off : 0ull,
			      n > 0 ? (unsigned long long)h[0].len : 0ull);
		ck_assert_int_eq(sm_close(f), 0);
	}
	for (int i = 0; i < NPROC; i++)
		tu_send(c[i].to, "bye");
	for (int i = 0; i < NPROC; i++)
		ck_assert_int_eq(tu_wait(&c[i]), 0);

	/* every committed sequence number is in its writer's log exactly once */
	static uint64_t *seqs[NPROC * NTHREAD + 1];
	static size_t nseqs[NPROC * NTHREAD + 1];
	long logged = 0;
	for (int id = 1; id <= NPROC * NTHREAD; id++) {
		size_t cap = 1024;
		seqs[id] = malloc(cap * sizeof(uint64_t));
		char lp[4300];
		snprintf(lp, sizeof(lp), "%s/log.%d", logdir, id);
		FILE *f = fopen(lp, "re");
		ck_assert_ptr_nonnull(f);
		unsigned long long seq, expect = 0;
		int who;
		while (fscanf(f, "%d %llu", &who, &seq) == 2) {
			ck_assert_int_eq(who, id);
			ck_assert_uint_gt(seq, expect); /* increasing: never twice */
			expect = seq;
			logged++;
			if (nseqs[id] == cap)
				seqs[id] = realloc(seqs[id], (cap *= 2) * sizeof(uint64_t));
			seqs[id][nseqs[id]++] = seq;
		}
		fclose(f);
		unlink(lp);
	}
	rmdir(logdir);
	ck_assert_int_eq(logged, total.commits);

	/* the file holds only committed stamps (or zeros): no torn or lost
	 * write is visible */
	static uint64_t words[FILE_SIZE / 8];
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(pread(fd, words, sizeof(words), 0), (ssize_t)sizeof(words));
	close(fd);
	for (size_t i = 0; i < FILE_SIZE / 8; i++) {
		uint64_t w = words[i], seq = w & ((1ull << 48) - 1);
		int id = (int)(w >> 48);
		if (w == 0)
			continue;
		ck_assert_msg(id >= 1 && id <= NPROC * NTHREAD, "word %zu: no writer %d", i, id);
		size_t lo = 0, hi = nseqs[id];
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (seqs[id][mid] < seq)
				lo = mid + 1;
			else
				hi = mid;
		}
		ck_assert_msg(lo < nseqs[id] && seqs[id][lo] == seq,
			      "word %zu: stamp (%d, %llu) was never committed", i, id, (unsigned long long)seq);
	}
	for (int id = 1; id <= NPROC * NTHREAD; id++)
		free(seqs[id]);
	ck_assert_int_gt(total.writes, 0);
	ck_assert_int_gt(total.reads, 0);
	printf("stress: %s mode, %d processes x %d threads, %.1f s: %ld reads, %ld writes, %ld commits, "
	       "%ld refused (-EBUSY), 0 violations\n",
	       tu_table_mode() ? "table" : "kernel", NPROC, NTHREAD, now() - t0, total.reads, total.writes, total.commits, total.busy);
}
END_TEST

static Suite *stress_suite(void)
{
	Suite *s = suite_create("stress");
	TCase *tc = tcase_create("stress");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, processes_and_threads_on_random_ranges);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(stress_suite());
}
