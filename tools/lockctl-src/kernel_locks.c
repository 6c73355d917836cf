/* SPDX-License-Identifier: MIT */
/*
 * kernel_locks.c - the kernel's view: /proc/locks, one parser (also used
 * for the "lock:" lines of /proc/PID/fdinfo), and the set of locks it
 * yields, hashed so that thousands of locks are deduplicated and two reads
 * compared in linear time.  /proc/locks is produced a page per read(2) and
 * shifts under concurrent lock traffic: kernel_locks() reads it until two
 * passes agree on the files asked about.
 */
#include <string.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <time.h>

#include <bsd/string.h>

#include "lockctl.h"

void klocks_free(struct klocks *s)
{
	free(s->v);
	free(s->slot);
	memset(s, 0, sizeof(*s));
}

/* One line of /proc/locks, or (without its "lock:\t" prefix) of
 * /proc/PID/fdinfo/FD:
 *   "12: POSIX  ADVISORY  WRITE 4242 fe:00:1234 0 EOF"
 *   "12: -> POSIX  ADVISORY  WRITE 4243 fe:00:1234 0 EOF" */
bool parse_lock_line(const char *s, struct klock *k)
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
FILE *proc_open(const char *path)
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
		if (!k.blocked && !k.write && k.start == KERNEL_MARK && k.len == 1)
			continue; /* a kernel-mode opener's mark */
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
 * reads shift it, so a line can appear twice or not at all.  Read it at
 * least three times, until two passes in a row agree on the files we look
 * at (other files' churn does not count), or for at most a second, and
 * report every lock seen in any pass: a line is never invented, only
 * skipped, so the union misses only a lock skipped by every pass (and may
 * show one released meanwhile). */
void kernel_locks(struct klocks *out, const struct fileid *ids, size_t nids)
{
	struct klocks a = { 0 }, b = { 0 }, all = { 0 };
	/* at most 20 more passes, and none started after a second: with tens
	 * of thousands of locks a pass takes a good part of one, and each of
	 * its reads stalls every lock operation of the system */
	double until = mono_s() + 1.0;

	read_pass(&a, ids, nids);
	for (size_t i = 0; i < a.n; i++)
		klocks_add(&all, &a.v[i]);
	for (int tries = 0; tries < 20 && (tries < 2 || mono_s() < until); tries++) {
		read_pass(&b, ids, nids);
		for (size_t i = 0; i < b.n; i++)
			klocks_add(&all, &b.v[i]);
		if (tries > 0 && klocks_equal(&a, &b))
			break;
		struct klocks t = a;
		a = b;
		b = t;
	}
	*out = all;
	klocks_free(&a);
	klocks_free(&b);
}

