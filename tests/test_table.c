/* SPDX-License-Identifier: MIT */
/*
 * test_table.c - the shared lock table with real processes: holders named
 * after -EBUSY, stale entries after SIGKILL (also mid-update) and their
 * reaping, a first-open race, a full table, corrupted and hostile tables,
 * tables owned by someone else, SAFEMAP_TABLE_DIR, replaced data files.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap-internal.h"
#include "testutil.h"

#define PG 4096

static char table_of(const char *p, char *out, size_t n)
{
	snprintf(out, n, "%s.smlock", p);
	return 0;
}

/* A child that maps [off, off+len) (w or r) with a tag, reports, and holds
 * until its pipe closes. */
START_TEST(holder_named_after_ebusy)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg a = { p, 100, 50, true, "compactor-7" };
	struct tu_child c;
	sm_holder h[4];
	sm_file *f;
	sm_slice *s;

	tu_spawn(&c, tu_holder, &a);
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_read(f, 120, 10, 0, &s), -EBUSY);
	ck_assert_int_eq(sm_holders(f, 120, 10, h, 4), 1);
	ck_assert_int_eq(h[0].pid, c.pid);
	ck_assert_str_eq(h[0].tag, "compactor-7");
	char comm[32];
	tu_comm(comm, sizeof(comm)); /* "memcheck-amd64-" under valgrind */
	ck_assert_str_eq(h[0].comm, comm);
	ck_assert_int_eq(h[0].mode, SM_MODE_WRITE);
	ck_assert_int_eq(h[0].state, SM_HELD);
	ck_assert_uint_eq(h[0].off, 100);
	ck_assert_uint_eq(h[0].len, 50);
	ck_assert_uint_gt(h[0].since, 0);
	ck_assert_uint_gt(h[0].start_time, 0);
	/* our own slices are listed too; counts beyond cap, like snprintf */
	ck_assert_int_eq(sm_map_read(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(sm_holders(f, 0, 4 * PG, h, 1), 2);
	ck_assert_int_eq(sm_holders(f, 0, 4 * PG, NULL, 0), 2);
	ck_assert_int_eq(sm_holders(f, 200, 10, h, 4), 0);
	ck_assert_int_eq(sm_holders(f, 0, 0, h, 4), -EINVAL);
	ck_assert_int_eq(sm_holders(f, 0, 1, NULL, 4), -EINVAL);
	ck_assert_int_eq(sm_holders(NULL, 0, 1, h, 4), -EINVAL);
	sm_release(s);
	ck_assert_int_eq(tu_wait(&c), 0);
	/* the holder exited: its slot was freed on release or is stale */
	int n = sm_holders(f, 0, 4 * PG, h, 4);
	ck_assert_int_ge(n, 0);
	for (int i = 0; i < n && i < 4; i++)
		ck_assert_int_eq(h[i].state, SM_STALE);
	sm_close(f);
}
END_TEST

START_TEST(killed_holder_is_stale_then_reaped)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg a = { p, 0, 10, true, "victim" };
	struct tu_child c;
	sm_holder h[2];
	sm_file *f, *g;
	sm_slice *s;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	tu_spawn(&c, tu_holder, &a);
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(sm_holders(f, 0, 10, h, 2), 1);
	ck_assert_int_eq(h[0].state, SM_HELD);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	/* the kernel lock went with the process; the entry is stale */
	ck_assert_int_eq(sm_map_write(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(sm_holders(f, 0, 10, h, 2), 2);
	ck_assert(h[0].state == SM_STALE || h[1].state == SM_STALE);
	sm_release(s);
	/* a new opener reaps it */
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0);
	ck_assert_int_eq(sm_holders(f, 0, 10, h, 2), 0);
	sm_close(g);
	sm_close(f);
}
END_TEST

/* Killed in the middle of a slot update (sequence odd, state CLAIMING). */
static int die_mid_update(void *arg, int in, int out)
{
	const char *p = arg;
	sm_file *f;
	sm_slice *s;

	(void)in;
	if (sm_open(p, SM_RDWR, NULL, &f) < 0 || sm_map_read(f, 0, 10, 0, &s) < 0)
		return 1;
	struct smt_slot *slot = &f->table->slots[s->h->slot];
	__atomic_fetch_add(&slot->seq, 1, __ATOMIC_SEQ_CST); /* odd: mid-update */
	slot->off = 77777;                                    /* half-written */
	tu_send(out, "ready");
	raise(SIGKILL);
	return 2;
}

START_TEST(killed_while_updating_the_table)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_child c;
	char buf[16];
	sm_holder h[4];
	sm_file *f, *g;
	sm_slice *s;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	tu_spawn(&c, die_mid_update, (void *)p);
	ck_assert(tu_recv(c.from, buf, sizeof(buf)));
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	/* readers skip the half-written slot; nothing hangs or crashes */
	ck_assert_int_eq(sm_holders(f, 0, 1 << 20, h, 4), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(sm_holders(f, 0, 10, h, 4), 1);
	sm_release(s);
	/* an opener reaps the dead owner's slot; the table stays usable */
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0);
	struct smt_table *t = g->table;
	ck_assert_ptr_nonnull(t);
	for (uint32_t i = 0; i < smt_scan_limit(t); i++) {
		struct smt_slot sl;
		ck_assert_int_ne(smt_snapshot(t, i, &sl), -EAGAIN);
	}
	sm_close(g);
	sm_close(f);
}
END_TEST

/* Eight processes open a new file at once: one table, all holders in it. */
static int racer(void *arg, int in, int out)
{
	const char *p = arg;
	char buf[16];
	sm_file *f;
	sm_slice *s;
	int id, rc;

	ck_assert(tu_recv(in, buf, sizeof(buf)));
	id = atoi(buf);
	ck_assert(tu_recv(in, buf, sizeof(buf))); /* go */
	rc = sm_open(p, SM_RDWR, &(sm_options){ .flags = SM_OPT_TABLE_REQUIRED }, &f);
	if (rc == 0 && (rc = sm_map_read(f, (uint64_t)id * 100, 10, 0, &s)) < 0)
		sm_close(f);
	tu_send(out, "%d", rc);
	tu_recv(in, buf, sizeof(buf));
	if (rc == 0) {
		sm_release(s);
		sm_close(f);
	}
	return 0;
}

START_TEST(first_open_race)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_child c[8];
	sm_holder h[16];
	sm_file *f;

	for (int i = 0; i < 8; i++) {
		tu_spawn(&c[i], racer, (void *)p);
		tu_send(c[i].to, "%d", i);
	}
	for (int i = 0; i < 8; i++)
		tu_send(c[i].to, "go");
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(tu_recv_int(c[i].from), 0);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_holders(f, 0, 1000, h, 16), 8);
	/* every child inherited the others' pipes: release them by message,
	 * not by EOF */
	for (int i = 0; i < 8; i++)
		tu_send(c[i].to, "bye");
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(tu_wait(&c[i]), 0);
	sm_close(f);
}
END_TEST

START_TEST(full_table_is_enolck)
{
	const char *p = tu_tmpfile(4 * PG);
	char tp[4200];
	sm_file *f, *g;
	sm_slice *s[5], *x;
	uint32_t four = 4;
	int fd;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	table_of(p, tp, sizeof(tp));
	fd = open(tp, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, &four, 4, offsetof(struct smt_header, nslots)), 4);
	close(fd);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(sm_map_read(g, (uint64_t)i * 10, 5, 0, &s[i]), 0);
	ck_assert_int_eq(sm_map_read(g, 100, 5, 0, &x), -ENOLCK);
	/* and the refused slice left no kernel lock */
	ck_assert_int_eq(tu_probe(p, F_WRLCK, 100, 5), F_UNLCK);
	sm_release(s[2]);
	ck_assert_int_eq(sm_map_read(g, 100, 5, 0, &s[2]), 0);
	for (int i = 0; i < 4; i++)
		sm_release(s[i]);
	sm_close(g);
}
END_TEST

/* Random, truncated and wrong-version tables: opening rebuilds or ignores
 * them, nothing crashes, and exclusion holds through the kernel locks. */
START_TEST(corrupted_tables)
{
	const char *p = tu_tmpfile(4 * PG);
	unsigned seed = 99;
	char tp[4200];
	static unsigned char junk[SMT_HEADER_SIZE + 64 * SMT_SLOT_SIZE];

	table_of(p, tp, sizeof(tp));
	for (int round = 0; round < 150; round++) {
		sm_file *f, *g;
		sm_slice *s, *x;
		sm_holder h[4];
		size_t n = (size_t)(rand_r(&seed) % (int)sizeof(junk));
		for (size_t i = 0; i < n; i++)
			junk[i] = (unsigned char)rand_r(&seed);
		if (round % 3 == 1 && n >= sizeof(struct smt_header)) {
			/* a plausible header with hostile fields */
			struct smt_header *hd = (struct smt_header *)junk;
			memcpy(hd->magic, SMT_MAGIC, 8);
			hd->version = round % 2 ? SMT_VERSION : 7;
			hd->header_size = SMT_HEADER_SIZE;
			hd->slot_size = SMT_SLOT_SIZE;
			hd->live_base = SMT_LIVE_BASE;
		}
		int fd = open(tp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, junk, n), (ssize_t)n);
		close(fd);
		ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
		ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0);
		ck_assert_int_eq(sm_map_write(f, 0, 10, 0, &s), 0);
		ck_assert_int_eq(sm_map_read(g, 5, 1, 0, &x), -EBUSY);
		ck_assert_int_ge(sm_holders(g, 0, 10, h, 4), 0);
		sm_release(s);
		sm_close(f);
		sm_close(g);
	}
}
END_TEST

START_TEST(table_truncated_under_live_file)
{
	const char *p = tu_tmpfile(4 * PG);
	char tp[4200];
	sm_holder h[4];
	sm_file *f;
	sm_slice *s, *t;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 10, 0, &s), 0);
	table_of(p, tp, sizeof(tp));
	ck_assert_int_eq(truncate(tp, 0), 0); /* hostile: no SIGBUS death */
	ck_assert_int_ge(sm_holders(f, 0, 10, h, 4), 0);
	ck_assert_int_eq(sm_map_read(f, 20, 10, 0, &t), 0);
	ck_assert_int_eq(sm_release(t), 0);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(f);
}
END_TEST

START_TEST(table_owned_by_another_user)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_options req = { .size = sizeof(req), .flags = SM_OPT_TABLE_REQUIRED };
	char tp[4200];
	sm_holder h[2];
	sm_file *f;
	sm_slice *s;

	if (geteuid() != 0) {
		printf("SKIP table_owned_by_another_user: needs root to chown\n");
		return;
	}
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	table_of(p, tp, sizeof(tp));
	ck_assert_int_eq(chown(tp, 65534, 65534), 0);
	/* refused as a table, but the file still opens and excludes */
	ck_assert_int_eq(sm_open(p, SM_RDWR, &req, &f), -EPERM);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_holders(f, 0, 1, h, 2), -EPERM);
	ck_assert_int_eq(sm_map_write(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(tu_probe(p, F_RDLCK, 0, 10), F_WRLCK);
	sm_release(s);
	sm_close(f);
}
END_TEST

/* An unprivileged process that may read but not write the data file (CI
 * runs as root, which ignores permissions: drop to nobody). */
static int unprivileged(void *arg, int in, int out)
{
	const char *p = arg;
	sm_file *f;
	sm_slice *s;
	sm_holder h[2];
	int rc;

	(void)in;
	if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
		return 3;
	/* Where nobody cannot even reach the file (a parent directory that
	 * is not ours, such as a chroot's 0700 root), there is nothing to test. */
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	tu_send(out, "%d", fd < 0 ? -errno : 0);
	if (fd < 0)
		return 0;
	close(fd);
	tu_send(out, "%d", sm_open(p, SM_RDWR, NULL, &f)); /* -EACCES */
	rc = sm_open(p, SM_RDONLY, NULL, &f);
	tu_send(out, "%d", rc);
	if (rc == 0) {
		tu_send(out, "%d", sm_map_read(f, 0, 10, 0, &s));
		tu_send(out, "%d", sm_holders(f, 0, 10, h, 2) < 0 ? -1 : 0);
		sm_release(s);
		sm_close(f);
	}
	return 0;
}

START_TEST(unprivileged_reader)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_child c;
	sm_file *f;

	if (geteuid() != 0) {
		printf("SKIP unprivileged_reader: needs root to drop privileges\n");
		return;
	}
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0); /* table made by root */
	ck_assert_int_eq(chmod(p, 0644), 0);
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s", p);
	*strrchr(dir, '/') = '\0';
	ck_assert_int_eq(chmod(dir, 0755), 0);
	tu_spawn(&c, unprivileged, (void *)p);
	int reach = tu_recv_int(c.from);
	if (reach < 0) {
		printf("SKIP unprivileged_reader: uid 65534 cannot open %s (%s)\n", p, strerror(-reach));
		ck_assert_int_eq(tu_wait(&c), 0);
		sm_close(f);
		return;
	}
	ck_assert_int_eq(tu_recv_int(c.from), -EACCES);
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(tu_recv_int(c.from), -1); /* no usable table for it */
	ck_assert_int_eq(tu_wait(&c), 0);
	sm_close(f);
}
END_TEST

START_TEST(table_dir_and_replaced_file)
{
	const char *p = tu_tmpfile(4 * PG);
	char dir[4200], tp[4400];
	struct stat st;
	struct smt_header hd;
	sm_file *f;
	int fd;

	snprintf(dir, sizeof(dir), "%s.tables", p);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	setenv("SAFEMAP_TABLE_DIR", dir, 1);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_ptr_nonnull(f->table);
	sm_close(f);
	ck_assert_int_eq(stat(p, &st), 0);
	snprintf(tp, sizeof(tp), "%s/%llx-%llx.smlock", dir, (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	ck_assert_int_eq(access(tp, F_OK), 0);
	unsetenv("SAFEMAP_TABLE_DIR");
	unlink(tp);
	rmdir(dir);

	/* replace the data file: the old sidecar table is detected and rebuilt */
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	snprintf(tp, sizeof(tp), "%s.smlock", p);
	fd = open(tp, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(pread(fd, &hd, sizeof(hd), 0), (ssize_t)sizeof(hd));
	close(fd);
	uint64_t gen = hd.generation;
	char moved[4400];
	snprintf(moved, sizeof(moved), "%s.old", p);
	ck_assert_int_eq(rename(p, moved), 0); /* keep the inode busy */
	fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_eq(ftruncate(fd, PG), 0);
	close(fd);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	fd = open(tp, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(pread(fd, &hd, sizeof(hd), 0), (ssize_t)sizeof(hd));
	close(fd);
	ck_assert_uint_eq(hd.generation, gen + 1);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq(hd.data_ino, (uint64_t)st.st_ino);
	unlink(moved);
}
END_TEST

START_TEST(options_and_memory_files)
{
	const char *p = tu_tmpfile(PG);
	sm_options none = { .size = sizeof(none), .flags = SM_OPT_NO_TABLE };
	static char buf[64];
	sm_holder h[1];
	sm_file *f;

	ck_assert_int_eq(sm_open(p, SM_RDWR, &none, &f), 0);
	ck_assert_int_eq(sm_holders(f, 0, 1, h, 1), -ENOTSUP);
	sm_close(f);
	ck_assert_int_eq(sm_open_memory(buf, sizeof(buf), SM_RDWR, &f), 0);
	ck_assert_int_eq(sm_holders(f, 0, 1, h, 1), -ENOTSUP);
	sm_close(f);
}
END_TEST

/* SPEC §4.1: the table gets the data file's permission bits exactly, the
 * umask notwithstanding, so whoever may write the data file may register
 * (issue 13, defect 13: a 0666 file got a 0644 table).  Both ways a table
 * is made: first creation (link) and rebuild (rename). */
START_TEST(table_mode_is_the_data_files)
{
	static const mode_t modes[] = { 0666, 0640, 0600, 0664 };
	mode_t old = umask(022);

	for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
		const char *p = tu_tmpfile(PG);
		char tp[4200];
		struct stat st;
		sm_file *f;
		int fd;

		ck_assert_int_eq(chmod(p, modes[k]), 0);
		ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
		ck_assert_ptr_nonnull(f->table);
		sm_close(f);
		table_of(p, tp, sizeof(tp));
		ck_assert_int_eq(stat(tp, &st), 0);
		ck_assert_msg((st.st_mode & 07777) == modes[k], "data %o, table %o", (unsigned)modes[k],
			      (unsigned)(st.st_mode & 07777));
		/* rebuilt (bad magic): same mode */
		fd = open(tp, O_RDWR | O_CLOEXEC);
		ck_assert_int_eq(pwrite(fd, "XXXX", 4, 0), 4);
		close(fd);
		ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
		ck_assert_ptr_nonnull(f->table);
		sm_close(f);
		ck_assert_int_eq(stat(tp, &st), 0);
		ck_assert_msg((st.st_mode & 07777) == modes[k], "rebuilt: data %o, table %o",
			      (unsigned)modes[k], (unsigned)(st.st_mode & 07777));
	}
	umask(old);
}
END_TEST

/* A header that is right in every field but slot_size describes another
 * layout: reading it with ours would misplace every slot.  It is rebuilt,
 * not accepted. */
START_TEST(wrong_slot_size_is_rebuilt)
{
	const char *p = tu_tmpfile(4 * PG);
	uint32_t wrong = SMT_SLOT_SIZE / 2;
	struct smt_header hd;
	char tp[4200];
	sm_holder h[2];
	sm_file *f;
	sm_slice *s;
	int fd;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	table_of(p, tp, sizeof(tp));
	fd = open(tp, O_RDWR | O_CLOEXEC);
	ck_assert_int_eq(pwrite(fd, &wrong, 4, offsetof(struct smt_header, slot_size)), 4);
	close(fd);
	ck_assert_int_eq(sm_open(p, SM_RDWR, &(sm_options){ .size = sizeof(sm_options), .flags = SM_OPT_TABLE_REQUIRED }, &f), 0);
	ck_assert_ptr_nonnull(f->table);
	ck_assert_uint_eq(f->table->hdr.slot_size, SMT_SLOT_SIZE);
	fd = open(tp, O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(pread(fd, &hd, sizeof(hd), 0), (ssize_t)sizeof(hd));
	close(fd);
	ck_assert_uint_eq(hd.slot_size, SMT_SLOT_SIZE);
	ck_assert_int_eq(sm_map_read(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(sm_holders(f, 0, 10, h, 2), 1);
	sm_release(s);
	sm_close(f);
}
END_TEST

/* Every slot in use, the last one included: sm_holders sees them all
 * (an off-by-one in high_water or the scan limit would hide the last). */
START_TEST(full_table_reports_every_holder)
{
	const char *p = tu_tmpfile(4 * PG);
	enum { NS = 5 };
	uint32_t ns = NS;
	char tp[4200];
	sm_holder h[NS + 2];
	sm_file *f, *g;
	sm_slice *s[NS];
	int fd;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	table_of(p, tp, sizeof(tp));
	fd = open(tp, O_RDWR | O_CLOEXEC);
	ck_assert_int_eq(pwrite(fd, &ns, 4, offsetof(struct smt_header, nslots)), 4);
	close(fd);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0);
	for (int i = 0; i < NS; i++)
		ck_assert_int_eq(sm_map_read(g, (uint64_t)i * 10, 5, 0, &s[i]), 0);
	ck_assert_int_eq(sm_holders(g, 0, 1 << 20, h, NS + 2), NS);
	for (int i = 0; i < NS; i++) {
		ck_assert_int_eq(h[i].state, SM_HELD);
		ck_assert_uint_eq(h[i].off, (uint64_t)i * 10);
	}
	/* and another process sees them too */
	ck_assert_int_eq(sm_open(p, SM_RDONLY, NULL, &f), 0);
	ck_assert_int_eq(sm_holders(f, 0, 1 << 20, h, NS + 2), NS);
	sm_close(f);
	for (int i = 0; i < NS; i++)
		sm_release(s[i]);
	sm_close(g);
}
END_TEST

/* Valid header, garbage slot area (issue 13, defect 9).  SPEC §4.4: a
 * corrupted table may hide holders, never break mapping.  Every garbage
 * slot can be taken back by a claimer, and a reap frees them all. */
static void corrupt_slots(const char *tp, int how, uint32_t high_water, unsigned *seed)
{
	struct smt_header hd;
	int fd = open(tp, O_RDWR | O_CLOEXEC);
	static unsigned char junk[SMT_NSLOTS * SMT_SLOT_SIZE];

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &hd, sizeof(hd), 0), (ssize_t)sizeof(hd));
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = how == 0 ? (unsigned char)rand_r(seed) : 0xff;
	ck_assert_uint_eq(hd.nslots, SMT_NSLOTS);
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), SMT_HEADER_SIZE), (ssize_t)sizeof(junk));
	hd.high_water = high_water;
	ck_assert_int_eq(pwrite(fd, &hd, sizeof(hd), 0), (ssize_t)sizeof(hd));
	close(fd);
}

START_TEST(corrupted_slots_never_break_mapping)
{
	unsigned seed = 1313;

	for (int how = 0; how < 2; how++) {
		for (int hw = 0; hw < 2; hw++) {
			const char *p = tu_tmpfile(4 * PG);
			char tp[4200];
			sm_holder h[4];
			sm_file *f, *g;
			sm_slice *s[3], *x;

			ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
			sm_close(f);
			table_of(p, tp, sizeof(tp));
			corrupt_slots(tp, how, hw ? SMT_NSLOTS : 0, &seed);
			ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
			ck_assert_ptr_nonnull(f->table); /* the header is valid: kept */
			for (int i = 0; i < 3; i++)
				ck_assert_msg(sm_map_write(f, (uint64_t)i * 100, 10, 0, &s[i]) == 0,
					      "how %d hw %d: map %d refused", how, hw, i);
			ck_assert_int_eq(sm_holders(f, 100, 10, h, 4), 1);
			ck_assert_int_eq(h[0].state, SM_HELD);
			/* exclusion is untouched */
			ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0);
			ck_assert_int_eq(sm_map_read(g, 105, 1, 0, &x), -EBUSY);
			sm_close(g);
			/* a reap takes back every garbage slot, and only those */
			struct smt_table t;
			ck_assert_int_eq(smt_attach_path(tp, true, &t), 0);
			int n = smt_reap(&t, false);
			ck_assert_int_ge(n, 0);
			ck_assert_int_eq(smt_reap(&t, true), 0);
			/* slots at and above high_water are invisible to scans:
			 * claimers take them back as they go (the refused map
			 * of g, the second owner, published a pending entry in
			 * slot 16, where its search starts, then withdrew it) */
			uint32_t used = 0;
			ck_assert_uint_eq(smt_scan_limit(&t), hw ? SMT_NSLOTS : SMT_OWNER_SPREAD + 1);
			for (uint32_t i = 0; i < smt_scan_limit(&t); i++) {
				struct smt_slot sl;
				int rc = smt_snapshot(&t, i, &sl);
				ck_assert_msg(rc == 0 || rc == 1, "how %d hw %d: slot %u left as %d", how, hw, i, rc);
				used += rc == 1;
			}
			ck_assert_uint_eq(used, 3);
			smt_detach(&t);
			ck_assert_int_eq(sm_holders(f, 0, 1 << 20, h, 4), 3);
			for (int i = 0; i < 3; i++)
				sm_release(s[i]);
			sm_close(f);
		}
	}
}
END_TEST

/* A reaper never frees a live holder (issue 13, "suspicion").  The worst
 * moment:
 * the reaper probed owner k's byte (dead), then a new process claims byte
 * k, frees the dead predecessor's slots and registers its own, reusing the
 * same slot numbers (same owner, same state word: ABA) and new ones (a
 * reaper that cached "k is dead" would free those). */
static int hold_two_and_die(void *arg, int in, int out)
{
	const char *p = arg;
	sm_file *f;
	sm_slice *a, *b;

	(void)in;
	if (sm_open(p, SM_RDWR, NULL, &f) < 0 || sm_map_read(f, 0, 10, 0, &a) < 0 ||
	    sm_map_read(f, 20, 10, 0, &b) < 0)
		return 1;
	tu_send(out, "%d", f->table ? (int)f->table->owner : -1);
	raise(SIGKILL);
	return 2;
}

static const char *race_path;
static sm_file *race_file;
static sm_slice *race_slice[3];

static void new_owner_now(uint32_t owner)
{
	smt_test_after_probe = NULL; /* once; sm_open below probes too */
	ck_assert_int_eq(sm_open(race_path, SM_RDWR, NULL, &race_file), 0);
	ck_assert_uint_eq(race_file->table->owner, owner);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(sm_map_read(race_file, (uint64_t)i * 100, 10, 0, &race_slice[i]), 0);
}

START_TEST(reaper_never_frees_a_new_owner)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_child c;
	struct smt_table t;
	sm_holder h[4];
	char tp[4200];

	tu_spawn(&c, hold_two_and_die, (void *)p);
	int owner = tu_recv_int(c.from);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_ge(owner, 0);
	table_of(p, tp, sizeof(tp));
	ck_assert_int_eq(smt_attach_path(tp, true, &t), 0); /* a reaper, like lockctl reap */
	ck_assert_int_eq(smt_reap(&t, true), 2);
	race_path = p;
	smt_test_after_probe = new_owner_now;
	int n = smt_reap(&t, false);
	smt_test_after_probe = NULL;
	ck_assert_ptr_nonnull(race_file);
	/* the dead owner's two slots were freed by the new owner itself */
	ck_assert_int_eq(n, 0);
	ck_assert_int_eq(sm_holders(race_file, 0, 1 << 20, h, 4), 3);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(h[i].state, SM_HELD);
	ck_assert_int_eq(smt_reap(&t, false), 0);
	ck_assert_int_eq(sm_holders(race_file, 0, 1 << 20, h, 4), 3);
	smt_detach(&t);
	for (int i = 0; i < 3; i++)
		sm_release(race_slice[i]);
	sm_close(race_file);
}
END_TEST

/* A FIFO where the table belongs (issue 13, defect 7): sm_open neither
 * blocks nor gives up the table; the FIFO is replaced by a table. */
/* Footprint (SPEC §16): the table of a deleted data file goes with its last
 * user, whether that user is this process or another; a table whose data
 * file still exists, or that another owner still uses, stays. */
START_TEST(table_removed_with_its_deleted_file)
{
	const char *p = tu_tmpfile(4 * PG);
	char t[PATH_MAX + 16];
	struct tu_holder_arg ha = { .path = p, .off = 0, .len = 8, .write = false, .tag = "other" };
	struct tu_child c;
	sm_file *f, *g;
	int fd;

	table_of(p, t, sizeof(t));
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(access(t, F_OK), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(access(t, F_OK), 0); /* the data file exists: the table stays */

	/* two users in this process (two descriptions): the first close leaves it */
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_open(p, SM_RDONLY, NULL, &g), 0);
	ck_assert_int_eq(unlink(p), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(access(t, F_OK), 0);
	ck_assert_int_eq(sm_close(g), 0);
	ck_assert_int_eq(access(t, F_OK), -1);

	/* another process attached: it is the last user, and removes it */
	fd = open(p, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4 * PG), 0);
	close(fd);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	tu_spawn(&c, tu_holder, &ha);
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(unlink(p), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(access(t, F_OK), 0);
	tu_send(c.to, "release");
	ck_assert_int_eq(tu_wait(&c), 0);
	ck_assert_int_eq(access(t, F_OK), -1);

	/* a new file under the same name gets a table of its own, and keeps it */
	fd = open(p, O_RDWR | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(access(t, F_OK), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(access(t, F_OK), 0);
}
END_TEST

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* A closer removing the table races openers of a new file of the same
 * name: every opener ends on the table at the path (never on a removed
 * one, which would split the holders over two tables). */
START_TEST(cleanup_races_openers)
{
	const char *p = tu_tmpfile(PG);
	char t[PATH_MAX + 16];
	pid_t kids[2];

	table_of(p, t, sizeof(t));
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		ck_assert_int_ge(kids[k], 0);
		if (kids[k] == 0) {
			int bad = 0;
			for (int i = 0; i < 300; i++) {
				sm_file *f;
				struct stat a, b;
				int fd = open(p, O_RDWR | O_CREAT, 0600);
				if (fd >= 0)
					close(fd);
				if (sm_open(p, SM_RDWR, NULL, &f) != 0)
					continue; /* the file was unlinked between open and sm_open */
				/* while our data file is the one at the path, our table
				 * must be the one at the table's path (once it is
				 * replaced, a new file may rebuild the table).  Inode
				 * numbers are reused at once: compare ctime too, which
				 * also changes when our file is unlinked. */
				struct stat d0, d1, mine;
				bool same = fstat(f->fd, &mine) == 0 && stat(p, &d0) == 0 && same_file(&d0, &mine);
				bool named = f->table && lstat(t, &a) == 0 && fstat(f->table->fd, &b) == 0 &&
					     a.st_ino == b.st_ino;
				if (same && !named && stat(p, &d1) == 0 && same_file(&d1, &mine))
					bad++;
				if (i % 3 == k)
					(void)unlink(p);
				sm_close(f);
			}
			_exit(bad ? 1 : 0);
		}
	}
	for (int k = 0; k < 2; k++) {
		int st;
		ck_assert_int_eq(waitpid(kids[k], &st, 0), kids[k]);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "an opener was left on a removed table");
	}
}
END_TEST

/* A table whose header fails validation is rebuilt only when nobody is
 * attached (SPEC §12.7): a second table beside live owners would split
 * them.  Meanwhile a kernel-mode opener works without a table and a
 * table-mode opener is refused (-EPROTO). */
static void smash_magic(const char *t)
{
	int fd = open(t, O_RDWR | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "XXXX", 4, 0), 4);
	close(fd);
}

static ino_t ino_of(const char *t)
{
	struct stat st;

	ck_assert_int_eq(stat(t, &st), 0);
	return st.st_ino;
}

START_TEST(corrupt_header_kept_while_owners_live)
{
	const char *p = tu_tmpfile(4 * PG);
	char t[PATH_MAX + 16];
	sm_options tm = { .size = sizeof(tm), .flags = SM_OPT_TABLE_LOCKS };
	sm_holder h[2];
	sm_file *f, *g;
	ino_t ino;

	table_of(p, t, sizeof(t));
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	smash_magic(t);
	ino = ino_of(t);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0); /* kernel locks still exclude */
	ck_assert_int_eq(sm_holders(g, 0, 1, h, 2), -EPROTO);
	ck_assert_uint_eq(ino_of(t), ino); /* not replaced under its owner */
	ck_assert_int_eq(sm_close(g), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &g), 0); /* nobody left: rebuilt */
	ck_assert_int_ge(sm_holders(g, 0, 1, h, 2), 0);
	ck_assert_uint_ne(ino_of(t), ino);
	ck_assert_int_eq(sm_close(g), 0);

	/* table-authority mode: refused, never a second table */
	ck_assert_int_eq(sm_open(p, SM_RDWR, &tm, &f), 0);
	smash_magic(t);
	ino = ino_of(t);
	ck_assert_int_eq(sm_open(p, SM_RDWR, &tm, &g), -EPROTO);
	ck_assert_uint_eq(ino_of(t), ino);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sm_open(p, SM_RDWR, &tm, &g), 0);
	ck_assert_uint_ne(ino_of(t), ino);
	ck_assert_int_eq(sm_close(g), 0);
}
END_TEST

START_TEST(fifo_in_place_of_the_table)
{
	const char *p = tu_tmpfile(PG);
	char tp[4200];
	struct stat st;
	sm_holder h[2];
	sm_file *f;
	sm_slice *s;

	table_of(p, tp, sizeof(tp));
	ck_assert_int_eq(mkfifo(tp, 0644), 0);
	alarm(20); /* a regression fails here instead of hanging */
	ck_assert_int_eq(sm_open(p, SM_RDONLY, NULL, &f), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 10, 0, &s), 0);
	ck_assert_int_eq(sm_holders(f, 0, 10, h, 2), 1);
	sm_release(s);
	sm_close(f);
	alarm(0);
	ck_assert_int_eq(lstat(tp, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
}
END_TEST

/* A table grows the way table-authority mode grows it (doc/safemap-table.5:
 * the file first, the header's nslots last) while another process attaches
 * over and over: the header it reads never claims more slots than the file
 * it measured holds (the header is read before the size: reading the size
 * first made a growth in between look like a corrupted table, -EPROTO). */
START_TEST(table_grown_under_an_opener)
{
	const char *p = tu_tmpfile(4 * PG);
	char t[PATH_MAX];
	struct smt_table tab;
	struct smt_header h;
	sm_file *f;
	pid_t grower;
	long attaches, refused = 0;
	int fd, st;
	/* the attacher's turn number; the grower grows the table by a few
	 * slots at each new turn, so the two stay interleaved however they
	 * are scheduled (free-running, a busy machine once gave the attacher
	 * 27 turns in the grower's whole run) */
	uint32_t *turn = mmap(NULL, sizeof(*turn), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const uint32_t turns = 2000, stop = UINT32_MAX;

	ck_assert_ptr_ne(turn, MAP_FAILED);
	*turn = 0;
	table_of(p, t, sizeof(t));
	ck_assert_int_eq(sm_open(p, SM_RDWR, &(sm_options){ .flags = SM_OPT_TABLE_REQUIRED }, &f), 0);
	fd = open(t, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	ck_assert_uint_le(h.nslots + 10 * turns, SMT_MAX_SLOTS);
	grower = fork();
	ck_assert_int_ge(grower, 0);
	if (grower == 0) {
		uint32_t n = h.nslots, seen = 0, now;
		while ((now = __atomic_load_n(turn, __ATOMIC_ACQUIRE)) != stop) {
			if (now == seen) {
				sched_yield();
				continue;
			}
			seen = now;
			for (int k = 0; k < 10; k++) {
				n++;
				if (ftruncate(fd, (off_t)SMT_HEADER_SIZE + (off_t)n * SMT_SLOT_SIZE) < 0 ||
				    pwrite(fd, &n, sizeof(n), offsetof(struct smt_header, nslots)) != (ssize_t)sizeof(n))
					_exit(1);
			}
		}
		_exit(0);
	}
	for (attaches = 0; attaches < turns; attaches++) {
		__atomic_store_n(turn, (uint32_t)attaches + 1, __ATOMIC_RELEASE);
		if (smt_attach_path(t, false, &tab) < 0)
			refused++;
		else
			smt_detach(&tab);
	}
	__atomic_store_n(turn, stop, __ATOMIC_RELEASE);
	ck_assert_int_eq(waitpid(grower, &st, 0), grower);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_msg(refused == 0, "%ld of %ld attaches refused a growing table", refused, attaches);
	munmap(turn, sizeof(*turn));
	close(fd);
	ck_assert_int_eq(sm_close(f), 0);
}
END_TEST

static Suite *table_suite(void)
{
	Suite *s = suite_create("table");
	TCase *tc = tcase_create("table");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, holder_named_after_ebusy);
	tcase_add_test(tc, killed_holder_is_stale_then_reaped);
	tcase_add_test(tc, killed_while_updating_the_table);
	tcase_add_test(tc, first_open_race);
	tcase_add_test(tc, full_table_is_enolck);
	tcase_add_test(tc, corrupted_tables);
	tcase_add_test(tc, table_truncated_under_live_file);
	tcase_add_test(tc, table_owned_by_another_user);
	tcase_add_test(tc, unprivileged_reader);
	tcase_add_test(tc, table_dir_and_replaced_file);
	tcase_add_test(tc, options_and_memory_files);
	tcase_add_test(tc, table_mode_is_the_data_files);
	tcase_add_test(tc, wrong_slot_size_is_rebuilt);
	tcase_add_test(tc, full_table_reports_every_holder);
	tcase_add_test(tc, corrupted_slots_never_break_mapping);
	tcase_add_test(tc, reaper_never_frees_a_new_owner);
	tcase_add_test(tc, fifo_in_place_of_the_table);
	tcase_add_test(tc, corrupt_header_kept_while_owners_live);
	tcase_add_test(tc, table_removed_with_its_deleted_file);
	tcase_add_test(tc, cleanup_races_openers);
	tcase_add_test(tc, table_grown_under_an_opener);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(table_suite());
}
