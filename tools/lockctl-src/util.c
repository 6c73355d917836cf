/* SPDX-License-Identifier: MIT */
/*
 * util.c - what every lockctl command leans on: messages in the
 * err(3)/errx(3) style (one line each, usage errors with "Try ... --help"),
 * allocation that exits on failure, getopt's failures said on one line,
 * mutually exclusive options (util-linux's optutils.h), and the
 * "PATH OFF LEN r|w" region check and hold take.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <bsd/stdlib.h>

#include "lockctl.h"

const char *prog = "lockctl";
const char *cmd_name;
const char *table_dir;

/* "lockctl: " and the message, on stderr, without the line's end. */
static void vmsg(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
}

void warnx_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void errx_(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

void usage_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fprintf(stderr, ". Try '%s%s%s --help' for more information.\n", prog, cmd_name ? " " : "",
		cmd_name ? cmd_name : "");
	exit(EXIT_USAGE);
}

void *xrealloc(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		errx_(EXIT_ERROR, "out of memory");
	if (!(p = realloc(p, n * size > 0 ? n * size : 1)))
		errx_(EXIT_ERROR, "out of memory");
	return p;
}

/* getopt_long failed: say why, on one line.  Option strings start with ':'
 * and opterr is 0, so getopt prints nothing itself. */
void bad_option(int c, char **argv)
{
	const char *arg = argv[optind - 1];
	bool is_long = strncmp(arg, "--", 2) == 0;

	if (c == ':' && is_long)
		usage_err("option '%s' requires an argument", arg);
	if (c == ':')
		usage_err("option requires an argument -- '%c'", optopt);
	if (optopt && !is_long)
		usage_err("invalid option -- '%c'", optopt);
	if (optopt)
		usage_err("option '%s' doesn't allow an argument", arg);
	usage_err("unrecognized or ambiguous option '%s'", arg);
}

void check_exclusive(int c, const struct option *opts, const int excl[][EXCL_MAX], size_t nexcl, int *seen)
{
	for (size_t r = 0; r < nexcl; r++) {
		for (int k = 0; k < EXCL_MAX && excl[r][k]; k++) {
			if (excl[r][k] != c)
				continue;
			if (seen[r] && seen[r] != c) {
				const char *a = "?", *b = "?";
				for (const struct option *o = opts; o->name; o++) {
					if (o->val == seen[r])
						a = o->name;
					if (o->val == c)
						b = o->name;
				}
				usage_err("mutually exclusive arguments: --%s --%s", a, b);
			}
			seen[r] = c;
		}
	}
}

static uint64_t parse_u64(const char *s, const char *what)
{
	const char *err = NULL;
	long long v = strtonum(s, 0, INT64_MAX, &err);

	if (err)
		usage_err("%s '%s' is %s", what, s, err);
	return (uint64_t)v;
}

static bool parse_mode(const char *s)
{
	if (strcmp(s, "r") == 0 || strcmp(s, "read") == 0)
		return false;
	if (strcmp(s, "w") == 0 || strcmp(s, "write") == 0)
		return true;
	usage_err("mode must be r or w, not '%s'", s);
}

/* "OFF LEN r|w" after PATH */
void parse_region(char **argv, uint64_t *off, uint64_t *len, bool *write)
{
	*off = parse_u64(argv[1], "offset");
	*len = parse_u64(argv[2], "length");
	*write = parse_mode(argv[3]);
	if (*len == 0 || *len > (uint64_t)INT64_MAX - *off)
		usage_err("length must be at least 1 and OFF+LEN within 2^63");
}

void print_range(uint64_t start, uint64_t len)
{
	if (len)
		printf("%llu-%llu", (unsigned long long)start, (unsigned long long)(start + len - 1));
	else
		printf("%llu-EOF", (unsigned long long)start);
}

unsigned for_each_fd(const char *sub, void (*fn)(const char *path, long pid, void *arg), void *arg)
{
	DIR *proc = opendir("/proc");
	struct dirent *pd;
	unsigned denied = 0;

	while (proc && (pd = readdir(proc))) {
		char dir[300], path[600];
		DIR *fds;
		struct dirent *fd;
		if (!isdigit((unsigned char)pd->d_name[0]))
			continue;
		snprintf(dir, sizeof(dir), "/proc/%s/%s", pd->d_name, sub);
		if (!(fds = opendir(dir))) {
			denied += errno == EACCES || errno == EPERM;
			continue;
		}
		long pid = strtol(pd->d_name, NULL, 10);
		while ((fd = readdir(fds))) {
			if (!isdigit((unsigned char)fd->d_name[0]))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, fd->d_name);
			fn(path, pid, arg);
		}
		closedir(fds);
	}
	if (proc)
		closedir(proc);
	return denied;
}
