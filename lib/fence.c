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
 * lock or table-mode validation) succeeded, looks at the table's fence
 * counts (fence_n, then its page buckets' counts; one load when nothing is
 * bound anywhere) and, only where they are nonzero, scans the table for a
 * bound entry of another owner overlapping its range: found, the
 * acquisition is undone and fails -EBUSY (the entry is listed, SM_STALE
 * once its owner is gone).  A live owner clears its flag before it
 * releases the lock (redo.c, at the commit that writes the pages or at the
 * release), so a bound entry met after the lock step was granted is a dead
 * owner's, or one whose owner is letting go of it this instant.  Slices
 * mapped with SM_RECOVER by a caller that has asked sm_redo_lsn on the
 * file do not look: they are the recovery pass.
 *
 * Counts are raised before the flag is set and lowered after it is
 * cleared, so they are never below the truth; an owner killed between the
 * two leaves a count too high (more scans, never a missed fence).
 */
#include <errno.h>
#include <string.h>

#include "safemap-internal.h"

static struct smt_header *hdr_of(const struct smt_table *t)
{
	return t->base;
}

/* Apply d to the fence counts of [off, off+len): fence_n once, each page
 * bucket the range touches once. */
static void count(struct smt_table *t, uint64_t off, uint64_t len, int d)
{
	struct smt_header *hd = hdr_of(t);
	uint64_t p0 = off >> SMT_FENCE_SHIFT, p1 = (off + len - 1) >> SMT_FENCE_SHIFT;
	uint64_t n = p1 - p0 + 1 < SMT_FENCE_BUCKETS ? p1 - p0 + 1 : SMT_FENCE_BUCKETS;

	if (d > 0)
		__atomic_fetch_add(&hd->fence_n, 1, __ATOMIC_SEQ_CST);
	for (uint64_t k = 0; k < n; k++)
		__atomic_fetch_add(&hd->fence[(p0 + k) % SMT_FENCE_BUCKETS], (uint32_t)d, __ATOMIC_SEQ_CST);
	if (d < 0)
		__atomic_fetch_sub(&hd->fence_n, 1, __ATOMIC_SEQ_CST);
}

/* Could an entry bound over [off, off+len) exist?  Reads only counts. */
static bool maybe_fenced(const struct smt_table *t, uint64_t off, uint64_t len)
{
	const struct smt_header *hd = hdr_of(t);
	uint64_t p0 = off >> SMT_FENCE_SHIFT, p1 = (off + len - 1) >> SMT_FENCE_SHIFT;
	uint64_t n = p1 - p0 + 1 < SMT_FENCE_BUCKETS ? p1 - p0 + 1 : SMT_FENCE_BUCKETS;

	if (!__atomic_load_n(&hd->fence_n, __ATOMIC_SEQ_CST))
		return false;
	for (uint64_t k = 0; k < n; k++)
		if (__atomic_load_n(&hd->fence[(p0 + k) % SMT_FENCE_BUCKETS], __ATOMIC_RELAXED))
			return true;
	return false;
}

void sm_fence_set(sm_file *f, struct sm_hold *h, uint32_t key, bool on)
{
	struct smt_table *t = f->table;
	struct smt_slot *s;

	if (!t || h->slot < 0 || h->fenced == on || t->guard->state != SM_MAP_OK)
		return;
	s = &t->slots[h->slot];
	/* the owner is the only writer of its slot's flags */
	uint32_t fl = __atomic_load_n(&s->flags, __ATOMIC_RELAXED) & (0xffu & ~SMT_SF_BOUND);
	if (on) {
		count(t, h->off, h->len, 1);
		__atomic_store_n(&s->flags, fl | SMT_SF_BOUND | SMT_SF_LOGKEY(key & 0xffffffu), __ATOMIC_SEQ_CST);
	} else {
		__atomic_store_n(&s->flags, fl, __ATOMIC_SEQ_CST);
		count(t, h->off, h->len, -1);
	}
	h->fenced = on;
}

int sm_fence_check_slow(sm_file *f, const struct sm_hold *h)
{
	struct smt_table *t = f->table;

	if (h->recover && f->redo_seen)
		return 0; /* the recovery pass itself */
	if (!maybe_fenced(t, h->off, h->len))
		return 0;
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		struct smt_slot s;
		if (!(__atomic_load_n(&t->slots[i].flags, __ATOMIC_ACQUIRE) & SMT_SF_BOUND))
			continue;
		if (smt_snapshot(t, i, &s) != 1 || !(s.flags & SMT_SF_BOUND) || SMT_STATE(s.state) != SMT_HELD)
			continue;
		if (t->owner_held && SMT_OWNER(s.state) == t->owner)
			continue; /* ours: in-process rules already apply (ranges.c) */
		if (s.off < h->off + h->len && h->off < s.off + s.len)
			return -EBUSY;
	}
	return 0;
}

int sm_fence_clear_dead(sm_file *f, uint32_t key, bool (*still_held)(void *arg, int32_t pid), void *arg)
{
	struct smt_table *t = f->table;
	int n = 0;

	if (!t)
		return 0;
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		union smt_word w = { .word = __atomic_load_n(&t->slots[i].word, __ATOMIC_ACQUIRE) };
		struct smt_slot s;
		uint32_t owner = SMT_OWNER(w.state);
		if (!(__atomic_load_n(&t->slots[i].flags, __ATOMIC_ACQUIRE) & SMT_SF_BOUND) ||
		    SMT_STATE(w.state) != SMT_HELD || (w.seq & 1))
			continue;
		if (smt_snapshot(t, i, &s) != 1 || s.seq != w.seq || s.state != w.state ||
		    SMT_SF_KEY(s.flags) != (key & 0xffffffu))
			continue;
		if (owner != SMT_ORPHAN && ((t->owner_held && owner == t->owner) || smt_owner_alive(t, owner)))
			continue; /* a live owner's: its own to clear */
		if (still_held(arg, s.pid))
			continue; /* the log still counts it: not redone yet */
		if (smt_free_judged(t, i, w)) {
			count(t, s.off, s.len, -1);
			n++;
		}
	}
	return n;
}
