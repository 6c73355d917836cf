/* SPDX-License-Identifier: MIT */
/*
 * test_killstress.c - holders SIGKILLed mid-operation while survivors
 * check exclusion exactly (issue 15, SPEC §9 and §12.2).
 *
 * NW worker processes take random read and write slices and sm_lock ranges
 * (fail fast) over a small region of one file, so they conflict often; the
 * parent SIGKILLs a random worker every ~100 ms (at whatever instruction it
 * is: inside the library, mid table update, holding or not) and starts a
 * new one in its place.  Invariants, all exact:
 *   - exclusion: shared anonymous memory has, per 1 KiB block, a bit mask of
 *     the workers holding it for writing and one of those holding it for
 *     reading.  A worker sets its bits after acquiring and clears them before
 *     releasing, and while holding checks that a writer is alone on each of
 *     its blocks and a reader meets no writer.  A killed worker's bits are
 *     exactly its own (the masks are the per-worker record): the parent marks
 *     it doomed before the kill and clears its bits after reaping it, so a
 *     foreign bit seen by a survivor is a violation unless its worker is
 *     doomed (dying: its locks may be gone before its bits);
 *   - data: a writer stamps every word of its range with its token (worker,
 *     incarnation, sequence) and checks all are intact before releasing; a
 *     reader reads its range twice, around a yield, and finds it unchanged
 *     and made of valid tokens;
 *   - liveness: no call fails with anything but -EBUSY (a dead holder never
 *     blocks others for good, SPEC §12.3), nothing hangs (Check's timeout);
 *     at the end the whole region can be write-locked and the table names no
 *     live holder.
 * Runs in both lock modes (tests/test_killstress-table: SAFEMAP_TEST_MODE=
 * table).  SAFEMAP_KILLSTRESS_SECONDS sets the duration, else
 * SAFEMAP_STRESS_SECONDS (check-valgrind's short setting), at most 10 s.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

#define NW 5
#define BLK 1024
#define NB TU_HOLDMAP_BLOCKS
#define REGION (NB * BLK)
#define MAXB 8 /* blocks per acquisition */

struct shared {
	struct tu_holdmap hold; /* who holds each block, for writing or reading */
	_Atomic int stop;
	_Atomic long ops[NW], busy[NW], locks[NW], violations, errors;
	_Atomic int why_set;
	char why[256];
};

static struct shared *sh;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

__attribute__((format(printf, 2, 3))) static void report_bad(_Atomic long *counter, const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add(counter, 1);
	if (atomic_exchange(&sh->why_set, 1) == 0) {
		va_start(ap, fmt);
		vsnprintf(sh->why, sizeof(sh->why), fmt, ap);
		va_end(ap);
	}
}

static void check_alone(int me, int first, int n, bool write, const char *when)
{
	int b = tu_holdmap_conflict(&sh->hold, me, first, n, write);

	if (b >= 0)
		report_bad(&sh->violations, "worker %d (%s, blocks %d+%d) %s: block %d also held (w %#x r %#x)", me,
			   write ? "write" : "read", first, n, when, b, atomic_load(&sh->hold.wmask[b]),
			   atomic_load(&sh->hold.rmask[b]));
}

/* Words of the region through slice s (offset 0 = byte `base` of the file). */
static bool stamp(sm_slice *s, uint64_t at, uint64_t len, uint64_t token)
{
	for (uint64_t o = 0; o < len; o += 8)
		if (sm_put_u64_le(s, at + o, token) < 0)
			return false;
	return true;
}

static int intact(sm_slice *s, uint64_t at, uint64_t len, uint64_t token)
{
	uint64_t v;

	for (uint64_t o = 0; o < len; o += 8) {
		int rc = sm_get_u64_le(s, at + o, &v);
		if (rc < 0)
			return rc;
		if (v != token)
			return 1;
	}
	return 0;
}

static int digest(sm_slice *s, uint64_t at, uint64_t len, uint64_t *sum)
{
	uint64_t v;

	*sum = 0;
	for (uint64_t o = 0; o < len; o += 8) {
		int rc = sm_get_u64_le(s, at + o, &v);
		if (rc < 0)
			return rc;
		if (v != 0 && (v >> 56 == 0 || v >> 56 > NW))
			return 1; /* not a token: a torn or foreign word */
		*sum = *sum * 1000003 + v;
	}
	return 0;
}

static void worker(const char *path, int me, unsigned incarnation)
{
	unsigned seed = (unsigned)me * 2654435761u ^ incarnation * 40503u ^ (unsigned)getpid();
	uint32_t seq = 0;
	sm_file *f;
	sm_slice *shm = NULL;
	int rc;

	if ((rc = tu_open(path, SM_RDWR, NULL, &f)) < 0 ||
	    (rc = sm_map_write(f, 0, REGION, SM_NOLOCK, &shm)) < 0) {
		report_bad(&sh->errors, "worker %d: open: %s", me, sm_strerror(rc));
		_exit(1);
	}
	while (!atomic_load(&sh->stop)) {
		int first = rand_r(&seed) % NB, n = 1 + rand_r(&seed) % MAXB;
		if (first + n > NB)
			n = NB - first;
		bool write = rand_r(&seed) % 3 == 0, range = rand_r(&seed) % 3 == 0;
		bool buffered = write && !range && rand_r(&seed) % 8 == 0;
		uint64_t off = (uint64_t)first * BLK, len = (uint64_t)n * BLK, at = 0;
		sm_slice *s = NULL, *data;
		sm_range *r = NULL;

		if (range)
			rc = sm_lock(f, off, len, write ? SM_LOCK_WRITE : SM_LOCK_READ, NULL, &r);
		else if (write)
			rc = sm_map_write(f, off, len, buffered ? SM_BUFFERED : 0, &s);
		else
			rc = sm_map_read(f, off, len, 0, &s);
		if (rc == -EBUSY) {
			atomic_fetch_add(&sh->busy[me], 1);
			continue;
		}
		if (rc < 0) {
			report_bad(&sh->errors, "worker %d: %s [%llu, +%llu): %s", me, range ? "sm_lock" : "map",
			     (unsigned long long)off, (unsigned long long)len, sm_strerror(rc));
			break;
		}
		data = range ? shm : s;
		at = range ? off : 0;
		tu_holdmap_mark(&sh->hold, me, first, n, write, true);
		check_alone(me, first, n, write, "after acquiring");
		if (write) {
			uint64_t token = (uint64_t)(me + 1) << 56 | (uint64_t)(incarnation & 0xffffff) << 32 | ++seq;
			if (!stamp(data, at, len, token))
				report_bad(&sh->errors, "worker %d: stamp failed", me);
			sched_yield(); /* let others (wrongly) interfere */
			if ((rc = intact(data, at, len, token)) != 0)
				report_bad(rc < 0 ? &sh->errors : &sh->violations,
				     "worker %d: write range [%llu, +%llu) %s", me, (unsigned long long)off,
				     (unsigned long long)len, rc < 0 ? sm_strerror(rc) : "changed under its write lock");
			if (buffered && (rc = sm_commit(s, 0)) < 0)
				report_bad(&sh->errors, "worker %d: commit: %s", me, sm_strerror(rc));
		} else {
			uint64_t a, b;
			int r1 = digest(data, at, len, &a);
			sched_yield();
			int r2 = digest(data, at, len, &b);
			if (r1 < 0 || r2 < 0)
				report_bad(&sh->errors, "worker %d: read: %s", me, sm_strerror(r1 < 0 ? r1 : r2));
			else if (r1 > 0 || r2 > 0 || a != b)
				report_bad(&sh->violations, "worker %d: read range [%llu, +%llu) %s", me,
				     (unsigned long long)off, (unsigned long long)len,
				     r1 > 0 || r2 > 0 ? "holds a word that is no token" : "changed under its read lock");
		}
		check_alone(me, first, n, write, "before releasing");
		tu_holdmap_mark(&sh->hold, me, first, n, write, false);
		rc = range ? sm_unlock(r) : sm_release(s);
		if (rc < 0)
			report_bad(&sh->errors, "worker %d: release: %s", me, sm_strerror(rc));
		atomic_fetch_add(&sh->ops[me], 1);
		if (range)
			atomic_fetch_add(&sh->locks[me], 1);
	}
	sm_release(shm);
	sm_close(f);
	_exit(0);
}

static pid_t spawn(const char *path, int me, unsigned incarnation)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		worker(path, me, incarnation);
	return pid;
}

static double seconds(void)
{
	const char *e = getenv("SAFEMAP_KILLSTRESS_SECONDS");
	double s;

	if (!e || !*e)
		e = getenv("SAFEMAP_STRESS_SECONDS");
	s = e && *e ? atof(e) : 10.0;
	return s <= 0 || s > 10.0 ? 10.0 : s;
}

START_TEST(holders_killed_every_100ms)
{
	TU_REQUIRE_MODE();
	const char *p = tu_tmpfile(REGION);
	double secs = seconds(), t0 = now(), end = t0 + secs;
	unsigned incarnation[NW] = { 0 }, seed = (unsigned)getpid();
	pid_t pid[NW];
	long kills = 0, ops = 0, busy = 0, locks = 0;
	int st;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(sh, MAP_FAILED);
	for (int i = 0; i < NW; i++)
		pid[i] = spawn(p, i, incarnation[i]);
	while (now() < end && atomic_load(&sh->errors) == 0) {
		struct timespec ts = { 0, (50 + rand_r(&seed) % 100) * 1000000L }; /* ~100 ms apart */
		nanosleep(&ts, NULL);
		int j = rand_r(&seed) % NW;
		tu_holdmap_doom(&sh->hold, j);
		kill(pid[j], SIGKILL);
		ck_assert_int_eq(waitpid(pid[j], &st, 0), pid[j]);
		if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
			report_bad(&sh->errors, "worker %d ended before its kill (status %#x)", j, st);
		kills++;
		/* exactly what the dead worker held: its bits */
		tu_holdmap_forget(&sh->hold, j);
		pid[j] = spawn(p, j, ++incarnation[j]);
	}
	atomic_store(&sh->stop, 1);
	for (int i = 0; i < NW; i++) {
		ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			report_bad(&sh->errors, "worker %d: exit status %#x", i, st);
	}
	for (int i = 0; i < NW; i++) {
		ops += sh->ops[i];
		busy += sh->busy[i];
		locks += sh->locks[i];
	}
	printf("stress: killstress, %s mode, %d workers, %.1f s: %ld ops (%ld sm_lock), %ld refused "
	       "(-EBUSY), %ld kills, %ld violations, %ld errors\n",
	       tu_table_mode() ? "table" : "kernel", NW, now() - t0, ops, locks, busy, kills,
	       (long)sh->violations, (long)sh->errors);
	ck_assert_msg(sh->violations == 0 && sh->errors == 0, "%ld violations, %ld errors: %s",
		      (long)sh->violations, (long)sh->errors, sh->why);
	ck_assert_int_gt(kills, 0);
	ck_assert_int_gt(ops, 0);
	for (int b = 0; b < NB; b++)
		ck_assert(sh->hold.wmask[b] == 0 && sh->hold.rmask[b] == 0);

	/* nothing leaked: the whole region is free, no live holder is named */
	sm_file *f;
	sm_slice *s;
	sm_holder h[8];
	ck_assert_int_eq(tu_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, REGION, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	int n = sm_holders(f, 0, REGION, h, 8);
	ck_assert_int_ge(n, 0);
	for (int i = 0; i < n && i < 8; i++)
		ck_assert_msg(h[i].state == SM_STALE, "holder %d of %d: pid %d state %d", i, n, h[i].pid,
			      h[i].state);
	ck_assert_int_eq(sm_close(f), 0);
	munmap(sh, sizeof(*sh));
}
END_TEST

int main(void)
{
	Suite *s = suite_create(tu_table_mode() ? "killstress (table mode)" : "killstress");
	TCase *tc = tcase_create("killstress");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, holders_killed_every_100ms);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
