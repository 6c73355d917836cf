/* SPDX-License-Identifier: MIT */
/*
 * ranges.c - in-process range counting (SPEC §3.2).
 *
 * The kernel merges and splits the OFD locks of one open file description
 * without counting them: two overlapping read slices share kernel bytes, and
 * unlocking one slice's range would silently unlock bytes the other still
 * covers; a write lock over a read-locked byte would silently upgrade it.
 * So each sm_file keeps its own picture of what it holds: disjoint runs in
 * an RB tree ordered by start, each a write run (one write slice) or a read
 * run with the number of read slices covering it.  From it we compute which
 * bytes to lock (the slice's whole range, one fcntl: bytes we already hold
 * in read mode merge in the kernel) and which to unlock on release (only the
 * runs whose count drops to zero).  Every lookup is O(log n) in the number of
 * runs, plus the runs the slice overlaps.
 *
 * In table-authority mode (tmode.c) the same counting runs without any
 * kernel call: the table decides between sm_files, and an F_UNLCK through
 * the description would punch a hole in its fence (sm_kernel_locks()).
 *
 * One structure for every hold of the file: slices and sm_lock ranges
 * (lock.c) follow the same rules between each other.  SM_NOLOCK mappings
 * hold nothing and never appear here.
 *
 * Every node a mutation needs is allocated before the kernel lock is taken,
 * and each read hold reserves the two nodes its release may need to split
 * runs, so the tree and the kernel never disagree on an allocation failure.
 * A reservation is a count, not nodes set aside: f's free list always holds
 * at least f->seg_reserved nodes (2 per live read hold), and a release that
 * splits takes them from it, so the common acquisition and release move one
 * node each (issue 14: the lock path costs what raw fcntl does).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "safemap-internal.h"

#define SEG_POOL_MAX 256

static int seg_cmp(const struct sm_seg *a, const struct sm_seg *b)
{
	return a->start < b->start ? -1 : a->start > b->start;
}

SM_RB_GENERATE_STATIC(sm_segtree, sm_seg, rb, seg_cmp)

/* Make sure f's free list holds n nodes beyond its reservations. */
SM_HOT static int seg_reserve(sm_file *f, unsigned n)
{
	while (f->nseg_pool < f->seg_reserved + n) {
		struct sm_seg *s = malloc(sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->next = f->seg_pool;
		f->seg_pool = s;
		f->nseg_pool++;
	}
	return 0;
}

/* A node from f's free list, which seg_reserve (or a reservation) filled. */
SM_HOT static struct sm_seg *seg_take(sm_file *f)
{
	struct sm_seg *n = f->seg_pool;

	f->seg_pool = n->next;
	f->nseg_pool--;
	return n;
}

SM_HOT static void seg_free(sm_file *f, struct sm_seg *n)
{
	if (!n)
		return;
	if (f->nseg_pool >= f->seg_reserved + SEG_POOL_MAX) {
		free(n);
		return;
	}
	n->next = f->seg_pool;
	f->seg_pool = n;
	f->nseg_pool++;
}

/* The run with the greatest start below b, or NULL: one descent.  Runs
 * are disjoint, so [a, b) overlaps a run iff this one ends after a. */
SM_HOT static struct sm_seg *last_before(sm_file *f, uint64_t b)
{
	struct sm_seg *n = RB_ROOT(&f->segs), *best = NULL;

	while (n) {
		if (n->start < b) {
			best = n;
			n = RB_RIGHT(n, rb);
		} else {
			n = RB_LEFT(n, rb);
		}
	}
	return best;
}

/* The first run that ends after a (it may start before a). */
SM_HOT static struct sm_seg *first_after(sm_file *f, uint64_t a)
{
	struct sm_seg key = { .start = a };
	struct sm_seg *n = RB_NFIND(sm_segtree, &f->segs, &key);
	struct sm_seg *p = n ? RB_PREV(sm_segtree, &f->segs, n) : RB_MAX(sm_segtree, &f->segs);

	return p && p->end > a ? p : n;
}

SM_HOT static struct sm_seg *seg_new(sm_file *f, uint64_t start, uint64_t end, uint32_t count,
				     bool write)
{
	struct sm_seg *n = seg_take(f);

	n->start = start;
	n->end = end;
	n->count = count;
	n->write = write;
	return n;
}

/* Split n at x (n->start < x < n->end); returns the right half. */
static struct sm_seg *seg_split(sm_file *f, struct sm_seg *n, uint64_t x)
{
	struct sm_seg *r = seg_new(f, x, n->end, n->count, n->write);

	n->end = x;
	RB_INSERT(sm_segtree, &f->segs, r);
	return r;
}

SM_HOT static int acquire_write(sm_file *f, uint64_t a, uint64_t b)
{
	struct sm_seg *n = last_before(f, b);
	int rc;

	if (n && n->end > a)
		return -EBUSY; /* never let the kernel upgrade our own read lock */
	if ((rc = seg_reserve(f, 1)) < 0)
		return rc;
	if (sm_kernel_locks(f) && (rc = sm_ofd_lock(f->fd, true, a, b - a)) < 0)
		return rc;
	RB_INSERT(sm_segtree, &f->segs, seg_new(f, a, b, 0, true));
	return 0;
}

/* A read hold over runs f already holds: count them up (noinline: the
 * common case, acquire_read's fast path, stays short). */
static __attribute__((noinline)) int acquire_read_over(sm_file *f, uint64_t a, uint64_t b)
{
	struct sm_seg *n;
	unsigned gaps = 0;
	uint64_t pos = a;
	int rc;

	for (n = first_after(f, a); n && n->start < b; n = RB_NEXT(sm_segtree, &f->segs, n)) {
		if (n->write)
			return -EBUSY; /* never let the kernel downgrade our write lock */
		gaps += n->start > pos;
		pos = n->end;
	}
	gaps += pos < b;

	/* gaps new runs + 2 splits now, and 2 reserved for the release. */
	if ((rc = seg_reserve(f, gaps + 2 + 2)) < 0)
		return rc;
	if (sm_kernel_locks(f) && (rc = sm_ofd_lock(f->fd, false, a, b - a)) < 0)
		return rc;
	f->seg_reserved += 2;

	pos = a;
	n = first_after(f, a);
	if (n && n->start < a)
		n = seg_split(f, n, a);
	while (pos < b) {
		if (!n || n->start >= b) {
			RB_INSERT(sm_segtree, &f->segs, seg_new(f, pos, b, 1, false));
			break;
		}
		if (n->start > pos) {
			RB_INSERT(sm_segtree, &f->segs, seg_new(f, pos, n->start, 1, false));
			pos = n->start;
			continue;
		}
		if (n->end > b)
			seg_split(f, n, b);
		n->count++;
		pos = n->end;
		n = RB_NEXT(sm_segtree, &f->segs, n);
	}
	return 0;
}

SM_HOT static int acquire_read(sm_file *f, uint64_t a, uint64_t b)
{
	struct sm_seg *n = last_before(f, b);
	int rc;

	if (__builtin_expect(n && n->end > a, 0))
		return acquire_read_over(f, a, b);
	/* Nothing of f overlaps: one new run. */
	if ((rc = seg_reserve(f, 1 + 2)) < 0)
		return rc;
	if (sm_kernel_locks(f) && (rc = sm_ofd_lock(f->fd, false, a, b - a)) < 0)
		return rc;
	f->seg_reserved += 2; /* for the release */
	RB_INSERT(sm_segtree, &f->segs, seg_new(f, a, b, 1, false));
	return 0;
}

SM_HOT int sm_ranges_acquire(sm_file *f, struct sm_hold *s)
{
	uint64_t a = s->off, b = s->off + s->len;

	return s->write ? acquire_write(f, a, b) : acquire_read(f, a, b);
}

/* Merge the read run starting at x with its left neighbour when they touch
 * and have the same count, so released ranges do not fragment the tree. */
static void merge_at(sm_file *f, uint64_t x)
{
	struct sm_seg key = { .start = x };
	struct sm_seg *r = RB_FIND(sm_segtree, &f->segs, &key), *l;

	if (!r || r->write)
		return;
	l = RB_PREV(sm_segtree, &f->segs, r);
	if (!l || l->write || l->end != r->start || l->count != r->count)
		return;
	l->end = r->end;
	RB_REMOVE(sm_segtree, &f->segs, r);
	seg_free(f, r);
}

/* A child after fork shares the parent's open file description: an unlock
 * there would drop the parent's locks (SPEC §3.6), so only the opener
 * unlocks. */
SM_HOT static int unlock_if_owner(sm_file *f, bool owner, uint64_t off, uint64_t len)
{
	if (!sm_kernel_locks(f) || !owner)
		return 0;
	return sm_ofd_unlock(f->fd, off, len);
}

/* Release a read hold whose range is not one run of its own: count the
 * runs down, splitting at a and b with the hold's reserved nodes. */
static __attribute__((noinline)) int release_read_over(sm_file *f, bool owner, uint64_t a,
							uint64_t b)
{
	struct sm_seg *n, *next;
	uint64_t run_start = 0, run_end = 0;
	bool in_run = false;
	int rc = 0, r;

	n = first_after(f, a);
	if (n && n->start < a)
		n = seg_split(f, n, a);
	for (; n && n->start < b; n = next) {
		if (n->end > b)
			seg_split(f, n, b);
		next = RB_NEXT(sm_segtree, &f->segs, n);
		if (n->write || n->count == 0)
			continue; /* cannot happen while the tree is consistent */
		if (--n->count > 0)
			continue;
		if (in_run && run_end == n->start) {
			run_end = n->end;
		} else {
			if (in_run && (r = unlock_if_owner(f, owner, run_start, run_end - run_start)) < 0 && !rc)
				rc = r;
			run_start = n->start;
			run_end = n->end;
			in_run = true;
		}
		RB_REMOVE(sm_segtree, &f->segs, n);
		seg_free(f, n);
	}
	if (in_run && (r = unlock_if_owner(f, owner, run_start, run_end - run_start)) < 0 && !rc)
		rc = r;
	merge_at(f, a);
	merge_at(f, b);
	return rc;
}

SM_HOT static int release_read(sm_file *f, bool owner, uint64_t a, uint64_t b)
{
	/* The hold's two reserved nodes: for release_read_over's splits. */
	f->seg_reserved -= 2;

	/* Fast path: the hold's range is one run of its own (count 1): drop
	 * it whole.  Nothing to merge: the bytes around it did not touch it
	 * with the same count before (runs are kept merged), and [a, b) is a
	 * gap now. */
	struct sm_seg key = { .start = a };
	struct sm_seg *n = RB_FIND(sm_segtree, &f->segs, &key);
	if (__builtin_expect(!n || n->write || n->end != b || n->count != 1, 0))
		return release_read_over(f, owner, a, b);
	RB_REMOVE(sm_segtree, &f->segs, n);
	seg_free(f, n);
	return unlock_if_owner(f, owner, a, b - a);
}

SM_HOT static int release_write(sm_file *f, bool owner, uint64_t a, uint64_t b)
{
	struct sm_seg key = { .start = a };
	struct sm_seg *n = RB_FIND(sm_segtree, &f->segs, &key);

	if (n && n->write && n->end == b) {
		RB_REMOVE(sm_segtree, &f->segs, n);
		seg_free(f, n);
	}
	return unlock_if_owner(f, owner, a, b - a);
}

SM_HOT int sm_ranges_release(sm_file *f, struct sm_hold *s, bool owner)
{
	uint64_t a = s->off, b = s->off + s->len;

	return s->write ? release_write(f, owner, a, b) : release_read(f, owner, a, b);
}

int sm_ranges_downgrade(sm_file *f, struct sm_hold *h)
{
	struct sm_seg key = { .start = h->off };
	struct sm_seg *n = RB_FIND(sm_segtree, &f->segs, &key);
	int rc;

	if (!n || !n->write)
		return -EINVAL;
	/* the read run's reservation for its release, before anything changes */
	if ((rc = seg_reserve(f, 2)) < 0)
		return rc;
	/* One F_OFD_SETLK converts the write lock to a read lock atomically:
	 * no moment where another writer could slip in. */
	if (sm_kernel_locks(f) && sm_pid() == f->pid &&
	    (rc = sm_ofd_lock(f->fd, false, h->off, h->len)) < 0)
		return rc;
	f->seg_reserved += 2;
	n->write = false;
	n->count = 1;
	h->write = false;
	merge_at(f, h->off);
	merge_at(f, h->off + h->len);
	return 0;
}

int sm_ranges_conflict(sm_file *f, uint64_t off, uint64_t len, bool write)
{
	struct sm_seg *n;

	for (n = first_after(f, off); n && n->start < off + len; n = RB_NEXT(sm_segtree, &f->segs, n))
		if (write || n->write)
			return -EBUSY;
	return 0;
}

bool sm_ranges_alone_from(sm_file *f, const struct sm_hold *h, uint64_t from)
{
	struct sm_seg *n;

	/* a run inside h's range is h's own: a write run is one slice's */
	for (n = first_after(f, from); n; n = RB_NEXT(sm_segtree, &f->segs, n))
		if (n->start < h->off || n->end > h->off + h->len)
			return false;
	return true;
}

void sm_ranges_free_all(sm_file *f)
{
	struct sm_seg *n, *next;

	RB_FOREACH_SAFE(n, sm_segtree, &f->segs, next) {
		RB_REMOVE(sm_segtree, &f->segs, n);
		free(n);
	}
	while (f->seg_pool) {
		n = f->seg_pool;
		f->seg_pool = n->next;
		free(n);
	}
	f->nseg_pool = 0;
	f->seg_reserved = 0;
	while (f->range_pool) {
		struct sm_range *r = f->range_pool;
		f->range_pool = r->next;
		free(r);
	}
	f->nrange_pool = 0;
	while (f->slice_pool) { /* slice.c's lists: the link is the first word */
		struct sm_slice *s = f->slice_pool;
		f->slice_pool = *(struct sm_slice **)s;
		free(s);
	}
	while (f->hold_pool) {
		struct sm_hold *h = f->hold_pool;
		f->hold_pool = *(struct sm_hold **)h;
		free(h);
	}
	f->nslice_pool = f->nhold_pool = 0;
}
