/* SPDX-License-Identifier: MIT */
/*
 * tmode.c - table-authority mode (SM_OPT_TABLE_LOCKS, SPEC §12).
 *
 * In this mode the shared lock table, not the kernel, decides exclusion, so
 * an uncontended slice costs no system call.  Everything of the mode lives
 * here; lock.c, slice.c, ranges.c and table.c only call in.
 *
 * The structure.  The slots stay the published holders (sm_holders and
 * lockctl read them unchanged).  Beside them, at tree_off in the table file
 * (doc/safemap-table.5, "Table-authority mode"), lies an index over the
 * slots: node i belongs to slot i, nodes link by u32 index + 1 (0: none),
 * never by pointer (every process maps the table at another address).  It
 * is a treap keyed by (off, slot index), priorities a hash of the index,
 * each node augmented with the largest end of its subtree and the largest
 * end of a write region in its subtree.  "Is there a region overlapping
 * [a, b) that conflicts with this mode and belongs to another owner?" is a
 * walk that prunes every subtree whose (write) max end is <= a: O(log n)
 * expected for a write request and for a read request alike (readers never
 * enumerate each other: they prune on the write max end).
 *
 * The lock.  One process-shared robust pthread mutex in the tree header
 * guards every change of the tree and of every slot state that the tree
 * indexes (a slot becomes held, stops being held, changes mode, only under
 * it).  Deciding a conflict and publishing the new holder therefore happen
 * in one critical section: no pending state is needed, and a refused
 * process always finds its holder in the slots.  Uncontended, glibc's lock
 * and unlock are one compare-and-swap each and no system call.
 *
 * Crash safety (SIGKILL at any instruction).
 *   - Killed outside the critical section: nothing is half-written.  The
 *     dead owner's slots stay held and its nodes stay in the tree until
 *     a conflict finds one: the finder asks the kernel whether the owner's
 *     liveness byte is still locked (F_OFD_GETLK, a system call on the
 *     conflict path only), and if not removes the node, frees the slot and
 *     searches again ("free at the next conflict").
 *   - Killed inside it: the tree and the slot being changed may be
 *     half-updated.  The kernel marks the robust mutex's owner dead; the
 *     next locker gets EOWNERDEAD and rebuilds the whole tree from the
 *     slots (every held slot of a live owner is inserted; slots of dead
 *     owners, including the one that died mid-update, are freed), then
 *     calls pthread_mutex_consistent.  A rebuild killed midway is redone by
 *     the next locker, so nothing a live process trusts is ever derived
 *     from a half-written structure.
 *   - Slots freed outside the mutex (the lazy reaper of every opener,
 *     lockctl reap, a new owner freeing its dead predecessor's slots) leave
 *     their node in the tree.  A node is trusted only while its slot's state
 *     word still says "held by the node's owner" with the node's range: a
 *     conflict with a node that fails that test removes the node, and a
 *     claimer of a slot whose node is still linked unlinks it first.  A slot
 *     becomes held only under the mutex, together with its node, so such a
 *     check cannot be fooled by a reused slot.  Table-mode openers run the
 *     lazy reap under the mutex (purge: free dead owners' slots, unlink
 *     every node whose slot no longer matches), so the tree indexes
 *     exactly the held slots except after an outside reaper (lockctl reap).
 *   - A corrupted tree (an impossible link, a path deeper than MAX_DEPTH) is
 *     rebuilt from the slots under the mutex too.
 *
 * Opening (sm_tmode_attach, serialised by an OFD write lock on
 * live_base + 65538 of the table file):
 *   1. mode exclusion: read-lock the table-mode byte, then test the
 *      kernel-mode byte with F_OFD_GETLK (kernel-mode owners do the
 *      converse), -EPROTO if held: two openers in different modes may both
 *      fail, never both succeed;
 *   2. if no other table-mode owner is attached (F_OFD_GETLK on the
 *      table-mode byte), (re)build: grow the table to 131072 slots
 *      (sparse), lay out the tree area, keep table_id (draw one if the
 *      table file has none: a new one, a copy, or one from another boot),
 *      initialise the mutex, rebuild the tree from the slots.  With
 *      other table-mode owners attached, a missing or invalid tree area
 *      is -EPROTO (§12.7);
 *   3. the fence: an OFD read lock over data bytes [0, 2^62) through the
 *      sm_file's own description of the data file (-EBUSY if a foreign
 *      write lock is there), so plain fcntl writers are refused;
 *   4. identity: read-lock data byte 2^62 + (table_id mod 2^32) and test
 *      the rest of the band [2^62 + 2^16, 2^62 + 2^32) with F_OFD_GETLK
 *      (table_id mod 2^32 is at least 2^16: the first 2^16 bytes at 2^62
 *      are sm_log's mutex bytes, lib/log.c): a lock
 *      there is a table-mode owner of another table for the same data file
 *      (a hard link, a bind mount, another table_dir): -EPROTO.
 * Kernel-mode openers read-lock the kernel-mode byte and test the
 * table-mode byte, and every kernel-mode opener (with or without a table)
 * tests the band once.
 *
 * Contention: one mutex serialises every decision of every process (a few
 * hundred instructions each).  A holder preempted inside it stalls the
 * others until it runs again (glibc's robust mutex sleeps on the futex, it
 * does not spin), so an oversubscribed machine shows tail latency, never
 * lost exclusion; a sharded mutex (per region of the file) is the next
 * step if that matters.
 *
 * Kernel calls made in this mode: none for map (cached window, cached file
 * size) + access + release of a read slice; write slices still fallocate
 * (SPEC §5.4).  Nothing here ever locks or unlocks bytes of the data file
 * below 2^62 after the fence is taken: an F_UNLCK through the sm_file's
 * description would punch a hole in its own fence (ranges.c and slice.c's
 * unreserve skip their kernel locks in this mode).
 *
 * Deviation from the recommended design, with its reason: kernel-mode
 * openers that do have a usable table test the identity band too (one
 * F_OFD_GETLK at open), not only those without one: a kernel-mode opener
 * whose table is another file (table_dir) than the table-mode owners'
 * would otherwise attach silently.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"

#define TREE_MAGIC "SMTREE1\0"
#define TREE_VERSION 1u
#define TMODE_NSLOTS 131072u /* capacity in this mode: >= 100,000 regions */
#define BAND ((uint64_t)1 << 62)
#define BAND_LEN ((uint64_t)1 << 32)
/* Identity bytes start here: the band's first 65536 bytes are left to other
 * users of bytes at 2^62 (sm_log's mutex bytes, lib/log.c). */
#define BAND_ID_MIN ((uint64_t)1 << 16)
#define INIT_BYTE (SMT_LIVE_BASE + SMT_MAX_OWNERS + 2)
#define MAX_DEPTH 200 /* a treap of 2^20 nodes this deep: corrupted */

/* The tree area's header: 4096 bytes at tree_off. */
struct smt_tree_hdr {
	char magic[8];
	uint32_t version;
	uint32_t node_size;
	uint32_t nnodes; /* == nslots when built */
	uint32_t root;   /* node index + 1, 0: empty */
	uint32_t count;  /* nodes in the tree */
	uint32_t hint;   /* a slot likely free */
	uint64_t rebuilds;
	uint8_t reserved0[24];
	union {
		pthread_mutex_t mu; /* opaque: glibc's, 64-bit builds */
		uint8_t opaque[64];
	} m;
	uint8_t reserved1[4096 - 128];
};

#define NF_IN 0x1u    /* linked in the tree */
#define NF_WRITE 0x2u /* a write region */
#define NF_OWNER(fl) ((fl) >> 8)

struct smt_node {
	uint32_t left, right; /* index + 1, 0: none */
	uint32_t prio;
	uint32_t flags; /* NF_*, bits 8-31: owner */
	uint64_t off, end;
	uint64_t max_end;  /* largest end in the subtree */
	uint64_t max_wend; /* largest end of a write region in the subtree, 0: none */
};

_Static_assert(sizeof(struct smt_tree_hdr) == 4096, "tree header layout");
_Static_assert(sizeof(pthread_mutex_t) <= 64, "mutex area");
_Static_assert(__builtin_offsetof(struct smt_tree_hdr, m) == 64, "mutex offset");
_Static_assert(sizeof(struct smt_node) == 48, "node layout");

struct sm_tmode {
	struct smt_table *t;
	struct smt_tree_hdr *th;
	struct smt_node *nodes;
	uint32_t nnodes;
	uint64_t table_id;
	int err; /* a corruption seen during the current operation */
};

void (*smt_test_in_tree_lock)(void);

/* ---- the treap ------------------------------------------------------------ */

#define NODE(tm, r) (&(tm)->nodes[(r)-1])

static uint32_t prio_of(uint32_t i)
{
	uint32_t x = i * 0x9e3779b1u + 0x7f4a7c15u;

	x ^= x >> 16;
	x *= 0x85ebca6bu;
	x ^= x >> 13;
	x *= 0xc2b2ae35u;
	return x ^ (x >> 16);
}

static bool ref_ok(const struct sm_tmode *tm, uint32_t r)
{
	return r <= tm->nnodes;
}

static bool key_less(const struct sm_tmode *tm, uint32_t a, uint32_t b)
{
	const struct smt_node *x = NODE(tm, a), *y = NODE(tm, b);

	return x->off < y->off || (x->off == y->off && a < b);
}

static void pull(struct sm_tmode *tm, uint32_t r)
{
	struct smt_node *x = NODE(tm, r);
	uint64_t me = x->end, mw = (x->flags & NF_WRITE) ? x->end : 0;

	if (x->left && ref_ok(tm, x->left)) {
		const struct smt_node *l = NODE(tm, x->left);
		me = l->max_end > me ? l->max_end : me;
		mw = l->max_wend > mw ? l->max_wend : mw;
	}
	if (x->right && ref_ok(tm, x->right)) {
		const struct smt_node *l = NODE(tm, x->right);
		me = l->max_end > me ? l->max_end : me;
		mw = l->max_wend > mw ? l->max_wend : mw;
	}
	x->max_end = me;
	x->max_wend = mw;
}

static uint32_t merge(struct sm_tmode *tm, uint32_t a, uint32_t b, int depth)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (depth > MAX_DEPTH || !ref_ok(tm, a) || !ref_ok(tm, b)) {
		tm->err = -EPROTO;
		return a;
	}
	if (NODE(tm, a)->prio > NODE(tm, b)->prio) {
		NODE(tm, a)->right = merge(tm, NODE(tm, a)->right, b, depth + 1);
		pull(tm, a);
		return a;
	}
	NODE(tm, b)->left = merge(tm, a, NODE(tm, b)->left, depth + 1);
	pull(tm, b);
	return b;
}

/* Insert node r (a leaf with its own maxima set): down the path, each
 * subtree maximum only grows by r's end (no child is read); then r rises by
 * rotations while its priority beats its parent's, and only the two nodes
 * of a rotation are recomputed.  Iterative: a corrupted tree deeper than
 * MAX_DEPTH stops it (tm->err) instead of the stack. */
static void ins_root(struct sm_tmode *tm, uint32_t r)
{
	uint32_t path[MAX_DEPTH + 1], cur = tm->th->root;
	struct smt_node *n = NODE(tm, r);
	int d = 0;

	while (cur) {
		struct smt_node *x;
		if (d > MAX_DEPTH || !ref_ok(tm, cur) || cur == r) {
			tm->err = -EPROTO;
			return;
		}
		x = NODE(tm, cur);
		if (n->end > x->max_end)
			x->max_end = n->end;
		if ((n->flags & NF_WRITE) && n->end > x->max_wend)
			x->max_wend = n->end;
		path[d++] = cur;
		cur = key_less(tm, r, cur) ? x->left : x->right;
	}
	if (!d) {
		tm->th->root = r;
		return;
	}
	if (key_less(tm, r, path[d - 1]))
		NODE(tm, path[d - 1])->left = r;
	else
		NODE(tm, path[d - 1])->right = r;
	while (d > 0) {
		uint32_t p = path[d - 1];
		struct smt_node *px = NODE(tm, p);
		if (n->prio <= px->prio)
			break;
		if (px->left == r) {
			px->left = n->right;
			n->right = p;
		} else {
			px->right = n->left;
			n->left = p;
		}
		pull(tm, p);
		pull(tm, r);
		if (--d == 0) {
			tm->th->root = r;
		} else {
			struct smt_node *g = NODE(tm, path[d - 1]);
			if (g->left == p)
				g->left = r;
			else
				g->right = r;
		}
	}
}

/* Remove node r: find its path, replace it by the merge of its children,
 * and recompute the maxima upwards only while they were r's end (a maximum
 * that was another node's does not change, nor do those above it). */
static void del_root(struct sm_tmode *tm, uint32_t r)
{
	uint32_t path[MAX_DEPTH + 1], cur = tm->th->root, sub;
	struct smt_node *n = NODE(tm, r);
	int d = 0;

	while (cur != r) {
		if (!cur || d > MAX_DEPTH || !ref_ok(tm, cur)) {
			tm->err = -EPROTO; /* not found: the tree is not what the flags say */
			return;
		}
		path[d++] = cur;
		cur = key_less(tm, r, cur) ? NODE(tm, cur)->left : NODE(tm, cur)->right;
	}
	sub = merge(tm, n->left, n->right, d);
	if (!d) {
		tm->th->root = sub;
		return;
	}
	if (NODE(tm, path[d - 1])->left == r)
		NODE(tm, path[d - 1])->left = sub;
	else
		NODE(tm, path[d - 1])->right = sub;
	while (d-- > 0) {
		struct smt_node *x = NODE(tm, path[d]);
		if (x->max_end != n->end && !((n->flags & NF_WRITE) && x->max_wend == n->end))
			break;
		pull(tm, path[d]);
	}
}

/* The first node (in key order) of the subtree at root that overlaps
 * [a, b), conflicts with a request of this mode (write: any region; read:
 * write regions) and is not owner me's; 0 if none. */
static uint32_t find(struct sm_tmode *tm, uint32_t root, uint64_t a, uint64_t b, bool write,
		     uint32_t me, int depth)
{
	const struct smt_node *x;
	uint32_t r;

	if (!root)
		return 0;
	if (depth > MAX_DEPTH || !ref_ok(tm, root)) {
		tm->err = -EPROTO;
		return 0;
	}
	x = NODE(tm, root);
	if ((write ? x->max_end : x->max_wend) <= a)
		return 0;
	if ((r = find(tm, x->left, a, b, write, me, depth + 1)) || tm->err)
		return r;
	if (x->off >= b)
		return 0;
	if (x->end > a && (write || (x->flags & NF_WRITE)) && NF_OWNER(x->flags) != me)
		return root;
	return find(tm, x->right, a, b, write, me, depth + 1);
}

static void tree_insert(struct sm_tmode *tm, uint32_t i, uint32_t owner, bool write, uint64_t off,
			uint64_t end)
{
	struct smt_node *n = &tm->nodes[i];

	n->left = n->right = 0;
	n->prio = prio_of(i);
	n->off = off;
	n->end = end;
	n->flags = owner << 8 | (write ? NF_WRITE : 0);
	pull(tm, i + 1);
	ins_root(tm, i + 1);
	n->flags |= NF_IN;
	tm->th->count++;
}

static void tree_remove(struct sm_tmode *tm, uint32_t i)
{
	struct smt_node *n = &tm->nodes[i];

	if (!(n->flags & NF_IN))
		return;
	del_root(tm, i + 1);
	n->flags &= ~NF_IN;
	n->left = n->right = 0;
	tm->th->count--;
}

/* ---- slots (the same rules as table.c's, under the mutex) ------------------ */

static bool state_invalid(uint32_t st)
{
	return SMT_STATE(st) > SMT_UNLOCKED || SMT_OWNER(st) >= SMT_MAX_OWNERS ||
	       (SMT_STATE(st) == SMT_FREE && st != SMT_FREE);
}

static union smt_word load_word(const struct smt_table *t, uint32_t i)
{
	return (union smt_word){ .word = __atomic_load_n(&t->slots[i].word, __ATOMIC_ACQUIRE) };
}

static bool free_slot_if(struct smt_table *t, uint32_t i, union smt_word w)
{
	union smt_word nw = { .seq = (w.seq | 1) + 1, .state = SMT_FREE };
	uint64_t expected = w.word;

	return __atomic_compare_exchange_n(&t->slots[i].word, &expected, nw.word, false,
					   __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

static void raise_high_water(struct smt_table *t, uint32_t i)
{
	struct smt_header *hdr = t->base;
	uint32_t hw = __atomic_load_n(&hdr->high_water, __ATOMIC_RELAXED);

	while (hw < i + 1 && !__atomic_compare_exchange_n(&hdr->high_water, &hw, i + 1, true,
							   __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
}

static uint32_t scan_limit(const struct sm_tmode *tm)
{
	uint32_t lim = smt_scan_limit(tm->t);

	return lim < tm->nnodes ? lim : tm->nnodes;
}

/* Rebuild the tree from the slots: every held slot of a live owner is
 * inserted, every slot of a dead owner freed.  Caller holds the mutex (or
 * is the only table-mode owner). */
static void rebuild(struct sm_tmode *tm)
{
	struct smt_table *t = tm->t;
	uint32_t lim = scan_limit(tm);
	uint8_t *known = calloc(SMT_MAX_OWNERS, 1); /* 0 unknown, 1 alive, 2 dead */

	tm->err = 0;
	tm->th->root = 0;
	tm->th->count = 0;
	memset(tm->nodes, 0, (size_t)lim * sizeof(*tm->nodes));
	for (uint32_t i = 0; i < lim && t->guard->state == SM_MAP_OK; i++) {
		union smt_word w = load_word(t, i);
		const struct smt_slot *s = &t->slots[i];
		uint32_t owner = SMT_OWNER(w.state);
		bool alive;
		if (w.state == SMT_FREE || state_invalid(w.state))
			continue;
		if (known && known[owner])
			alive = known[owner] == 1;
		else {
			alive = smt_owner_alive(t, owner);
			if (known)
				known[owner] = alive ? 1 : 2;
		}
		if (!alive) {
			free_slot_if(t, i, w);
			continue;
		}
		if (SMT_STATE(w.state) != SMT_HELD)
			continue;
		uint64_t off = s->off, len = s->len;
		if (len == 0 || off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
			continue; /* garbage: hidden, never indexed */
		tree_insert(tm, i, owner, s->mode == SMT_MODE_WRITE, off, off + len);
	}
	tm->th->rebuilds++;
	free(known);
}

/* Free the slots of dead owners and unlink every node whose slot is no
 * longer the held slot it indexes (freed outside the mutex: by a new owner
 * of a dead owner's liveness byte before it attached, by lockctl reap).
 * O(high_water), one liveness probe per owner.  Caller holds the mutex.
 * Returns the number of slots freed. */
static int purge(struct sm_tmode *tm)
{
	struct smt_table *t = tm->t;
	uint32_t lim = scan_limit(tm);
	uint8_t *known = calloc(SMT_MAX_OWNERS, 1);
	int freed = 0;

	if (!known)
		return -ENOMEM;
	for (uint32_t i = 0; i < lim && t->guard->state == SM_MAP_OK && !tm->err; i++) {
		union smt_word w = load_word(t, i);
		const struct smt_slot *s = &t->slots[i];
		struct smt_node *n = &tm->nodes[i];
		uint32_t owner = SMT_OWNER(w.state);
		if (w.state != SMT_FREE && !state_invalid(w.state) && SMT_STATE(w.state) != SMT_CLAIMING) {
			if (!known[owner])
				known[owner] = smt_owner_alive(t, owner) ? 1 : 2;
			if (known[owner] == 2 && free_slot_if(t, i, w)) {
				freed++;
				w.state = SMT_FREE;
			}
		}
		if ((n->flags & NF_IN) &&
		    (w.state != (NF_OWNER(n->flags) << 8 | SMT_HELD) || s->off != n->off ||
		     s->off + s->len != n->end))
			tree_remove(tm, i);
	}
	free(known);
	return freed;
}

static int tree_lock(struct sm_tmode *tm)
{
	int rc = pthread_mutex_lock(&tm->th->m.mu);

	if (rc == EOWNERDEAD) {
		/* its last owner died inside: the tree may be half-changed */
		rebuild(tm);
		pthread_mutex_consistent(&tm->th->m.mu);
		rc = 0;
	}
	if (rc)
		return rc == ENOTRECOVERABLE ? -EPROTO : -rc;
	tm->err = 0;
	return 0;
}

static int tree_unlock(struct sm_tmode *tm)
{
	int rc = 0;

	if (tm->err) {
		rebuild(tm); /* a corruption was seen: derive the tree again */
		rc = tm->err ? -EPROTO : 0;
	}
	pthread_mutex_unlock(&tm->th->m.mu);
	if (tm->t->guard->state != SM_MAP_OK)
		return -EPROTO; /* the table file shrank under us */
	return rc;
}

/* Is node r (slot r - 1) still a live holder?  Removes it (and frees a
 * dead owner's slot) when it is not. */
static bool node_live(struct sm_tmode *tm, uint32_t r)
{
	struct smt_table *t = tm->t;
	struct smt_node *n = NODE(tm, r);
	uint32_t i = r - 1, owner = NF_OWNER(n->flags);
	union smt_word w;
	const struct smt_slot *s;

	if (i >= t->nslots)
		goto stale;
	w = load_word(t, i);
	s = &t->slots[i];
	if (w.state != (owner << 8 | SMT_HELD) || s->off != n->off || s->off + s->len != n->end)
		goto stale; /* freed (and perhaps reused) outside the mutex */
	if (smt_owner_alive(t, owner))
		return true;
	free_slot_if(t, i, w);
stale:
	tree_remove(tm, i);
	return false;
}

/* 0 if no live holder conflicts with [a, b) in this mode, -EBUSY if one
 * does.  Caller holds the mutex. */
static int conflict(struct sm_tmode *tm, uint64_t a, uint64_t b, bool write)
{
	uint32_t me = tm->t->owner;

	for (;;) {
		uint32_t r = find(tm, tm->th->root, a, b, write, me, 0);
		if (tm->err) {
			rebuild(tm);
			if (tm->err)
				return -EPROTO;
			continue;
		}
		if (!r)
			return 0;
		if (node_live(tm, r))
			return -EBUSY;
		if (tm->err)
			return -EPROTO;
	}
}

static bool claim(struct sm_tmode *tm, uint32_t *out)
{
	struct smt_table *t = tm->t;
	uint32_t n = t->nslots < tm->nnodes ? t->nslots : tm->nnodes;
	uint32_t start = tm->th->hint < n ? tm->th->hint : 0;

	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = start + k < n ? start + k : start + k - n;
		struct smt_slot *s = &t->slots[i];
		uint32_t expected = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
		if (expected != SMT_FREE && !state_invalid(expected))
			continue;
		if (!__atomic_compare_exchange_n(&s->state, &expected, t->owner << 8 | SMT_CLAIMING,
						 false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			continue;
		tm->th->hint = i + 1;
		*out = i;
		return true;
	}
	return false;
}

/* Under the mutex: decide, then publish h in a slot and the tree. */
static int tree_acquire(sm_file *f, struct sm_hold *h, const char *tag)
{
	struct sm_tmode *tm = f->tmode;
	struct smt_table *t = tm->t;
	uint64_t a = h->off, b = h->off + h->len;
	uint32_t i, seq;
	int rc;

	if ((rc = tree_lock(tm)) < 0)
		return rc;
	if ((rc = conflict(tm, a, b, h->write)) < 0)
		goto out;
	if (!claim(tm, &i)) {
		/* full: take back the slots of dead owners, then try again */
		if (purge(tm) <= 0 || !claim(tm, &i)) {
			rc = -ENOLCK;
			goto out;
		}
	}
	struct smt_slot *s = &t->slots[i];
	seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
	seq += (seq & 1) ? 2 : 1;
	__atomic_store_n(&s->seq, seq, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	sm_table_fill(s, h, tag ? tag : f->tag, tag != NULL);
	__atomic_store_n(&s->state, t->owner << 8 | SMT_HELD, __ATOMIC_RELAXED);
	__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE);
	raise_high_water(t, i);
	if (smt_test_in_tree_lock)
		smt_test_in_tree_lock();
	tree_remove(tm, i); /* a node left linked by a slot freed outside the mutex */
	tree_insert(tm, i, t->owner, h->write, a, b);
	h->slot = (int32_t)i;
out:
	/* an error of the unlock (a corruption seen and rebuilt, which indexes
	 * our held slot again) does not undo a grant */
	(void)tree_unlock(tm);
	return rc;
}

static void tree_release(sm_file *f, struct sm_hold *h)
{
	struct sm_tmode *tm = f->tmode;
	struct smt_table *t = tm->t;
	struct smt_slot *s;
	uint32_t i = (uint32_t)h->slot;

	if (tree_lock(tm) < 0)
		return; /* the slot stays held: our liveness byte frees it at close */
	if (i < tm->nnodes && (tm->nodes[i].flags & NF_IN) && NF_OWNER(tm->nodes[i].flags) == t->owner)
		tree_remove(tm, i);
	s = &t->slots[i];
	if (SMT_OWNER(__atomic_load_n(&s->state, __ATOMIC_RELAXED)) == t->owner) {
		__atomic_fetch_add(&s->seq, 1, __ATOMIC_ACQ_REL);
		__atomic_store_n(&s->state, SMT_FREE, __ATOMIC_RELAXED);
		__atomic_fetch_add(&s->seq, 1, __ATOMIC_RELEASE);
		if (i < tm->th->hint)
			tm->th->hint = i;
	}
	h->slot = -1;
	(void)tree_unlock(tm);
}

/* ---- the library's side ------------------------------------------------- */

int sm_tmode_hold_lock(sm_file *f, struct sm_hold *h, const char *tag)
{
	int rc;

	h->slot = -1;
	if (h->nolock)
		return sm_table_add(f, h, tag, SMT_UNLOCKED);
	if ((rc = sm_ranges_acquire(f, h)) < 0) /* in-process only: no kernel call */
		return rc;
	if ((rc = tree_acquire(f, h, tag)) < 0)
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
	/* a fork child never touches its parent's entries (SPEC §3.6) */
	if (owner && h->slot >= 0)
		tree_release(f, h);
	return rc;
}

int sm_tmode_downgrade(sm_file *f, struct sm_hold *h)
{
	struct sm_tmode *tm = f->tmode;
	struct smt_table *t = tm->t;
	uint32_t i = (uint32_t)h->slot;
	int rc;

	if ((rc = sm_ranges_downgrade(f, h)) < 0)
		return rc;
	if (h->slot < 0 || tree_lock(tm) < 0)
		return 0;
	if (i < tm->nnodes && (tm->nodes[i].flags & NF_IN)) {
		/* re-insert: the write max ends on its path change */
		tree_remove(tm, i);
		tree_insert(tm, i, t->owner, false, h->off, h->off + h->len);
	}
	struct smt_slot *s = &t->slots[i];
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_ACQ_REL);
	s->mode = SMT_MODE_READ;
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_RELEASE);
	(void)tree_unlock(tm);
	return 0;
}

int sm_tmode_test(sm_file *f, bool write, uint64_t off, uint64_t len)
{
	struct sm_tmode *tm = f->tmode;
	int rc, urc;

	if ((rc = tree_lock(tm)) < 0)
		return rc;
	rc = conflict(tm, off, off + len, write);
	urc = tree_unlock(tm);
	return rc ? rc : urc;
}

/* ---- attaching ------------------------------------------------------------- */

/* A lock of a table-mode owner in the identity band: -EPROTO. */
static int band_test(int fd, uint64_t from, uint64_t to)
{
	struct flock fl;

	if (from >= to)
		return 0;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)from;
	fl.l_len = (off_t)(to - from);
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	if (fl.l_type == F_UNLCK)
		return 0;
	/* only a lock lying inside the band is a table-mode owner's */
	if ((uint64_t)fl.l_start >= BAND + BAND_ID_MIN && fl.l_len > 0 &&
	    (uint64_t)fl.l_start + (uint64_t)fl.l_len <= BAND + BAND_LEN)
		return -EPROTO;
	return 0;
}

int sm_tmode_no_table(sm_file *f)
{
	/* best effort beyond the one verdict that matters: a kernel-mode open
	 * never fails because the probe itself could not be made */
	return band_test(f->fd, BAND + BAND_ID_MIN, BAND + BAND_LEN) == -EPROTO ? -EPROTO : 0;
}

/* Map the whole table (header, slots, tree area) in place of table.c's
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

static uint64_t tree_bytes(uint32_t nnodes)
{
	return ((uint64_t)sizeof(struct smt_tree_hdr) + (uint64_t)nnodes * sizeof(struct smt_node) +
		4095) & ~(uint64_t)4095;
}

/* Does the header describe a tree area we can use?  Fills tm. */
static int use_tree(struct smt_table *t, struct sm_tmode *tm)
{
	struct smt_header h;
	struct stat st;
	uint64_t slots_end;

	if (pread(t->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || fstat(t->fd, &st) < 0)
		return -EPROTO;
	if (smt_check_header(&h, (uint64_t)st.st_size) < 0 || h.nslots < TMODE_NSLOTS)
		return -EPROTO;
	slots_end = (uint64_t)SMT_HEADER_SIZE + (uint64_t)h.nslots * SMT_SLOT_SIZE;
	if (h.tree_off < slots_end || (h.tree_off & 4095) || h.tree_size != tree_bytes(h.nslots) ||
	    h.tree_off + h.tree_size > (uint64_t)st.st_size || (uint32_t)h.table_id < BAND_ID_MIN)
		return -EPROTO;
	if (t->size != h.tree_off + h.tree_size) {
		int rc = remap(t, h.tree_off + h.tree_size);
		if (rc < 0)
			return rc;
	}
	t->hdr = h;
	t->nslots = h.nslots;
	tm->th = (struct smt_tree_hdr *)((unsigned char *)t->base + h.tree_off);
	tm->nodes = (struct smt_node *)((unsigned char *)tm->th + sizeof(struct smt_tree_hdr));
	if (memcmp(tm->th->magic, TREE_MAGIC, 8) != 0 || tm->th->version != TREE_VERSION ||
	    tm->th->node_size != sizeof(struct smt_node) || tm->th->nnodes != h.nslots)
		return -EPROTO;
	tm->nnodes = h.nslots;
	tm->table_id = h.table_id;
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

/* Lay out (grow to TMODE_NSLOTS slots, tree area after them) and
 * initialise the tree area; only when no other table-mode owner is
 * attached. */
static int build_tree(struct smt_table *t, struct sm_tmode *tm)
{
	struct smt_header *hp;
	struct stat st;
	uint32_t nslots = t->hdr.nslots < TMODE_NSLOTS ? TMODE_NSLOTS : t->hdr.nslots;
	uint64_t slots_end = (uint64_t)SMT_HEADER_SIZE + (uint64_t)nslots * SMT_SLOT_SIZE;
	uint64_t off = (slots_end + 4095) & ~(uint64_t)4095, size = tree_bytes(nslots);
	uint64_t id, boot = boot_hash();
	pthread_mutexattr_t ma;
	int rc;

	if (fstat(t->fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < off + size && ftruncate(t->fd, (off_t)(off + size)) < 0)
		return -errno;
	if ((rc = remap(t, off + size)) < 0)
		return rc;
	/* zeros (sparse) wherever the punch works; a memset where it does not */
	if (fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)size) < 0)
		memset((unsigned char *)t->base + off, 0, (size_t)size);
	/* The table file keeps its identity: an owner dying now may still
	 * hold its identity byte (the kernel lets go of the table file, then
	 * of the data file), and a new identity would make it "another
	 * table".  A copy of a table file (another inode, or another boot:
	 * a cloned disk image) draws its own: it is another table. */
	hp = t->base;
	id = __atomic_load_n(&hp->table_id, __ATOMIC_RELAXED);
	if (hp->table_dev != (uint64_t)st.st_dev || hp->table_ino != (uint64_t)st.st_ino ||
	    hp->table_boot != boot)
		id = 0;
	while ((uint32_t)id < BAND_ID_MIN)
		if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
			id = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ (uint64_t)getpid();
	tm->th = (struct smt_tree_hdr *)((unsigned char *)t->base + off);
	tm->nodes = (struct smt_node *)((unsigned char *)tm->th + sizeof(struct smt_tree_hdr));
	tm->nnodes = nslots;
	tm->table_id = id;
	memcpy(tm->th->magic, TREE_MAGIC, 8);
	tm->th->version = TREE_VERSION;
	tm->th->node_size = sizeof(struct smt_node);
	tm->th->nnodes = nslots;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	rc = pthread_mutex_init(&tm->th->m.mu, &ma);
	pthread_mutexattr_destroy(&ma);
	if (rc)
		return -rc;
	/* the header last: readers validate nslots against the file size */
	hp->table_id = id;
	hp->table_dev = (uint64_t)st.st_dev;
	hp->table_ino = (uint64_t)st.st_ino;
	hp->table_boot = boot;
	hp->tree_off = off;
	hp->tree_size = size;
	__atomic_store_n(&hp->nslots, nslots, __ATOMIC_RELEASE);
	t->hdr.nslots = nslots;
	t->hdr.table_id = id;
	t->hdr.tree_off = off;
	t->hdr.tree_size = size;
	t->nslots = nslots;
	rebuild(tm);
	return 0;
}

static int init_lock(int fd, short type)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)INIT_BYTE;
	fl.l_len = 1;
	while (fcntl(fd, F_OFD_SETLKW, &fl) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static int attach_table_mode(sm_file *f, struct smt_table *t, struct sm_tmode *tm)
{
	uint64_t idb;
	int rc;

	if ((rc = sm_ofd_lock(t->fd, false, SMT_MODE_BYTE_TABLE, 1)) < 0)
		return rc;
	if (sm_ofd_test(t->fd, true, SMT_MODE_BYTE_KERNEL, 1) == -EBUSY)
		return -EPROTO; /* kernel-mode owners are attached */
	if (sm_ofd_test(t->fd, true, SMT_MODE_BYTE_TABLE, 1) == -EBUSY) {
		/* others are attached in this mode: their tree must be valid
		 * (SPEC §12.7: a table failing validation is rebuilt only when
		 * no owner is alive) */
		if ((rc = use_tree(t, tm)) < 0)
			return rc == -ENOMEM ? rc : -EPROTO;
	} else if ((rc = build_tree(t, tm)) < 0) {
		return rc;
	}
	/* the fence: plain fcntl writers are refused while we are attached */
	if ((rc = sm_ofd_lock(f->fd, false, 0, BAND)) < 0)
		return rc;
	idb = BAND + (uint32_t)tm->table_id;
	if ((rc = sm_ofd_lock(f->fd, false, idb, 1)) < 0)
		return rc == -EBUSY ? -EPROTO : rc;
	if ((rc = band_test(f->fd, BAND + BAND_ID_MIN, idb)) < 0 ||
	    (rc = band_test(f->fd, idb + 1, BAND + BAND_LEN)) < 0)
		return rc;
	return 0;
}

int sm_tmode_attach(sm_file *f, struct smt_table *t, const sm_options *o)
{
	struct sm_tmode *tm;
	int rc;

	if (!(o->flags & SM_OPT_TABLE_LOCKS)) {
		(void)sm_ofd_lock(t->fd, false, SMT_MODE_BYTE_KERNEL, 1);
		if (sm_ofd_test(t->fd, true, SMT_MODE_BYTE_TABLE, 1) == -EBUSY)
			return -EPROTO; /* table-mode owners are attached */
		return sm_tmode_no_table(f);
	}
	if (!(tm = calloc(1, sizeof(*tm))))
		return -ENOMEM;
	tm->t = t;
	if ((rc = init_lock(t->fd, F_WRLCK)) < 0) {
		free(tm);
		return rc;
	}
	rc = attach_table_mode(f, t, tm);
	(void)sm_ofd_unlock(t->fd, INIT_BYTE, 1);
	if (rc == 0 && (rc = tree_lock(tm)) == 0) {
		/* the lazy reaper of every opener, under the mutex here, and the
		 * slots our claim of a liveness byte freed: out of the tree */
		int prc = purge(tm), urc = tree_unlock(tm);
		rc = prc < 0 ? prc : urc;
	}
	if (rc < 0) {
		free(tm);
		return rc;
	}
	f->tmode = tm;
	__atomic_store_n(&f->size_cache, 0, __ATOMIC_RELAXED);
	return 0;
}

void sm_tmode_close(sm_file *f)
{
	free(f->tmode);
	f->tmode = NULL;
}

/* ---- validation (tests, lockctl) -------------------------------------------- */

struct walk {
	struct sm_tmode *tm;
	uint8_t *seen;
	uint32_t count;
	char *why;
	size_t n;
};

static int bad(struct walk *w, const char *fmt, unsigned long long a, unsigned long long b)
{
	if (w->why && w->n)
		snprintf(w->why, w->n, fmt, a, b);
	return -EPROTO;
}

static int walk(struct walk *w, uint32_t r, uint32_t parent_prio, int depth, uint64_t *me,
		uint64_t *mw)
{
	struct sm_tmode *tm = w->tm;
	struct smt_node *x;
	uint64_t lme = 0, lmw = 0, rme = 0, rmw = 0, e, ew;
	int rc;

	*me = *mw = 0;
	if (!r)
		return 0;
	if (depth > MAX_DEPTH || r > tm->nnodes)
		return bad(w, "bad link %llu at depth %llu", r, (unsigned long long)depth);
	if (w->seen[r - 1]++)
		return bad(w, "node %llu reached twice%llu", r - 1, 0);
	x = NODE(tm, r);
	if (!(x->flags & NF_IN))
		return bad(w, "node %llu linked but not flagged in the tree%llu", r - 1, 0);
	if (x->prio > parent_prio)
		return bad(w, "node %llu breaks the heap order (prio %llu)", r - 1, x->prio);
	if (x->left && !key_less(tm, x->left, r))
		return bad(w, "left child of node %llu out of order%llu", r - 1, 0);
	if (x->right && !key_less(tm, r, x->right))
		return bad(w, "right child of node %llu out of order%llu", r - 1, 0);
	if ((rc = walk(w, x->left, x->prio, depth + 1, &lme, &lmw)) < 0 ||
	    (rc = walk(w, x->right, x->prio, depth + 1, &rme, &rmw)) < 0)
		return rc;
	e = x->end > lme ? x->end : lme;
	e = e > rme ? e : rme;
	ew = (x->flags & NF_WRITE) ? x->end : 0;
	ew = ew > lmw ? ew : lmw;
	ew = ew > rmw ? ew : rmw;
	if (x->max_end != e || x->max_wend != ew)
		return bad(w, "node %llu has wrong subtree ends (max_end %llu)", r - 1, x->max_end);
	/* the tree only holds held slots with the node's range */
	struct smt_slot *s = &tm->t->slots[r - 1];
	uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
	if (st != (NF_OWNER(x->flags) << 8 | SMT_HELD) || s->off != x->off || s->off + s->len != x->end ||
	    (s->mode == SMT_MODE_WRITE) != !!(x->flags & NF_WRITE))
		return bad(w, "node %llu does not match its slot (state %#llx)", r - 1, st);
	*me = e;
	*mw = ew;
	w->count++;
	return 0;
}

int smt_tree_check(sm_file *f, char *why, size_t n)
{
	struct sm_tmode *tm;
	struct walk w = { 0 };
	uint64_t me, mw;
	int rc, urc;

	if (why && n)
		why[0] = '\0';
	if (!f || !(tm = f->tmode))
		return -EINVAL;
	w.tm = tm;
	w.why = why;
	w.n = n;
	if (!(w.seen = calloc(tm->nnodes, 1)))
		return -ENOMEM;
	if ((rc = tree_lock(tm)) < 0) {
		free(w.seen);
		return rc;
	}
	rc = walk(&w, tm->th->root, UINT32_MAX, 0, &me, &mw);
	if (!rc && w.count != tm->th->count)
		rc = bad(&w, "the tree has %llu nodes, its header says %llu", w.count, tm->th->count);
	/* every held slot of a live owner is in the tree, linked */
	for (uint32_t i = 0, lim = scan_limit(tm); !rc && i < lim; i++) {
		uint32_t st = __atomic_load_n(&tm->t->slots[i].state, __ATOMIC_ACQUIRE);
		if (SMT_STATE(st) != SMT_HELD || state_invalid(st))
			continue;
		if (!w.seen[i] && smt_owner_alive(tm->t, SMT_OWNER(st)))
			rc = bad(&w, "held slot %llu of live owner %llu is not in the tree", i, SMT_OWNER(st));
	}
	for (uint32_t i = 0; !rc && i < tm->nnodes; i++)
		if ((tm->nodes[i].flags & NF_IN) && !w.seen[i])
			rc = bad(&w, "node %llu is flagged but not linked%llu", i, 0);
	urc = tree_unlock(tm);
	free(w.seen);
	return rc ? rc : urc;
}
