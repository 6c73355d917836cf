/* SPDX-License-Identifier: MIT */
/*
 * test_docs.c - the documentation keeps up with the code: sm_strerror
 * explains every error code the library's sources return, and every
 * exported name (lib/libsafemap.sym) is declared in safemap.h and has a
 * manual page that `make install` installs.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

static char *slurp(const char *rel)
{
	char path[4096];
	FILE *fp;
	char *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", SRCDIR, rel);
	fp = fopen(path, "re");
	ck_assert_msg(fp != NULL, "cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	rewind(fp);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, fp), n);
	buf[n] = 0;
	fclose(fp);
	return buf;
}

/* The errno names a library source may return; a new one fails the test
 * until it is added here and sm_strerror explains it. */
static const struct {
	const char *name;
	int code;
} names[] = {
	{ "EAGAIN", EAGAIN }, { "EBADF", EBADF }, { "EBUSY", EBUSY }, { "EINVAL", EINVAL },
	{ "EIO", EIO }, { "EISDIR", EISDIR }, { "ENAMETOOLONG", ENAMETOOLONG },
	{ "ENOENT", ENOENT }, { "ENOLCK", ENOLCK }, { "ENOMEM", ENOMEM }, { "ENOSPC", ENOSPC },
	{ "ENOTSUP", ENOTSUP }, { "EOPNOTSUPP", EOPNOTSUPP }, { "ENXIO", ENXIO },
	{ "EPERM", EPERM }, { "EPROTO", EPROTO }, { "ERANGE", ERANGE }, { "EREMOTE", EREMOTE },
	{ "ESTALE", ESTALE }, { "ETIMEDOUT", ETIMEDOUT }, { "EDEADLK", EDEADLK },
	{ "EACCES", EACCES }, { "EEXIST", EEXIST }, { "EINTR", EINTR },
	{ "EOVERFLOW", EOVERFLOW }, { "EFBIG", EFBIG }, { "EBADMSG", EBADMSG },
	{ "EILSEQ", EILSEQ }, { "ENODATA", ENODATA }, { "ECANCELED", ECANCELED },
};

static int code_of(const char *name)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i].name, name) == 0)
			return names[i].code;
	return 0;
}

/* sm_strerror's text for a code must be safemap's own, not the generic
 * strerror fallback. */
static void check_explained(const char *name, const char *where)
{
	int code = code_of(name);
	const char *generic;

	ck_assert_msg(code != 0, "%s returns -%s: add it to test_docs.c's names[] and to "
				 "lib/error.c's messages", where, name);
	generic = strerrordesc_np(code);
	ck_assert_msg(generic == NULL || strcmp(sm_strerror(-code), generic) != 0,
		      "sm_strerror(-%s) is only the generic \"%s\" (returned in %s)", name,
		      generic, where);
	ck_assert_str_ne(sm_strerror(-code), "unknown error");
}

START_TEST(strerror_explains_every_returned_code)
{
	static const char *const dirs[] = { "lib" };
	regex_t re;
	int seen = 0;

	ck_assert_int_eq(regcomp(&re, "-(E[A-Z0-9]+)[^A-Za-z0-9_]", REG_EXTENDED), 0);
	for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
		char dpath[4096];
		DIR *dir;
		struct dirent *e;

		snprintf(dpath, sizeof(dpath), "%s/%s", SRCDIR, dirs[d]);
		dir = opendir(dpath);
		ck_assert_ptr_nonnull(dir);
		while ((e = readdir(dir)) != NULL) {
			size_t len = strlen(e->d_name);
			char rel[512], *text, *p;
			regmatch_t m[2];

			if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0)
				continue;
			snprintf(rel, sizeof(rel), "%s/%s", dirs[d], e->d_name);
			text = slurp(rel);
			for (p = text; regexec(&re, p, 2, m, 0) == 0; p += m[0].rm_eo) {
				char name[32];
				int n = m[1].rm_eo - m[1].rm_so;

				if (n >= (int)sizeof(name))
					continue;
				memcpy(name, p + m[1].rm_so, (size_t)n);
				name[n] = 0;
				check_explained(name, rel);
				seen++;
			}
			free(text);
		}
		closedir(dir);
	}
	regfree(&re);
	ck_assert_int_gt(seen, 50); /* the scan really read the sources */
	/* and the codes of SPEC §2's fixed list */
	check_explained("ETIMEDOUT", "SPEC");
	check_explained("EDEADLK", "SPEC");
}
END_TEST

/* Names exported by the version script. */
static int exported(char names_out[][64], int cap)
{
	char *sym = slurp("lib/libsafemap.sym"), *p = sym;
	int n = 0;

	while ((p = strstr(p, "sm_")) != NULL) {
		int len = 0;

		while (p[len] == '_' || (p[len] >= 'a' && p[len] <= 'z') ||
		       (p[len] >= '0' && p[len] <= '9'))
			len++;
		if (p[len] == ';' && n < cap && len < 64) {
			memcpy(names_out[n], p, (size_t)len);
			names_out[n][len] = 0;
			n++;
		}
		p += len;
	}
	free(sym);
	return n;
}

START_TEST(every_export_is_declared_and_has_a_man_page)
{
	static char sym[512][64];
	int n = exported(sym, 512);
	char *header = slurp("include/safemap.h");
	char *makefile = slurp("Makefile.am");

	ck_assert_int_gt(n, 40);
	for (int i = 0; i < n; i++) {
		char page[4200], decl[80];

		snprintf(page, sizeof(page), "%s/doc/%.63s.3", SRCDIR, sym[i]);
		ck_assert_msg(access(page, R_OK) == 0, "%s is exported but has no doc/%s.3",
			      sym[i], sym[i]);
		snprintf(page, sizeof(page), "doc/%.63s.3", sym[i]);
		ck_assert_msg(strstr(makefile, page) != NULL,
			      "doc/%s.3 is not in Makefile.am's dist_man_MANS", sym[i]);
		/* the word accessors are declared through a macro */
		snprintf(decl, sizeof(decl), "%.63s(", sym[i]);
		ck_assert_msg(strstr(header, decl) != NULL ||
				      (strncmp(sym[i], "sm_get_u", 8) == 0 ||
				       strncmp(sym[i], "sm_put_u", 8) == 0),
			      "%s is exported but not declared in safemap.h", sym[i]);
	}
	free(header);
	free(makefile);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("docs");
	TCase *tc = tcase_create("docs");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, strerror_explains_every_returned_code);
	tcase_add_test(tc, every_export_is_declared_and_has_a_man_page);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
