/* SPDX-License-Identifier: MIT */
/*
 * tmode.c - table-authority mode (SM_OPT_TABLE_LOCKS).
 *
 * In this mode the shared lock table, not the kernel, decides exclusion, so
 * an uncontended slice costs no system call.  Everything of the mode lives
 * here and in tindex.c (one owner's index); lock.c, slice.c and ranges.c
 * only call in, table.c calls the hooks file.c registers (sm_tmode_ops).
 *
 * No process can stall another.  There is no lock any other process can
 * hold: each owner (one per sm_file and process, its liveness byte k) owns
 * area k of the index area, and only it writes that area.  An acquisition
 * of [a, b):
 *   1. claims a slot (compare-and-swap of its state word), fills it,
 *      stamps it with the area's incarnation and publishes it PENDING;
 *   2. announces: links the slot's node into its own index, both copies,
 *      left-right (the copy readers do not use changes under an odd
 *      version, the area flips to it, then the other copy follows);
 *   3. a full fence, then validates: searches every other LIVE area's
 *      active copy for a node overlapping [a, b) whose slot is a pending or
 *      held entry of that area's incarnation, conflicting in mode; a found
 *      entry counts if its owner's liveness byte is locked (a system call,
 *      on the conflict path only) and the area is still LIVE at that
 *      incarnation afterwards;
 *   4. retracts (unlinks, frees the slot: -EBUSY) or marks the slot HELD.
 * Two conflicting acquirers both announce before they look, so at least
 * one sees the other: both may fail, never both succeed.  A reader never
 * waits: the copy it searches is never the one its owner is changing, so
 * an owner stopped at any instruction leaves a stable copy behind; a copy
 * that changed under the reader is read again (every link bounds-checked,
 * every path bounded).  An owner killed at any instruction leaves entries
 * whose liveness byte the kernel unlocked: they count for nothing, and the
 * first process that meets one marks the area DEAD.  A new owner of byte k
 * bumps area k's incarnation before it locks the byte, so a dead owner's
 * entries never look alive again.  tests/tmode.pml is this protocol as a
 * Promela model; spin checks exclusion, no stall and no false refusal with
 * a stop or a kill at every step (tests/check-model.sh).
 *
 * Costs: acquire and release are O(log n) in the regions an owner holds
 * (its treap, twice) plus, per other attached owner, one O(log n) search
 * of its index; a slot comes from the owner's own list of slots it freed,
 * else from a cursor; a full table reaps dead owners' slots before it says
 * -ENOLCK.  No system call on the uncontended path.
 *
 * Opening (hooks, in table.c's order): prepare lays the index area out
 * (once, lock-free: the file is extended, then the header's idx_off set by
 * compare-and-swap) or validates it; before_claim bumps area k's
 * incarnation before table.c locks liveness byte k; attach takes the mode
 * byte (table-mode owners read-lock theirs and test the kernel-mode one:
 * two openers of different modes may both fail, never both succeed), the
 * fence (an OFD read lock over data bytes [0, 2^62) through the sm_file's
 * description: plain fcntl writers are refused), the identity byte
 * 2^62 + (table_id mod 2^32) and tests the rest of the band (a lock there is
 * an owner of another table for the same data file: -EPROTO) and the
 * kernel-mode mark (a kernel-mode opener, whatever its table: -EPROTO), then
 * publishes the area LIVE.  Nothing here ever locks or unlocks bytes of the
 * data file below 2^62 after the fence is taken: an F_UNLCK through the
 * sm_file's description would punch a hole in its own fence.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"
#include "tindex.h"

#define TMODE_NSLOTS 131072u /* capacity in this mode: >= 100,000 regions */
#define BAND ((uint64_t)1 << 62)
#define BAND_LEN ((uint64_t)1 << 32)
/* Identity bytes start here: the band's first 65536 bytes are left to other
 * users of bytes at 2^62 (sm_log's mutex bytes, lib/log.c). */
#define BAND_ID_MIN ((uint64_t)1 << 16)
#define INIT_BYTE (SMT_LIVE_BASE + SMT_MAX_OWNERS + 2)
#define NFREE 512u           /* slots an owner keeps for its next claims */
#define READ_TRIES 100000u   /* an area that never reads consistently: corrupted */

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

struct sm_tmode {
	struct smt_table *t;
	struct smt_idx_hdr *ih;
	struct smt_area *areas;
	struct smt_inode *nodes;
	uint32_t nnodes;  /* slots [0, nnodes) have nodes: the ones we claim */
	uint32_t inc;     /* our area's incarnation */
	bool live;        /* our area is published */
	uint64_t table_id;
	uint32_t cursor;  /* next slot to try when freel is empty */
	uint32_t nfree;
	uint32_t freel[NFREE];
};

void (*smt_test_in_tree_lock)(void);

static uint64_t round4k(uint64_t x)
{
	return (x + 4095) & ~(uint64_t)4095;
}

/* Where the index area of a table of nslots slots lies: past the slots and
 * past where revision-2 tables kept their tree (4096 + 48 bytes a slot),
 * which is left alone. */
static uint64_t idx_off_for(uint32_t nslots)
{
	return round4k((uint64_t)SMT_HEADER_SIZE + (uint64_t)nslots * SMT_SLOT_SIZE) +
	       round4k(4096 + (uint64_t)nslots * 48);
}

static uint64_t idx_size_for(uint32_t nslots)
{
	return round4k(sizeof(struct smt_idx_hdr) + (uint64_t)SMT_MAX_OWNERS * sizeof(struct smt_area) +
		       (uint64_t)nslots * sizeof(struct smt_inode));
}

static bool state_invalid(uint32_t st)
{
	return SMT_STATE(st) > SMT_UNLOCKED || SMT_OWNER(st) >= SMT_MAX_OWNERS ||
	       (SMT_STATE(st) == SMT_FREE && st != SMT_FREE);
}

static union smt_word load_word(const struct smt_table *t, uint32_t i)
{
	return (union smt_word){ .word = __atomic_load_n(&t->slots[i].word, __ATOMIC_ACQUIRE) };
}

static void raise_high_water(struct smt_table *t, uint32_t i)
{
	struct smt_header *hdr = t->base;
	uint32_t hw = __atomic_load_n(&hdr->high_water, __ATOMIC_RELAXED);

	while (hw < i + 1 && !__atomic_compare_exchange_n(&hdr->high_water, &hw, i + 1, true,
							   __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
}

/* ---- reading another owner's area (never waits) ---------------------------- */

struct judge {
	struct sm_tmode *tm;
	uint32_t k, inc;     /* the area searched and its incarnation */
	uint64_t a, b;
	bool write;
	bool dead;           /* its owner's area byte was found unlocked */
	bool stale;          /* a linked node whose slot is no entry of the area */
};

/* Is area k's owner alive?  Its area byte, which only table-mode owners
 * lock (a kernel-mode opener may hold liveness byte k meanwhile). */
static bool area_owner_alive(const struct smt_table *t, uint32_t k)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)(SMT_AREA_BYTE_BASE + k);
	fl.l_len = 1;
	/* cannot tell: never call a live holder stale */
	bool alive = fcntl(t->fd, F_OFD_GETLK, &fl) < 0 || fl.l_type != F_UNLCK;
	if (smt_test_after_probe)
		smt_test_after_probe(k); /* tests count the probes */
	return alive;
}

/* Is slot j, found in area k's copy, a pending or held entry of area k's
 * incarnation that conflicts, of a live owner, with the area still LIVE at
 * that incarnation after the kernel's answer (a new owner of area k bumps
 * the incarnation before it locks the byte)?  A slot that is no entry of
 * the area (x->stale) proves, in a copy read consistently, that its owner
 * is gone: a live owner unlinks a node before it frees its slot.  The first
 * entry found dead ends the walk (x->dead): one probe, not one per entry. */
static bool judge(void *arg, uint32_t j)
{
	struct judge *x = arg;
	struct smt_table *t = x->tm->t;
	const struct smt_slot *s = &t->slots[j];
	uint64_t inc, off, len;
	uint32_t mode;
	union smt_word w;

	/* A consistent read of the fields that decide: off, len, inc and mode
	 * never change while an entry is published (a downgrade's one store
	 * aside), but a tag change makes seq odd for a moment, and a release
	 * and a claim may reuse the slot: read again, a few times; a seq that
	 * stays odd is a tag change stopped half-way, over a published entry. */
	for (int tries = 0;; tries++) {
		w = load_word(t, j);
		if (w.state != (x->k << 8 | SMT_PENDING) && w.state != (x->k << 8 | SMT_HELD)) {
			x->stale = true;
			return false;
		}
		inc = LD(s->inc);
		off = LD(s->off);
		len = LD(s->len);
		mode = LD(s->mode);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		union smt_word w2 = load_word(t, j);
		if (w2.state != (x->k << 8 | SMT_PENDING) && w2.state != (x->k << 8 | SMT_HELD))
			return false; /* released meanwhile: not a holder now */
		if ((w2.seq == w.seq && !(w.seq & 1)) || tries >= 8)
			break;
	}
	if (inc != x->inc) {
		x->stale = true;
		return false;
	}
	if (off >= x->b || len > UINT64_MAX - off || off + len <= x->a || !(x->write || mode == SMT_MODE_WRITE))
		return false;
	if (!area_owner_alive(t, x->k)) {
		/* free at the next conflict: this entry now, the others by the
		 * reaper; the area is marked dead by the caller (a bound change
		 * stays held, an orphan's: fence.c) */
		(void)smt_retire(t, j, w);
		x->dead = true;
		return true; /* ends the walk */
	}
	return __atomic_load_n(&x->tm->areas[x->k].word, __ATOMIC_ACQUIRE) ==
	       SMT_AREA_WORD(x->inc, SMT_AREA_LIVE);
}

/* Search area k for a live entry conflicting with [a, b): its slot index
 * + 1, 0 if none, -EPROTO if the area never reads consistently. */
static int64_t search_area(struct sm_tmode *tm, uint32_t k, uint64_t a, uint64_t b, bool write)
{
	struct smt_area *ar = &tm->areas[k];
	struct judge x = { .tm = tm, .k = k, .a = a, .b = b, .write = write };

	for (uint32_t tries = 0; tries < READ_TRIES; tries++) {
		uint64_t w = __atomic_load_n(&ar->word, __ATOMIC_ACQUIRE);
		if (SMT_AREA_STATE(w) != SMT_AREA_LIVE)
			return 0;
		uint32_t c = __atomic_load_n(&ar->act, __ATOMIC_ACQUIRE) & 1;
		uint32_t v = __atomic_load_n(&ar->ver[c], __ATOMIC_ACQUIRE);
		if (v & 1)
			continue; /* flipped away from since: read act again */
		x.inc = SMT_AREA_INC(w);
		x.dead = x.stale = false;
		int r = tix_search(tm->nodes, tm->nnodes, LD(ar->root[c]), (int)c, a, b, write, judge, &x);
		if (r > 0 && !x.dead)
			return r;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		bool same = __atomic_load_n(&ar->ver[c], __ATOMIC_RELAXED) == v;
		if (x.dead || (r == 0 && same && x.stale && !area_owner_alive(tm->t, k))) {
			/* its owner is gone: none of its entries counts */
			(void)__atomic_compare_exchange_n(&ar->word, &w,
							  SMT_AREA_WORD(x.inc, SMT_AREA_DEAD), false,
							  __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
			continue;
		}
		if (r == 0 && same)
			return 0;
	}
	return -EPROTO;
}

/* Every other owner's area: 0, -EBUSY, or -EPROTO. */
static int validate(struct sm_tmode *tm, uint64_t a, uint64_t b, bool write)
{
	uint32_t me = tm->t->owner, hw = __atomic_load_n(&tm->ih->area_hw, __ATOMIC_ACQUIRE);

	if (hw > SMT_MAX_OWNERS)
		hw = SMT_MAX_OWNERS;
	for (uint32_t k = 0; k < hw; k++) {
		if (k == me || SMT_AREA_STATE(__atomic_load_n(&tm->areas[k].word, __ATOMIC_RELAXED)) !=
				       SMT_AREA_LIVE)
			continue;
		int64_t r = search_area(tm, k, a, b, write);
		if (r != 0)
			return r > 0 ? -EBUSY : (int)r;
	}
	return 0;
}

/* ---- our own area: left-right --------------------------------------------- */

enum lr_op { LR_INSERT, LR_REMOVE, LR_REWRITE };

static void rebuild_own(struct sm_tmode *tm, uint32_t skip);

/* Apply op to node i in both copies: the copy readers do not use first,
 * under an odd version, then flip, then the other copy.  Caller holds
 * f->lock (the area's one writer). */
static void lr(struct sm_tmode *tm, uint32_t i, enum lr_op op, bool write)
{
	struct smt_area *ar = &tm->areas[tm->t->owner];
	uint32_t c = 1 - (ar->act & 1);
	int err = 0;

	for (int pass = 0; pass < 2; pass++, c = 1 - c) {
		struct tix x = { .nodes = tm->nodes, .nnodes = tm->nnodes, .root = &ar->root[c],
				 .c = (int)c };
		uint32_t v = ar->ver[c];
		__atomic_store_n(&ar->ver[c], v + 1, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_RELEASE);
		if (op != LR_INSERT)
			tix_remove(&x, i);
		if (op != LR_REMOVE && !x.err)
			tix_insert(&x, i, write);
		ar->count[c] += op == LR_INSERT ? 1u : op == LR_REMOVE ? UINT32_MAX : 0u;
		__atomic_store_n(&ar->ver[c], v + 2, __ATOMIC_RELEASE);
		if (pass == 0)
			__atomic_store_n(&ar->act, c, __ATOMIC_RELEASE);
		err |= x.err;
	}
	if (err) /* our own area was damaged: derive it again (without i if it goes) */
		rebuild_own(tm, op == LR_REMOVE ? i : UINT32_MAX);
}

/* Our area from our slots (a corruption of the table file): both copies,
 * each under an odd version while it is rebuilt. */
static void rebuild_own(struct sm_tmode *tm, uint32_t skip)
{
	struct smt_table *t = tm->t;
	struct smt_area *ar = &tm->areas[t->owner];
	uint32_t lim = smt_scan_limit(t) < tm->nnodes ? smt_scan_limit(t) : tm->nnodes;

	for (uint32_t c = 1 - (ar->act & 1), pass = 0; pass < 2; pass++, c = 1 - c) {
		struct tix x = { .nodes = tm->nodes, .nnodes = tm->nnodes, .root = &ar->root[c],
				 .c = (int)c };
		uint32_t v = ar->ver[c] | 1;
		__atomic_store_n(&ar->ver[c], v, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_RELEASE);
		ar->root[c] = 0;
		ar->count[c] = 0;
		for (uint32_t i = 0; i < lim; i++) {
			union smt_word w = load_word(t, i);
			uint32_t st = SMT_STATE(w.state);
			const struct smt_slot *s = &t->slots[i];
			if (i == skip || SMT_OWNER(w.state) != t->owner || (st != SMT_PENDING && st != SMT_HELD) ||
			    s->inc != tm->inc || s->len == 0 || s->off > UINT64_MAX - s->len)
				continue;
			tm->nodes[i].off = s->off;
			tm->nodes[i].end = s->off + s->len;
			tix_insert(&x, i, s->mode == SMT_MODE_WRITE);
			ar->count[c]++;
		}
		__atomic_store_n(&ar->ver[c], v + 1, __ATOMIC_RELEASE);
		if (pass == 0)
			__atomic_store_n(&ar->act, c, __ATOMIC_RELEASE);
	}
}

/* ---- slots ------------------------------------------------------------------ */

/* Claim slot i (CLAIMING), and raise high_water over it at once: an
 * owner killed before it published the entry leaves nothing beyond the
 * scans' reach. */
static bool try_claim(struct smt_table *t, uint32_t i)
{
	uint32_t expected = __atomic_load_n(&t->slots[i].state, __ATOMIC_RELAXED);

	if (expected != SMT_FREE && !state_invalid(expected))
		return false;
	if (!__atomic_compare_exchange_n(&t->slots[i].state, &expected, t->owner << 8 | SMT_CLAIMING,
					 false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return false;
	raise_high_water(t, i);
	return true;
}

/* Free the table-mode entries of owners that are gone: a slot stamped with
 * an incarnation its area no longer has (LIVE), or whose owner's liveness
 * byte is unlocked.  The rest of the reaping (waiting entries, other
 * states) is table.c's.  O(high_water): only when the table is full. */
static int reclaim(struct sm_tmode *tm)
{
	struct smt_table *t = tm->t;
	uint32_t lim = smt_scan_limit(t) < tm->nnodes ? smt_scan_limit(t) : tm->nnodes;
	int freed = smt_reap(t, false);

	for (uint32_t i = 0; i < lim; i++) {
		union smt_word w = load_word(t, i);
		uint32_t st = SMT_STATE(w.state), k = SMT_OWNER(w.state);
		if ((st != SMT_PENDING && st != SMT_HELD) || state_invalid(w.state) || (w.seq & 1) ||
		    k == t->owner)
			continue;
		uint64_t aw = __atomic_load_n(&tm->areas[k].word, __ATOMIC_ACQUIRE);
		if (aw == SMT_AREA_WORD((uint32_t)LD(t->slots[i].inc), SMT_AREA_LIVE))
			continue; /* its incarnation's: liveness is table.c's to judge */
		if (smt_retire(t, i, w)) /* a bound change stays held (fence.c) */
			freed++;
	}
	return freed;
}

/* A slot of our own, CLAIMING: one we freed lately, else the next free one
 * from our cursor; a full table is reaped once before -ENOLCK. */
static int claim(struct sm_tmode *tm, uint32_t *out)
{
	struct smt_table *t = tm->t;
	uint32_t lim = t->nslots < tm->nnodes ? t->nslots : tm->nnodes;

	while (tm->nfree > 0) {
		uint32_t i = tm->freel[--tm->nfree];
		if (i < lim && try_claim(t, i)) {
			*out = i;
			return 0;
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t n = 0; n < lim; n++) {
			uint32_t i = tm->cursor < lim ? tm->cursor : 0;
			tm->cursor = i + 1;
			if (try_claim(t, i)) {
				*out = i;
				return 0;
			}
		}
		if (reclaim(tm) <= 0)
			break;
	}
	return -ENOLCK;
}

static void unclaim(struct sm_tmode *tm, uint32_t i)
{
	__atomic_store_n(&tm->t->slots[i].state, SMT_FREE, __ATOMIC_RELEASE);
	if (tm->nfree < NFREE)
		tm->freel[tm->nfree++] = i;
}

/* ---- the library's side ------------------------------------------------- */

/* Announce, validate, then hold or retract.  Caller holds f->lock. */
static int acquire(sm_file *f, struct sm_hold *h, const char *tag)
{
	struct sm_tmode *tm = f->tmode;
	struct smt_table *t = tm->t;
	uint64_t a = h->off, b = h->off + h->len;
	uint32_t i, seq;
	int rc;

	if ((rc = claim(tm, &i)) < 0)
		return rc;
	struct smt_slot *s = &t->slots[i];
	seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
	seq += (seq & 1) ? 2 : 1;
	__atomic_store_n(&s->seq, seq, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	sm_table_fill(s, h, tag ? tag : f->tag, tag != NULL);
	s->inc = tm->inc;
	__atomic_store_n(&s->state, t->owner << 8 | SMT_PENDING, __ATOMIC_RELAXED);
	__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE);
	tm->nodes[i].off = a;
	tm->nodes[i].end = b;
	lr(tm, i, LR_INSERT, h->write);
	if (smt_test_in_tree_lock)
		smt_test_in_tree_lock(); /* announced, not yet validated */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if ((rc = validate(tm, a, b, h->write)) < 0) {
		lr(tm, i, LR_REMOVE, false);
		unclaim(tm, i);
		return rc;
	}
	__atomic_store_n(&s->state, t->owner << 8 | SMT_HELD, __ATOMIC_RELEASE);
	h->slot = (int32_t)i;
	return 0;
}

static void release(sm_file *f, struct sm_hold *h)
{
	struct sm_tmode *tm = f->tmode;
	uint32_t i = (uint32_t)h->slot;

	if (i < tm->nnodes)
		lr(tm, i, LR_REMOVE, false);
	unclaim(tm, i);
	h->slot = -1;
}

int sm_tmode_hold_lock(sm_file *f, struct sm_hold *h, const char *tag)
{
	int rc;

	h->slot = -1;
	if (h->nolock)
		return sm_table_add(f, h, tag, SMT_UNLOCKED);
	if ((rc = sm_ranges_acquire(f, h)) < 0) /* in-process only: no kernel call */
		return rc;
	if ((rc = acquire(f, h, tag)) < 0)
		sm_ranges_release(f, h, true);
	return rc;
}

int sm_tmode_hold_unlock(sm_file *f, struct sm_hold *h, bool owner)
{
	int rc;

	if (h->nolock) {
		sm_table_remove(f, h, owner);
		return 0;
	}
	rc = sm_ranges_release(f, h, owner);
	/* a fork child never touches its parent's entries */
	if (owner && h->slot >= 0)
		release(f, h);
	return rc;
}

int sm_tmode_downgrade(sm_file *f, struct sm_hold *h)
{
	struct sm_tmode *tm = f->tmode;
	int rc;

	if ((rc = sm_ranges_downgrade(f, h)) < 0)
		return rc;
	if (h->slot >= 0) {
		/* one store: readers see the write or the read entry, both true
		 * at some moment; then the index's pruning follows */
		__atomic_store_n(&tm->t->slots[h->slot].mode, SMT_MODE_READ, __ATOMIC_RELEASE);
		if ((uint32_t)h->slot < tm->nnodes)
			lr(tm, (uint32_t)h->slot, LR_REWRITE, false);
	}
	return 0;
}

int sm_tmode_test(sm_file *f, bool write, uint64_t off, uint64_t len)
{
	return validate(f->tmode, off, off + len, write);
}

/* ---- attaching ------------------------------------------------------------- */

/* A lock of a table-mode owner inside [from, to) of the identity band:
 * -EPROTO, found even behind a wider foreign lock (ofd.c); an answer that
 * cannot be had at all is -EPROTO too. */
static int band_test(int fd, uint64_t from, uint64_t to)
{
	int rc = sm_ofd_held_in(fd, from, to, NULL);

	return rc == 1 || rc == -EPROTO ? -EPROTO : rc;
}

/* A kernel-mode opener (with a table or without, whatever its table_dir,
 * read-only too) announces itself, then validates: it read-locks the
 * kernel-mode mark for as long as it has the file open, then tests the
 * identity band once (a table-mode owner there: -EPROTO).  A table-mode
 * attach does the mirror image (identity byte, then the mark), so two
 * openers of different modes may both fail, never both succeed, in either
 * order.  A read lock goes through any description and beside any foreign
 * reader; a foreign write lock over the mark (a plain whole-file write
 * lock) refuses the open, as it refuses a table-mode one. */
int sm_tmode_no_table(sm_file *f)
{
	int rc = sm_ofd_lock(f->fd, false, SM_KERNEL_MARK, 1);

	if (rc == -EBUSY)
		return -EBUSY;
	/* a filesystem without byte-range locks cannot serve table mode
	 * either: nothing to exclude, and the open goes on */
	if (band_test(f->fd, BAND + BAND_ID_MIN, BAND + BAND_LEN) == -EPROTO) {
		if (rc == 0)
			(void)sm_ofd_unlock(f->fd, SM_KERNEL_MARK, 1);
		return -EPROTO;
	}
	return 0;
}

/* Map the whole table (header, slots, index area) in place of table.c's
 * mapping of header and slots. */
static int remap(struct smt_table *t, uint64_t size)
{
	void *p;

	if (size > SIZE_MAX)
		return -ENOMEM;
	p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	sm_fault_unregister(t->guard);
	munmap(t->base, t->size);
	t->base = p;
	t->size = (size_t)size;
	t->slots = (struct smt_slot *)((unsigned char *)p + SMT_HEADER_SIZE);
	t->guard->addr = p;
	t->guard->len = t->size;
	t->guard->state = SM_MAP_OK;
	sm_fault_register(t->guard);
	return 0;
}

/* This boot's identity: FNV-1a of /proc/sys/kernel/random/boot_id, 0 if
 * unreadable.  Hosts booted from copies of one image can share a table
 * file's device and inode numbers, never a boot. */
static uint64_t boot_hash(void)
{
	char id[64];
	uint64_t h = 14695981039346656037ull;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, id, sizeof(id));

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return 0;
	for (ssize_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
	return h;
}

/* The high half of a table_id drawn for this table file in this boot: a
 * copy of the file (another inode) or another boot (a host cloned from one
 * disk image) draws its own identity, as it is another table. */
static uint32_t id_stamp(const struct stat *st, uint64_t boot)
{
	uint64_t h = 14695981039346656037ull, v[3] = { (uint64_t)st->st_dev, (uint64_t)st->st_ino, boot };

	for (int i = 0; i < 3; i++)
		for (int b = 0; b < 64; b += 8)
			h = (h ^ ((v[i] >> b) & 0xff)) * 1099511628211ull;
	return (uint32_t)(h ^ (h >> 32));
}

/* The table's identity: kept while its stamp (high half) names this file
 * in this boot (an owner being killed lets go of the table file before the
 * data file, so its identity byte can outlive its mode byte briefly: a new
 * identity would make it another table's), else drawn anew by one
 * compare-and-swap that every racing opener agrees on: the id carries its
 * own stamp, so no other header field has to be read with it. */
static uint64_t table_identity(struct smt_header *hp, const struct stat *st)
{
	uint64_t boot = boot_hash(), id = __atomic_load_n(&hp->table_id, __ATOMIC_ACQUIRE);
	uint32_t stamp = id_stamp(st, boot);

	while ((uint32_t)(id >> 32) != stamp || (uint32_t)id < BAND_ID_MIN) {
		uint32_t r = 0;
		while (r < BAND_ID_MIN)
			if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
				r = (uint32_t)random() ^ (uint32_t)getpid();
		if (__atomic_compare_exchange_n(&hp->table_id, &id, (uint64_t)stamp << 32 | r, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			id = (uint64_t)stamp << 32 | r;
	}
	/* for display (lockctl info): what the stamp was drawn for */
	hp->table_dev = (uint64_t)st->st_dev;
	hp->table_ino = (uint64_t)st->st_ino;
	hp->table_boot = boot;
	return id;
}

/* Does the index area the header names hold? Fills tm. */
static int use_index(struct smt_table *t, struct sm_tmode *tm, const struct smt_header *h,
		     uint64_t file_size)
{
	uint64_t slots_end = (uint64_t)SMT_HEADER_SIZE + (uint64_t)h->nslots * SMT_SLOT_SIZE;
	const struct smt_idx_hdr *ih;
	int rc;

	if (h->nslots < TMODE_NSLOTS || h->idx_off < slots_end || (h->idx_off & 4095) ||
	    h->idx_size < idx_size_for(TMODE_NSLOTS) || h->idx_off + h->idx_size > file_size)
		return -EPROTO;
	if (t->size != h->idx_off + h->idx_size && (rc = remap(t, h->idx_off + h->idx_size)) < 0)
		return rc;
	t->nslots = h->nslots;
	ih = (const struct smt_idx_hdr *)((unsigned char *)t->base + h->idx_off);
	if (memcmp(ih->magic, SMT_IDX_MAGIC, 8) != 0 || ih->version != SMT_IDX_VERSION ||
	    ih->node_size != sizeof(struct smt_inode) || ih->nareas != SMT_MAX_OWNERS ||
	    ih->nnodes < TMODE_NSLOTS || idx_size_for(ih->nnodes) > h->idx_size)
		return -EPROTO;
	tm->ih = (struct smt_idx_hdr *)ih;
	tm->areas = (struct smt_area *)((unsigned char *)tm->ih + sizeof(*ih));
	tm->nodes = (struct smt_inode *)(tm->areas + SMT_MAX_OWNERS);
	tm->nnodes = ih->nnodes < h->nslots ? ih->nnodes : h->nslots;
	return 0;
}

static void write_idx_hdr(struct smt_idx_hdr *ih, uint32_t nslots)
{
	memcpy(ih->magic, SMT_IDX_MAGIC, 8);
	ih->version = SMT_IDX_VERSION;
	ih->node_size = sizeof(struct smt_inode);
	ih->nnodes = nslots;
	ih->nareas = SMT_MAX_OWNERS;
}

/* An index area that does not validate, with no table-mode owner attached:
 * lay it out afresh (zero areas and nodes).  Under the init byte, taken
 * without waiting: a busy byte means another opener is at it (-EPROTO). */
static int reinit_index(struct smt_table *t, const struct smt_header *h)
{
	struct smt_idx_hdr *ih;
	int rc;

	if (h->nslots < TMODE_NSLOTS || h->idx_off < (uint64_t)SMT_HEADER_SIZE +
						      (uint64_t)h->nslots * SMT_SLOT_SIZE ||
	    (h->idx_off & 4095) || h->idx_size != idx_size_for(h->nslots))
		return -EPROTO;
	if ((rc = sm_ofd_lock(t->fd, true, INIT_BYTE, 1)) < 0)
		return rc == -EBUSY ? -EPROTO : rc;
	if (sm_ofd_test(t->fd, true, SMT_MODE_BYTE_TABLE, 1) == -EBUSY) {
		rc = -EPROTO; /* owners are attached: the table is theirs */
	} else if ((uint64_t)lseek(t->fd, 0, SEEK_END) < h->idx_off + h->idx_size &&
		   ftruncate(t->fd, (off_t)(h->idx_off + h->idx_size)) < 0) {
		rc = -errno;
	} else if ((rc = remap(t, h->idx_off + h->idx_size)) == 0) {
		ih = (struct smt_idx_hdr *)((unsigned char *)t->base + h->idx_off);
		if (fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)h->idx_off,
			      (off_t)h->idx_size) < 0)
			memset(ih, 0, (size_t)h->idx_size);
		write_idx_hdr(ih, h->nslots);
		(void)smt_reap(t, false); /* entries of the old areas' owners */
	}
	(void)sm_ofd_unlock(t->fd, INIT_BYTE, 1);
	return rc;
}

/* Lay the index area out once (lock-free: every racing opener extends the
 * file to the same size and writes the same index header, one
 * compare-and-swap of idx_off publishes it), or use the one there. */
static int lay_out(struct smt_table *t, struct sm_tmode *tm)
{
	for (int round = 0; round < 4; round++) {
		struct smt_header h, *hp;
		struct stat st;
		uint64_t off, size, zero = 0;
		uint32_t nslots;
		int rc;

		if (pread(t->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || fstat(t->fd, &st) < 0)
			return -EPROTO;
		if (smt_check_header(&h, (uint64_t)st.st_size) < 0)
			return -EPROTO;
		if (h.idx_off) {
			if ((rc = use_index(t, tm, &h, (uint64_t)st.st_size)) == -EPROTO &&
			    (rc = reinit_index(t, &h)) == 0)
				continue;
			return rc;
		}
		nslots = h.nslots < TMODE_NSLOTS ? TMODE_NSLOTS : h.nslots;
		off = idx_off_for(nslots);
		size = idx_size_for(nslots);
		if ((uint64_t)st.st_size < off + size && ftruncate(t->fd, (off_t)(off + size)) < 0)
			return -errno;
		if ((rc = remap(t, off + size)) < 0)
			return rc;
		hp = t->base;
		write_idx_hdr((struct smt_idx_hdr *)((unsigned char *)t->base + off), nslots);
		/* grow the slots first (readers validate nslots against the
		 * file size), then publish the index */
		uint32_t old = h.nslots;
		while (old < nslots && !__atomic_compare_exchange_n(&hp->nslots, &old, nslots, false,
								   __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
		__atomic_store_n(&hp->idx_size, size, __ATOMIC_RELEASE);
		(void)__atomic_compare_exchange_n(&hp->idx_off, &zero, off, false, __ATOMIC_ACQ_REL,
						  __ATOMIC_RELAXED);
	}
	return -EPROTO;
}

/* Hook, before table.c locks liveness byte k: bump area k's incarnation,
 * unless a live owner has it.  False: leave k alone. */
static bool before_claim(void *arg, uint32_t k)
{
	struct sm_tmode *tm = arg;
	struct smt_area *ar = &tm->areas[k];
	uint64_t w = __atomic_load_n(&ar->word, __ATOMIC_ACQUIRE);
	uint32_t st = SMT_AREA_STATE(w);

	if ((st == SMT_AREA_LIVE || st == SMT_AREA_CLAIMING) && smt_owner_alive(tm->t, k))
		return false;
	return __atomic_compare_exchange_n(&ar->word, &w,
					   SMT_AREA_WORD(SMT_AREA_INC(w) + 1, SMT_AREA_CLAIMING), false,
					   __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* We hold byte k: take area k over (an opener that probed the byte before
 * we locked it may still bump it once), empty it, publish it LIVE. */
static int publish_area(struct sm_tmode *tm)
{
	uint32_t k = tm->t->owner;
	int rc;

	/* the area byte: ours while the area is (only the owner of byte k
	 * ever takes area byte k, so nobody else holds it) */
	if ((rc = sm_ofd_lock(tm->t->fd, true, SMT_AREA_BYTE_BASE + k, 1)) < 0)
		return rc == -EBUSY ? -EPROTO : rc;
	struct smt_area *ar = &tm->areas[k];
	uint32_t hw = __atomic_load_n(&tm->ih->area_hw, __ATOMIC_RELAXED);

	for (;;) {
		uint64_t w = __atomic_load_n(&ar->word, __ATOMIC_ACQUIRE);
		uint32_t inc = SMT_AREA_INC(w) + 1;
		if (!__atomic_compare_exchange_n(&ar->word, &w, SMT_AREA_WORD(inc, SMT_AREA_CLAIMING),
						 false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue;
		for (int c = 0; c < 2; c++) {
			__atomic_store_n(&ar->ver[c], (ar->ver[c] | 1) + 1, __ATOMIC_RELAXED);
			ar->root[c] = 0;
			ar->count[c] = 0;
		}
		ar->act = 0;
		ar->pid = (int32_t)sm_pid();
		uint64_t cl = SMT_AREA_WORD(inc, SMT_AREA_CLAIMING);
		if (__atomic_compare_exchange_n(&ar->word, &cl, SMT_AREA_WORD(inc, SMT_AREA_LIVE), false,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			tm->inc = inc;
			break;
		}
	}
	while (hw < k + 1 && !__atomic_compare_exchange_n(&tm->ih->area_hw, &hw, k + 1, true,
							   __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
	tm->live = true;
	/* our claims start where nobody has been yet */
	tm->cursor = smt_scan_limit(tm->t);
	return 0;
}

/* Hook, after table.c mapped the table and before it claims an owner byte:
 * table mode needs its index area first. */
static int tmode_prepare(sm_file *f, struct smt_table *t, const sm_options *o)
{
	struct sm_tmode *tm;
	int rc;

	(void)f;
	if (!(o->flags & SM_OPT_TABLE_LOCKS))
		return 0;
	if (!(tm = calloc(1, sizeof(*tm))))
		return -ENOMEM;
	tm->t = t;
	if ((rc = lay_out(t, tm)) < 0) {
		free(tm);
		return rc == -ENOMEM ? rc : -EPROTO;
	}
	t->mode_arg = tm;
	t->before_claim = before_claim;
	return 0;
}

static int attach_table_mode(sm_file *f, struct smt_table *t, struct sm_tmode *tm)
{
	struct stat st;
	uint64_t idb;
	int rc;

	if ((rc = sm_ofd_lock(t->fd, false, SMT_MODE_BYTE_TABLE, 1)) < 0)
		return rc;
	if (sm_ofd_test(t->fd, true, SMT_MODE_BYTE_KERNEL, 1) == -EBUSY)
		return -EPROTO; /* kernel-mode owners are attached */
	if (fstat(t->fd, &st) < 0)
		return -errno;
	tm->table_id = table_identity(t->base, &st);
	t->hdr.table_id = tm->table_id;
	/* the fence: plain fcntl writers are refused while we are attached */
	if ((rc = sm_ofd_lock(f->fd, false, 0, BAND)) < 0)
		return rc;
	idb = BAND + (uint32_t)tm->table_id;
	if ((rc = sm_ofd_lock(f->fd, false, idb, 1)) < 0)
		return rc == -EBUSY ? -EPROTO : rc;
	if ((rc = band_test(f->fd, BAND + BAND_ID_MIN, idb)) < 0 ||
	    (rc = band_test(f->fd, idb + 1, BAND + BAND_LEN)) < 0 ||
	    (rc = band_test(f->fd, SM_KERNEL_MARK, SM_KERNEL_MARK + 1)) < 0)
		return rc; /* another table's owner, or a kernel-mode opener */
	return publish_area(tm);
}

/* Hook, after table.c claimed our owner byte: the mode bytes (both modes),
 * and in table mode the fence, the identity band and our area. */
static int tmode_attach(sm_file *f, struct smt_table *t, const sm_options *o)
{
	struct sm_tmode *tm = t->mode_arg;
	int rc;

	if (!(o->flags & SM_OPT_TABLE_LOCKS)) {
		(void)sm_ofd_lock(t->fd, false, SMT_MODE_BYTE_KERNEL, 1);
		if (sm_ofd_test(t->fd, true, SMT_MODE_BYTE_TABLE, 1) == -EBUSY)
			return -EPROTO; /* table-mode owners are attached */
		return sm_tmode_no_table(f);
	}
	if ((rc = attach_table_mode(f, t, tm)) < 0)
		return rc;
	(void)smt_reap(t, false); /* the lazy reaper of every opener */
	t->mode_arg = NULL;
	t->before_claim = NULL;
	f->tmode = tm;
	__atomic_store_n(&f->size_cache, 0, __ATOMIC_RELAXED);
	return 0;
}

/* Hook: an open that failed after prepare. */
static void tmode_abandon(struct smt_table *t)
{
	free(t->mode_arg);
	t->mode_arg = NULL;
	t->before_claim = NULL;
}

const struct smt_mode_ops sm_tmode_ops = {
	.prepare = tmode_prepare,
	.attach = tmode_attach,
	.abandon = tmode_abandon,
	.no_table = sm_tmode_no_table,
};

void sm_tmode_close(sm_file *f)
{
	struct sm_tmode *tm = f->tmode;

	if (!tm)
		return;
	/* our area is nobody's before our liveness byte is let go (table.c
	 * closes the table after us); a fork child leaves it to its parent */
	if (tm->live && sm_pid() == f->pid) {
		uint64_t w = SMT_AREA_WORD(tm->inc, SMT_AREA_LIVE);
		(void)__atomic_compare_exchange_n(&tm->areas[tm->t->owner].word, &w,
						  SMT_AREA_WORD(tm->inc, SMT_AREA_FREE), false,
						  __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
	}
	free(tm);
	f->tmode = NULL;
}

/* ---- validation (tests) ------------------------------------------------------ */

struct seen {
	uint8_t *mark;
	uint32_t copy;
};

static void seen_node(void *arg, uint32_t i)
{
	struct seen *s = arg;

	s->mark[i] |= (uint8_t)(1u << s->copy);
}

/* Every LIVE area of a live owner: both copies are treaps with exact
 * maxima, hold the same nodes, and those are exactly the area's pending and
 * held slots of its incarnation, with their ranges and modes.  For tests,
 * on a quiet table. */
int smt_tree_check(sm_file *f, char *why, size_t n)
{
	struct sm_tmode *tm;
	struct smt_table *t;
	struct seen s;
	int rc = 0;

	if (why && n)
		why[0] = '\0';
	if (!f || !(tm = f->tmode))
		return -EINVAL;
	t = tm->t;
	if (!(s.mark = calloc(tm->nnodes, 1)))
		return -ENOMEM;
	for (uint32_t k = 0, hw = tm->ih->area_hw; !rc && k < hw && k < SMT_MAX_OWNERS; k++) {
		struct smt_area *ar = &tm->areas[k];
		uint64_t w = __atomic_load_n(&ar->word, __ATOMIC_ACQUIRE);
		uint32_t cnt[2];
		if (SMT_AREA_STATE(w) != SMT_AREA_LIVE || !smt_owner_alive(t, k))
			continue;
		memset(s.mark, 0, tm->nnodes);
		for (s.copy = 0; !rc && s.copy < 2; s.copy++) {
			if (ar->ver[s.copy] & 1) {
				snprintf(why, n, "area %u: copy %u is changing", k, s.copy);
				rc = -EPROTO;
			} else {
				rc = tix_check(tm->nodes, tm->nnodes, ar->root[s.copy], (int)s.copy,
					       seen_node, &s, &cnt[s.copy], why, n);
			}
		}
		if (!rc && (cnt[0] != cnt[1] || cnt[0] != ar->count[0] || cnt[1] != ar->count[1])) {
			snprintf(why, n, "area %u: copies hold %u and %u nodes, counts say %u and %u", k,
				 cnt[0], cnt[1], ar->count[0], ar->count[1]);
			rc = -EPROTO;
		}
		for (uint32_t i = 0; !rc && i < tm->nnodes; i++) {
			union smt_word sw = load_word(t, i);
			const struct smt_slot *sl = &t->slots[i];
			uint32_t st = SMT_STATE(sw.state);
			bool entry = SMT_OWNER(sw.state) == k && (st == SMT_PENDING || st == SMT_HELD) &&
				     sl->inc == SMT_AREA_INC(w);
			if (s.mark[i] != (entry ? 3 : 0)) {
				snprintf(why, n, "area %u: slot %u is %s but linked in copies %#x", k, i,
					 entry ? "an entry" : "no entry", s.mark[i]);
				rc = -EPROTO;
			} else if (entry && (tm->nodes[i].off != sl->off ||
					     tm->nodes[i].end != sl->off + sl->len ||
					     ((tm->nodes[i].flags & 3) != 0) != (sl->mode == SMT_MODE_WRITE) ||
					     ((tm->nodes[i].flags & 3) != 0 && (tm->nodes[i].flags & 3) != 3))) {
				snprintf(why, n, "area %u: node %u does not match its slot", k, i);
				rc = -EPROTO;
			}
		}
	}
	free(s.mark);
	return rc;
}
