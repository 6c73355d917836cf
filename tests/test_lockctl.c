/* SPDX-License-Identifier: MIT */
/*
 * test_lockctl.c - lockctl against real holders: golden output of
 * `lockctl list --raw --noheadings -o ...`, JSON, check's exit codes and
 * holder names, hold, reap after SIGKILL, info, and bad input (one line,
 * status 2).
 */
#include <check.h>
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
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

	/* a hang (e.g. opening a FIFO) fails the test instead of stalling it */
	snprintf(cmd, sizeof(cmd), "timeout -s KILL 30 %s %s 2>&1", lockctl, args);
	return tu_capture(out, n, cmd);
}

/* run() with the arguments formatted from fmt. */
static __attribute__((format(printf, 3, 4))) int runf(char *out, size_t n, const char *fmt, ...)
{
	char args[ARGS_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	return run(out, n, args);
}

static bool json_valid(const char *s);

START_TEST(list_golden_output)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg w = { p, 100, 50, true, "writer-1" }, r = { p, 0, 10, false, "reader" };
	/* a program that does not use safemap: a classic POSIX write lock */
	struct tu_klock_arg pa = { p, 'p', 3000, 100, true };
	struct tu_child a, b, c;
	char out[8192];

	find_lockctl();
	tu_spawn_ready(&a, tu_holder, &w);
	tu_spawn_ready(&b, tu_holder, &r);
	tu_spawn_ready(&c, tu_klocker, &pa);

	ck_assert_int_eq(runf(out, sizeof(out), "list --raw --noheadings -o START,END,SIZE,MODE,STATE,TAG,TYPE --bytes %s", p), 0);
	ck_assert_str_eq(out, "100 149 50 WRITE held writer-1 SAFEMAP\n"
			      "0 9 10 READ held reader SAFEMAP\n"
			      "3000 3099 100 WRITE held  POSIX\n");
	/* PID and COMMAND name the holders */
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o PID,COMMAND,TAG %s", p), 0);
	char want[1024], comm[32];
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
	ck_assert_int_eq(runf(out, sizeof(out), "list -J -o START,TAG %s", p), 0);
	ck_assert_ptr_nonnull(strstr(out, "\"locks\": ["));
	ck_assert_ptr_nonnull(strstr(out, "\"start\": 100,"));
	ck_assert_ptr_nonnull(strstr(out, "\"tag\": \"writer-1\""));

	/* check: exit 1 and who; exit 0 when free */
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 120 5 r", p), 1);
	ck_assert_ptr_nonnull(strstr(out, "tag \"writer-1\""));
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 5 1 r", p), 0);
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 5 1 w", p), 1);
	/* -v says who answered; -J: one object, holders typed */
	ck_assert_int_eq(runf(out, sizeof(out), "check -v %s 5 1 r", p), 0);
	ck_assert_str_eq(out, "authority: kernel (F_OFD_GETLK on the data file)\nfree\n");
	ck_assert_int_eq(runf(out, sizeof(out), "check -J %s 120 5 r", p), 1);
	ck_assert_msg(json_valid(out), "invalid JSON:\n%s", out);
	ck_assert_ptr_nonnull(strstr(out, "\"authority\": \"kernel\""));
	ck_assert_ptr_nonnull(strstr(out, "\"free\": false"));
	ck_assert_ptr_nonnull(strstr(out, "\"tag\": \"writer-1\", \"type\": \"SAFEMAP\", \"mode\": \"WRITE\", \"start\": 100, \"end\": 149}"));
	ck_assert_ptr_null(strstr(out, "unexcluded"));
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 3050 1 r", p), 1);
	snprintf(want, sizeof(want), "held by pid %d (%s): POSIX WRITE 3000-3099 (without safemap)\n", (int)c.pid,
		 comm);
	ck_assert_str_eq(out, want);
	/* every holder in the way, each with pid and command */
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 0 4000 w", p), 1);
	snprintf(want, sizeof(want),
		 "held by pid %d (%s) tag \"writer-1\": WRITE 100-149\n"
		 "held by pid %d (%s) tag \"reader\": READ 0-9\n"
		 "held by pid %d (%s): POSIX WRITE 3000-3099 (without safemap)\n",
		 (int)a.pid, comm, (int)b.pid, comm, (int)c.pid, comm);
	ck_assert_str_eq(out, want);

	/* kill the writer: stale, then reaped */
	kill(a.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&a), 128 + SIGKILL);
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o START,STATE,TYPE %s", p), 0);
	ck_assert_str_eq(out, "100 stale SAFEMAP\n0 held SAFEMAP\n3000 held POSIX\n");
	ck_assert_int_eq(runf(out, sizeof(out), "reap --dry-run %s", p), 0);
	ck_assert_str_eq(out, "would reap 1 stale entry\n");
	ck_assert_int_eq(runf(out, sizeof(out), "reap %s", p), 0);
	ck_assert_str_eq(out, "reaped 1 stale entry\n");
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o START,STATE %s", p), 0);
	ck_assert_str_eq(out, "0 held\n3000 held\n");
	ck_assert_int_eq(runf(out, sizeof(out), "info %s", p), 0);
	ck_assert_ptr_nonnull(strstr(out, "1 held, 0 stale"));
	ck_assert_ptr_nonnull(strstr(out, "(consistent)"));

	tu_release(&b, &c, NULL);
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
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 0 100 w", p), 0);
	/* conflict: exit 1, holder named */
	ck_assert_int_eq(runf(out, sizeof(out), "hold %s 0 100 w -t outer -- %s hold %s 50 1 r -- true", p, lockctl, p), 1);
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
		"list --bogus",
		"list -o",
		"list --output",
		"list -p x %s",
		"list --json=1 %s",
		"check -x %s 0 1 r",
		"reap --dry-run",
		"hold -t",
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
	ck_assert_int_eq(run(out, sizeof(out), "list -H"), 0);
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
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 0 1 r", p), 0);
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
	char tp[PATH_MAX + 16], out[4096];
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
	ck_assert_int_eq(runf(out, sizeof(out), "reap %s", p), 0);
	ck_assert_str_eq(out, "reaped 16384 stale entries\n");
	ck_assert_int_eq(runf(out, sizeof(out), "info %s", p), 0);
	ck_assert_msg(strstr(out, "0 held, 0 stale, 0 changing, 0 invalid") != NULL, "%s", out);
}
END_TEST

/* ---- issue 17: lockctl at lslocks grade ---------------------------------- */

/* A strict JSON syntax check (RFC 8259), enough to catch a bare word. */
static const char *js_value(const char *p);

static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

static const char *js_string(const char *p)
{
	if (*p != '"')
		return NULL;
	for (p++; *p && *p != '"'; p++) {
		if (*p == '\\' && !*++p)
			return NULL;
		if ((unsigned char)*p < 0x20)
			return NULL;
	}
	return *p == '"' ? p + 1 : NULL;
}

static const char *js_digits(const char *p)
{
	if (*p < '0' || *p > '9')
		return NULL;
	while (*p >= '0' && *p <= '9')
		p++;
	return p;
}

static const char *js_number(const char *p)
{
	if (*p == '-')
		p++;
	if (!(p = js_digits(p)))
		return NULL;
	if (*p == '.' && !(p = js_digits(p + 1)))
		return NULL;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		p = js_digits(p);
	}
	return p;
}

static const char *js_value(const char *p)
{
	p = js_ws(p);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		p = js_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				if (!(p = js_string(js_ws(p))))
					return NULL;
				p = js_ws(p);
				if (*p++ != ':')
					return NULL;
			}
			if (!(p = js_value(p)))
				return NULL;
			p = js_ws(p);
			if (*p == ',') {
				p++;
				continue;
			}
			return *p == close ? p + 1 : NULL;
		}
	}
	if (*p == '"')
		return js_string(p);
	if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4))
		return p + 4;
	if (!strncmp(p, "false", 5))
		return p + 5;
	return js_number(p);
}

static bool json_valid(const char *s)
{
	const char *p = js_value(s);
	return p && !*js_ws(p);
}

/* Valid JSON whatever the locks: END of a lock to end of file is null,
 * never the bare word EOF; each column has its JSON type. */
START_TEST(json_is_valid_with_typed_columns)
{
	const char *p = tu_tmpfile(4 * PG);
	/* the OFD lock runs to EOF (a null end): a read lock, as a write lock
	 * there would also cover the safemap opener's mark and refuse its open */
	struct tu_klock_arg fa = { p, 'f', 0, 0, true }, oa = { p, 'o', 1000, 0, false };
	struct tu_holder_arg w = { p, 100, 50, true, "writer-1" };
	struct tu_child f, o, h;
	char out[16384], want[1024];

	find_lockctl();
	tu_spawn_ready(&f, tu_klocker, &fa);
	tu_spawn_ready(&o, tu_klocker, &oa);
	tu_spawn_ready(&h, tu_holder, &w);

	ck_assert_int_eq(runf(out, sizeof(out), "list -J --output-all %s", p), 0);
	ck_assert_msg(json_valid(out), "invalid JSON:\n%s", out);
	ck_assert_ptr_null(strstr(out, "EOF"));
	ck_assert_int_eq(runf(out, sizeof(out), "list --json --bytes -o TYPE,START,END,SIZE,PID,M,TAG %s", p), 0);
	ck_assert_msg(json_valid(out), "invalid JSON:\n%s", out);
	const char *rows[3][2] = {
		{ "SAFEMAP", "\"start\": 100,\n         \"end\": 149,\n         \"size\": 50,\n         \"pid\": %d,\n"
			     "         \"m\": false,\n         \"tag\": \"writer-1\"" },
		{ "FLOCK", "\"start\": 0,\n         \"end\": null,\n         \"size\": null,\n         \"pid\": %d,\n"
			   "         \"m\": false,\n         \"tag\": null" },
		{ "OFDLCK", "\"start\": 1000,\n         \"end\": null,\n         \"size\": null,\n         \"pid\": %d,\n"
			    "         \"m\": false,\n         \"tag\": null" },
	};
	pid_t pids[3] = { h.pid, f.pid, o.pid };
	for (int i = 0; i < 3; i++) {
		int n = snprintf(want, sizeof(want), "\"type\": \"%s\",\n         ", rows[i][0]);
		snprintf(want + n, sizeof(want) - (size_t)n, rows[i][1], (int)pids[i]);
		ck_assert_msg(strstr(out, want) != NULL, "no\n%s\nin\n%s", want, out);
	}
	/* text keeps EOF; SIZE as lslocks prints it */
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o TYPE,START,END,SIZE %s", p), 0);
	ck_assert_msg(strstr(out, "SAFEMAP 100 149 50B\n") && strstr(out, "FLOCK 0 EOF \n") &&
			      strstr(out, "OFDLCK 1000 EOF \n"),
		      "%s", out);

	tu_release(&f, &o, &h, NULL);
}
END_TEST

/* Options after the subcommand (kmod style), -V, excl[], one-line errors
 * with "Try 'lockctl ... --help'". */
START_TEST(options_after_the_command)
{
	const char *p = tu_tmpfile(PG);
	struct tu_klock_arg pa = { p, 'p', 4096, 8192, false };
	struct tu_child c;
	char out[4096], args[ARGS_MAX];

	find_lockctl();
	tu_spawn_ready(&c, tu_klocker, &pa);
	const char *forms[] = { "list -n -r --output=START,SIZE %s", "list -nr -oSTART,SIZE %s",
				"list --noheadings --raw -o START,SIZE %s", "list %s -n -r -o START,SIZE",
				"--table-dir /nonexistent list -nr -o START,SIZE %s" };
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		snprintf(args, sizeof(args), forms[i], p);
		/* /proc/locks comes a read(2) at a time, and locks that other
		 * tests take and drop by the thousand meanwhile shift it: a
		 * line can be skipped by every pass of one run (lockctl(1),
		 * NOTES).  Another run then shows it. */
		for (int tries = 0; tries < 3; tries++) {
			ck_assert_msg(run(out, sizeof(out), args) == 0, "'%s': %s", args, out);
			if (*out)
				break;
		}
		ck_assert_msg(strcmp(out, "4096 8K\n") == 0, "'%s': %s", args, out);
	}
	ck_assert_int_eq(run(out, sizeof(out), "list -H"), 0);
	ck_assert_ptr_nonnull(strstr(out, "BLOCKER"));
	ck_assert_int_eq(run(out, sizeof(out), "list --help"), 0);
	ck_assert_ptr_nonnull(strstr(out, "--noinaccessible"));
	ck_assert_int_eq(run(out, sizeof(out), "check --help"), 0);
	ck_assert_int_eq(run(out, sizeof(out), "hold -h"), 0);
	ck_assert_int_eq(run(out, sizeof(out), "help"), 0);
	ck_assert_ptr_nonnull(strstr(out, "Commands:"));
	ck_assert_int_eq(run(out, sizeof(out), "-V"), 0);
	ck_assert_str_eq(out, "lockctl from safemap " PACKAGE_VERSION "\n");
	ck_assert_int_eq(run(out, sizeof(out), "--version"), 0);
	ck_assert_int_eq(runf(out, sizeof(out), "list -J -r %s", p), 2);
	ck_assert_str_eq(out, "lockctl: mutually exclusive arguments: --json --raw. "
			      "Try 'lockctl list --help' for more information.\n");
	ck_assert_int_eq(run(out, sizeof(out), "list -Q"), 2);
	ck_assert_str_eq(out, "lockctl: invalid option -- 'Q'. Try 'lockctl list --help' for more information.\n");
	ck_assert_int_eq(run(out, sizeof(out), "frob"), 2);
	ck_assert_str_eq(out, "lockctl: unknown command 'frob'. Try 'lockctl --help' for more information.\n");
	tu_release(&c, NULL);
}
END_TEST

/* What is true, for paths that are not lockable data files. */
START_TEST(errors_say_what_is_wrong)
{
	const char *p = tu_tmpfile(PG);
	char out[4096], args[ARGS_MAX], want[PATH_MAX + 128], dir[PATH_MAX];

	find_lockctl();
	snprintf(dir, sizeof(dir), "%s", p);
	*strrchr(dir, '/') = '\0';
	const struct {
		const char *args, *path, *msg;
	} cases[] = {
		{ "list /dev/null", "/dev/null", "not a regular file" },
		{ "check /dev/null 0 1 r", "/dev/null", "not a regular file" },
		{ "info /dev/null", "/dev/null", "not a regular file" },
		{ "list %s", dir, "Is a directory" },
		{ "check %s 0 1 w", dir, "Is a directory" },
		{ "info %s", NULL, "no lock table (no safemap user has opened the file)" },
		{ "reap %s", NULL, "no lock table (no safemap user has opened the file)" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(args, sizeof(args), cases[i].args, cases[i].path ? cases[i].path : p);
		ck_assert_msg(run(out, sizeof(out), args) == 3, "'%s': %s", args, out);
		if (cases[i].path)
			snprintf(want, sizeof(want), "lockctl: %s: %s\n", cases[i].path, cases[i].msg);
		else
			snprintf(want, sizeof(want), "lockctl: %s.smlock: %s\n", p, cases[i].msg);
		ck_assert_msg(strcmp(out, want) == 0, "'%s': %s", args, out);
	}
	/* a file without a table lists its kernel locks (none): not an error */
	ck_assert_int_eq(runf(out, sizeof(out), "list -n %s", p), 0);
	ck_assert_str_eq(out, "");
}
END_TEST

/* More kernel locks than any fixed array held (kl[4096]): all listed. */
static int many_locks(void *arg, int in, int out)
{
	const char *p = arg;
	int fd = open(p, O_RDWR | O_CLOEXEC);
	char buf[8];

	for (int i = 0; i < 5000; i++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2 * i, .l_len = 1 };
		if (fcntl(fd, F_SETLK, &fl) < 0) {
			tu_send(out, "%d", -errno);
			return 1;
		}
	}
	tu_send(out, "0");
	tu_recv(in, buf, sizeof(buf));
	return 0;
}

START_TEST(thousands_of_kernel_locks)
{
	const char *p = tu_tmpfile(4 * PG);
	static char out[1 << 20];
	struct tu_child c;

	find_lockctl();
	tu_spawn_ready(&c, many_locks, (void *)p);
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o START %s", p), 0);
	int lines = 0;
	for (const char *q = out; (q = strchr(q, '\n')); q++)
		lines++;
	ck_assert_int_eq(lines, 5000);
	tu_release(&c, NULL);
}
END_TEST

/* Blocked kernel waiters with their BLOCKER; INODE, MAJ:MIN, M; -p PID;
 * a foreign OFD lock with its real owner (/proc/PID/fdinfo). */
START_TEST(waiters_blockers_and_owners)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_klock_arg ha = { p, 'p', 0, 100, true }, wa = { p, 'w', 50, 10, true }, oa = { p, 'o', 2000, 10, false };
	struct tu_child h, w, o;
	struct stat st;
	char out[8192], args[ARGS_MAX], want[1024], comm[32];

	find_lockctl();
	tu_comm(comm, sizeof(comm));
	ck_assert_int_eq(stat(p, &st), 0);
	tu_spawn_ready(&h, tu_klocker, &ha);
	tu_spawn_ready(&o, tu_klocker, &oa);
	tu_spawn_ready(&w, tu_klocker, &wa);
	/* the waiter told us it is about to block: wait until it has */
	snprintf(args, sizeof(args), "list -r -n -o STATE %s", p);
	for (int i = 0; i < 2000 && (run(out, sizeof(out), args), !strstr(out, "waiting")); i++)
		usleep(1000);
	ck_assert_msg(strstr(out, "waiting") != NULL, "the waiter never showed: %s", out);
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o PID,COMMAND,TYPE,MODE,STATE,START,END,BLOCKER %s", p), 0);
	snprintf(want, sizeof(want), "%d %s POSIX WRITE held 0 99 \n", (int)h.pid, comm);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "%d %s POSIX WRITE waiting 50 59 %d\n", (int)w.pid, comm, (int)h.pid);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in\n%s", want, out);
	/* OFD locks say pid -1 in /proc/locks: the owner comes from fdinfo */
	snprintf(want, sizeof(want), "%d %s OFDLCK READ held 2000 2009 \n", (int)o.pid, comm);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in\n%s", want, out);
	/* -p PID; INODE, MAJ:MIN, M */
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -p %d -o PID,INODE,MAJ:MIN,M %s", (int)o.pid, p), 0);
	snprintf(want, sizeof(want), "%d %llu %u:%u 0\n", (int)o.pid, (unsigned long long)st.st_ino,
		 major(st.st_dev), minor(st.st_dev));
	ck_assert_str_eq(out, want);
	/* -u and -i are accepted (lslocks) */
	ck_assert_int_eq(runf(out, sizeof(out), "list -u -i -r -n -p %d -o PID %s", (int)o.pid, p), 0);
	snprintf(want, sizeof(want), "%d\n", (int)o.pid);
	ck_assert_str_eq(out, want);

	tu_release(&h, NULL);
	tu_release(&w, NULL);
	tu_release(&o, NULL);
}
END_TEST

/* A small XML well-formedness check: nested tags match, attributes are
 * quoted, text holds no raw '<' and only the five entities.  Counts the
 * elements <rect class="CLS" (cls NULL: none). */
static bool xml_ok(const char *s, const char *cls, int *count)
{
	char stack[32][32];
	int depth = 0;
	bool root = false;
	char want[64];

	*count = 0;
	snprintf(want, sizeof(want), "<rect class=\"%s\"", cls ? cls : "");
	if (!strncmp(s, "<?xml", 5) && !(s = strstr(s, "?>")))
		return false;
	s += 2;
	while (*s) {
		if (*s == '&') {
			if (strncmp(s, "&amp;", 5) && strncmp(s, "&lt;", 4) && strncmp(s, "&gt;", 4) &&
			    strncmp(s, "&quot;", 6) && strncmp(s, "&apos;", 6))
				return false;
			s++;
			continue;
		}
		if (*s != '<') {
			if (*s == '>')
				return false;
			s++;
			continue;
		}
		if (cls && !strncmp(s, want, strlen(want)))
			(*count)++;
		bool closing = s[1] == '/';
		const char *name = s + 1 + closing, *q = name;
		while (*q && *q != ' ' && *q != '>' && *q != '/')
			q++;
		size_t len = (size_t)(q - name);
		if (!len || len >= 32)
			return false;
		/* attributes: name="value" pairs up to > or /> */
		while (*q && *q != '>' && !(q[0] == '/' && q[1] == '>')) {
			if (*q == '"') {
				const char *e = strchr(q + 1, '"');
				if (!e || memchr(q + 1, '<', (size_t)(e - q - 1)))
					return false;
				q = e;
			}
			q++;
		}
		if (!*q)
			return false;
		bool selfclose = *q == '/';
		if (closing) {
			if (!depth || strlen(stack[depth - 1]) != len || strncmp(stack[depth - 1], name, len))
				return false;
			depth--;
		} else if (!selfclose) {
			if (depth == 32 || (!depth && root))
				return false;
			root = true;
			memcpy(stack[depth], name, len);
			stack[depth++][len] = '\0';
		}
		s = q + (selfclose ? 2 : 1);
	}
	return root && depth == 0;
}

/* The SVG file lockctl map --svg wrote, into doc (NUL-terminated); the
 * file is removed. */
static void read_svg(const char *svg, char *doc, size_t size)
{
	int fd = open(svg, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ssize_t n = read(fd, doc, size - 1);
	close(fd);
	unlink(svg);
	ck_assert_int_gt(n, 0);
	doc[n] = '\0';
}

/* How many times needle stands in s. */
static int occurrences(const char *s, const char *needle)
{
	int n = 0;

	for (; (s = strstr(s, needle)); s += strlen(needle))
		n++;
	return n;
}

/* run() until out draws a lock the test holds (its row shown `times`
 * times), at most 50 runs; returns the last exit status.  The lock is in
 * the kernel before its holder says so, but lockctl reads /proc/locks a
 * page per read(2): other processes' lock traffic between two reads shifts
 * lines, and on a loaded machine a line can be skipped by every pass
 * lockctl makes (kernel_locks() says so).  The picture is then drawn again
 * instead of failing the golden comparison. */
static int run_showing(char *out, size_t n, const char *args, const char *row, int times)
{
	int rc = 0;

	for (int i = 0; i < 50; i++) {
		if ((rc = run(out, n, args)) != 0 || occurrences(out, row) >= times)
			break;
	}
	return rc;
}

/* lockctl map: golden picture at a fixed width, without colour; then with
 * colour forced, the same glyphs wrapped in escape sequences; lockctl watch
 * draws it again every second. */
START_TEST(map_and_watch_golden_picture)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg w = { p, 100, 50, true, "writer-1" }, r = { p, 8000, 10, false, "reader" },
			     d = { p, 4000, 100, false, "doomed" };
	struct tu_klock_arg ka = { p, 'p', 12000, 1000, true };
	struct tu_child a, b, c, k;
	char out[8192], args[ARGS_MAX], want[4096], comm[32];
	const char *krow = " K 12000-12999           WRITE held    pid "; /* the POSIX lock's row */

	find_lockctl();
	tu_comm(comm, sizeof(comm));
	tu_spawn_ready(&a, tu_holder, &w);
	tu_spawn_ready(&b, tu_holder, &r);
	tu_spawn_ready(&c, tu_holder, &d);
	kill(c.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&c), 128 + SIGKILL);
	tu_spawn_ready(&k, tu_klocker, &ka);

	snprintf(args, sizeof(args), "map --width 40 --color=never %s", p);
	ck_assert_int_eq(run_showing(out, sizeof(out), args, krow, 1), 0);
	snprintf(want, sizeof(want),
		 "%s: 16384 bytes, 38 cells of ~432 bytes\n"
		 "[#........?........=........KKKK.......]\n"
		 " 0                                16383\n"
		 " # write  K kernel lock without safemap  = read  ~ waiting  ? stale  . free\n"
		 " # 100-149               WRITE held    pid %d (%s) tag \"writer-1\"\n"
		 " ? 4000-4099             READ  stale   pid %d (%s) tag \"doomed\"\n"
		 " = 8000-8009             READ  held    pid %d (%s) tag \"reader\"\n"
		 " K 12000-12999           WRITE held    pid %d (%s) POSIX\n",
		 p, (int)a.pid, comm, (int)c.pid, comm, (int)b.pid, comm, (int)k.pid, comm);
	ck_assert_str_eq(out, want);
	ck_assert_int_eq(runf(out, sizeof(out), "map -w 40 --color=always %s", p), 0);
	ck_assert_ptr_nonnull(strstr(out, "[\033[1;31m#\033[0m........\033[2m?\033[0m"));
	ck_assert_int_eq(runf(out, sizeof(out), "map -w 5 %s", p), 2);
	/* --svg: the same picture as SVG, parsed back */
	char svg[PATH_MAX + 16];
	static char doc[65536];
	snprintf(svg, sizeof(svg), "%s.svg", p);
	snprintf(args, sizeof(args), "map -w 40 --color=never --svg %s %s", svg, p);
	ck_assert_int_eq(run_showing(out, sizeof(out), args, krow, 1), 0);
	ck_assert_str_eq(out, want);
	read_svg(svg, doc, sizeof(doc));
	ck_assert_ptr_nonnull(strstr(doc, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
	const char *classes[] = { "write", "read", "stale", "kernel", "waiting" };
	const int expect[] = { 1, 1, 1, 1, 0 };
	for (size_t i = 0; i < 5; i++) {
		int count;
		ck_assert_msg(xml_ok(doc, classes[i], &count), "not well-formed:\n%s", doc);
		ck_assert_msg(count == expect[i], "%d rects of class %s", count, classes[i]);
	}
	int dummy;
	ck_assert(!xml_ok("<svg><rect></svg>", NULL, &dummy)); /* the checker checks */
	ck_assert(!xml_ok("<svg>a & b</svg>", NULL, &dummy));
	/* watch: the same picture, redrawn (a blank line between frames
	 * when not on a terminal) */
	static char twice[16384];
	snprintf(args, sizeof(args), "watch --count 2 --width 40 --color=never %s", p);
	ck_assert_int_eq(run_showing(twice, sizeof(twice), args, krow, 2), 0);
	snprintf(out, sizeof(out), "%s\n%s", want, want);
	ck_assert_str_eq(twice, out);
	ck_assert_int_eq(runf(out, sizeof(out), "map --count 2 %s", p), 2);

	tu_release(&a, &b, &k, NULL);
}
END_TEST

/* run() as uid 65534 (nobody), which cannot read other processes' files. */
static int run_as_nobody(char *out, size_t n, const char *args)
{
	char cmd[ARGS_MAX + PATH_MAX + 128];

	snprintf(cmd, sizeof(cmd), "timeout -s KILL 30 setpriv --reuid=65534 --regid=65534 --clear-groups %s %s 2>&1",
		 lockctl, args);
	return tu_capture(out, n, cmd);
}

/* An unprivileged list says what it could not read (and -i hides it). */
START_TEST(unprivileged_list_says_what_it_missed)
{
	const char *p = tu_tmpfile(PG);
	struct tu_klock_arg ka = { p, 'o', 0, 10, true };
	struct tu_child k;
	static char out[1 << 20];

	find_lockctl();
	if (geteuid() != 0 || access("/usr/bin/setpriv", X_OK) != 0) {
		printf("SKIP unprivileged_list_says_what_it_missed: needs root and setpriv\n");
		return;
	}
	tu_spawn_ready(&k, tu_klocker, &ka); /* at least one lock the note is about */
	char cmd[ARGS_MAX];
	snprintf(cmd, sizeof(cmd), "setpriv --reuid=65534 --regid=65534 --clear-groups %s -V >/dev/null 2>&1",
		 lockctl);
	if (system(cmd) != 0) {
		printf("SKIP unprivileged_list_says_what_it_missed: uid 65534 cannot run %s\n", lockctl);
	} else {
		ck_assert_int_eq(run_as_nobody(out, sizeof(out), "list -r -n -o TYPE"), 0);
		ck_assert_msg(strstr(out, "lockctl: note: the open files of ") &&
				      strstr(out, " processes could not be read (not permitted)"),
			      "%.2000s", out);
		ck_assert_int_eq(run_as_nobody(out, sizeof(out), "list -i -r -n -o TYPE"), 0);
		ck_assert_ptr_null(strstr(out, "note:"));
	}
	tu_release(&k, NULL);
}
END_TEST

/* The bash completion script is generated from lockctl's own tables: it
 * parses, and completes commands, options, columns and check's r|w. */
START_TEST(completion_script)
{
	const char *p = tu_tmpfile(PG);
	char out[8192], script[PATH_MAX + 16], cmd[ARGS_MAX + 2 * PATH_MAX];

	find_lockctl();
	if (access("/bin/bash", X_OK) != 0) {
		printf("SKIP completion_script: no bash\n");
		return;
	}
	snprintf(script, sizeof(script), "%s.bash", p);
	ck_assert_int_eq(runf(out, sizeof(out), "completion bash > %s", script), 0);
	ck_assert_str_eq(out, "");
	static const char *const cases[][2] = {
		{ "lockctl li", "list" },
		{ "lockctl ''", "list check hold reap info log map watch completion help" },
		{ "lockctl -", "--table-dir -V --version -h --help" },
		{ "lockctl list --no", "--noheadings --notruncate --noinaccessible" },
		{ "lockctl list -o STA", "START STATE" },
		{ "lockctl list -o START,EN", "START,END" },
		{ "lockctl list --output +BLO", "+BLOCKER" },
		{ "lockctl --table-dir /tmp list --js", "--json" },
		{ "lockctl map --co", "--color" },
		{ "lockctl watch --co", "--color --count" },
		{ "lockctl check /x 0 1 ''", "r w" },
		{ "lockctl check -v /x 0 1 ''", "r w" },
		{ "lockctl check --", "--verbose --json --table-dir --help" },
		{ "lockctl hold -t T /x 0 1 w ''", "--" },
		{ "lockctl completion ''", "bash" },
		{ "lockctl log -", "-J --json -b --bytes -h --help" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(cmd, sizeof(cmd),
			 "/bin/bash -c 'source %s; COMP_WORDS=(%s); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); "
			 "_lockctl; echo \"${COMPREPLY[*]}\"' 2>&1",
			 script, cases[i][0]);
		/* the case strings hold single quotes: swap them for doubles */
		for (char *q = strstr(cmd, "COMP_WORDS=("); *q && *q != ')'; q++)
			if (*q == '\'')
				*q = '"';
		ck_assert_int_eq(tu_capture(out, sizeof(out), cmd), 0);
		char want[512];
		snprintf(want, sizeof(want), "%s\n", cases[i][1]);
		ck_assert_msg(strcmp(out, want) == 0, "%s: got '%s', want '%s'", cases[i][0], out, cases[i][1]);
	}
	unlink(script);
	ck_assert_int_eq(run(out, sizeof(out), "completion zsh"), 2);
}
END_TEST

/* A safemap waiter (SM_WAIT): listed as waiting, BLOCKER naming the pid
 * of the holder it waits for (JSON: a number). */
static int safemap_waiter(void *arg, int in, int out)
{
	sm_options o = { .size = sizeof(o), .wait_ns = SM_WAIT_FOREVER };
	sm_file *f;
	sm_slice *s;
	char buf[8];

	if (sm_open(arg, SM_RDWR, &o, &f) < 0)
		return 1;
	tu_send(out, "%d", sm_map_write(f, 10, 10, SM_WAIT, &s));
	tu_recv(in, buf, sizeof(buf));
	return sm_release(s) == 0 ? 0 : 1;
}

START_TEST(safemap_waiter_blocker)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg ha = { p, 0, 100, true, "holder" };
	struct tu_child h, w;
	char out[8192], args[ARGS_MAX], want[256];

	find_lockctl();
	tu_spawn_ready(&h, tu_holder, &ha);
	tu_spawn(&w, safemap_waiter, (void *)p);
	snprintf(args, sizeof(args), "list -r -n -o STATE %s", p);
	for (int i = 0; i < 5000 && (run(out, sizeof(out), args), !strstr(out, "waiting")); i++)
		sched_yield(); /* until the waiter's entry shows */
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o PID,TYPE,MODE,STATE,START,END,BLOCKER %s", p), 0);
	snprintf(want, sizeof(want), "%d SAFEMAP WRITE waiting 10 19 %d\n", (int)w.pid, (int)h.pid);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "%d SAFEMAP WRITE held 0 99 \n", (int)h.pid);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in\n%s", want, out);
	ck_assert_int_eq(runf(out, sizeof(out), "list -J -o STATE,BLOCKER %s", p), 0);
	snprintf(want, sizeof(want), "\"blocker\": %d", (int)h.pid);
	ck_assert_msg(strstr(out, want) != NULL, "no '%s' in\n%s", want, out);
	tu_send(h.to, "go");
	ck_assert_int_eq(tu_recv_int(w.from), 0); /* the waiter gets the region */
	tu_send(w.to, "go");
	ck_assert_int_eq(tu_wait(&w), 0);
	ck_assert_int_eq(tu_wait(&h), 0);
}
END_TEST

/* Table-authority mode (SPEC §12): the table decides, so check asks the
 * table (the kernel sees only the owners' fences); list hides the fence and
 * identity locks and flags plain fcntl readers (the fence does not exclude
 * them from table-mode writers); info counts owners, live and stale held
 * slots, and lists those foreign locks. */
START_TEST(table_mode_list_check_info)
{
	const char *p = tu_tmpfile(4 * PG);
	struct tu_holder_arg w = { p, 100, 50, true, "tw" }, r = { p, 0, 10, false, "tr" };
	struct tu_klock_arg ra = { p, 'p', 3000, 100, false };
	struct tu_child a, b, c;
	char out[8192], args[ARGS_MAX], want[512];

	setenv("SAFEMAP_TEST_MODE", "table", 1); /* tu_holder opens in table mode */
	TU_REQUIRE_MODE();
	find_lockctl();
	tu_spawn_ready(&a, tu_holder, &w);
	tu_spawn_ready(&b, tu_holder, &r);
	tu_spawn_ready(&c, tu_klocker, &ra); /* a plain fcntl reader: the fence lets it in */

	/* list: the holders from the table, the reader flagged, no fence rows */
	ck_assert_int_eq(runf(out, sizeof(out), "list --raw --noheadings -o START,END,SIZE,MODE,STATE,TAG,TYPE --bytes %s", p), 0);
	ck_assert_msg(strstr(out, "100 149 50 WRITE held tw SAFEMAP\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "0 9 10 READ held tr SAFEMAP\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "3000 3099 100 READ foreign-read  POSIX\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "OFDLCK") == NULL, "fence or identity listed as a holder:\n%s", out);
	{
		int rows = 0;
		for (const char *q = out; (q = strchr(q, '\n')); q++)
			rows++;
		ck_assert_msg(rows == 3, "not three rows:\n%s", out);
	}

	/* map: the fence is no region (it would stretch the bar to 2^62) */
	ck_assert_int_eq(runf(out, sizeof(out), "map --width 40 --color=never %s", p), 0);
	ck_assert_msg(strstr(out, ": 16384 bytes, 38 cells of ~432 bytes\n[#") != NULL, "%s", out);
	ck_assert_msg(strstr(out, " K 3000-3099             READ  foreign-read pid ") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "OFDLCK") == NULL, "%s", out);

	/* check asks the table: the fence over [0, 2^62) is nobody's hold */
	ck_assert_int_eq(runf(out, sizeof(out), "check -v %s 2000 10 w", p), 0);
	ck_assert_str_eq(out, "authority: table (table-authority mode: held slots of live owners)\nfree\n");
	/* the table cannot be read: no guess from the fence, status 3 */
	ck_assert_int_eq(runf(out, sizeof(out), "check --table-dir %s.none %s 2000 10 w", p, p), 3);
	ck_assert_msg(strstr(out, "owners are attached in table-authority mode, but ") != NULL, "%s", out);
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 120 5 r", p), 1);
	snprintf(want, sizeof(want), "held by pid %d (", (int)a.pid);
	ck_assert_msg(strstr(out, want) && strstr(out, "tag \"tw\": WRITE 100-149\n"), "%s", out);
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 5 1 r", p), 0);
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 5 1 w", p), 1);
	ck_assert_msg(strstr(out, "tag \"tr\": READ 0-9\n") != NULL, "%s", out);
	/* the plain reader does not stop a table-mode writer: free, with a
	 * note (from /proc/locks, which other tests' lock churn can make one
	 * run miss: lockctl(1), NOTES) */
	for (int tries = 0; tries < 3; tries++) {
		ck_assert_int_eq(runf(out, sizeof(out), "check %s 3050 1 w", p), 0);
		if (strstr(out, "table mode does not exclude it"))
			break;
	}
	ck_assert_msg(strstr(out, "free\n") && strstr(out, "table mode does not exclude it"), "%s", out);
	ck_assert_int_eq(runf(out, sizeof(out), "check -J %s 0 4000 w", p), 1);
	ck_assert_msg(json_valid(out), "invalid JSON:\n%s", out);
	ck_assert_ptr_nonnull(strstr(out, "\"authority\": \"table\""));
	ck_assert_ptr_nonnull(strstr(out, "\"free\": false"));
	ck_assert_ptr_nonnull(strstr(out, "\"tag\": \"tw\""));
	ck_assert_ptr_nonnull(strstr(out, "\"unexcluded\": ["));
	ck_assert_ptr_nonnull(strstr(out, "\"type\": \"POSIX\", \"mode\": \"READ\", \"start\": 3000, \"end\": 3099"));

	/* info: mode, owners, live/stale held slots, the fence, foreign locks */
	snprintf(args, sizeof(args), "info %s", p);
	/* the owner and identity counts come from /proc/locks, which a reader
	 * can see with lines skipped while other programs (the other test
	 * programs of a parallel make check) take and drop locks: ask again */
	for (int tries = 0;; tries++) {
		ck_assert_int_eq(run(out, sizeof(out), args), 0);
		if ((strstr(out, "owners:       2 attached in table mode\n") &&
		     strstr(out, "fence:        present over [0, 2^62), 2 identity locks")) ||
		    tries == 50)
			break;
		usleep(20000);
	}
	ck_assert_msg(strstr(out, "owners:       2 attached in table mode\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "held slots:   2 of live owners, 0 stale") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "fence:        present over [0, 2^62), 2 identity locks") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "foreign:      1 kernel lock on the data file") != NULL, "%s", out);
	snprintf(want, sizeof(want), "  pid %d (", (int)c.pid);
	ck_assert_msg(strstr(out, want) && strstr(out, "): POSIX READ 3000-3099 foreign-read\n"), "%s", out);
	ck_assert_msg(strstr(out, "kernel locks:") == NULL, "no kernel lock backs a slot here:\n%s", out);

	/* hold joins the owners in their mode (a kernel-mode opener would get
	 * EPROTO), and the table decides */
	ck_assert_int_eq(runf(out, sizeof(out), "hold %s 200 10 w -- true", p), 0);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(runf(out, sizeof(out), "hold %s 120 10 r -- true", p), 1);
	ck_assert_msg(strstr(out, "tag \"tw\"") != NULL, "%s", out);
	/* without PATH: the data file's holders, still no fence rows */
	{
		static char all[8 << 20];
		ck_assert_int_eq(run(all, sizeof(all), "list -r -n -o PATH,START,TAG,TYPE"), 0);
		snprintf(want, sizeof(want), "%s 100 tw SAFEMAP\n", p);
		ck_assert_msg(strstr(all, want) != NULL, "no '%s' in the list", want);
		snprintf(want, sizeof(want), "%s 0  OFDLCK\n", p);
		ck_assert_msg(strstr(all, want) == NULL, "the fence is listed: '%s'", want);
	}

	/* a dead writer's slot is stale: not in the way, counted as such */
	kill(a.pid, SIGKILL);
	ck_assert_int_eq(tu_wait(&a), 128 + SIGKILL);
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 120 5 w", p), 0);
	ck_assert_str_eq(out, "free\n");
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o START,STATE,TYPE %s", p), 0);
	ck_assert_msg(strstr(out, "100 stale SAFEMAP\n") != NULL, "%s", out);
	snprintf(args, sizeof(args), "info %s", p);
	for (int tries = 0;; tries++) { /* /proc/locks, as above */
		ck_assert_int_eq(run(out, sizeof(out), args), 0);
		if (strstr(out, "owners:       1 attached in table mode\n") || tries == 50)
			break;
		usleep(20000);
	}
	ck_assert_msg(strstr(out, "owners:       1 attached in table mode\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "held slots:   1 of live owners, 1 stale") != NULL, "%s", out);

	tu_release(&b, &c, NULL);
	/* nobody attached: kernel mode answers again */
	ck_assert_int_eq(runf(out, sizeof(out), "check -v %s 0 10 w", p), 0);
	ck_assert_str_eq(out, "authority: kernel (F_OFD_GETLK on the data file)\nfree\n");
}
END_TEST

/* ---- issue 27: lockctl of an SQLite database ------------------------------ */

/* What an SQLite connection through the safemap VFS holds: RESERVED and
 * SHARED sm_lock ranges at 1 GiB, past the end of the database, and a
 * SM_NOLOCK coordination mapping tagged SHM-0; held until told. */
static int sqlite_like(void *arg, int in, int out)
{
	const char *p = arg;
	sm_file *f;
	sm_range *res, *sh;
	sm_slice *shm;
	char buf[8];
	int rc;

	if ((rc = sm_open(p, SM_RDWR, NULL, &f)) < 0 ||
	    (rc = sm_lock(f, 1ull << 30, 1, SM_LOCK_WRITE, "RESERVED", &res)) < 0 ||
	    (rc = sm_lock(f, (1ull << 30) + 2, 510, SM_LOCK_READ, "SHARED", &sh)) < 0 ||
	    (rc = sm_map_write(f, 0, 4096, SM_NOLOCK, &shm)) < 0 || (rc = sm_slice_tag(shm, "SHM-0")) < 0) {
		tu_send(out, "%d", rc);
		return 1;
	}
	tu_send(out, "0");
	tu_recv(in, buf, sizeof(buf));
	return sm_release(shm) == 0 && sm_unlock(sh) == 0 && sm_unlock(res) == 0 && sm_close(f) == 0 ? 0 : 1;
}

/* Lock bytes at 1 GiB used to stretch the bar to 28 MB a cell: the file
 * and both locks shared cells.  The empty stretch past the end of the
 * file is left out (one '/' cell), so each region shows; the SVG leaves
 * it out too. */
START_TEST(map_leaves_out_empty_bytes_past_eof)
{
	const char *p = tu_tmpfile(2 * PG);
	struct tu_child c;
	char out[8192], want[4096], comm[32], svg[PATH_MAX + 16];
	static char doc[65536];

	find_lockctl();
	tu_comm(comm, sizeof(comm));
	tu_spawn_ready(&c, sqlite_like, (void *)p);
	ck_assert_int_eq(runf(out, sizeof(out), "map -w 40 --color=never %s", p), 0);
	snprintf(want, sizeof(want),
		 "%s: 8192 bytes, 38 cells of ~236 bytes, 1073733632 empty bytes past the end left out (/)\n"
		 "[.................................../#=]\n"
		 " 0                           1073742335\n"
		 " # write  K kernel lock without safemap  = read  ~ waiting  ? stale  . free  / left out\n"
		 " # 1073741824-1073741824 WRITE held    pid %d (%s) tag \"RESERVED\"\n"
		 " = 1073741826-1073742335 READ  held    pid %d (%s) tag \"SHARED\"\n",
		 p, (int)c.pid, comm, (int)c.pid, comm);
	ck_assert_str_eq(out, want);
	/* SVG: the regions after the gap, not squeezed into its last pixel */
	snprintf(svg, sizeof(svg), "%s.svg", p);
	ck_assert_int_eq(runf(out, sizeof(out), "map -w 40 --color=never --svg %s %s", svg, p), 0);
	read_svg(svg, doc, sizeof(doc));
	int count;
	ck_assert_msg(xml_ok(doc, "gap", &count) && count == 1, "%d gaps:\n%s", count, doc);
	ck_assert_msg(xml_ok(doc, "read", &count) && count == 1, "%d reads:\n%s", count, doc);
	/* 38 cells of 8 pixels from x = 10: the read lock's second cell */
	const char *r = strstr(doc, "<rect class=\"read\" x=\"");
	ck_assert_ptr_nonnull(r);
	double x = atof(r + strlen("<rect class=\"read\" x=\""));
	ck_assert_msg(x > 10 + 36 * 8 && x < 10 + 38 * 8, "read lock drawn at x %.2f:\n%s", x, doc);
	tu_release(&c, NULL);
}
END_TEST

/* SM_NOLOCK coordination mappings (SQLite's SHM-0, ...) are listed,
 * unlocked, as contrib/sqlite/README says; they hold nothing, so check
 * finds their bytes free and map draws no region for them. */
START_TEST(list_shows_unlocked_mappings)
{
	const char *p = tu_tmpfile(2 * PG);
	struct tu_child c;
	char out[8192];

	find_lockctl();
	tu_spawn_ready(&c, sqlite_like, (void *)p);
	ck_assert_int_eq(runf(out, sizeof(out), "list -r -n -o START,END,MODE,STATE,TAG,TYPE %s", p), 0);
	ck_assert_msg(strstr(out, "0 4095 WRITE unlocked SHM-0 SAFEMAP\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "1073741824 1073741824 WRITE held RESERVED SAFEMAP\n") != NULL, "%s", out);
	ck_assert_int_eq(runf(out, sizeof(out), "list -J -o STATE,TAG %s", p), 0);
	ck_assert_msg(json_valid(out) && strstr(out, "\"state\": \"unlocked\",\n         \"tag\": \"SHM-0\""), "%s",
		      out);
	ck_assert_int_eq(runf(out, sizeof(out), "check %s 0 10 w", p), 0);
	ck_assert_str_eq(out, "free\n");
	ck_assert_int_eq(runf(out, sizeof(out), "map -w 40 --color=never %s", p), 0);
	ck_assert_msg(strstr(out, "SHM-0") == NULL, "%s", out);
	tu_release(&c, NULL);
}
END_TEST

/* check -J gives the path absolute, as list -J does. */
START_TEST(check_json_path_is_absolute)
{
	const char *p = tu_tmpfile(PG);
	char out[8192], want[PATH_MAX + 32], *abs = realpath(p, NULL), *dir = strdup(p);

	find_lockctl();
	ck_assert_ptr_nonnull(abs);
	*strrchr(dir, '/') = '\0';
	ck_assert_int_eq(chdir(dir), 0);
	snprintf(want, sizeof(want), "\"path\": \"%s\"", abs);
	ck_assert_int_eq(runf(out, sizeof(out), "check -J %s 0 1 r", strrchr(p, '/') + 1), 0);
	ck_assert_msg(json_valid(out) && strstr(out, want), "no '%s' in\n%s", want, out);
	ck_assert_int_eq(runf(out, sizeof(out), "list -J -o PATH %s", strrchr(p, '/') + 1), 0);
	ck_assert_msg(json_valid(out), "%s", out); /* list -J: no row, as no lock */
	free(abs);
	free(dir);
}
END_TEST

/* lockctl log on a real log: appended, trimmed, one record bound to a
 * buffered slice of a data file; the retained range, the allocated bytes
 * (the trimmed space given back) and the binding as the library left them. */
START_TEST(log_shows_retained_range)
{
	const char *data = tu_tmpfile(4 * PG);
	char path[PATH_MAX + 8], out[16384], want[PATH_MAX + 256];
	enum { NREC = 30000, TRIM_AT = 25000 };
	static uint64_t lsn[NREC];
	unsigned char rec[100];
	uint64_t bound, committed;
	sm_log *l;
	sm_file *f;
	sm_slice *s;
	struct stat st, dst;

	find_lockctl();
	snprintf(path, sizeof(path), "%s.log", data);
	ck_assert_int_eq(sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l), 0);
	/* a fresh log: nothing retained, nothing trimmed */
	ck_assert_int_eq(runf(out, sizeof(out), "log -b %s", path), 0);
	ck_assert_msg(strstr(out, "first LSN:    4096 (") && strstr(out, "committed:    4096 (") &&
			      strstr(out, "retained:     0 in [4096, 4096)") &&
			      strstr(out, "bindings:     0 held, 0 idle"),
		      "%s", out);
	for (unsigned i = 0; i < NREC; i++) {
		memset(rec, (int)i, sizeof(rec));
		ck_assert_int_eq(sm_log_append(l, rec, sizeof(rec), &lsn[i]), 0);
		if (i % 1000 == 999)
			ck_assert_int_eq(sm_log_commit(l), 0);
	}
	ck_assert_int_eq(sm_log_trim(l, lsn[TRIM_AT]), 0);
	/* a buffered slice of the data file bound to one more record */
	ck_assert_int_eq(tu_open(data, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, PG, PG, SM_BUFFERED, &s), 0);
	ck_assert_int_eq(sm_put_u8(s, 0, 7), 0);
	ck_assert_int_eq(sm_log_append(l, rec, sizeof(rec), &bound), 0);
	ck_assert_int_eq(sm_slice_set_lsn(s, l, bound), 0);
	ck_assert_int_eq(sm_log_commit(l), 0);
	committed = bound + ((8 + sizeof(rec) + 7) & ~(size_t)7);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(stat(data, &dst), 0);
	/* the space below the trim point was given back */
	ck_assert_uint_le((uint64_t)st.st_blocks * 512,
			  (uint64_t)st.st_size - ((lsn[TRIM_AT] & ~(uint64_t)4095) - 4096) + 65536);

	ck_assert_int_eq(runf(out, sizeof(out), "log --bytes %s", path), 0);
	snprintf(want, sizeof(want), "log:          %s\n", path);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "first LSN:    %llu (", (unsigned long long)lsn[TRIM_AT]);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "committed:    %llu (", (unsigned long long)committed);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "appended:     %llu (0 bytes", (unsigned long long)committed);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "retained:     %llu in [%llu, %llu)",
		 (unsigned long long)(committed - lsn[TRIM_AT]), (unsigned long long)lsn[TRIM_AT],
		 (unsigned long long)committed);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "trimmed:      %llu below the first LSN, given back up to %llu\n",
		 (unsigned long long)(lsn[TRIM_AT] - 4096), (unsigned long long)(lsn[TRIM_AT] & ~(uint64_t)4095));
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "on disk:      %llu allocated, file size %llu (",
		 (unsigned long long)st.st_blocks * 512, (unsigned long long)st.st_size);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	ck_assert_msg(strstr(out, "bindings:     1 held, 0 idle"), "%s", out);
	snprintf(want, sizeof(want), ": held, owner pid %d (alive), data file dev %llx inode %llu, LSNs %llu-%llu",
		 (int)getpid(), (unsigned long long)dst.st_dev, (unsigned long long)dst.st_ino,
		 (unsigned long long)bound, (unsigned long long)bound);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);

	ck_assert_int_eq(runf(out, sizeof(out), "log -J %s", path), 0);
	ck_assert_msg(json_valid(out), "%s", out);
	snprintf(want, sizeof(want), "\"first\": %llu,", (unsigned long long)lsn[TRIM_AT]);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	snprintf(want, sizeof(want), "\"allocated\": %llu,", (unsigned long long)st.st_blocks * 512);
	ck_assert_msg(strstr(out, want), "no '%s' in\n%s", want, out);
	ck_assert_msg(strstr(out, "\"state\": \"held\"") && strstr(out, "\"alive\": true"), "%s", out);

	/* not a log: one line, status 3 */
	ck_assert_int_eq(runf(out, sizeof(out), "log %s", data), 3);
	ck_assert_msg(strstr(out, "not a safemap log") && strchr(out, '\n') == out + strlen(out) - 1, "%s", out);
	ck_assert_int_eq(run(out, sizeof(out), "log"), 2);

	ck_assert_int_eq(sm_release(s), 0); /* dirty, bound: the binding goes */
	ck_assert_int_eq(runf(out, sizeof(out), "log %s", path), 0);
	ck_assert_msg(strstr(out, "bindings:     0 held"), "%s", out);
	ck_assert_int_eq(sm_close(f), 0);
	ck_assert_int_eq(sm_log_close(l), 0);
	unlink(path);
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
	tcase_add_test(tc, json_is_valid_with_typed_columns);
	tcase_add_test(tc, options_after_the_command);
	tcase_add_test(tc, errors_say_what_is_wrong);
	tcase_add_test(tc, thousands_of_kernel_locks);
	tcase_add_test(tc, waiters_blockers_and_owners);
	tcase_add_test(tc, safemap_waiter_blocker);
	tcase_add_test(tc, map_and_watch_golden_picture);
	tcase_add_test(tc, unprivileged_list_says_what_it_missed);
	tcase_add_test(tc, completion_script);
	tcase_add_test(tc, table_mode_list_check_info);
	tcase_add_test(tc, map_leaves_out_empty_bytes_past_eof);
	tcase_add_test(tc, list_shows_unlocked_mappings);
	tcase_add_test(tc, check_json_path_is_absolute);
	tcase_add_test(tc, log_shows_retained_range);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(lockctl_suite());
}
