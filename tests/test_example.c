/* SPDX-License-Identifier: MIT */
/*
 * test_example.c - runs examples/pagestore: several compactors and
 * scanners at once on one file; the live records (count and key checksum)
 * are the same before and after, every scan saw a consistent snapshot, and
 * the compactors freed pages.
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static char tool[PATH_MAX + 64];

static void find_tool(void)
{
	tu_sibling("../examples/pagestore", tool, sizeof(tool));
}

static FILE *start(const char *args)
{
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof(cmd), "%s %s", tool, args);
	FILE *p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	return p;
}

static void finish(FILE *p, char *out, size_t n)
{
	size_t len = 0;
	while (len + 1 < n && fgets(out + len, (int)(n - len), p))
		len += strlen(out + len);
	out[len] = '\0';
	int st = pclose(p);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "pagestore failed: %s", out);
}

START_TEST(compactors_and_scanners_at_once)
{
	const char *p = tu_tmpfile(0);
	char args[PATH_MAX + 64], before[512], after[512], out[512];
	unsigned long long u0, u1, r0, r1, c0, c1, pages;
	FILE *run[5];

	find_tool();
	snprintf(args, sizeof(args), "init %s 64", p);
	finish(start(args), out, sizeof(out));
	snprintf(args, sizeof(args), "scan %s", p);
	finish(start(args), before, sizeof(before));
	ck_assert_int_eq(sscanf(before, "scan: %llu pages in use of %llu, %llu live records, key checksum %llx",
				&u0, &pages, &r0, &c0), 4);
	for (int i = 0; i < 5; i++) {
		snprintf(args, sizeof(args), i < 3 ? "compact %s 20" : "scan %s", p);
		run[i] = start(args);
	}
	for (int i = 0; i < 5; i++) {
		finish(run[i], out, sizeof(out));
		printf("%s", out);
		if (i >= 3) /* a concurrent scan sees the same records */
			ck_assert_ptr_nonnull(strstr(out, strstr(before, "live records") - 5));
	}
	snprintf(args, sizeof(args), "scan %s", p);
	finish(start(args), after, sizeof(after));
	printf("before: %safter:  %s", before, after);
	ck_assert_int_eq(sscanf(after, "scan: %llu pages in use of %llu, %llu live records, key checksum %llx",
				&u1, &pages, &r1, &c1), 4);
	ck_assert_uint_eq(r1, r0);
	ck_assert_uint_eq(c1, c0);
	ck_assert_uint_lt(u1, u0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("example");
	TCase *tc = tcase_create("pagestore");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, compactors_and_scanners_at_once);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
