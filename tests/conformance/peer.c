/* SPDX-License-Identifier: MIT */
/*
 * peer - a safemap process driven over a pipe, for the conformance suite.
 *
 * Reads one command per line on standard input and answers each with one
 * line on standard output: "ok [VALUES...]" or "err -ERRNO".  Slices are
 * named by small integers that `map` returns.  The protocol is in
 * tests/conformance/README; another implementation of the safemap
 * protocol can be held to the suite by providing a peer that speaks it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap-internal.h"

#ifndef SM_OPT_TABLE_LOCKS /* until the library has SPEC §12's mode */
#define SM_OPT_TABLE_LOCKS 0x8u
#endif

#define MAXS 64

static sm_file *f;
static sm_slice *slices[MAXS];
static sm_range *ranges[MAXS];
static int rawfd = -1;
static char path[4096];
static bool table_mode;

static void die_now(void)
{
	raise(SIGKILL);
}

static void reply(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int rc, const char *fmt, ...)
{
	if (rc < 0) {
		printf("err %d\n", rc);
	} else if (fmt) {
		va_list ap;
		printf("ok ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
	} else {
		printf("ok\n");
	}
	fflush(stdout);
}

static sm_slice *slice(const char *id)
{
	int i = atoi(id);
	return i >= 0 && i < MAXS ? slices[i] : NULL;
}

static int new_id(sm_slice *s)
{
	for (int i = 0; i < MAXS; i++)
		if (!slices[i]) {
			slices[i] = s;
			return i;
		}
	return -1;
}

static int parse_flags(char **tok, int n)
{
	int flags = 0;
	for (int i = 0; i < n; i++) {
		if (!strcmp(tok[i], "extend")) flags |= SM_EXTEND;
		else if (!strcmp(tok[i], "buffered")) flags |= SM_BUFFERED;
		else if (!strcmp(tok[i], "populate")) flags |= SM_POPULATE;
		else if (!strcmp(tok[i], "nolock")) flags |= SM_NOLOCK;
	}
	return flags;
}

static const char *state_name(int state)
{
	switch (state) {
	case SM_STALE: return "stale";
	case SM_PENDING: return "pending";
	case SM_UNLOCKED: return "unlocked";
	case SM_WAITING: return "waiting";
	default: return "held";
	}
}

static int raw_lock(bool ofd, const char *mode, long long off, long long len)
{
	struct flock fl = { .l_whence = SEEK_SET, .l_start = off, .l_len = len };

	fl.l_type = mode[0] == 'w' ? F_WRLCK : mode[0] == 'r' ? F_RDLCK : F_UNLCK;
	if (rawfd < 0 && (rawfd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return -errno;
	if (fcntl(rawfd, ofd ? F_OFD_SETLK : F_SETLK, &fl) == 0)
		return 0;
	return errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
}

int main(void)
{
	struct rlimit no_core = { 0, 0 };
	char line[1024];

	setrlimit(RLIMIT_CORE, &no_core); /* peers crash on purpose */
	while (fgets(line, sizeof(line), stdin)) {
		char *tok[16];
		int n = 0, rc;
		for (char *save = NULL, *t = strtok_r(line, " \t\n", &save); t && n < 16;
		     t = strtok_r(NULL, " \t\n", &save))
			tok[n++] = t;
		if (n == 0)
			continue;
		const char *c = tok[0];
		if (!strcmp(c, "open") && n >= 3) {
			/* the lock mode: SAFEMAP_TEST_MODE (as the suites), or
			 * the fifth word, "table" or "kernel" */
			const char *mode = n >= 5 ? tok[4] : getenv("SAFEMAP_TEST_MODE");
			sm_options o = { .size = sizeof(o),
					 .tag = n >= 4 && strcmp(tok[3], "-") != 0 ? tok[3] : NULL };
			table_mode = mode && !strcmp(mode, "table");
			if (table_mode)
				o.flags |= SM_OPT_TABLE_LOCKS;
			snprintf(path, sizeof(path), "%s", tok[1]);
			rc = sm_open(path, !strcmp(tok[2], "rw") ? SM_RDWR | SM_CREATE : SM_RDONLY, &o, &f);
			reply(rc, NULL);
		} else if (!strcmp(c, "raw") && n == 2) {
			/* a program without safemap: only the ofd/posix/pread/
			 * truncate/size commands, on PATH */
			snprintf(path, sizeof(path), "%s", tok[1]);
			reply(0, NULL);
		} else if (!strcmp(c, "map") && n >= 4 && f) {
			sm_slice *s;
			uint64_t off = strtoull(tok[2], NULL, 0), len = strtoull(tok[3], NULL, 0);
			int flags = parse_flags(tok + 4, n - 4);
			rc = tok[1][0] == 'w' ? sm_map_write(f, off, len, flags, &s) : sm_map_read(f, off, len, flags, &s);
			if (rc == 0 && (rc = new_id(s)) < 0) {
				sm_release(s);
				rc = -ENOMEM;
			}
			reply(rc, "%d", rc);
		} else if (!strcmp(c, "get") && n == 3) {
			uint64_t v = 0;
			rc = sm_get_u64_le(slice(tok[1]), strtoull(tok[2], NULL, 0), &v);
			reply(rc, "%llu", (unsigned long long)v);
		} else if (!strcmp(c, "put") && n == 4) {
			reply(sm_put_u64_le(slice(tok[1]), strtoull(tok[2], NULL, 0), strtoull(tok[3], NULL, 0)), NULL);
		} else if (!strcmp(c, "fill") && n == 5) {
			reply(sm_fill(slice(tok[1]), strtoull(tok[2], NULL, 0), atoi(tok[3]), strtoull(tok[4], NULL, 0)), NULL);
		} else if (!strcmp(c, "commit") && n >= 2) {
			reply(sm_commit(slice(tok[1]), n >= 3 && !strcmp(tok[2], "async") ? SM_ASYNC : 0), NULL);
		} else if (!strcmp(c, "abort") && n == 2) {
			reply(sm_abort(slice(tok[1])), NULL);
		} else if (!strcmp(c, "downgrade") && n == 2) {
			reply(sm_downgrade(slice(tok[1])), NULL);
		} else if (!strcmp(c, "release") && n == 2) {
			int i = atoi(tok[1]);
			rc = i >= 0 && i < MAXS && slices[i] ? sm_release(slices[i]) : -EINVAL;
			if (i >= 0 && i < MAXS)
				slices[i] = NULL;
			reply(rc, NULL);
		} else if (!strcmp(c, "lock") && n >= 4 && f) {
			sm_range *r = NULL;
			int id = -1;
			rc = sm_lock(f, strtoull(tok[2], NULL, 0), strtoull(tok[3], NULL, 0),
				     tok[1][0] == 'w' ? SM_LOCK_WRITE : SM_LOCK_READ, n >= 5 ? tok[4] : NULL, &r);
			for (int i = 0; rc == 0 && i < MAXS && id < 0; i++)
				if (!ranges[i])
					ranges[id = i] = r;
			if (rc == 0 && id < 0) {
				sm_unlock(r);
				rc = -ENOMEM;
			}
			reply(rc, "%d", id);
		} else if (!strcmp(c, "unlock") && n == 2) {
			int i = atoi(tok[1]);
			rc = i >= 0 && i < MAXS && ranges[i] ? sm_unlock(ranges[i]) : -EINVAL;
			if (i >= 0 && i < MAXS)
				ranges[i] = NULL;
			reply(rc, NULL);
		} else if (!strcmp(c, "test") && n == 4 && f) {
			reply(sm_test(f, strtoull(tok[2], NULL, 0), strtoull(tok[3], NULL, 0),
				      tok[1][0] == 'w' ? SM_LOCK_WRITE : SM_LOCK_READ), NULL);
		} else if (!strcmp(c, "size") && n == 1) {
			struct stat st;
			rc = stat(path, &st) == 0 ? 0 : -errno;
			reply(rc, "%lld", rc == 0 ? (long long)st.st_size : 0LL);
		} else if (!strcmp(c, "truncate") && n == 2) {
			reply(truncate(path, (off_t)strtoll(tok[1], NULL, 0)) == 0 ? 0 : -errno, NULL);
		} else if (!strcmp(c, "pread") && n == 2) {
			uint64_t v = 0;
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			rc = fd >= 0 && pread(fd, &v, 8, (off_t)strtoll(tok[1], NULL, 0)) == 8 ? 0 : -EIO;
			if (fd >= 0)
				close(fd);
			reply(rc, "%llu", (unsigned long long)v);
		} else if ((!strcmp(c, "ofd") || !strcmp(c, "posix")) && n == 4) {
			reply(raw_lock(!strcmp(c, "ofd"), tok[1], strtoll(tok[2], NULL, 0), strtoll(tok[3], NULL, 0)), NULL);
		} else if (!strcmp(c, "holders") && n == 3 && f) {
			sm_holder h[8];
			char buf[900] = "";
			rc = sm_holders(f, strtoull(tok[1], NULL, 0), strtoull(tok[2], NULL, 0), h, 8);
			for (int i = 0; i < rc && i < 8; i++) {
				size_t l = strlen(buf);
				snprintf(buf + l, sizeof(buf) - l, " %d:%s:%s:%s", h[i].pid,
					 h[i].mode == SM_MODE_WRITE ? "w" : "r",
					 state_name(h[i].state), h[i].tag[0] ? h[i].tag : "-");
			}
			reply(rc, "%d%s", rc, buf);
		} else if (!strcmp(c, "fork") && n == 2) {
			/* a fork child uses slice ID: every call must be -ESTALE */
			sm_slice *s = slice(tok[1]);
			int p[2];
			if (!s || pipe(p) < 0) {
				reply(-EINVAL, NULL);
				continue;
			}
			pid_t pid = fork();
			if (pid == 0) {
				uint64_t v;
				int r[3] = { sm_get_u64(s, 0, &v), sm_commit(s, 0), sm_release(s) };
				(void)!write(p[1], r, sizeof(r));
				_exit(0);
			}
			int r[3] = { 1, 1, 1 };
			(void)!read(p[0], r, sizeof(r));
			close(p[0]);
			close(p[1]);
			waitpid(pid, NULL, 0);
			reply(0, "%d %d %d", r[0], r[1], r[2]);
		} else if (!strcmp(c, "crash") && n == 2) {
			if (!strcmp(tok[1], "midupdate") && f && table_mode) {
				/* die inside the table's critical section (lib/tmode.c's
				 * test seam), a new holder published, its index node not
				 * yet linked: the next locker must rebuild */
				sm_range *r;
				smt_test_in_tree_lock = die_now;
				(void)!sm_lock(f, 1ull << 30, 1, SM_LOCK_WRITE, NULL, &r);
				fprintf(stderr, "peer: the table-mode seam was not reached\n");
				_exit(3);
			}
			if (!strcmp(tok[1], "midupdate") && f && f->table) {
				/* die with a table slot half-written */
				for (int i = 0; i < MAXS; i++)
					if (slices[i] && slices[i]->h->slot >= 0) {
						struct smt_slot *sl = &f->table->slots[slices[i]->h->slot];
						__atomic_fetch_add(&sl->seq, 1, __ATOMIC_SEQ_CST);
						sl->off = 0xdead;
						break;
					}
				raise(SIGKILL);
			}
			if (!strcmp(tok[1], "abort"))
				abort();
			raise(SIGKILL);
		} else if (!strcmp(c, "close")) {
			reply(sm_close(f), NULL);
			f = NULL;
		} else if (!strcmp(c, "quit")) {
			break;
		} else {
			reply(-EINVAL, NULL);
		}
	}
	for (int i = 0; i < MAXS; i++) {
		if (slices[i])
			sm_release(slices[i]);
		if (ranges[i])
			sm_unlock(ranges[i]);
	}
	if (f)
		sm_close(f);
	return 0;
}
