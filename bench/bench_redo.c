/* SPDX-License-Identifier: MIT */
/*
 * bench_redo.c - what binding a buffered slice to its log records costs,
 * each figure beside its baseline from the same run:
 *   - a durable put (a buffered 4 KiB page, a 100 B record appended, the
 *     page changed and committed with SM_SYNC) with the record bound
 *     (sm_slice_set_lsn: the commit commits the log first) against the
 *     same put keeping the order by hand (sm_log_commit, then sm_commit):
 *     1 and 4 threads, each on its own page;
 *   - an append plus a bind (no commit) against the append alone.
 *
 *   bench/bench_redo [-r REPS] [-d DIR] [-s SECONDS]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench-util.h"
#include "safemap.h"

#define REC 100
#define PAGE 4096
#define MAXT 4

static int reps = 3;
static double secs = 1.0;
static char dir[256] = "/var/tmp";
static char dpath[512], lpath[512];
static sm_file *f;
static sm_log *lg;
static atomic_bool stop;

struct worker {
	pthread_t t;
	int id;
	int mode; /* 0 bound put, 1 by hand, 2 append + bind, 3 append */
	long ops;
};

static void fail(const char *what, int rc)
{
	fprintf(stderr, "bench_redo: %s: %s\n", what, sm_strerror(rc));
	exit(1);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	unsigned char rec[REC];
	sm_slice *s = NULL;
	uint64_t lsn;
	int rc;

	memset(rec, w->id, sizeof(rec));
	if (w->mode >= 2 && (rc = sm_map_write(f, (uint64_t)w->id * PAGE, PAGE, SM_BUFFERED, &s)) < 0)
		fail("map", rc);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (w->mode >= 2) {
			if ((rc = sm_log_append(lg, rec, REC, &lsn)) < 0 ||
			    (w->mode == 2 && (rc = sm_slice_set_lsn(s, lg, lsn)) < 0))
				fail("append", rc);
			w->ops++;
			continue;
		}
		if ((rc = sm_map_write(f, (uint64_t)w->id * PAGE, PAGE, SM_BUFFERED | SM_WAIT, &s)) < 0 ||
		    (rc = sm_log_append(lg, rec, REC, &lsn)) < 0 ||
		    (w->mode == 0 && (rc = sm_slice_set_lsn(s, lg, lsn)) < 0) ||
		    (w->mode == 1 && (rc = sm_log_commit(lg)) < 0) ||
		    (rc = sm_write(s, 64, rec, REC)) < 0 || (rc = sm_put_u64_le(s, 0, lsn)) < 0 ||
		    (rc = sm_commit(s, 0)) < 0)
			fail("put", rc);
		sm_release(s);
		s = NULL;
		w->ops++;
	}
	if (s) {
		if (w->mode == 2 && (rc = sm_abort(s)) < 0)
			fail("abort", rc);
		sm_release(s);
	}
	return NULL;
}

/* Operations per second of n threads in mode. */
static double run(int mode, int n)
{
	struct worker w[MAXT];
	double t0, t;
	long ops = 0;

	atomic_store(&stop, false);
	for (int i = 0; i < n; i++) {
		w[i] = (struct worker){ .id = i, .mode = mode };
		if (pthread_create(&w[i].t, NULL, work, &w[i]) != 0)
			exit(1);
	}
	t0 = now();
	usleep((useconds_t)(secs * 1e6));
	atomic_store(&stop, true);
	for (int i = 0; i < n; i++) {
		pthread_join(w[i].t, NULL);
		ops += w[i].ops;
	}
	t = now() - t0;
	return (double)ops / t;
}

static void fig(const char *name, int mode, int base, int n, const char *target)
{
	double a[16], b[16], q[16];

	for (int r = 0; r < reps; r++) {
		/* alternate the order: a disk whose speed drifts skews a pair less */
		if (r & 1) {
			b[r] = run(base, n);
			a[r] = run(mode, n);
		} else {
			a[r] = run(mode, n);
			b[r] = run(base, n);
		}
		q[r] = a[r] / b[r];
	}
	printf("  %-34s bound %9.0f op/s   baseline %9.0f op/s   ratio %5.2fx  (target %s)\n", name,
	       median(a, reps), median(b, reps), median(q, reps), target);
}

int main(int argc, char **argv)
{
	sm_options o = { .size = sizeof(o), .create_size = MAXT * PAGE };
	int c, rc;

	while ((c = getopt(argc, argv, "r:d:s:")) != -1) {
		if (c == 'r')
			reps = atoi(optarg);
		else if (c == 'd')
			snprintf(dir, sizeof(dir), "%s", optarg);
		else if (c == 's')
			secs = atof(optarg);
		else
			return 2;
	}
	if (reps < 1 || reps > 16)
		reps = 3;
	snprintf(dpath, sizeof(dpath), "%s/safemap-bench-redo.%d", dir, (int)getpid());
	snprintf(lpath, sizeof(lpath), "%s/safemap-bench-redo-log.%d", dir, (int)getpid());
	if ((rc = sm_open(dpath, SM_RDWR | SM_CREATE, &o, &f)) < 0 ||
	    (rc = sm_log_open(lpath, SM_RDWR | SM_CREATE, NULL, &lg)) < 0)
		fail("open", rc);
	printf("bound puts (sm_slice_set_lsn) in %s, %.1f s x %d rounds, medians:\n", dir, secs, reps);
	fig("durable put, 1 thread", 0, 1, 1, ">= 0.95x");
	fig("durable put, 4 threads", 0, 1, 4, ">= 0.95x");
	fig("append + bind vs append, 1 thread", 2, 3, 1, ">= 0.80x");
	if ((rc = sm_log_close(lg)) < 0 || (rc = sm_close(f)) < 0)
		fail("close", rc);
	for (int i = 0; i < 2; i++) {
		const char *p = i ? lpath : dpath;
		char t[600];
		unlink(p);
		snprintf(t, sizeof(t), "%s.smlock", p);
		unlink(t);
	}
	return 0;
}
