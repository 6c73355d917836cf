/* SPDX-License-Identifier: MIT */
/*
 * tmode_peer.c - helpers of test_tmode and test_tmode_stop (tmode_peer.h).
 * Modes of open_mode: 't' table mode, 'k' kernel mode, 'n' kernel mode
 * without a table, 'r' that read-only, 'o' kernel mode with its table in
 * PATH.dir.  The peer is a forked child driven over pipes (testutil's
 * tu_spawn): it opens the file in a mode, takes and drops sm_lock ranges
 * and slices on command and answers with the result code.
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

#include "tmode_peer.h"

sm_options opts(uint32_t flags)
{
	sm_options o = { .size = sizeof(o), .flags = flags, .tag = "tmode-test" };

	return o;
}

/* Modes: 't' table mode, 'k' kernel mode, 'n' kernel mode without a
 * table, 'r' that read-only, 'o' kernel mode with its table in PATH.dir
 * (another table for the same file). */
int open_mode(const char *path, char mode, sm_file **f)
{
	sm_options o = opts(mode == 't' ? SM_OPT_TABLE_LOCKS : mode == 'n' || mode == 'r' ? SM_OPT_NO_TABLE : 0);
	char dir[PATH_MAX];

	if (mode == 'o') {
		snprintf(dir, sizeof(dir), "%s.dir", path);
		(void)mkdir(dir, 0700);
		o.table_dir = dir;
	}
	return sm_open(path, mode == 'r' ? SM_RDONLY : SM_RDWR, &o, f);
}

/* Remove what open_mode(path, 'o') left: PATH.dir and its table. */
void other_dir_remove(const char *path)
{
	char dir[PATH_MAX], t[PATH_MAX + 64];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s.dir", path);
	if (stat(path, &st) == 0) {
		snprintf(t, sizeof(t), "%s/%llx-%llx.smlock", dir, (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
		unlink(t);
	}
	rmdir(dir);
}

void tree_ok(sm_file *f)
{
	char why[160];
	int rc = smt_tree_check(f, why, sizeof(why));

	ck_assert_msg(rc == 0, "tree check: %d %s", rc, why);
}

/* ---- the peer ---------------------------------------------------------- */


static int peer_out;
static void seam(void)
{
	/* announced, not validated: tell the parent, wait to be killed */
	tu_send(peer_out, "inside");
	for (;;)
		pause();
}

/* Commands: "fill N" (N one-byte ranges, never released),
 * "open t|k|n PATH", "lock r|w OFF LEN" (-> "rc k"), "map r|w OFF
 * LEN" (-> "rc k"), "drop K", "test r|w OFF LEN", "loop r|w OFF LEN" (map
 * and release until killed), "seam" (the next lock stops after it announced
 * and before it validated), "quit". */
int peer(void *arg, int in, int out)
{
	sm_file *f = NULL;
	sm_range *r[PEER_MAX] = { 0 };
	sm_slice *s[PEER_MAX] = { 0 };
	char line[PATH_MAX + 64], what[8], path[PATH_MAX];
	unsigned long long off, len;
	int k;

	(void)arg;
	peer_out = out;
	while (tu_recv(in, line, sizeof(line))) {
		if (sscanf(line, "open %7s %4095s", what, path) == 2) {
			tu_send(out, "%d", open_mode(path, what[0], &f));
		} else if (sscanf(line, "lock %7s %llu %llu", what, &off, &len) == 3 ||
			   sscanf(line, "map %7s %llu %llu", what, &off, &len) == 3) {
			bool map = line[0] == 'm';
			int rc;
			for (k = 0; k < PEER_MAX && (r[k] || s[k]); k++)
				;
			if (k == PEER_MAX)
				rc = -ENOSPC;
			else if (map)
				rc = what[0] == 'w' ? sm_map_write(f, off, len, 0, &s[k])
						    : sm_map_read(f, off, len, 0, &s[k]);
			else
				rc = sm_lock(f, off, len, what[0] == 'w' ? SM_LOCK_WRITE : SM_LOCK_READ, NULL,
					     &r[k]);
			tu_send(out, "%d %d", rc, k);
		} else if (sscanf(line, "drop %d", &k) == 1) {
			int rc = r[k] ? sm_unlock(r[k]) : s[k] ? sm_release(s[k]) : -EINVAL;
			r[k] = NULL;
			s[k] = NULL;
			tu_send(out, "%d", rc);
		} else if (sscanf(line, "test %7s %llu %llu", what, &off, &len) == 3) {
			tu_send(out, "%d", sm_test(f, off, len, what[0] == 'w' ? SM_LOCK_WRITE : SM_LOCK_READ));
		} else if (sscanf(line, "fill %llu", &len) == 1) {
			/* len one-byte write ranges at 2i (kept until the peer dies) */
			int rc = 0;
			for (unsigned long long i = 0; i < len && rc == 0; i++) {
				sm_range *x;
				rc = sm_lock(f, 2 * i, 1, SM_LOCK_WRITE, NULL, &x);
			}
			tu_send(out, "%d", rc);
		} else if (sscanf(line, "loop %7s %llu %llu", what, &off, &len) == 3) {
			/* map and release for ever (until killed), telling the
			 * parent once it runs */
			tu_send(out, "0");
			for (;;) {
				sm_slice *x;
				if ((what[0] == 'w' ? sm_map_write(f, off, len, 0, &x)
						    : sm_map_read(f, off, len, 0, &x)) == 0)
					sm_release(x);
			}
		} else if (strncmp(line, "seam", 4) == 0) {
			smt_test_in_tree_lock = seam;
			tu_send(out, "0");
		} else if (strcmp(line, "quit") == 0) {
			break;
		} else {
			tu_send(out, "%d", -EINVAL);
		}
	}
	for (k = 0; k < PEER_MAX; k++) {
		if (r[k])
			sm_unlock(r[k]);
		if (s[k])
			sm_release(s[k]);
	}
	if (f)
		sm_close(f);
	return 0;
}

void peer_start(struct tu_child *c, const char *path, char mode, int want)
{
	tu_spawn(c, peer, NULL);
	tu_send(c->to, "open %c %s", mode, path);
	ck_assert_int_eq(tu_recv_int(c->from), want);
}

/* "lock"/"map" in a peer: the result code; *k the peer's handle. */
int peer_take(struct tu_child *c, const char *verb, char mode, uint64_t off, uint64_t len,
		     int *k)
{
	char buf[64];
	int rc, idx;

	tu_send(c->to, "%s %c %llu %llu", verb, mode, (unsigned long long)off, (unsigned long long)len);
	ck_assert(tu_recv(c->from, buf, sizeof(buf)));
	ck_assert_int_eq(sscanf(buf, "%d %d", &rc, &idx), 2);
	if (k)
		*k = idx;
	return rc;
}

int peer_cmd(struct tu_child *c, const char *verb, long arg)
{
	tu_send(c->to, "%s %ld", verb, arg);
	return tu_recv_int(c->from);
}

void peer_quit(struct tu_child *c)
{
	tu_send(c->to, "quit");
	ck_assert_int_eq(tu_wait(c), 0);
}


/* Is a lock of another description on [off, off + len) of path? */
bool locked_by_other(const char *path, uint64_t off, uint64_t len)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = (off_t)len };
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
	close(fd);
	return fl.l_type != F_UNLCK;
}

/* A fail-fast call in a child, bounded: its result, or 1 if it has not
 * returned within two seconds (the child is killed: a stall). */
int bounded_map(const char *path, bool wr, uint64_t off, uint64_t len)
{
	int p[2], rc = 1;
	pid_t c;

	ck_assert_int_eq(pipe(p), 0);
	c = fork();
	ck_assert_int_ge(c, 0);
	if (c == 0) {
		sm_file *g;
		sm_slice *x;
		int r = open_mode(path, 't', &g);
		if (r == 0)
			r = wr ? sm_map_write(g, off, len, 0, &x) : sm_map_read(g, off, len, 0, &x);
		if (write(p[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(1);
		_exit(0); /* the kernel drops its locks, its area counts for nothing */
	}
	close(p[1]);
	struct pollfd pfd = { .fd = p[0], .events = POLLIN };
	const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
	int ms = 2000 * (m && atoi(m) > 0 ? atoi(m) : 1);
	if (poll(&pfd, 1, ms) == 1 &&
	    read(p[0], &rc, sizeof(rc)) == (ssize_t)sizeof(rc)) {
		waitpid(c, NULL, 0);
	} else {
		rc = 1;
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
	}
	close(p[0]);
	return rc;
}

/* The slot of path's table held by pid over off (its index), the table
 * attached writable in *t. */
uint32_t slot_of(const char *path, pid_t pid, uint64_t off, struct smt_table *t)
{
	char tpath[PATH_MAX];

	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	ck_assert_int_eq(smt_attach_path(tpath, true, t), 0);
	for (uint32_t i = 0; i < t->nslots; i++)
		if (SMT_STATE(t->slots[i].state) == SMT_HELD && t->slots[i].pid == pid && t->slots[i].off == off)
			return i;
	ck_abort_msg("no slot of pid %d at %llu", (int)pid, (unsigned long long)off);
	return 0;
}
