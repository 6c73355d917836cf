/* SPDX-License-Identifier: MIT */
/*
 * test_docs.c - the documentation keeps up with the code: sm_strerror
 * explains every error code the library's sources return, and every
 * exported name (lib/libsafemap.sym) is declared in safemap.h and has a
 * manual page that `make install` installs; what users get (README, pages,
 * headers, contrib/sqlite, examples, the Rust crate) never cites the
 * specification they do not have, and says one version, configure.ac's.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* debian/libsafemap0.symbols lists exactly what lib/libsafemap.sym exports,
 * each name with its version node (name@NODE), and every node: a new export
 * fails here until the Debian symbols file has its line (dpkg-gensymbols
 * would only warn), a removed one is an ABI break. */
START_TEST(debian_symbols_list_every_export)
{
	char *sym = slurp("lib/libsafemap.sym"), *deb = slurp("debian/libsafemap0.symbols");
	char node[64] = "", line[160], *p, *q, *prev = NULL;
	int n = 0, listed_n = 0;

	/* strip the comments, then read the words: "NODE {", "sm_x;" ... "}" */
	while ((p = strstr(sym, "/*")) != NULL && (q = strstr(p, "*/")) != NULL)
		memset(p, ' ', (size_t)(q + 2 - p));
	for (p = strtok(sym, " \t\n;"); p; prev = p, p = strtok(NULL, " \t\n;")) {
		if (strcmp(p, "{") == 0 && prev) { /* prev names a node */
			snprintf(node, sizeof(node), "%s", prev);
			snprintf(line, sizeof(line), "\n %s@%s ", node, node);
			ck_assert_msg(strstr(deb, line) != NULL,
				      "debian/libsafemap0.symbols lacks the line \"%s@%s %s\"", node,
				      node, PACKAGE_VERSION);
			n++;
		} else if (strncmp(p, "sm_", 3) == 0) {
			ck_assert_msg(node[0] != 0, "libsafemap.sym: %s outside a node", p);
			snprintf(line, sizeof(line), "\n %s@%s ", p, node);
			ck_assert_msg(strstr(deb, line) != NULL,
				      "%s is exported in %s but debian/libsafemap0.symbols lacks the "
				      "line \"%s@%s %s\"", p, node, p, node, PACKAGE_VERSION);
			n++;
		}
	}
	for (p = deb; (p = strstr(p, "\n ")) != NULL; p++)
		listed_n++;
	ck_assert_int_gt(n, 60);
	ck_assert_msg(listed_n == n, "debian/libsafemap0.symbols lists %d symbols, "
				     "lib/libsafemap.sym exports %d (and its nodes)", listed_n, n);
	free(sym);
	free(deb);
}
END_TEST

/* Files exempt while another branch rewrites them: each must still fail its
 * check, and the test fails as soon as one passes, so that its entry is
 * removed and no exemption outlives its reason.  None now ("" matches no
 * file). */
static const char *const still_cites_spec[] = { "" };
static const char *const old_version_page[] = { "" };

static bool listed(const char *rel, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], rel) == 0)
			return true;
	return false;
}

/* Call fn(rel, arg) for every regular file of dir (relative to SRCDIR)
 * whose name ends with one of the suffixes ("" for any); returns how many. */
static int each_file(const char *dir, const char *const *suffixes, size_t nsuffixes,
		     void (*fn)(const char *rel, void *arg), void *arg)
{
	char dpath[4096];
	DIR *d;
	struct dirent *e;
	int n = 0;

	snprintf(dpath, sizeof(dpath), "%s/%s", SRCDIR, dir);
	d = opendir(dpath);
	ck_assert_msg(d != NULL, "cannot open %s", dpath);
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		char rel[1024];

		struct stat st;

		if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, 0) != 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		for (size_t i = 0; i < nsuffixes; i++) {
			size_t sl = strlen(suffixes[i]);

			if (len > sl && strcmp(e->d_name + len - sl, suffixes[i]) == 0) {
				snprintf(rel, sizeof(rel), "%s/%s", dir, e->d_name);
				fn(rel, arg);
				n++;
				break;
			}
		}
	}
	closedir(d);
	return n;
}

struct spec_scan {
	regex_t re;
	char bad[8192]; /* "file:line: text" of every citation found */
	size_t used;
};

static void scan_for_spec(const char *rel, void *arg)
{
	struct spec_scan *sc = arg;
	char *text = slurp(rel);
	bool cites = false;
	regmatch_t m;

	for (const char *p = text; regexec(&sc->re, p, 1, &m, p == text ? 0 : REG_NOTBOL) == 0;
	     p += m.rm_eo) {
		const char *bol = p + m.rm_so, *eol;
		int line = 1;

		while (bol > text && bol[-1] != '\n')
			bol--;
		eol = strchr(bol, '\n');
		for (const char *q = text; q < bol; q++)
			line += *q == '\n';
		cites = true;
		if (!listed(rel, still_cites_spec, sizeof(still_cites_spec) / sizeof(still_cites_spec[0])) &&
		    sc->used < sizeof(sc->bad))
			sc->used += (size_t)snprintf(sc->bad + sc->used, sizeof(sc->bad) - sc->used,
						     "\n  %s:%d: %.*s", rel, line,
						     (int)(eol ? eol - bol : (long)strlen(bol)), bol);
		if (!eol)
			break;
	}
	ck_assert_msg(cites || !listed(rel, still_cites_spec,
				       sizeof(still_cites_spec) / sizeof(still_cites_spec[0])),
		      "%s no longer cites SPEC: remove it from test_docs.c's still_cites_spec[]", rel);
	free(text);
}

/* Users get the README, the manual pages, the headers, contrib/sqlite, the
 * examples and the Rust crate, never the specification: a "SPEC §..."
 * citation there points nowhere, so each must say the rule itself. */
START_TEST(no_shipped_file_cites_the_spec)
{
	static const char *const sqlite[] = { "README", ".c", ".h" }, *const c[] = { ".c", ".h" },
				 *const rs[] = { ".rs", ".toml" };
	static const char *const pages[] = { ".1", ".3", ".5", ".7" };
	static struct spec_scan sc;
	int n = 0;

	sc.used = 0;
	/* SPEC as a word: "SPEC §3.2", "(SPEC \(sc12", "SPEC:" */
	ck_assert_int_eq(regcomp(&sc.re, "(^|[^A-Za-z0-9_])SPEC([^A-Za-z0-9_]|$)",
				 REG_EXTENDED | REG_NEWLINE),
			 0);
	scan_for_spec("README.md", &sc);
	n += each_file("doc", pages, 4, scan_for_spec, &sc);
	n += each_file("include", c, 2, scan_for_spec, &sc);
	n += each_file("contrib/sqlite", sqlite, 3, scan_for_spec, &sc);
	n += each_file("examples", c, 2, scan_for_spec, &sc);
	n += each_file("bindings/rust", rs, 2, scan_for_spec, &sc);
	n += each_file("bindings/rust/src", rs, 1, scan_for_spec, &sc);
	n += each_file("bindings/rust/examples", rs, 1, scan_for_spec, &sc);
	n += each_file("bindings/rust/tests", rs, 1, scan_for_spec, &sc);
	n += each_file("bindings/rust/tests/common", rs, 1, scan_for_spec, &sc);
	regfree(&sc.re);
	ck_assert_int_gt(n, 80); /* the scan really read the shipped files */
	ck_assert_msg(sc.used == 0, "shipped files cite the specification, which users do not "
				    "have; say the rule itself:%s",
		      sc.bad);
}
END_TEST

/* The .TH line of a page: .TH NAME SECTION DATE "SOURCE" "MANUAL"; the
 * source field must be "safemap VERSION". */
static void check_page_version(const char *rel, void *arg)
{
	char *text = slurp(rel), want[64], *th, *q1, *q2;
	bool old = listed(rel, old_version_page, sizeof(old_version_page) / sizeof(old_version_page[0]));
	bool same;

	(void)arg;
	th = strstr(text, "\n.TH ");
	if (!th) { /* a page that is only ".so man3/other.3" has no header */
		ck_assert_msg(strstr(text, "\n.so ") != NULL, "%s has no .TH line", rel);
		free(text);
		return;
	}
	q1 = strchr(th + 1, '"');
	q2 = q1 ? strchr(q1 + 1, '"') : NULL;
	ck_assert_msg(q1 && q2 && memchr(th + 1, '\n', (size_t)(q1 - th - 1)) == NULL,
		      "%s: .TH has no quoted source field", rel);
	snprintf(want, sizeof(want), "safemap %s", PACKAGE_VERSION);
	same = (size_t)(q2 - q1 - 1) == strlen(want) && strncmp(q1 + 1, want, strlen(want)) == 0;
	ck_assert_msg(same || old, "%s: .TH says \"%.*s\", configure.ac says \"%s\"", rel,
		      (int)(q2 - q1 - 1), q1 + 1, want);
	ck_assert_msg(!same || !old, "%s now says \"%s\": remove it from test_docs.c's "
				     "old_version_page[]", rel, want);
	free(text);
}

/* One version everywhere, the full string of configure.ac's AC_INIT (which
 * pkg-config's safemap.pc and `lockctl -V` print): every manual page's
 * header, safemap.h's SAFEMAP_VERSION_MAJOR/MINOR, the Rust crate, and the
 * Debian package. */
START_TEST(every_version_is_configure_s)
{
	static const char *const pages[] = { ".1", ".3", ".5", ".7" };
	char *cargo = slurp("bindings/rust/Cargo.toml");
	char *changelog = slurp("debian/changelog");
	char want[64], *p;

	ck_assert_int_gt(each_file("doc", pages, 4, check_page_version, NULL), 60);

	snprintf(want, sizeof(want), "%d.%d.", SAFEMAP_VERSION_MAJOR, SAFEMAP_VERSION_MINOR);
	ck_assert_msg(strncmp(PACKAGE_VERSION, want, strlen(want)) == 0,
		      "safemap.h says %d.%d, configure.ac %s", SAFEMAP_VERSION_MAJOR,
		      SAFEMAP_VERSION_MINOR, PACKAGE_VERSION);

	/* the [package] version, the first "version = " of Cargo.toml */
	p = strstr(cargo, "\nversion = \"");
	ck_assert_ptr_nonnull(p);
	p += strlen("\nversion = \"");
	ck_assert_msg(strncmp(p, PACKAGE_VERSION "\"", strlen(PACKAGE_VERSION) + 1) == 0,
		      "bindings/rust/Cargo.toml says version %.*s, configure.ac %s",
		      (int)strcspn(p, "\"\n"), p, PACKAGE_VERSION);

	/* the newest entry: "safemap (VERSION) ..." (a native package) */
	snprintf(want, sizeof(want), "safemap (%s) ", PACKAGE_VERSION);
	ck_assert_msg(strncmp(changelog, want, strlen(want)) == 0,
		      "debian/changelog's newest entry is \"%.30s\", configure.ac says %s",
		      changelog, PACKAGE_VERSION);
	free(cargo);
	free(changelog);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("docs");
	TCase *tc = tcase_create("docs");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, strerror_explains_every_returned_code);
	tcase_add_test(tc, every_export_is_declared_and_has_a_man_page);
	tcase_add_test(tc, no_shipped_file_cites_the_spec);
	tcase_add_test(tc, every_version_is_configure_s);
	tcase_add_test(tc, debian_symbols_list_every_export);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
