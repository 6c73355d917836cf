/* SPDX-License-Identifier: MIT */
/*
 * test_tmode.c - table-authority mode (SM_OPT_TABLE_LOCKS, SPEC §12) with
 * real processes: mode exclusion, the fence, table identity, conflicts
 * across processes and sm_files, holders killed (also inside the table's
 * critical section), 100,000 regions, a full table, and a differential
 * test against a model.  Every case checks the tree's invariants with
 * smt_tree_check (the private build).
 *
 * Children are forked peers driven over pipes (testutil's tu_spawn):
 * a peer opens the file in a mode, takes and drops sm_lock ranges and
 * slices on command and answers with the result code: handshakes, never
 * sleeps.
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

static sm_options opts(uint32_t flags)
{
	sm_options o = { .size = sizeof(o), .flags = flags, .tag = "tmode-test" };

	return o;
}

/* Modes: 't' table mode, 'k' kernel mode, 'n' kernel mode without a
 * table, 'r' that read-only, 'o' kernel mode with its table in PATH.dir
 * (another table for the same file). */
static int open_mode(const char *path, char mode, sm_file **f)
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
static void other_dir_remove(const char *path)
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

static void tree_ok(sm_file *f)
{
	char why[160];
	int rc = smt_tree_check(f, why, sizeof(why));

	ck_assert_msg(rc == 0, "tree check: %d %s", rc, why);
}

/* ---- the peer ---------------------------------------------------------- */

#define PEER_MAX 64

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
static int peer(void *arg, int in, int out)
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

static void peer_start(struct tu_child *c, const char *path, char mode, int want)
{
	tu_spawn(c, peer, NULL);
	tu_send(c->to, "open %c %s", mode, path);
	ck_assert_int_eq(tu_recv_int(c->from), want);
}

/* "lock"/"map" in a peer: the result code; *k the peer's handle. */
static int peer_take(struct tu_child *c, const char *verb, char mode, uint64_t off, uint64_t len,
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

static int peer_cmd(struct tu_child *c, const char *verb, long arg)
{
	tu_send(c->to, "%s %ld", verb, arg);
	return tu_recv_int(c->from);
}

static void peer_quit(struct tu_child *c)
{
	tu_send(c->to, "quit");
	ck_assert_int_eq(tu_wait(c), 0);
}

/* ---- cases --------------------------------------------------------------- */

START_TEST(flags_and_layout)
{
	const char *path = tu_tmpfile(65536);
	sm_options o = opts(SM_OPT_TABLE_LOCKS | SM_OPT_NO_TABLE);
	struct smt_table t;
	char tpath[PATH_MAX];
	sm_file *f;

	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &f), -EINVAL);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	tree_ok(f);
	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	ck_assert_int_eq(smt_attach_path(tpath, false, &t), 0);
	ck_assert_uint_ge(t.hdr.nslots, 131072);
	ck_assert_uint_ne(t.hdr.idx_off, 0);
	ck_assert_uint_eq(t.hdr.idx_off % 4096, 0);
	ck_assert_uint_ge(t.hdr.idx_off, 4096 + (uint64_t)t.hdr.nslots * 128);
	ck_assert_uint_ge(t.hdr.idx_size, 4096 + 65536 * 64 + (uint64_t)t.hdr.nslots * 72);
	ck_assert_uint_ge((uint32_t)t.hdr.table_id, 65536);
	smt_detach(&t);
	/* the fence and the identity byte are on the data file */
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 4096), F_RDLCK);
	ck_assert_int_eq(tu_probe(path, F_RDLCK, 0, 4096), F_UNLCK);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 0), F_UNLCK);
	/* a memory file has no options: nothing to refuse; a network
	 * filesystem is recognised by its statfs type */
	ck_assert(smt_netfs_type(0x6969UL));
	ck_assert(!smt_netfs_type(0xEF53UL));
}
END_TEST

START_TEST(mode_exclusion_both_orders)
{
	const char *path = tu_tmpfile(65536);
	struct tu_child c;
	sm_file *f, *g;

	/* table mode first: kernel-mode openers (with or without a table) fail */
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 'k', -EPROTO);
	peer_quit(&c);
	peer_start(&c, path, 'n', -EPROTO);
	peer_quit(&c);
	ck_assert_int_eq(open_mode(path, 'k', &g), -EPROTO);
	ck_assert_int_eq(open_mode(path, 'n', &g), -EPROTO);
	ck_assert_int_eq(open_mode(path, 't', &g), 0); /* same mode: fine */
	ck_assert_int_eq(sm_close(g), 0);
	ck_assert_int_eq(sm_close(f), 0);
	/* kernel mode first: table-mode openers fail */
	ck_assert_int_eq(open_mode(path, 'k', &f), 0);
	peer_start(&c, path, 't', -EPROTO);
	peer_quit(&c);
	ck_assert_int_eq(open_mode(path, 't', &g), -EPROTO);
	ck_assert_int_eq(sm_close(f), 0);
	/* nobody attached: either mode again */
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* Two openers in different modes released at once: never both attached. */
static int racer(void *arg, int in, int out)
{
	const char *path = arg;
	char mode[8];
	sm_file *f = NULL;
	int rc;

	if (!tu_recv(in, mode, sizeof(mode)))
		return 1;
	rc = open_mode(path, mode[0], &f);
	tu_send(out, "%d", rc);
	tu_recv(in, mode, sizeof(mode)); /* hold until told */
	if (rc == 0)
		sm_close(f);
	return 0;
}

START_TEST(race_of_two_modes)
{
	const char *path = tu_tmpfile(65536);
	int both = 0, some = 0;

	for (int round = 0; round < 40; round++) {
		/* every kernel-mode flavour: the same table, none, read-only,
		 * another table */
		char km[2] = { "knro"[(round / 2) % 4], 0 };
		struct tu_child a, b;
		int ra, rb;
		tu_spawn(&a, racer, (void *)path);
		tu_spawn(&b, racer, (void *)path);
		tu_send(a.to, round & 1 ? "t" : km);
		tu_send(b.to, round & 1 ? km : "t");
		ra = tu_recv_int(a.from);
		rb = tu_recv_int(b.from);
		ck_assert(ra == 0 || ra == -EPROTO);
		ck_assert(rb == 0 || rb == -EPROTO);
		both += ra == 0 && rb == 0;
		some += ra == 0 || rb == 0;
		tu_send(a.to, "x");
		tu_send(b.to, "x");
		ck_assert_int_eq(tu_wait(&a), 0);
		ck_assert_int_eq(tu_wait(&b), 0);
	}
	ck_assert_int_eq(both, 0);
	ck_assert_int_gt(some, 0);
	other_dir_remove(path);
}
END_TEST

/* A kernel-mode opener first, in every flavour (with the same table,
 * without one, read-only, with another table), with and without a plain
 * whole-file read lock that masks probes: a table-mode opener after it
 * fails, and succeeds once it has closed; the foreign reader alone
 * refuses nobody. */
START_TEST(kernel_opener_first_refuses_table_mode)
{
	const char *path = tu_tmpfile(65536);
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	for (int masked = 0; masked < 2; masked++) {
		if (masked)
			ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
		for (const char *m = "knro"; *m; m++) {
			struct tu_child c;
			sm_file *g;
			peer_start(&c, path, *m, 0);
			ck_assert_msg(open_mode(path, 't', &g) == -EPROTO, "table mode beside '%c' (masked %d)", *m,
				      masked);
			peer_quit(&c);
			ck_assert_int_eq(open_mode(path, 't', &g), 0);
			ck_assert_int_eq(sm_close(g), 0);
		}
	}
	close(fd);
	other_dir_remove(path);
}
END_TEST

START_TEST(fence)
{
	const char *path = tu_tmpfile(65536);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 10 };
	sm_file *f;
	int fd = open(path, O_RDWR | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	/* a plain fcntl writer is refused while a table-mode user is attached */
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), -1);
	ck_assert(errno == EAGAIN || errno == EACCES);
	/* a plain fcntl reader is not (documented) */
	fl.l_type = F_RDLCK;
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	fl.l_type = F_UNLCK;
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	ck_assert_int_eq(sm_close(f), 0);
	/* a foreign write lock present at attach time: -EBUSY */
	fl.l_type = F_WRLCK;
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	ck_assert_int_eq(open_mode(path, 't', &f), -EBUSY);
	close(fd);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(second_table_is_refused)
{
	const char *path = tu_tmpfile(65536);
	char dir[PATH_MAX];
	sm_options o = opts(SM_OPT_TABLE_LOCKS);
	sm_file *f, *g;

	snprintf(dir, sizeof(dir), "%s.dir", path);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	o.table_dir = dir;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &g), -EPROTO);
	/* and a kernel-mode opener through the other table finds the band */
	o.flags = 0;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &g), -EPROTO);
	ck_assert_int_eq(sm_close(f), 0);
	o.flags = SM_OPT_TABLE_LOCKS;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &g), 0);
	ck_assert_int_eq(sm_close(g), 0);
	char t[PATH_MAX + 64];
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	snprintf(t, sizeof(t), "%s/%llx-%llx.smlock", dir, (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	unlink(t);
	rmdir(dir);
}
END_TEST

static struct smt_header header_of(const char *tpath)
{
	struct smt_header h;
	int fd = open(tpath, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	return h;
}

/* A rebuild (no table-mode owner attached) keeps the table's identity, but
 * only in the boot that drew it: a table file seen from another boot (a
 * host cloned from the same disk image) draws its own. */
START_TEST(identity_kept_by_its_file_in_its_boot)
{
	const char *path = tu_tmpfile(65536);
	char tpath[PATH_MAX];
	struct smt_header h;
	uint64_t id, boot;
	sm_file *f;
	int fd;

	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	h = header_of(tpath);
	id = h.table_id;
	boot = h.table_boot;
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert(header_of(tpath).table_id == id);
	/* as if another boot had drawn it: its boot, and its stamp (the
	 * identity's high half, a hash of the file and the boot) */
	h.table_boot = boot ^ 1;
	h.table_id = id ^ ((uint64_t)1 << 32);
	fd = open(tpath, O_RDWR | O_CLOEXEC);
	ck_assert_int_eq(pwrite(fd, &h.table_boot, sizeof(h.table_boot),
				offsetof(struct smt_header, table_boot)),
			 (ssize_t)sizeof(h.table_boot));
	ck_assert_int_eq(pwrite(fd, &h.table_id, sizeof(h.table_id),
				offsetof(struct smt_header, table_id)),
			 (ssize_t)sizeof(h.table_id));
	close(fd);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	h = header_of(tpath);
	ck_assert(h.table_id != id && h.table_id != (id ^ ((uint64_t)1 << 32)) && h.table_boot == boot);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* Copy the file at from to a new file to, holes kept. */
static void copy_sparse(const char *from, const char *to)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	char buf[65536];
	off_t end, d, h;

	ck_assert(in >= 0 && out >= 0);
	end = lseek(in, 0, SEEK_END);
	ck_assert_int_eq(ftruncate(out, end), 0);
	for (d = lseek(in, 0, SEEK_DATA); d >= 0 && d < end; d = lseek(in, h, SEEK_DATA)) {
		h = lseek(in, d, SEEK_HOLE);
		for (off_t o = d; o < h;) {
			ssize_t n = pread(in, buf, h - o < (off_t)sizeof(buf) ? (size_t)(h - o) : sizeof(buf), o);
			ck_assert_int_gt(n, 0);
			ck_assert_int_eq(pwrite(out, buf, (size_t)n, o), n);
			o += n;
		}
	}
	close(in);
	close(out);
}

/* A copy of a table file, put where another opener of the same data file
 * looks for its table (table_dir), is another table: its first table-mode
 * owner must not keep the copied identity (it would then share the
 * original's identity byte, and two tables would decide exclusion apart).
 * A hard link of the table there is the same table: shared, and exclusion
 * holds through it. */
START_TEST(copied_table_is_another_table)
{
	const char *path = tu_tmpfile(65536);
	char dir[PATH_MAX], tpath[PATH_MAX], other[PATH_MAX + 64];
	sm_options o = opts(SM_OPT_TABLE_LOCKS);
	struct smt_header orig, copied;
	struct stat st, cst;
	sm_file *f, *g;
	sm_range *r;

	snprintf(dir, sizeof(dir), "%s.dir", path);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	snprintf(other, sizeof(other), "%s/%llx-%llx.smlock", dir, (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	copy_sparse(tpath, other);
	o.table_dir = dir;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &g), -EPROTO);
	/* refused because the copy drew an identity of its own */
	ck_assert_int_eq(stat(other, &cst), 0);
	orig = header_of(tpath);
	copied = header_of(other);
	ck_assert(copied.table_id != orig.table_id);
	ck_assert(copied.table_ino == (uint64_t)cst.st_ino && orig.table_ino != copied.table_ino);

	/* the control: a hard link is the same table */
	ck_assert_int_eq(unlink(other), 0);
	ck_assert_int_eq(link(tpath, other), 0);
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &g), 0);
	ck_assert_int_eq(sm_lock(f, 0, 10, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_test(g, 5, 1, SM_LOCK_READ), -EBUSY);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(g), 0);
	ck_assert_int_eq(sm_close(f), 0);
	unlink(other);
	rmdir(dir);
}
END_TEST

START_TEST(conflicts_across_processes)
{
	const char *path = tu_tmpfile(1 << 20);
	struct tu_child c;
	sm_holder h[4];
	sm_slice *s;
	sm_range *r;
	sm_file *f;
	int k, n;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_take(&c, "map", 'r', 4096, 4096, &k), 0);
	/* read/read share, read/write and write/read conflict */
	ck_assert_int_eq(sm_map_read(f, 4000, 200, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_map_write(f, 8000, 200, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_test(f, 8000, 200, SM_LOCK_WRITE), -EBUSY);
	ck_assert_int_eq(sm_test(f, 8000, 200, SM_LOCK_READ), 0);
	/* -EBUSY names the holder */
	n = sm_holders(f, 8000, 200, h, 4);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(h[0].pid, c.pid);
	ck_assert_int_eq(h[0].state, SM_HELD);
	ck_assert_int_eq(h[0].mode, SM_MODE_READ);
	/* adjacent is free */
	ck_assert_int_eq(sm_map_write(f, 8192, 100, 0, &s), 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'r', 8200, 1, NULL), -EBUSY);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 8292, 1, NULL), 0);
	ck_assert_int_eq(peer_cmd(&c, "test w 8290", 1), -EBUSY);
	tree_ok(f);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 8200, 1, NULL), 0);
	/* write/write */
	ck_assert_int_eq(sm_lock(f, 8200, 1, SM_LOCK_WRITE, NULL, &r), -EBUSY);
	ck_assert_int_eq(peer_cmd(&c, "drop", k), 0);
	ck_assert_int_eq(sm_map_write(f, 4096, 4096, 0, &s), 0);
	tree_ok(f);
	peer_quit(&c);
	/* the peer is gone: its regions are free at the next conflict */
	ck_assert_int_eq(sm_lock(f, 8200, 1, SM_LOCK_WRITE, NULL, &r), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(conflicts_across_sm_files)
{
	const char *path = tu_tmpfile(1 << 20);
	sm_file *f, *g;
	sm_slice *a, *b, *c;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(open_mode(path, 't', &g), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &a), 0);
	ck_assert_int_eq(sm_map_read(g, 50, 100, 0, &b), 0);
	ck_assert_int_eq(sm_map_write(g, 99, 1, 0, &c), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 120, 1, 0, &c), -EBUSY);
	ck_assert_int_eq(sm_map_write(f, 150, 1, 0, &c), 0);
	/* sub-slices and downgrade */
	sm_slice *d;
	ck_assert_int_eq(sm_downgrade(c), 0);
	ck_assert_int_eq(sm_map_read(g, 150, 1, 0, &d), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_release(d), 0);
	ck_assert_int_eq(sm_release(c), 0);
	ck_assert_int_eq(sm_release(a), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 50, 0, &a), 0);
	ck_assert_int_eq(sm_map_write(g, 0, 1, 0, &c), -EBUSY);
	ck_assert_int_eq(sm_release(a), 0);
	ck_assert_int_eq(sm_release(b), 0);
	tree_ok(g);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sm_close(g), 0);
}
END_TEST

START_TEST(killed_holder_frees_at_next_conflict)
{
	const char *path = tu_tmpfile(1 << 20);
	struct tu_child c;
	sm_holder h[4];
	sm_range *r;
	sm_file *f;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 0, 4096, NULL), 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'r', 10000, 10, NULL), 0);
	ck_assert_int_eq(sm_lock(f, 10, 1, SM_LOCK_READ, NULL, &r), -EBUSY);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_eq(sm_holders(f, 0, 4096, h, 4), 1);
	ck_assert_int_eq(h[0].state, SM_STALE);
	ck_assert_int_eq(sm_lock(f, 10, 1, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_holders(f, 0, 4096, h, 4), 1); /* ours only */
	ck_assert_int_eq(h[0].pid, getpid());
	tree_ok(f);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(killed_inside_the_critical_section)
{
	const char *path = tu_tmpfile(1 << 20);
	struct tu_child c, d;
	char buf[32];
	sm_range *r;
	sm_file *f;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_lock(f, 500, 10, SM_LOCK_READ, NULL, &r), 0);
	peer_start(&c, path, 't', 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 2000, 10, NULL), 0);
	ck_assert_int_eq(peer_cmd(&c, "seam", 0), 0);
	tu_send(c.to, "lock w 100 10");
	ck_assert(tu_recv(c.from, buf, sizeof(buf)));
	ck_assert_str_eq(buf, "inside");
	/* the peer holds the table's mutex, its slot published, its node not
	 * linked: kill it there */
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	/* the next locker rebuilds; the dead owner's regions are free */
	peer_start(&d, path, 't', 0);
	ck_assert_int_eq(peer_take(&d, "lock", 'w', 100, 10, NULL), 0);
	ck_assert_int_eq(peer_take(&d, "lock", 'w', 2000, 10, NULL), 0);
	ck_assert_int_eq(peer_take(&d, "lock", 'w', 505, 1, NULL), -EBUSY);
	tree_ok(f);
	peer_quit(&d);
	ck_assert_int_eq(sm_unlock(r), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(hundred_thousand_regions)
{
	const char *path = tu_tmpfile(4096);
	enum { N = 100000 };
	/* static: the peer forked below inherits it (no leak in its eyes) */
	static sm_range *r[N];
	struct tu_child c;
	sm_file *f;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(sm_lock(f, 2 * (uint64_t)i, 1, (i & 1) ? SM_LOCK_WRITE : SM_LOCK_READ,
					 NULL, &r[i]), 0);
	tree_ok(f);
	peer_start(&c, path, 't', 0);
	/* every kind of conflict is still found */
	ck_assert_int_eq(peer_take(&c, "lock", 'r', 2 * 77777, 1, NULL), -EBUSY);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 2 * 77776, 1, NULL), -EBUSY);
	ck_assert_int_eq(peer_take(&c, "lock", 'r', 2 * 77776, 1, NULL), 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 2 * 77776 + 1, 1, NULL), 0);
	ck_assert_int_eq(peer_take(&c, "lock", 'r', 2 * (uint64_t)N - 3, 5, NULL), -EBUSY);
	ck_assert_int_eq(peer_take(&c, "lock", 'w', 2 * (uint64_t)N, 5, NULL), 0);
	ck_assert_int_eq(peer_cmd(&c, "test w 0", 1), -EBUSY);
	peer_quit(&c);
	for (int i = 0; i < N; i += 2)
		ck_assert_int_eq(sm_unlock(r[i]), 0);
	tree_ok(f);
	for (int i = 1; i < N; i += 2)
		ck_assert_int_eq(sm_unlock(r[i]), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(full_table_is_enolck)
{
	const char *path = tu_tmpfile(4096);
	enum { CAP = 131072 };
	sm_range **r = calloc(CAP + 1, sizeof(*r));
	sm_file *f;
	int i, rc = 0;

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	for (i = 0; i <= CAP; i++)
		if ((rc = sm_lock(f, 2 * (uint64_t)i, 1, SM_LOCK_READ, NULL, &r[i])) < 0)
			break;
	ck_assert_int_eq(rc, -ENOLCK);
	ck_assert_int_eq(i, CAP);
	tree_ok(f);
	ck_assert_int_eq(sm_unlock(r[7]), 0);
	ck_assert_int_eq(sm_lock(f, 14, 1, SM_LOCK_WRITE, NULL, &r[7]), 0);
	for (i = 0; i < CAP; i++)
		ck_assert_int_eq(sm_unlock(r[i]), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_close(f), 0);
	free(r);
}
END_TEST

START_TEST(fast_path_has_no_fstat)
{
	const char *path = tu_tmpfile(1 << 20);
	sm_slice *s;
	sm_file *f;
	uint64_t v;
	int fd;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 4096, 0, &s), 0);
	ck_assert_int_eq(sm_release(s), 0);
	/* shrink the file behind the cached size: the map is granted, the
	 * first access reports the truncation (SPEC §12.5) */
	fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 0), 0);
	ck_assert_int_eq(sm_map_read(f, 8192, 4096, 0, &s), 0);
	ck_assert_int_eq(sm_get_u64(s, 0, &v), -ENXIO);
	ck_assert_int_eq(sm_release(s), 0);
	/* beyond the cached size, the size is asked again */
	ck_assert_int_eq(sm_map_read(f, (1 << 20) - 8, 16, 0, &s), -ERANGE);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, &s), -ERANGE);
	ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
	close(fd);
	ck_assert_int_eq(sm_map_read(f, 0, 4096, 0, &s), 0); /* cached 0: asked again */
	ck_assert_int_eq(sm_get_u64(s, 0, &v), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST


/* ---- differential test -------------------------------------------------------
 * Three peers in table mode take and drop random sm_lock ranges over a small
 * span (so they collide often); the model is the list of held ranges of
 * every peer, and the rule is the same between peers and within one
 * sm_file (SPEC §3.2, §3.3): read/read share, anything with a write
 * conflicts.  Every result must match the model; a fourth owner (this
 * process) checks with sm_test and smt_tree_check, and now and then a peer
 * is SIGKILLed (its ranges leave the model) and replaced. */
#define NPEERS 3
#define MAXH 24
#define SPAN 64

struct mrange {
	bool live, write;
	uint64_t off, len;
	int k; /* the peer's handle */
};

static bool model_conflict(struct mrange m[NPEERS][MAXH], uint64_t off, uint64_t len, bool write)
{
	for (int p = 0; p < NPEERS; p++)
		for (int i = 0; i < MAXH; i++)
			if (m[p][i].live && m[p][i].off < off + len && off < m[p][i].off + m[p][i].len &&
			    (write || m[p][i].write))
				return true;
	return false;
}

static uint64_t rng;
static uint64_t rnd(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

START_TEST(differential_against_a_model)
{
	static const uint64_t seeds[] = { 1, 2, 0x5afe, 20261126 };
	const char *path = tu_tmpfile(4096);
	struct mrange m[NPEERS][MAXH];
	struct tu_child c[NPEERS];
	sm_file *f;

	rng = seeds[_i];
	memset(m, 0, sizeof(m));
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	for (int p = 0; p < NPEERS; p++)
		peer_start(&c[p], path, 't', 0);
	for (int step = 0; step < 1500; step++) {
		int p = (int)(rnd() % NPEERS), i, r = (int)(rnd() % 100);
		uint64_t off = rnd() % SPAN, len = 1 + rnd() % 12;
		bool write = rnd() % 3 == 0;
		if (r < 55) {
			for (i = 0; i < MAXH && m[p][i].live; i++)
				;
			if (i == MAXH)
				continue;
			bool want = model_conflict(m, off, len, write);
			int k, rc = peer_take(&c[p], "lock", write ? 'w' : 'r', off, len, &k);
			ck_assert_msg(rc == (want ? -EBUSY : 0),
				      "seed %llu step %d: peer %d lock %c [%llu, +%llu) = %d, model %d",
				      (unsigned long long)seeds[_i], step, p, write ? 'w' : 'r',
				      (unsigned long long)off, (unsigned long long)len, rc, want ? -EBUSY : 0);
			if (rc == 0)
				m[p][i] = (struct mrange){ true, write, off, len, k };
		} else if (r < 90) {
			int live[MAXH], n = 0;
			for (i = 0; i < MAXH; i++)
				if (m[p][i].live)
					live[n++] = i;
			if (!n)
				continue;
			i = live[rnd() % (uint64_t)n];
			ck_assert_int_eq(peer_cmd(&c[p], "drop", m[p][i].k), 0);
			m[p][i].live = false;
		} else if (r < 98) {
			bool want = model_conflict(m, off, len, write);
			ck_assert_int_eq(sm_test(f, off, len, write ? SM_LOCK_WRITE : SM_LOCK_READ),
					 want ? -EBUSY : 0);
			tree_ok(f);
		} else {
			/* a peer dies holding its ranges: they are free at the
			 * next conflict */
			kill(c[p].pid, SIGKILL);
			ck_assert_int_eq(tu_wait(&c[p]), 128 + SIGKILL);
			memset(m[p], 0, sizeof(m[p]));
			peer_start(&c[p], path, 't', 0);
		}
	}
	tree_ok(f);
	for (int p = 0; p < NPEERS; p++)
		peer_quit(&c[p]);
	ck_assert_int_eq(sm_test(f, 0, SPAN + 16, SM_LOCK_WRITE), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

START_TEST(lockctl_info_shows_the_mode)
{
	const char *path = tu_tmpfile(4096);
	char lockctl[PATH_MAX], cmd[2 * PATH_MAX], line[256];
	bool table = false;
	sm_file *f;
	FILE *p;

	tu_sibling("../tools/lockctl", lockctl, sizeof(lockctl));
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	snprintf(cmd, sizeof(cmd), "%s info %s", lockctl, path);
	ck_assert_ptr_nonnull(p = popen(cmd, "r"));
	while (fgets(line, sizeof(line), p))
		table |= strncmp(line, "mode:", 5) == 0 && strstr(line, "table") != NULL;
	ck_assert_int_eq(pclose(p), 0);
	ck_assert(table);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* Everything else works as in kernel mode: extend, commit, buffered and
 * abort, sub-slices, downgrade, SM_NOLOCK, deferred close, a log. */
START_TEST(slices_commit_and_logs)
{
	const char *path = tu_tmpfile(0);
	char logpath[PATH_MAX];
	sm_options o = opts(SM_OPT_TABLE_LOCKS);
	sm_slice *w, *b, *sub, *r, *nl;
	sm_holder h[4];
	sm_file *f, *g;
	uint64_t v;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(open_mode(path, 't', &g), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, &r), -ERANGE);
	ck_assert_int_eq(sm_map_write(f, 0, 8192, SM_EXTEND, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 8, 42), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(sm_sub(w, 8, 8, &sub), 0);
	ck_assert_int_eq(sm_release(w), 0);
	/* the sub-slice keeps the write lock */
	ck_assert_int_eq(sm_map_read(g, 0, 16, 0, &r), -EBUSY);
	ck_assert_int_eq(sm_release(sub), 0);
	ck_assert_int_eq(sm_map_read(g, 0, 16, 0, &r), 0); /* g saw the growth */
	ck_assert_int_eq(sm_get_u64(r, 8, &v), 0);
	ck_assert_uint_eq(v, 42);
	ck_assert_int_eq(sm_release(r), 0);
	ck_assert_int_eq(sm_map_write(f, 4096, 100, SM_BUFFERED, &b), 0);
	ck_assert_int_eq(sm_put_u64(b, 0, 7), 0);
	ck_assert_int_eq(sm_abort(b), 0);
	ck_assert_int_eq(sm_put_u64(b, 0, 9), 0);
	ck_assert_int_eq(sm_commit(b, 0), 0);
	ck_assert_int_eq(sm_downgrade(b), 0);
	ck_assert_int_eq(sm_map_read(g, 4096, 8, 0, &r), 0);
	ck_assert_int_eq(sm_get_u64(r, 0, &v), 0);
	ck_assert_uint_eq(v, 9);
	ck_assert_int_eq(sm_release(r), 0);
	ck_assert_int_eq(sm_map_write(g, 4100, 1, 0, &r), -EBUSY);
	/* coordination memory: listed, never a holder */
	ck_assert_int_eq(sm_map_write(g, 4096, 100, SM_NOLOCK, &nl), 0);
	ck_assert_int_eq(sm_holders(f, 4096, 100, h, 4), 2);
	tree_ok(f);
	ck_assert_int_eq(sm_release(nl), 0);
	/* deferred close: the slice keeps its lock */
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sm_map_write(g, 4100, 1, 0, &r), -EBUSY);
	ck_assert_int_eq(sm_release(b), 0);
	ck_assert_int_eq(sm_map_write(g, 4100, 1, 0, &r), 0);
	ck_assert_int_eq(sm_release(r), 0);
	tree_ok(g);
	ck_assert_int_eq(sm_close(g), 0);

	/* a log in table mode */
	sm_log *log;
	sm_log_iter *it;
	sm_slice *rec;
	uint64_t lsn;
	snprintf(logpath, sizeof(logpath), "%s.log", path);
	ck_assert_int_eq(sm_log_open(logpath, SM_RDWR | SM_CREATE, &o, &log), 0);
	ck_assert_int_eq(sm_log_append(log, "hello", 5, &lsn), 0);
	ck_assert_int_eq(sm_log_append(log, "world!", 6, NULL), 0);
	ck_assert_int_eq(sm_log_commit(log), 0);
	ck_assert_int_eq(sm_log_iter_open(log, 0, &it), 0);
	ck_assert_int_eq(sm_log_iter_next(it, &rec, NULL), 1);
	ck_assert_uint_eq(sm_length(rec), 5);
	ck_assert_int_eq(sm_release(rec), 0);
	ck_assert_int_eq(sm_log_iter_next(it, &rec, NULL), 1);
	ck_assert_uint_eq(sm_length(rec), 6);
	ck_assert_int_eq(sm_release(rec), 0);
	ck_assert_int_eq(sm_log_iter_next(it, &rec, NULL), 0);
	ck_assert_int_eq(sm_log_iter_close(it), 0);
	ck_assert_int_eq(sm_log_close(log), 0);
	unlink(logpath);
	snprintf(logpath, sizeof(logpath), "%s.log.smlock", path);
	unlink(logpath);
}
END_TEST

/* A fork child's releases never touch its parent's entries or regions. */
START_TEST(fork_child_leaves_the_parent_alone)
{
	const char *path = tu_tmpfile(65536);
	sm_slice *s, *t;
	sm_file *f, *g;
	pid_t pid;
	int status;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 4096, 0, &s), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int bad = 0;
		bad |= sm_map_read(f, 8192, 1, 0, &t) != -ESTALE;
		(void)sm_release(s);
		(void)sm_close(f);
		_exit(bad);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(open_mode(path, 't', &g), 0);
	ck_assert_int_eq(sm_map_read(g, 100, 1, 0, &t), -EBUSY);
	tree_ok(g);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_map_read(g, 100, 1, 0, &t), 0);
	ck_assert_int_eq(sm_release(t), 0);
	ck_assert_int_eq(sm_close(g), 0);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

/* First openers in table mode at once: the initialisation lock lets one
 * build the tree and the others use it; all attach, and exclusion holds. */
START_TEST(race_of_first_openers)
{
	for (int round = 0; round < 12; round++) {
		const char *path = tu_tmpfile(65536);
		struct tu_child c[3];
		int k;
		for (int i = 0; i < 3; i++)
			tu_spawn(&c[i], peer, NULL);
		for (int i = 0; i < 3; i++)
			tu_send(c[i].to, "open t %s", path);
		for (int i = 0; i < 3; i++)
			ck_assert_int_eq(tu_recv_int(c[i].from), 0);
		ck_assert_int_eq(peer_take(&c[0], "lock", 'w', 0, 10, &k), 0);
		ck_assert_int_eq(peer_take(&c[1], "lock", 'r', 9, 10, NULL), -EBUSY);
		ck_assert_int_eq(peer_take(&c[2], "lock", 'w', 10, 10, NULL), 0);
		ck_assert_int_eq(peer_take(&c[1], "lock", 'r', 15, 1, NULL), -EBUSY);
		ck_assert_int_eq(peer_cmd(&c[0], "drop", k), 0);
		ck_assert_int_eq(peer_take(&c[1], "lock", 'r', 0, 10, NULL), 0);
		for (int i = 0; i < 3; i++)
			peer_quit(&c[i]);
	}
}
END_TEST

/* SPEC §12.7: a table failing validation in this mode is -EPROTO while
 * owners are attached, and rebuilt once nobody is. */
START_TEST(invalid_tree_is_eproto_then_rebuilt)
{
	const char *path = tu_tmpfile(65536);
	char tpath[PATH_MAX];
	struct smt_table t;
	sm_file *f, *g;
	sm_range *r;
	int fd;

	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	ck_assert_int_eq(sm_lock(f, 0, 10, SM_LOCK_WRITE, NULL, &r), 0);
	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	ck_assert_int_eq(smt_attach_path(tpath, false, &t), 0);
	fd = open(tpath, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "XXXXXXXX", 8, (off_t)t.hdr.idx_off), 8); /* the index magic */
	smt_detach(&t);
	ck_assert_int_eq(open_mode(path, 't', &g), -EPROTO);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(open_mode(path, 't', &g), 0);
	tree_ok(g);
	ck_assert_int_eq(sm_lock(g, 0, 10, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(g), 0);
	close(fd);
}
END_TEST

/* Is a lock of another description on [off, off + len) of path? */
static bool locked_by_other(const char *path, uint64_t off, uint64_t len)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = (off_t)len };
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
	close(fd);
	return fl.l_type != F_UNLCK;
}

/* A killed table-mode owner lets go of its table file (table-mode byte,
 * owner byte) and of its data file (fence, identity byte) one after the
 * other.  An opener in between finds no table-mode owner and lays the tree
 * out again; it must keep the table's identity, or it finds the dying
 * owner's identity byte and refuses its own table as "another table"
 * (-EPROTO, seen in test_killstress-table).  The window is held open here
 * by a fork child of the owner that kept a duplicate of its data-file
 * descriptor: the fork handler closed everything else safemap had open
 * and replaced its mappings (lib/fork.c). */
START_TEST(dying_owner_does_not_refuse_the_next)
{
	const uint64_t band = (uint64_t)1 << 62; /* the identity band (tmode.c) */
	const char *path = tu_tmpfile(65536);
	char tpath[PATH_MAX];
	int ready[2], st;
	pid_t d, g = -1;
	sm_file *f;
	sm_range *r;

	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0); /* g becomes ours */
	ck_assert_int_eq(pipe(ready), 0);
	d = fork();
	ck_assert_int_ge(d, 0);
	if (d == 0) {
		close(ready[0]);
		if (open_mode(path, 't', &f) < 0 || dup(f->fd) < 0)
			_exit(1);
		pid_t gg = fork();
		if (gg == 0) {
			pid_t me = getpid();
			if (write(ready[1], &me, sizeof(me)) == (ssize_t)sizeof(me))
				for (;;)
					pause();
			_exit(1);
		}
		_exit(gg < 0); /* no sm_close: its unlocks would drop what g keeps */
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &g, sizeof(g)), (ssize_t)sizeof(g));
	close(ready[0]);
	ck_assert_int_eq(waitpid(d, &st, 0), d);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	/* the window: g holds the fence and the identity byte, nobody the
	 * table-mode byte */
	ck_assert_int_eq(waitpid(g, &st, WNOHANG), 0);
	ck_assert(locked_by_other(path, band + 65536, ((uint64_t)1 << 32) - 65536));
	ck_assert(!locked_by_other(tpath, SMT_MODE_BYTE_TABLE, 1));
	ck_assert_int_eq(open_mode(path, 't', &f), 0);
	tree_ok(f);
	ck_assert_int_eq(sm_lock(f, 0, 10, SM_LOCK_WRITE, NULL, &r), 0);
	ck_assert_int_eq(sm_unlock(r), 0);
	ck_assert_int_eq(sm_close(f), 0);
	kill(g, SIGKILL);
	ck_assert_int_eq(waitpid(g, &st, 0), g);
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}
END_TEST

/* A fail-fast call in a child, bounded: its result, or 1 if it has not
 * returned within two seconds (the child is killed: a stall). */
static int bounded_map(const char *path, bool wr, uint64_t off, uint64_t len)
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

/* sm_open in a child, answered within 2 s (stretched under valgrind and
 * sanitizers): its result, or 1 if it hung. */
static int bounded_open(const char *path, char mode)
{
	int p[2], rc = 1;
	pid_t c;

	ck_assert_int_eq(pipe(p), 0);
	c = fork();
	ck_assert_int_ge(c, 0);
	if (c == 0) {
		sm_file *g;
		int r = open_mode(path, mode, &g);
		if (write(p[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	struct pollfd pfd = { .fd = p[0], .events = POLLIN };
	if (poll(&pfd, 1, (int)(tu_bound(2000 * 1000000ull) / 1000000)) == 1 &&
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

/* A process stopped while it holds the table's cleanup byte (a closer in
 * the middle of removing the table of a deleted file, an opener replacing
 * one) hangs no opener: a kernel-mode open goes on without the table, a
 * table-mode one fails with -EAGAIN, both at once.  (They waited on the
 * byte with F_OFD_SETLKW.) */
START_TEST(stopped_cleaner_hangs_no_opener)
{
	const char *path = tu_tmpfile(65536);
	char tpath[PATH_MAX];
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)SMT_CLEANUP_BYTE,
			    .l_len = 1 };
	sm_file *f;
	int fd;

	ck_assert_int_eq(open_mode(path, 'k', &f), 0); /* the table exists */
	ck_assert_int_eq(sm_close(f), 0);
	snprintf(tpath, sizeof(tpath), "%s.smlock", path);
	ck_assert_int_ge(fd = open(tpath, O_RDWR | O_CLOEXEC), 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0); /* as a closer would, then stopped */
	ck_assert_int_eq(bounded_open(path, 'k'), 0);
	ck_assert_int_eq(bounded_open(path, 't'), -EAGAIN);
	close(fd);
	ck_assert_int_eq(bounded_open(path, 't'), 0);
}
END_TEST

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

/* The slot of path's table held by pid over off (its index), the table
 * attached writable in *t. */
static uint32_t slot_of(const char *path, pid_t pid, uint64_t off, struct smt_table *t)
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
	Suite *s = suite_create("tmode");
	TCase *tc = tcase_create("tmode");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, flags_and_layout);
	tcase_add_test(tc, mode_exclusion_both_orders);
	tcase_add_test(tc, race_of_two_modes);
	tcase_add_test(tc, kernel_opener_first_refuses_table_mode);
	tcase_add_test(tc, fence);
	tcase_add_test(tc, second_table_is_refused);
	tcase_add_test(tc, copied_table_is_another_table);
	tcase_add_test(tc, identity_kept_by_its_file_in_its_boot);
	tcase_add_test(tc, conflicts_across_processes);
	tcase_add_test(tc, conflicts_across_sm_files);
	tcase_add_test(tc, killed_holder_frees_at_next_conflict);
	tcase_add_test(tc, killed_inside_the_critical_section);
	tcase_add_test(tc, hundred_thousand_regions);
	tcase_add_test(tc, full_table_is_enolck);
	tcase_add_test(tc, fast_path_has_no_fstat);
	tcase_add_loop_test(tc, differential_against_a_model, 0, 4);
	tcase_add_test(tc, lockctl_info_shows_the_mode);
	tcase_add_test(tc, slices_commit_and_logs);
	tcase_add_test(tc, fork_child_leaves_the_parent_alone);
	tcase_add_test(tc, race_of_first_openers);
	tcase_add_test(tc, invalid_tree_is_eproto_then_rebuilt);
	tcase_add_test(tc, dying_owner_does_not_refuse_the_next);
	tcase_add_test(tc, stopped_inside_an_acquire_stalls_nobody);
	tcase_add_test(tc, stopped_cleaner_hangs_no_opener);
	tcase_add_test(tc, stopped_at_random_moments_stalls_nobody);
	tcase_add_test(tc, full_table_reclaims_a_dead_peers_slots);
	tcase_add_test(tc, foreign_reader_does_not_hide_the_band);
	tcase_add_test(tc, retag_stopped_halfway_still_excludes);
	tcase_add_test(tc, liveness_byte_taken_by_another_vouches_for_nobody);
	tcase_add_test(tc, dead_owner_costs_one_probe);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
