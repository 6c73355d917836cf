/* SPDX-License-Identifier: MIT */
/*
 * table_rows.c - safemap's lock tables as lockctl reads them: opening a
 * data file's table without ever blocking (only regular files), the live
 * entries with their state (held, pending, waiting, stale), the SAFEMAP
 * rows list shows for them, which kernel locks are safemap's own (covered
 * by entries), and table-authority mode: whether owners are attached in it
 * and which kernel locks are their fences and identity bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "lockctl.h"

const char *describe(int rc)
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
int open_regular(const char *path, int flags, struct stat *st)
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
int open_table(const char *path, bool writable, struct stat *st, struct smt_table *t, char *tpath, size_t n,
	       const char **which)
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

void netfs_note(const char *path)
{
	struct statfs sfs;

	if (statfs(path, &sfs) == 0 && smt_netfs_type((unsigned long)sfs.f_type))
		warnx_("note: %s is on a network filesystem: its table shows holders on this host only", path);
}

const char *state_name(const struct smt_table *t, const struct smt_slot *s)
{
	if (!smt_owner_alive(t, SMT_OWNER(s->state)))
		return "stale";
	switch (SMT_STATE(s->state)) {
	case SMT_WAITING:
		return "waiting";
	case SMT_PENDING: /* published before its kernel lock: may hold it */
		return "pending";
	case SMT_UNLOCKED: /* an SM_NOLOCK mapping: listed, never a holder */
		return "unlocked";
	default:
		return "held";
	}
}

/* The entries of a table: locks (held, pending, waiting) and SM_NOLOCK
 * mappings (unlocked), with the stale ones if asked. */
void read_entries(const struct smt_table *t, struct entries *e, bool with_stale)
{
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		struct smt_slot s;
		int rc = smt_snapshot(t, i, &s);
		if (rc != 1 && rc != 2) /* 2: an unlocked mapping */
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
 * entries of the same mode (held, or waiting for a waiter; an unlocked
 * mapping has no kernel lock)? */
bool covered(const struct klock *k, const struct entries *e)
{
	uint64_t pos = k->start, end = k->len ? k->start + k->len : UINT64_MAX;
	bool progress = true;

	if (strcmp(k->type, "OFDLCK") != 0)
		return false;
	while (pos < end && progress) {
		progress = false;
		for (size_t i = 0; i < e->n; i++) {
			const struct smt_slot *s = &e->v[i];
			if (!strcmp(e->state[i], "stale") || !strcmp(e->state[i], "unlocked") ||
			    (s->mode == SMT_MODE_WRITE) != k->write ||
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

bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	uint64_t aend = alen ? a + alen : UINT64_MAX, bend = blen ? b + blen : UINT64_MAX;

	return a < bend && b < aend;
}
void entries_free(struct entries *e)
{
	free(e->v);
	free(e->state);
	memset(e, 0, sizeof(*e));
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

/* list's rows for a table's entries (of the file shown as shown). */
void table_rows(struct libscols_table *tb, const struct smt_table *t, const struct entries *e,
		const struct stat *st, const char *shown)
{
	for (size_t i = 0; i < e->n; i++) {
		const struct smt_slot *s = &e->v[i];
		struct row r = { .path = shown, .type = "SAFEMAP", .mode = s->mode == SMT_MODE_WRITE ? "WRITE" : "READ",
				 .state = e->state[i], .comm = s->comm, .tag = s->tag, .start = s->off,
				 .len = s->len, .since = s->since_ns, .pid = s->pid, .tid = s->tid,
				 .dev = st->st_dev, .ino = st->st_ino, .blocker = safemap_blocker(t, s) };
		add_row(tb, &r);
	}
}

/* Are owners attached in table mode? */
bool table_mode(const struct smt_table *t)
{
	return t->fd >= 0 && sm_ofd_test(t->fd, true, SMT_MODE_BYTE_TABLE, 1) == -EBUSY;
}

/* Kernel lock k on a data file in table mode: a fence, an identity lock,
 * or someone else's (a plain fcntl lock the fence does not exclude). */
int tm_kind(const struct klock *k)
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
const char *tm_state(const struct klock *k)
{
	if (k->blocked)
		return "waiting";
	return !k->write && k->start < TM_FENCE_LEN ? "foreign-read" : "held";
}
