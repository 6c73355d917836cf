/* SPDX-License-Identifier: MIT */
/*
 * lockctl.h - lockctl's private header: the types its files share and the
 * functions each exports, floor by floor.  The files call downwards only:
 *
 *   main.c           the command table, global options, help, dispatch
 *   completion.c     the bash completion script, from the command table
 *   list.c check.c hold.c info.c log.c map.c watch.c   one subcommand (family) each
 *   svg.c layout.c   map's SVG writer; where map draws each byte (map.h)
 *   remote.c         locks of other hosts, found by walking the gaps
 *   table_rows.c     safemap lock tables: opening, entries, table mode
 *   output.c         columns, rows, smartcols and JSON output
 *   owners.c         who holds a kernel lock: /proc/PID/fdinfo, comm
 *   kernel_locks.c   /proc/locks: the parser and the lock set
 *   util.c           messages, allocation, option and argument parsing
 *
 * Like util-linux lslocks, lockctl reads safemap's lock tables, so it can
 * name the holder of an OFD lock (the kernel reports pid -1 for those),
 * show tags and flag stale entries; it joins the table with /proc/locks so
 * locks of programs that do not use safemap (OFD, POSIX, FLOCK) appear too,
 * blocked kernel waiters included.
 *
 * Every path given by the user or found on disk is opened O_NONBLOCK and
 * must be a regular file: a FIFO in a table's place must not hang us.
 *
 * Exit status: 0 success (check: the region is free), 1 check found a
 * conflict or hold could not take the region, 2 bad usage or input,
 * 3 the file or its table could not be read; hold exits with the
 * command's status.
 */
#ifndef LOCKCTL_H
#define LOCKCTL_H

#include <getopt.h>
#include <libsmartcols.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "safemap-internal.h"

#define EXIT_CONFLICT 1
#define EXIT_USAGE 2
#define EXIT_ERROR 3

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Long-only option values, shared so that one table may hold them all. */
enum { OPT_OUTPUT_ALL = 256, OPT_DRY, OPT_TABLE_DIR, OPT_BOUND };
enum { OPT_COLOR = 300, OPT_COUNT, OPT_SVG };

/* ---- util.c: messages in the err(3)/errx(3) style, allocation, options -- */

extern const char *prog;
extern const char *cmd_name;  /* the running subcommand, for "Try ..." */
extern const char *table_dir; /* --table-dir (NULL: the library's default) */

__attribute__((format(printf, 1, 2))) void warnx_(const char *fmt, ...);
__attribute__((noreturn, format(printf, 2, 3))) void errx_(int status, const char *fmt, ...);
/* Bad usage: one line, status 2. */
__attribute__((noreturn, format(printf, 1, 2))) void usage_err(const char *fmt, ...);
__attribute__((noreturn)) void bad_option(int c, char **argv);

void *xrealloc(void *p, size_t n, size_t size);

/* Grow *v (of *cap elements) to hold at least n + 1. */
#define GROW(v, n, cap)                                                  \
	do {                                                             \
		if ((n) >= (cap)) {                                      \
			(cap) = (cap) ? 2 * (cap) : 16;                  \
			(v) = xrealloc((v), (cap), sizeof(*(v)));        \
		}                                                        \
	} while (0)

/* Mutually exclusive options, as util-linux's optutils.h: each row lists
 * option values (ascending, 0-terminated) of which at most one may be
 * given. */
#define EXCL_MAX 4
void check_exclusive(int c, const struct option *opts, const int excl[][EXCL_MAX], size_t nexcl, int *seen);

/* fn(path, pid, arg) for every descriptor of every process, path naming
 * it under /proc/PID/SUB (SUB: "fd" or "fdinfo"); returns how many
 * processes' descriptors could not be read for lack of permission. */
unsigned for_each_fd(const char *sub, void (*fn)(const char *path, long pid, void *arg), void *arg);

/* "OFF LEN r|w" after PATH (argv[0]) */
void parse_region(char **argv, uint64_t *off, uint64_t *len, bool *write);
/* "START-END" or "START-EOF" (len 0) on stdout */
void print_range(uint64_t start, uint64_t len);

/* ---- kernel_locks.c: /proc/locks ---------------------------------------- */

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

/* Files whose locks are wanted (none: every file). */
struct fileid {
	dev_t dev;
	ino_t ino;
};

bool parse_lock_line(const char *s, struct klock *k);
FILE *proc_open(const char *path);
void kernel_locks(struct klocks *out, const struct fileid *ids, size_t nids);
void klocks_free(struct klocks *s);

/* ---- owners.c: who holds a kernel lock ---------------------------------- */

void comm_of(long pid, char *buf, size_t n);
long owner_of(const struct klock *k);
long blocker_of(const struct klock *w);

/* ---- output.c: columns and rows, as in lslocks -------------------------- */

enum { COL_PATH, COL_START, COL_END, COL_SIZE, COL_MODE, COL_STATE, COL_PID, COL_COMMAND,
       COL_TAG, COL_SINCE, COL_TYPE, COL_TID, COL_INODE, COL_MAJMIN, COL_M, COL_BLOCKER, NCOLS };
#define NDEFAULT (COL_TYPE + 1)

struct colinfo {
	const char *name;
	double whint;
	int flags;
	int json; /* SCOLS_JSON_*; SIZE is a number only with --bytes */
	const char *help;
};
extern const struct colinfo infos[NCOLS];

/* list's output settings */
struct ctl {
	int columns[NCOLS * 2];
	size_t ncolumns;
	bool raw, json, noheadings, bytes, notrunc, noinaccessible;
	long pid; /* -p: only this holder (0: all) */
	unsigned unreadable; /* processes whose open files we could not read */
};
extern struct ctl ctl;

struct row {
	const char *path, *type, *mode, *state, *comm, *tag;
	uint64_t start, len; /* len 0: to end of file */
	uint64_t since;      /* ns since the epoch, 0: unknown */
	long pid, tid, blocker;
	dev_t dev;
	ino_t ino;
	bool mandatory;
};

void parse_columns(const char *list);
void list_columns(void);
struct libscols_table *new_table(void);
void add_row(struct libscols_table *tb, const struct row *r);
void kernel_row(struct libscols_table *tb, const struct klock *k, const char *path, const char *state);
void json_str(const char *s);

/* ---- table_rows.c: safemap's lock tables -------------------------------- */

/* Errors of our own, beside negative errno values */
#define E_NOTREG 100000  /* not a regular file */
#define E_NOTABLE 100001 /* no lock table */

/* The live entries of a table, with their state names. */
struct entries {
	struct smt_slot *v;
	const char **state;
	size_t n, cap;
};

const char *describe(int rc);
int open_regular(const char *path, int flags, struct stat *st);
int open_table(const char *path, bool writable, struct stat *st, struct smt_table *t, char *tpath, size_t n,
	       const char **which);
void netfs_note(const char *path);
const char *state_name(const struct smt_table *t, const struct smt_slot *s);
void read_entries(const struct smt_table *t, struct entries *e, bool with_stale);
void entries_free(struct entries *e);
void table_rows(struct libscols_table *tb, const struct smt_table *t, const struct entries *e,
		const struct stat *st, const char *shown);
bool covered(const struct klock *k, const struct entries *e);
bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen);

/* Table-authority mode: owners attached with SM_OPT_TABLE_LOCKS read-lock
 * the table-mode byte of the table file; the table, not the kernel, then
 * decides exclusion.  On the data file each of them holds only an OFD read
 * lock over [0, 2^62) (the fence) and one identity byte in
 * [2^62 + 2^16, 2^62 + 2^32) (doc/safemap-table.5, "Table-authority mode"). */
#define TM_FENCE_LEN ((uint64_t)1 << 62)
#define TM_BAND_MIN (TM_FENCE_LEN + ((uint64_t)1 << 16))
#define TM_BAND_END (TM_FENCE_LEN + ((uint64_t)1 << 32))
enum { TM_FOREIGN, TM_FENCE, TM_IDENTITY };
/* Every kernel-mode opener read-locks this byte while it has the file open
 * (a later table-mode attach tests it): a mark, not a region, never listed. */
#define KERNEL_MARK (TM_BAND_END)

bool table_mode(const struct smt_table *t);
int tm_kind(const struct klock *k);
const char *tm_state(const struct klock *k);

/* ---- remote.c: locks of other hosts ------------------------------------- */

void remote_rows(struct libscols_table *tb, const struct klocks *kl, const struct entries *e, const char *path,
		 const char *shown);

/* ---- the subcommands: list.c check.c hold.c info.c log.c map.c watch.c -- */

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const struct option *opts; /* for the completion script */
	const char *help;
};

extern const struct option list_opts[], check_opts[], hold_opts[], reap_opts[], info_opts[], log_opts[],
	map_longopts[], watch_longopts[];

int cmd_list(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_hold(int argc, char **argv);
int cmd_reap(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* map.c, for watch: the options both take, and one picture */
struct map_opts {
	long width;
	int color;       /* -1: auto */
	long count;      /* watch: frames to draw, 0: until interrupted */
	const char *svg; /* map: also write the picture as SVG here */
};
int map_options(int argc, char **argv, struct map_opts *m, const struct option *opts, void (*help)(void),
		const char *name);
int draw_map(const char *path, const struct map_opts *m);

/* ---- completion.c ------------------------------------------------------- */

void completion_bash(const struct command *cmds, size_t ncmds, const struct option *main_opts);

#endif
