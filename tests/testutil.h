/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by the Check suites: temporary files, raw
 * kernel lock probes, and child processes driven over pipes (handshakes,
 * never sleeps).
 */
#ifndef SAFEMAP_TESTUTIL_H
#define SAFEMAP_TESTUTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>

#include "safemap.h"

/* Until the library defines it (SPEC §12), the suites still build. */
#ifndef SM_OPT_TABLE_LOCKS
#define SM_OPT_TABLE_LOCKS 0x8u
#endif

/* Create a new file of size bytes (all zero) in a private temporary
 * directory, removed at exit; returns its path (static storage). */
const char *tu_tmpfile(off_t size);

/* Ask the kernel, through a fresh open file description, what lock would
 * block a lock of `type` (F_RDLCK/F_WRLCK) over [off, off+len): returns
 * F_UNLCK when the range is free for it, else the conflicting lock's type.
 * len 0 means up to 2^62: the bytes above are the library's marks. */
int tu_probe(const char *path, short type, off_t off, off_t len);

/* A program run with its standard output on a pipe, read a line at a
 * time without blocking (the crash tests' putters). */
struct tu_lines {
	pid_t pid;
	int out;
	char buf[8192];
	size_t n;
};
/* Fork and exec argv[0] with argv, its standard output to p->out. */
void tu_lines_exec(struct tu_lines *p, char *const argv[]);
/* Call fn(line, arg) for every whole line written so far (the newline
 * cut off); to_eof: read until the program's end (once it is dead). */
void tu_lines_read(struct tu_lines *p, bool to_eof, void (*fn)(char *line, void *arg), void *arg);

/* CLOCK_MONOTONIC in ns. */
uint64_t tu_mono_ns(void);
/* An upper bound of a timed check, stretched under valgrind and sanitizers
 * (which set CK_TIMEOUT_MULTIPLIER). */
uint64_t tu_bound(uint64_t ns);

/* A child process running fn(arg, in, out); its exit status is fn's return.
 * The parent talks to it with tu_send/tu_recv. */
struct tu_child {
	pid_t pid;
	int to;   /* parent -> child */
	int from; /* child -> parent */
};
typedef int (*tu_child_fn)(void *arg, int in, int out);
void tu_spawn(struct tu_child *c, tu_child_fn fn, void *arg);
/* Send/receive one line (without the newline); recv returns false on EOF. */
void tu_send(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool tu_recv(int fd, char *buf, size_t size);
/* Receive one line and return it as an int (for result codes). */
int tu_recv_int(int fd);
/* Wait for the child; returns its exit status, or 128 + signal. */
int tu_wait(struct tu_child *c);

/* tu_spawn, then assert that the child's first line is 0: its set-up
 * (a tu_holder's map, a tu_klocker's lock) succeeded. */
void tu_spawn_ready(struct tu_child *c, tu_child_fn fn, void *arg);
/* Tell every child of the NULL-terminated list to finish ("bye"), then
 * wait for each and assert that it exited 0.  All are told before any is
 * waited for: a child blocked behind another's lock is freed in turn. */
void tu_release(struct tu_child *c, ...) __attribute__((sentinel));

/* Run cmd with /bin/sh, its standard output into out (NUL-terminated, cut
 * to size; the rest is read and dropped, so the command never dies of
 * SIGPIPE); returns its exit status, or 128 + the signal that ended it. */
int tu_capture(char *out, size_t size, const char *cmd);

/* Number of open descriptors of this process that refer to path, and how
 * many of them lack FD_CLOEXEC. */
int tu_fds_on(const char *path, int *without_cloexec);
/* Number of lines in /proc/self/maps (VMAs). */
int tu_vma_count(void);

/* A child (for tu_spawn) that opens path with tag, maps [off, off+len)
 * for reading or writing, sends the result code, holds until it receives a
 * line (or EOF), then releases and exits 0. */
struct tu_holder_arg {
	const char *path;
	unsigned long long off, len;
	bool write;
	const char *tag;
};
int tu_holder(void *arg, int in, int out);

/* A child (for tu_spawn) that does not use safemap: it takes a kernel lock
 * of the kind given on path, sends 0 (or -errno), holds it until it
 * receives a line (or EOF), and exits 0.  Kind 'w' is a POSIX waiter: it
 * sends 0 first, then blocks in F_SETLKW until the lock is free, then
 * waits for its line and exits with F_SETLKW's result. */
struct tu_klock_arg {
	const char *path;
	int kind; /* 'f' flock (whole file), 'o' OFD, 'p' POSIX, 'w' POSIX waiting */
	off_t start, len;
	bool write;
};
int tu_klocker(void *arg, int in, int out);

/* Who holds each block of a region, for stress tests that check exclusion
 * exactly; place it in memory shared across fork (MAP_SHARED).  Per block,
 * a bit mask of the workers holding it for writing and one of those holding
 * it for reading.  A worker sets its bits after acquiring and clears them
 * before releasing.  A worker killed while holding leaves its bits: the
 * parent dooms it before the kill and forgets it after reaping it, and a
 * doomed worker's bits are no conflict (its locks may be gone before its
 * bits). */
#define TU_HOLDMAP_BLOCKS 64
#define TU_HOLDMAP_WORKERS 32
struct tu_holdmap {
	_Atomic uint32_t wmask[TU_HOLDMAP_BLOCKS], rmask[TU_HOLDMAP_BLOCKS];
	_Atomic int doomed[TU_HOLDMAP_WORKERS];
};
/* Set (or clear) worker me's bits on blocks [first, first + n). */
void tu_holdmap_mark(struct tu_holdmap *m, int me, int first, int n, bool write, bool set);
/* The first block of [first, first + n) that a live worker other than me
 * holds against me's hold (for writing: any hold; for reading: a write);
 * -1 if none. */
int tu_holdmap_conflict(struct tu_holdmap *m, int me, int first, int n, bool write);
/* Worker j is about to be killed / was reaped: its bits are cleared, and
 * then it is no longer doomed. */
void tu_holdmap_doom(struct tu_holdmap *m, int j);
void tu_holdmap_forget(struct tu_holdmap *m, int j);

/* The path of a program built beside the test programs, e.g.
 * "../tools/lockctl" or "peer" (relative to the test binary's directory). */
void tu_sibling(const char *rel, char *out, size_t size);

/* This process's program name as the kernel reports it (/proc/self/comm):
 * "memcheck-amd64-" under valgrind. */
void tu_comm(char *out, size_t size);

/* The lock mode under test: SAFEMAP_TEST_MODE=table (set by Makefile.am
 * for the second run of the mode-parametrised suites: tests/NAME-table)
 * makes every sm_open the suites make add SM_OPT_TABLE_LOCKS (SPEC §12);
 * unset or "kernel", kernel-lock mode.  The peer program reads the same
 * variable. */
bool tu_table_mode(void);
/* Fill o (zeroing it) for an sm_open in the mode under test, with tag. */
sm_options *tu_options(sm_options *o, const char *tag);
/* sm_open in the mode under test (opt may be NULL; its flags are kept). */
int tu_open(const char *path, int flags, const sm_options *opt, sm_file **out);
/* In table mode, false (after printing "SKIP case: SM_OPT_TABLE_LOCKS not
 * available") when sm_open refuses the flag with -EINVAL/-ENOTSUP: the
 * library predates it.  Always true in kernel mode. */
bool tu_mode_usable(const char *casename);
/* First statement of a mode-parametrised case.  Check names the function
 * NAME_fn; the SKIP line names the case. */
#define TU_REQUIRE_MODE()                       \
	do {                                    \
		if (!tu_mode_usable(__func__)) \
			return;                 \
	} while (0)

/* Run a suite in Check's fork mode; returns the exit status for main. */
int tu_run(Suite *s);

#endif
