/* SPDX-License-Identifier: MIT */
/*
 * owners.c - who holds a kernel lock.  /proc/locks says pid -1 for OFD
 * locks; /proc/PID/fdinfo/FD lists the locks held through each descriptor
 * ("lock:" lines, as util-linux 2.40's lslocks reads them), scanned once
 * and sorted so each lookup is a binary search.  Command names come from
 * /proc/PID/comm, read once per pid.
 */
#include <stdlib.h>
#include <string.h>

#include <bsd/string.h>
#include <bsd/sys/tree.h>

#include "lockctl.h"

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

void comm_of(long pid, char *buf, size_t n)
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

/* getline's buffer, kept across files */
struct linebuf {
	char *line;
	size_t cap;
};

/* The locks held through one descriptor ("lock:" lines of its fdinfo). */
static void owners_of_fd(const char *path, long pid, void *arg)
{
	struct linebuf *buf = arg;
	FILE *f = proc_open(path);

	if (!f)
		return;
	while (getline(&buf->line, &buf->cap, f) > 0) {
		struct klock k;
		if (strncmp(buf->line, "lock:\t", 6) != 0 || !parse_lock_line(buf->line + 6, &k))
			continue;
		GROW(owners, nowners, owners_cap);
		owners[nowners] = (struct owner){ k, pid, nowners };
		nowners++;
	}
	fclose(f);
}

static void read_owners(void)
{
	struct linebuf buf = { NULL, 0 };

	owners_read = true;
	for_each_fd("fdinfo", owners_of_fd, &buf);
	free(buf.line);
	if (nowners)
		qsort(owners, nowners, sizeof(*owners), owner_cmp);
}

/* The pid behind kernel lock k: its own, or for an OFD lock (-1) the first
 * process with a descriptor of the file description holding it. */
long owner_of(const struct klock *k)
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
long blocker_of(const struct klock *w)
{
	struct klock b = { .pid = w->bl_pid, .dev = w->dev, .ino = w->ino, .start = w->bl_start,
			   .len = w->bl_len, .write = w->bl_write, .mandatory = w->bl_mandatory };

	if (!w->has_blocker)
		return 0;
	strlcpy(b.type, w->bl_type, sizeof(b.type));
	return owner_of(&b);
}
