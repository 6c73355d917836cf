/* SPDX-License-Identifier: MIT */
/*
 * test_procs.c - multi-process tests with real files and real kernel
 * locks: sharing and conflicts across processes, the in-process counting
 * rules seen from another process, foreign fcntl lockers (OFD and classic
 * POSIX), a holder killed with SIGKILL, commit visibility to another
 * process's pread, and fork children.  Every step is a handshake over a
 * pipe; nothing sleeps.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap-internal.h" /* sm_fault_register: to hold the registry lock */
#include "safemap.h"
#include "testutil.h"

#define PG 4096

/* A peer that maps what it is told and reports each result code:
 *   "r OFF LEN" / "w OFF LEN"  map a read / write slice (kept)
 *   "put OFF VAL"              sm_put_u64 + sm_commit on the last write slice
 *   "rel"                      release every slice
 *   "quit"                     exit 0 */
static int peer(void *arg, int in, int out)
{
	const char *path = arg;
	sm_slice *held[16];
	int n = 0, rc;
	sm_file *f;
	char cmd[128];

	if ((rc = sm_open(path, SM_RDWR, NULL, &f)) < 0)
		return 10;
	tu_send(out, "ready");
	while (tu_recv(in, cmd, sizeof(cmd))) {
		unsigned long long off, len;
		if (sscanf(cmd, "r %llu %llu", &off, &len) == 2 && n < 16) {
			rc = sm_map_read(f, off, len, 0, &held[n]);
			n += rc == 0;
		} else if (sscanf(cmd, "w %llu %llu", &off, &len) == 2 && n < 16) {
			rc = sm_map_write(f, off, len, 0, &held[n]);
			n += rc == 0;
		} else if (sscanf(cmd, "put %llu %llu", &off, &len) == 2 && n > 0) {
			rc = sm_put_u64(held[n - 1], off, len);
			if (rc == 0)
				rc = sm_commit(held[n - 1], SM_SYNC);
		} else if (strcmp(cmd, "rel") == 0) {
			rc = 0;
			while (n > 0)
				rc |= sm_release(held[--n]);
		} else if (strcmp(cmd, "quit") == 0) {
			break;
		} else {
			rc = -9999;
		}
		tu_send(out, "%d", rc);
	}
	while (n > 0)
		sm_release(held[--n]);
	sm_close(f);
	return 0;
}

static int ask(struct tu_child *c, const char *cmd)
{
	tu_send(c->to, "%s", cmd);
	return tu_recv_int(c->from);
}

static void start_peer(struct tu_child *c, const char *path)
{
	char buf[16];

	tu_spawn(c, peer, (void *)path);
	ck_assert(tu_recv(c->from, buf, sizeof(buf)));
	ck_assert_str_eq(buf, "ready");
}

static void stop_peer(struct tu_child *c)
{
	tu_send(c->to, "quit");
	ck_assert_int_eq(tu_wait(c), 0);
}

START_TEST(read_read_share_read_write_conflict)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child a, b;

	start_peer(&a, p);
	start_peer(&b, p);
	ck_assert_int_eq(ask(&a, "r 0 100"), 0);
	ck_assert_int_eq(ask(&b, "r 50 100"), 0);
	ck_assert_int_eq(ask(&b, "w 99 1"), -EBUSY);
	ck_assert_int_eq(ask(&b, "w 100 10"), -EBUSY); /* b's own read slice */
	ck_assert_int_eq(ask(&a, "w 150 10"), 0);
	ck_assert_int_eq(ask(&b, "r 155 1"), -EBUSY);
	ck_assert_int_eq(ask(&a, "rel"), 0);
	ck_assert_int_eq(ask(&b, "r 155 1"), 0);
	stop_peer(&a);
	stop_peer(&b);
}
END_TEST

START_TEST(write_write_conflict_until_release)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child a, b;

	start_peer(&a, p);
	start_peer(&b, p);
	ck_assert_int_eq(ask(&a, "w 0 10"), 0);
	ck_assert_int_eq(ask(&b, "w 9 10"), -EBUSY);
	ck_assert_int_eq(ask(&b, "w 10 10"), 0); /* the lock is not page aligned */
	ck_assert_int_eq(ask(&a, "rel"), 0);
	ck_assert_int_eq(ask(&b, "w 0 10"), 0);
	stop_peer(&a);
	stop_peer(&b);
}
END_TEST

/* The counting rules of SPEC §3.2, checked by another process taking real
 * locks with plain fcntl. */
static int fcntl_locker(void *arg, int in, int out)
{
	const char *path = arg;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	char cmd[128];

	if (fd < 0)
		return 10;
	tu_send(out, "ready");
	while (tu_recv(in, cmd, sizeof(cmd))) {
		char kind[16], mode;
		long long off, len;
		struct flock fl;
		int rc;
		if (strcmp(cmd, "quit") == 0)
			break;
		if (sscanf(cmd, "%15s %c %lld %lld", kind, &mode, &off, &len) != 4)
			return 11;
		memset(&fl, 0, sizeof(fl));
		fl.l_type = mode == 'w' ? F_WRLCK : mode == 'r' ? F_RDLCK : F_UNLCK;
		fl.l_whence = SEEK_SET;
		fl.l_start = off;
		fl.l_len = len;
		rc = fcntl(fd, strcmp(kind, "ofd") == 0 ? F_OFD_SETLK : F_SETLK, &fl);
		tu_send(out, "%d", rc == 0 ? 0 : (errno == EAGAIN || errno == EACCES) ? -EBUSY : -errno);
	}
	close(fd);
	return 0;
}

static void start_locker(struct tu_child *c, const char *path)
{
	char buf[16];

	tu_spawn(c, fcntl_locker, (void *)path);
	ck_assert(tu_recv(c->from, buf, sizeof(buf)));
	ck_assert_str_eq(buf, "ready");
}

START_TEST(counting_seen_from_another_process)
{
	const char *p = tu_tmpfile(PG);
	sm_file *f;
	sm_slice *a, *b, *c;
	struct tu_child l;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	start_locker(&l, p);
	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &a), 0);
	ck_assert_int_eq(sm_map_read(f, 50, 100, 0, &b), 0);
	ck_assert_int_eq(sm_map_read(f, 60, 10, 0, &c), 0);
	ck_assert_int_eq(ask(&l, "ofd w 0 1"), -EBUSY);
	ck_assert_int_eq(ask(&l, "ofd r 0 150"), 0); /* readers share */
	ck_assert_int_eq(ask(&l, "ofd u 0 150"), 0);
	ck_assert_int_eq(sm_release(a), 0);
	ck_assert_int_eq(ask(&l, "ofd w 0 50"), 0);
	ck_assert_int_eq(ask(&l, "ofd u 0 50"), 0);
	ck_assert_int_eq(ask(&l, "ofd w 50 1"), -EBUSY);
	ck_assert_int_eq(sm_release(b), 0);
	ck_assert_int_eq(ask(&l, "ofd w 50 10"), 0);
	ck_assert_int_eq(ask(&l, "ofd w 60 1"), -EBUSY); /* c still holds it */
	ck_assert_int_eq(ask(&l, "ofd w 70 80"), 0);
	ck_assert_int_eq(sm_release(c), 0);
	ck_assert_int_eq(ask(&l, "ofd u 0 0"), 0);
	/* every byte a user can lock is free; a whole-file write lock also
	 * covers the opener's mark above 2^62 (documented) */
	ck_assert_int_eq(ask(&l, "ofd w 0 4611686018427387904"), 0);
	ck_assert_int_eq(ask(&l, "ofd u 0 0"), 0);
	ck_assert_int_eq(ask(&l, "ofd w 0 0"), -EBUSY);
	tu_send(l.to, "quit");
	ck_assert_int_eq(tu_wait(&l), 0);
	sm_close(f);
}
END_TEST

START_TEST(foreign_posix_and_ofd_lockers_conflict_both_ways)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child l;
	sm_file *f;
	sm_slice *s;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	start_locker(&l, p);
	/* classic POSIX lock held by another process */
	ck_assert_int_eq(ask(&l, "posix w 100 100"), 0);
	ck_assert_int_eq(sm_map_read(f, 150, 100, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 199, 1, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &s), 0);
	ck_assert_int_eq(ask(&l, "posix w 50 51"), -EBUSY);
	ck_assert_int_eq(ask(&l, "posix r 99 1"), -EBUSY);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(ask(&l, "posix r 99 1"), 0);
	ck_assert_int_eq(ask(&l, "posix u 0 0"), 0);
	/* OFD lock held by another process */
	ck_assert_int_eq(ask(&l, "ofd r 0 10"), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_map_write(f, 5, 1, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 10, 1, 0, &s), 0);
	ck_assert_int_eq(ask(&l, "ofd w 10 1"), -EBUSY);
	ck_assert_int_eq(sm_release(s), 0);
	tu_send(l.to, "quit");
	ck_assert_int_eq(tu_wait(&l), 0);
	sm_close(f);
}
END_TEST

START_TEST(killed_holder_leaves_no_lock)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child a;
	sm_file *f;
	sm_slice *s;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	start_peer(&a, p);
	ck_assert_int_eq(ask(&a, "w 0 100"), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, &s), -EBUSY);
	ck_assert_int_eq(kill(a.pid, SIGKILL), 0);
	ck_assert_int_eq(tu_wait(&a), 128 + SIGKILL);
	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(f);
}
END_TEST

START_TEST(commit_visible_to_another_process)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child a;
	uint64_t v = 0;
	int fd;

	start_peer(&a, p);
	ck_assert_int_eq(ask(&a, "w 8 8"), 0);
	ck_assert_int_eq(ask(&a, "put 0 1234567"), 0);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &v, 8, 8), 8);
	ck_assert_uint_eq(v, 1234567);
	close(fd);
	stop_peer(&a);
}
END_TEST

/* A fork child shares the parent's open file description: if it unlocked,
 * the parent's locks would vanish.  It gets -ESTALE and never unlocks. */
struct fork_arg {
	sm_file *f;
	sm_slice *s;
	const char *path;
};

static int forked_child(void *arg, int in, int out)
{
	struct fork_arg *a = arg;
	sm_slice *t = NULL;
	sm_file *g;
	int rc;

	uint64_t v;
	char buf[4];
	int bad;

	(void)in;
	/* the inherited descriptor was closed at fork */
	tu_send(out, "%d", tu_fds_on(a->path, &bad));
	tu_send(out, "%d", sm_get_u64(a->s, 0, &v));
	tu_send(out, "%d", sm_read(a->s, 0, buf, 4));
	tu_send(out, "%d", sm_put_u8(a->s, 0, 1));
	tu_send(out, "%d", sm_commit(a->s, 0));
	tu_send(out, "%d", sm_map_read(a->f, 200, 1, 0, &t));
	tu_send(out, "%d", sm_release(a->s)); /* frees; must not unlock the parent */
	tu_send(out, "%d", sm_close(a->f));
	/* the child may open afresh; the parent's lock still conflicts */
	if ((rc = sm_open(a->path, SM_RDWR, NULL, &g)) == 0) {
		rc = sm_map_read(g, 0, 1, 0, &t);
		sm_close(g);
	}
	tu_send(out, "%d", rc);
	return 0;
}

START_TEST(fork_child_cannot_unlock_parent)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child c;
	sm_file *f;
	sm_slice *s, *t;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &s), 0);
	struct fork_arg a = { f, s, p };
	tu_spawn(&c, forked_child, &a);
	ck_assert_int_eq(tu_recv_int(c.from), 0);       /* no descriptor */
	ck_assert_int_eq(tu_recv_int(c.from), -ESTALE); /* inline get */
	ck_assert_int_eq(tu_recv_int(c.from), -ESTALE); /* sm_read */
	ck_assert_int_eq(tu_recv_int(c.from), -ESTALE); /* inline put */
	ck_assert_int_eq(tu_recv_int(c.from), -ESTALE); /* commit */
	ck_assert_int_eq(tu_recv_int(c.from), -ESTALE); /* map */
	ck_assert_int_eq(tu_recv_int(c.from), 0);       /* release */
	ck_assert_int_eq(tu_recv_int(c.from), 0);       /* close */
	ck_assert_int_eq(tu_recv_int(c.from), -EBUSY);  /* fresh open */
	ck_assert_int_eq(tu_wait(&c), 0);
	/* the parent's lock survived the child's release and exit */
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 100), F_WRLCK);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, &t), -EBUSY);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

/* A mapping pins its open file description, and OFD locks live as long as
 * the description: a fork child that inherited the holder's windows or
 * table mapping kept the holder's data lock and liveness byte alive after
 * the holder died.  The child must inherit neither. */
static int holder_with_child(void *arg, int in, int out)
{
	const char *p = arg;
	sm_file *f;
	sm_slice *s;
	char buf[8];

	if (sm_open(p, SM_RDWR, NULL, &f) || sm_map_write(f, 0, 100, 0, &s))
		return 1;
	if (fork() == 0) {
		/* past fork(): the atfork handlers have run */
		tu_send(out, "%d", (int)getpid());
		for (;;)
			pause(); /* a child that neither execs nor exits */
	}
	tu_recv(in, buf, sizeof(buf)); /* killed while waiting here */
	return 0;
}

START_TEST(fork_child_keeps_no_lock_of_dead_parent)
{
	const char *p = tu_tmpfile(PG);
	struct tu_child c;
	sm_file *f;
	sm_slice *s;
	sm_holder h[4];
	pid_t g;
	int n;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	tu_spawn(&c, holder_with_child, (void *)p);
	g = (pid_t)tu_recv_int(c.from);
	ck_assert_int_gt(g, 0);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, &s), -EBUSY);
	ck_assert_int_eq(kill(c.pid, SIGKILL), 0);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	/* the grandchild is still alive, holding copies of the dead holder's memory */
	ck_assert_int_eq(kill(g, 0), 0);
	n = sm_holders(f, 0, 100, h, 4);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(h[0].state, SM_STALE); /* its liveness byte went with it */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 100), F_UNLCK);
	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(kill(g, SIGKILL), 0);
	sm_close(f);
}
END_TEST

/* An executed program inherits no safemap descriptor (all O_CLOEXEC). */
extern char **environ;
START_TEST(exec_inherits_no_descriptor)
{
	const char *p = tu_tmpfile(PG);
	char helper[4200];
	sm_file *f, *g;
	sm_slice *s;
	pid_t pid;
	int status;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_open(p, SM_RDONLY, NULL, &g), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 10, 0, &s), 0);
	tu_sibling("fdcheck", helper, sizeof(helper));
	/* posix_spawn (clone + exec) skips the atfork handlers that close
	 * inherited descriptors after fork: only O_CLOEXEC protects here. */
	char *argv[] = { helper, (char *)p, NULL };
	ck_assert_int_eq(posix_spawn(&pid, helper, NULL, NULL, argv, environ), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0); /* 1: a descriptor leaked */
	/* and the parent's lock is intact */
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 10), F_WRLCK);
	sm_release(s);
	sm_close(f);
	sm_close(g);
}
END_TEST

/* ---- fork from another thread (issue 13: 6, 8) ----------------------- */

/* A fork child of a process whose other thread held the fault registry's
 * lock at the moment of fork inherits it locked: its first sm_open (which
 * registers the table mapping) must not hang.  One thread registers and
 * unregisters a mapping in a loop, holding that lock most of the time;
 * the main thread forks children that sm_open. */
static volatile int churn_stop;

static void *registry_churn(void *arg)
{
	struct sm_map *m = arg;

	while (!__atomic_load_n(&churn_stop, __ATOMIC_RELAXED)) {
		sm_fault_register(m);
		sm_fault_unregister(m);
		/* leave the lock free now and then, or a waiter may starve */
		for (volatile int i = 0; i < 100; i++)
			;
	}
	return NULL;
}

START_TEST(fork_while_fault_registry_busy)
{
	static unsigned char never_touched[PG];
	struct sm_map fake = { .addr = never_touched, .len = PG };
	const char *p = tu_tmpfile(PG);
	pthread_t t;
	sm_file *f;
	int status, failed = 0;

	/* installs the guard and the atfork handlers, creates the table */
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, registry_churn, &fake), 0);
	for (int i = 0; i < 200 && !failed; i++) {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			sm_file *g;
			/* a hang is the failure: end it (not Check's inherited
			 * SIGALRM handler, which would kill the whole test) */
			signal(SIGALRM, SIG_DFL);
			alarm(20);
			if (sm_open(p, SM_RDWR, NULL, &g) < 0 || sm_close(g) < 0)
				_exit(1);
			_exit(0);
		}
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	__atomic_store_n(&churn_stop, 1, __ATOMIC_RELAXED);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(!failed, "a fork child hung or failed in sm_open (status 0x%x)", status);
}
END_TEST

/* A fork while another thread is inside sm_open, between its open() of the
 * data file and the end of the table set-up, or inside sm_close, between
 * leaving the fork registry and closing its descriptors: the child must
 * not keep any descriptor of that file (it would keep the parent's locks
 * alive).  That thread is stopped inside the library by an interposed libc
 * call (sm_open's fstatfs, when the data descriptor is open; sm_close's
 * first munmap, the table's) and let go only from a pthread_atfork prepare
 * handler, i.e. once the main thread is inside fork(). */
static volatile int stop_in_fstatfs, stop_in_munmap, prepare_armed;
static int to_main[2], to_stopped[2];

static void stop_here(volatile int *armed)
{
	char c = 'x';

	if (__atomic_exchange_n(armed, 0, __ATOMIC_SEQ_CST) &&
	    (write(to_main[1], &c, 1) != 1 || read(to_stopped[0], &c, 1) != 1))
		abort();
}

int fstatfs(int fd, struct statfs *buf)
{
	stop_here(&stop_in_fstatfs);
	return (int)syscall(SYS_fstatfs, fd, buf);
}

int munmap(void *addr, size_t len)
{
	stop_here(&stop_in_munmap);
	return (int)syscall(SYS_munmap, addr, len);
}

static void let_stopped_go(void)
{
	char c = 'g';

	if (__atomic_exchange_n(&prepare_armed, 0, __ATOMIC_SEQ_CST) && write(to_stopped[1], &c, 1) != 1)
		abort();
}

struct opener_arg {
	const char *path;
	sm_file *f;
	int rc;
};

static void *opener(void *arg)
{
	struct opener_arg *a = arg;

	a->rc = a->f ? sm_close(a->f) : sm_open(a->path, SM_RDWR, NULL, &a->f);
	return NULL;
}

/* Run op (sm_open if a->f is NULL, else sm_close) in a thread stopped at
 * *armed, fork meanwhile, and return how many descriptors of the data file
 * and of its table the child had. */
static void fork_during(struct opener_arg *a, volatile int *armed, int n[2])
{
	char table[4200], c;
	int results[2], bad, status;
	pthread_t t;
	pid_t pid;

	snprintf(table, sizeof(table), "%s.smlock", a->path);
	ck_assert_int_eq(pipe2(results, O_CLOEXEC), 0);
	__atomic_store_n(armed, 1, __ATOMIC_SEQ_CST);
	ck_assert_int_eq(pthread_create(&t, NULL, opener, a), 0);
	ck_assert_int_eq(read(to_main[0], &c, 1), 1); /* stopped inside the library */
	__atomic_store_n(&prepare_armed, 1, __ATOMIC_SEQ_CST);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int m[2] = { tu_fds_on(a->path, &bad), tu_fds_on(table, &bad) };
		_exit(write(results[1], m, sizeof(m)) == (ssize_t)sizeof(m) ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(a->rc, 0);
	ck_assert_int_eq(read(results[0], n, 2 * sizeof(int)), (ssize_t)(2 * sizeof(int)));
	close(results[0]);
	close(results[1]);
}

START_TEST(fork_during_open_or_close_leaves_child_no_descriptor)
{
	const char *p = tu_tmpfile(PG), *q = tu_tmpfile(PG);
	struct opener_arg a = { .path = p };
	sm_slice *s;
	sm_file *f;
	int n[2];

	/* safemap's atfork handlers first, so ours (registered later) run
	 * before them in the prepare phase */
	ck_assert_int_eq(sm_open(q, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(pthread_atfork(let_stopped_go, NULL, NULL), 0);
	ck_assert_int_eq(pipe2(to_main, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(to_stopped, O_CLOEXEC), 0);

	fork_during(&a, &stop_in_fstatfs, n); /* sm_open */
	ck_assert_msg(n[0] == 0, "open: the child kept %d data descriptor(s)", n[0]);
	ck_assert_msg(n[1] == 0, "open: the child kept %d table descriptor(s)", n[1]);
	/* the parent's file works */
	ck_assert_int_eq(sm_map_write(a.f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 10), F_WRLCK);
	ck_assert_int_eq(sm_release(s), 0);

	fork_during(&a, &stop_in_munmap, n); /* sm_close */
	ck_assert_msg(n[0] == 0, "close: the child kept %d data descriptor(s)", n[0]);
	ck_assert_msg(n[1] == 0, "close: the child kept %d table descriptor(s)", n[1]);
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 0, 0), F_UNLCK);
}
END_TEST

/* A fault while this thread holds the fault registry's lock: safemap's
 * atfork prepare handler takes it, and an atfork handler registered before
 * safemap's (so run after it) may touch a slice.  The fault must still be
 * handled, not deadlock on the lock. */
static sm_slice *prepare_slice;
static int prepare_rc = 1;

static void touch_in_prepare(void)
{
	uint64_t v;

	if (prepare_slice)
		prepare_rc = sm_get_u64(prepare_slice, 3 * PG, &v);
}

START_TEST(fault_in_atfork_handler_after_safemap_prepare)
{
	const char *p = tu_tmpfile(4 * PG);
	int status;
	sm_file *f;
	pid_t pid;

	/* registered before safemap's (the first sm_open), so it runs after */
	ck_assert_int_eq(pthread_atfork(touch_in_prepare, NULL, NULL), 0);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 4 * PG, 0, &prepare_slice), 0);
	ck_assert_int_eq(truncate(p, PG), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(prepare_rc == -ENXIO ? 0 : 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(prepare_rc, -ENXIO);
	ck_assert_int_eq(sm_release(prepare_slice), 0);
	prepare_slice = NULL;
	sm_close(f);
}
END_TEST

static Suite *procs_suite(void)
{
	Suite *s = suite_create("procs");
	TCase *tc = tcase_create("processes");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, read_read_share_read_write_conflict);
	tcase_add_test(tc, write_write_conflict_until_release);
	tcase_add_test(tc, counting_seen_from_another_process);
	tcase_add_test(tc, foreign_posix_and_ofd_lockers_conflict_both_ways);
	tcase_add_test(tc, killed_holder_leaves_no_lock);
	tcase_add_test(tc, commit_visible_to_another_process);
	tcase_add_test(tc, fork_child_cannot_unlock_parent);
	tcase_add_test(tc, fork_child_keeps_no_lock_of_dead_parent);
	tcase_add_test(tc, exec_inherits_no_descriptor);
	suite_add_tcase(s, tc);

	tc = tcase_create("fork_from_another_thread");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, fork_while_fault_registry_busy);
	tcase_add_test(tc, fork_during_open_or_close_leaves_child_no_descriptor);
	tcase_add_test(tc, fault_in_atfork_handler_after_safemap_prepare);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(procs_suite());
}
