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
#include "tmode_peer.h"

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
	tcase_add_test(tc, identity_kept_by_its_file_in_its_boot);
	tcase_add_test(tc, copied_table_is_another_table);
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
	suite_add_tcase(s, tc);
	return tu_run(s);
}
