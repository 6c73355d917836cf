/* SPDX-License-Identifier: MIT */
/*
 * test_lockctl.c - lockctl against real holders: golden output of
 * `lockctl list --raw --noheadings -o ...`, JSON, check's exit codes and
 * holder names, hold, reap after SIGKILL, info, and bad input (one line,
 * status 2).
 */
#include <check.h>
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

#include "safemap.h"
#include "testutil.h"

#define PG 4096

static char lockctl[PATH_MAX + 32];
#define ARGS_MAX (3 * PATH_MAX + 512)

static void find_lockctl(void)
{
	tu_sibling("../tools/lockctl", lockctl, sizeof(lockctl));
}

/* Run lockctl with args; returns its exit status, output in out. */
static int run(char *out, size_t n, const char *args)
{
	char cmd[ARGS_MAX + PATH_MAX + 64];
	size_t len = 0;
	FILE *p;
	int st;

	/* a hang (e.g. opening a FIFO) fails the test instead of stalling it */
	snprintf(cmd, sizeof(cmd), "timeout -s KILL 30 %s %s 2>&1", lockctl, args);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while (len + 1 < n && fgets(out + len, (int)(n - len), p))
		len += strlen(out + len);
	out[len] = '\0';
	char sink[4096]; /* drain the rest: never kill lockctl with SIGPIPE */
	while (fgets(sink, sizeof(sink), p))
		;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A program that does not use safemap: a classic POSIX write lock. */
static int posix_locker(void *arg, int in, int out)
{
	const char *p = arg;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 3000, .l_len = 100 };
	int fd = open(p, O_RDWR | O_CLOEXEC);
	char buf[8];

	tu_send(out, "%d", fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0 ? 0 : -errno);
	tu_recv(in, buf, sizeof(buf));
	return 0;
}

START_TEST(list_golden_output)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg w = { p, 100, 50, true, "writer-1" }, r = { p, 0, 10, false, "reader" };
	struct tu_child a, b, c;
	char out[8192], args[ARGS_MAX];

	find_lockctl();
	tu_spawn(&a, tu_holder, &w);
	ck_assert_int_eq(tu_recv_int(a.from), 0);
	tu_spawn(&b, tu_holder, &r);
	ck_assert_int_eq(tu_recv_int(b.from), 0);
	tu_spawn(&c, posix_locker, (void *)p);
	ck_assert_int_eq(tu_recv_int(c.from), 0);

	snprintf(args, sizeof(args), "list --raw --noheadings -o START,END,SIZE,MODE,STATE,TAG,TYPE --bytes %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_str_eq(out, "100 149 50 WRITE held writer-1 SAFEMAP\n"
			      "0 9 10 READ held reader SAFEMAP\n"
			      "3000 3099 100 WRITE held  POSIX\n");
	/* PID and COMMAND name the holders */
	snprintf(args, sizeof(args), "list -r -n -o PID,COMMAND,TAG %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	char want[256], comm[32];
	tu_comm(comm, sizeof(comm)); /* "memcheck-amd64-" under valgrind */
	snprintf(want, sizeof(want), "%d %s writer-1\n%d %s reader\n%d %s \n", (int)a.pid, comm,
		 (int)b.pid, comm, (int)c.pid, comm);
	ck_assert_str_eq(out, want);
	/* without PATH: every locked file, found through /proc/PID/fd */
	{
		/* other suites may hold thousands of locks meanwhile */
		static char all[8 << 20];
		ck_assert_int_eq(run(all, sizeof(all), "list -r -n -o PATH,START,TAG,TYPE"), 0);
		snprintf(want, sizeof(want), "%s 100 writer-1 SAFEMAP\n", p);
		ck_assert_msg(strstr(all, want) != NULL, "no '%s' in the list", want);
		snprintf(want, sizeof(want), "%s 3000  POSIX\n", p);
		ck_assert_msg(strstr(all, want) != NULL, "no '%s' in the list", want);
		snprintf(want, sizeof(want), "%s.smlock", p);
		ck_assert_ptr_null(strstr(all, want)); /* tables are not data */
	}
	/* JSON */
	snprintf(args, sizeof(args), "list -J -o START,TAG %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_ptr_nonnull(strstr(out, "\"locks\": ["));
	ck_assert_ptr_nonnull(strstr(out, "\"start\": 100,"));
	ck_assert_ptr_nonnull(strstr(out, "\"tag\": \"writer-1\""));

	/* check: exit 1 and who; exit 0 when free */
	snprintf(args, sizeof(args), "check %s 120 5 r", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 1);
	ck_assert_ptr_nonnull(strstr(out, "tag \"writer-1\""));
	snprintf(args, sizeof(args), "check %s 5 1 r", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	snprintf(args, sizeof(args), "check %s 5 1 w", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 1);
	snprintf(args, sizeof(args), "check %s 3050 1 r", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 1);
	ck_assert_ptr_nonnull(strstr(out, "does not use safemap"));

	/* kill the writer: stale, then reaped */
	kill(a.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&a), 128 + SIGKILL);
	snprintf(args, sizeof(args), "list -r -n -o START,STATE,TYPE %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_str_eq(out, "100 stale SAFEMAP\n0 held SAFEMAP\n3000 held POSIX\n");
	snprintf(args, sizeof(args), "reap --dry-run %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_str_eq(out, "would reap 1 stale entry\n");
	snprintf(args, sizeof(args), "reap %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_str_eq(out, "reaped 1 stale entry\n");
	snprintf(args, sizeof(args), "list -r -n -o START,STATE %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_str_eq(out, "0 held\n3000 held\n");
	snprintf(args, sizeof(args), "info %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_ptr_nonnull(strstr(out, "1 held, 0 stale"));
	ck_assert_ptr_nonnull(strstr(out, "(consistent)"));

	tu_send(b.to, "bye");
	tu_send(c.to, "bye");
	ck_assert_int_eq(tu_wait(&b), 0);
	ck_assert_int_eq(tu_wait(&c), 0);
}
END_TEST

START_TEST(hold_runs_a_command)
{
	const char *p = tu_tmpfile(4 * PG);
	char out[4096], args[ARGS_MAX];

	find_lockctl();
	/* the command sees the region held (by lockctl) and its own exit
	 * status comes back */
	snprintf(args, sizeof(args), "hold %s 0 100 w --tag batch -- sh -c '%s list -r -n -o START,TAG %s; exit 7'",
		 p, lockctl, p);
	ck_assert_int_eq(run(out, sizeof(out), args), 7);
	ck_assert_str_eq(out, "0 batch\n");
	/* released afterwards */
	snprintf(args, sizeof(args), "check %s 0 100 w", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	/* conflict: exit 1, holder named */
	snprintf(args, sizeof(args), "hold %s 0 100 w -t outer -- %s hold %s 50 1 r -- true", p, lockctl, p);
	ck_assert_int_eq(run(out, sizeof(out), args), 1);
	ck_assert_ptr_nonnull(strstr(out, "outer"));
}
END_TEST

START_TEST(bad_input_one_line_status_2)
{
	const char *p = tu_tmpfile(PG);
	const char *bad[] = {
		"",
		"bogus",
		"list -o NOPE %s",
		"list -J -r %s",
		"check %s x 1 r",
		"check %s 0 0 r",
		"check %s 0 1 q",
		"check %s 0 1",
		"hold %s 0 1 w",
		"hold %s 0 1 w true",
		"reap",
		"info",
		"--bogus",
	};
	char out[4096], args[ARGS_MAX];

	find_lockctl();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(args, sizeof(args), bad[i], p);
		ck_assert_msg(run(out, sizeof(out), args) == 2, "'%s' did not exit 2: %s", args, out);
		ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1, "'%s': not one line: %s", args, out);
	}
	ck_assert_int_eq(run(out, sizeof(out), "--help"), 0);
	ck_assert_ptr_nonnull(strstr(out, "Exit status"));
	ck_assert_int_eq(run(out, sizeof(out), "-H"), 0);
	ck_assert_ptr_nonnull(strstr(out, "STATE"));
	ck_assert_int_eq(run(out, sizeof(out), "list /nonexistent/file"), 3);
}
END_TEST

/* Issue 13, defect 7: a FIFO in place of the table, or given as the data
 * file, never blocks lockctl: one line naming the path, status 3. */
START_TEST(fifo_never_hangs)
{
	const char *p = tu_tmpfile(PG);
	const char *cmds[] = { "list %s", "info %s", "reap %s", "reap --dry-run %s", "list -J %s" };
	char tp[PATH_MAX + 16], fifo[PATH_MAX + 16], want[PATH_MAX + 64];
	char out[4096], args[ARGS_MAX];

	find_lockctl();
	snprintf(tp, sizeof(tp), "%s.smlock", p);
	ck_assert_int_eq(mkfifo(tp, 0644), 0);
	snprintf(want, sizeof(want), "lockctl: %s: not a regular file\n", tp);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		snprintf(args, sizeof(args), cmds[i], p);
		ck_assert_msg(run(out, sizeof(out), args) == 3, "'%s': %s", args, out);
		ck_assert_msg(strcmp(out, want) == 0 || (strstr(cmds[i], "-J") && strstr(out, want)),
			      "'%s': %s", args, out);
	}
	/* check names the holder from the table: the FIFO is no table */
	snprintf(args, sizeof(args), "check %s 0 1 r", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	unlink(tp);

	/* the data path itself a FIFO */
	snprintf(fifo, sizeof(fifo), "%s.fifo", p);
	ck_assert_int_eq(mkfifo(fifo, 0644), 0);
	snprintf(want, sizeof(want), "lockctl: %s: not a regular file\n", fifo);
	const char *data_cmds[] = { "check %s 0 1 r", "check %s 0 1 w", "list %s", "info %s", "reap %s" };
	for (size_t i = 0; i < sizeof(data_cmds) / sizeof(data_cmds[0]); i++) {
		snprintf(args, sizeof(args), data_cmds[i], fifo);
		ck_assert_msg(run(out, sizeof(out), args) == 3, "'%s': %s", args, out);
		ck_assert_msg(strcmp(out, want) == 0, "'%s': %s", args, out);
	}
	unlink(fifo);
}
END_TEST

/* Issue 13, defect 9: a valid header over a garbage slot area.  lockctl
 * reap takes every garbage slot back (it used to free none), and the table
 * is clean afterwards. */
START_TEST(reap_takes_back_garbage_slots)
{
	const char *p = tu_tmpfile(PG);
	char tp[PATH_MAX + 16], out[4096], args[ARGS_MAX];
	static unsigned char junk[16384 * 128];
	uint32_t hw = 16384;
	sm_file *f;
	int fd;

	find_lockctl();
	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	sm_close(f);
	snprintf(tp, sizeof(tp), "%s.smlock", p);
	memset(junk, 0xff, sizeof(junk));
	fd = open(tp, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 4096), (ssize_t)sizeof(junk));
	ck_assert_int_eq(pwrite(fd, &hw, 4, 72), 4); /* high_water: every slot */
	close(fd);
	snprintf(args, sizeof(args), "reap %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_str_eq(out, "reaped 16384 stale entries\n");
	snprintf(args, sizeof(args), "info %s", p);
	ck_assert_int_eq(run(out, sizeof(out), args), 0);
	ck_assert_msg(strstr(out, "0 held, 0 stale, 0 changing, 0 invalid") != NULL, "%s", out);
}
END_TEST

static Suite *lockctl_suite(void)
{
	Suite *s = suite_create("lockctl");
	TCase *tc = tcase_create("lockctl");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, list_golden_output);
	tcase_add_test(tc, hold_runs_a_command);
	tcase_add_test(tc, bad_input_one_line_status_2);
	tcase_add_test(tc, fifo_never_hangs);
	tcase_add_test(tc, reap_takes_back_garbage_slots);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(lockctl_suite());
}
