/* SPDX-License-Identifier: MIT */
/*
 * tindex.c - one copy of a table-mode owner's index: a treap over the
 * slots the owner published, keyed by (off, slot index), priorities a hash
 * of the index, each node augmented with the largest end of its subtree
 * and the largest end of a write region in it.  "Is there a region
 * overlapping [a, b) that conflicts with this mode?" prunes every subtree
 * whose (write) maximum end is <= a: O(log n) expected.
 *
 * Writers (tix_insert, tix_remove) are the area's owner only, one thread at
 * a time (f->lock), on a copy no reader trusts while it changes (tmode.c's
 * left-right protocol).  Readers (tix_search) may therefore meet a copy
 * half-changed: every link is bounds-checked and every path bounded, so a
 * torn read ends in -1 (read again), never in a crash or a loop.  Node
 * fields are read with relaxed atomic loads for that reason.
 */
#include <errno.h>
#include <stdio.h>

#include "tindex.h"

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define NODE(x, r) (&(x)->nodes[(r)-1])
#define LNK(x, r) (&NODE(x, r)->l[(x)->c])

static uint32_t prio_of(uint32_t i)
{
	uint32_t x = i * 0x9e3779b1u + 0x7f4a7c15u;

	x ^= x >> 16;
	x *= 0x85ebca6bu;
	x ^= x >> 13;
	x *= 0xc2b2ae35u;
	return x ^ (x >> 16);
}

static bool ref_ok(const struct tix *x, uint32_t r)
{
	return r <= x->nnodes;
}

static bool key_less(const struct tix *x, uint32_t a, uint32_t b)
{
	const struct smt_inode *p = NODE(x, a), *q = NODE(x, b);

	return p->off < q->off || (p->off == q->off && a < b);
}

static void pull(struct tix *x, uint32_t r)
{
	struct smt_inode *n = NODE(x, r);
	struct smt_link *l = LNK(x, r);
	uint64_t me = n->end, mw = (n->flags & (1u << x->c)) ? n->end : 0;

	for (int k = 0; k < 2; k++) {
		uint32_t ch = k ? l->right : l->left;
		if (ch && ref_ok(x, ch)) {
			const struct smt_link *cl = LNK(x, ch);
			me = cl->max_end > me ? cl->max_end : me;
			mw = cl->max_wend > mw ? cl->max_wend : mw;
		}
	}
	l->max_end = me;
	l->max_wend = mw;
}

static uint32_t merge(struct tix *x, uint32_t a, uint32_t b, int depth)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (depth > SMT_IDX_MAX_DEPTH || !ref_ok(x, a) || !ref_ok(x, b)) {
		x->err = -EPROTO;
		return a;
	}
	if (NODE(x, a)->prio > NODE(x, b)->prio) {
		LNK(x, a)->right = merge(x, LNK(x, a)->right, b, depth + 1);
		pull(x, a);
		return a;
	}
	LNK(x, b)->left = merge(x, a, LNK(x, b)->left, depth + 1);
	pull(x, b);
	return b;
}

/* Down the path, each subtree maximum only grows by the new end (no child
 * is read); then the node rises by rotations while its priority beats its
 * parent's, and only the two nodes of a rotation are recomputed. */
void tix_insert(struct tix *x, uint32_t i, bool write)
{
	uint32_t path[SMT_IDX_MAX_DEPTH + 1], r = i + 1, cur = *x->root;
	struct smt_inode *n = NODE(x, r);
	struct smt_link *nl = LNK(x, r);
	int d = 0;

	n->prio = prio_of(i);
	n->flags = write ? n->flags | (1u << x->c) : n->flags & ~(1u << x->c);
	nl->left = nl->right = 0;
	pull(x, r);
	while (cur) {
		struct smt_link *l;
		if (d > SMT_IDX_MAX_DEPTH || !ref_ok(x, cur) || cur == r) {
			x->err = -EPROTO;
			return;
		}
		l = LNK(x, cur);
		if (n->end > l->max_end)
			l->max_end = n->end;
		if (write && n->end > l->max_wend)
			l->max_wend = n->end;
		path[d++] = cur;
		cur = key_less(x, r, cur) ? l->left : l->right;
	}
	if (!d) {
		*x->root = r;
		return;
	}
	if (key_less(x, r, path[d - 1]))
		LNK(x, path[d - 1])->left = r;
	else
		LNK(x, path[d - 1])->right = r;
	while (d > 0) {
		uint32_t p = path[d - 1];
		struct smt_link *pl = LNK(x, p);
		if (n->prio <= NODE(x, p)->prio)
			break;
		if (pl->left == r) {
			pl->left = nl->right;
			nl->right = p;
		} else {
			pl->right = nl->left;
			nl->left = p;
		}
		pull(x, p);
		pull(x, r);
		if (--d == 0) {
			*x->root = r;
		} else {
			struct smt_link *g = LNK(x, path[d - 1]);
			if (g->left == p)
				g->left = r;
			else
				g->right = r;
		}
	}
}

/* Replace the node by the merge of its children, and recompute the maxima
 * upwards only while they were the node's end. */
void tix_remove(struct tix *x, uint32_t i)
{
	uint32_t path[SMT_IDX_MAX_DEPTH + 1], r = i + 1, cur = *x->root, sub;
	struct smt_inode *n = NODE(x, r);
	bool write = n->flags & (1u << x->c);
	int d = 0;

	while (cur != r) {
		if (!cur || d > SMT_IDX_MAX_DEPTH || !ref_ok(x, cur)) {
			x->err = -EPROTO; /* not found: the copy is not what we wrote */
			return;
		}
		path[d++] = cur;
		cur = key_less(x, r, cur) ? LNK(x, cur)->left : LNK(x, cur)->right;
	}
	sub = merge(x, LNK(x, r)->left, LNK(x, r)->right, d);
	if (!d)
		*x->root = sub;
	else if (LNK(x, path[d - 1])->left == r)
		LNK(x, path[d - 1])->left = sub;
	else
		LNK(x, path[d - 1])->right = sub;
	while (d-- > 0) {
		struct smt_link *l = LNK(x, path[d]);
		if (l->max_end != n->end && !(write && l->max_wend == n->end))
			break;
		pull(x, path[d]);
	}
	LNK(x, r)->left = LNK(x, r)->right = 0;
}

struct walk {
	const struct smt_inode *nodes;
	uint32_t nnodes;
	int c;
	uint64_t a, b;
	bool write;
	bool (*judge)(void *arg, uint32_t i);
	void *arg;
};

static int search(const struct walk *w, uint32_t r, int depth)
{
	const struct smt_inode *n;
	uint32_t left, right;
	uint64_t off, end, m;
	int rc;

	if (!r)
		return 0;
	if (depth > SMT_IDX_MAX_DEPTH || r > w->nnodes)
		return -1;
	n = &w->nodes[r - 1];
	m = w->write ? LD(n->l[w->c].max_end) : LD(n->l[w->c].max_wend);
	if (m <= w->a)
		return 0;
	left = LD(n->l[w->c].left);
	right = LD(n->l[w->c].right);
	if ((rc = search(w, left, depth + 1)) != 0)
		return rc;
	off = LD(n->off);
	end = LD(n->end);
	if (off >= w->b)
		return 0;
	if (end > w->a && (w->write || (LD(n->flags) & (1u << w->c))) && w->judge(w->arg, r - 1))
		return (int)r;
	return search(w, right, depth + 1);
}

int tix_search(const struct smt_inode *nodes, uint32_t nnodes, uint32_t root, int c, uint64_t a,
	       uint64_t b, bool write, bool (*judge)(void *arg, uint32_t i), void *arg)
{
	const struct walk w = { .nodes = nodes, .nnodes = nnodes, .c = c, .a = a, .b = b,
				.write = write, .judge = judge, .arg = arg };

	return search(&w, root, 0);
}

struct check {
	const struct smt_inode *nodes;
	uint32_t nnodes;
	int c;
	void (*seen)(void *arg, uint32_t i);
	void *arg;
	uint32_t n;
	char *why;
	size_t size;
};

static int bad(struct check *k, const char *what, uint32_t r)
{
	snprintf(k->why, k->size, "copy %d, node %u: %s", k->c, r - 1, what);
	return -EPROTO;
}

/* In-order walk: keys in order, heap order, maxima exact. */
static int walk(struct check *k, uint32_t r, uint32_t parent_prio, int depth, uint64_t *me,
		uint64_t *mw, uint32_t *last)
{
	const struct smt_inode *n;
	const struct smt_link *l;
	uint64_t lme = 0, lmw = 0, rme = 0, rmw = 0, e, w;
	int rc;

	*me = *mw = 0;
	if (!r)
		return 0;
	if (r > k->nnodes || depth > SMT_IDX_MAX_DEPTH)
		return bad(k, "link out of range or path too deep", r);
	n = &k->nodes[r - 1];
	l = &n->l[k->c];
	if (n->prio > parent_prio)
		return bad(k, "heap order", r);
	if ((rc = walk(k, l->left, n->prio, depth + 1, &lme, &lmw, last)) < 0)
		return rc;
	if (*last) {
		const struct smt_inode *p = &k->nodes[*last - 1];
		if (p->off > n->off || (p->off == n->off && *last >= r))
			return bad(k, "key order", r);
	}
	*last = r;
	if (n->end <= n->off)
		return bad(k, "empty range", r);
	k->n++;
	if (k->seen)
		k->seen(k->arg, r - 1);
	if ((rc = walk(k, l->right, n->prio, depth + 1, &rme, &rmw, last)) < 0)
		return rc;
	e = n->end > lme ? n->end : lme;
	e = rme > e ? rme : e;
	w = (n->flags & (1u << k->c)) ? n->end : 0;
	w = lmw > w ? lmw : w;
	w = rmw > w ? rmw : w;
	if (l->max_end != e || l->max_wend != w)
		return bad(k, "subtree maxima", r);
	*me = e;
	*mw = w;
	return 0;
}

int tix_check(const struct smt_inode *nodes, uint32_t nnodes, uint32_t root, int c,
	      void (*seen)(void *arg, uint32_t i), void *arg, uint32_t *n, char *why, size_t size)
{
	struct check k = { .nodes = nodes, .nnodes = nnodes, .c = c, .seen = seen, .arg = arg,
			   .why = why, .size = size };
	uint64_t me, mw;
	uint32_t last = 0;
	int rc = walk(&k, root, UINT32_MAX, 0, &me, &mw, &last);

	*n = k.n;
	return rc;
}
