/* SPDX-License-Identifier: MIT */
/*
 * test_object.c - sm_object: nothing under the name until publish, then
 * the whole object; -EEXIST unless SM_OBJECT_REPLACE; abort and SIGKILL
 * leave nothing behind; readers in another process never see a partial
 * object; EIO and ENOSPC through the syscall seam.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap-internal.h"
#include "testutil.h"

static char dir[PATH_MAX];
extern int sm__object_no_tmpfile; /* object.c: act as if O_TMPFILE were missing */

static void make_dir(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/safemap-obj.XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Entries of dir (besides . and ..); the first one's name in first. */
static int entries(char *first, size_t size)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n++ == 0 && first)
			snprintf(first, size, "%s", e->d_name);
	}
	closedir(d);
	return n;
}

static void remove_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[PATH_MAX + 256];

	if (!d)
		return;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

/* Write len bytes of `byte` into a new object. */
static sm_object *filled(const char *name, int flags, uint64_t len, int byte)
{
	sm_object *o;
	sm_slice *s;

	ck_assert_int_eq(sm_object_create(dir, name, flags, &o), 0);
	ck_assert_int_eq(sm_object_map(o, 0, len, &s), 0);
	ck_assert_int_eq(sm_fill(s, 0, byte, len), 0);
	ck_assert_int_eq(sm_release(s), 0);
	return o;
}

/* The file dir/name holds exactly len bytes of `byte`. */
static void check_file(const char *name, uint64_t len, int byte)
{
	char p[PATH_MAX + 256];
	unsigned char buf[4096];
	struct stat st;
	uint64_t off = 0;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq((uint64_t)st.st_size, len);
	while (off < len) {
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)off);
		ck_assert_int_gt(n, 0);
		for (ssize_t k = 0; k < n; k++)
			ck_assert_int_eq(buf[k], byte);
		off += (uint64_t)n;
	}
	close(fd);
}

START_TEST(publish_makes_whole_object_appear)
{
	char first[256];
	sm_object *o;

	make_dir();
	o = filled("obj", 0, 300000, 0xab);
	ck_assert_int_eq(entries(NULL, 0), 0); /* nothing under the name, or beside it */
	ck_assert_int_eq(sm_object_publish(o), 0);
	ck_assert_int_eq(entries(first, sizeof(first)), 1);
	ck_assert_str_eq(first, "obj");
	check_file("obj", 300000, 0xab);
	remove_dir();
}
END_TEST

START_TEST(existing_name_eexist_unless_replace)
{
	char first[256];
	sm_object *o;

	make_dir();
	ck_assert_int_eq(sm_object_publish(filled("obj", 0, 5000, 1)), 0);
	o = filled("obj", 0, 7000, 2);
	ck_assert_int_eq(sm_object_publish(o), -EEXIST);
	check_file("obj", 5000, 1);
	/* Still the caller's: abort leaves the old object alone. */
	ck_assert_int_eq(sm_object_abort(o), 0);
	ck_assert_int_eq(entries(first, sizeof(first)), 1);
	check_file("obj", 5000, 1);
	ck_assert_int_eq(sm_object_publish(filled("obj", SM_OBJECT_REPLACE, 7000, 3)), 0);
	ck_assert_int_eq(entries(first, sizeof(first)), 1);
	ck_assert_str_eq(first, "obj");
	check_file("obj", 7000, 3);
	remove_dir();
}
END_TEST

START_TEST(abort_and_bad_arguments)
{
	sm_object *o;
	sm_slice *s;

	make_dir();
	o = filled("obj", 0, 9000, 4);
	ck_assert_int_eq(sm_object_abort(o), 0);
	ck_assert_int_eq(entries(NULL, 0), 0);

	/* Live slices: -EBUSY, and the object stays the caller's. */
	ck_assert_int_eq(sm_object_create(dir, "obj", 0, &o), 0);
	ck_assert_int_eq(sm_object_map(o, 4096, 100, &s), 0);
	ck_assert_int_eq(sm_object_publish(o), -EBUSY);
	ck_assert_int_eq(entries(NULL, 0), 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_object_publish(o), 0);
	check_file("obj", 4196, 0);

	ck_assert_int_eq(sm_object_create(dir, "a/b", 0, &o), -EINVAL);
	ck_assert_int_eq(sm_object_create(dir, "", 0, &o), -EINVAL);
	ck_assert_int_eq(sm_object_create(dir, "..", 0, &o), -EINVAL);
	ck_assert_int_eq(sm_object_create(dir, "x", 0x100, &o), -EINVAL);
	ck_assert_int_eq(sm_object_create(NULL, "x", 0, &o), -EINVAL);
	ck_assert_int_eq(sm_object_create("/nonexistent-safemap", "x", 0, &o), -ENOENT);
	ck_assert_int_eq(sm_object_publish(NULL), -EINVAL);
	ck_assert_int_eq(sm_object_abort(NULL), -EINVAL);
	ck_assert_int_eq(sm_object_map(NULL, 0, 1, &s), -EINVAL);
	remove_dir();
}
END_TEST

/* A writer killed before publishing leaves nothing (O_TMPFILE). */
static int doomed_writer(void *arg, int in, int out)
{
	sm_object *o;
	sm_slice *s;
	char line[8];

	(void)arg;
	if (sm_object_create(dir, "obj", 0, &o) < 0 || sm_object_map(o, 0, 1 << 20, &s) < 0 ||
	    sm_fill(s, 0, 9, 1 << 20) < 0)
		return 1;
	tu_send(out, "ready");
	tu_recv(in, line, sizeof(line));
	return 2;
}

START_TEST(sigkill_leaves_nothing)
{
	struct tu_child c;
	char line[16];

	make_dir();
	tu_spawn(&c, doomed_writer, NULL);
	ck_assert(tu_recv(c.from, line, sizeof(line)));
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	ck_assert_int_eq(entries(NULL, 0), 0);
	remove_dir();
}
END_TEST

/* Another process publishes ROUNDS versions of obj (REPLACE), each filled
 * with its round number; readers open obj as fast as they can and must
 * always find one version whole. */
#define ROUNDS 50
#define OBJ_LEN (256 * 1024)

static int publisher(void *arg, int in, int out)
{
	(void)arg, (void)in;
	for (int r = 1; r <= ROUNDS; r++) {
		sm_object *o;
		sm_slice *s;
		if (sm_object_create(dir, "obj", SM_OBJECT_REPLACE, &o) < 0 ||
		    sm_object_map(o, 0, OBJ_LEN, &s) < 0 || sm_fill(s, 0, r, OBJ_LEN) < 0 ||
		    sm_release(s) < 0 || sm_object_publish(o) < 0)
			return 1;
		if (r == 1)
			tu_send(out, "first");
	}
	return 0;
}

START_TEST(readers_never_see_partial)
{
	static unsigned char buf[OBJ_LEN + 1];
	struct tu_child c;
	char line[16], p[PATH_MAX + 8];
	int reads = 0, last = 0, st = 0;

	make_dir();
	snprintf(p, sizeof(p), "%s/obj", dir);
	tu_spawn(&c, publisher, NULL);
	ck_assert(tu_recv(c.from, line, sizeof(line)));
	for (;;) {
		int done = waitpid(c.pid, &st, WNOHANG) == c.pid;
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		ssize_t n;

		ck_assert_int_ge(fd, 0);
		n = pread(fd, buf, sizeof(buf), 0);
		close(fd);
		ck_assert_int_eq(n, OBJ_LEN);
		ck_assert_int_ge(buf[0], last); /* versions only move forward */
		last = buf[0];
		for (int k = 1; k < OBJ_LEN; k++)
			ck_assert_int_eq(buf[k], buf[0]);
		reads++;
		if (done)
			break;
	}
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_int_eq(last, ROUNDS);
	ck_assert_int_gt(reads, 0);
	c.pid = -1;
	close(c.to);
	close(c.from);
	ck_assert_int_eq(entries(NULL, 0), 1);
	remove_dir();
}
END_TEST

/* ---- fault injection ------------------------------------------------------ */

static int fail_errno;
static int fail_fdatasync(int fd)
{
	(void)fd;
	errno = fail_errno;
	return -1;
}
/* Fail only the second flush: the directory's, after the link (failed_dir
 * says whether the flush it failed was a directory's). */
static int nflush;
static bool failed_dir;
static int fail_second_fdatasync(int fd)
{
	struct stat st;

	if (++nflush == 2) {
		failed_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
		errno = fail_errno;
		return -1;
	}
	return fdatasync(fd);
}
/* Every flush, in order: what it flushed, and whether the object's name
 * was in the directory at the time. */
static struct flush {
	dev_t dev;
	ino_t ino;
	bool is_dir, named;
} flushes[8];
static int nflushes;
static int recording_fdatasync(int fd)
{
	struct stat st;
	char p[PATH_MAX + 16];

	ck_assert_int_lt(nflushes, 8);
	ck_assert_int_eq(fstat(fd, &st), 0);
	snprintf(p, sizeof(p), "%s/obj", dir);
	flushes[nflushes++] = (struct flush){ st.st_dev, st.st_ino, S_ISDIR(st.st_mode), access(p, F_OK) == 0 };
	return fdatasync(fd);
}
static int fail_fallocate(int fd, int mode, off_t off, off_t len)
{
	(void)fd, (void)mode, (void)off, (void)len;
	errno = fail_errno;
	return -1;
}

START_TEST(flush_error_publishes_nothing)
{
	static const int errs[] = { EIO, ENOSPC };
	sm_object *o;
	sm_slice *s;

	make_dir();
	for (int e = 0; e < 2; e++) {
		o = filled("obj", 0, 10000, 5);
		fail_errno = errs[e];
		sm_sys.fdatasync = fail_fdatasync;
		ck_assert_int_eq(sm_object_publish(o), -errs[e]);
		sm_sys_reset();
		ck_assert_int_eq(entries(NULL, 0), 0);
		/* Sticky: the pages may be lost, a retry must not pretend. */
		ck_assert_int_eq(sm_object_publish(o), -errs[e]);
		ck_assert_int_eq(sm_object_abort(o), 0);
		ck_assert_int_eq(entries(NULL, 0), 0);

		/* No space for the blocks: -errno from map, not SIGBUS. */
		ck_assert_int_eq(sm_object_create(dir, "obj", 0, &o), 0);
		sm_sys.fallocate = fail_fallocate;
		ck_assert_int_eq(sm_object_map(o, 0, 1 << 20, &s), -errs[e]);
		sm_sys_reset();
		ck_assert_int_eq(sm_object_abort(o), 0);
		ck_assert_int_eq(entries(NULL, 0), 0);

		/* The directory flush fails: the error is reported; the name is
		 * already there, whole, and abort leaves it. */
		o = filled("obj", 0, 10000, 6);
		nflush = 0;
		sm_sys.fdatasync = fail_second_fdatasync;
		ck_assert_int_eq(sm_object_publish(o), -errs[e]);
		sm_sys_reset();
		ck_assert_int_eq(nflush, 2);
		ck_assert_msg(failed_dir, "the second flush was not the directory's");
		check_file("obj", 10000, 6);
		ck_assert_int_eq(sm_object_abort(o), 0);
		check_file("obj", 10000, 6);
		ck_assert_int_eq(entries(NULL, 0), 1);
		remove_dir();
		make_dir();
	}
	remove_dir();
}
END_TEST

/* Publish makes the object durable, then its name: it flushes the object's
 * own file before the name appears, then the directory holding the name
 * (not the file again), with and without O_TMPFILE. */
START_TEST(publish_syncs_the_directory)
{
	struct stat d, f;
	char p[PATH_MAX + 16];

	make_dir();
	snprintf(p, sizeof(p), "%s/obj", dir);
	for (int hidden = 0; hidden < 2; hidden++) {
		sm__object_no_tmpfile = hidden;
		unlink(p);
		sm_object *o = filled("obj", 0, 10000, 8 + hidden);
		nflushes = 0;
		sm_sys.fdatasync = recording_fdatasync;
		ck_assert_int_eq(sm_object_publish(o), 0);
		sm_sys_reset();
		ck_assert_int_eq(stat(dir, &d), 0);
		ck_assert_int_eq(stat(p, &f), 0);
		ck_assert_int_eq(nflushes, 2);
		ck_assert_msg(!flushes[0].is_dir && flushes[0].dev == f.st_dev && flushes[0].ino == f.st_ino,
			      "the first flush is not the object's file");
		ck_assert_msg(!flushes[0].named, "the name appeared before the data was flushed");
		ck_assert_msg(flushes[1].is_dir && flushes[1].dev == d.st_dev && flushes[1].ino == d.st_ino,
			      "the second flush is not the directory's");
		ck_assert_msg(flushes[1].named, "the directory was flushed before the name was in it");
		check_file("obj", 10000, 8 + hidden);
	}
	sm__object_no_tmpfile = 0;
	remove_dir();
}
END_TEST

/* Without O_TMPFILE: a hidden name, gone after publish and after abort. */
START_TEST(hidden_name_fallback)
{
	char first[256];
	sm_object *o;

	make_dir();
	sm__object_no_tmpfile = 1;
	o = filled("obj", 0, 6000, 6);
	ck_assert_int_eq(entries(first, sizeof(first)), 1);
	ck_assert_int_eq(first[0], '.');
	ck_assert_int_eq(sm_object_abort(o), 0);
	ck_assert_int_eq(entries(NULL, 0), 0);
	ck_assert_int_eq(sm_object_publish(filled("obj", 0, 6000, 6)), 0);
	ck_assert_int_eq(entries(first, sizeof(first)), 1);
	ck_assert_str_eq(first, "obj");
	o = filled("obj", 0, 100, 7);
	ck_assert_int_eq(sm_object_publish(o), -EEXIST);
	ck_assert_int_eq(sm_object_abort(o), 0);
	ck_assert_int_eq(sm_object_publish(filled("obj", SM_OBJECT_REPLACE, 100, 7)), 0);
	ck_assert_int_eq(entries(first, sizeof(first)), 1);
	check_file("obj", 100, 7);
	sm__object_no_tmpfile = 0;
	remove_dir();
}
END_TEST

static Suite *object_suite(void)
{
	Suite *s = suite_create("object");
	TCase *tc;

	tc = tcase_create("object");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, publish_makes_whole_object_appear);
	tcase_add_test(tc, existing_name_eexist_unless_replace);
	tcase_add_test(tc, abort_and_bad_arguments);
	tcase_add_test(tc, sigkill_leaves_nothing);
	tcase_add_test(tc, readers_never_see_partial);
	tcase_add_test(tc, flush_error_publishes_nothing);
	tcase_add_test(tc, publish_syncs_the_directory);
	tcase_add_test(tc, hidden_name_fallback);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(object_suite());
}
