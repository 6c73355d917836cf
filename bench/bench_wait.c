/* SPDX-License-Identifier: MIT */
/*
 * bench_wait.c - SM_WAIT wake-up latency (SPEC §3.4, issue 16): the time
 * from a release in one process to the return of sm_lock(SM_WAIT) in
 * another that was asleep waiting for it, p50 and p99 over ROUNDS rounds.
 * Baseline from the same run: the same two processes woken through a pipe
 * (the parent writes a byte, the child returns from read), the cheapest
 * cross-process wake-up there is.  Also the cost of an uncontended
 * sm_lock + sm_unlock with and without SM_WAIT.
 *
 * Each round makes sure the waiter is really asleep (its entry is in the
 * table and /proc/PID/stat says S) before the release, so the figure is a
 * futex wake-up, not a lucky retry.
 *
 * Targets: p99 <= 1 ms in kernel-lock mode; <= 100 us in table-authority
 * mode (measured only when SM_OPT_TABLE_LOCKS exists and sm_open accepts it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"
#include "safemap.h"

#define ROUNDS 1000

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void pct(uint64_t *v, int n, double *p50, double *p99)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	*p50 = (double)v[n / 2] / 1000.0;
	*p99 = (double)v[(n * 99) / 100] / 1000.0;
}

/* Is process pid asleep (state S)? */
static bool asleep(pid_t pid)
{
	char path[64], buf[256], *p;
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

static void xread(int fd, void *b, size_t n)
{
	if (read(fd, b, n) != (ssize_t)n)
		die("read", 0);
}

static void xwrite(int fd, const void *b, size_t n)
{
	if (write(fd, b, n) != (ssize_t)n)
		die("write", 0);
}

/* The waiter: per round, wait for "go", sm_lock(SM_WAIT), report when it
 * returned, unlock.  mode 1: pipe baseline (read the byte instead). */
static void child(const char *path, unsigned flags, int mode, int in, int out, int wake)
{
	sm_options o = { .size = sizeof(o), .flags = flags, .wait_ns = SM_WAIT_FOREVER };
	sm_file *f;
	sm_range *r;
	char c;
	int rc;

	if ((rc = sm_open(path, SM_RDWR, &o, &f)) < 0)
		die("sm_open (child)", rc);
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t t;
		xread(in, &c, 1);
		if (mode == 1) {
			xread(wake, &c, 1);
			t = now_ns();
		} else {
			if ((rc = sm_lock(f, 0, 1, SM_LOCK_WRITE | SM_WAIT, NULL, &r)) < 0)
				die("sm_lock(SM_WAIT)", rc);
			t = now_ns();
			sm_unlock(r);
		}
		xwrite(out, &t, sizeof(t));
	}
	sm_close(f);
	_exit(0);
}

static int run(const char *path, unsigned flags, int mode, double *p50, double *p99)
{
	int to[2], from[2], wake[2];
	static uint64_t lat[ROUNDS];
	sm_options o = { .size = sizeof(o), .flags = flags };
	sm_file *f;
	sm_range *r;
	pid_t pid;
	int rc;

	if ((rc = sm_open(path, SM_RDWR, &o, &f)) < 0)
		return rc;
	if (pipe(to) < 0 || pipe(from) < 0 || pipe(wake) < 0)
		die("pipe", 0);
	if ((pid = fork()) < 0)
		die("fork", 0);
	if (pid == 0) {
		sm_close(f); /* the child opens its own */
		child(path, flags, mode, to[0], from[1], wake[0]);
	}
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t t0, t1;
		sm_holder h[4];
		if (mode == 0 && (rc = sm_lock(f, 0, 1, SM_LOCK_WRITE, NULL, &r)) < 0)
			die("sm_lock", rc);
		xwrite(to[1], "g", 1);
		/* until the waiter is registered and asleep */
		for (;;) {
			int n = mode == 0 ? sm_holders(f, 0, 1, h, 4) : 2;
			bool waiting = mode == 1;
			for (int k = 0; k < n && k < 4 && !waiting; k++)
				waiting = h[k].state == SM_WAITING;
			if (waiting && asleep(pid))
				break;
		}
		t0 = now_ns();
		if (mode == 0)
			sm_unlock(r);
		else
			xwrite(wake[1], "w", 1);
		xread(from[0], &t1, sizeof(t1));
		lat[i] = t1 - t0;
	}
	waitpid(pid, NULL, 0);
	close(to[0]), close(to[1]), close(from[0]), close(from[1]), close(wake[0]), close(wake[1]);
	sm_close(f);
	pct(lat, ROUNDS, p50, p99);
	return 0;
}

/* Uncontended sm_lock + sm_unlock, ns per pair. */
static double uncontended(const char *path, int flags)
{
	sm_file *f;
	sm_range *r;
	uint64_t t0;
	int n = 100000, rc;

	if ((rc = sm_open(path, SM_RDWR, NULL, &f)) < 0)
		die("sm_open", rc);
	t0 = now_ns();
	for (int i = 0; i < n; i++) {
		if ((rc = sm_lock(f, 0, 1, SM_LOCK_WRITE | flags, NULL, &r)) < 0)
			die("sm_lock", rc);
		sm_unlock(r);
	}
	t0 = now_ns() - t0;
	sm_close(f);
	return (double)t0 / n;
}

int main(void)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[4096], tpath[4200];
	double p50, p99, b50, b99;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/safemap-bench-wait.%d", dir, (int)getpid());
	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	if ((fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		die(path, 0);
	close(fd);

	printf("SM_WAIT wake-up latency, release in one process -> sm_lock(SM_WAIT) returns in another, %d rounds\n",
	       ROUNDS);
	if ((rc = run(path, 0, 1, &b50, &b99)) < 0)
		die("baseline", rc);
	if ((rc = run(path, 0, 0, &p50, &p99)) < 0)
		die("kernel mode", rc);
	printf("  kernel mode   p50 %8.1f us  p99 %8.1f us   baseline (pipe wake-up) p50 %8.1f us  p99 %8.1f us   (target p99 <= 1000 us: %s)\n",
	       p50, p99, b50, b99, p99 <= 1000.0 ? "met" : "MISSED");
#ifdef SM_OPT_TABLE_LOCKS
	{
		sm_options o = { .size = sizeof(o), .flags = SM_OPT_TABLE_LOCKS };
		sm_file *f;
		char tpath2[4200];
		snprintf(tpath2, sizeof(tpath2), "%s.t", path);
		if ((fd = open(tpath2, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) >= 0)
			close(fd);
		if (sm_open(tpath2, SM_RDWR, &o, &f) == 0) {
			sm_close(f);
			if ((rc = run(tpath2, SM_OPT_TABLE_LOCKS, 0, &p50, &p99)) < 0)
				printf("  table mode: not measured (%s)\n", sm_strerror(rc));
			else
				printf("  table mode    p50 %8.1f us  p99 %8.1f us   baseline (pipe wake-up) p50 %8.1f us  p99 %8.1f us   (target p99 <= 100 us: %s)\n",
				       p50, p99, b50, b99, p99 <= 100.0 ? "met" : "MISSED");
		} else {
			printf("  table mode: not measured (not implemented)\n");
		}
		unlink(tpath2);
		snprintf(tpath, sizeof(tpath), "%s.t.smlock", path);
		unlink(tpath);
		snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	}
#else
	printf("  table mode: not measured (not implemented)\n");
#endif
	{
		double w = uncontended(path, SM_WAIT), nw = uncontended(path, 0);
		printf("  uncontended sm_lock + sm_unlock with SM_WAIT %8.0f ns   baseline without SM_WAIT %8.0f ns\n", w,
		       nw);
	}
	unlink(path);
	unlink(tpath);
	return 0;
}
