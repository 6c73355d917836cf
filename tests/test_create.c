/* SPDX-License-Identifier: MIT */
/*
 * test_create.c - sm_open(SM_CREATE) with sm_options.create_size: a file
 * created with a size is seen whole by every opener, even by concurrent
 * first openers (real processes started together from a pipe barrier) and
 * by a process watching the name appear, in both lock modes; an existing
 * file is not resized; nothing is left beside the file, with and without
 * O_TMPFILE.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

extern int sm__create_no_tmpfile; /* file.c: act as if O_TMPFILE were missing */

#define NPROC 8
#define ROUNDS 30
#define SIZE ((uint64_t)3 << 20) /* not a power of two: 3 MiB */

static void set_mode(int i)
{
	setenv("SAFEMAP_TEST_MODE", i ? "table" : "kernel", 1);
}

/* A fresh path (not created) in the suite's temporary directory. */
static const char *fresh_path(char *buf, size_t size, const char *name)
{
	const char *any = tu_tmpfile(0); /* the directory exists from here on */
	const char *slash = strrchr(any, '/');

	snprintf(buf, size, "%.*s/%s", (int)(slash - any), any, name);
	return buf;
}

/* Entries of path's directory whose name contains "smtmp". */
static int leftovers(const char *path)
{
	char dir[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = 0;
	ck_assert_ptr_nonnull(d = opendir(dir));
	while ((e = readdir(d)))
		n += strstr(e->d_name, "smtmp") != NULL;
	closedir(d);
	return n;
}

/* One first opener: wait for the barrier (EOF on fd), open with SM_CREATE
 * and create_size, map the whole file for reading without SM_EXTEND.
 * Exit status: 0, or which step failed. */
static int opener(const char *path, int barrier)
{
	sm_options o;
	sm_file *f;
	sm_slice *s;
	struct stat st;
	char c;
	int rc;

	(void)!read(barrier, &c, 1);
	tu_options(&o, "opener");
	o.create_size = SIZE;
	if ((rc = sm_open(path, SM_RDWR | SM_CREATE, &o, &f)) < 0) {
		fprintf(stderr, "sm_open: %s\n", sm_strerror(rc));
		return 1;
	}
	if (stat(path, &st) < 0 || (uint64_t)st.st_size != SIZE) {
		fprintf(stderr, "size %lld\n", (long long)st.st_size);
		return 2;
	}
	if ((rc = sm_map_read(f, 0, SIZE, 0, &s)) < 0) {
		fprintf(stderr, "sm_map_read: %s\n", sm_strerror(rc));
		return 3;
	}
	sm_release(s);
	sm_close(f);
	return 0;
}

/* A watcher: from before the openers start, stat path until it exists;
 * the first size it sees must be the whole size (exit 0), never less. */
static int watcher(const char *path)
{
	struct stat st;

	for (long i = 0; i < 200000000L; i++)
		if (stat(path, &st) == 0)
			return (uint64_t)st.st_size == SIZE ? 0 : 4;
	return 5;
}

START_TEST(test_create_concurrent)
{
	char path[PATH_MAX], name[32];

	set_mode(_i);
	TU_REQUIRE_MODE();
	for (int round = 0; round < ROUNDS; round++) {
		pid_t pid[NPROC], w;
		int p[2], st;

		snprintf(name, sizeof(name), "race%d", round);
		fresh_path(path, sizeof(path), name);
		ck_assert_int_ge(w = fork(), 0);
		if (w == 0)
			_exit(watcher(path));
		ck_assert_int_eq(pipe(p), 0);
		for (int i = 0; i < NPROC; i++) {
			ck_assert_int_ge(pid[i] = fork(), 0);
			if (pid[i] == 0) {
				close(p[1]);
				_exit(opener(path, p[0]));
			}
		}
		close(p[0]);
		close(p[1]); /* all start at once */
		for (int i = 0; i < NPROC; i++) {
			ck_assert_int_eq(waitpid(pid[i], &st, 0), pid[i]);
			ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
				      "round %d opener %d: status %#x", round, i, st);
		}
		ck_assert_int_eq(waitpid(w, &st, 0), w);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "round %d: the file appeared shorter (status %#x)", round, st);
		ck_assert_int_eq(leftovers(path), 0);
	}
}
END_TEST

/* The created file: the size, zeros, mode 0666 & ~umask; nothing beside. */
static void check_created(int no_tmpfile)
{
	char path[PATH_MAX];
	sm_options o;
	sm_file *f;
	sm_slice *s;
	struct stat st;
	uint64_t v;
	mode_t mask = umask(022);

	sm__create_no_tmpfile = no_tmpfile;
	fresh_path(path, sizeof(path), no_tmpfile ? "named" : "tmpfile");
	tu_options(&o, NULL);
	o.create_size = 12345;
	ck_assert_int_eq(sm_open(path, SM_RDWR | SM_CREATE, &o, &f), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 12345);
	ck_assert_int_eq(st.st_mode & 0777, 0644);
	ck_assert_int_eq(sm_map_write(f, 12000, 345, 0, &s), 0);
	ck_assert_int_eq(sm_get_u64(s, 337, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(sm_release(s), 0);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(leftovers(path), 0);
	sm__create_no_tmpfile = 0;
	umask(mask);
}

START_TEST(test_create_tmpfile)
{
	set_mode(_i);
	TU_REQUIRE_MODE();
	check_created(0);
}
END_TEST

START_TEST(test_create_named)
{
	set_mode(_i);
	TU_REQUIRE_MODE();
	check_created(1);
}
END_TEST

/* An existing file is opened as it is: create_size never resizes. */
START_TEST(test_create_existing)
{
	const char *path = tu_tmpfile(4096);
	sm_options o;
	sm_file *f;
	struct stat st;

	set_mode(_i);
	TU_REQUIRE_MODE();
	tu_options(&o, NULL);
	o.create_size = SIZE;
	ck_assert_int_eq(sm_open(path, SM_RDWR | SM_CREATE, &o, &f), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 4096);
	sm_close(f);
	/* read-only openers may create too, as with SM_CREATE alone */
	char p2[PATH_MAX];
	fresh_path(p2, sizeof(p2), "rdonly");
	ck_assert_int_eq(sm_open(p2, SM_RDONLY | SM_CREATE, &o, &f), 0);
	ck_assert_int_eq(stat(p2, &st), 0);
	ck_assert_uint_eq((uint64_t)st.st_size, SIZE);
	sm_close(f);
}
END_TEST

START_TEST(test_create_args)
{
	char path[PATH_MAX];
	sm_options o;
	sm_file *f;
	sm_log *l;

	fresh_path(path, sizeof(path), "args");
	tu_options(&o, NULL);
	o.create_size = 4096;
	ck_assert_int_eq(sm_open(path, SM_RDWR, &o, &f), -EINVAL); /* without SM_CREATE */
	o.create_size = (uint64_t)INT64_MAX + 1;
	ck_assert_int_eq(sm_open(path, SM_RDWR | SM_CREATE, &o, &f), -ERANGE);
	ck_assert_ptr_null(f);
	ck_assert_int_eq(access(path, F_OK), -1); /* nothing was created */
	o.create_size = 4096;
	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, &o, &l), -EINVAL);
	ck_assert_int_eq(access(path, F_OK), -1);
	o.create_size = 0;
	o.reserved[2] = 1;
	ck_assert_int_eq(sm_open(path, SM_RDWR | SM_CREATE, &o, &f), -EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("create");
	TCase *tc = tcase_create("create");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_create_concurrent, 0, 2);
	tcase_add_loop_test(tc, test_create_tmpfile, 0, 2);
	tcase_add_loop_test(tc, test_create_named, 0, 2);
	tcase_add_loop_test(tc, test_create_existing, 0, 2);
	tcase_add_test(tc, test_create_args);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
