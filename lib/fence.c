/* SPDX-License-Identifier: MIT */
/*
 * fence.c - a dead process's bound changes stay fenced until redone.
 *
 * A buffered write slice bound to log records (redo.c) may hold changes
 * that exist nowhere but in its private pages and in the log.  If its
 * process dies, the kernel drops its lock and the table's reapers would
 * free its entry: a survivor would then read the old page, change it and
 * commit it, and recovery's page-LSN check would skip the dead process's
 * acknowledged change.  So a bound entry with unwritten changes carries
 * SMT_SF_BOUND, and such an entry is never freed with its owner: whoever
 * would free it (reaper, new owner of the byte, table mode's judges)
 * makes it an orphan's instead (smt_retire, table.c), still held by
 * nobody, until a recovery pass's sm_redo_done clears it.
 *
 * Who sees the fence: every acquisition, after its own lock step (kernel
 * lock or table-mode validation) succeeded, compares the table's fence
 * counts with its own part of them (fence_n, then its page buckets'
 * counts; one load when nothing but our own is bound) and, only where
 * others' bound entries may lie, scans the table for a bound entry of
 * another owner overlapping its range: found, the acquisition is undone
 * and fails -EBUSY (the entry is listed, SM_STALE once its owner is gone).
 * The scan is O(slots in use): it runs only when another owner's bound
 * entry shares a page bucket (page number mod 256) with the request.  A live owner clears its flag before it
 * releases the lock (redo.c, at the commit that writes the pages or at the
 * release), so a bound entry met after the lock step was granted is a dead
 * owner's, or one whose owner is letting go of it this instant.  Slices
 * mapped with SM_RECOVER through an sm_file on which sm_redo_lsn was asked
 * about a log pass that log's fences: they are its recovery pass.
 *
 * Counts are raised before the flag is set and lowered after it is
 * cleared (the flag with atomic OR and AND: a retag of the slot changes
 * the same word under another lock), so they are never below the truth;
 * an owner killed between the two leaves a count too high (more scans,
 * never a missed fence).  The log's key is 24 bits of a hash of its device
 * and inode: two logs bound to one data file whose keys collide share
 * their fences, and one's recovery pass may clear the other's.
 */
#include <errno.h>
#include <string.h>

#include "safemap-internal.h"

static struct smt_header *hdr_of(const struct smt_table *t)
{
	return t->base;
}

/* The page buckets of [off, off+len): the first, and how many (each once;
 * all of them for a range of SMT_FENCE_BUCKETS pages or more). */
static uint64_t buckets(uint64_t off, uint64_t len, uint64_t *p0)
{
	uint64_t p1 = (off + len - 1) >> SMT_FENCE_SHIFT;

	*p0 = off >> SMT_FENCE_SHIFT;
	return p1 - *p0 + 1 < SMT_FENCE_BUCKETS ? p1 - *p0 + 1 : SMT_FENCE_BUCKETS;
}

/* Apply d to the fence counts of [off, off+len), the header's
 * (smt_fence_count) and, for our own entries, our part of them, under an
 * odd own_fence_seq: another thread of ours comparing the two meanwhile
 * sees the change whole or scans.  Callers of ours hold g_mu (redo.c). */
static void count(struct smt_table *t, uint64_t off, uint64_t len, int d, bool ours)
{
	uint64_t p0, n = buckets(off, len, &p0);

	if (!ours) {
		smt_fence_count(hdr_of(t), off, len, d);
		return;
	}
	__atomic_fetch_add(&t->own_fence_seq, 1, __ATOMIC_SEQ_CST);
	smt_fence_count(hdr_of(t), off, len, d);
	__atomic_fetch_add(&t->own_fence_n, (uint32_t)d, __ATOMIC_SEQ_CST);
	for (uint64_t k = 0; k < n; k++)
		__atomic_fetch_add(&t->own_fence[(p0 + k) % SMT_FENCE_BUCKETS], (uint32_t)d, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&t->own_fence_seq, 1, __ATOMIC_SEQ_CST);
}

/* Could another owner's bound entry lie over [off, off+len)?  Only counts:
 * the header's, less our own. */
static bool maybe_fenced(const struct smt_table *t, uint64_t off, uint64_t len)
{
	const struct smt_header *hd = hdr_of(t);
	uint64_t p0, n = buckets(off, len, &p0);
	uint32_t s = __atomic_load_n(&t->own_fence_seq, __ATOMIC_SEQ_CST);
	bool others = false;

	if (s & 1)
		return true; /* a thread of ours is changing them: look */
	for (uint64_t k = 0; k < n && !others; k++) {
		uint32_t b = (uint32_t)((p0 + k) % SMT_FENCE_BUCKETS);
		others = __atomic_load_n(&hd->fence[b], __ATOMIC_SEQ_CST) !=
			 __atomic_load_n(&t->own_fence[b], __ATOMIC_SEQ_CST);
	}
	return others || __atomic_load_n(&t->own_fence_seq, __ATOMIC_SEQ_CST) != s;
}

void sm_fence_set(sm_file *f, struct sm_hold *h, uint32_t key, bool on)
{
	struct smt_table *t = f->table;
	struct smt_slot *s;

	if (!t || h->slot < 0 || h->fenced == on || t->guard->state != SM_MAP_OK)
		return;
	s = &t->slots[h->slot];
	/* atomic: another thread may retag the slot meanwhile (tag.c) */
	if (on) {
		count(t, h->off, h->len, 1, true);
		__atomic_fetch_and(&s->flags, 0xffu & ~SMT_SF_BOUND, __ATOMIC_SEQ_CST);
		__atomic_fetch_or(&s->flags, SMT_SF_BOUND | SMT_SF_LOGKEY(key & 0xffffffu), __ATOMIC_SEQ_CST);
	} else {
		__atomic_fetch_and(&s->flags, ~SMT_SF_BOUND, __ATOMIC_SEQ_CST);
		count(t, h->off, h->len, -1, true);
	}
	h->fenced = on;
}

void sm_fence_recovering(sm_file *f, uint32_t key)
{
	pthread_mutex_lock(&f->lock);
	bool known = false;
	for (unsigned i = 0; i < f->nredo_keys; i++)
		known |= f->redo_keys[i] == key;
	if (!known) {
		/* four logs per file: past that, the first one known gives way */
		unsigned n = sizeof(f->redo_keys) / sizeof(f->redo_keys[0]);
		f->redo_keys[f->nredo_keys < n ? f->nredo_keys++ : 0] = key;
	}
	pthread_mutex_unlock(&f->lock);
}

/* Slot i, if it is a bound held entry of another owner than ours: its
 * range (stable while the entry is published, whatever its seq: an owner
 * killed in the middle of a tag change leaves seq odd), key and word.
 * Read the flags and the word again after the range: an entry freed and
 * claimed meanwhile is not taken for what it was. */
static bool bound_other(const struct smt_table *t, uint32_t i, uint64_t *off, uint64_t *len, uint32_t *key,
			union smt_word *w)
{
	const struct smt_slot *s = &t->slots[i];
	uint32_t fl = __atomic_load_n(&s->flags, __ATOMIC_ACQUIRE), st;

	if (!(fl & SMT_SF_BOUND))
		return false;
	w->word = __atomic_load_n(&s->word, __ATOMIC_ACQUIRE);
	st = w->state;
	if (SMT_STATE(st) != SMT_HELD || SMT_OWNER(st) >= SMT_MAX_OWNERS ||
	    (t->owner_held && SMT_OWNER(st) == t->owner))
		return false; /* not an entry, or ours: in-process rules apply (ranges.c) */
	*off = __atomic_load_n(&s->off, __ATOMIC_RELAXED);
	*len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
	*key = SMT_SF_KEY(fl);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return (__atomic_load_n(&s->flags, __ATOMIC_RELAXED) & SMT_SF_BOUND) &&
	       __atomic_load_n(&s->state, __ATOMIC_RELAXED) == st && *len && *off <= (uint64_t)INT64_MAX &&
	       *len <= (uint64_t)INT64_MAX - *off;
}

/* Does key name a log sm_redo_lsn was asked about on f? */
static bool recovering(sm_file *f, uint32_t key)
{
	for (unsigned i = 0; i < f->nredo_keys; i++)
		if (f->redo_keys[i] == key)
			return true;
	return false;
}

int sm_fence_check_slow(sm_file *f, const struct sm_hold *h)
{
	struct smt_table *t = f->table;

	if (t->guard->state != SM_MAP_OK || !maybe_fenced(t, h->off, h->len))
		return 0;
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		uint64_t off, len;
		uint32_t key;
		union smt_word w;
		if (!bound_other(t, i, &off, &len, &key, &w) || off >= h->off + h->len || h->off >= off + len)
			continue;
		/* the recovery pass of that log (caller holds f->lock) */
		if (h->recover && recovering(f, key))
			continue;
		/* an owner killed in the middle of a retag left seq odd, which
		 * hides the entry from readers (sm_holders): an orphan's now */
		if ((w.seq & 1) && SMT_OWNER(w.state) != SMT_ORPHAN && !smt_owner_alive(t, SMT_OWNER(w.state)))
			(void)smt_retire(t, i, w);
		return -EBUSY;
	}
	return 0;
}

int sm_fence_clear_dead(sm_file *f, uint32_t key, bool (*still_held)(void *arg, int32_t pid), void *arg)
{
	struct smt_table *t = f->table;
	int n = 0;

	if (!t || t->guard->state != SM_MAP_OK)
		return 0;
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		uint64_t off, len;
		uint32_t k, owner;
		union smt_word w;
		if (!bound_other(t, i, &off, &len, &k, &w) || k != (key & 0xffffffu))
			continue;
		owner = SMT_OWNER(w.state);
		if (owner != SMT_ORPHAN && smt_owner_alive(t, owner))
			continue; /* a live owner's: its own to clear */
		if (still_held(arg, __atomic_load_n(&t->slots[i].pid, __ATOMIC_RELAXED)))
			continue; /* the log still counts it: not redone yet */
		if (smt_free_judged(t, i, w)) {
			count(t, off, len, -1, false);
			n++;
		}
	}
	return n;
}

int smt_fence_drop_dead(struct smt_table *t, bool dry)
{
	int n = 0;

	if (t->guard->state != SM_MAP_OK)
		return 0;
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		uint64_t off, len;
		uint32_t k, owner;
		union smt_word w;
		if (!bound_other(t, i, &off, &len, &k, &w))
			continue;
		owner = SMT_OWNER(w.state);
		if (owner != SMT_ORPHAN && smt_owner_alive(t, owner))
			continue;
		if (dry) {
			n++;
		} else if (smt_free_judged(t, i, w)) {
			count(t, off, len, -1, false);
			n++;
		}
	}
	return n;
}
