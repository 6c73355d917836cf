/* SPDX-License-Identifier: MIT */
/*
 * bench_sqlite.c - SQLite WAL throughput, stock "unix" VFS against the
 * "safemap" VFS (kernel-lock mode) and the "safemap-table" VFS
 * (table-authority mode), in one run (make bench-sqlite).
 *
 * Rows: 1 process x 10,000 autocommit inserts, 4 processes x 5,000
 * autocommit inserts, 4 processes x 50,000 lookups by primary key (each its
 * own read transaction) on a 10,000-row table; journal_mode=WAL,
 * synchronous=NORMAL.  Each row runs RUNS times per VFS, rotating which
 * VFS goes first, on a fresh database; the median throughput of each and
 * its ratio to stock are printed; then the workers' median CPU time
 * per operation (user + system, from wait4: less sensitive to a busy
 * machine than wall-clock throughput) and its ratio stock / VFS; then the
 * paired estimate: each round's ratio VFS / stock (the two ran seconds
 * apart, so slow drifts of the machine cancel), its median and the
 * range of its middle half (quartiles).
 *
 * usage: bench_sqlite [-r RUNS] [-s SCALE%] [-d DIR]
 *   -r  runs per VFS and row (default 21: the 4-writer row waits in
 *       SQLite's busy handler, whose millisecond sleeps make single runs
 *       noisy, and a VM's speed drifts by several percent within a minute)
 *   -s  percentage of the operation counts (default 100; for a quick look)
 *   -d  directory for the databases (default $TMPDIR or /tmp)
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "safemap_vfs.h"

#define MAXRUNS 31
#define NVFS 3
#define LOOKUP_ROWS 10000

static char dbpath[PATH_MAX];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, sqlite3 *db)
{
	fprintf(stderr, "bench_sqlite: %s: %s\n", what, db ? sqlite3_errmsg(db) : strerror(errno));
	exit(1);
}

static sqlite3 *open_db(const char *vfs)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs))
		die("open", db);
	sqlite3_busy_timeout(db, 60000);
	if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", 0, 0, 0))
		die("pragma", db);
	return db;
}

static void remove_db(void)
{
	static const char *const sfx[] = { "", "-wal", "-shm", ".smlock", "-shm.smlock" };
	char p[PATH_MAX + 16];

	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", dbpath, sfx[i]);
		unlink(p);
	}
}

/* A fresh database; with rows > 0, filled with that many rows. */
static void prepare(const char *vfs, int rows)
{
	sqlite3 *db;

	remove_db();
	db = open_db(vfs);
	if (sqlite3_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", 0, 0, 0))
		die("create", db);
	if (rows > 0) {
		char sql[256];

		snprintf(sql, sizeof(sql),
			 "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < %d) "
			 "INSERT INTO t SELECT i, randomblob(100) FROM c",
			 rows);
		if (sqlite3_exec(db, sql, 0, 0, 0))
			die("fill", db);
	}
	if (sqlite3_close(db))
		die("close", NULL);
}

/* One worker: n inserts or n lookups on its open connection. */
static int work(sqlite3 *db, int lookups, int n, unsigned seed)
{
	sqlite3_stmt *st;
	unsigned x = seed * 2654435761u + 1;

	if (sqlite3_prepare_v2(db, lookups ? "SELECT v FROM t WHERE id = ?1"
					   : "INSERT INTO t(v) VALUES (randomblob(100))",
			       -1, &st, NULL))
		die("prepare", db);
	for (int i = 0; i < n; i++) {
		int rc;

		if (lookups) {
			x = x * 1103515245u + 12345u;
			sqlite3_bind_int(st, 1, (int)((x >> 8) % LOOKUP_ROWS) + 1);
		}
		rc = sqlite3_step(st);
		if (rc != (lookups ? SQLITE_ROW : SQLITE_DONE))
			die("step", db);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (sqlite3_close(db))
		die("close", NULL);
	return 0;
}

/* nproc processes x n operations; returns operations per second, timed
 * from the moment all workers have their connection open, and in *cpu_us
 * the workers' CPU time (user + system, opening included) per operation. */
static double run(const char *vfs, int nproc, int lookups, int n, double *cpu_us)
{
	double cpu = 0;
	int ready[2], go[2];
	pid_t pid[16];
	double t0;
	char c;

	prepare(vfs, lookups ? LOOKUP_ROWS : 0);
	if (pipe(ready) || pipe(go))
		die("pipe", NULL);
	for (int i = 0; i < nproc; i++) {
		pid[i] = fork();
		if (pid[i] < 0)
			die("fork", NULL);
		if (pid[i] == 0) {
			close(ready[0]);
			close(go[1]);
			/* open first so the timing covers the operations only */
			sqlite3 *db = open_db(vfs);

			if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 0)
				_exit(2);
			_exit(work(db, lookups, n, (unsigned)i + 1));
		}
	}
	close(ready[1]);
	close(go[0]);
	for (int i = 0; i < nproc; i++)
		if (read(ready[0], &c, 1) != 1)
			die("worker start", NULL);
	t0 = now_s();
	close(go[1]); /* EOF: go */
	for (int i = 0; i < nproc; i++) {
		struct rusage ru;
		int status;

		if (wait4(pid[i], &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			die("worker failed", NULL);
		cpu += (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	}
	close(ready[0]);
	*cpu_us = cpu * 1e6 / ((double)nproc * n);
	return (double)nproc * n / (now_s() - t0);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of v[0..n) (v unchanged: the rounds stay paired). */
static double median(const double *v, int n)
{
	double s[MAXRUNS];

	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* The per-round ratios a[i] / b[i]: quartiles in q[0..2]; false when
 * there are too few rounds for quartiles to mean anything. */
static bool paired(const double *a, const double *b, int n, double q[3])
{
	double r[MAXRUNS];

	if (n < 3)
		return false;
	for (int i = 0; i < n; i++)
		r[i] = a[i] / b[i];
	q[1] = median(r, n);
	qsort(r, (size_t)n, sizeof(*r), cmp);
	q[0] = r[(n - 1) / 4];
	q[2] = r[n - 1 - (n - 1) / 4];
	return true;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int nproc, lookups, n;
	} rows[] = {
		{ "1 x 10000 inserts", 1, 0, 10000 },
		{ "4 x 5000 inserts", 4, 0, 5000 },
		{ "4 x 50000 lookups", 4, 1, 50000 },
	};
	/* stock first; "safemap-table" never shares a database with stock
	 * processes: each run has a fresh database of its own */
	static const char *const vfs[NVFS] = { "unix", "safemap", "safemap-table" };
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX - 64];
	int runs = 21, scale = 100, opt;

	snprintf(dir, sizeof(dir), "%s", tmp && *tmp ? tmp : "/tmp");
	while ((opt = getopt(argc, argv, "r:s:d:")) != -1) {
		switch (opt) {
		case 'r':
			runs = atoi(optarg);
			break;
		case 's':
			scale = atoi(optarg);
			break;
		case 'd':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-r RUNS] [-s SCALE%%] [-d DIR]\n", argv[0]);
			return 2;
		}
	}
	if (runs < 1 || runs > MAXRUNS || scale < 1 || scale > 1000) {
		fprintf(stderr, "bench_sqlite: -r 1..%d, -s 1..1000\n", MAXRUNS);
		return 2;
	}
	snprintf(dbpath, sizeof(dbpath), "%s/bench-sqlite-%d.db", dir, (int)getpid());
	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK) {
		fprintf(stderr, "bench_sqlite: cannot register the safemap VFS\n");
		return 1;
	}
	printf("SQLite %s WAL, synchronous=NORMAL, %s: median of %d rotating runs\n",
	       sqlite3_libversion(), dir, runs);
	printf("%-20s %-13s %11s %6s | %15s %6s\n", "row", "vfs", "ops/s", "ratio", "CPU us/op",
	       "ratio");
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		double v[NVFS][MAXRUNS], c[NVFS][MAXRUNS], m[NVFS], mc[NVFS];
		int n = rows[r].n * scale / 100;

		if (n < 1)
			n = 1;
		for (int i = 0; i < runs; i++)
			for (int k = 0; k < NVFS; k++) {
				int which = (i + k) % NVFS; /* rotate who goes first */

				v[which][i] = run(vfs[which], rows[r].nproc, rows[r].lookups, n,
						  &c[which][i]);
			}
		for (int k = 0; k < NVFS; k++) {
			m[k] = median(v[k], runs);
			mc[k] = median(c[k], runs);
		}
		/* throughput ratio VFS/unix (higher is better); CPU ratio
		 * unix/VFS per operation (higher is better too) */
		for (int k = 0; k < NVFS; k++) {
			double q[3];
			printf("%-20s %-13s %11.0f %5.2fx | %15.1f %5.2fx", k ? "" : rows[r].name, vfs[k],
			       m[k], m[k] / m[0], mc[k], mc[0] / mc[k]);
			if (k && paired(v[k], v[0], runs, q))
				printf(" | paired %4.2fx [%4.2f-%4.2f]", q[1], q[0], q[2]);
			putchar('\n');
		}
		fflush(stdout);
	}
	remove_db();
	return 0;
}
