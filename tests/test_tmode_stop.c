/* SPDX-License-Identifier: MIT */
/*
 * test_tmode_stop.c - table-authority mode when processes stop or die in
 * the middle: nobody stalls (a stopped acquirer, stops at random
 * moments), dead peers' slots come back to a full table, a
 * foreign reader hides no owner, a retag stopped half-way still excludes,
 * a liveness byte taken by another vouches for nobody, a dead owner costs
 * one probe.  Peers and helpers: tmode_peer.c.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "safemap-internal.h"
#include "testutil.h"
#include "tmode_peer.h"


/* Issue 32, failure 1: a process stopped inside an acquisition (SIGSTOP,
 * Ctrl-Z, a debugger) stalls nobody.  The peer stops after it announced
 * [100, 110) and before it validated; others' fail-fast calls answer at
 * once: a free region is granted, the announced one refused (an acquirer
 * caught mid-way counts as a holder), and once the stopped process is
 * killed its region is free.  With one process-shared mutex around every
 * decision, the first call below never returned. */
START_TEST(stopped_inside_an_acquire_stalls_nobody)
{
	const char *path = tu_tmpfile(1 << 20);
	struct tu_child c;
	char buf[32];
	sm_file *f;
	sm_range *r;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_cmd(&c, "seam", 0), 0);
	tu_send(c.to, "lock w 100 10");
	ck_assert(tu_recv(c.from, buf, sizeof(buf)));
	ck_assert_str_eq(buf, "inside");
	ck_assert_int_eq(kill(c.pid, SIGSTOP), 0);
	ck_assert_int_eq(bounded_map(path, true, 8192, 4096), 0);
	ck_assert_int_eq(bounded_map(path, false, 0, 4096), -EBUSY);
	ck_assert_int_eq(sm_lock(f, 200, 10, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_lock(f, 105, 1, SM_LOCK_READ, NULL, &r), -EBUSY);
	sm_holder h[2];
	ck_assert_int_eq(sm_holders(f, 105, 1, h, 2), 1);
	ck_assert_int_eq(h[0].pid, c.pid);
	kill(c.pid, SIGKILL);
	kill(c.pid, SIGCONT);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_eq(sm_lock(f, 100, 10, SM_LOCK_WRITE, NULL, &r), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* The same at random moments: a peer maps and releases [0, 4096) in a
 * loop and is stopped 40 times wherever it happens to be; each time a
 * region nobody overlaps is granted at once, and the peer's region gets a
 * true answer (granted, or refused while the peer holds or acquires it). */
START_TEST(stopped_at_random_moments_stalls_nobody)
{
	const char *path = tu_tmpfile(1 << 20);
	struct tu_child c;

	peer_start(&c, path, 't', 0);
	tu_send(c.to, "loop w 0 4096");
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	for (int i = 0; i < 40; i++) {
		usleep((useconds_t)(random() % 3000));
		ck_assert_int_eq(kill(c.pid, SIGSTOP), 0);
		ck_assert_int_eq(bounded_map(path, true, 65536 + 4096 * (uint64_t)(i % 8), 4096), 0);
		int rc = bounded_map(path, false, 0, 4096);
		ck_assert_msg(rc == 0 || rc == -EBUSY, "round %d: %d (1: stalled)", i, rc);
		ck_assert_int_eq(kill(c.pid, SIGCONT), 0);
	}
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
}
END_TEST

/* A full table takes back dead owners' slots before it says -ENOLCK, also
 * when another process filled it: a peer holds all but 64 slots and is
 * killed; this process then locks 1,000 regions. */
START_TEST(full_table_reclaims_a_dead_peers_slots)
{
	const char *path = tu_tmpfile(4096);
	enum { CAP = 131072 };
	static sm_range *r[1000];
	struct tu_child c;
	sm_file *f;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_cmd(&c, "fill", CAP - 64), 0);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(sm_lock(f, 2 * (uint64_t)i, 1, SM_LOCK_WRITE, NULL, &r[i]), 0);
	tree_ok(f);
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(sm_unlock(r[i]), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* Issue 32, failure 3: F_OFD_GETLK reports one conflicting lock, and a
 * plain program's whole-file read lock (legal: the fence lets readers in)
 * comes first.  It must not hide a table-mode owner's identity byte: a
 * kernel-mode opener without a table and a table-mode opener of a second
 * table are both refused behind it, and the reader alone refuses nobody. */
START_TEST(foreign_reader_does_not_hide_the_band)
{
	const char *path = tu_tmpfile(65536);
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	char dir[PATH_MAX];
	sm_options o = opts(SM_OPT_TABLE_LOCKS);
	sm_file *f, *g;
	sm_slice *w;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	snprintf(dir, sizeof(dir), "%s.dir", path);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0); /* the plain reader */
	ck_assert_int_eq(open_mode(path, 't', &f), 0);    /* a reader alone refuses nobody */
	ck_assert_int_eq(sm_map_write(f, 0, 4096, 0, &w), 0);
	ck_assert_int_eq(open_mode(path, 'n', &g), -EPROTO);
	o.table_dir = dir;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &g), -EPROTO);
	ck_assert_int_eq(sm_release(w), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(open_mode(path, 'n', &g), 0); /* no table-mode owner now */
	ck_assert_int_eq(sm_close(g), 0);
	close(fd);
	other_dir_remove(path);
}
END_TEST


/* A tag change makes a held entry's seq odd for a moment (sm_slice_tag);
 * stopped there, its owner still holds the region: a writer is refused,
 * not granted (the entry was read as "changing, so not a holder"). */
START_TEST(retag_stopped_halfway_still_excludes)
{
	const char *path = tu_tmpfile(1 << 20);
	struct smt_table t;
	struct tu_child c;
	sm_file *f;
	sm_slice *w;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_take(&c, "map", 'w', 0, 4096, NULL), 0);
	uint32_t i = slot_of(path, c.pid, 0, &t);
	ck_assert_int_eq(kill(c.pid, SIGSTOP), 0);
	__atomic_fetch_add(&t.slots[i].seq, 1, __ATOMIC_ACQ_REL); /* what its first store does */
	ck_assert_int_eq(sm_map_write(f, 0, 4096, 0, &w), -EBUSY);
	ck_assert_int_eq(sm_map_read(f, 100, 1, 0, &w), -EBUSY);
	__atomic_fetch_add(&t.slots[i].seq, 1, __ATOMIC_ACQ_REL);
	smt_detach(&t);
	kill(c.pid, SIGKILL);
	kill(c.pid, SIGCONT);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_eq(sm_map_write(f, 0, 4096, 0, &w), 0);
	ck_assert_int_eq(sm_release(w), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* A kernel-mode opener that took a dead table-mode owner's liveness byte
 * (and was stopped before it freed that owner's slots) does not make the
 * dead owner's entries count: they answer to the area byte only
 * table-mode owners take.  The opener's lock is taken by hand here. */
START_TEST(liveness_byte_taken_by_another_vouches_for_nobody)
{
	const char *path = tu_tmpfile(1 << 20);
	char tpath[PATH_MAX];
	struct smt_table t;
	struct tu_child c;
	sm_file *f;
	sm_range *r;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 0, 100, NULL), 0);
	uint32_t i = slot_of(path, c.pid, 0, &t);
	uint32_t k = SMT_OWNER(t.slots[i].state);
	smt_detach(&t);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	int fd = open(tpath, O_RDWR | O_CLOEXEC);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
			    .l_start = (off_t)(SMT_LIVE_BASE + k), .l_len = 1 };
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	ck_assert_int_eq(sm_lock(f, 50, 10, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	close(fd);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

static unsigned probes;
static void count_probe(uint32_t owner)
{
	(void)owner;
	probes++;
}

/* A killed owner's 100,000 entries under one request cost one liveness
 * probe, not one each (100,000 system calls, 35 ms, before). */
START_TEST(dead_owner_costs_one_probe)
{
	const char *path = tu_tmpfile(4096);
	struct tu_child c;
	sm_file *f;
	sm_range *r;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_cmd(&c, "fill", 100000), 0);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	probes = 0;
	smt_test_after_probe = count_probe;
	ck_assert_int_eq(sm_lock(f, 0, 200000, SM_LOCK_WRITE, NULL, &r), 0);
	smt_test_after_probe = NULL;
	ck_assert_msg(probes <= 2, "%u liveness probes", probes);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tmode_stop");
	TCase *tc = tcase_create("tmode_stop");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, stopped_inside_an_acquire_stalls_nobody);
	tcase_add_test(tc, stopped_at_random_moments_stalls_nobody);
	tcase_add_test(tc, full_table_reclaims_a_dead_peers_slots);
	tcase_add_test(tc, foreign_reader_does_not_hide_the_band);
	tcase_add_test(tc, retag_stopped_halfway_still_excludes);
	tcase_add_test(tc, liveness_byte_taken_by_another_vouches_for_nobody);
	tcase_add_test(tc, dead_owner_costs_one_probe);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
