/* SPDX-License-Identifier: MIT */
/*
 * lockctl - inspect and hold safemap regions (SPEC §7).
 *
 * Like util-linux lslocks, but it reads safemap's lock tables, so it can
 * name the holder of an OFD lock (the kernel reports pid -1 for those),
 * show tags and flag stale entries; it joins the table with /proc/locks so
 * locks of programs that do not use safemap (OFD, POSIX, FLOCK) appear too.
 * Output goes through libsmartcols, the library behind lslocks.
 *
 * Exit status: 0 success (check: the region is free), 1 check found a
 * conflict or hold could not take the region, 2 bad usage or input,
 * 3 the file or its table could not be read; hold exits with the
 * command's status.
 */
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
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/stdlib.h>
#include <bsd/string.h>

#include "safemap-internal.h"

#define EXIT_CONFLICT 1
#define EXIT_USAGE 2
#define EXIT_ERROR 3

static const char *prog = "lockctl";

__attribute__((noreturn, format(printf, 1, 2))) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see %s --help)\n", prog);
	exit(EXIT_USAGE);
}

/* ---- columns, as in lslocks ---------------------------------------------- */

enum { COL_PATH, COL_START, COL_END, COL_SIZE, COL_MODE, COL_STATE, COL_PID, COL_COMMAND,
       COL_TAG, COL_SINCE, COL_TYPE, COL_TID, NCOLS };

static const struct colinfo {
	const char *name;
	double whint;
	int flags;
	const char *help;
} infos[NCOLS] = {
	[COL_PATH] = { "PATH", 0.3, SCOLS_FL_TRUNC, "path of the locked file" },
	[COL_START] = { "START", 5, SCOLS_FL_RIGHT, "first byte of the region" },
	[COL_END] = { "END", 5, SCOLS_FL_RIGHT, "last byte of the region" },
	[COL_SIZE] = { "SIZE", 4, SCOLS_FL_RIGHT, "size of the region" },
	[COL_MODE] = { "MODE", 5, 0, "READ or WRITE" },
	[COL_STATE] = { "STATE", 7, 0, "held, waiting, or stale (its holder is gone)" },
	[COL_PID] = { "PID", 5, SCOLS_FL_RIGHT, "holder's pid (-1: an OFD lock of an unknown holder)" },
	[COL_COMMAND] = { "COMMAND", 15, 0, "holder's program name" },
	[COL_TAG] = { "TAG", 10, 0, "holder's safemap tag" },
	[COL_SINCE] = { "SINCE", 19, 0, "when the region was taken" },
	[COL_TYPE] = { "TYPE", 7, 0, "SAFEMAP (from the table), or the kernel lock type OFDLCK/POSIX/FLOCK" },
	[COL_TID] = { "TID", 5, SCOLS_FL_RIGHT, "holder's thread id" },
};

static int columns[NCOLS * 2];
static size_t ncolumns;
static bool raw, json, noheadings, bytes;

static int column_id(const char *name, size_t len)
{
	for (int i = 0; i < NCOLS; i++)
		if (strlen(infos[i].name) == len && strncasecmp(infos[i].name, name, len) == 0)
			return i;
	usage_error("unknown column: %.*s", (int)len, name);
}

/* -o LIST, or -o +LIST to add to the defaults */
static void parse_columns(const char *list)
{
	if (*list == '+')
		list++;
	else
		ncolumns = 0;
	while (*list) {
		const char *end = strchrnul(list, ',');
		if (end == list)
			usage_error("empty column name in --output");
		if (ncolumns >= sizeof(columns) / sizeof(columns[0]))
			usage_error("too many columns");
		columns[ncolumns++] = column_id(list, (size_t)(end - list));
		list = *end ? end + 1 : end;
	}
}

/* ---- rows -------------------------------------------------------------- */

struct row {
	const char *path, *type, *mode, *state, *comm, *tag;
	uint64_t start, len, since;
	long pid, tid;
};

static void add_row(struct libscols_table *tb, const struct row *r)
{
	struct libscols_line *ln = scols_table_new_line(tb, NULL);
	char buf[64];

	if (!ln) {
		fprintf(stderr, "%s: out of memory\n", prog);
		exit(EXIT_ERROR);
	}
	for (size_t i = 0; i < ncolumns; i++) {
		const char *v = NULL;
		buf[0] = '\0';
		switch (columns[i]) {
		case COL_PATH: v = r->path; break;
		case COL_START: snprintf(buf, sizeof(buf), "%llu", (unsigned long long)r->start); break;
		case COL_END:
			snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(r->len ? r->start + r->len - 1 : 0));
			if (!r->len)
				strlcpy(buf, "EOF", sizeof(buf));
			break;
		case COL_SIZE:
			if (bytes || !r->len)
				snprintf(buf, sizeof(buf), "%llu", (unsigned long long)r->len);
			else
				humanize_number(buf, 6, (int64_t)r->len, "", HN_AUTOSCALE,
						HN_B | HN_NOSPACE | HN_DECIMAL);
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
			if (r->since) {
				time_t t = (time_t)(r->since / 1000000000ull);
				struct tm tm;
				strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
			}
			break;
		}
		scols_line_set_data(ln, i, v ? v : buf);
	}
}

static struct libscols_table *new_table(void)
{
	struct libscols_table *tb = scols_new_table();

	if (!tb) {
		fprintf(stderr, "%s: out of memory\n", prog);
		exit(EXIT_ERROR);
	}
	scols_table_enable_raw(tb, raw);
	scols_table_enable_json(tb, json);
	scols_table_enable_noheadings(tb, noheadings);
	scols_table_set_name(tb, "locks");
	for (size_t i = 0; i < ncolumns; i++) {
		const struct colinfo *c = &infos[columns[i]];
		struct libscols_column *cl = scols_table_new_column(tb, c->name, c->whint, c->flags);
		if (cl && json && (columns[i] == COL_START || columns[i] == COL_END ||
				   (columns[i] == COL_SIZE && bytes) || columns[i] == COL_PID))
			scols_column_set_json_type(cl, SCOLS_JSON_NUMBER);
	}
	return tb;
}

/* ---- the kernel's view: /proc/locks ------------------------------------- */

struct klock {
	char type[8]; /* OFDLCK, POSIX, FLOCK */
	bool write;
	long pid;
	uint64_t start, len; /* len 0: to EOF */
};

/* One pass over /proc/locks: the kernel locks on (dev, ino). */
static size_t read_locks(dev_t dev, ino_t ino, struct klock *out, size_t max)
{
	FILE *f = fopen("/proc/locks", "re");
	char line[512];
	size_t n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f) && n < max) {
		char type[16], adv[16], mode[16], end[32];
		unsigned maj, min;
		unsigned long long ino_, start;
		long pid;
		char *p = strchr(line, ':');
		if (!p || strstr(line, "->"))
			continue; /* waiters ("-> ") are listed under the holder */
		if (sscanf(p + 1, "%15s %15s %15s %ld %x:%x:%llu %llu %31s", type, adv, mode, &pid, &maj,
			   &min, &ino_, &start, end) != 9)
			continue;
		if (makedev(maj, min) != dev || (ino_t)ino_ != ino)
			continue;
		struct klock *k = &out[n];
		memset(k, 0, sizeof(*k));
		strlcpy(k->type, type, sizeof(k->type));
		k->write = strcmp(mode, "WRITE") == 0;
		k->pid = pid;
		k->start = start;
		k->len = strcmp(end, "EOF") == 0 ? 0 : strtoull(end, NULL, 10) - start + 1;
		/* a line read twice across a shift (see below) is one lock; two
		 * identical OFD locks of one range and mode show as one row */
		bool dup = false;
		for (size_t i = 0; i < n && !dup; i++)
			dup = memcmp(&out[i], k, sizeof(*k)) == 0;
		n += !dup;
	}
	fclose(f);
	return n;
}

/* Kernel locks on the file (dev, ino).  /proc/locks is produced a page at
 * a time: locks taken or dropped elsewhere between two reads shift it, so a
 * line can appear twice or not at all.  Read it until two passes agree. */
static size_t kernel_locks(dev_t dev, ino_t ino, struct klock *out, size_t max)
{
	static struct klock again[4096];
	size_t n = read_locks(dev, ino, out, max);

	if (max > sizeof(again) / sizeof(again[0]))
		max = sizeof(again) / sizeof(again[0]);
	for (int tries = 0; tries < 20; tries++) {
		size_t m = read_locks(dev, ino, again, max);
		if (m == n && memcmp(again, out, n * sizeof(*out)) == 0)
			break;
		memcpy(out, again, m * sizeof(*out));
		n = m;
	}
	return n;
}

static void comm_of(long pid, char *buf, size_t n)
{
	char path[64];
	FILE *f;

	buf[0] = '\0';
	if (pid <= 0)
		return;
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	if ((f = fopen(path, "re"))) {
		if (fgets(buf, (int)n, f))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
}

/* ---- tables ------------------------------------------------------------- */

static const char *table_dir;

/* Errors of our own, beside negative errno values */
#define E_NOTREG 100000 /* not a regular file */
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
	int fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	int rc;
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
		fprintf(stderr,
			"%s: note: %s is on a network filesystem: its table shows holders on this host only\n",
			prog, path);
}

static const char *state_name(const struct smt_table *t, const struct smt_slot *s)
{
	if (!smt_owner_alive(t, SMT_OWNER(s->state)))
		return "stale";
	return SMT_STATE(s->state) == SMT_WAITING ? "waiting" : "held";
}

/* Is kernel lock k covered by a live table entry of the same mode? */
static bool covered(const struct klock *k, const struct smt_slot *slots, const bool *live, size_t n)
{
	uint64_t pos = k->start, end = k->len ? k->start + k->len : UINT64_MAX;
	bool progress = true;

	if (strcmp(k->type, "OFDLCK") != 0)
		return false;
	while (pos < end && progress) {
		progress = false;
		for (size_t i = 0; i < n; i++)
			if (live[i] && (slots[i].mode == SMT_MODE_WRITE) == k->write &&
			    slots[i].off <= pos && pos < slots[i].off + slots[i].len) {
				pos = slots[i].off + slots[i].len;
				progress = true;
			}
	}
	return pos >= end;
}

/* quiet: a file found by scanning (it may vanish or be rewritten while we
 * look): no message, and a table we cannot read leaves the kernel's rows. */
static int list_file(struct libscols_table *tb, const char *path, bool quiet)
{
	static struct klock kl[4096];
	struct smt_table t;
	struct stat st;
	char tpath[PATH_MAX];
	struct smt_slot *slots = NULL;
	bool *live = NULL;
	size_t n = 0;
	int rc;

	const char *which;
	rc = open_table(path, false, &st, &t, tpath, sizeof(tpath), &which);
	if ((rc == -E_NOTABLE || (quiet && rc < 0 && which == tpath)))
		rc = 0, t.fd = -1; /* no (usable) table: the kernel's locks only */
	else if (rc < 0 && quiet)
		return 0;
	else if (rc < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, which, describe(rc));
		return EXIT_ERROR;
	}
	if (!quiet)
		netfs_note(path);
	if (t.fd >= 0) {
		uint32_t lim = smt_scan_limit(&t);
		slots = calloc(lim ? lim : 1, sizeof(*slots));
		live = calloc(lim ? lim : 1, sizeof(*live));
		for (uint32_t i = 0; slots && live && i < lim; i++) {
			if (smt_snapshot(&t, i, &slots[n]) != 1)
				continue;
			const char *state = state_name(&t, &slots[n]);
			struct row r = { path, "SAFEMAP", slots[n].mode == SMT_MODE_WRITE ? "WRITE" : "READ",
					 state, slots[n].comm, slots[n].tag, slots[n].off, slots[n].len,
					 slots[n].since_ns, slots[n].pid, slots[n].tid };
			add_row(tb, &r);
			live[n] = strcmp(state, "stale") != 0;
			n++;
		}
	}
	size_t nk = kernel_locks(st.st_dev, st.st_ino, kl, sizeof(kl) / sizeof(kl[0]));
	for (size_t i = 0; i < nk; i++) {
		char comm[32];
		if (covered(&kl[i], slots, live, n))
			continue;
		comm_of(kl[i].pid, comm, sizeof(comm));
		struct row r = { path, kl[i].type, kl[i].write ? "WRITE" : "READ", "held", comm, "",
				 kl[i].start, kl[i].len, 0, kl[i].pid, 0 };
		add_row(tb, &r);
	}
	free(slots);
	free(live);
	if (t.fd >= 0)
		smt_detach(&t);
	return 0;
}

/* ---- commands ------------------------------------------------------------ */

static uint64_t parse_u64(const char *s, const char *what)
{
	const char *err = NULL;
	long long v = strtonum(s, 0, INT64_MAX, &err);

	if (err)
		usage_error("%s '%s' is %s", what, s, err);
	return (uint64_t)v;
}

static bool parse_mode(const char *s)
{
	if (strcmp(s, "r") == 0 || strcmp(s, "read") == 0)
		return false;
	if (strcmp(s, "w") == 0 || strcmp(s, "write") == 0)
		return true;
	usage_error("mode must be r or w, not '%s'", s);
}

/* Every file the kernel holds locks on, as lslocks does: paths are found
 * through /proc/PID/fd (OFD locks report pid -1, so every process's
 * descriptors are searched); a file with no path found is shown as
 * DEV:INODE with the kernel's rows only. */
struct lockedfile {
	dev_t dev;
	ino_t ino;
	char *path;
};

static size_t locked_files(struct lockedfile *v, size_t max)
{
	FILE *f = fopen("/proc/locks", "re");
	char line[512];
	size_t n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f) && n < max) {
		unsigned maj, min;
		unsigned long long ino;
		char *p = strchr(line, ':');
		bool seen = false;
		if (!p || strstr(line, "->") ||
		    sscanf(p + 1, "%*s %*s %*s %*d %x:%x:%llu", &maj, &min, &ino) != 3)
			continue;
		for (size_t i = 0; i < n && !seen; i++)
			seen = v[i].dev == makedev(maj, min) && v[i].ino == (ino_t)ino;
		if (!seen)
			v[n++] = (struct lockedfile){ makedev(maj, min), (ino_t)ino, NULL };
	}
	fclose(f);
	return n;
}

static void find_paths(struct lockedfile *v, size_t n)
{
	DIR *proc = opendir("/proc");
	struct dirent *pd;

	while (proc && (pd = readdir(proc))) {
		char dir[300];
		DIR *fds;
		struct dirent *fd;
		if (pd->d_name[0] < '0' || pd->d_name[0] > '9')
			continue;
		snprintf(dir, sizeof(dir), "/proc/%s/fd", pd->d_name);
		if (!(fds = opendir(dir)))
			continue;
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

static int list_all(struct libscols_table *tb)
{
	static struct lockedfile v[1024];
	static struct klock kl[4096];
	size_t n = locked_files(v, sizeof(v) / sizeof(v[0]));
	int rc = 0;

	find_paths(v, n);
	for (size_t i = 0; i < n; i++) {
		/* safemap's own liveness bytes make a lock table look locked:
		 * a file whose locks all lie there is a table, not data */
		size_t nk = kernel_locks(v[i].dev, v[i].ino, kl, sizeof(kl) / sizeof(kl[0])), live = 0;
		for (size_t k = 0; k < nk; k++)
			live += kl[k].start >= SMT_LIVE_BASE;
		if (nk && live == nk) {
			free(v[i].path);
			continue;
		}
		if (v[i].path) {
			rc |= list_file(tb, v[i].path, true);
			free(v[i].path);
			continue;
		}
		char name[64], comm[32];
		snprintf(name, sizeof(name), "%u:%u:%llu", major(v[i].dev), minor(v[i].dev),
			 (unsigned long long)v[i].ino);
		for (size_t k = 0; k < nk; k++) {
			comm_of(kl[k].pid, comm, sizeof(comm));
			struct row r = { name, kl[k].type, kl[k].write ? "WRITE" : "READ", "held", comm, "",
					 kl[k].start, kl[k].len, 0, kl[k].pid, 0 };
			add_row(tb, &r);
		}
	}
	return rc;
}

static int cmd_list(int argc, char **argv)
{
	struct libscols_table *tb = new_table();
	int rc = 0;

	if (argc == 0)
		rc = list_all(tb);
	for (int i = 0; i < argc; i++)
		rc |= list_file(tb, argv[i], false);
	scols_print_table(tb);
	scols_unref_table(tb);
	return rc ? EXIT_ERROR : 0;
}

static int cmd_check(int argc, char **argv)
{
	struct smt_table t;
	struct stat st;
	struct flock fl;
	char tpath[PATH_MAX];
	int fd, found = 0;

	if (argc != 4)
		usage_error("usage: check PATH OFF LEN r|w");
	uint64_t off = parse_u64(argv[1], "offset"), len = parse_u64(argv[2], "length");
	bool write = parse_mode(argv[3]);
	if (len == 0 || len > (uint64_t)INT64_MAX - off)
		usage_error("length must be at least 1 and OFF+LEN within 2^63");
	if ((fd = open_regular(argv[0], O_RDONLY, &st)) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, argv[0], describe(fd));
		return EXIT_ERROR;
	}
	memset(&fl, 0, sizeof(fl));
	fl.l_type = write ? F_WRLCK : F_RDLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)off;
	fl.l_len = (off_t)len;
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
		fprintf(stderr, "%s: F_OFD_GETLK: %s\n", prog, strerror(errno));
		close(fd);
		return EXIT_ERROR;
	}
	close(fd);
	if (fl.l_type == F_UNLCK) {
		printf("free\n");
		return 0;
	}
	printf("conflict: %s lock on %lld-%lld\n", fl.l_type == F_WRLCK ? "WRITE" : "READ",
	       (long long)fl.l_start, fl.l_len ? (long long)(fl.l_start + fl.l_len - 1) : -1LL);
	const char *which;
	if (open_table(argv[0], false, &st, &t, tpath, sizeof(tpath), &which) == 0) {
		for (uint32_t i = 0, lim = smt_scan_limit(&t); i < lim; i++) {
			struct smt_slot s;
			if (smt_snapshot(&t, i, &s) != 1 || s.off >= off + len || off >= s.off + s.len)
				continue;
			if (!write && s.mode != SMT_MODE_WRITE)
				continue;
			if (strcmp(state_name(&t, &s), "stale") == 0)
				continue;
			printf("held by pid %d (%s)%s%s%s: %s %llu-%llu\n", s.pid, s.comm, *s.tag ? " tag \"" : "",
			       s.tag, *s.tag ? "\"" : "", s.mode == SMT_MODE_WRITE ? "WRITE" : "READ",
			       (unsigned long long)s.off, (unsigned long long)(s.off + s.len - 1));
			found++;
		}
		smt_detach(&t);
	}
	if (!found)
		printf("held by a program that does not use safemap (see lockctl list %s)\n", argv[0]);
	return EXIT_CONFLICT;
}

static int cmd_hold(int argc, char **argv, const char *tag)
{
	sm_options o = { .size = sizeof(o), .tag = tag };
	sm_holder h[4];
	sm_file *f;
	sm_slice *s;
	int rc, status;
	pid_t pid;

	if (argc < 6 || strcmp(argv[4], "--") != 0)
		usage_error("usage: hold PATH OFF LEN r|w [--tag T] -- COMMAND...");
	uint64_t off = parse_u64(argv[1], "offset"), len = parse_u64(argv[2], "length");
	bool write = parse_mode(argv[3]);
	if ((rc = sm_open(argv[0], write ? SM_RDWR : SM_RDONLY, &o, &f)) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, argv[0], sm_strerror(rc));
		return rc == -EINVAL || rc == -ERANGE ? EXIT_USAGE : EXIT_ERROR;
	}
	rc = write ? sm_map_write(f, off, len, 0, &s) : sm_map_read(f, off, len, 0, &s);
	if (rc < 0) {
		fprintf(stderr, "%s: %s %llu+%llu: %s\n", prog, argv[0], (unsigned long long)off,
			(unsigned long long)len, sm_strerror(rc));
		int n = rc == -EBUSY ? sm_holders(f, off, len, h, 4) : 0;
		for (int i = 0; i < n && i < 4; i++)
			fprintf(stderr, "%s: held by pid %d (%s)%s%s\n", prog, h[i].pid, h[i].comm,
				*h[i].tag ? " tag " : "", h[i].tag);
		sm_close(f);
		return rc == -EBUSY ? EXIT_CONFLICT : rc == -EINVAL || rc == -ERANGE ? EXIT_USAGE : EXIT_ERROR;
	}
	/* like flock(1): the region is held while the command runs; our
	 * descriptors are O_CLOEXEC, so the command cannot keep it */
	if ((pid = fork()) == 0) {
		execvp(argv[5], argv + 5);
		fprintf(stderr, "%s: %s: %s\n", prog, argv[5], strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		perror("fork");
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

static int cmd_reap(int argc, char **argv, bool dry)
{
	struct smt_table t;
	struct stat st;
	char tpath[PATH_MAX];
	int rc;

	if (argc != 1)
		usage_error("usage: reap [--dry-run] PATH");
	const char *which;
	if ((rc = open_table(argv[0], !dry, &st, &t, tpath, sizeof(tpath), &which)) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, which, describe(rc));
		return EXIT_ERROR;
	}
	rc = smt_reap(&t, dry);
	smt_detach(&t);
	if (rc < 0) {
		fprintf(stderr, "%s: %s\n", prog, strerror(-rc));
		return EXIT_ERROR;
	}
	printf("%s %d stale %s\n", dry ? "would reap" : "reaped", rc, rc == 1 ? "entry" : "entries");
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	struct smt_table t;
	struct stat st;
	char tpath[PATH_MAX];
	unsigned held = 0, stale = 0, changing = 0, invalid = 0, backed = 0;
	int rc, fd;

	if (argc != 1)
		usage_error("usage: info PATH");
	const char *which;
	if ((rc = open_table(argv[0], false, &st, &t, tpath, sizeof(tpath), &which)) < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, which, describe(rc));
		return EXIT_ERROR;
	}
	struct stat dst;
	fd = open_regular(argv[0], O_RDONLY, &dst);
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
	printf("data file:    dev %llx inode %llu%s\n", (unsigned long long)t.hdr.data_dev,
	       (unsigned long long)t.hdr.data_ino,
	       t.hdr.data_dev == (uint64_t)st.st_dev && t.hdr.data_ino == (uint64_t)st.st_ino
		       ? " (matches)"
		       : " (does NOT match: the next opener rebuilds the table)");
	printf("slots used:   %u of %u (high water)\n", lim, t.nslots);
	printf("entries:      %u held, %u stale, %u changing, %u invalid\n", held, stale, changing, invalid);
	printf("kernel locks: %u of %u held entries backed by a kernel lock%s\n", backed, held,
	       backed == held ? " (consistent)" : "");
	smt_detach(&t);
	netfs_note(argv[0]);
	return 0;
}

static void help(void)
{
	printf("Usage:\n"
	       " %1$s list [options] [PATH...]\n"
	       " %1$s check PATH OFF LEN r|w\n"
	       " %1$s hold PATH OFF LEN r|w [--tag TAG] -- COMMAND [ARG...]\n"
	       " %1$s reap [--dry-run] PATH\n"
	       " %1$s info PATH\n"
	       "\nInspect and hold regions of files shared through safemap.\n"
	       "\nCommands:\n"
	       " list      regions held in each PATH (without PATH: in every locked file):\n"
	       "           safemap's table joined with the kernel's locks\n"
	       " check     is [OFF, OFF+LEN) free for a read (r) or write (w) lock? who holds it?\n"
	       " hold      hold the region while COMMAND runs (like flock(1))\n"
	       " reap      remove table entries whose holder is gone\n"
	       " info      the table's header, capacity, generation and consistency\n"
	       "\nOptions:\n"
	       " -o, --output <list>     output columns (+LIST adds to the defaults)\n"
	       "     --output-all        output all columns\n"
	       " -J, --json              JSON output\n"
	       " -r, --raw               raw output\n"
	       " -n, --noheadings        no headings\n"
	       " -b, --bytes             sizes in bytes\n"
	       " -H, --list-columns      list the available columns\n"
	       " -t, --tag <tag>         (hold) the tag to register\n"
	       "     --dry-run           (reap) only count\n"
	       "     --table-dir <dir>   tables live in DIR (default: $SAFEMAP_TABLE_DIR, or PATH.smlock)\n"
	       " -h, --help              this help\n"
	       "\nExit status: 0 success (check: free), 1 conflict (check, hold), 2 bad usage,\n"
	       "3 the file or its table could not be read; hold exits with COMMAND's status.\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

int main(int argc, char **argv)
{
	enum { OPT_ALL = 256, OPT_DRY, OPT_TABLE_DIR };
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' }, { "output-all", no_argument, NULL, OPT_ALL },
		{ "json", no_argument, NULL, 'J' },          { "raw", no_argument, NULL, 'r' },
		{ "noheadings", no_argument, NULL, 'n' },    { "bytes", no_argument, NULL, 'b' },
		{ "list-columns", no_argument, NULL, 'H' },  { "tag", required_argument, NULL, 't' },
		{ "dry-run", no_argument, NULL, OPT_DRY },   { "table-dir", required_argument, NULL, OPT_TABLE_DIR },
		{ "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
	};
	const char *tag = NULL, *cmd;
	bool dry = false, list_cols = false;
	int c;

	for (int i = 0; i <= COL_TYPE; i++)
		columns[ncolumns++] = i;
	/* "+" stops at the first non-option, so hold's COMMAND keeps its own
	 * options; options may come before or after the subcommand */
	while ((c = getopt_long(argc, argv, "+o:JrnbHt:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o': parse_columns(optarg); break;
		case OPT_ALL:
			ncolumns = 0;
			for (int i = 0; i < NCOLS; i++)
				columns[ncolumns++] = i;
			break;
		case 'J': json = true; break;
		case 'r': raw = true; break;
		case 'n': noheadings = true; break;
		case 'b': bytes = true; break;
		case 'H': list_cols = true; break;
		case 't': tag = optarg; break;
		case OPT_DRY: dry = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help(); return 0;
		default: return EXIT_USAGE; /* getopt printed a one-line message */
		}
	}
	if (json && raw)
		usage_error("--json and --raw are mutually exclusive");
	if (list_cols) {
		for (int i = 0; i < NCOLS; i++)
			printf("%10s  %s\n", infos[i].name, infos[i].help);
		return 0;
	}
	if (optind >= argc)
		usage_error("no command given");
	cmd = argv[optind++];
	/* options after the subcommand (but never inside hold's COMMAND) */
	int sub_argc = 0;
	char **sub_argv = calloc((size_t)argc + 1, sizeof(char *));
	if (!sub_argv)
		return EXIT_ERROR;
	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			for (; i < argc; i++)
				sub_argv[sub_argc++] = argv[i];
			break;
		}
		if (argv[i][0] == '-' && argv[i][1]) {
			const char *a = argv[i];
			if (!strcmp(a, "-J") || !strcmp(a, "--json")) json = true;
			else if (!strcmp(a, "-r") || !strcmp(a, "--raw")) raw = true;
			else if (!strcmp(a, "-n") || !strcmp(a, "--noheadings")) noheadings = true;
			else if (!strcmp(a, "-b") || !strcmp(a, "--bytes")) bytes = true;
			else if (!strcmp(a, "--dry-run")) dry = true;
			else if (!strcmp(a, "--output-all")) {
				ncolumns = 0;
				for (int k = 0; k < NCOLS; k++)
					columns[ncolumns++] = k;
			} else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) parse_columns(argv[++i]);
			else if ((!strcmp(a, "-t") || !strcmp(a, "--tag")) && i + 1 < argc) tag = argv[++i];
			else if (!strcmp(a, "--table-dir") && i + 1 < argc) table_dir = argv[++i];
			else usage_error("unknown option '%s'", a);
			continue;
		}
		sub_argv[sub_argc++] = argv[i];
	}
	if (json && raw)
		usage_error("--json and --raw are mutually exclusive");
	int rc;
	if (!strcmp(cmd, "list")) rc = cmd_list(sub_argc, sub_argv);
	else if (!strcmp(cmd, "check")) rc = cmd_check(sub_argc, sub_argv);
	else if (!strcmp(cmd, "hold")) rc = cmd_hold(sub_argc, sub_argv, tag);
	else if (!strcmp(cmd, "reap")) rc = cmd_reap(sub_argc, sub_argv, dry);
	else if (!strcmp(cmd, "info")) rc = cmd_info(sub_argc, sub_argv);
	else usage_error("unknown command '%s'", cmd);
	free(sub_argv);
	return rc;
}
