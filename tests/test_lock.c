/* SPDX-License-Identifier: MIT */
/*
 * test_lock.c - range locks without a mapping (sm_lock, sm_unlock,
 * sm_test; SPEC §16), SM_NOLOCK coordination memory, and the table entries
 * they publish: per-acquisition tags, pending entries, unlocked mappings,
 * and holders nameable after every -EBUSY.  Real processes, pipe
 * handshakes, no sleeps.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap-internal.h" /* sm_debug_late_publish */
#include "safemap.h"
#include "testutil.h"

#define GIB ((uint64_t)1 << 30)

static off_t file_size(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return st.st_size;
}

static int holders(sm_file *f, uint64_t off, uint64_t len, sm_holder *out, size_t cap)
{
	int n = sm_holders(f, off, len, out, cap);

	ck_assert_int_ge(n, 0);
	return n;
}

START_TEST(test_lock_past_eof)
{
	const char *path = tu_tmpfile(8192);
	sm_file *f, *g;
	sm_range *r, *r2;
	sm_holder h[4];

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &g), 0);
	ck_assert_int_eq(sm_lock(f, GIB, 1, SM_LOCK_WRITE, "PENDING", &r), 0);
	ck_assert_int_eq(file_size(path), 8192); /* never grows the file */
	ck_assert_int_eq(tu_probe(path, F_RDLCK, (off_t)GIB, 1), F_WRLCK);
	ck_assert_int_eq(tu_probe(path, F_RDLCK, (off_t)GIB + 1, 1), F_UNLCK);
	ck_assert_int_eq(holders(f, GIB, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "PENDING");
	ck_assert_int_eq(h[0].state, SM_HELD);
	ck_assert_int_eq(h[0].mode, SM_MODE_WRITE);
	ck_assert_int_eq(h[0].pid, getpid());
	ck_assert_uint_eq(h[0].off, GIB);
	ck_assert_uint_eq(h[0].len, 1);
	ck_assert_uint_gt(h[0].since, 0);
	ck_assert_int_eq(sm_test(g, GIB, 1, SM_LOCK_READ), -EBUSY);
	ck_assert_int_eq(sm_test(g, GIB - 1, 1, SM_LOCK_WRITE), 0);
	ck_assert_int_eq(sm_lock(g, GIB, 10, SM_LOCK_READ, NULL, &r2), -EBUSY);
	ck_assert_ptr_null(r2);
	/* a refused attempt leaves no entry */
	ck_assert_int_eq(holders(f, GIB, 10, h, 4), 1);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, (off_t)GIB, 1), F_UNLCK);
	ck_assert_int_eq(holders(f, GIB, 1, h, 4), 0);
	ck_assert_int_eq(sm_test(g, GIB, 1, SM_LOCK_WRITE), 0);
	ck_assert_int_eq(file_size(path), 8192);
	sm_close(g);
	sm_close(f);
}
END_TEST

START_TEST(test_lock_tags)
{
	const char *path = tu_tmpfile(4096);
	sm_options o = { .size = sizeof(o), .tag = "filetag" };
	sm_file *f;
	sm_range *a, *b;
	sm_slice *s;
	sm_holder h[4];
	char longtag[64];

	memset(longtag, 'x', sizeof(longtag) - 1);
	longtag[sizeof(longtag) - 1] = 0;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &f), 0);
	ck_assert_int_eq(sm_lock(f, 100, 1, SM_LOCK_READ, "READ-2", &a), 0);
	ck_assert_int_eq(sm_lock(f, 200, 1, SM_LOCK_READ, NULL, &b), 0);
	ck_assert_int_eq(sm_map_read(f, 300, 10, 0, &s), 0);
	ck_assert_int_eq(holders(f, 100, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "READ-2");
	ck_assert_int_eq(holders(f, 200, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "filetag");
	ck_assert_int_eq(holders(f, 300, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "filetag");
	ck_assert_int_eq(sm_unlock(a), 0);
	ck_assert_int_eq(sm_lock(f, 100, 1, SM_LOCK_WRITE, longtag, &a), 0);
	ck_assert_int_eq(holders(f, 100, 1, h, 4), 1);
	ck_assert_int_eq(strlen(h[0].tag), 31);
	ck_assert_int_eq(sm_unlock(a), 0);
	ck_assert_int_eq(sm_unlock(b), 0);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(f);
}
END_TEST

/* sm_slice_tag: a slice's entry takes a per-acquisition tag, shared by its
 * sub-slices, kept across sm_downgrade, reset by NULL; other processes see it. */
START_TEST(test_slice_tag)
{
	const char *path = tu_tmpfile(8192);
	sm_options o = { .size = sizeof(o), .tag = "filetag" }, nt = { .size = sizeof(nt) };
	sm_file *f, *g;
	sm_slice *s, *sub, *w, *m;
	sm_holder h[4];
	pid_t pid;
	int st;

	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &f), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &s), 0);
	ck_assert_int_eq(holders(f, 0, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "filetag");
	ck_assert_int_eq(sm_slice_tag(s, "PAGE-0"), 0);
	ck_assert_int_eq(holders(f, 0, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "PAGE-0");
	ck_assert_int_eq(sm_sub(s, 10, 10, &sub), 0);
	ck_assert_int_eq(sm_slice_tag(sub, "READ-2"), 0); /* the acquisition's entry */
	ck_assert_int_eq(holders(f, 0, 100, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "READ-2");
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* another process reads the same entry; the child may not retag it */
		sm_file *c;
		int ok = sm_slice_tag(s, "CHILD") == -ESTALE && sm_open(path, SM_RDONLY, NULL, &c) == 0 &&
			 sm_holders(c, 0, 1, h, 4) == 1 && strcmp(h[0].tag, "READ-2") == 0;
		_exit(ok ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_int_eq(sm_slice_tag(s, NULL), 0);
	ck_assert_int_eq(holders(f, 0, 1, h, 4), 1);
	ck_assert_str_eq(h[0].tag, "filetag");
	ck_assert_int_eq(sm_release(sub), 0);
	ck_assert_int_eq(sm_release(s), 0);

	ck_assert_int_eq(sm_map_write(f, 4096, 64, 0, &w), 0);
	ck_assert_int_eq(sm_slice_tag(w, "WAL_WRITE-and-a-tag-longer-than-31-bytes"), 0);
	ck_assert_int_eq(sm_downgrade(w), 0);
	ck_assert_int_eq(holders(f, 4096, 1, h, 4), 1);
	ck_assert_int_eq(h[0].mode, SM_MODE_READ);
	ck_assert_str_eq(h[0].tag, "WAL_WRITE-and-a-tag-longer-than"); /* 31 bytes */
	ck_assert_int_eq(sm_map_write(f, 4100, 8, SM_NOLOCK, &m), 0);
	ck_assert_int_eq(sm_slice_tag(m, "SHM"), 0);
	ck_assert_int_eq(holders(f, 4100, 1, h, 4), 2);
	ck_assert(strcmp(h[0].tag, "SHM") == 0 || strcmp(h[1].tag, "SHM") == 0);
	ck_assert_int_eq(sm_release(m), 0);
	ck_assert_int_eq(sm_release(w), 0);
	ck_assert_int_eq(sm_slice_tag(NULL, "x"), -EINVAL);

	nt.flags = SM_OPT_NO_TABLE;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &nt, &g), 0);
	ck_assert_int_eq(sm_map_read(g, 0, 8, 0, &s), 0);
	ck_assert_int_eq(sm_slice_tag(s, "x"), -ENOTSUP);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(g);
	sm_close(f);
}
END_TEST

START_TEST(test_lock_args)
{
	const char *path = tu_tmpfile(4096);
	sm_file *f, *ro;
	sm_range *r = (sm_range *)1;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_open(path, SM_RDONLY, NULL, &ro), 0);
	ck_assert_int_eq(sm_lock(NULL, 0, 1, SM_LOCK_READ, NULL, &r), -EINVAL);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(sm_lock(f, 0, 1, SM_LOCK_READ, NULL, NULL), -EINVAL);
	ck_assert_int_eq(sm_lock(f, 0, 0, SM_LOCK_READ, NULL, &r), -EINVAL);
	ck_assert_int_eq(sm_lock(f, 0, 1, 0, NULL, &r), -EINVAL);
	ck_assert_int_eq(sm_lock(f, 0, 1, SM_LOCK_READ | SM_LOCK_WRITE, NULL, &r), -EINVAL);
	ck_assert_int_eq(sm_lock(f, 0, 1, SM_LOCK_READ | SM_EXTEND, NULL, &r), -EINVAL);
	ck_assert_int_eq(sm_lock(f, INT64_MAX, 2, SM_LOCK_READ, NULL, &r), -ERANGE);
	/* the bytes from 2^62 are the library's (its log's and table mode's
	 * lock bytes): a user's lock and unlock there could drop one */
	const uint64_t lim = (uint64_t)1 << 62;
	ck_assert_int_eq(sm_lock(f, lim, 1, SM_LOCK_READ, NULL, &r), -ERANGE);
	ck_assert_int_eq(sm_lock(f, lim - 1, 2, SM_LOCK_WRITE, NULL, &r), -ERANGE);
	ck_assert_int_eq(sm_lock_timed(f, lim + 65536, 1, SM_LOCK_READ, 1000, NULL, &r), -ERANGE);
	ck_assert_int_eq(sm_test(f, lim, 1, SM_LOCK_READ), -ERANGE);
	ck_assert_int_eq(sm_lock(f, lim - 1, 1, SM_LOCK_WRITE, NULL, &r), 0); /* the last one */
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_lock(f, 0, 1, SM_LOCK_WRITE | SM_WAIT, NULL, &r), 0); /* uncontended */
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_lock(ro, 0, 1, SM_LOCK_WRITE, NULL, &r), -EBADF);
	ck_assert_int_eq(sm_test(ro, 0, 1, SM_LOCK_WRITE), -EBADF);
	ck_assert_int_eq(sm_test(f, 0, 1, SM_LOCK_WRITE | SM_WAIT), -EINVAL);
	ck_assert_int_eq(sm_test(f, 0, 0, SM_LOCK_WRITE), -EINVAL);
	ck_assert_int_eq(sm_test(NULL, 0, 1, SM_LOCK_WRITE), -EINVAL);
	ck_assert_int_eq(sm_unlock(NULL), -EINVAL);
	ck_assert_int_eq(sm_lock(ro, 0, 1, SM_LOCK_READ, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	sm_close(ro);
	sm_close(f);
}
END_TEST

/* SPEC §3.2 between ranges and slices of one sm_file. */
START_TEST(test_lock_counting)
{
	const char *path = tu_tmpfile(65536);
	sm_file *f;
	sm_range *a, *b, *w;
	sm_slice *s;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_lock(f, 0, 100, SM_LOCK_READ, NULL, &a), 0);
	ck_assert_int_eq(sm_lock(f, 50, 100, SM_LOCK_READ, NULL, &b), 0);
	ck_assert_int_eq(sm_lock(f, 120, 10, SM_LOCK_WRITE, NULL, &w), -EBUSY);
	ck_assert_int_eq(sm_test(f, 120, 10, SM_LOCK_WRITE), -EBUSY);
	ck_assert_int_eq(sm_test(f, 120, 10, SM_LOCK_READ), 0);
	ck_assert_int_eq(sm_map_write(f, 90, 20, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_unlock(a), 0);
	/* b's bytes stay locked, a's own are free */
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 50, 100), F_RDLCK);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 50), F_UNLCK);
	ck_assert_int_eq(sm_map_read(f, 60, 200, 0, &s), 0);
	ck_assert_int_eq(sm_unlock(b), 0);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 60, 200), F_RDLCK);
	ck_assert_int_eq(sm_lock(f, 100, 1, SM_LOCK_WRITE, NULL, &w), -EBUSY);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 1000), F_UNLCK);
	/* a write range excludes slices and read ranges of the same file */
	ck_assert_int_eq(sm_lock(f, 100, 1, SM_LOCK_WRITE, NULL, &w), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 4096, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_lock(f, 100, 1, SM_LOCK_READ, NULL, &a), -EBUSY);
	ck_assert_int_eq(sm_test(f, 0, 4096, SM_LOCK_READ), -EBUSY);
	ck_assert_int_eq(sm_lock(f, 101, 1, SM_LOCK_WRITE, NULL, &a), 0);
	ck_assert_int_eq(sm_unlock(a), 0);
	ck_assert_int_eq(tu_probe(path, F_RDLCK, 100, 1), F_WRLCK);
	ck_assert_int_eq(sm_unlock(w), 0);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 0), F_UNLCK);
	sm_close(f);
}
END_TEST

START_TEST(test_lock_close_defers)
{
	const char *path = tu_tmpfile(4096);
	sm_file *f;
	sm_range *r;
	int nocloexec;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_lock(f, 10, 10, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(tu_probe(path, F_RDLCK, 10, 10), F_WRLCK);
	ck_assert_int_eq(tu_fds_on(path, &nocloexec), 1);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(tu_fds_on(path, &nocloexec), 0);
	ck_assert_int_eq(tu_probe(path, F_RDLCK, 10, 10), F_UNLCK);
}
END_TEST

/* A memory file: in-process counting only. */
START_TEST(test_lock_memory)
{
	static unsigned char buf[4096];
	sm_file *f;
	sm_range *a, *b;

	ck_assert_int_eq(sm_open_memory(buf, sizeof(buf), SM_RDWR, &f), 0);
	ck_assert_int_eq(sm_lock(f, GIB, 1, SM_LOCK_WRITE, NULL, &a), 0);
	ck_assert_int_eq(sm_lock(f, GIB, 1, SM_LOCK_READ, NULL, &b), -EBUSY);
	ck_assert_int_eq(sm_test(f, GIB, 1, SM_LOCK_READ), -EBUSY);
	ck_assert_int_eq(sm_unlock(a), 0);
	ck_assert_int_eq(sm_test(f, GIB, 1, SM_LOCK_WRITE), 0);
	sm_close(f);
}
END_TEST

/* fork, _Fork: the child gets -ESTALE and never unlocks the parent's bytes
 * (the _Fork child skips the atfork handlers: only the wiped page tells). */
static int child_checks(sm_file *f, sm_range *r)
{
	sm_range *x;
	int bad = 0;

	bad |= sm_lock(f, 500, 1, SM_LOCK_READ, NULL, &x) != -ESTALE;
	bad |= (sm_test(f, 10, 10, SM_LOCK_READ) != -ESTALE) << 1;
	bad |= (sm_unlock(r) != -ESTALE) << 2;
	return bad;
}

START_TEST(test_lock_fork)
{
	const char *path = tu_tmpfile(4096);
	sm_file *f;
	sm_range *r;
	sm_holder h[2];
	int status;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_lock(f, 10, 10, SM_LOCK_WRITE, "P", &r), 0);
	for (int kind = 0; kind < 2; kind++) {
		pid_t pid = kind == 0 ? fork() : _Fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0)
			_exit(child_checks(f, r));
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "kind %d: child status %#x",
			      kind, status);
		ck_assert_int_eq(tu_probe(path, F_RDLCK, 10, 10), F_WRLCK);
		ck_assert_int_eq(holders(f, 10, 10, h, 2), 1);
		ck_assert_int_eq(h[0].state, SM_HELD);
	}
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(tu_probe(path, F_RDLCK, 10, 10), F_UNLCK);
	sm_close(f);
}
END_TEST

/* --- holders nameable after -EBUSY ----------------------------------------
 * NW writer processes, each with its own sm_file, contend for one write
 * lock byte.  A winner bumps a shared counter `begin` before it calls
 * sm_unlock and `end` after it returns; a loser reads end then begin before
 * its attempt and begin again after its sm_holders scan.  When no release
 * was in flight before the attempt (begin == end) and none began until the
 * scan was over (begin unchanged), the holder that refused it held its
 * kernel lock through the whole scan: a scan that finds no other process's
 * held or pending entry then is a miss.  Other refusals are "released
 * meanwhile". */
#define NW 4
struct contend {
	unsigned long begin, end;
	unsigned long refused[NW], named[NW], excused[NW], misses[NW], won[NW];
};

static void contend_child(const char *path, struct contend *sh, int k, int start_fd, long iters,
			  bool late)
{
	sm_file *f;
	sm_holder h[8];
	char c;
	pid_t me = getpid();

	sm_debug_late_publish = late;
	if (sm_open(path, SM_RDWR, NULL, &f) < 0)
		_exit(10);
	if (read(start_fd, &c, 1) != 1)
		_exit(11);
	for (long i = 0; i < iters; i++) {
		unsigned long e0 = __atomic_load_n(&sh->end, __ATOMIC_SEQ_CST);
		unsigned long g0 = __atomic_load_n(&sh->begin, __ATOMIC_SEQ_CST), g1;
		sm_range *r;
		int rc = sm_lock(f, GIB, 1, SM_LOCK_WRITE, "W", &r), n, found = 0;
		if (rc == 0) {
			sh->won[k]++;
			for (volatile int spin = 0; spin < 200; spin++)
				;
			__atomic_fetch_add(&sh->begin, 1, __ATOMIC_SEQ_CST);
			if (sm_unlock(r) != 0)
				_exit(12);
			__atomic_fetch_add(&sh->end, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		if (rc != -EBUSY)
			_exit(13);
		sh->refused[k]++;
		n = sm_holders(f, GIB, 1, h, 8);
		g1 = __atomic_load_n(&sh->begin, __ATOMIC_SEQ_CST);
		for (int j = 0; j < n && j < 8; j++)
			found |= h[j].pid != me && (h[j].state == SM_HELD || h[j].state == SM_PENDING);
		if (found)
			sh->named[k]++;
		else if (g0 != g1 || g0 != e0)
			sh->excused[k]++;
		else
			sh->misses[k]++;
	}
	sm_close(f);
	_exit(0);
}

static void contend_run(bool late, long iters, unsigned long *tot)
{
	const char *path = tu_tmpfile(4096);
	struct contend *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int start[2], status;
	pid_t pids[NW];

	ck_assert_ptr_ne(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	ck_assert_int_eq(pipe2(start, O_CLOEXEC), 0);
	for (int k = 0; k < NW; k++) {
		pids[k] = fork();
		ck_assert_int_ge(pids[k], 0);
		if (pids[k] == 0) {
			close(start[1]);
			contend_child(path, sh, k, start[0], iters, late);
		}
	}
	close(start[0]);
	ck_assert_int_eq(write(start[1], "GGGG", NW), NW); /* all start together */
	close(start[1]);
	for (int k = 0; k < NW; k++) {
		ck_assert_int_eq(waitpid(pids[k], &status, 0), pids[k]);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d: status %#x", k,
			      status);
	}
	memset(tot, 0, 5 * sizeof(*tot));
	for (int k = 0; k < NW; k++) {
		tot[0] += sh->refused[k];
		tot[1] += sh->named[k];
		tot[2] += sh->excused[k];
		tot[3] += sh->misses[k];
		tot[4] += sh->won[k];
	}
	fprintf(stderr, "%s order: %lu won, %lu refused: %lu named, %lu released meanwhile, %lu missed\n",
		late ? "old" : "new", tot[4], tot[0], tot[1], tot[2], tot[3]);
	munmap(sh, sizeof(*sh));
}

START_TEST(test_lock_ebusy_names_holder)
{
	unsigned long tot[5];

	contend_run(false, 20000, tot);
	ck_assert_uint_gt(tot[0], 100); /* there was contention */
	ck_assert_uint_eq(tot[3], 0);
	ck_assert_uint_eq(tot[0], tot[1] + tot[2]);
}
END_TEST

/* The same measurement finds the race of the old order (entry added after
 * the kernel lock), so the test above can see misses when there are any. */
START_TEST(test_lock_ebusy_old_order_misses)
{
	unsigned long tot[5] = { 0 };

	for (int round = 0; round < 10 && tot[3] == 0; round++)
		contend_run(true, 20000, tot);
	ck_assert_uint_gt(tot[3], 0);
}
END_TEST

/* Threads of one process share one sm_file's counting: overlapping read
 * ranges and slices, write ranges refused while they overlap; at the end
 * nothing is locked and no entry is left. */
struct thr_arg {
	sm_file *f;
	int k;
	int bad;
};

static void *thr_main(void *p)
{
	struct thr_arg *a = p;

	for (int i = 0; i < 3000; i++) {
		sm_range *r, *w;
		sm_slice *s;
		uint64_t off = (uint64_t)((i + a->k) % 8) * 10;
		if (sm_lock(a->f, off, 25, SM_LOCK_READ, "T", &r) != 0) {
			a->bad++; /* no write range ever overlaps a read one here */
			continue;
		}
		if (sm_map_read(a->f, off + 5, 10, 0, &s) == 0 && sm_release(s) != 0)
			a->bad++;
		int rc = sm_lock(a->f, off + 20, 2, SM_LOCK_WRITE, NULL, &w);
		if (rc != -EBUSY) /* overlaps our own read range */
			a->bad++;
		if (rc == 0)
			sm_unlock(w);
		if (sm_unlock(r) != 0)
			a->bad++;
		if (sm_lock(a->f, 1000 + (uint64_t)a->k, 1, SM_LOCK_WRITE, NULL, &w) != 0 || sm_unlock(w) != 0)
			a->bad++;
	}
	return NULL;
}

START_TEST(test_lock_threads)
{
	const char *path = tu_tmpfile(4096);
	struct thr_arg a[4];
	pthread_t t[4];
	sm_file *f;
	sm_holder h;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	for (int k = 0; k < 4; k++) {
		a[k] = (struct thr_arg){ f, k, 0 };
		ck_assert_int_eq(pthread_create(&t[k], NULL, thr_main, &a[k]), 0);
	}
	for (int k = 0; k < 4; k++) {
		ck_assert_int_eq(pthread_join(t[k], NULL), 0);
		ck_assert_int_eq(a[k].bad, 0);
	}
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 0), F_UNLCK);
	ck_assert_int_eq(sm_holders(f, 0, INT64_MAX, &h, 1), 0);
	ck_assert(RB_EMPTY(&f->segs));
	sm_close(f);
}
END_TEST

/* Format revision 2 (safemap-table(5)): new tables say so, tables of
 * revision 1 are used as they are (compatible: same version), and every
 * owner read-locks the kernel-mode byte. */
START_TEST(test_table_revision)
{
	const char *path = tu_tmpfile(4096);
	char tp[4200];
	struct smt_header hd;
	sm_file *f, *g;
	sm_range *r;
	int fd;

	snprintf(tp, sizeof(tp), "%s.smlock", path);
	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(tu_probe(tp, F_WRLCK, (off_t)SMT_MODE_BYTE_KERNEL, 1), F_RDLCK);
	ck_assert_int_eq(tu_probe(tp, F_WRLCK, (off_t)SMT_MODE_BYTE_TABLE, 1), F_UNLCK);
	fd = open(tp, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &hd, sizeof(hd), 0), sizeof(hd));
	ck_assert_uint_eq(hd.version, SMT_VERSION);
	ck_assert_uint_eq(hd.revision, SMT_REVISION);
	ck_assert_uint_eq(hd.nbuckets, SMT_NBUCKETS); /* waiting (wait.c) */
	ck_assert_uint_eq(hd.tree_off, 0);
	/* pretend revision 1 built it: the next opener keeps it */
	hd.revision = 0;
	ck_assert_int_eq(pwrite(fd, &hd, sizeof(hd), 0), sizeof(hd));
	ck_assert_int_eq(sm_lock(f, 5, 1, SM_LOCK_WRITE, "kept", &r), 0);
	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &g), 0);
	ck_assert_int_eq(g->table_err, 0);
	ck_assert_int_eq(pread(fd, &hd, sizeof(hd), 0), sizeof(hd));
	ck_assert_uint_eq(hd.revision, 0);
	ck_assert_uint_eq(hd.generation, 1);
	sm_holder h;
	ck_assert_int_eq(sm_holders(g, 5, 1, &h, 1), 1);
	ck_assert_str_eq(h.tag, "kept");
	close(fd);
	ck_assert_int_eq(sm_unlock(r), 0);
	sm_close(g);
	sm_close(f);
}
END_TEST

/* --- SM_NOLOCK coordination memory ----------------------------------------- */

/* A peer sharing [0, 4096) as SM_NOLOCK memory:
 *   "get OFF"       -> the u64 at OFF
 *   "put OFF VAL"   -> sm_put_u64 (rc)
 *   "lock OFF"      -> sm_lock write [OFF, OFF+8) tagged "PEER" (rc; kept)
 *   "unlock"        -> sm_unlock (rc)
 *   "who OFF"       -> pid of the first holder of [OFF, OFF+8) that is not
 *                      an unlocked mapping, 0 if none
 *   "quit"          -> exit */
static int nolock_peer(void *arg, int in, int out)
{
	sm_file *f;
	sm_slice *s;
	sm_range *r = NULL;
	char cmd[128];
	unsigned long long a, b;

	if (sm_open(arg, SM_RDWR, NULL, &f) < 0 || sm_map_write(f, 0, 4096, SM_NOLOCK, &s) < 0)
		return 10;
	tu_send(out, "ready");
	while (tu_recv(in, cmd, sizeof(cmd))) {
		if (sscanf(cmd, "get %llu", &a) == 1) {
			uint64_t v = 0;
			tu_send(out, "%d", sm_get_u64(s, a, &v) == 0 ? (int)v : -1);
		} else if (sscanf(cmd, "put %llu %llu", &a, &b) == 2) {
			tu_send(out, "%d", sm_put_u64(s, a, b));
		} else if (sscanf(cmd, "lock %llu", &a) == 1) {
			tu_send(out, "%d", sm_lock(f, a, 8, SM_LOCK_WRITE, "PEER", &r));
		} else if (strcmp(cmd, "unlock") == 0) {
			tu_send(out, "%d", sm_unlock(r));
			r = NULL;
		} else if (sscanf(cmd, "who %llu", &a) == 1) {
			sm_holder h[8];
			int n = sm_holders(f, a, 8, h, 8), pid = 0;
			for (int i = 0; i < n && i < 8 && !pid; i++)
				if (h[i].state != SM_UNLOCKED)
					pid = h[i].pid;
			tu_send(out, "%d", pid);
		} else {
			break;
		}
	}
	if (r)
		sm_unlock(r);
	sm_release(s);
	sm_close(f);
	return 0;
}

static int ask(struct tu_child *c, const char *fmt, unsigned long long a, unsigned long long b)
{
	tu_send(c->to, fmt, a, b);
	return tu_recv_int(c->from);
}

START_TEST(test_nolock_shared)
{
	const char *path = tu_tmpfile(4096);
	struct tu_child c;
	char buf[64];
	sm_file *f;
	sm_slice *s, *w;
	sm_range *r;
	sm_holder h[8];
	uint64_t v;
	int n, unlocked = 0, held = 0;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 4096, SM_NOLOCK, &s), 0);
	tu_spawn(&c, nolock_peer, (void *)path);
	ck_assert(tu_recv(c.from, buf, sizeof(buf)));
	ck_assert_str_eq(buf, "ready");
	/* no kernel lock from either mapping */
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 4096), F_UNLCK);
	/* each sees the other's stores */
	ck_assert_int_eq(sm_put_u64(s, 0, 42), 0);
	ck_assert_int_eq(ask(&c, "get %llu", 0, 0), 42);
	ck_assert_int_eq(ask(&c, "put %llu %llu", 8, 7), 0);
	ck_assert_int_eq(sm_get_u64(s, 8, &v), 0);
	ck_assert_uint_eq(v, 7);
	/* a lock range inside one's own SM_NOLOCK mapping is fine, and it
	 * excludes the peer */
	ck_assert_int_eq(sm_lock(f, 120, 8, SM_LOCK_WRITE, "WAL_WRITE", &r), 0);
	ck_assert_int_eq(ask(&c, "lock %llu", 120, 0), -EBUSY);
	ck_assert_int_eq(ask(&c, "who %llu", 120, 0), getpid());
	ck_assert_int_eq(tu_probe(path, F_RDLCK, 120, 8), F_WRLCK);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 120), F_UNLCK);
	/* so is a locked write slice over it */
	ck_assert_int_eq(sm_map_write(f, 0, 100, 0, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 16, 99), 0);
	ck_assert_int_eq(ask(&c, "get %llu", 16, 0), 99);
	ck_assert_int_eq(sm_release(w), 0);
	/* both mappings are listed as unlocked, the range as held */
	n = holders(f, 0, 4096, h, 8);
	for (int i = 0; i < n && i < 8; i++) {
		unlocked += h[i].state == SM_UNLOCKED;
		if (h[i].state == SM_HELD) {
			held++;
			ck_assert_str_eq(h[i].tag, "WAL_WRITE");
		}
	}
	ck_assert_int_eq(unlocked, 2);
	ck_assert_int_eq(held, 1);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(ask(&c, "lock %llu", 120, 0), 0);
	ck_assert_int_eq(sm_lock(f, 124, 1, SM_LOCK_READ, NULL, &r), -EBUSY);
	ck_assert_int_eq(ask(&c, "unlock", 0, 0), 0);
	tu_send(c.to, "quit");
	ck_assert_int_eq(tu_wait(&c), 0);
	n = holders(f, 0, 4096, h, 8);
	ck_assert_int_eq(n, 1); /* our own mapping */
	ck_assert_int_eq(h[0].state, SM_UNLOCKED);
	ck_assert_int_eq(sm_commit(s, SM_SYNC), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(holders(f, 0, 4096, h, 8), 0);
	sm_close(f);
}
END_TEST

START_TEST(test_nolock_rules)
{
	const char *path = tu_tmpfile(8192);
	sm_file *f, *ro;
	sm_slice *s = NULL, *t, *sub;
	uint64_t v;
	int fd;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_open(path, SM_RDONLY, NULL, &ro), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 10, SM_NOLOCK | SM_BUFFERED, &s), -EINVAL);
	ck_assert_int_eq(sm_map_write(f, 0, 10, SM_NOLOCK | SM_WAIT, &s), -EINVAL);
	ck_assert_int_eq(sm_map_read(f, 0, 10, SM_NOLOCK | SM_WAIT, &s), -EINVAL);
	ck_assert_int_eq(sm_map_write(ro, 0, 10, SM_NOLOCK, &s), -EBADF);
	ck_assert_int_eq(sm_map_read(f, 8000, 1000, SM_NOLOCK, &s), -ERANGE);
	/* a write slice of another sm_file does not exclude coordination memory */
	ck_assert_int_eq(sm_map_write(f, 0, 4096, 0, &t), 0);
	ck_assert_int_eq(sm_map_read(ro, 0, 4096, SM_NOLOCK, &s), 0);
	ck_assert_int_eq(sm_put_u64(t, 0, 1234), 0);
	ck_assert_int_eq(sm_get_u64(s, 0, &v), 0);
	ck_assert_uint_eq(v, 1234);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_release(t), 0);
	/* accessors, sub-slices, commit; no downgrade */
	ck_assert_int_eq(sm_map_write(f, 100, 5000, SM_NOLOCK, &s), 0);
	ck_assert_int_eq(sm_downgrade(s), -EINVAL);
	ck_assert_int_eq(sm_sub(s, 10, 8, &sub), 0);
	ck_assert_int_eq(sm_put_u64_le(sub, 0, 0x1122334455667788ull), 0);
	ck_assert_int_eq(sm_dirty_pages(s), 1);
	ck_assert_int_eq(sm_commit(s, SM_SYNC), 0);
	ck_assert_int_eq(sm_dirty_pages(s), 0);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &v, 8, 110), 8);
	ck_assert_uint_eq(v, 0x1122334455667788ull);
	close(fd);
	/* a close is deferred by coordination mappings too */
	ck_assert_int_eq(sm_release(sub), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sm_get_u64_le(s, 10, &v), 0);
	ck_assert_uint_eq(v, 0x1122334455667788ull);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(ro);
}
END_TEST

/* SM_NOLOCK + SM_EXTEND: grows the file and takes no lock. */
START_TEST(test_nolock_extend)
{
	const char *path = tu_tmpfile(4096);
	sm_file *f;
	sm_slice *s;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 32768, SM_NOLOCK | SM_EXTEND, &s), 0);
	ck_assert_int_eq(file_size(path), 32768);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 0), F_UNLCK);
	ck_assert_int_eq(sm_put_u8(s, 32767, 1), 0);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(f);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("lock");
	TCase *tc = tcase_create("ranges");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_lock_past_eof);
	tcase_add_test(tc, test_lock_tags);
	tcase_add_test(tc, test_slice_tag);
	tcase_add_test(tc, test_lock_args);
	tcase_add_test(tc, test_lock_counting);
	tcase_add_test(tc, test_lock_close_defers);
	tcase_add_test(tc, test_lock_memory);
	tcase_add_test(tc, test_lock_fork);
	tcase_add_test(tc, test_table_revision);
	tcase_add_test(tc, test_lock_threads);
	suite_add_tcase(s, tc);

	tc = tcase_create("nolock");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_nolock_shared);
	tcase_add_test(tc, test_nolock_rules);
	tcase_add_test(tc, test_nolock_extend);
	suite_add_tcase(s, tc);

	tc = tcase_create("contention");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_lock_ebusy_names_holder);
	tcase_add_test(tc, test_lock_ebusy_old_order_misses);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(suite());
}
