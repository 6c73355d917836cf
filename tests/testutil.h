/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by the Check suites: temporary files, raw
 * kernel lock probes, and child processes driven over pipes (handshakes,
 * never sleeps).
 */
#ifndef SAFEMAP_TESTUTIL_H
#define SAFEMAP_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
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
 * F_UNLCK when the range is free for it, else the conflicting lock's type. */
int tu_probe(const char *path, short type, off_t off, off_t len);

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
