/* SPDX-License-Identifier: MIT */
/*
 * demo.c - two processes sharing one file through safemap.
 *
 * The writer maps a write slice and fills it; the reader, another process,
 * is refused with -EBUSY while the writer holds it, then reads the
 * committed bytes once the writer has released the slice.  The two talk
 * over pipes so the steps happen in order without sleeps.
 *
 *   examples/demo [FILE]      (default: a temporary file, removed after)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap.h"

#define REGION 4096
static const char message[] = "hello from the writer, committed";

static void step(int fd)
{
	char c = 0;
	if (write(fd, &c, 1) != 1)
		exit(1);
}

static void await(int fd)
{
	char c;
	if (read(fd, &c, 1) != 1)
		exit(1);
}

static int fail(const char *who, const char *what, int rc)
{
	fprintf(stderr, "%s: %s: %s\n", who, what, sm_strerror(rc));
	return 1;
}

static int reader(const char *path, int go, int done)
{
	char buf[sizeof(message)] = { 0 };
	sm_file *f;
	sm_slice *s;
	int rc;

	if ((rc = sm_open(path, SM_RDONLY, NULL, &f)) < 0)
		return fail("reader", "sm_open", rc);
	await(go); /* the writer holds its slice now */
	rc = sm_map_read(f, 0, REGION, 0, &s);
	printf("reader (pid %d): sm_map_read while the writer holds the region -> %d (%s)\n",
	       (int)getpid(), rc, rc == -EBUSY ? "EBUSY, as expected" : sm_strerror(rc));
	fflush(stdout);
	if (rc == 0) {
		sm_release(s);
		return 1;
	}
	step(done);
	await(go); /* the writer committed and released */
	if ((rc = sm_map_read(f, 0, REGION, 0, &s)) < 0)
		return fail("reader", "sm_map_read after release", rc);
	if ((rc = sm_read(s, 0, buf, sizeof(buf))) < 0)
		return fail("reader", "sm_read", rc);
	printf("reader (pid %d): after the commit it reads \"%s\"\n", (int)getpid(), buf);
	sm_release(s);
	sm_close(f);
	return strcmp(buf, message) != 0;
}

int main(int argc, char **argv)
{
	char tmpl[] = "/tmp/safemap-demo.XXXXXX";
	const char *path = argc > 1 ? argv[1] : tmpl;
	int to_reader[2], to_writer[2], status, rc, fd;
	sm_file *f;
	sm_slice *s;
	pid_t pid;

	fd = argc > 1 ? -1 : mkstemp(tmpl);
	if (argc == 1 && fd < 0) {
		perror("mkstemp");
		return 1;
	}
	if (fd >= 0)
		close(fd);
	if ((rc = sm_open(path, SM_RDWR | SM_CREATE, NULL, &f)) < 0)
		return fail("writer", "sm_open", rc);
	if (pipe(to_reader) < 0 || pipe(to_writer) < 0) {
		perror("pipe");
		return 1;
	}
	if ((pid = fork()) < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		/* A child must not use its parent's sm_file: open afresh. */
		sm_close(f);
		rc = reader(path, to_reader[0], to_writer[1]);
		fflush(stdout);
		_exit(rc);
	}

	/* SM_EXTEND: the region may lie beyond the end of a new file. */
	if ((rc = sm_map_write(f, 0, REGION, SM_EXTEND, &s)) < 0)
		return fail("writer", "sm_map_write", rc);
	if ((rc = sm_write(s, 0, message, sizeof(message))) < 0)
		return fail("writer", "sm_write", rc);
	printf("writer (pid %d): holds a write slice [0, %d) and wrote %zu bytes\n",
	       (int)getpid(), REGION, sizeof(message));
	fflush(stdout);
	step(to_reader[1]);
	await(to_writer[0]);
	if ((rc = sm_commit(s, SM_SYNC)) < 0)
		return fail("writer", "sm_commit", rc);
	sm_release(s);
	printf("writer (pid %d): committed and released\n", (int)getpid());
	fflush(stdout);
	step(to_reader[1]);

	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "demo: the reader failed\n");
		return 1;
	}
	sm_close(f);
	if (argc == 1)
		unlink(tmpl);
	printf("demo: ok\n");
	return 0;
}
