/* SPDX-License-Identifier: MIT */
/*
 * bench_kvstore.c - examples/kvstore (a mapped file made recoverable by a
 * log) beside SQLite and LMDB, same keys (N 64-bit keys), same 100 B
 * values, same run:
 *   - durable puts from 8 writer threads, then 8 writer processes (each
 *     with its own handles), random keys, each put durable
 *     when it returns: kvstore (group commit of the log across threads)
 *     against SQLite in WAL mode with synchronous=FULL (one row per key,
 *     one transaction per put; one connection per writer, the writers
 *     taking turns through a mutex: SQLite has one writer at a time, and
 *     its busy handler would sleep) and against LMDB with its default
 *     durability (one write transaction per put);
 *   - random gets, one thread: kv_get against an LMDB read transaction
 *     (mdb_txn_renew + mdb_get + mdb_txn_reset, the value copied out);
 *     then kv_get again with the store opened in kernel-lock mode, to show
 *     what table mode buys a get.
 * Targets (examples/kvstore's): puts at least 2x each of SQLite and LMDB,
 * gets at least 0.5x LMDB's rate.  Medians of REPS rounds; the engines run
 * in turns within each round, in alternating order.
 *
 *   bench/bench_kvstore [-d DIR] [-s SECONDS] [-r REPS] [-n KEYS] [-t WRITERS] [-T]
 * (-T: writer threads only, no writer processes)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>
#ifdef HAVE_LMDB
#include <lmdb.h>
#endif

#include "bench-util.h"
#include "kvstore.h"

#define VAL 100
#define MAXT 64

enum { KV, SQL, LMDB_E, NENG };
static const char *names[NENG] = { "kvstore", "SQLite WAL FULL", "LMDB" };

static char dir[256] = "/var/tmp";
static char kdir[512], sdir[512], ldir[512];
static double secs = 2.0;
static int reps = 3, nthreads = 8, with_procs = 1;
static long nkeys = 20000;

static kv_store *kv;
#ifdef HAVE_LMDB
static MDB_env *env;
static MDB_dbi dbi;
#endif

static void value(unsigned char *v, long key, long seq)
{
	char tag[40];

	snprintf(tag, sizeof(tag), "%ld.%ld", key, seq);
	kv_value_make(v, VAL, tag);
}

static sqlite3 *sql_open(void)
{
	char p[600];
	sqlite3 *db;

	snprintf(p, sizeof(p), "%s/db", sdir);
	/* the busy handler first: the writers open their connections at once */
	if (sqlite3_open(p, &db) != SQLITE_OK || sqlite3_busy_timeout(db, 10000) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL, NULL) !=
		    SQLITE_OK) {
		fprintf(stderr, "bench_kvstore: sqlite: %s\n", sqlite3_errmsg(db));
		exit(1);
	}
	return db;
}

static void sql_put(sqlite3_stmt *st, long key, const unsigned char *v)
{
	if (sqlite3_bind_int64(st, 1, key) != SQLITE_OK ||
	    sqlite3_bind_blob(st, 2, v, VAL, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_DONE || sqlite3_reset(st) != SQLITE_OK) {
		fprintf(stderr, "bench_kvstore: sqlite put: %s\n",
			sqlite3_errmsg(sqlite3_db_handle(st)));
		exit(1);
	}
}

#ifdef HAVE_LMDB
static void lmdb_put(MDB_env *e, MDB_dbi d, long key, unsigned char *v)
{
	uint64_t k = (uint64_t)key;
	MDB_val mk = { sizeof(k), &k }, mv = { VAL, v };
	MDB_txn *t;
	int rc;

	if ((rc = mdb_txn_begin(e, NULL, 0, &t)) || (rc = mdb_put(t, d, &mk, &mv, 0)) ||
	    (rc = mdb_txn_commit(t))) {
		fprintf(stderr, "bench_kvstore: lmdb put: %s\n", mdb_strerror(rc));
		exit(1);
	}
}

static void lmdb_env(MDB_env **e, MDB_dbi *d)
{
	MDB_txn *t;
	int rc;

	if ((rc = mdb_env_create(e)) || (rc = mdb_env_set_mapsize(*e, (size_t)1 << 30)) ||
	    (rc = mdb_env_open(*e, ldir, 0, 0644)) || (rc = mdb_txn_begin(*e, NULL, 0, &t)) ||
	    (rc = mdb_dbi_open(t, NULL, 0, d)) || (rc = mdb_txn_commit(t))) {
		fprintf(stderr, "bench_kvstore: lmdb: %s\n", mdb_strerror(rc));
		exit(1);
	}
}
#endif

/* Shared by the writers, threads or processes. */
static struct shared {
	atomic_bool go, stop;
	atomic_int ready;
	long ops[MAXT];
	pthread_mutex_t sql_mu; /* SQLite's writers take turns */
} *sh;

/* Put random keys into engine eng until told to stop; returns the count.
 * proc: a process of its own, which opens its own handles. */
static long put_loop(int eng, int id, bool proc)
{
	unsigned seed = (unsigned)id * 7919u + 1;
	unsigned char v[VAL];
	kv_store *k = kv;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
#ifdef HAVE_LMDB
	MDB_env *e = env;
	MDB_dbi d = dbi;
#endif
	long ops = 0;
	int rc;

	if (eng == KV && proc) {
		struct kv_options o = { .pages = (uint64_t)nkeys / 8 + 1 };
		if ((rc = kv_open(kdir, &o, &k)) < 0)
			die("kv_open", rc);
	}
#ifdef HAVE_LMDB
	if (eng == LMDB_E && proc)
		lmdb_env(&e, &d);
#endif
	if (eng == SQL) {
		db = sql_open();
		if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)", -1, &st,
				       NULL) != SQLITE_OK)
			die("sqlite prepare", -EINVAL);
	}
	atomic_fetch_add(&sh->ready, 1);
	while (!atomic_load(&sh->go))
		usleep(100);
	while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
		long key = (long)(rand_r(&seed) % nkeys);
		value(v, key, ops);
		switch (eng) {
		case KV:
			if ((rc = kv_put(k, (uint64_t)key, v, VAL)) < 0)
				die("kv_put", rc);
			break;
		case SQL:
			pthread_mutex_lock(&sh->sql_mu);
			sql_put(st, key, v);
			pthread_mutex_unlock(&sh->sql_mu);
			break;
#ifdef HAVE_LMDB
		case LMDB_E:
			lmdb_put(e, d, key, v);
			break;
#endif
		}
		ops++;
	}
	if (db) {
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	if (eng == KV && proc && (rc = kv_close(k)) < 0)
		die("kv_close", rc);
#ifdef HAVE_LMDB
	if (eng == LMDB_E && proc)
		mdb_env_close(e);
#endif
	return ops;
}

struct worker {
	pthread_t t;
	int id, eng;
};

static void *put_thread(void *arg)
{
	struct worker *w = arg;

	sh->ops[w->id] = put_loop(w->eng, w->id, false);
	return NULL;
}

/* Durable puts per second of nthreads writers (threads, or with procs
 * processes) into engine eng, timed from when all are ready. */
static double put_round(int eng, bool procs)
{
	struct worker w[MAXT];
	pid_t pid[MAXT];
	double t0, t;
	long ops = 0;

	atomic_store(&sh->go, false);
	atomic_store(&sh->stop, false);
	atomic_store(&sh->ready, 0);
	for (int i = 0; i < nthreads; i++) {
		if (!procs) {
			w[i] = (struct worker){ .id = i, .eng = eng };
			if (pthread_create(&w[i].t, NULL, put_thread, &w[i]) != 0)
				die("pthread_create", 0);
			continue;
		}
		fflush(stdout);
		if ((pid[i] = fork()) < 0)
			die("fork", 0);
		if (pid[i] == 0) {
			sh->ops[i] = put_loop(eng, i, true);
			_exit(0);
		}
	}
	while (atomic_load(&sh->ready) < nthreads)
		usleep(200);
	t0 = now();
	atomic_store(&sh->go, true);
	usleep((useconds_t)(secs * 1e6));
	atomic_store(&sh->stop, true);
	for (int i = 0; i < nthreads; i++) {
		int st;
		if (!procs)
			pthread_join(w[i].t, NULL);
		else if (waitpid(pid[i], &st, 0) != pid[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			die("writer process failed", -EIO);
		ops += sh->ops[i];
	}
	t = now() - t0;
	return (double)ops / t;
}

/* --- loading every key (gets find them all) -------------------------------- */

struct loader {
	pthread_t t;
	int id;
};

static void *kv_loader(void *arg)
{
	struct loader *l = arg;
	unsigned char v[VAL];
	int rc;

	for (long k = l->id; k < nkeys; k += nthreads) {
		value(v, k, 0);
		if ((rc = kv_put(kv, (uint64_t)k, v, VAL)) < 0)
			die("kv_put", rc);
	}
	return NULL;
}

static void load(void)
{
	struct loader l[MAXT];
	unsigned char v[VAL];
	sqlite3 *db = sql_open();
	sqlite3_stmt *st;
	double t0 = now();
	int rc;

	for (int i = 0; i < nthreads; i++) {
		l[i].id = i;
		if (pthread_create(&l[i].t, NULL, kv_loader, &l[i]) != 0)
			die("pthread_create", 0);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(l[i].t, NULL);
	if ((rc = kv_checkpoint(kv)) < 0)
		die("kv_checkpoint", rc);
	printf("  (loaded %ld keys into kvstore with %d threads of durable puts: %.1f s)\n", nkeys,
	       nthreads, now() - t0);
	if (sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v BLOB); BEGIN",
			 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv(k, v) VALUES(?, ?)", -1, &st, NULL) !=
		    SQLITE_OK)
		die("sqlite load", -EINVAL);
	for (long k = 0; k < nkeys; k++) {
		value(v, k, 0);
		sql_put(st, k, v);
	}
	sqlite3_finalize(st);
	if (sqlite3_exec(db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL, NULL) != SQLITE_OK)
		die("sqlite commit", -EINVAL);
	sqlite3_close(db);
#ifdef HAVE_LMDB
	{
		MDB_txn *t;
		if ((rc = mdb_txn_begin(env, NULL, 0, &t)))
			die("mdb_txn_begin", -EINVAL);
		for (long k = 0; k < nkeys; k++) {
			uint64_t key = (uint64_t)k;
			MDB_val mk = { sizeof(key), &key }, mv = { VAL, v };
			value(v, k, 0);
			if ((rc = mdb_put(t, dbi, &mk, &mv, 0)))
				die("mdb_put", -EINVAL);
		}
		if ((rc = mdb_txn_commit(t)))
			die("mdb_txn_commit", -EINVAL);
	}
#endif
}

/* --- gets ------------------------------------------------------------------ */

static long get_iters = 200000;

/* ns per random get of engine eng (KV or LMDB_E). */
static double get_round(int eng)
{
	unsigned seed = 12345;
	unsigned char v[VAL];
	volatile unsigned sink = 0;
	double t0 = now(), t;
	size_t n;
	int rc;

#ifdef HAVE_LMDB
	MDB_txn *r = NULL;
	if (eng == LMDB_E) {
		if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &r)))
			die("mdb_txn_begin", -EINVAL);
		mdb_txn_reset(r);
		t0 = now();
	}
#endif
	for (long i = 0; i < get_iters; i++) {
		uint64_t key = (uint64_t)(rand_r(&seed) % nkeys);
		if (eng == KV) {
			if ((rc = kv_get(kv, key, v, sizeof(v), &n)) != 1)
				die("kv_get", rc < 0 ? rc : -ENOENT);
			sink += v[0];
		}
#ifdef HAVE_LMDB
		else {
			MDB_val mk = { sizeof(key), &key }, mv;
			if ((rc = mdb_txn_renew(r)) || (rc = mdb_get(r, dbi, &mk, &mv)))
				die("mdb_get", -EINVAL);
			memcpy(v, mv.mv_data, VAL); /* as kv_get copies it out */
			sink += v[0];
			mdb_txn_reset(r);
		}
#endif
	}
	t = now() - t0;
#ifdef HAVE_LMDB
	if (r)
		mdb_txn_abort(r);
#endif
	(void)sink;
	return t * 1e9 / (double)get_iters;
}

/* --- printing ------------------------------------------------------------- */

static void row(const char *name, double a, const char *bn, double b, const char *unit,
		double ratio, double target)
{
	printf("  %-28s kvstore %9.0f %-6s %-16s %9.0f %-6s ratio %5.2fx  (target >= %.1fx) %s\n",
	       name, a, unit, bn, b, unit, ratio, target, ratio >= target ? "✓" : "✗");
}

/* Raw 100 B write + fdatasync in dir, us (the disk's flush cost). */
static double raw_sync_us(void)
{
	char p[600], b[VAL] = { 0 };
	int fd;
	double t0;

	snprintf(p, sizeof(p), "%s/raw", kdir);
	if ((fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_APPEND, 0644)) < 0)
		die(p, 0);
	t0 = now();
	for (int i = 0; i < 200; i++)
		if (write(fd, b, VAL) != VAL || fdatasync(fd) < 0)
			die("fdatasync", 0);
	t0 = (now() - t0) / 200 * 1e6;
	close(fd);
	unlink(p);
	return t0;
}

static void rmrf(const char *d)
{
	char cmd[700];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_kvstore: %s failed\n", cmd);
}

int main(int argc, char **argv)
{
	double put[NENG][16], q[NENG][16], gk[16], gl[16], gq[16];
	struct kv_options o = { 0 };
	struct statfs sf;

	int c, rc;

	while ((c = getopt(argc, argv, "d:s:r:n:t:T")) != -1) {
		switch (c) {
		case 'd': snprintf(dir, sizeof(dir), "%s", optarg); break;
		case 's': secs = atof(optarg); break;
		case 'r': reps = atoi(optarg); break;
		case 'n': nkeys = atol(optarg); break;
		case 't': nthreads = atoi(optarg); break;
		case 'T': with_procs = 0; break;
		default:
			fprintf(stderr, "usage: bench_kvstore [-d DIR] [-s SECONDS] [-r REPS] [-n KEYS] "
					"[-t WRITERS] [-T]\n");
			return 2;
		}
	}
	if (reps < 1 || reps > 16)
		reps = 3;
	if (nthreads < 1 || nthreads > MAXT)
		nthreads = 8;
	if (nkeys < 100)
		nkeys = 100;
	snprintf(kdir, sizeof(kdir), "%s/safemap-bench-kv.%d", dir, (int)getpid());
	snprintf(sdir, sizeof(sdir), "%s/safemap-bench-kv-sqlite.%d", dir, (int)getpid());
	snprintf(ldir, sizeof(ldir), "%s/safemap-bench-kv-lmdb.%d", dir, (int)getpid());
	if (mkdir(kdir, 0755) < 0 || mkdir(sdir, 0755) < 0 || mkdir(ldir, 0755) < 0)
		die("mkdir", 0);
	o.pages = (uint64_t)nkeys / 8 + 1; /* ~8 keys per 31-slot page */
	if ((rc = kv_open(kdir, &o, &kv)) < 0)
		die("kv_open", rc);
#ifdef HAVE_LMDB
	lmdb_env(&env, &dbi);
#endif
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap", 0);
	{
		pthread_mutexattr_t ma;
		pthread_mutexattr_init(&ma);
		pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
		pthread_mutex_init(&sh->sql_mu, &ma);
	}
	statfs(dir, &sf);
	printf("kvstore (examples/kvstore) beside SQLite and LMDB: %ld keys, %d B values, in %s "
	       "(statfs type 0x%lx); raw %d B write + fdatasync: %.0f us\n",
	       nkeys, VAL, dir, (unsigned long)sf.f_type, VAL, raw_sync_us());
	load();
	for (int procs = 0; procs <= 1; procs++) {
		char name[64];
		if (procs && !with_procs)
			break;
		printf("durable puts from %d writer %s, random keys, %.1f s x %d rounds, medians:\n",
		       nthreads, procs ? "processes" : "threads", secs, reps);
		for (int r = 0; r < reps; r++) {
			for (int i = 0; i < NENG; i++) {
				int e = r & 1 ? NENG - 1 - i : i;
#ifndef HAVE_LMDB
				if (e == LMDB_E) {
					put[e][r] = 0;
					continue;
				}
#endif
				put[e][r] = put_round(e, procs);
			}
			q[SQL][r] = put[KV][r] / put[SQL][r];
			q[LMDB_E][r] = put[LMDB_E][r] ? put[KV][r] / put[LMDB_E][r] : 0;
		}
		snprintf(name, sizeof(name), "durable puts, %d %s", nthreads,
			 procs ? "processes" : "threads");
		row(name, median(put[KV], reps), names[SQL], median(put[SQL], reps), "put/s",
		    median(q[SQL], reps), 2.0);
#ifdef HAVE_LMDB
		row(name, median(put[KV], reps), names[LMDB_E], median(put[LMDB_E], reps), "put/s",
		    median(q[LMDB_E], reps), 2.0);
#endif
	}
#ifdef HAVE_LMDB
	printf("random gets, 1 thread, %ld per round, ns/get (ratio: rate against LMDB's):\n",
	       get_iters);
	for (int r = 0; r < reps; r++) {
		if (r & 1) {
			gl[r] = get_round(LMDB_E);
			gk[r] = get_round(KV);
		} else {
			gk[r] = get_round(KV);
			gl[r] = get_round(LMDB_E);
		}
		gq[r] = gl[r] / gk[r];
	}
	row("random gets", median(gk, reps), names[LMDB_E], median(gl, reps), "ns", median(gq, reps),
	    0.5);
	/* why table mode: the same gets with a kernel lock, map and unlock each */
	o.kernel_locks = 1;
	if ((rc = kv_close(kv)) < 0 || (rc = kv_open(kdir, &o, &kv)) < 0)
		die("kv_open (kernel locks)", rc);
	for (int r = 0; r < reps; r++)
		gk[r] = get_round(KV);
	printf("  %-28s kvstore %9.0f ns     (kernel-lock mode, same store: %.2fx LMDB's rate)\n",
	       "random gets, kernel locks", median(gk, reps), median(gl, reps) / median(gk, reps));
	mdb_env_close(env);
#else
	(void)gk;
	(void)gl;
	(void)gq;
	printf("  LMDB: not installed (configure did not find liblmdb: apt-get install liblmdb-dev)\n");
#endif
	if ((rc = kv_close(kv)) < 0)
		die("kv_close", rc);
	rmrf(kdir);
	rmrf(sdir);
	rmrf(ldir);
	return 0;
}
