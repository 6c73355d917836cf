/* SPDX-License-Identifier: MIT */
/*
 * test_sqlite.c - the "safemap" SQLite VFS (contrib/sqlite/safemap_vfs.c)
 * with real processes on one WAL database: writers and readers, a writer
 * killed with SIGKILL in the middle of a transaction, stock ("unix") and
 * "safemap" processes at once, a rollback-journal mix, threads, a read-only
 * -shm, the lock table (sm_holders, lockctl) naming SQLite's locks and the
 * dead holder as stale, SQLite's lock timeout as each WAL lock's bound, and
 * the loadable extension.
 *
 * Workers are forked children that open their own connections (nothing
 * SQLite is open across a fork) and report through their exit status: 0,
 * or the number of the step that failed.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "safemap.h"
#include "safemap_vfs.h"
#include "testutil.h"

/* SQLite's lock bytes (see safemap_vfs.c) */
#define PENDING_BYTE 0x40000000u
#define SHARED_FIRST (PENDING_BYTE + 2)
#define SHM_WAL_WRITE 120
#define SHM_DMS 128

static char dir[PATH_MAX];
static char dbpath[PATH_MAX + 16];
static char shmpath[PATH_MAX + 32];

static void rm_dir(void)
{
	DIR *d;
	struct dirent *e;
	char p[PATH_MAX + 300];

	if (!dir[0])
		return;
	d = opendir(dir);
	if (d) {
		while ((e = readdir(d))) {
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
				snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
				unlink(p);
			}
		}
		closedir(d);
	}
	rmdir(dir);
	dir[0] = '\0';
}

/* A fresh directory with db in it (the database itself is created by the
 * first connection); removed when the test's process exits. */
static void setup(void)
{
	const char *t = getenv("TMPDIR");
	static pid_t registered;

	snprintf(dir, sizeof(dir), "%s/safemap-sqlite.XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(dbpath, sizeof(dbpath), "%s/db", dir);
	snprintf(shmpath, sizeof(shmpath), "%s/db-shm", dir);
	if (registered != getpid()) {
		registered = getpid();
		atexit(rm_dir);
	}
}

/* The journal mode db_open sets (a test may change it before forking). */
static const char *journal = "WAL";

/* Open dbpath with vfs ("unix" or "safemap"), journal mode `journal` and
 * synchronous=NORMAL; NULL on failure. */
static sqlite3 *db_open(const char *vfs, int busy_ms)
{
	sqlite3 *db = NULL;
	char sql[96];

	if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) !=
	    SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, busy_ms);
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; PRAGMA synchronous=NORMAL;", journal);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

/* The first column of the first row of sql as an integer, or -1. */
static long long query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	long long v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* PRAGMA integrity_check says "ok". */
static int integrity_ok(sqlite3 *db)
{
	sqlite3_stmt *st;
	int ok = 0;

	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *s = sqlite3_column_text(st, 0);

		ok = s && strcmp((const char *)s, "ok") == 0 && sqlite3_step(st) == SQLITE_DONE;
	}
	sqlite3_finalize(st);
	return ok;
}

static int holders_tagged(sm_file *f, uint64_t off, uint64_t len, const char *tag, pid_t pid,
			  int *states);

static void create_table(const char *vfs)
{
	sqlite3 *db = db_open(vfs, 10000);

	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(sqlite3_exec(db,
				      "CREATE TABLE t(id INTEGER PRIMARY KEY, w INT, n INT, pad TEXT);"
				      "CREATE INDEX t_w ON t(w, n);",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

/* --- workers ------------------------------------------------------------- */

struct job {
	const char *vfs;
	int w;      /* writer number */
	int n;      /* rows to insert, or (readers) the total to wait for */
};

/* Insert rows (w, 0..n-1): autocommit, and every 8th row a BEGIN IMMEDIATE
 * batch of 4 more; a small autocheckpoint so checkpoints run meanwhile. */
static int writer(void *arg, int in, int out)
{
	const struct job *j = arg;
	sqlite3 *db;
	sqlite3_stmt *st;
	int i = 0;

	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	db = db_open(j->vfs, 20000);
	if (!db)
		return 2;
	sqlite3_exec(db, "PRAGMA wal_autocheckpoint=64", NULL, NULL, NULL);
	if (sqlite3_prepare_v2(db, "INSERT INTO t(w, n, pad) VALUES (?1, ?2, hex(randomblob(40)))",
			       -1, &st, NULL) != SQLITE_OK)
		return 3;
	while (i < j->n) {
		int batch = (i % 8 == 7 && i + 4 <= j->n) ? 4 : 1;

		if (batch > 1 && sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
			return 4;
		for (int k = 0; k < batch; k++, i++) {
			sqlite3_bind_int(st, 1, j->w);
			sqlite3_bind_int(st, 2, i);
			if (sqlite3_step(st) != SQLITE_DONE)
				return 5;
			sqlite3_reset(st);
		}
		if (batch > 1 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			return 6;
	}
	sqlite3_finalize(st);
	return sqlite3_close(db) == SQLITE_OK ? 0 : 7;
}

/* Read until the table holds j->n rows: inside each read transaction two
 * queries agree (a snapshot), across transactions the count never goes
 * down, and each writer's rows are a prefix 0..k-1 (commits are atomic and
 * in order).  Fails if the parent says the writers are done (or goes away)
 * and the rows are still missing. */
static int reader(void *arg, int in, int out)
{
	const struct job *j = arg;
	sqlite3 *db;
	long long last = 0;
	int writers_done = 0;

	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	db = db_open(j->vfs, 20000);
	if (!db)
		return 2;
	while (last < j->n) {
		long long c1, c2, bad;
		struct pollfd pfd = { .fd = in, .events = POLLIN };

		if (writers_done)
			return 3;
		writers_done = poll(&pfd, 1, 0) > 0; /* one more round after it */
		if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
			return 4;
		c1 = query_int(db, "SELECT count(*) FROM t");
		bad = query_int(db, "SELECT count(*) FROM (SELECT w, count(*) c, max(n) m "
				    "FROM t GROUP BY w) WHERE m != c - 1");
		c2 = query_int(db, "SELECT count(*) FROM t INDEXED BY t_w WHERE w >= 0");
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			return 5;
		if (c1 < 0 || c1 != c2)
			return 6;
		if (bad != 0)
			return 7;
		if (c1 < last)
			return 8;
		last = c1;
	}
	if (!writers_done) { /* wait for the word, so that it never meets a closed pipe */
		char line[16];

		tu_recv(in, line, sizeof(line));
	}
	return sqlite3_close(db) == SQLITE_OK ? 0 : 9;
}

/* Run writers and readers at once (vfs per process from the tables) and
 * check every one finished cleanly, then the row counts and integrity. */
static void run_mix(const char *const *wvfs, int nw, const char *const *rvfs, int nr, int rows)
{
	struct tu_child c[16];
	struct job jobs[16];
	int n = 0;
	sqlite3 *db;

	ck_assert_int_le(nw + nr, 16);
	for (int i = 0; i < nw; i++, n++) {
		jobs[n] = (struct job){ .vfs = wvfs[i], .w = i, .n = rows };
		tu_spawn(&c[n], writer, &jobs[n]);
	}
	for (int i = 0; i < nr; i++, n++) {
		jobs[n] = (struct job){ .vfs = rvfs[i], .n = nw * rows };
		tu_spawn(&c[n], reader, &jobs[n]);
	}
	for (int i = 0; i < n; i++) {
		int st;

		if (i == nw) /* the writers are done: the readers must see it all */
			for (int k = nw; k < n; k++)
				tu_send(c[k].to, "done");
		st = tu_wait(&c[i]);

		ck_assert_msg(st == 0, "%s %d (%s) failed: %d", i < nw ? "writer" : "reader", i,
			      jobs[i].vfs, st);
	}
	db = db_open("safemap", 10000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), (long long)nw * rows);
	for (int i = 0; i < nw; i++) {
		char sql[128];

		snprintf(sql, sizeof(sql), "SELECT count(DISTINCT n) FROM t WHERE w = %d", i);
		ck_assert_int_eq(query_int(db, sql), rows);
	}
	ck_assert(integrity_ok(db));
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

/* --- tests ---------------------------------------------------------------- */

START_TEST(test_register)
{
	sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
	sqlite3_vfs *v;
	sqlite3 *db;
	char *name = NULL;
	int lock = -1;

	setup();
	ck_assert_ptr_nonnull(unix_vfs);
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	v = sqlite3_vfs_find("safemap");
	ck_assert_ptr_nonnull(v);
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), unix_vfs);
	ck_assert_int_eq(sqlite3_safemap_vfs_register(1), SQLITE_OK); /* again: harmless */
	ck_assert_ptr_eq(sqlite3_vfs_find(NULL), v);
	ck_assert_int_eq(sqlite3_vfs_register(unix_vfs, 1), SQLITE_OK);

	db = db_open("safemap", 1000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(query_int(db, "SELECT 1"), 1);
	ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE x(a); INSERT INTO x VALUES (1), (2);",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_VFSNAME, &name), SQLITE_OK);
	ck_assert_ptr_nonnull(name);
	ck_assert_msg(strncmp(name, "safemap", 7) == 0, "vfsname %s", name);
	sqlite3_free(name);
	/* WAL mode: the connection keeps SHARED between transactions. */
	ck_assert_int_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_LOCKSTATE, &lock), SQLITE_OK);
	ck_assert_int_eq(lock, SQLITE_LOCK_SHARED);
	ck_assert_int_eq(query_int(db, "SELECT sum(a) FROM x"), 3);
	ck_assert(access(shmpath, F_OK) == 0);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	/* The last connection checkpoints and deletes -wal and -shm. */
	ck_assert(access(shmpath, F_OK) != 0);

	/* A rollback-journal database: the xLock family alone. */
	db = NULL;
	ck_assert_int_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, "safemap"), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE;"
					  "INSERT INTO x VALUES (4); COMMIT;",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_LOCKSTATE, &lock), SQLITE_OK);
	ck_assert_int_eq(lock, SQLITE_LOCK_NONE);
	ck_assert_int_eq(query_int(db, "SELECT sum(a) FROM x"), 7);
	ck_assert(integrity_ok(db));
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

START_TEST(test_writers_readers)
{
	static const char *const w[] = { "safemap", "safemap", "safemap", "safemap" };
	static const char *const r[] = { "safemap", "safemap" };

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	run_mix(w, 4, r, 2, 400);
}
END_TEST

/* The "safemap-table" VFS (table-authority mode, SPEC §12): the same
 * multi-process mix of writers and readers, every lock decided in the table. */
START_TEST(test_table_vfs)
{
	static const char *const w[] = { "safemap-table", "safemap-table", "safemap-table", "safemap-table" };
	static const char *const r[] = { "safemap-table", "safemap-table" };
	sm_file *f;
	sm_options o = { .size = sizeof(o), .flags = SM_OPT_TABLE_LOCKS };
	sqlite3 *db;

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	ck_assert_ptr_nonnull(sqlite3_vfs_find("safemap-table"));
	create_table("safemap-table");
	run_mix(w, 4, r, 2, 400);
	/* a table-mode connection open: a kernel-mode opener is refused, never mixed */
	db = db_open("safemap-table", 5000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), 1600);
	ck_assert_int_eq(sm_open(dbpath, SM_RDWR, NULL, &f), -EPROTO);
	ck_assert_int_eq(sm_open(dbpath, SM_RDWR, &o, &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

/* Footprint (SPEC §16): SQLite deletes the -shm when the last connection
 * closes; its lock table goes with it. */
START_TEST(test_no_sidecar_left)
{
	char smlock[PATH_MAX + 64];
	sqlite3 *db;

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	db = db_open("safemap", 5000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(sqlite3_exec(db, "INSERT INTO t(w, n) VALUES (1, 1)", NULL, NULL, NULL), SQLITE_OK);
	snprintf(smlock, sizeof(smlock), "%s.smlock", shmpath);
	ck_assert_int_eq(access(smlock, F_OK), 0); /* in use */
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	ck_assert_int_eq(access(shmpath, F_OK), -1); /* SQLite removed the -shm */
	ck_assert_int_eq(access(smlock, F_OK), -1);  /* and its table went with it */
}
END_TEST

START_TEST(test_stock_and_safemap)
{
	static const char *const w[] = { "unix", "safemap", "unix", "safemap" };
	static const char *const r[] = { "safemap", "unix" };

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("unix");
	run_mix(w, 4, r, 2, 300);
}
END_TEST

/* Keeps a safemap connection attached to the -shm (DMS read lock) until
 * told to go. */
static int attached(void *arg, int in, int out)
{
	char line[16];
	sqlite3 *db;

	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	db = db_open("safemap", 5000);
	if (!db || query_int(db, "SELECT count(*) FROM t") < 0) {
		tu_send(out, "2");
		return 2;
	}
	tu_send(out, "0");
	tu_recv(in, line, sizeof(line));
	return sqlite3_close(db) == SQLITE_OK ? 0 : 3;
}

/* readonly_shm=1: a read-only -shm joins the attached connections (its DMS
 * read lock beside theirs), maps the regions read-only and reads. */
START_TEST(test_readonly_shm)
{
	struct tu_child a;
	sqlite3 *db, *ro = NULL;
	char uri[PATH_MAX + 64];
	sm_file *shm;
	int states;

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	db = db_open("safemap", 5000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(sqlite3_exec(db, "INSERT INTO t(w, n) VALUES (1, 1), (1, 2)", NULL, NULL,
				      NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	tu_spawn(&a, attached, NULL);
	ck_assert_int_eq(tu_recv_int(a.from), 0);

	snprintf(uri, sizeof(uri), "file:%s?readonly_shm=1", dbpath);
	ck_assert_int_eq(sqlite3_open_v2(uri, &ro, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "safemap"),
			 SQLITE_OK);
	ck_assert_int_eq(query_int(ro, "SELECT count(*) FROM t"), 2);
	ck_assert_int_eq(sm_open(shmpath, SM_RDONLY, NULL, &shm), 0);
	ck_assert_int_eq(holders_tagged(shm, SHM_DMS, 1, "DMS", getpid(), &states), 1);
	ck_assert_int_eq(states, 1 << SM_HELD);
	/* the -shm region is listed as an unlocked mapping named after it (sm_slice_tag) */
	ck_assert_int_eq(holders_tagged(shm, 0, 1, "SHM-0", getpid(), &states), 1);
	ck_assert_int_eq(states, 1 << SM_UNLOCKED);
	ck_assert_int_eq(sm_close(shm), 0);
	ck_assert_int_eq(sqlite3_close(ro), SQLITE_OK);
	tu_send(a.to, "go");
	ck_assert_int_eq(tu_wait(&a), 0);
}
END_TEST

/* A rollback-journal database: the xLock family (SHARED, RESERVED, PENDING,
 * EXCLUSIVE on the lock bytes at 1 GiB) between stock and safemap
 * processes, readers holding SHARED across two queries. */
START_TEST(test_rollback_journal_mix)
{
	static const char *const w[] = { "safemap", "unix", "safemap", "unix" };
	static const char *const r[] = { "unix", "safemap" };
	struct stat st;

	setup();
	journal = "DELETE";
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	run_mix(w, 4, r, 2, 100);
	/* The lock bytes past end of file never grew it. */
	ck_assert_int_eq(stat(dbpath, &st), 0);
	ck_assert_int_lt(st.st_size, 1 << 20);
}
END_TEST

static void *writer_thread(void *arg)
{
	return (void *)(intptr_t)writer(arg, -1, -1);
}

/* Threads of one process, each with its own connection: each has its own
 * sm_files, which exclude each other as processes do (SPEC §3.3). */
START_TEST(test_threads)
{
	struct job jobs[4];
	pthread_t t[4];
	sqlite3 *db;

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct job){ .vfs = "safemap", .w = i, .n = 200 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, writer_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *ret;

		ck_assert_int_eq(pthread_join(t[i], &ret), 0);
		ck_assert_msg(ret == NULL, "thread %d failed: %d", i, (int)(intptr_t)ret);
	}
	db = db_open("safemap", 5000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), 800);
	ck_assert(integrity_ok(db));
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

/* Holds a write transaction on vfs until told to go: sends 0 once it holds
 * it (or the failing step). */
static int tx_holder(void *arg, int in, int out)
{
	const struct job *j = arg;
	char line[16], sql[128];
	sqlite3 *db;

	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	snprintf(sql, sizeof(sql), "BEGIN IMMEDIATE; INSERT INTO t(w, n) VALUES (99, %d);", j->n);
	db = db_open(j->vfs, 5000);
	if (!db || sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		tu_send(out, "2");
		return 2;
	}
	tu_send(out, "0");
	tu_recv(in, line, sizeof(line));
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return 3;
	return sqlite3_close(db) == SQLITE_OK ? 0 : 4;
}

/* Opens vfs and tries to write without waiting: 0 if refused with
 * SQLITE_BUSY, 10 if it got through. */
static int tx_prober(void *arg, int in, int out)
{
	const struct job *j = arg;
	sqlite3 *db;
	int rc;

	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	db = db_open(j->vfs, 0);
	if (!db)
		return 2;
	/* Reading works beside the writer (WAL) and sees the commits before
	 * its transaction, not the rows of it. */
	if (query_int(db, "SELECT count(*) FROM t WHERE w = 99") != j->n)
		return 3;
	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	sqlite3_close(db);
	return rc == SQLITE_BUSY ? 0 : 10;
}

START_TEST(test_stock_excludes_safemap)
{
	static const char *const pairs[2][2] = { { "unix", "safemap" }, { "safemap", "unix" } };

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	for (int i = 0; i < 2; i++) {
		struct job hj = { .vfs = pairs[i][0], .n = i }, pj = { .vfs = pairs[i][1], .n = i };
		struct tu_child h, p;
		sm_file *shm;
		int st, states;

		tu_spawn(&h, tx_holder, &hj);
		ck_assert_int_eq(tu_recv_int(h.from), 0);
		/* The WAL write lock is on the -shm byte both VFSes use. */
		ck_assert_int_eq(sm_open(shmpath, SM_RDWR, NULL, &shm), 0);
		ck_assert_int_eq(sm_test(shm, SHM_WAL_WRITE, 1, SM_LOCK_WRITE), -EBUSY);
		/* A safemap holder is named after the refusal; a stock one holds
		 * the byte through a POSIX lock only the kernel knows. */
		ck_assert_int_eq(holders_tagged(shm, SHM_WAL_WRITE, 1, "WAL_WRITE", h.pid, &states),
				 strcmp(hj.vfs, "safemap") == 0);
		ck_assert_int_eq(sm_test(shm, SHM_DMS, 1, SM_LOCK_READ), 0);
		ck_assert_int_eq(sm_test(shm, SHM_DMS, 1, SM_LOCK_WRITE), -EBUSY);
		ck_assert_int_eq(sm_close(shm), 0);
		tu_spawn(&p, tx_prober, &pj);
		st = tu_wait(&p);
		ck_assert_msg(st == 0, "%s writer beside a %s writer: step %d", pairs[i][1],
			      pairs[i][0], st);
		tu_send(h.to, "go");
		ck_assert_int_eq(tu_wait(&h), 0);
	}
}
END_TEST

/* Commits 100 rows, then inserts 3000 more in one transaction with a tiny
 * page cache (so uncommitted frames spill into the WAL), says "0" and waits
 * to be killed. */
static int victim(void *arg, int in, int out)
{
	char line[16];
	sqlite3 *db;

	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	db = db_open("safemap", 5000);
	if (!db)
		return 2;
	if (sqlite3_exec(db, "PRAGMA cache_size=8; PRAGMA wal_autocheckpoint=0;"
			     "BEGIN; WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM c "
			     "WHERE i < 99) INSERT INTO t(w, n, pad) SELECT 1, i, "
			     "hex(randomblob(100)) FROM c; COMMIT;"
			     "BEGIN; WITH RECURSIVE c(i) AS (SELECT 100 UNION ALL SELECT i+1 FROM c "
			     "WHERE i < 3099) INSERT INTO t(w, n, pad) SELECT 1, i, "
			     "hex(randomblob(300)) FROM c;",
			     NULL, NULL, NULL) != SQLITE_OK) {
		tu_send(out, "3");
		return 3;
	}
	tu_send(out, "0");
	tu_recv(in, line, sizeof(line)); /* never returns: killed */
	return 4;
}

/* The holders of [off, off+len) of f with this tag: how many, and their
 * states in *states (a bitmask of 1 << SM_HELD etc.). */
static int holders_tagged(sm_file *f, uint64_t off, uint64_t len, const char *tag, pid_t pid,
			  int *states)
{
	sm_holder h[32];
	int n = sm_holders(f, off, len, h, 32), found = 0;

	ck_assert_int_ge(n, 0);
	*states = 0;
	for (int i = 0; i < n && i < 32; i++) {
		if (strcmp(h[i].tag, tag) == 0 && (pid == 0 || h[i].pid == pid)) {
			found++;
			*states |= 1 << h[i].state;
		}
	}
	return found;
}

/* `lockctl list -r -n -o START,STATE,TAG paths` into out. */
static void lockctl_list(char *out, size_t n, const char *paths)
{
	char lockctl[PATH_MAX + 32], cmd[3 * PATH_MAX + 256], sink[4096];
	size_t len = 0;
	FILE *p;

	tu_sibling("../tools/lockctl", lockctl, sizeof(lockctl));
	snprintf(cmd, sizeof(cmd), "%s list -r -n -o START,STATE,TAG %s 2>&1", lockctl, paths);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while (len + 1 < n && fgets(out + len, (int)(n - len), p))
		len += strlen(out + len);
	out[len] = '\0';
	while (fgets(sink, sizeof(sink), p)) /* never SIGPIPE lockctl */
		;
	ck_assert_int_eq(pclose(p), 0);
}

START_TEST(test_sigkill_mid_transaction)
{
	char paths[2 * PATH_MAX + 64], out[8192];
	struct tu_child v;
	sm_file *shm, *dbf;
	sqlite3 *db;
	int states;

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	tu_spawn(&v, victim, NULL);
	ck_assert_int_eq(tu_recv_int(v.from), 0);
	ck_assert(access(dbpath, F_OK) == 0);

	/* The lock table names SQLite's locks and their holder. */
	ck_assert_int_eq(sm_open(shmpath, SM_RDWR, NULL, &shm), 0);
	ck_assert_int_eq(sm_open(dbpath, SM_RDWR, NULL, &dbf), 0);
	ck_assert_int_eq(holders_tagged(shm, SHM_WAL_WRITE, 1, "WAL_WRITE", v.pid, &states), 1);
	ck_assert_int_eq(states, 1 << SM_HELD);
	ck_assert_int_eq(holders_tagged(shm, SHM_DMS, 1, "DMS", v.pid, &states), 1);
	ck_assert_int_eq(holders_tagged(dbf, SHARED_FIRST, 510, "SHARED", v.pid, &states), 1);
	ck_assert_int_eq(sm_test(shm, SHM_WAL_WRITE, 1, SM_LOCK_READ), -EBUSY);
	/* and so does lockctl, with SQLite's lock names */
	snprintf(paths, sizeof(paths), "%s %s", shmpath, dbpath);
	lockctl_list(out, sizeof(out), paths);
	ck_assert_msg(strstr(out, "120 held WAL_WRITE\n"), "lockctl: %s", out);
	ck_assert_msg(strstr(out, "128 held DMS\n"), "lockctl: %s", out);
	ck_assert_msg(strstr(out, "1073741826 held SHARED\n"), "lockctl: %s", out);

	ck_assert_int_eq(kill(v.pid, SIGKILL), 0);
	ck_assert_int_eq(tu_wait(&v), 128 + SIGKILL);

	/* The table shows the dead holder stale; the kernel dropped its locks. */
	ck_assert_int_eq(holders_tagged(shm, SHM_WAL_WRITE, 1, "WAL_WRITE", v.pid, &states), 1);
	ck_assert_int_eq(states, 1 << SM_STALE);
	lockctl_list(out, sizeof(out), paths);
	ck_assert_msg(strstr(out, "120 stale WAL_WRITE\n"), "lockctl: %s", out);
	ck_assert_msg(strstr(out, "1073741826 stale SHARED\n"), "lockctl: %s", out);
	ck_assert_int_eq(sm_test(shm, SHM_WAL_WRITE, 1, SM_LOCK_WRITE), 0);
	ck_assert_int_eq(sm_close(shm), 0);
	ck_assert_int_eq(sm_close(dbf), 0);

	/* Recovery: the committed 100 rows, none of the 3000. */
	db = db_open("safemap", 5000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), 100);
	ck_assert(integrity_ok(db));
	ck_assert_int_eq(sqlite3_exec(db, "INSERT INTO t(w, n) VALUES (2, 0)", NULL, NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), 101);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
	/* A stock process agrees. */
	db = db_open("unix", 5000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t"), 101);
	ck_assert(integrity_ok(db));
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

/* A connection in a write transaction until told to commit. */
static int timeout_holder(void *arg, int in, int out)
{
	char line[16];
	sqlite3 *db;

	(void)arg;
	if (sqlite3_safemap_vfs_register(0) != SQLITE_OK)
		return 1;
	if (!(db = db_open("safemap", 5000)))
		return 2;
	if (sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT INTO t(w, n) VALUES (7, 1);", NULL, NULL,
			 NULL) != SQLITE_OK) {
		tu_send(out, "3");
		return 3;
	}
	tu_send(out, "0");
	tu_recv(in, line, sizeof(line));
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return 4;
	return sqlite3_close(db) == SQLITE_OK ? 0 : 5;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* SQLITE_FCNTL_LOCK_TIMEOUT (a blocking lock, as SETLK_TIMEOUT builds ask
 * for it) is each WAL lock's own bound: a writer behind another waits it,
 * then gets SQLITE_BUSY; 0 fails at once; once the holder commits, the
 * lock is granted. */
START_TEST(test_lock_timeout)
{
	const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
	uint64_t slack = m && atoi(m) > 1 ? (uint64_t)atoi(m) : 1, t0, dt;
	struct tu_child h;
	sqlite3 *db;
	int ms;

	setup();
	ck_assert_int_eq(sqlite3_safemap_vfs_register(0), SQLITE_OK);
	create_table("safemap");
	tu_spawn(&h, timeout_holder, NULL);
	ck_assert_int_eq(tu_recv_int(h.from), 0);
	db = db_open("safemap", 0); /* no busy handler: one attempt per statement */
	ck_assert_ptr_nonnull(db);

	ms = 200;
	ck_assert_int_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_LOCK_TIMEOUT, &ms),
			 SQLITE_OK);
	t0 = mono_ms();
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_BUSY);
	dt = mono_ms() - t0;
	ck_assert_msg(dt >= 200, "SQLITE_BUSY after %llu ms, before the 200 ms timeout",
		      (unsigned long long)dt);
	ck_assert_msg(dt < 5000 * slack, "200 ms timeout took %llu ms", (unsigned long long)dt);

	ms = 0;
	ck_assert_int_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_LOCK_TIMEOUT, &ms),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_BUSY);

	tu_send(h.to, "commit");
	ck_assert_int_eq(tu_wait(&h), 0);
	ms = 200;
	ck_assert_int_eq(sqlite3_file_control(db, "main", SQLITE_FCNTL_LOCK_TIMEOUT, &ms),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT INTO t(w, n) VALUES (8, 1); "
					  "COMMIT",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM t WHERE w IN (7, 8)"), 2);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

/* The same source built as a loadable extension (when shared libraries are
 * built): a stock connection loads it by its name alone, as the sqlite3
 * shell's `.load safemapvfs` does (no ".so", no entry point: SQLite derives
 * sqlite3_safemapvfs_init from the file name), and the VFS it registers
 * works.  This test's process never calls sqlite3_safemap_vfs_register
 * itself. */
START_TEST(test_extension)
{
	char self[PATH_MAX], so[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	sqlite3 *mem, *db;
	char *err = NULL;
	char *slash;

	setup();
	ck_assert_int_gt(n, 0);
	self[n] = '\0';
	slash = strrchr(self, '/');
	*slash = '\0';
	if (strcmp(strrchr(self, '/'), "/.libs") == 0)
		*strrchr(self, '/') = '\0';
	snprintf(so, sizeof(so), "%s/../contrib/sqlite/.libs/safemapvfs.so", self);
	if (access(so, R_OK) != 0) {
		printf("SKIP test_extension: %s not built (--disable-shared)\n", so);
		fflush(stdout);
		return;
	}
	ck_assert_ptr_null(sqlite3_vfs_find("safemap"));
	ck_assert_int_eq(sqlite3_open(":memory:", &mem), SQLITE_OK);
	ck_assert_int_eq(sqlite3_enable_load_extension(mem, 1), SQLITE_OK);
	so[strlen(so) - 3] = '\0'; /* SQLite tries the name, then the name + ".so" */
	ck_assert_msg(sqlite3_load_extension(mem, so, NULL, &err) == SQLITE_OK,
		      "load_extension: %s", err ? err : "?");
	ck_assert_int_eq(sqlite3_close(mem), SQLITE_OK);
	ck_assert_ptr_nonnull(sqlite3_vfs_find("safemap")); /* stays loaded */
	db = db_open("safemap", 1000);
	ck_assert_ptr_nonnull(db);
	ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE x(a); INSERT INTO x VALUES (5);", NULL,
				      NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(query_int(db, "SELECT a FROM x"), 5);
	ck_assert(access(shmpath, F_OK) == 0);
	ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}
END_TEST

static Suite *sqlite_suite(void)
{
	Suite *s = suite_create("sqlite");
	TCase *tc = tcase_create("vfs");

	tcase_set_timeout(tc, 45);
	tcase_add_test(tc, test_register);
	tcase_add_test(tc, test_writers_readers);
	tcase_add_test(tc, test_no_sidecar_left);
	tcase_add_test(tc, test_table_vfs);
	tcase_add_test(tc, test_stock_and_safemap);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_stock_excludes_safemap);
	tcase_add_test(tc, test_rollback_journal_mix);
	tcase_add_test(tc, test_readonly_shm);
	tcase_add_test(tc, test_sigkill_mid_transaction);
	tcase_add_test(tc, test_lock_timeout);
	tcase_add_test(tc, test_extension);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(sqlite_suite());
}
