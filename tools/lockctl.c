/* SPDX-License-Identifier: MIT */
/*
 * lockctl - inspect and hold safemap regions (SPEC §7).
 *
 * Like util-linux lslocks, but it reads safemap's lock tables, so it can
 * name the holder of an OFD lock (the kernel reports pid -1 for those),
 * show tags and flag stale entries; it joins the table with /proc/locks so
 * locks of programs that do not use safemap (OFD, POSIX, FLOCK) appear too,
 * blocked kernel waiters included.  Output goes through libsmartcols, the
 * library behind lslocks; each column has a JSON type.
 *
 * Commands come from a table and parse their own options (kmod's
 * tools/kmod.c): "lockctl list -J PATH" and "lockctl -V" both work.
 *
 * Every path given by the user or found on disk is opened O_NONBLOCK and
 * must be a regular file: a FIFO in a table's place must not hang us.
 *
 * Exit status: 0 success (check: the region is free), 1 check found a
 * conflict or hold could not take the region, 2 bad usage or input,
 * 3 the file or its table could not be read; hold exits with the
 * command's status.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libsmartcols.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bsd/stdlib.h>
#include <bsd/string.h>
#include <bsd/sys/tree.h>

#include "safemap-internal.h"

#define EXIT_CONFLICT 1
#define EXIT_USAGE 2
#define EXIT_ERROR 3

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const char *prog = "lockctl";
static const char *cmd_name; /* the running subcommand, for "Try ..." */

/* ---- messages, in the err(3)/errx(3) style -------------------------------- */

__attribute__((format(printf, 1, 2))) static void warnx_(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

__attribute__((noreturn, format(printf, 2, 3))) static void errx_(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

/* Bad usage: one line (SPEC §7), status 2. */
__attribute__((noreturn, format(printf, 1, 2))) static void usage_err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ". Try '%s%s%s --help' for more information.\n", prog, cmd_name ? " " : "",
		cmd_name ? cmd_name : "");
	exit(EXIT_USAGE);
}

static void *xrealloc(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		errx_(EXIT_ERROR, "out of memory");
	if (!(p = realloc(p, n * size > 0 ? n * size : 1)))
		errx_(EXIT_ERROR, "out of memory");
	return p;
}

/* Grow *v (of *cap elements) to hold at least n + 1. */
#define GROW(v, n, cap)                                                  \
	do {                                                             \
		if ((n) >= (cap)) {                                      \
			(cap) = (cap) ? 2 * (cap) : 16;                  \
			(v) = xrealloc((v), (cap), sizeof(*(v)));        \
		}                                                        \
	} while (0)

/* getopt_long failed: say why, on one line.  Option strings start with ':'
 * and opterr is 0, so getopt prints nothing itself. */
__attribute__((noreturn)) static void bad_option(int c, char **argv)
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

/* Mutually exclusive options, as util-linux's optutils.h: each row lists
 * option values (ascending, 0-terminated) of which at most one may be
 * given. */
#define EXCL_MAX 4
static void check_exclusive(int c, const struct option *opts, const int excl[][EXCL_MAX], size_t nexcl,
			    int *seen)
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

/* ---- columns, as in lslocks ---------------------------------------------- */

enum { COL_PATH, COL_START, COL_END, COL_SIZE, COL_MODE, COL_STATE, COL_PID, COL_COMMAND,
       COL_TAG, COL_SINCE, COL_TYPE, COL_TID, COL_INODE, COL_MAJMIN, COL_M, COL_BLOCKER, NCOLS };
#define NDEFAULT (COL_TYPE + 1)

static struct colinfo {
	const char *name;
	double whint;
	int flags;
	int json; /* SCOLS_JSON_*; SIZE is a number only with --bytes */
	const char *help;
} infos[NCOLS] = {
	[COL_PATH] = { "PATH", 0.3, SCOLS_FL_TRUNC, SCOLS_JSON_STRING, "absolute path of the locked file" },
	[COL_START] = { "START", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "first byte of the region" },
	[COL_END] = { "END", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER,
		      "last byte of the region (EOF, in JSON null: to the end of the file)" },
	[COL_SIZE] = { "SIZE", 4, SCOLS_FL_RIGHT, SCOLS_JSON_STRING,
		       "size of the region (empty: to the end of the file)" },
	[COL_MODE] = { "MODE", 5, 0, SCOLS_JSON_STRING, "READ or WRITE" },
	[COL_STATE] = { "STATE", 7, 0, SCOLS_JSON_STRING,
			"held, pending, waiting (blocked), stale (its holder is gone), or foreign-read "
			"(table mode: a plain fcntl reader the fence does not exclude)" },
	[COL_PID] = { "PID", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER,
		      "holder's pid (-1: an OFD lock whose owner could not be found)" },
	[COL_COMMAND] = { "COMMAND", 15, 0, SCOLS_JSON_STRING, "holder's program name" },
	[COL_TAG] = { "TAG", 10, 0, SCOLS_JSON_STRING, "holder's safemap tag" },
	[COL_SINCE] = { "SINCE", 19, 0, SCOLS_JSON_STRING, "when the region was taken (safemap holders)" },
	[COL_TYPE] = { "TYPE", 7, 0, SCOLS_JSON_STRING,
		       "SAFEMAP (from the table), or the kernel lock type OFDLCK/POSIX/FLOCK" },
	[COL_TID] = { "TID", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "holder's thread id" },
	[COL_INODE] = { "INODE", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "inode number" },
	[COL_MAJMIN] = { "MAJ:MIN", 6, 0, SCOLS_JSON_STRING, "major:minor device number" },
	[COL_M] = { "M", 1, 0, SCOLS_JSON_BOOLEAN, "mandatory state of the lock: 0 (none), 1 (set)" },
	[COL_BLOCKER] = { "BLOCKER", 0, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER,
			  "pid of the process blocking a waiting lock" },
};

static struct {
	int columns[NCOLS * 2];
	size_t ncolumns;
	bool raw, json, noheadings, bytes, notrunc, noinaccessible;
	long pid; /* -p: only this holder (0: all) */
	unsigned unreadable; /* processes whose open files we could not read */
} ctl;

static const char *table_dir;

static int column_id(const char *name, size_t len)
{
	for (int i = 0; i < NCOLS; i++)
		if (strlen(infos[i].name) == len && strncasecmp(infos[i].name, name, len) == 0)
			return i;
	usage_err("unknown column: %.*s", (int)len, name);
}

/* -o LIST, or -o +LIST to add to the defaults */
static void parse_columns(const char *list)
{
	if (*list == '+')
		list++;
	else
		ctl.ncolumns = 0;
	while (*list) {
		const char *end = strchrnul(list, ',');
		if (end == list)
			usage_err("empty column name in --output");
		if (ctl.ncolumns >= ARRAY_SIZE(ctl.columns))
			usage_err("too many columns specified, the limit is %zu", ARRAY_SIZE(ctl.columns));
		ctl.columns[ctl.ncolumns++] = column_id(list, (size_t)(end - list));
		list = *end ? end + 1 : end;
	}
}

static void list_columns(void)
{
	for (int i = 0; i < NCOLS; i++)
		printf("%10s  %s\n", infos[i].name, infos[i].help);
}

/* ---- rows -------------------------------------------------------------- */

struct row {
	const char *path, *type, *mode, *state, *comm, *tag;
	uint64_t start, len; /* len 0: to end of file */
	uint64_t since;      /* ns since the epoch, 0: unknown */
	long pid, tid, blocker;
	dev_t dev;
	ino_t ino;
	bool mandatory;
};

/* Sizes as lslocks prints them: 10B, 4K, 1.5M. */
static void human_size(uint64_t n, char *buf, size_t size)
{
	static const char units[] = "BKMGTPE";
	int exp = 0;

	while (exp < 6 && n >= (1ull << (10 * (exp + 1))))
		exp++;
	if (!exp) {
		snprintf(buf, size, "%lluB", (unsigned long long)n);
		return;
	}
	uint64_t unit = 1ull << (10 * exp), whole = n / unit;
	uint64_t tenth = ((n % unit) * 10 + unit / 2) / unit;
	if (tenth == 10) {
		whole++;
		tenth = 0;
	}
	if (tenth)
		snprintf(buf, size, "%llu.%llu%c", (unsigned long long)whole, (unsigned long long)tenth, units[exp]);
	else
		snprintf(buf, size, "%llu%c", (unsigned long long)whole, units[exp]);
}

static void format_since(uint64_t ns, char *buf, size_t size)
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;

	if (!localtime_r(&t, &tm)) {
		buf[0] = '\0';
		return;
	}
	if (!ctl.json) {
		strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
		return;
	}
	/* ISO 8601 with the zone: 2026-11-26T01:02:03+01:00 */
	char z[8];
	strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
	strftime(z, sizeof(z), "%z", &tm);
	if (strlen(z) == 5)
		snprintf(buf + strlen(buf), size - strlen(buf), "%.3s:%s", z, z + 3);
}

static void add_row(struct libscols_table *tb, const struct row *r)
{
	struct libscols_line *ln;

	if (ctl.pid && r->pid != ctl.pid)
		return;
	if (!(ln = scols_table_new_line(tb, NULL)))
		errx_(EXIT_ERROR, "out of memory");
	for (size_t i = 0; i < ctl.ncolumns; i++) {
		const char *v = NULL;
		char buf[64];
		buf[0] = '\0';
		switch (ctl.columns[i]) {
		case COL_PATH: v = r->path; break;
		case COL_START: snprintf(buf, sizeof(buf), "%llu", (unsigned long long)r->start); break;
		case COL_END:
			/* a number or, to end of file, EOF (JSON: null) */
			if (r->len)
				snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(r->start + r->len - 1));
			else if (!ctl.json)
				strlcpy(buf, "EOF", sizeof(buf));
			break;
		case COL_SIZE:
			if (r->len && ctl.bytes)
				snprintf(buf, sizeof(buf), "%llu", (unsigned long long)r->len);
			else if (r->len)
				human_size(r->len, buf, sizeof(buf));
			break;
		case COL_MODE: v = r->mode; break;
		case COL_STATE: v = r->state; break;
		case COL_PID: snprintf(buf, sizeof(buf), "%ld", r->pid); break;
		case COL_TID:
			if (r->tid)
				snprintf(buf, sizeof(buf), "%ld", r->tid);
			break;
		case COL_COMMAND: v = r->comm; break;
		case COL_TAG: v = r->tag; break;
		case COL_TYPE: v = r->type; break;
		case COL_SINCE:
			if (r->since)
				format_since(r->since, buf, sizeof(buf));
			break;
		case COL_INODE: snprintf(buf, sizeof(buf), "%llu", (unsigned long long)r->ino); break;
		case COL_MAJMIN:
			if (ctl.json || ctl.raw)
				snprintf(buf, sizeof(buf), "%u:%u", major(r->dev), minor(r->dev));
			else
				snprintf(buf, sizeof(buf), "%3u:%-3u", major(r->dev), minor(r->dev));
			break;
		case COL_M: strlcpy(buf, r->mandatory ? "1" : "0", sizeof(buf)); break;
		case COL_BLOCKER:
			if (r->blocker)
				snprintf(buf, sizeof(buf), "%ld", r->blocker);
			break;
		}
		if (!v)
			v = buf;
		/* empty: nothing to say (JSON null) */
		if (scols_line_set_data(ln, i, *v ? v : NULL) < 0)
			errx_(EXIT_ERROR, "out of memory");
	}
}

static struct libscols_table *new_table(void)
{
	struct libscols_table *tb = scols_new_table();

	if (!tb)
		errx_(EXIT_ERROR, "out of memory");
	scols_table_enable_raw(tb, ctl.raw);
	scols_table_enable_json(tb, ctl.json);
	scols_table_enable_noheadings(tb, ctl.noheadings);
	scols_table_set_name(tb, "locks");
	for (size_t i = 0; i < ctl.ncolumns; i++) {
		const struct colinfo *c = &infos[ctl.columns[i]];
		int flags = c->flags;
		if (ctl.notrunc)
			flags &= ~SCOLS_FL_TRUNC;
		struct libscols_column *cl = scols_table_new_column(tb, c->name, c->whint, flags);
		if (!cl)
			errx_(EXIT_ERROR, "out of memory");
		if (ctl.json)
			scols_column_set_json_type(cl, ctl.columns[i] == COL_SIZE && ctl.bytes ? SCOLS_JSON_NUMBER
											: c->json);
	}
	return tb;
}

/* ---- the kernel's view: /proc/locks, one parser ------------------------- */

struct klock {
	int id;       /* /proc/locks ordinal: a waiter shares its blocker's */
	bool blocked; /* a "->" line: waiting for lock id */
	bool mandatory;
	bool write;
	char type[8]; /* OFDLCK, POSIX, FLOCK, LEASE... */
	long pid;     /* -1 for OFD locks: see owner_of() */
	dev_t dev;
	ino_t ino;
	uint64_t start, len; /* len 0: to EOF */
	/* a waiter's blocker, from the line it follows in the same read */
	bool has_blocker, bl_write, bl_mandatory;
	char bl_type[8];
	long bl_pid;
	uint64_t bl_start, bl_len;
};

/* A set of kernel locks in the order first seen, hashed so that thousands
 * of them are deduplicated and compared in linear time. */
struct klocks {
	struct klock *v;
	size_t n, cap;
	uint32_t *slot; /* index + 1, 0: empty */
	size_t nslot;   /* a power of two, at least 2n */
};

static void klocks_free(struct klocks *s)
{
	free(s->v);
	free(s->slot);
	memset(s, 0, sizeof(*s));
}

/* One line of /proc/locks, or (without its "lock:\t" prefix) of
 * /proc/PID/fdinfo/FD:
 *   "12: POSIX  ADVISORY  WRITE 4242 fe:00:1234 0 EOF"
 *   "12: -> POSIX  ADVISORY  WRITE 4243 fe:00:1234 0 EOF" */
static bool parse_lock_line(const char *s, struct klock *k)
{
	char type[16], adv[16], mode[16], end[32];
	unsigned maj, min;
	unsigned long long ino, start;
	int n = 0;

	memset(k, 0, sizeof(*k));
	if (sscanf(s, "%d: %n", &k->id, &n) != 1 || !n)
		return false;
	s += n;
	if (strncmp(s, "->", 2) == 0) {
		k->blocked = true;
		s += 2;
	}
	if (sscanf(s, "%15s %15s %15s %ld %x:%x:%llu %llu %31s", type, adv, mode, &k->pid, &maj, &min, &ino,
		   &start, end) != 9)
		return false;
	strlcpy(k->type, type, sizeof(k->type));
	k->mandatory = adv[0] == 'M';
	k->write = strcmp(mode, "WRITE") == 0;
	k->dev = makedev(maj, min);
	k->ino = (ino_t)ino;
	k->start = start;
	if (strcmp(end, "EOF") == 0)
		k->len = 0;
	else {
		unsigned long long e = strtoull(end, NULL, 10);
		k->len = e >= start ? e - start + 1 : 1;
	}
	return true;
}

/* The same lock, whatever its position: /proc/locks numbers lines by
 * position, which other files' locks shift. */
static bool same_lock(const struct klock *a, const struct klock *b)
{
	return a->blocked == b->blocked && a->mandatory == b->mandatory && a->write == b->write &&
	       !strcmp(a->type, b->type) && a->pid == b->pid && a->dev == b->dev && a->ino == b->ino &&
	       a->start == b->start && a->len == b->len;
}

static size_t lock_hash(const struct klock *k)
{
	uint64_t h = k->start * 0x9E3779B97F4A7C15ull;

	h ^= (k->len + 1) * 0xC2B2AE3D27D4EB4Full;
	h ^= (uint64_t)k->pid * 0x165667B19E3779F9ull;
	h ^= (uint64_t)k->ino * 0x27D4EB2F165667C5ull;
	h ^= (uint64_t)k->dev + (uint64_t)(k->write | k->blocked << 1 | k->mandatory << 2) + (uint64_t)k->type[0];
	h ^= h >> 31;
	h *= 0x94D049BB133111EBull;
	return (size_t)(h ^ (h >> 29));
}

static const struct klock *klocks_find(const struct klocks *s, const struct klock *k)
{
	if (!s->nslot)
		return NULL;
	for (size_t m = s->nslot - 1, i = lock_hash(k) & m; s->slot[i]; i = (i + 1) & m)
		if (same_lock(&s->v[s->slot[i] - 1], k))
			return &s->v[s->slot[i] - 1];
	return NULL;
}

/* Add k unless the same lock is there. */
static void klocks_add(struct klocks *s, const struct klock *k)
{
	if (klocks_find(s, k))
		return;
	if (2 * (s->n + 1) > s->nslot) {
		size_t nslot = s->nslot ? 2 * s->nslot : 64;
		free(s->slot);
		s->slot = xrealloc(NULL, nslot, sizeof(*s->slot));
		memset(s->slot, 0, nslot * sizeof(*s->slot));
		s->nslot = nslot;
		for (size_t j = 0; j < s->n; j++) {
			size_t i = lock_hash(&s->v[j]) & (nslot - 1);
			while (s->slot[i])
				i = (i + 1) & (nslot - 1);
			s->slot[i] = (uint32_t)j + 1;
		}
	}
	GROW(s->v, s->n, s->cap);
	s->v[s->n] = *k;
	size_t i = lock_hash(k) & (s->nslot - 1);
	while (s->slot[i])
		i = (i + 1) & (s->nslot - 1);
	s->slot[i] = (uint32_t)++s->n;
}

static bool klocks_equal(const struct klocks *a, const struct klocks *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < b->n; i++)
		if (!klocks_find(a, &b->v[i]))
			return false;
	return true;
}

/* Files whose locks are wanted (none: every file). */
struct fileid {
	dev_t dev;
	ino_t ino;
};

static bool wanted(const struct klock *k, const struct fileid *ids, size_t nids)
{
	for (size_t i = 0; i < nids; i++)
		if (ids[i].dev == k->dev && ids[i].ino == k->ino)
			return true;
	return nids == 0;
}

/* A /proc file for reading with a buffer larger than the 1 KiB procfs
 * reports: each read(2) of /proc/locks walks the kernel's lock list from
 * its start and freezes every lock operation of the system meanwhile, and
 * returns up to a page, so asking for less multiplies that cost. */
static FILE *proc_open(const char *path)
{
	FILE *f = fopen(path, "re");

	if (f)
		setvbuf(f, NULL, _IOFBF, 1 << 16);
	return f;
}

/* One pass over /proc/locks into pass (emptied first). */
static void read_pass(struct klocks *pass, const struct fileid *ids, size_t nids)
{
	FILE *f = proc_open("/proc/locks");
	struct klock last = { .id = -1 };
	char *line = NULL;
	size_t cap = 0;

	pass->n = 0;
	if (pass->slot)
		memset(pass->slot, 0, pass->nslot * sizeof(*pass->slot));
	if (!f)
		return;
	while (getline(&line, &cap, f) > 0) {
		struct klock k;
		if (!parse_lock_line(line, &k))
			continue;
		if (!k.blocked) {
			last = k;
		} else if (k.id == last.id) {
			/* "->" lines follow the lock they wait for */
			k.has_blocker = true;
			k.bl_pid = last.pid;
			k.bl_write = last.write;
			k.bl_mandatory = last.mandatory;
			strlcpy(k.bl_type, last.type, sizeof(k.bl_type));
			k.bl_start = last.start;
			k.bl_len = last.len;
		}
		/* a waiter waits for a lock on the same file: filtering by
		 * file keeps every blocker; a line read twice across a
		 * shift (see below) is one lock, as are identical locks */
		if (wanted(&k, ids, nids))
			klocks_add(pass, &k);
	}
	free(line);
	fclose(f);
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The kernel locks on the files in ids (nids 0: all).  /proc/locks is
 * produced a page per read(2): locks taken or dropped elsewhere between two
 * reads shift it, so a line can appear twice or not at all.  Read it until
 * two passes agree on the files we look at (other files' churn does not
 * count); if they do not soon, report every lock seen in any pass: a line is
 * never invented, only skipped, so the union misses only a lock skipped by
 * every pass (and may show one released meanwhile). */
static void kernel_locks(struct klocks *out, const struct fileid *ids, size_t nids)
{
	struct klocks a = { 0 }, b = { 0 }, all = { 0 };
	/* at most 20 more passes, and none started after a second: with tens
	 * of thousands of locks a pass takes a good part of one, and each of
	 * its reads stalls every lock operation of the system */
	double until = mono_s() + 1.0;

	read_pass(&a, ids, nids);
	for (size_t i = 0; i < a.n; i++)
		klocks_add(&all, &a.v[i]);
	for (int tries = 0; tries < 20 && (tries == 0 || mono_s() < until); tries++) {
		read_pass(&b, ids, nids);
		if (klocks_equal(&a, &b)) {
			*out = b;
			klocks_free(&a);
			klocks_free(&all);
			return;
		}
		for (size_t i = 0; i < b.n; i++)
			klocks_add(&all, &b.v[i]);
		struct klocks t = a;
		a = b;
		b = t;
	}
	*out = all;
	klocks_free(&a);
	klocks_free(&b);
}

/* The command name of pid ("" if unknown), read once per pid: a list of
 * thousands of locks asks for the same few processes again and again. */
struct comm_ent {
	RB_ENTRY(comm_ent) rb;
	long pid;
	char comm[32];
};

static int comm_cmp(const struct comm_ent *a, const struct comm_ent *b)
{
	return a->pid < b->pid ? -1 : a->pid > b->pid;
}

RB_HEAD(comm_tree, comm_ent);
RB_GENERATE_INTERNAL(comm_tree, comm_ent, rb, comm_cmp, __attribute__((unused)) static)
static struct comm_tree comms = RB_INITIALIZER(&comms);

static void comm_of(long pid, char *buf, size_t n)
{
	struct comm_ent key = { .pid = pid }, *e;
	char path[64];
	FILE *f;

	buf[0] = '\0';
	if (pid <= 0)
		return;
	if (!(e = RB_FIND(comm_tree, &comms, &key))) {
		e = xrealloc(NULL, 1, sizeof(*e));
		e->pid = pid;
		e->comm[0] = '\0';
		snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
		if ((f = fopen(path, "re"))) {
			if (fgets(e->comm, (int)sizeof(e->comm), f))
				e->comm[strcspn(e->comm, "\n")] = '\0';
			fclose(f);
		}
		RB_INSERT(comm_tree, &comms, e);
	}
	strlcpy(buf, e->comm, n);
}

/* Owners of OFD locks: /proc/locks says pid -1, but /proc/PID/fdinfo/FD
 * lists the locks held through that descriptor ("lock:" lines), as
 * util-linux 2.40's lslocks reads them.  Scanned once, when needed, and
 * sorted by lock (then by the order found), so each lookup is a binary
 * search, not a pass over every descriptor's locks. */
struct owner {
	struct klock k;
	long pid;
	size_t seen; /* scan order: the first process found wins */
};
static struct owner *owners;
static size_t nowners, owners_cap;
static bool owners_read;

/* The order of locks as owner_of() matches them (pid and seen aside). */
static int lock_key_cmp(const struct klock *a, const struct klock *b)
{
	if (a->dev != b->dev)
		return a->dev < b->dev ? -1 : 1;
	if (a->ino != b->ino)
		return a->ino < b->ino ? -1 : 1;
	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	if (a->len != b->len)
		return a->len < b->len ? -1 : 1;
	if (a->write != b->write)
		return a->write ? 1 : -1;
	if (a->mandatory != b->mandatory)
		return a->mandatory ? 1 : -1;
	return strcmp(a->type, b->type);
}

static int owner_cmp(const void *x, const void *y)
{
	const struct owner *a = x, *b = y;
	int c = lock_key_cmp(&a->k, &b->k);

	return c ? c : a->seen < b->seen ? -1 : a->seen > b->seen;
}

static void read_owners(void)
{
	DIR *proc = opendir("/proc");
	struct dirent *pd;
	char *line = NULL;
	size_t cap = 0;

	owners_read = true;
	while (proc && (pd = readdir(proc))) {
		char dir[300];
		DIR *fds;
		struct dirent *fd;
		if (!isdigit((unsigned char)pd->d_name[0]))
			continue;
		snprintf(dir, sizeof(dir), "/proc/%s/fdinfo", pd->d_name);
		if (!(fds = opendir(dir)))
			continue;
		while ((fd = readdir(fds))) {
			char path[600];
			FILE *f;
			if (!isdigit((unsigned char)fd->d_name[0]))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, fd->d_name);
			if (!(f = proc_open(path)))
				continue;
			while (getline(&line, &cap, f) > 0) {
				struct klock k;
				if (strncmp(line, "lock:\t", 6) != 0 || !parse_lock_line(line + 6, &k))
					continue;
				GROW(owners, nowners, owners_cap);
				owners[nowners] = (struct owner){ k, strtol(pd->d_name, NULL, 10), nowners };
				nowners++;
			}
			fclose(f);
		}
		closedir(fds);
	}
	free(line);
	if (proc)
		closedir(proc);
	if (nowners)
		qsort(owners, nowners, sizeof(*owners), owner_cmp);
}

/* The pid behind kernel lock k: its own, or for an OFD lock (-1) the first
 * process with a descriptor of the file description holding it. */
static long owner_of(const struct klock *k)
{
	size_t lo = 0, hi;

	if (k->pid > 0 || k->blocked)
		return k->pid;
	if (!owners_read)
		read_owners();
	/* the first owner whose lock is not below k's */
	for (hi = nowners; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2;
		if (lock_key_cmp(&owners[mid].k, k) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nowners && lock_key_cmp(&owners[lo].k, k) == 0 ? owners[lo].pid : k->pid;
}

/* The pid holding the lock a waiter waits for. */
static long blocker_of(const struct klock *w)
{
	struct klock b = { .pid = w->bl_pid, .dev = w->dev, .ino = w->ino, .start = w->bl_start,
			   .len = w->bl_len, .write = w->bl_write, .mandatory = w->bl_mandatory };

	if (!w->has_blocker)
		return 0;
	strlcpy(b.type, w->bl_type, sizeof(b.type));
	return owner_of(&b);
}

/* ---- tables ------------------------------------------------------------- */

/* Errors of our own, beside negative errno values */
#define E_NOTREG 100000  /* not a regular file */
#define E_NOTABLE 100001 /* no lock table */

static const char *describe(int rc)
{
	switch (-rc) {
	case E_NOTREG: return "not a regular file";
	case E_NOTABLE: return "no lock table (no safemap user has opened the file)";
	case EPROTO: return "invalid lock table";
	default: return strerror(-rc);
	}
}

/* Open a path given by the user or found on disk: never block (opening a
 * FIFO for reading waits for a writer forever), and only regular files. */
static int open_regular(const char *path, int flags, struct stat *st)
{
	int fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), rc;

	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0)
		rc = -errno;
	else if (S_ISDIR(st->st_mode))
		rc = -EISDIR;
	else if (!S_ISREG(st->st_mode))
		rc = -E_NOTREG;
	else
		return fd;
	close(fd);
	return rc;
}

/* The data file's identity (stat: never opens it) and its table, attached.
 * On failure *which says whether the data path or tpath was at fault. */
static int open_table(const char *path, bool writable, struct stat *st, struct smt_table *t,
		      char *tpath, size_t n, const char **which)
{
	struct stat ts;
	int rc, fd;

	*which = path;
	t->fd = -1;
	if (stat(path, st) < 0)
		return -errno;
	if (S_ISDIR(st->st_mode))
		return -EISDIR;
	if (!S_ISREG(st->st_mode))
		return -E_NOTREG;
	if ((rc = smt_path(path, st, table_dir, tpath, n)) < 0)
		return rc;
	*which = tpath;
	if ((fd = open_regular(tpath, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW, &ts)) < 0)
		return fd == -ENOENT ? -E_NOTABLE : fd;
	return smt_attach_fd(fd, writable, t);
}

static void netfs_note(const char *path)
{
	struct statfs sfs;

	if (statfs(path, &sfs) == 0 && smt_netfs_type((unsigned long)sfs.f_type))
		warnx_("note: %s is on a network filesystem: its table shows holders on this host only", path);
}

static const char *state_name(const struct smt_table *t, const struct smt_slot *s)
{
	if (!smt_owner_alive(t, SMT_OWNER(s->state)))
		return "stale";
	switch (SMT_STATE(s->state)) {
	case SMT_WAITING:
		return "waiting";
	case SMT_PENDING: /* published before its kernel lock: may hold it */
		return "pending";
	default:
		return "held";
	}
}

/* The live entries of a table. */
struct entries {
	struct smt_slot *v;
	const char **state;
	size_t n, cap;
};

static void read_entries(const struct smt_table *t, struct entries *e, bool with_stale)
{
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		struct smt_slot s;
		if (smt_snapshot(t, i, &s) != 1)
			continue;
		const char *st = state_name(t, &s);
		if (!with_stale && !strcmp(st, "stale"))
			continue;
		if (e->n >= e->cap) {
			e->cap = e->cap ? 2 * e->cap : 16;
			e->v = xrealloc(e->v, e->cap, sizeof(*e->v));
			e->state = xrealloc(e->state, e->cap, sizeof(*e->state));
		}
		e->v[e->n] = s;
		e->state[e->n++] = st;
	}
}

/* Is kernel lock k one of safemap's own, i.e. covered by live table
 * entries of the same mode (held, or waiting for a waiter)? */
static bool covered(const struct klock *k, const struct entries *e)
{
	uint64_t pos = k->start, end = k->len ? k->start + k->len : UINT64_MAX;
	bool progress = true;

	if (strcmp(k->type, "OFDLCK") != 0)
		return false;
	while (pos < end && progress) {
		progress = false;
		for (size_t i = 0; i < e->n; i++) {
			const struct smt_slot *s = &e->v[i];
			if (!strcmp(e->state[i], "stale") || (s->mode == SMT_MODE_WRITE) != k->write ||
			    (strcmp(e->state[i], "waiting") == 0) != k->blocked)
				continue;
			if (s->off <= pos && pos < s->off + s->len) {
				pos = s->off + s->len;
				progress = true;
			}
		}
	}
	return pos >= end;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	uint64_t aend = alen ? a + alen : UINT64_MAX, bend = blen ? b + blen : UINT64_MAX;

	return a < bend && b < aend;
}

/* ---- table-authority mode (SPEC §12) ------------------------------------
 * Owners attached with SM_OPT_TABLE_LOCKS read-lock the table-mode byte of
 * the table file; the table, not the kernel, then decides exclusion.  On the
 * data file each of them holds only an OFD read lock over [0, 2^62) (the
 * fence) and one identity byte in [2^62 + 2^16, 2^62 + 2^32)
 * (doc/safemap-table.5, "Table-authority mode"). */
#define TM_FENCE_LEN ((uint64_t)1 << 62)
#define TM_BAND_MIN (TM_FENCE_LEN + ((uint64_t)1 << 16))
#define TM_BAND_END (TM_FENCE_LEN + ((uint64_t)1 << 32))

/* Are owners attached in table mode? */
static bool table_mode(const struct smt_table *t)
{
	return t->fd >= 0 && sm_ofd_test(t->fd, true, SMT_MODE_BYTE_TABLE, 1) == -EBUSY;
}

enum { TM_FOREIGN, TM_FENCE, TM_IDENTITY };

/* Kernel lock k on a data file in table mode: a fence, an identity lock,
 * or someone else's (a plain fcntl lock the fence does not exclude). */
static int tm_kind(const struct klock *k)
{
	if (strcmp(k->type, "OFDLCK") != 0 || k->write || k->blocked)
		return TM_FOREIGN;
	if (k->start == 0 && k->len == TM_FENCE_LEN)
		return TM_FENCE;
	if (k->len == 1 && k->start >= TM_BAND_MIN && k->start < TM_BAND_END)
		return TM_IDENTITY;
	return TM_FOREIGN;
}

/* STATE of a foreign kernel lock in table mode: a plain reader inside the
 * fenced range is not excluded from table-mode writers. */
static const char *tm_state(const struct klock *k)
{
	if (k->blocked)
		return "waiting";
	return !k->write && k->start < TM_FENCE_LEN ? "foreign-read" : "held";
}

/* Rows of kernel lock k (on the file shown as path). */
static void kernel_row(struct libscols_table *tb, const struct klock *k,
		       const char *path, const char *state)
{
	char comm[32];
	long pid = owner_of(k);

	comm_of(pid, comm, sizeof(comm));
	struct row r = { .path = path, .type = k->type, .mode = k->write ? "WRITE" : "READ",
			 .state = state ? state : k->blocked ? "waiting" : "held", .comm = comm, .tag = "",
			 .start = k->start, .len = k->len, .pid = pid, .dev = k->dev, .ino = k->ino,
			 .mandatory = k->mandatory, .blocker = k->blocked ? blocker_of(k) : 0 };
	add_row(tb, &r);
}

/* A byte range this host knows is locked: [start, end), end UINT64_MAX
 * to end of file. */
struct known {
	uint64_t start, end;
};

static int known_cmp(const void *a, const void *b)
{
	const struct known *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* List, as TYPE REMOTE, every lock F_OFD_GETLK reports in [pos, end). */
static void remote_walk(struct libscols_table *tb, int fd, const struct stat *st, uint64_t pos,
			uint64_t end, const char *shown)
{
	for (int n = 0; n < 100000 && pos < end; n++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)pos,
				    .l_len = end == UINT64_MAX ? 0 : (off_t)(end - pos) };
		if (fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
			return;
		struct klock k = { .write = fl.l_type == F_WRLCK, .pid = fl.l_pid > 0 ? fl.l_pid : -1,
				   .dev = st->st_dev, .ino = st->st_ino, .start = (uint64_t)fl.l_start,
				   .len = (uint64_t)fl.l_len };
		snprintf(k.type, sizeof(k.type), "REMOTE");
		kernel_row(tb, &k, shown, NULL);
		if (fl.l_len == 0)
			return; /* to end of file */
		pos = (uint64_t)fl.l_start + (uint64_t)fl.l_len;
	}
}

/* On a network filesystem /proc/locks never shows locks the server granted
 * to other hosts: ask the kernel with F_OFD_GETLK, from a description of
 * our own, over every gap between the locks this host knows (its table's
 * entries and /proc/locks: the kernel would report those first and hide a
 * remote lock behind them), and list what it reports there as TYPE REMOTE
 * (pid -1: unknown). */
static void remote_rows(struct libscols_table *tb, const struct klocks *kl, const struct entries *e,
			const char *path, const char *shown)
{
	struct statfs sfs;
	struct stat st;
	struct known *v = NULL;
	size_t n = 0;
	uint64_t pos = 0;
	int fd;

	if (statfs(path, &sfs) < 0 || !smt_netfs_type((unsigned long)sfs.f_type))
		return;
	/* read-write where we may: an NFS client answers a test for a write
	 * lock only on a description that could take one */
	if ((fd = open_regular(path, O_RDWR, &st)) < 0 && (fd = open_regular(path, O_RDONLY, &st)) < 0)
		return;
	v = xrealloc(NULL, e->n + kl->n + 1, sizeof(*v));
	for (size_t i = 0; i < e->n; i++)
		v[n++] = (struct known){ e->v[i].off, e->v[i].off + e->v[i].len };
	for (size_t i = 0; i < kl->n; i++)
		if (kl->v[i].dev == st.st_dev && kl->v[i].ino == st.st_ino)
			v[n++] = (struct known){ kl->v[i].start, kl->v[i].len ? kl->v[i].start + kl->v[i].len
									 : UINT64_MAX };
	qsort(v, n, sizeof(*v), known_cmp);
	for (size_t i = 0; i < n && pos != UINT64_MAX; i++) {
		if (v[i].start > pos)
			remote_walk(tb, fd, &st, pos, v[i].start, shown);
		if (v[i].end > pos)
			pos = v[i].end;
	}
	if (pos != UINT64_MAX)
		remote_walk(tb, fd, &st, pos, UINT64_MAX, shown);
	free(v);
	close(fd);
}

/* The pid of the holder a waiting entry names in wait_for (slot + 1),
 * 0 if none (or no longer a lock entry). */
static long safemap_blocker(const struct smt_table *t, const struct smt_slot *s)
{
	struct smt_slot b;

	if (SMT_STATE(s->state) != SMT_WAITING || s->wait_for == 0 ||
	    s->wait_for > smt_scan_limit(t) || smt_snapshot(t, s->wait_for - 1, &b) != 1)
		return 0;
	return b.pid;
}

/* quiet: a file found by scanning (it may vanish or be rewritten while we
 * look): no message, and a table we cannot read leaves the kernel's rows. */
static int list_file(struct libscols_table *tb, const struct klocks *kl, const char *path, bool quiet)
{
	struct smt_table t;
	struct stat st;
	struct entries e = { 0 };
	char tpath[PATH_MAX], *abs = realpath(path, NULL);
	const char *which, *shown = abs ? abs : path;
	int rc;

	rc = open_table(path, false, &st, &t, tpath, sizeof(tpath), &which);
	if (rc == -E_NOTABLE || (quiet && rc < 0 && which == tpath))
		rc = 0, t.fd = -1; /* no (usable) table: the kernel's locks only */
	if (rc < 0) {
		if (!quiet)
			warnx_("%s: %s", which, describe(rc));
		free(abs);
		return quiet ? 0 : EXIT_ERROR;
	}
	if (!quiet)
		netfs_note(path);
	if (t.fd >= 0) {
		read_entries(&t, &e, true);
		for (size_t i = 0; i < e.n; i++) {
			const struct smt_slot *s = &e.v[i];
			struct row r = { .path = shown, .type = "SAFEMAP",
					 .mode = s->mode == SMT_MODE_WRITE ? "WRITE" : "READ", .state = e.state[i],
					 .comm = s->comm, .tag = s->tag, .start = s->off, .len = s->len,
					 .since = s->since_ns, .pid = s->pid, .tid = s->tid, .dev = st.st_dev,
					 .ino = st.st_ino, .blocker = safemap_blocker(&t, s) };
			add_row(tb, &r);
		}
	}
	/* in table mode no slot has a kernel lock: what the kernel shows is
	 * the owners' fence and identity locks (not holders: hidden, see
	 * lockctl info) and locks of programs without safemap */
	bool tm = table_mode(&t);
	for (size_t i = 0; i < kl->n; i++) {
		const struct klock *k = &kl->v[i];
		if (k->dev != st.st_dev || k->ino != st.st_ino)
			continue;
		if (tm ? tm_kind(k) != TM_FOREIGN : covered(k, &e))
			continue;
		kernel_row(tb, k, shown, tm ? tm_state(k) : NULL);
	}
	remote_rows(tb, kl, &e, path, shown);
	free(e.v);
	free(e.state);
	free(abs);
	if (t.fd >= 0)
		smt_detach(&t);
	return 0;
}

/* Every file the kernel holds locks on, as lslocks does: paths are found
 * through /proc/PID/fd (OFD locks report pid -1, so every process's
 * descriptors are searched). */
struct lockedfile {
	dev_t dev;
	ino_t ino;
	char *path;
};

static void find_paths(struct lockedfile *v, size_t n)
{
	DIR *proc = opendir("/proc");
	struct dirent *pd;

	while (proc && (pd = readdir(proc))) {
		char dir[300];
		DIR *fds;
		struct dirent *fd;
		if (!isdigit((unsigned char)pd->d_name[0]))
			continue;
		snprintf(dir, sizeof(dir), "/proc/%s/fd", pd->d_name);
		if (!(fds = opendir(dir))) {
			ctl.unreadable += errno == EACCES || errno == EPERM;
			continue;
		}
		while ((fd = readdir(fds))) {
			char link[600], target[PATH_MAX];
			struct stat st;
			ssize_t len;
			snprintf(link, sizeof(link), "%s/%s", dir, fd->d_name);
			if (stat(link, &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			for (size_t i = 0; i < n; i++) {
				if (v[i].path || v[i].dev != st.st_dev || v[i].ino != st.st_ino)
					continue;
				if ((len = readlink(link, target, sizeof(target) - 1)) > 0) {
					target[len] = '\0';
					if (target[0] == '/' && !strstr(target, " (deleted)"))
						v[i].path = strdup(target);
				}
			}
		}
		closedir(fds);
	}
	if (proc)
		closedir(proc);
}

static int list_all(struct libscols_table *tb, const struct klocks *kl)
{
	struct lockedfile *v = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	for (size_t k = 0; k < kl->n; k++) {
		bool seen = false;
		for (size_t i = 0; i < n && !seen; i++)
			seen = v[i].dev == kl->v[k].dev && v[i].ino == kl->v[k].ino;
		if (seen)
			continue;
		GROW(v, n, cap);
		v[n++] = (struct lockedfile){ kl->v[k].dev, kl->v[k].ino, NULL };
	}
	find_paths(v, n);
	for (size_t i = 0; i < n; i++) {
		/* safemap's own liveness bytes make a lock table look locked:
		 * a file whose locks all lie there is a table, not data */
		size_t nk = 0, live = 0;
		for (size_t k = 0; k < kl->n; k++) {
			if (kl->v[k].dev != v[i].dev || kl->v[k].ino != v[i].ino)
				continue;
			nk++;
			live += kl->v[k].start >= SMT_LIVE_BASE;
		}
		if (nk && live == nk) {
			free(v[i].path);
			continue;
		}
		if (v[i].path) {
			rc |= list_file(tb, kl, v[i].path, true);
			free(v[i].path);
			continue;
		}
		if (ctl.noinaccessible)
			continue; /* -i: no path, no row (lslocks) */
		for (size_t k = 0; k < kl->n; k++)
			if (kl->v[k].dev == v[i].dev && kl->v[k].ino == v[i].ino)
				kernel_row(tb, &kl->v[k], "", NULL);
	}
	free(v);
	if (ctl.unreadable && !ctl.noinaccessible)
		warnx_("note: the open files of %u processes could not be read (not permitted): "
		       "their locks show no PATH (-i hides them)",
		       ctl.unreadable);
	return rc;
}

/* ---- commands ------------------------------------------------------------ */

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
static void parse_region(char **argv, uint64_t *off, uint64_t *len, bool *write)
{
	*off = parse_u64(argv[1], "offset");
	*len = parse_u64(argv[2], "length");
	*write = parse_mode(argv[3]);
	if (*len == 0 || *len > (uint64_t)INT64_MAX - *off)
		usage_err("length must be at least 1 and OFF+LEN within 2^63");
}

enum { OPT_OUTPUT_ALL = 256, OPT_DRY, OPT_TABLE_DIR };

static void help_list(void)
{
	printf("\nUsage:\n"
	       " %s list [options] [PATH...]\n"
	       "\nRegions held in each PATH (without PATH: in every locked file):\n"
	       "safemap's lock table joined with the kernel's locks.\n"
	       "\nOptions:\n"
	       " -o, --output <list>     output columns (+LIST adds to the defaults)\n"
	       "     --output-all        output all columns\n"
	       " -J, --json              JSON output\n"
	       " -r, --raw               raw output\n"
	       " -n, --noheadings        no headings\n"
	       " -b, --bytes             sizes in bytes\n"
	       " -u, --notruncate        do not truncate text in columns\n"
	       " -i, --noinaccessible    ignore locks whose file path cannot be found\n"
	       " -p, --pid <pid>         only the locks held by this process\n"
	       " -H, --list-columns      list the available columns\n"
	       "     --table-dir <dir>   tables live in DIR (default: $SAFEMAP_TABLE_DIR, or PATH.smlock)\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static const struct option list_opts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "output-all", no_argument, NULL, OPT_OUTPUT_ALL },
	{ "json", no_argument, NULL, 'J' },
	{ "raw", no_argument, NULL, 'r' },
	{ "noheadings", no_argument, NULL, 'n' },
	{ "bytes", no_argument, NULL, 'b' },
	{ "notruncate", no_argument, NULL, 'u' },
	{ "noinaccessible", no_argument, NULL, 'i' },
	{ "pid", required_argument, NULL, 'p' },
	{ "list-columns", no_argument, NULL, 'H' },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int cmd_list(int argc, char **argv)
{
	static const int excl[][EXCL_MAX] = { { 'J', 'r' } };
	int seen[ARRAY_SIZE(excl)] = { 0 }, c, rc = 0;
	bool list_cols = false;

	for (int i = 0; i < NDEFAULT; i++)
		ctl.columns[ctl.ncolumns++] = i;
	while ((c = getopt_long(argc, argv, ":o:JrnbuiHp:h", list_opts, NULL)) != -1) {
		check_exclusive(c, list_opts, excl, ARRAY_SIZE(excl), seen);
		switch (c) {
		case 'o': parse_columns(optarg); break;
		case OPT_OUTPUT_ALL:
			ctl.ncolumns = 0;
			for (int i = 0; i < NCOLS; i++)
				ctl.columns[ctl.ncolumns++] = i;
			break;
		case 'J': ctl.json = true; break;
		case 'r': ctl.raw = true; break;
		case 'n': ctl.noheadings = true; break;
		case 'b': ctl.bytes = true; break;
		case 'u': ctl.notrunc = true; break;
		case 'i': ctl.noinaccessible = true; break;
		case 'p': {
			const char *err = NULL;
			ctl.pid = (long)strtonum(optarg, 1, INT32_MAX, &err);
			if (err)
				usage_err("pid '%s' is %s", optarg, err);
			break;
		}
		case 'H': list_cols = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_list(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (list_cols) {
		list_columns();
		return 0;
	}

	struct klocks kl = { 0 };
	struct libscols_table *tb = new_table();
	struct fileid *ids = xrealloc(NULL, (size_t)(argc - optind) + 1, sizeof(*ids));
	size_t nids = 0;
	for (int i = optind; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0)
			ids[nids++] = (struct fileid){ st.st_dev, st.st_ino };
	}
	if (optind < argc && !nids)
		ids[nids++] = (struct fileid){ 0, 0 }; /* none of them: no lock */
	kernel_locks(&kl, ids, nids);
	free(ids);
	if (optind == argc)
		rc = list_all(tb, &kl);
	for (int i = optind; i < argc; i++)
		rc |= list_file(tb, &kl, argv[i], false);
	scols_print_table(tb);
	scols_unref_table(tb);
	klocks_free(&kl);
	return rc ? EXIT_ERROR : 0;
}

static void help_check(void)
{
	printf("\nUsage:\n"
	       " %s check [options] PATH OFF LEN r|w\n"
	       "\nIs [OFF, OFF+LEN) free for a read (r) or write (w) lock now?  If not, name\n"
	       "every holder in the way (exit status 1).  Files used in table-authority mode\n"
	       "(SM_OPT_TABLE_LOCKS) are answered from the lock table, others by the kernel.\n"
	       "\nOptions:\n"
	       " -v, --verbose           say which authority answered (table or kernel)\n"
	       " -J, --json              JSON output\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static void print_range(uint64_t start, uint64_t len)
{
	if (len)
		printf("%llu-%llu", (unsigned long long)start, (unsigned long long)(start + len - 1));
	else
		printf("%llu-EOF", (unsigned long long)start);
}

static const struct option check_opts[] = {
	{ "verbose", no_argument, NULL, 'v' },
	{ "json", no_argument, NULL, 'J' },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* A lock in check's way (or, in table mode, one the table does not see). */
struct hit {
	long pid;
	char comm[32], tag[32], type[8];
	bool write, safemap;
	uint64_t start, len; /* len 0: to end of file */
};

struct hits {
	struct hit *v;
	size_t n, cap;
};

static void hit_slot(struct hits *h, const struct smt_slot *s)
{
	GROW(h->v, h->n, h->cap);
	struct hit *x = &h->v[h->n++];
	memset(x, 0, sizeof(*x));
	x->pid = s->pid;
	strlcpy(x->comm, s->comm, sizeof(x->comm));
	strlcpy(x->tag, s->tag, sizeof(x->tag));
	strlcpy(x->type, "SAFEMAP", sizeof(x->type));
	x->write = s->mode == SMT_MODE_WRITE;
	x->safemap = true;
	x->start = s->off;
	x->len = s->len;
}

static void hit_klock(struct hits *h, const struct klock *k)
{
	GROW(h->v, h->n, h->cap);
	struct hit *x = &h->v[h->n++];
	memset(x, 0, sizeof(*x));
	x->pid = owner_of(k);
	comm_of(x->pid, x->comm, sizeof(x->comm));
	strlcpy(x->type, k->type, sizeof(x->type));
	x->write = k->write;
	x->start = k->start;
	x->len = k->len;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void json_hits(const char *name, const struct hits *h)
{
	printf(",\n  \"%s\": [", name);
	for (size_t i = 0; i < h->n; i++) {
		const struct hit *x = &h->v[i];
		printf("%s\n    {\"pid\": %ld, \"command\": ", i ? "," : "", x->pid);
		if (*x->comm)
			json_str(x->comm);
		else
			printf("null");
		printf(", \"tag\": ");
		if (*x->tag)
			json_str(x->tag);
		else
			printf("null");
		printf(", \"type\": \"%s\", \"mode\": \"%s\", \"start\": %llu, \"end\": ", x->type,
		       x->write ? "WRITE" : "READ", (unsigned long long)x->start);
		if (x->len)
			printf("%llu}", (unsigned long long)(x->start + x->len - 1));
		else
			printf("null}");
	}
	printf("%s]", h->n ? "\n  " : "");
}

static void print_hit(const struct hit *x)
{
	if (x->safemap) {
		printf("held by pid %ld (%s)%s%s%s: %s ", x->pid, x->comm, *x->tag ? " tag \"" : "", x->tag,
		       *x->tag ? "\"" : "", x->write ? "WRITE" : "READ");
		print_range(x->start, x->len);
		printf("\n");
		return;
	}
	if (x->pid > 0)
		printf("held by pid %ld (%s): %s %s ", x->pid, *x->comm ? x->comm : "?", x->type,
		       x->write ? "WRITE" : "READ");
	else
		printf("held by an unknown process: %s %s ", x->type, x->write ? "WRITE" : "READ");
	print_range(x->start, x->len);
	printf(" (without safemap)\n");
}

static int cmd_check(int argc, char **argv)
{
	struct smt_table t = { .fd = -1 };
	struct stat st;
	struct flock fl;
	struct entries e = { 0 };
	struct klocks kl = { 0 };
	struct hits in_way = { 0 }, unfenced = { 0 };
	char tpath[PATH_MAX];
	const char *which;
	uint64_t off, len;
	bool write, verbose = false, json = false, tm = false, have_table;
	int c, fd;

	while ((c = getopt_long(argc, argv, ":vJh", check_opts, NULL)) != -1) {
		switch (c) {
		case 'v': verbose = true; break;
		case 'J': json = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_check(); return 0;
		default: bad_option(c, argv);
		}
	}
	argv += optind;
	if (argc - optind != 4)
		usage_err("check needs PATH OFF LEN r|w");
	parse_region(argv, &off, &len, &write);
	if ((fd = open_regular(argv[0], O_RDONLY, &st)) < 0) {
		warnx_("%s: %s", argv[0], describe(fd));
		return EXIT_ERROR;
	}
	int trc = open_table(argv[0], false, &st, &t, tpath, sizeof(tpath), &which);
	have_table = trc == 0;
	if (have_table) {
		tm = table_mode(&t);
		read_entries(&t, &e, false);
		smt_detach(&t);
	}
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	if (!tm) {
		/* kernel mode: the kernel decides */
		fl.l_type = write ? F_WRLCK : F_RDLCK;
		fl.l_whence = SEEK_SET;
		fl.l_start = (off_t)off;
		fl.l_len = (off_t)len;
		if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
			warnx_("%s: F_OFD_GETLK: %s", argv[0], strerror(errno));
			close(fd);
			free(e.v);
			free(e.state);
			return EXIT_ERROR;
		}
	}
	close(fd);
	/* the holders in the way: in table mode the held slots of live owners
	 * (stale ones are free at the next conflict); in kernel mode, if the
	 * kernel found a conflict, safemap's live entries, then the kernel
	 * locks that are not theirs (with owners found for OFD locks) */
	if (tm || fl.l_type != F_UNLCK) {
		for (size_t i = 0; i < e.n; i++) {
			const struct smt_slot *s = &e.v[i];
			if (!overlaps(s->off, s->len, off, len) || (!write && s->mode != SMT_MODE_WRITE) ||
			    (strcmp(e.state[i], "held") != 0 && strcmp(e.state[i], "pending") != 0))
				continue;
			hit_slot(&in_way, s);
		}
		kernel_locks(&kl, &(struct fileid){ st.st_dev, st.st_ino }, 1);
		for (size_t i = 0; i < kl.n; i++) {
			const struct klock *k = &kl.v[i];
			if (k->dev != st.st_dev || k->ino != st.st_ino || k->blocked ||
			    !overlaps(k->start, k->len, off, len) || (!write && !k->write))
				continue;
			if (!tm && !have_table && tm_kind(k) == TM_FENCE) {
				/* a table-mode owner's fence, and no table to ask */
				warnx_("%s: owners are attached in table-authority mode, but %s: %s", argv[0],
				       which, describe(trc));
				free(e.v);
				free(e.state);
				free(in_way.v);
				klocks_free(&kl);
				return EXIT_ERROR;
			}
			if (!tm && !covered(k, &e))
				hit_klock(&in_way, k);
			else if (tm && tm_kind(k) == TM_FOREIGN)
				hit_klock(&unfenced, k); /* the table does not see it */
		}
	}
	bool busy = tm ? in_way.n > 0 : fl.l_type != F_UNLCK;
	const char *authority = tm ? "table" : "kernel";
	if (json) {
		printf("{\n  \"path\": ");
		json_str(argv[0]);
		printf(",\n  \"start\": %llu,\n  \"end\": %llu,\n  \"mode\": \"%s\",\n  \"authority\": \"%s\",\n"
		       "  \"free\": %s",
		       (unsigned long long)off, (unsigned long long)(off + len - 1), write ? "WRITE" : "READ",
		       authority, busy ? "false" : "true");
		json_hits("holders", &in_way);
		if (tm)
			json_hits("unexcluded", &unfenced);
		printf("\n}\n");
	} else {
		if (verbose)
			printf("authority: %s\n", tm ? "table (table-authority mode: held slots of live owners)"
						   : "kernel (F_OFD_GETLK on the data file)");
		if (!busy)
			printf("free\n");
		for (size_t i = 0; i < in_way.n; i++)
			print_hit(&in_way.v[i]);
		if (busy && !in_way.n) {
			/* gone between the probe and the listing, or hidden from us */
			printf("held: %s lock on ", fl.l_type == F_WRLCK ? "WRITE" : "READ");
			print_range((uint64_t)fl.l_start, (uint64_t)fl.l_len);
			printf(" (holder not found; see lockctl list %s)\n", argv[0]);
		}
		/* the fence keeps plain fcntl writers out, not readers */
		for (size_t i = 0; i < unfenced.n; i++) {
			const struct hit *x = &unfenced.v[i];
			fprintf(stderr, "%s: note: pid %ld (%s) holds a plain %s %s lock on ", prog, x->pid,
				*x->comm ? x->comm : "?", x->type, x->write ? "WRITE" : "READ");
			fflush(stdout);
			if (x->len)
				fprintf(stderr, "%llu-%llu", (unsigned long long)x->start,
					(unsigned long long)(x->start + x->len - 1));
			else
				fprintf(stderr, "%llu-EOF", (unsigned long long)x->start);
			fprintf(stderr, ": table mode does not exclude it\n");
		}
	}
	free(e.v);
	free(e.state);
	free(in_way.v);
	free(unfenced.v);
	klocks_free(&kl);
	return busy ? EXIT_CONFLICT : 0;
}

static void help_hold(void)
{
	printf("\nUsage:\n"
	       " %s hold [options] PATH OFF LEN r|w -- COMMAND [ARG...]\n"
	       "\nHold [OFF, OFF+LEN) for reading (r) or writing (w) while COMMAND runs,\n"
	       "like flock(1); exit with COMMAND's status.\n"
	       "\nOptions:\n"
	       " -t, --tag <tag>         the tag to register\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static const struct option hold_opts[] = {
	{ "tag", required_argument, NULL, 't' },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int cmd_hold(int argc, char **argv)
{
	sm_options o = { .size = sizeof(o) };
	sm_file *f;
	sm_slice *s;
	uint64_t off, len;
	bool write;
	int c, rc, status, dash;
	pid_t pid;

	/* COMMAND keeps its own options: parse only what comes before "--"
	 * (getopt would permute "--" away) */
	for (dash = 1; dash < argc && strcmp(argv[dash], "--") != 0; dash++)
		;
	while ((c = getopt_long(dash, argv, ":t:h", hold_opts, NULL)) != -1) {
		switch (c) {
		case 't': o.tag = optarg; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_hold(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (dash - optind != 4 || dash + 1 >= argc)
		usage_err("hold needs PATH OFF LEN r|w -- COMMAND");
	char **cmd = argv + dash + 1;
	argv += optind;
	parse_region(argv, &off, &len, &write);
	o.table_dir = table_dir;
	rc = sm_open(argv[0], write ? SM_RDWR : SM_RDONLY, &o, &f);
	if (rc == -EPROTO) {
		/* owners attached in table-authority mode refuse a kernel-mode
		 * opener (SPEC §12.1): join them in their mode */
		o.flags |= SM_OPT_TABLE_LOCKS;
		rc = sm_open(argv[0], write ? SM_RDWR : SM_RDONLY, &o, &f);
	}
	if (rc < 0) {
		warnx_("%s: %s", argv[0], sm_strerror(rc));
		return rc == -EINVAL || rc == -ERANGE ? EXIT_USAGE : EXIT_ERROR;
	}
	rc = write ? sm_map_write(f, off, len, 0, &s) : sm_map_read(f, off, len, 0, &s);
	if (rc < 0) {
		warnx_("%s %llu+%llu: %s", argv[0], (unsigned long long)off, (unsigned long long)len,
		       sm_strerror(rc));
		int n = rc == -EBUSY ? sm_holders(f, off, len, NULL, 0) : 0;
		sm_holder *h = n > 0 ? xrealloc(NULL, (size_t)n, sizeof(*h)) : NULL;
		if (h)
			n = sm_holders(f, off, len, h, (size_t)n);
		for (int i = 0; h && i < n; i++)
			warnx_("held by pid %d (%s)%s%s%s", h[i].pid, h[i].comm, *h[i].tag ? " tag \"" : "",
			       h[i].tag, *h[i].tag ? "\"" : "");
		free(h);
		sm_close(f);
		return rc == -EBUSY ? EXIT_CONFLICT : rc == -EINVAL || rc == -ERANGE ? EXIT_USAGE : EXIT_ERROR;
	}
	/* like flock(1): the region is held while the command runs; our
	 * descriptors are O_CLOEXEC, so the command cannot keep it */
	if ((pid = fork()) == 0) {
		execvp(cmd[0], cmd);
		warnx_("%s: %s", cmd[0], strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		warnx_("fork: %s", strerror(errno));
		status = EXIT_ERROR << 8;
	} else {
		signal(SIGINT, SIG_IGN);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	sm_release(s);
	sm_close(f);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static void help_reap(void)
{
	printf("\nUsage:\n"
	       " %s reap [options] PATH\n"
	       "\nRemove the table entries whose holder is gone, and invalid ones.\n"
	       "\nOptions:\n"
	       "     --dry-run           only count them\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static const struct option reap_opts[] = {
	{ "dry-run", no_argument, NULL, OPT_DRY },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int cmd_reap(int argc, char **argv)
{
	struct smt_table t;
	struct stat st;
	char tpath[PATH_MAX];
	const char *which;
	bool dry = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, ":h", reap_opts, NULL)) != -1) {
		switch (c) {
		case OPT_DRY: dry = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_reap(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("reap needs one PATH");
	argv += optind;
	if ((rc = open_table(argv[0], !dry, &st, &t, tpath, sizeof(tpath), &which)) < 0) {
		warnx_("%s: %s", which, describe(rc));
		return EXIT_ERROR;
	}
	rc = smt_reap(&t, dry);
	smt_detach(&t);
	if (rc < 0) {
		warnx_("%s: %s", tpath, strerror(-rc));
		return EXIT_ERROR;
	}
	printf("%s %d stale %s\n", dry ? "would reap" : "reaped", rc, rc == 1 ? "entry" : "entries");
	return 0;
}

static void help_info(void)
{
	printf("\nUsage:\n"
	       " %s info [options] PATH\n"
	       "\nThe table's path, format, capacity, generation, entries and lock mode.  In\n"
	       "kernel mode: whether every held entry is backed by a kernel lock; in table\n"
	       "mode: the owners, their fence, and the kernel locks the fence does not exclude.\n"
	       "\nOptions:\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

/* Every line of /proc/locks on file (dev, ino), each counted (the
 * deduplicated set of kernel_locks() would show many owners' identical
 * fences as one).  Racy against concurrent changes: for display. */
static void count_locks(dev_t dev, ino_t ino, uint64_t lo, uint64_t hi, bool write, unsigned *n)
{
	FILE *f = proc_open("/proc/locks");
	char *line = NULL;
	size_t cap = 0;

	*n = 0;
	while (f && getline(&line, &cap, f) > 0) {
		struct klock k;
		if (parse_lock_line(line, &k) && !k.blocked && k.dev == dev && k.ino == ino &&
		    k.write == write && k.start >= lo && k.start < hi && k.len == 1)
			++*n;
	}
	free(line);
	if (f)
		fclose(f);
}

/* info's table-mode part: owners, fences, and what the fence lets in. */
static void tm_info(const struct smt_table *t, const struct stat *st, unsigned held, unsigned stale)
{
	struct stat ts;
	struct klocks kl = { 0 };
	unsigned nown = 0, ids = 0, fences = 0, foreign = 0;

	/* owners: their liveness bytes (one write lock each, distinct) */
	if (fstat(t->fd, &ts) == 0)
		count_locks(ts.st_dev, ts.st_ino, SMT_LIVE_BASE, SMT_LIVE_BASE + SMT_MAX_OWNERS, true, &nown);
	count_locks(st->st_dev, st->st_ino, TM_BAND_MIN, TM_BAND_END, false, &ids);
	kernel_locks(&kl, &(struct fileid){ st->st_dev, st->st_ino }, 1);
	for (size_t i = 0; i < kl.n; i++) {
		int kind = tm_kind(&kl.v[i]);
		fences += kind == TM_FENCE;
		foreign += kind == TM_FOREIGN;
	}
	printf("owners:       %u attached in table mode\n", nown);
	printf("held slots:   %u of live owners, %u stale (free at the next conflict, or lockctl reap)\n",
	       held, stale);
	printf("fence:        %s over [0, 2^62), %u identity %s (table-mode owners' OFD read locks)\n",
	       fences ? "present" : "MISSING", ids, ids == 1 ? "lock" : "locks");
	printf("foreign:      %u kernel %s on the data file%s\n", foreign, foreign == 1 ? "lock" : "locks",
	       foreign ? " (plain fcntl readers are NOT excluded from table-mode writers):" : "");
	for (size_t i = 0; i < kl.n; i++) {
		const struct klock *k = &kl.v[i];
		if (tm_kind(k) != TM_FOREIGN)
			continue;
		long pid = owner_of(k);
		char comm[32];
		comm_of(pid, comm, sizeof(comm));
		printf("  pid %ld (%s): %s %s ", pid, *comm ? comm : "?", k->type, k->write ? "WRITE" : "READ");
		print_range(k->start, k->len);
		printf(" %s\n", tm_state(k));
	}
	klocks_free(&kl);
}

static const struct option info_opts[] = {
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int cmd_info(int argc, char **argv)
{
	struct smt_table t;
	struct stat st, dst;
	char tpath[PATH_MAX];
	const char *which;
	unsigned held = 0, stale = 0, changing = 0, invalid = 0, backed = 0;
	int c, rc, fd;

	while ((c = getopt_long(argc, argv, ":h", info_opts, NULL)) != -1) {
		switch (c) {
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_info(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("info needs one PATH");
	argv += optind;
	if ((rc = open_table(argv[0], false, &st, &t, tpath, sizeof(tpath), &which)) < 0) {
		warnx_("%s: %s", which, describe(rc));
		return EXIT_ERROR;
	}
	bool tm = table_mode(&t);
	/* in table mode no slot has a kernel lock: nothing to back */
	fd = tm ? -1 : open_regular(argv[0], O_RDONLY, &dst);
	uint32_t lim = smt_scan_limit(&t);
	for (uint32_t i = 0; i < lim; i++) {
		struct smt_slot s;
		rc = smt_snapshot(&t, i, &s);
		if (rc == -EAGAIN)
			changing++;
		else if (rc < 0)
			invalid++;
		if (rc != 1)
			continue;
		if (strcmp(state_name(&t, &s), "stale") == 0) {
			stale++;
			continue;
		}
		held++;
		/* consistency with the kernel: a live entry must be backed by
		 * a kernel lock that conflicts with the opposite probe */
		struct flock fl = { .l_type = s.mode == SMT_MODE_WRITE ? F_RDLCK : F_WRLCK,
				    .l_whence = SEEK_SET, .l_start = (off_t)s.off, .l_len = (off_t)s.len };
		if (fd >= 0 && fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
			backed++;
	}
	if (fd >= 0)
		close(fd);
	printf("table:        %s\n", tpath);
	printf("format:       version %u, %u slots of %u bytes, header %u bytes\n", t.hdr.version,
	       t.hdr.nslots, t.hdr.slot_size, t.hdr.header_size);
	printf("generation:   %llu\n", (unsigned long long)t.hdr.generation);
	{ /* the mode bytes (SPEC §12.1): who is attached, in which lock mode */
		bool km = sm_ofd_test(t.fd, true, SMT_MODE_BYTE_KERNEL, 1) == -EBUSY;
		printf("mode:         %s\n", tm ? "table (SM_OPT_TABLE_LOCKS: the table decides exclusion; "
					     "plain fcntl readers are not fenced off)"
					  : km ? "kernel (OFD locks decide exclusion)" : "none attached");
	}
	printf("data file:    dev %llx inode %llu%s\n", (unsigned long long)t.hdr.data_dev,
	       (unsigned long long)t.hdr.data_ino,
	       t.hdr.data_dev == (uint64_t)st.st_dev && t.hdr.data_ino == (uint64_t)st.st_ino
		       ? " (matches)"
		       : " (does NOT match: the next opener rebuilds the table)");
	printf("slots used:   %u of %u (high water)\n", lim, t.nslots);
	printf("entries:      %u held, %u stale, %u changing, %u invalid\n", held, stale, changing, invalid);
	if (tm)
		tm_info(&t, &st, held, stale);
	else
		printf("kernel locks: %u of %u held entries backed by a kernel lock%s\n", backed, held,
		       backed == held ? " (consistent)" : "");
	smt_detach(&t);
	netfs_note(argv[0]);
	return 0;
}

/* ---- map: the file as a bar ------------------------------------------------ */

/* One region drawn on the bar, and listed under it. */
struct span {
	uint64_t start, len; /* len 0: to end of file */
	char glyph;
	char desc[192];
};

/* Glyphs, by precedence when regions share a cell, with their colours. */
static const struct glyph {
	char c;
	const char *color, *name, *svg_class, *fill;
} glyphs[] = {
	{ '#', "\033[1;31m", "write", "write", "#d62728" },
	{ 'K', "\033[35m", "kernel lock without safemap", "kernel", "#9467bd" },
	{ '=', "\033[32m", "read", "read", "#2ca02c" },
	{ '~', "\033[33m", "waiting", "waiting", "#ffbf00" },
	{ '?', "\033[2m", "stale", "stale", "#999999" },
	{ '.', NULL, "free", "free", "#f4f4f4" },
};

static const struct glyph *glyph_of(char c)
{
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++)
		if (glyphs[i].c == c)
			return &glyphs[i];
	return &glyphs[ARRAY_SIZE(glyphs) - 1];
}

static void span_range(const struct span *sp, char *buf, size_t n)
{
	if (sp->len)
		snprintf(buf, n, "%llu-%llu", (unsigned long long)sp->start,
			 (unsigned long long)(sp->start + sp->len - 1));
	else
		snprintf(buf, n, "%llu-EOF", (unsigned long long)sp->start);
}

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default:
			/* control bytes are not XML; a tag or comm may hold any */
			if ((unsigned char)*s < 0x20)
				fputc('?', f);
			else
				fputc(*s, f);
		}
	}
}

/* The same picture as SVG: the bar with each region at its exact place
 * (at least one pixel wide), the scale, the legend and the holders. */
static int write_svg(const char *file, const char *title, uint64_t size, uint64_t extent, const struct span *sp,
		     size_t nsp, long width)
{
	const double bar_w = (double)width * 8, x0 = 10, y0 = 34, bar_h = 28;
	const int line_h = 16;
	int height = (int)(y0 + bar_h + 24 + line_h * (2 + (int)nsp) + 10);
	double svg_w = bar_w + 2 * x0, legend_w = x0;
	FILE *f = fopen(file, "we");

	if (!f)
		return -errno;
	for (size_t g = 0; g < ARRAY_SIZE(glyphs); g++)
		legend_w += 14 + 7.5 * (double)strlen(glyphs[g].name) + 14;
	if (legend_w > svg_w)
		svg_w = legend_w;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%d\" "
		   "viewBox=\"0 0 %.0f %d\" font-family=\"monospace\" font-size=\"12\">\n",
		svg_w, height, svg_w, height);
	fputs("<title>lockctl map ", f);
	xml_text(f, title);
	fputs("</title>\n<text x=\"10\" y=\"20\">", f);
	xml_text(f, title);
	fprintf(f, ": %llu bytes</text>\n", (unsigned long long)size);
	fprintf(f, "<rect class=\"free\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\" stroke=\"#888888\"/>\n",
		x0, y0, bar_w, bar_h, glyph_of('.')->fill);
	/* lowest precedence first, so writes are drawn on top */
	for (size_t g = ARRAY_SIZE(glyphs); g-- > 0;) {
		for (size_t i = 0; i < nsp; i++) {
			if (sp[i].glyph != glyphs[g].c)
				continue;
			uint64_t end = sp[i].len ? sp[i].start + sp[i].len : extent;
			double x = x0 + bar_w * (double)sp[i].start / (double)extent;
			double w = bar_w * (double)(end - sp[i].start) / (double)extent;
			char range[64];
			span_range(&sp[i], range, sizeof(range));
			fprintf(f, "<rect class=\"%s\" x=\"%.2f\" y=\"%.0f\" width=\"%.2f\" height=\"%.0f\" fill=\"%s\">"
				   "<title>%s ", glyphs[g].svg_class, x, y0, w < 1 ? 1 : w, bar_h, glyphs[g].fill, range);
			xml_text(f, sp[i].desc);
			fputs("</title></rect>\n", f);
		}
	}
	double y = y0 + bar_h + 14;
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">0</text>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%llu</text>\n",
		x0, y, x0 + bar_w, y, (unsigned long long)(extent - 1));
	y += line_h + 4;
	double lx = x0;
	for (size_t g = 0; g < ARRAY_SIZE(glyphs); g++) {
		fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" height=\"10\" fill=\"%s\" stroke=\"#888888\"/>"
			   "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
			lx, y - 9, glyphs[g].fill, lx + 14, y, glyphs[g].name);
		lx += 14 + 7.5 * (double)strlen(glyphs[g].name) + 14;
	}
	for (size_t i = 0; i < nsp; i++) {
		char range[64];
		y += line_h;
		span_range(&sp[i], range, sizeof(range));
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%c %s ", x0, y, glyph_of(sp[i].glyph)->fill,
			sp[i].glyph, range);
		xml_text(f, sp[i].desc);
		fputs("</text>\n", f);
	}
	fputs("</svg>\n", f);
	if (ferror(f) | (fclose(f) != 0))
		return -EIO;
	return 0;
}

static int precedence(char c)
{
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++)
		if (glyphs[i].c == c)
			return (int)(ARRAY_SIZE(glyphs) - i);
	return 0;
}

static const char *color_of(char c)
{
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++)
		if (glyphs[i].c == c)
			return glyphs[i].color;
	return NULL;
}

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void help_map(void)
{
	printf("\nUsage:\n"
	       " %s map [options] PATH\n"
	       "\nThe file as a bar scaled to the terminal: read and write regions, waiters,\n"
	       "stale entries and kernel locks of other programs, with a legend and the\n"
	       "holders listed under it.\n"
	       "\nOptions:\n"
	       " -w, --width <n>         width of the picture (default: the terminal's, or 80)\n"
	       "     --color[=<when>]    colour the bar: auto (on a terminal), always, never\n"
	       "     --svg <file>        also write the picture as SVG to FILE\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static void help_watch(void)
{
	printf("\nUsage:\n"
	       " %s watch [options] PATH\n"
	       "\nThe map of PATH, redrawn every second as locks come and go.\n"
	       "\nOptions:\n"
	       "     --count <n>         draw n pictures, then exit\n"
	       " -w, --width <n>         width of the picture (default: the terminal's, or 80)\n"
	       "     --color[=<when>]    colour the bar: auto (on a terminal), always, never\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

/* Options shared by map and watch. */
struct map_opts {
	long width;
	int color; /* -1: auto */
	long count;   /* watch: frames to draw, 0: until interrupted */
	const char *svg; /* map: also write the picture as SVG here */
};

static void map_defaults(struct map_opts *m)
{
	if (m->color < 0)
		m->color = isatty(STDOUT_FILENO);
	if (!m->width) {
		struct winsize ws;
		const char *cols = getenv("COLUMNS");
		if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 12)
			m->width = ws.ws_col;
		else if (cols && atol(cols) >= 12 && atol(cols) <= 1000)
			m->width = atol(cols);
		else
			m->width = 80;
	}
}

enum { OPT_COLOR = 300, OPT_COUNT, OPT_SVG };

/* Parse map's (and watch's) options; returns the index of PATH. */
static const struct option map_longopts[] = {
	{ "width", required_argument, NULL, 'w' },
	{ "color", optional_argument, NULL, OPT_COLOR },
	{ "svg", required_argument, NULL, OPT_SVG },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const struct option watch_longopts[] = {
	{ "width", required_argument, NULL, 'w' },
	{ "color", optional_argument, NULL, OPT_COLOR },
	{ "count", required_argument, NULL, OPT_COUNT },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int map_options(int argc, char **argv, struct map_opts *m, bool watch)
{
	int c;

	m->width = 0;
	m->color = -1;
	m->count = 0;
	m->svg = NULL;
	while ((c = getopt_long(argc, argv, ":w:h", watch ? watch_longopts : map_longopts, NULL)) != -1) {
		const char *err = NULL;
		switch (c) {
		case 'w':
			m->width = (long)strtonum(optarg, 12, 1000, &err);
			if (err)
				usage_err("width '%s' is %s (12 to 1000)", optarg, err);
			break;
		case OPT_COLOR:
			if (!optarg || !strcmp(optarg, "always"))
				m->color = 1;
			else if (!strcmp(optarg, "never"))
				m->color = 0;
			else if (!strcmp(optarg, "auto"))
				m->color = -1;
			else
				usage_err("--color must be auto, always or never, not '%s'", optarg);
			break;
		case OPT_COUNT:
			m->count = (long)strtonum(optarg, 1, LONG_MAX, &err);
			if (err)
				usage_err("count '%s' is %s", optarg, err);
			break;
		case OPT_SVG:
			m->svg = optarg;
			break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h':
			if (watch)
				help_watch();
			else
				help_map();
			exit(0);
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("%s needs one PATH", watch ? "watch" : "map");
	map_defaults(m);
	return optind;
}

static int draw_map(const char *path, const struct map_opts *m)
{
	struct smt_table t;
	struct stat st;
	struct entries e = { 0 };
	struct klocks kl = { 0 };
	struct span *sp = NULL;
	size_t nsp = 0, cap = 0;
	char tpath[PATH_MAX];
	const char *which;
	int rc;

	rc = open_table(path, false, &st, &t, tpath, sizeof(tpath), &which);
	if (rc < 0 && rc != -E_NOTABLE) {
		warnx_("%s: %s", which, describe(rc));
		return EXIT_ERROR;
	}
	bool tm = false; /* table mode: the owners' fences are not regions */
	if (rc == 0) {
		tm = table_mode(&t);
		read_entries(&t, &e, true);
		smt_detach(&t);
	}
	for (size_t i = 0; i < e.n; i++) {
		const struct smt_slot *s = &e.v[i];
		GROW(sp, nsp, cap);
		struct span *x = &sp[nsp++];
		x->start = s->off;
		x->len = s->len;
		x->glyph = !strcmp(e.state[i], "stale") ? '?' : !strcmp(e.state[i], "waiting") ? '~'
							 : s->mode == SMT_MODE_WRITE ? '#' : '=';
		snprintf(x->desc, sizeof(x->desc), "%-5s %-7s pid %d (%s)%s%s%s", s->mode == SMT_MODE_WRITE ? "WRITE" : "READ",
			 e.state[i], s->pid, s->comm, *s->tag ? " tag \"" : "", s->tag, *s->tag ? "\"" : "");
	}
	kernel_locks(&kl, &(struct fileid){ st.st_dev, st.st_ino }, 1);
	for (size_t i = 0; i < kl.n; i++) {
		const struct klock *k = &kl.v[i];
		char comm[32];
		if (k->dev != st.st_dev || k->ino != st.st_ino || (tm ? tm_kind(k) != TM_FOREIGN : covered(k, &e)))
			continue;
		long pid = owner_of(k);
		comm_of(pid, comm, sizeof(comm));
		GROW(sp, nsp, cap);
		struct span *x = &sp[nsp++];
		x->start = k->start;
		x->len = k->len;
		x->glyph = k->blocked ? '~' : 'K';
		snprintf(x->desc, sizeof(x->desc), "%-5s %-7s pid %ld (%s) %s", k->write ? "WRITE" : "READ",
			 tm ? tm_state(k) : k->blocked ? "waiting" : "held", pid, comm, k->type);
	}
	qsort(sp, nsp, sizeof(*sp), span_cmp);

	/* the bar covers [0, extent): the file, or further if regions do */
	uint64_t extent = (uint64_t)st.st_size;
	for (size_t i = 0; i < nsp; i++) {
		uint64_t end = sp[i].len ? sp[i].start + sp[i].len : sp[i].start + 1;
		if (end > extent)
			extent = end;
	}
	if (!extent)
		extent = 1;
	size_t cells = (size_t)m->width - 2;
	char *bar = xrealloc(NULL, cells + 1, 1);
	memset(bar, '.', cells);
	bar[cells] = '\0';
	for (size_t i = 0; i < nsp; i++) {
		uint64_t end = sp[i].len ? sp[i].start + sp[i].len : extent;
		/* every cell that holds a byte of the region, so that a
		 * one-byte lock still shows */
		size_t first = (size_t)((unsigned __int128)sp[i].start * cells / extent);
		size_t last = (size_t)(((unsigned __int128)end * cells + extent - 1) / extent);
		for (size_t k = first; k < last && k < cells; k++)
			if (precedence(sp[i].glyph) > precedence(bar[k]))
				bar[k] = sp[i].glyph;
	}

	char *abs = realpath(path, NULL), num[32];
	const char *shown = abs ? abs : path;
	printf("%s: %llu bytes, %zu cells of ~%llu bytes\n", shown, (unsigned long long)st.st_size,
	       cells, (unsigned long long)((extent + cells - 1) / cells));
	putchar('[');
	for (size_t k = 0; k < cells; k++) {
		const char *col = m->color ? color_of(bar[k]) : NULL;
		if (col)
			printf("%s%c\033[0m", col, bar[k]);
		else
			putchar(bar[k]);
	}
	printf("]\n");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)(extent - 1));
	printf(" 0%*s\n", (int)(cells - 1), num);
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++) {
		const char *col = m->color ? glyphs[i].color : NULL;
		printf("%s%s%c%s %s", i ? "  " : " ", col ? col : "", glyphs[i].c, col ? "\033[0m" : "", glyphs[i].name);
	}
	printf("\n");
	for (size_t i = 0; i < nsp; i++) {
		char range[64];
		span_range(&sp[i], range, sizeof(range));
		printf(" %c %-21s %s\n", sp[i].glyph, range, sp[i].desc);
	}
	if (m->svg && (rc = write_svg(m->svg, shown, (uint64_t)st.st_size, extent, sp, nsp, m->width)) < 0) {
		warnx_("%s: %s", m->svg, strerror(-rc));
		rc = EXIT_ERROR;
	} else
		rc = 0;
	free(bar);
	free(sp);
	free(e.v);
	free(e.state);
	klocks_free(&kl);
	free(abs);
	return rc;
}

static int cmd_map(int argc, char **argv)
{
	struct map_opts m;
	int i = map_options(argc, argv, &m, false);

	return draw_map(argv[i], &m);
}

/* Redraw the map every second: slots change through a shared mapping,
 * which inotify does not report, so a tick it is (never a busy loop). */
static int cmd_watch(int argc, char **argv)
{
	struct map_opts m;
	int i = map_options(argc, argv, &m, true), rc = 0;
	bool tty = isatty(STDOUT_FILENO);

	for (long n = 0; !m.count || n < m.count; n++) {
		if (n) {
			struct timespec ts = { 1, 0 };
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
		if (tty)
			fputs("\033[H\033[2J", stdout); /* like watch(1) */
		else if (n)
			putchar('\n');
		if ((rc = draw_map(argv[i], &m)) != 0)
			break;
		fflush(stdout);
	}
	return rc;
}

/* ---- the command table (kmod's tools/kmod.c) ------------------------------ */

static int cmd_help(int argc, char **argv);
static int cmd_completion(int argc, char **argv);

static const struct option main_opts[] = {
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const struct option no_opts[] = { { NULL, 0, NULL, 0 } };

static const struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const struct option *opts; /* for the completion script */
	const char *help;
} commands[] = {
	{ "list", cmd_list, list_opts, "regions held in files: the lock table joined with the kernel's locks" },
	{ "check", cmd_check, check_opts, "is a region free? if not, who holds it" },
	{ "hold", cmd_hold, hold_opts, "hold a region while a command runs (like flock(1))" },
	{ "reap", cmd_reap, reap_opts, "remove table entries whose holder is gone" },
	{ "info", cmd_info, info_opts, "the table's header, capacity, generation and consistency" },
	{ "map", cmd_map, map_longopts, "a picture of the file's regions: who holds what" },
	{ "watch", cmd_watch, watch_longopts, "the picture, redrawn every second" },
	{ "completion", cmd_completion, no_opts, "print the bash completion script (completion bash)" },
	{ "help", cmd_help, no_opts, "this help" },
};

/* Every option of a command, short and long, for the completion script. */
static void print_options(const struct option *opts)
{
	for (const struct option *o = opts; o->name; o++) {
		if (o->val > 0 && o->val < 128 && isalnum(o->val))
			printf(" -%c", o->val);
		printf(" --%s", o->name);
	}
}

/* The bash completion script, generated from the tables above so it never
 * falls behind them: `lockctl completion bash` >
 * ${datadir}/bash-completion/completions/lockctl */
static int cmd_completion(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[1], "bash") != 0)
		usage_err("completion needs the shell: bash");
	printf("# bash completion for lockctl(1), generated by 'lockctl completion bash'\n"
	       "_lockctl()\n{\n"
	       "\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd= i\n"
	       "\tCOMPREPLY=()\n"
	       "\tfor ((i = 1; i < COMP_CWORD; i++)); do\n"
	       "\t\tcase ${COMP_WORDS[i]} in\n"
	       "\t\t--table-dir) ((i++)) ;;\n"
	       "\t\t-*) ;;\n"
	       "\t\t*) cmd=${COMP_WORDS[i]}; break ;;\n"
	       "\t\tesac\n"
	       "\tdone\n"
	       "\tlocal j\n"
	       "\tif [[ $cmd == hold ]]; then\n"
	       "\t\tfor ((j = i + 1; j < COMP_CWORD; j++)); do\n"
	       "\t\t\tif [[ ${COMP_WORDS[j]} == -- ]]; then\n"
	       "\t\t\t\t((j + 1 == COMP_CWORD)) && COMPREPLY=($(compgen -c -- \"$cur\" | sort -u)) ||\n"
	       "\t\t\t\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
	       "\t\t\t\treturn\n"
	       "\t\t\tfi\n"
	       "\t\tdone\n"
	       "\tfi\n"
	       "\tcase $prev in\n"
	       "\t--table-dir) COMPREPLY=($(compgen -d -- \"$cur\")); return ;;\n"
	       "\t--svg) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
	       "\t-p|--pid) COMPREPLY=($(compgen -W \"$(cd /proc && echo [0-9]*)\" -- \"$cur\")); return ;;\n"
	       "\t-t|--tag|-w|--width|--count) return ;;\n"
	       "\t-o|--output)\n"
	       "\t\tlocal w=${cur##*,} pre\n"
	       "\t\tpre=${cur%%\"$w\"}\n"
	       "\t\tif [[ -z $pre && $w == +* ]]; then pre=+; w=${w#+}; fi\n"
	       "\t\tCOMPREPLY=($(compgen -P \"$pre\" -W \"");
	for (int i = 0; i < NCOLS; i++)
		printf("%s%s", i ? " " : "", infos[i].name);
	printf("\" -- \"$w\"))\n"
	       "\t\treturn ;;\n"
	       "\tesac\n"
	       "\tif [[ $cur == --color=* ]]; then\n"
	       "\t\tCOMPREPLY=($(compgen -P --color= -W \"auto always never\" -- \"${cur#--color=}\"))\n"
	       "\t\treturn\n"
	       "\tfi\n"
	       "\tlocal opts\n"
	       "\tcase $cmd in\n"
	       "\t'')\n"
	       "\t\tif [[ $cur == -* ]]; then opts='");
	print_options(main_opts);
	printf("'; else opts='");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		printf(" %s", commands[i].name);
	printf("'; fi ;;\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		printf("\t%s) opts='", commands[i].name);
		print_options(commands[i].opts);
		printf("' ;;\n");
	}
	printf("\tesac\n"
	       "\tif [[ $cur == -* || -z $cmd ]]; then\n"
	       "\t\tCOMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
	       "\telif [[ $cmd == completion ]]; then\n"
	       "\t\tCOMPREPLY=($(compgen -W bash -- \"$cur\"))\n"
	       "\telif [[ $cmd == check || $cmd == hold ]]; then\n"
	       "\t\t# PATH, then OFF LEN r|w\n"
	       "\t\tlocal n=0\n"
	       "\t\tfor ((i++; i < COMP_CWORD; i++)); do\n"
	       "\t\t\tcase ${COMP_WORDS[i]} in -t|--tag|--table-dir) ((i++)) ;; -*) ;; *) ((n++)) ;; esac\n"
	       "\t\tdone\n"
	       "\t\tcase $n in\n"
	       "\t\t0) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n"
	       "\t\t3) COMPREPLY=($(compgen -W 'r w' -- \"$cur\")) ;;\n"
	       "\t\t4) [[ $cmd == hold ]] && COMPREPLY=(--) ;;\n"
	       "\t\tesac\n"
	       "\telif [[ $cmd != help ]]; then\n"
	       "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
	       "\tfi\n"
	       "}\n"
	       "complete -F _lockctl lockctl\n");
	return 0;
}

static void help(void)
{
	printf("\nUsage:\n"
	       " %s [options] <command> [command options] [args]\n"
	       "\nInspect and hold regions of files shared through safemap.\n"
	       "\nCommands:\n",
	       prog);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		printf("  %-8s %s\n", commands[i].name, commands[i].help);
	printf("\nOptions:\n"
	       "     --table-dir <dir>   tables live in DIR (default: $SAFEMAP_TABLE_DIR, or PATH.smlock)\n"
	       " -V, --version           display version\n"
	       " -h, --help              display this help\n"
	       "\n'%s <command> --help' describes a command's options.\n"
	       "\nExit status: 0 success (check: free), 1 conflict (check, hold), 2 bad usage,\n"
	       "3 the file or its table could not be read; hold exits with COMMAND's status.\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	help();
	return 0;
}


int main(int argc, char **argv)
{
	int c;

	opterr = 0; /* bad_option says it on one line */
	/* "+": stop at the command; its options are its own */
	while ((c = getopt_long(argc, argv, "+:hV", main_opts, NULL)) != -1) {
		switch (c) {
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'V': printf("%s from safemap %s\n", prog, PACKAGE_VERSION); return 0;
		case 'h': help(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (optind >= argc)
		usage_err("missing command");
	const char *name = argv[optind];
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(commands[i].name, name) != 0)
			continue;
		cmd_name = name;
		argc -= optind;
		argv += optind;
		optind = 0; /* a fresh getopt for the command */
		return commands[i].fn(argc, argv);
	}
	usage_err("unknown command '%s'", name);
}
