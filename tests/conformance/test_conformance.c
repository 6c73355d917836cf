/* SPDX-License-Identifier: MIT */
/*
 * test_conformance.c - the conformance suite: real processes (the peer
 * program, exec'd) cooperate, conflict, crash and truncate, driven line by
 * line over pipes; every step is a request and its answer, nothing sleeps.
 * SPEC §9.  The peer protocol is in tests/conformance/README.
 * Every case runs in both lock modes (SPEC §12.6): make check runs this
 * program again as test_conformance-table with SAFEMAP_TEST_MODE=table,
 * which the peers inherit; where the modes differ by design (plain fcntl
 * lockers, stale entries, cached file size) a case asserts each mode's rule.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define PG 4096

struct peer {
	pid_t pid;
	FILE *in, *out;
	char line[1024];
};

static char peer_bin[PATH_MAX + 64];

/* Start a peer and send its first line; return the answer. */
static const char *launch(struct peer *p, const char *first)
{
	int down[2], up[2];

	if (!peer_bin[0])
		tu_sibling("peer", peer_bin, sizeof(peer_bin));
	ck_assert_int_eq(pipe2(down, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(up, O_CLOEXEC), 0);
	p->pid = fork();
	ck_assert_int_ge(p->pid, 0);
	if (p->pid == 0) {
		dup2(down[0], 0);
		dup2(up[1], 1);
		execl(peer_bin, peer_bin, (char *)NULL);
		_exit(127);
	}
	close(down[0]);
	close(up[1]);
	p->in = fdopen(down[1], "w");
	p->out = fdopen(up[0], "r");
	ck_assert_ptr_nonnull(p->in);
	ck_assert_ptr_nonnull(p->out);
	fprintf(p->in, "%s\n", first);
	fflush(p->in);
	ck_assert_ptr_nonnull(fgets(p->line, sizeof(p->line), p->out));
	p->line[strcspn(p->line, "\n")] = '\0';
	return p->line;
}

/* A peer that opened path in the mode under test (the peer reads
 * SAFEMAP_TEST_MODE), or in `lockmode` ("table"/"kernel") when not NULL. */
static const char *start_in(struct peer *p, const char *path, const char *tag, const char *lockmode)
{
	char first[PATH_MAX + 64];

	snprintf(first, sizeof(first), "open %s rw %s %s", path, tag ? tag : "-", lockmode ? lockmode : "");
	return launch(p, first);
}

static void start(struct peer *p, const char *path, const char *mode, const char *tag)
{
	char first[PATH_MAX + 64];

	snprintf(first, sizeof(first), "open %s %s %s", path, mode, tag ? tag : "-");
	ck_assert_str_eq(launch(p, first), "ok");
}

/* A program that does not use safemap (plain fcntl locks only). */
static void start_raw(struct peer *p, const char *path)
{
	char first[PATH_MAX + 16];

	snprintf(first, sizeof(first), "raw %s", path);
	ck_assert_str_eq(launch(p, first), "ok");
}

/* Send one command; return the answer without its newline. */
static const char *cmd(struct peer *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(p->in, fmt, ap);
	va_end(ap);
	fputc('\n', p->in);
	fflush(p->in);
	ck_assert_msg(fgets(p->line, sizeof(p->line), p->out) != NULL, "peer %d died", (int)p->pid);
	p->line[strcspn(p->line, "\n")] = '\0';
	return p->line;
}

static int finish(struct peer *p)
{
	int st;

	fclose(p->in);
	fclose(p->out);
	ck_assert_int_eq(waitpid(p->pid, &st, 0), p->pid);
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

/* A peer that crashes on purpose: send, expect no answer, reap. */
static int crash(struct peer *p, const char *how)
{
	fprintf(p->in, "crash %s\n", how);
	fflush(p->in);
	ck_assert_ptr_null(fgets(p->line, sizeof(p->line), p->out));
	return finish(p);
}

#define OK(p, ...) ck_assert_str_eq(cmd(p, __VA_ARGS__), "ok")
#define SAYS(want, p, ...) ck_assert_str_eq(cmd(p, __VA_ARGS__), want)

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* s with its words after the first two ("ok N") sorted: for lists whose
 * order is the table's slot order, which depends on who claimed where. */
static const char *sorted_words(const char *s)
{
	static char out[1024];
	char buf[1024], *w[64], *save = NULL;
	int n = 0;

	snprintf(buf, sizeof(buf), "%s", s);
	for (char *t = strtok_r(buf, " ", &save); t && n < 64; t = strtok_r(NULL, " ", &save))
		w[n++] = t;
	if (n > 2)
		qsort(w + 2, (size_t)n - 2, sizeof(w[0]), cmp_str);
	out[0] = '\0';
	for (int i = 0; i < n; i++)
		snprintf(out + strlen(out), sizeof(out) - strlen(out), "%s%s", i ? " " : "", w[i]);
	return out;
}

/* SAYS for a reply listing holders, in any order. */
#define SAYS_SET(want, p, ...)                                                 \
	do {                                                                   \
		char want_[1024];                                              \
		snprintf(want_, sizeof(want_), "%s", sorted_words(want));       \
		ck_assert_str_eq(sorted_words(cmd(p, __VA_ARGS__)), want_);     \
	} while (0)

START_TEST(sharing_and_conflicts_among_eight)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer p[8];

	for (int i = 0; i < 8; i++)
		start(&p[i], f, "rw", NULL);
	for (int i = 0; i < 7; i++)
		SAYS("ok 0", &p[i], "map r 0 100");
	SAYS("err -16", &p[7], "map w 50 1");
	SAYS("err -16", &p[7], "map w 99 1");
	SAYS("ok 0", &p[7], "map w 100 10"); /* byte ranges, not pages */
	SAYS("err -16", &p[0], "map r 105 1");
	SAYS("err -16", &p[1], "map w 109 100");
	OK(&p[7], "release 0");
	SAYS("ok 1", &p[1], "map w 100 10");
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(finish(&p[i]), 0);
}
END_TEST

START_TEST(in_process_counting_seen_by_others)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a, b;

	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	SAYS("ok 0", &a, "map r 0 100");
	SAYS("ok 1", &a, "map r 50 100");
	SAYS("err -16", &a, "map w 60 1"); /* never an upgrade of its own read */
	OK(&a, "release 0");
	if (!tu_table_mode()) { /* others see a's bytes through the kernel */
		OK(&b, "ofd w 0 50");
		OK(&b, "ofd u 0 50");
		SAYS("err -16", &b, "ofd w 50 1");
		SAYS("err -16", &b, "posix w 149 1");
		OK(&b, "posix w 150 1");
		OK(&a, "release 1");
		OK(&b, "ofd w 0 150");
	} else { /* through the table; plain writers meet the fence (§12.4) */
		OK(&b, "test w 0 50");
		SAYS("err -16", &b, "test w 50 1");
		SAYS("err -16", &b, "test w 149 1");
		OK(&b, "test w 150 1");
		SAYS("err -16", &b, "ofd w 0 50");
		SAYS("err -16", &b, "posix w 150 1");
		OK(&a, "release 1");
		OK(&b, "test w 0 150");
		SAYS("ok 0", &b, "map w 0 150");
	}
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_int_eq(finish(&b), 0);
}
END_TEST

START_TEST(holder_killed_at_each_step)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a, b, c;

	start(&b, f, "rw", NULL);
	/* killed while holding, before any write */
	start(&a, f, "rw", "victim");
	SAYS("ok 0", &a, "map w 0 64");
	char want[64];
	snprintf(want, sizeof(want), "ok 1 %d:w:held:victim", (int)a.pid);
	SAYS(want, &b, "holders 0 64");
	ck_assert_int_eq(crash(&a, "kill"), 128 + SIGKILL);
	SAYS("ok 0", &b, "map w 0 64"); /* the kernel lock (table mode: the region) went with it */
	OK(&b, "release 0");
	if (tu_table_mode()) {
		SAYS("ok 0", &b, "holders 0 64"); /* §12.3: reaped at the conflict */
	} else {
		snprintf(want, sizeof(want), "ok 1 %d:w:stale:victim", (int)a.pid);
		SAYS(want, &b, "holders 0 64");
	}
	start(&c, f, "rw", NULL); /* an opener reaps */
	SAYS("ok 0", &b, "holders 0 64");

	/* killed after writing, before commit; after commit; via abort() */
	start(&a, f, "rw", NULL);
	SAYS("ok 0", &a, "map w 0 64");
	OK(&a, "put 0 0 11");
	ck_assert_int_eq(crash(&a, "kill"), 128 + SIGKILL);
	SAYS("ok 0", &b, "map w 0 64");
	OK(&b, "release 0");
	start(&a, f, "rw", NULL);
	SAYS("ok 0", &a, "map w 0 64 buffered");
	OK(&a, "put 0 8 22");
	OK(&a, "commit 0");
	ck_assert_int_eq(crash(&a, "abort"), 128 + SIGABRT);
	SAYS("ok 22", &b, "pread 8");
	SAYS("ok 0", &b, "map w 0 64");

	/* killed in the middle of a table update: the table stays usable */
	start(&a, f, "rw", NULL);
	SAYS("ok 0", &a, "map r 100 10");
	ck_assert_int_eq(crash(&a, "midupdate"), 128 + SIGKILL);
	SAYS("ok 1", &b, "map w 100 10");
	snprintf(want, sizeof(want), "ok 1 %d:w:held:-", (int)b.pid); /* the dead slot hidden */
	SAYS(want, &c, "holders 100 10");
	ck_assert_int_eq(finish(&b), 0);
	ck_assert_int_eq(finish(&c), 0);
}
END_TEST

START_TEST(truncation_while_others_read_and_write)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(4 * PG);
	struct peer a, b, c;

	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	start(&c, f, "rw", NULL);
	SAYS("ok 0", &a, "map r 0 8192");
	SAYS("ok 0", &b, "map w 8192 8192");
	OK(&b, "put 0 4096 5");
	SAYS("ok 0", &a, "get 0 4096");
	OK(&c, "truncate 0");
	SAYS("err -6", &a, "get 0 4096");     /* -ENXIO, no SIGBUS death */
	SAYS("err -6", &a, "get 0 0");        /* dead from then on */
	SAYS("err -6", &b, "put 0 0 1");
	SAYS("err -6", &b, "commit 0");
	OK(&a, "release 0");
	OK(&b, "release 0");
	if (!tu_table_mode()) {
		SAYS("err -34", &a, "map r 0 1"); /* the file is empty now */
	} else {
		/* §12.5: the size may be a cached value, so a read slice past
		 * a foreign truncation is refused, or granted and dead at its
		 * first access */
		const char *r = cmd(&a, "map r 0 8");
		if (strcmp(r, "err -34") != 0) {
			ck_assert_str_eq(r, "ok 0");
			SAYS("err -6", &a, "get 0 0");
			OK(&a, "release 0");
		}
	}
	ck_assert_int_eq(finish(&a), 0);      /* alive to the end */
	ck_assert_int_eq(finish(&b), 0);
	ck_assert_int_eq(finish(&c), 0);
}
END_TEST

START_TEST(commit_visibility_to_pread)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a, b;

	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	SAYS("ok 0", &a, "map w 0 4096 buffered");
	OK(&a, "put 0 8 42");
	SAYS("ok 0", &b, "pread 8");   /* nothing before the commit */
	OK(&a, "commit 0");
	SAYS("ok 42", &b, "pread 8");
	OK(&a, "put 0 8 43");
	OK(&a, "abort 0");
	SAYS("ok 42", &a, "get 0 8"); /* the copy holds the committed value again */
	SAYS("ok 42", &b, "pread 8");
	OK(&a, "release 0");
	SAYS("ok 0", &a, "map w 0 64"); /* direct: shared page cache */
	OK(&a, "put 0 16 7");
	SAYS("ok 7", &b, "pread 16");
	OK(&a, "commit 0");
	SAYS("err -95", &a, "abort 0"); /* -ENOTSUP */
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_int_eq(finish(&b), 0);
}
END_TEST

/* SPEC §12.4, the table-mode rule for programs without safemap: a plain
 * fcntl write lock present at attach time makes sm_open fail with -EBUSY;
 * while a table-mode user is attached, plain writers are refused anywhere
 * in [0, 2^62) by the fence; plain readers are not excluded, and do not
 * exclude table-mode writers (documented); safemap users still exclude
 * each other; when the last one is gone, so is the fence. */
static void plain_fcntl_meets_the_fence(const char *f)
{
	struct peer a, b, c, d;

	start_raw(&c, f);
	OK(&c, "ofd w 10 1");
	ck_assert_str_eq(start_in(&d, f, NULL, NULL), "err -16");
	ck_assert_int_eq(finish(&d), 0);
	OK(&c, "ofd u 10 1");
	OK(&c, "posix w 20 1");
	ck_assert_str_eq(start_in(&d, f, NULL, NULL), "err -16");
	ck_assert_int_eq(finish(&d), 0);
	OK(&c, "posix u 20 1");

	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	SAYS("err -16", &c, "ofd w 100 100");
	SAYS("err -16", &c, "posix w 100 100");
	SAYS("err -16", &c, "ofd w 0x3ffffffffffffff0 16"); /* far past EOF too */
	OK(&c, "ofd r 100 100");
	OK(&c, "posix r 300 10");
	SAYS("ok 0", &b, "map w 150 10");
	SAYS("ok 1", &b, "map w 305 1");
	SAYS("ok 0", &a, "map r 0 100");
	SAYS("err -16", &a, "map r 150 1");
	SAYS("err -16", &a, "map w 305 1");
	SAYS("err -16", &a, "ofd w 3000 1"); /* an attached process's own plain writer too */
	ck_assert_int_eq(finish(&a), 0);
	SAYS("err -16", &c, "ofd w 1000 10"); /* b is still attached */
	ck_assert_int_eq(finish(&b), 0);
	OK(&c, "ofd w 1000 10");
	OK(&c, "posix w 2000 10");
	ck_assert_int_eq(finish(&c), 0);
}

START_TEST(plain_fcntl_lockers_interoperate)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a, b;

	if (tu_table_mode()) {
		plain_fcntl_meets_the_fence(f);
		return;
	}
	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	OK(&a, "posix w 100 100");
	SAYS("err -16", &b, "map r 150 10");
	SAYS("ok 0", &b, "map w 0 100");
	SAYS("err -16", &a, "posix r 99 1");
	SAYS("err -16", &a, "ofd r 99 1");
	OK(&a, "ofd r 300 10");
	SAYS("err -16", &b, "map w 305 1");
	SAYS("ok 1", &b, "map r 305 1");
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_int_eq(finish(&b), 0);
}
END_TEST

START_TEST(fork_children_never_unlock)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a, b;

	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	SAYS("ok 0", &a, "map w 0 10");
	SAYS("ok -116 -116 0", &a, "fork 0"); /* -ESTALE, release frees */
	SAYS("err -16", &b, "map r 0 1");     /* the parent's lock is intact */
	OK(&a, "downgrade 0");
	SAYS("ok 0", &b, "map r 0 1");
	SAYS("err -16", &b, "map w 5 1");
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_int_eq(finish(&b), 0);
}
END_TEST

START_TEST(bad_input_is_an_error_not_a_crash)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a;

	start(&a, f, "rw", NULL);
	SAYS("err -22", &a, "map r 0 0");                  /* zero length */
	SAYS("err -34", &a, "map r 9223372036854775807 2"); /* overflow */
	SAYS("err -34", &a, "map r 4096 1");               /* beyond EOF */
	SAYS("err -34", &a, "map w 4000 200");
	SAYS("ok 0", &a, "map r 0 10");
	SAYS("err -9", &a, "put 0 0 1");                   /* read slice */
	SAYS("err -9", &a, "commit 0");
	SAYS("err -34", &a, "get 0 3");                    /* past the slice */
	SAYS("err -22", &a, "get 63 0");                   /* no such slice */
	SAYS("err -22", &a, "release 63");
	SAYS("err -22", &a, "frobnicate");
	ck_assert_int_eq(finish(&a), 0);
}
END_TEST

/* SPEC §16: lock ranges without mappings. */
START_TEST(lock_past_eof_never_grows_the_file)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(2 * PG);
	struct peer a, b;

	start(&a, f, "rw", NULL);
	start(&b, f, "rw", NULL);
	SAYS("ok 0", &a, "lock w 0x40000000 1 PENDING"); /* SQLite's lock byte at 1 GiB */
	SAYS("ok 8192", &b, "size");
	SAYS("err -16", &b, "lock r 0x40000000 1");
	SAYS("err -16", &b, "test r 0x40000000 1");
	SAYS("ok", &b, "test w 0x40000001 510");
	char want[128];
	snprintf(want, sizeof(want), "ok 1 %d:w:held:PENDING", (int)a.pid);
	SAYS(want, &b, "holders 0x40000000 1");          /* named by its lock's own tag */
	if (!tu_table_mode()) {
		SAYS("err -16", &b, "ofd r 0x40000000 1"); /* plain fcntl sees it */
	} else { /* plain readers are not excluded in table mode (§12.4) */
		OK(&b, "ofd r 0x40000000 1");
		OK(&b, "ofd u 0x40000000 1");
	}
	OK(&a, "unlock 0");
	SAYS("ok", &b, "test w 0x40000000 1");
	SAYS("ok 0", &b, "lock w 0x3fffffff 2");
	SAYS("ok 8192", &a, "size");
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_int_eq(finish(&b), 0);
}
END_TEST

/* SPEC §16: SM_NOLOCK coordination memory shared by two processes, and lock
 * ranges inside it that still exclude. */
START_TEST(nolock_memory_shared_and_lock_ranges_inside)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	struct peer a, b;

	start(&a, f, "rw", "A");
	start(&b, f, "rw", "B");
	SAYS("ok 0", &a, "map w 0 4096 nolock");
	SAYS("ok 0", &b, "map w 0 4096 nolock");
	OK(&a, "put 0 64 777");
	SAYS("ok 777", &b, "get 0 64");
	OK(&b, "put 0 72 778");
	SAYS("ok 778", &a, "get 0 72");
	/* no kernel lock from them (table mode: the fence refuses plain writers) */
	SAYS(tu_table_mode() ? "err -16" : "ok", &b, "ofd w 0 4096");
	SAYS("ok", &b, "ofd u 0 4096");
	SAYS("ok 0", &a, "lock w 120 1 WAL_WRITE");     /* inside its own mapping */
	SAYS("err -16", &b, "lock w 120 1");
	SAYS("err -16", &b, "lock r 120 8");
	SAYS("ok 0", &b, "lock r 121 7 READ-0");
	SAYS("err -16", &a, "lock w 121 1");
	SAYS("ok 1", &a, "lock r 122 1 READ-1");
	char want[256];
	/* the mappings are listed as unlocked */
	snprintf(want, sizeof(want),
		 "ok 5 %d:w:unlocked:A %d:w:unlocked:B %d:w:held:WAL_WRITE %d:r:held:READ-0 %d:r:held:READ-1",
		 (int)a.pid, (int)b.pid, (int)a.pid, (int)b.pid, (int)a.pid);
	SAYS_SET(want, &a, "holders 120 8");
	OK(&a, "unlock 0");
	SAYS("ok 1", &b, "lock w 120 1 WAL_WRITE");
	OK(&b, "commit 0");
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_int_eq(finish(&b), 0);
}
END_TEST

/* SPEC §12.1: an opener in the other lock mode while owners of this mode
 * are attached gets -EPROTO; once they are gone it may attach, and then
 * this mode is refused. */
START_TEST(modes_never_mix)
{
	TU_REQUIRE_MODE();
	const char *f = tu_tmpfile(PG);
	const char *other = tu_table_mode() ? "kernel" : "table";
	struct peer a, b, c;
	const char *r;

	start(&a, f, "rw", NULL);
	SAYS("ok 0", &a, "map w 0 10");
	r = start_in(&b, f, NULL, other);
	if (strcmp(r, "err -22") == 0 || strcmp(r, "err -95") == 0) {
		printf("SKIP modes_never_mix: SM_OPT_TABLE_LOCKS not available (%s)\n", r);
		ck_assert_int_eq(finish(&b), 0);
		ck_assert_int_eq(finish(&a), 0);
		return;
	}
	ck_assert_str_eq(r, "err -71"); /* -EPROTO */
	ck_assert_int_eq(finish(&b), 0);
	SAYS("ok 1", &a, "map r 100 10"); /* a is unharmed */
	ck_assert_int_eq(finish(&a), 0);
	ck_assert_str_eq(start_in(&c, f, NULL, other), "ok");
	SAYS("ok 0", &c, "map w 0 10");
	ck_assert_str_eq(start_in(&b, f, NULL, NULL), "err -71");
	ck_assert_int_eq(finish(&b), 0);
	ck_assert_int_eq(finish(&c), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create(tu_table_mode() ? "conformance (table mode)" : "conformance");
	TCase *tc = tcase_create("peers");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, sharing_and_conflicts_among_eight);
	tcase_add_test(tc, in_process_counting_seen_by_others);
	tcase_add_test(tc, holder_killed_at_each_step);
	tcase_add_test(tc, truncation_while_others_read_and_write);
	tcase_add_test(tc, commit_visibility_to_pread);
	tcase_add_test(tc, plain_fcntl_lockers_interoperate);
	tcase_add_test(tc, fork_children_never_unlock);
	tcase_add_test(tc, bad_input_is_an_error_not_a_crash);
	tcase_add_test(tc, lock_past_eof_never_grows_the_file);
	tcase_add_test(tc, nolock_memory_shared_and_lock_ranges_inside);
	tcase_add_test(tc, modes_never_mix);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
