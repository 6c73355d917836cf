/* SPDX-License-Identifier: MIT */
/*
 * test_deadline.c - per-call wait bounds: sm_map_read_timed,
 * sm_map_write_timed and sm_lock_timed against the file's own
 * sm_options.wait_ns, in both lock modes (each case runs twice: kernel
 * locks, then SM_OPT_TABLE_LOCKS).  The holder is another process (driven
 * over a pipe); a waiter is known to wait when its entry shows in the
 * table (sm_holders), never after a sleep.  Timed checks assert the lower
 * bound strictly and the upper bound loosely (stretched under valgrind and
 * the sanitizers).  Last, the gate pattern the manual gives for letting a
 * whole-file waiter through writers that take its pages fail-fast.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

#define MS 1000000ull


/* Loop index 0: kernel locks; 1: table-authority mode (every sm_open of
 * the case and of its children, through tu_options). */
static void set_mode(int i)
{
	setenv("SAFEMAP_TEST_MODE", i ? "table" : "kernel", 1);
}

static sm_file *open_with_wait(const char *path, uint64_t wait_ns)
{
	sm_options o;
	sm_file *f;

	tu_options(&o, "waiter");
	o.wait_ns = wait_ns;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &f), 0);
	return f;
}

/* A child process holding a write slice of [0, 4096) of path until told. */
static void hold(struct tu_child *c, struct tu_holder_arg *a, const char *path)
{
	*a = (struct tu_holder_arg){ .path = path, .off = 0, .len = 4096, .write = true,
				     .tag = "holder" };
	tu_spawn(c, tu_holder, a);
	ck_assert_int_eq(tu_recv_int(c->from), 0);
}

static void unhold(struct tu_child *c)
{
	tu_send(c->to, "go");
	ck_assert_int_eq(tu_wait(c), 0);
}

/* Table entries of f over [0, 4096) in state `state`. */
static int count_state(sm_file *f, int state)
{
	sm_holder h[16];
	int n = sm_holders(f, 0, 4096, h, 16), k = 0;

	ck_assert_int_ge(n, 0);
	for (int i = 0; i < n && i < 16; i++)
		k += h[i].state == state;
	return k;
}

/* A shorter bound than the file's: the file waits forever, the call 30 ms. */
START_TEST(test_deadline_shorter)
{
	const char *path = tu_tmpfile(8192);
	struct tu_holder_arg a;
	struct tu_child c;
	sm_file *g;
	sm_slice *s = (sm_slice *)1;
	sm_range *r = (sm_range *)1;
	uint64_t t0, dt;

	set_mode(_i);
	TU_REQUIRE_MODE();
	hold(&c, &a, path);
	g = open_with_wait(path, SM_WAIT_FOREVER);

	t0 = tu_mono_ns();
	ck_assert_int_eq(sm_map_read_timed(g, 0, 100, 0, 30 * MS, &s), -ETIMEDOUT);
	dt = tu_mono_ns() - t0;
	ck_assert_ptr_null(s);
	ck_assert_msg(dt >= 30 * MS, "returned after %llu ns, before its 30 ms",
		      (unsigned long long)dt);
	ck_assert_msg(dt < tu_bound(2000 * MS), "30 ms wait took %llu ns", (unsigned long long)dt);

	/* SM_WAIT in flags changes nothing: still the call's bound */
	t0 = tu_mono_ns();
	ck_assert_int_eq(sm_map_write_timed(g, 100, 100, SM_WAIT, 30 * MS, &s), -ETIMEDOUT);
	dt = tu_mono_ns() - t0;
	ck_assert_msg(dt >= 30 * MS && dt < tu_bound(2000 * MS), "write: %llu ns", (unsigned long long)dt);

	t0 = tu_mono_ns();
	ck_assert_int_eq(sm_lock_timed(g, 4000, 200, SM_LOCK_READ, 30 * MS, "t", &r), -ETIMEDOUT);
	dt = tu_mono_ns() - t0;
	ck_assert_ptr_null(r);
	ck_assert_msg(dt >= 30 * MS && dt < tu_bound(2000 * MS), "lock: %llu ns", (unsigned long long)dt);

	/* a timed-out waiter leaves no entry behind */
	ck_assert_int_eq(count_state(g, SM_WAITING), 0);
	/* outside the held range: at once, whatever the bound */
	ck_assert_int_eq(sm_lock_timed(g, 4096, 1, SM_LOCK_WRITE, 30 * MS, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	unhold(&c);
	sm_close(g);
}
END_TEST

/* The watcher: once a waiter shows in the table, wait `extra` ns (longer
 * than the waiter's file bound), then have the holder release. */
struct watch {
	sm_file *f;
	struct tu_child *c;
	uint64_t extra;
	uint64_t released_at;
};

static void *watcher(void *arg)
{
	struct watch *w = arg;
	uint64_t end = tu_mono_ns() + 20000 * MS;
	struct timespec ts = { .tv_sec = (time_t)(w->extra / 1000000000ull),
			       .tv_nsec = (long)(w->extra % 1000000000ull) };

	while (count_state(w->f, SM_WAITING) == 0) {
		ck_assert_msg(tu_mono_ns() < end, "waiter never registered");
		sched_yield();
	}
	nanosleep(&ts, NULL);
	w->released_at = tu_mono_ns();
	tu_send(w->c->to, "go");
	return NULL;
}

/* Wait through call with a longer bound than the file's 1 ms; the holder
 * releases 50 ms after the waiter registered. */
static int wait_through(const char *path, int which, uint64_t timeout)
{
	struct tu_holder_arg a;
	struct tu_child c;
	struct watch w;
	pthread_t th;
	sm_file *g;
	sm_slice *s = NULL;
	sm_range *r = NULL;
	int rc;

	hold(&c, &a, path);
	g = open_with_wait(path, 1 * MS);
	w = (struct watch){ .f = g, .c = &c, .extra = 50 * MS };
	ck_assert_int_eq(pthread_create(&th, NULL, watcher, &w), 0);
	if (which == 0)
		rc = sm_map_read_timed(g, 0, 4096, 0, timeout, &s);
	else if (which == 1)
		rc = sm_map_write_timed(g, 10, 10, 0, timeout, &s);
	else
		rc = sm_lock_timed(g, 4095, 1, SM_LOCK_WRITE, timeout, "t", &r);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(tu_wait(&c), 0);
	if (rc == 0) {
		ck_assert_uint_ge(tu_mono_ns(), w.released_at);
		ck_assert_int_eq(s ? sm_release(s) : sm_unlock(r), 0);
	}
	sm_close(g);
	return rc;
}

/* A longer bound than the file's: the call waits past wait_ns (1 ms) and
 * gets the region when the holder releases. */
START_TEST(test_deadline_longer)
{
	const char *path = tu_tmpfile(8192);
	struct tu_holder_arg a;
	struct tu_child c;
	sm_file *g;
	sm_slice *s;
	uint64_t t0;

	set_mode(_i);
	TU_REQUIRE_MODE();
	ck_assert_int_eq(wait_through(path, 0, 10000 * MS), 0);
	ck_assert_int_eq(wait_through(path, 1, 10000 * MS), 0);
	ck_assert_int_eq(wait_through(path, 2, 10000 * MS), 0);

	/* the file's default stays: plain SM_WAIT gives up after its 1 ms */
	hold(&c, &a, path);
	g = open_with_wait(path, 1 * MS);
	t0 = tu_mono_ns();
	ck_assert_int_eq(sm_map_read(g, 0, 10, SM_WAIT, &s), -ETIMEDOUT);
	ck_assert_uint_ge(tu_mono_ns() - t0, 1 * MS);
	unhold(&c);
	sm_close(g);
}
END_TEST

/* SM_WAIT_FOREVER as a call's bound: no bound, whatever the file's. */
START_TEST(test_deadline_forever)
{
	const char *path = tu_tmpfile(8192);

	set_mode(_i);
	TU_REQUIRE_MODE();
	ck_assert_int_eq(wait_through(path, 0, SM_WAIT_FOREVER), 0);
	ck_assert_int_eq(wait_through(path, 2, SM_WAIT_FOREVER), 0);
}
END_TEST

/* A bound of 0 fails fast: -EBUSY (not -ETIMEDOUT), no waiting entry,
 * even with SM_WAIT in flags. */
START_TEST(test_deadline_zero)
{
	const char *path = tu_tmpfile(8192);
	struct tu_holder_arg a;
	struct tu_child c;
	sm_file *g;
	sm_slice *s;
	sm_range *r;

	set_mode(_i);
	TU_REQUIRE_MODE();
	hold(&c, &a, path);
	g = open_with_wait(path, SM_WAIT_FOREVER);
	ck_assert_int_eq(sm_map_read_timed(g, 0, 10, 0, 0, &s), -EBUSY);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(sm_map_write_timed(g, 0, 10, SM_WAIT, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_lock_timed(g, 0, 10, SM_LOCK_READ | SM_WAIT, 0, NULL, &r), -EBUSY);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(count_state(g, SM_WAITING), 0);
	/* free regions: 0 is an ordinary fail-fast acquisition */
	ck_assert_int_eq(sm_map_write_timed(g, 4096, 10, 0, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_lock_timed(g, 4096, 10, SM_LOCK_WRITE, 0, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	unhold(&c);
	sm_close(g);
}
END_TEST

/* Arguments are checked as the untimed calls check them. */
START_TEST(test_deadline_args)
{
	const char *path = tu_tmpfile(8192);
	sm_file *f;
	sm_slice *s;
	sm_range *r;

	set_mode(_i);
	TU_REQUIRE_MODE();
	f = open_with_wait(path, 0);
	ck_assert_int_eq(sm_map_read_timed(NULL, 0, 1, 0, MS, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read_timed(f, 0, 1, 0, MS, NULL), -EINVAL);
	ck_assert_int_eq(sm_map_read_timed(f, 0, 0, 0, MS, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read_timed(f, 0, 1, SM_EXTEND, MS, &s), -EINVAL);
	ck_assert_int_eq(sm_map_write_timed(f, 8192, 1, 0, MS, &s), -ERANGE);
	/* coordination memory never waits */
	ck_assert_int_eq(sm_map_read_timed(f, 0, 1, SM_NOLOCK, MS, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read_timed(f, 0, 1, SM_NOLOCK, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_lock_timed(f, 0, 1, SM_LOCK_READ, MS, NULL, NULL), -EINVAL);
	ck_assert_int_eq(sm_lock_timed(f, 0, 1, SM_LOCK_READ | SM_LOCK_WRITE, MS, NULL, &r), -EINVAL);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(sm_lock_timed(f, 0, 0, SM_LOCK_READ, MS, NULL, &r), -EINVAL);
	ck_assert_int_eq(sm_lock_timed(f, INT64_MAX, 2, SM_LOCK_READ, MS, NULL, &r), -ERANGE);
	sm_close(f);
}
END_TEST

/* The gate pattern (sm_map_read(3), EXAMPLES): writers take a gate byte
 * in read mode, with a wait, around each fail-fast page write; a whole-file
 * reader that takes the gate in write mode first gets through them. */
#define GATE ((uint64_t)1 << 40)
#define NWRITERS 4

static int gate_writer(const char *path, int i, volatile int *stop, int ready)
{
	sm_options o;
	sm_file *f;
	int rc, n = 0;

	if ((rc = sm_open(path, SM_RDWR, tu_options(&o, "writer"), &f)) < 0)
		return 1;
	while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
		sm_range *g;
		sm_slice *s;
		if ((rc = sm_lock_timed(f, GATE, 1, SM_LOCK_READ, 10000 * MS, "gate", &g)) < 0)
			return 2;
		if ((rc = sm_map_write(f, (uint64_t)i * 4096, 4096, 0, &s)) == 0) {
			(void)!sm_put_u64(s, 0, (uint64_t)n);
			sm_release(s);
		} else if (rc != -EBUSY) {
			return 3;
		}
		sm_unlock(g);
		if (n++ == 0)
			(void)!write(ready, "r", 1);
	}
	sm_close(f);
	return 0;
}

START_TEST(test_deadline_gate)
{
	const char *path = tu_tmpfile(NWRITERS * 4096);
	volatile int *stop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				  -1, 0);
	pid_t pid[NWRITERS];
	sm_range *g;
	sm_slice *s;
	sm_file *f;
	int p[2], st;
	char c;

	set_mode(_i);
	TU_REQUIRE_MODE();
	ck_assert_ptr_ne((void *)stop, MAP_FAILED);
	ck_assert_int_eq(pipe(p), 0);
	for (int i = 0; i < NWRITERS; i++) {
		ck_assert_int_ge(pid[i] = fork(), 0);
		if (pid[i] == 0)
			_exit(gate_writer(path, i, stop, p[1]));
	}
	for (int i = 0; i < NWRITERS; i++) /* all writing */
		ck_assert_int_eq(read(p[0], &c, 1), 1);
	f = open_with_wait(path, 0);
	for (int round = 0; round < 5; round++) {
		ck_assert_int_eq(sm_lock_timed(f, GATE, 1, SM_LOCK_WRITE, 10000 * MS, "gate", &g), 0);
		ck_assert_int_eq(sm_map_read_timed(f, 0, NWRITERS * 4096, 0, 10000 * MS, &s), 0);
		ck_assert_int_eq(sm_unlock(g), 0);
		ck_assert_int_eq(sm_release(s), 0);
	}
	__atomic_store_n(stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < NWRITERS; i++) {
		ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d: %#x", i, st);
	}
	sm_close(f);
	close(p[0]);
	close(p[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("deadline");
	TCase *tc = tcase_create("deadline");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_deadline_shorter, 0, 2);
	tcase_add_loop_test(tc, test_deadline_longer, 0, 2);
	tcase_add_loop_test(tc, test_deadline_forever, 0, 2);
	tcase_add_loop_test(tc, test_deadline_zero, 0, 2);
	tcase_add_loop_test(tc, test_deadline_args, 0, 2);
	tcase_add_loop_test(tc, test_deadline_gate, 0, 2);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
