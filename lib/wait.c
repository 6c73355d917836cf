/* SPDX-License-Identifier: MIT */
/*
 * wait.c - SM_WAIT: waiting a bounded time for a region (SPEC §3.4).
 *
 * F_OFD_SETLKW cannot time out without signals and the kernel detects no
 * deadlocks between OFD locks, so a waiter never blocks in the kernel: it
 * registers in the lock table (a slot in state waiting: range, mode, since,
 * its acquirer and the holder it waits for) and sleeps on a futex word in
 * the table's header, one of nbuckets words each covering the bytes x with
 * (x >> bucket_shift) % nbuckets == k.  Every release bumps the words of
 * the buckets its range covers that have waiters and wakes them
 * (FUTEX_WAKE, not private: the table is a shared file mapping).
 *
 * Lost wake-ups: a waiter increments its buckets' waiter counts, then, for
 * each attempt, reads the futex word, tries the whole fail-fast
 * acquisition and sleeps only if the word still has the value it read.  A
 * release drops the kernel lock, removes its entry, then (full barrier)
 * reads the waiter counts and bumps the words of those that are nonzero.
 * Either the release sees the waiter's count (and bumps the word the
 * waiter read, so its sleep returns at once), or the waiter's count came
 * after the release's read, so its attempt came after the unlock.  An
 * uncontended release reads the counts and makes no system call.
 *
 * What the table cannot see (plain fcntl lockers, other hosts, an sm_file
 * without a table) wakes no one: in kernel-lock mode a waiter that finds
 * no live entry to blame sleeps at most 20 ms (BACKOFF_NS) before trying
 * again.  A holder killed by SIGKILL wakes no one either: a waiter blaming
 * a live entry sleeps at most 100 ms (LIVENESS_NS) and then re-checks.
 *
 * Deadlocks: the wait-for graph's nodes are acquirers, (pid namespace,
 * thread id) of the thread that registered an entry, not processes or
 * sm_files: a thread waiting through one sm_file for a region another
 * thread holds through a second one is an edge like any other.  Edges go
 * from a waiting entry's acquirer to the acquirers of the live held or
 * pending entries that overlap it in a conflicting mode, and, for a
 * waiting reader, to the older waiting writers it yields to (fairness,
 * below).  A waiter registers (the counts' atomic increments are full
 * barriers) before it walks, so of two waiters closing a cycle at least
 * the later one sees the other.  A walk that comes back to the walker
 * names a cycle; its victim is the youngest waiting entry on it (latest
 * since, then highest acquirer), so one side returns -EDEADLK and the
 * others get their regions once it has gone.  The victim returns
 * -EDEADLK only when two walks separated by a fresh failed attempt agree:
 * a snapshot taken while a holder was releasing must not invent a cycle.
 *
 * Fairness: a waiting reader (SM_WAIT, read mode) does not try the lock
 * while an overlapping writer that registered as waiting before it
 * (earlier since) is still waiting, unless that writer itself waits,
 * directly or not, for the reader: it yields, names the writer as the
 * entry it waits for and sleeps until a release or the writer's withdrawal
 * bumps the bucket.  So a stream of overlapping SM_WAIT readers cannot
 * starve a writer: only the readers already holding when it registered go
 * before it.  Fail-fast readers (no SM_WAIT) never look and are not held
 * back.
 *
 * Cancellation: the sleep is a cancellation point (the caller's cancel
 * state is restored around it, SPEC §2's one exception); a cleanup handler
 * withdraws the waiting entry.  Nothing is allocated between attempts, so
 * a cancelled waiter leaves nothing behind.  Signals interrupt the sleep
 * (EINTR) and the loop carries on.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "safemap-internal.h"

#define WAIT_DEFAULT_NS 10000000000ull /* sm_options.wait_ns == 0 */
#define BACKOFF_NS 20000000ull         /* holders the table cannot see */
#define LIVENESS_NS 100000000ull       /* re-check the holders we blame */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t self_pidns;
static pthread_once_t pidns_once = PTHREAD_ONCE_INIT;

static void read_pidns(void)
{
	struct stat st;

	if (stat("/proc/self/ns/pid", &st) == 0)
		self_pidns = (uint64_t)st.st_ino;
}

uint32_t sm_acquirer(void)
{
	return (uint32_t)sm_tid(sm_pid());
}

/* ---- buckets --------------------------------------------------------------- */

struct geom {
	uint32_t n, shift;
};

static uint64_t *geom_word(const struct smt_table *t)
{
	/* nbuckets (offset 80) and bucket_shift (84): one 8-byte word */
	return (uint64_t *)&((struct smt_header *)t->base)->nbuckets;
}

/* The table's bucket geometry; false if it has none (or an invalid one:
 * untrusted input, then nobody sleeps on a futex and waiters back off). */
static bool geometry(const struct smt_table *t, struct geom *g)
{
	uint64_t w;

	if (!t || t->guard->state != SM_MAP_OK)
		return false;
	w = __atomic_load_n(geom_word(t), __ATOMIC_ACQUIRE);
	g->n = (uint32_t)w;
	g->shift = (uint32_t)(w >> 32);
	return g->n != 0 && g->n <= SMT_MAX_BUCKETS && g->shift < 64;
}

void sm_wait_geometry_init(struct smt_table *t)
{
	uint64_t zero = 0, want = SMT_NBUCKETS | (uint64_t)SMT_BUCKET_SHIFT << 32;

	/* a table built before waiting existed: the first waiter sets it, once */
	if (t && t->guard->state == SM_MAP_OK)
		__atomic_compare_exchange_n(geom_word(t), &zero, want, false, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE);
}

/* x's bucket index: a mask for the power-of-two counts this library
 * writes (no division on the release path), x % n for any other. */
static inline uint32_t bucket_index(const struct geom *g, uint64_t x)
{
	return (uint32_t)((g->n & (g->n - 1)) == 0 ? x & (g->n - 1) : x % g->n);
}

/* The buckets [off, off+len) covers, as a bitmap. */
static void cover(const struct geom *g, uint64_t off, uint64_t len, uint64_t set[2])
{
	uint64_t first = off >> g->shift, last = (off + len - 1) >> g->shift;

	set[0] = set[1] = 0;
	if (last - first + 1 >= g->n) {
		for (uint32_t k = 0; k < g->n; k++)
			set[k >> 6] |= (uint64_t)1 << (k & 63);
		return;
	}
	for (uint64_t x = first; x <= last; x++) {
		uint32_t k = bucket_index(g, x);
		set[k >> 6] |= (uint64_t)1 << (k & 63);
	}
}

static uint32_t bucket_of(const struct geom *g, uint64_t x)
{
	return bucket_index(g, x >> g->shift);
}

static struct smt_bucket *bucket(const struct smt_table *t, uint32_t k)
{
	return &((struct smt_header *)t->base)->buckets[k];
}

static long futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* The first bucket of set at or after from (SMT_MAX_BUCKETS: none); a
 * release visits only its own buckets, not all 128 (hotpath). */
static inline uint32_t next_bucket(const uint64_t set[2], uint32_t from)
{
	while (from < SMT_MAX_BUCKETS) {
		uint64_t m = set[from >> 6] >> (from & 63);
		if (m)
			return from + (uint32_t)__builtin_ctzll(m);
		from = (from | 63) + 1;
	}
	return SMT_MAX_BUCKETS;
}

#define FOR_EACH_BUCKET(set, k) \
	for (uint32_t k = next_bucket(set, 0); k < SMT_MAX_BUCKETS; k = next_bucket(set, k + 1))

/* Wake bucket b's sleepers, if it has any (a count is a hint). */
SM_HOT static void wake_bucket(struct smt_bucket *b)
{
	if (__atomic_load_n(&b->waiters, __ATOMIC_SEQ_CST) == 0)
		return;
	__atomic_fetch_add(&b->futex, 1, __ATOMIC_SEQ_CST);
	futex(&b->futex, FUTEX_WAKE, INT_MAX, NULL);
}

SM_HOT void sm_wait_bump(struct smt_table *t, uint64_t off, uint64_t len)
{
	uint64_t set[2];
	struct geom g;

	if (!geometry(t, &g))
		return;
	/* pairs with the waiter's count increment (see the file comment) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if ((off >> g.shift) == ((off + len - 1) >> g.shift)) {
		wake_bucket(bucket(t, bucket_of(&g, off))); /* one bucket: no bitmap */
		return;
	}
	cover(&g, off, len, set);
	FOR_EACH_BUCKET(set, k)
		wake_bucket(bucket(t, k));
}

/* Decrement, never below 0: a count is a hint (a waiter killed between
 * its publication and its increment must not wrap it). */
static void count_down(uint32_t *c)
{
	uint32_t v = __atomic_load_n(c, __ATOMIC_RELAXED);

	while (v && !__atomic_compare_exchange_n(c, &v, v - 1, true, __ATOMIC_SEQ_CST,
						  __ATOMIC_RELAXED))
		;
}

static void counts_down(struct smt_table *t, uint64_t off, uint64_t len)
{
	uint64_t set[2];
	struct geom g;

	if (!geometry(t, &g))
		return;
	cover(&g, off, len, set);
	FOR_EACH_BUCKET(set, k)
		count_down(&bucket(t, k)->waiters);
}

void sm_wait_forget(struct smt_table *t, const struct smt_slot *s)
{
	if (s->flags & SMT_SF_COUNTED && s->len && s->off <= (uint64_t)INT64_MAX &&
	    s->len <= (uint64_t)INT64_MAX - s->off)
		counts_down(t, s->off, s->len);
}

/* ---- the waiting entry -------------------------------------------------------- */

struct waiter {
	struct sm_wait *w;
	struct smt_table *t;
	struct sm_hold hold; /* the entry's fields (not a real hold) */
	bool registered;     /* our slot is published and counted */
	uint64_t since;      /* CLOCK_REALTIME of registration */
	uint32_t me;         /* our acquirer id */
	uint64_t pidns;
};

static void slot_set_flags(struct smt_slot *s, uint32_t flags)
{
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_ACQ_REL);
	s->flags = flags;
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_RELEASE);
}

static int enter(struct waiter *x)
{
	sm_file *f = x->w->f;
	struct smt_slot *s;
	uint64_t set[2];
	struct geom g;
	int rc;

	sm_wait_geometry_init(x->t);
	pthread_mutex_lock(&f->lock);
	rc = sm_table_add(f, &x->hold, x->w->tag, SMT_WAITING);
	pthread_mutex_unlock(&f->lock);
	if (rc < 0 || x->hold.slot < 0)
		return rc < 0 ? rc : -ENOLCK;
	s = &x->t->slots[x->hold.slot];
	x->since = s->since_ns;
	x->pidns = s->pidns;
	if (geometry(x->t, &g)) {
		cover(&g, x->hold.off, x->hold.len, set);
		FOR_EACH_BUCKET(set, k)
			__atomic_fetch_add(&bucket(x->t, k)->waiters, 1, __ATOMIC_SEQ_CST);
		slot_set_flags(s, s->flags | SMT_SF_COUNTED);
	}
	x->registered = true;
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* registered before we walk */
	return 0;
}

static void leave(struct waiter *x, bool got)
{
	sm_file *f = x->w->f;
	struct smt_slot *s;

	if (!x->registered)
		return;
	x->registered = false;
	s = &x->t->slots[x->hold.slot];
	if (s->flags & SMT_SF_COUNTED) {
		slot_set_flags(s, s->flags & ~SMT_SF_COUNTED);
		counts_down(x->t, x->hold.off, x->hold.len);
	}
	pthread_mutex_lock(&f->lock);
	sm_table_remove(f, &x->hold, true);
	pthread_mutex_unlock(&f->lock);
	/* readers that yielded to this writer look again (if it got the
	 * region instead, its release will wake them) */
	if (x->hold.write && !got)
		sm_wait_bump(x->t, x->hold.off, x->hold.len);
}

static void leave_cleanup(void *arg)
{
	leave(arg, false);
}

/* ---- the table's entries, for blame and for the wait-for graph ----------------- */

struct ent {
	uint64_t off, len, since, pidns;
	uint32_t acquirer, slot, owner;
	uint32_t node; /* index of the first entry of the same acquirer (after sorting) */
	uint8_t state; /* SMT_HELD / SMT_PENDING / SMT_WAITING */
	bool write;
};

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static bool default_conflicts(const struct sm_wait *w, const struct smt_slot *s)
{
	return overlap(w->off, w->len, s->off, s->len) && (w->write || s->mode == SMT_MODE_WRITE);
}

static bool ent_conflict(const struct ent *a, const struct ent *b)
{
	return overlap(a->off, a->len, b->off, b->len) && (a->write || b->write);
}

/* Live lock entries of t (held, pending, waiting): all of them, however
 * many (a walk that skipped some would miss the cycles through them). */
static size_t read_ents(struct smt_table *t, struct ent **out)
{
	uint32_t lim = smt_scan_limit(t);
	uint8_t *known = calloc(SMT_MAX_OWNERS, 1); /* 0 unknown, 1 alive, 2 dead */
	struct ent *e = malloc((size_t)lim * sizeof(*e) + 1);
	size_t n = 0;

	*out = NULL;
	if (!known || !e) {
		free(known);
		free(e);
		return 0;
	}
	for (uint32_t i = 0; i < lim; i++) {
		struct smt_slot s;
		uint32_t owner;
		if (smt_snapshot(t, i, &s) != 1)
			continue;
		owner = SMT_OWNER(s.state);
		if (!known[owner])
			known[owner] = smt_owner_alive(t, owner) ? 1 : 2;
		if (known[owner] != 1)
			continue;
		e[n++] = (struct ent){ .off = s.off, .len = s.len, .since = s.since_ns,
				       .pidns = s.pidns, .acquirer = s.acquirer, .slot = i,
				       .owner = owner, .state = (uint8_t)SMT_STATE(s.state),
				       .write = s.mode == SMT_MODE_WRITE };
	}
	free(known);
	*out = e;
	return n;
}

static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;

	if (x->pidns != y->pidns)
		return x->pidns < y->pidns ? -1 : 1;
	if (x->acquirer != y->acquirer)
		return x->acquirer < y->acquirer ? -1 : 1;
	return 0;
}

static void group_nodes(struct ent *e, size_t n)
{
	qsort(e, n, sizeof(*e), ent_cmp);
	for (size_t i = 0; i < n; i++)
		e[i].node = i && ent_cmp(&e[i - 1], &e[i]) == 0 ? e[i - 1].node : (uint32_t)i;
}

/* Does waiting entry a wait for entry b (an edge a.node -> b.node)? */
static bool waits_for(const struct ent *a, const struct ent *b)
{
	if (a->state != SMT_WAITING || a->slot == b->slot)
		return false;
	if (b->state == SMT_HELD || b->state == SMT_PENDING)
		return ent_conflict(a, b);
	/* fairness: a waiting reader yields to an older waiting writer */
	return b->state == SMT_WAITING && !a->write && b->write && b->since < a->since &&
	       overlap(a->off, a->len, b->off, b->len);
}

/* Breadth-first search over acquirers from node `from` for node `to`.
 * via[y] is the waiting entry (of y's predecessor) through which node y
 * was reached; via[n] the one that closed the search on `to`. */
static bool reach(const struct ent *e, size_t n, uint32_t from, uint32_t to, uint32_t *via)
{
	uint32_t *queue = malloc((n + 1) * sizeof(*queue));
	uint8_t *seen = calloc(n + 1, 1);
	size_t qh = 0, qt = 0;
	bool found = false;

	if (!queue || !seen)
		goto out;
	queue[qt++] = from;
	seen[from] = 1;
	while (qh < qt && !found) {
		uint32_t x = queue[qh++];
		/* the entries of node x are contiguous from index x */
		for (size_t i = x; i < n && e[i].node == x && !found; i++) {
			if (e[i].state != SMT_WAITING)
				continue;
			for (size_t j = 0; j < n; j++) {
				uint32_t y;
				if (!waits_for(&e[i], &e[j]))
					continue;
				y = e[j].node;
				if (y == to) {
					via[n] = (uint32_t)i;
					found = true;
					break;
				}
				if (!seen[y]) {
					seen[y] = 1;
					via[y] = (uint32_t)i;
					queue[qt++] = y;
				}
			}
		}
	}
out:
	free(queue);
	free(seen);
	return found;
}

static uint32_t node_of(const struct ent *e, size_t n, uint64_t pidns, uint32_t acquirer)
{
	for (size_t i = 0; i < n; i++)
		if (e[i].pidns == pidns && e[i].acquirer == acquirer)
			return e[i].node;
	return UINT32_MAX;
}

/* Is there a wait-for cycle through us of which we are the victim (the
 * youngest waiting entry on it)? */
static bool deadlocked(struct waiter *x)
{
	struct ent *e;
	size_t n = read_ents(x->t, &e);
	uint32_t *via = NULL, me;
	bool victim = false;

	if (!n)
		goto out;
	group_nodes(e, n);
	me = node_of(e, n, x->pidns, x->me);
	if (me == UINT32_MAX || !(via = malloc((n + 1) * sizeof(*via))))
		goto out;
	for (size_t i = 0; i <= n; i++)
		via[i] = UINT32_MAX;
	if (!reach(e, n, me, me, via))
		goto out;
	/* Walk the cycle back from its closing edge: each node was reached
	 * through the waiting entry via[node] of its predecessor. */
	{
		const struct ent *young = &e[via[n]];
		uint32_t node = e[via[n]].node;
		for (size_t steps = 0; node != me && steps < n; steps++) {
			const struct ent *w = &e[via[node]];
			if (w->since > young->since ||
			    (w->since == young->since && w->acquirer > young->acquirer))
				young = w;
			node = w->node;
		}
		victim = young->pidns == x->pidns && young->acquirer == x->me;
	}
out:
	free(via);
	free(e);
	return victim;
}

/* An older overlapping waiting writer we must yield to (SPEC §3.4
 * fairness), as its slot index, or -1. */
static int32_t writer_to_yield_to(struct waiter *x, uint64_t since)
{
	struct ent *e;
	size_t n;
	int32_t slot = -1;
	uint64_t set[2];
	struct geom g;
	bool any = false;

	/* cheap test first: no waiter in our buckets, no writer to yield to */
	if (!geometry(x->t, &g))
		return -1;
	cover(&g, x->hold.off, x->hold.len, set);
	FOR_EACH_BUCKET(set, k) {
		if (__atomic_load_n(&bucket(x->t, k)->waiters, __ATOMIC_ACQUIRE) >
		    (x->registered ? 1u : 0u)) {
			any = true;
			break;
		}
	}
	if (!any)
		return -1;
	if (!(n = read_ents(x->t, &e))) {
		free(e);
		return -1;
	}
	group_nodes(e, n);
	uint32_t me = node_of(e, n, x->pidns, x->me);
	uint32_t *via = malloc((n + 1) * sizeof(*via));
	for (size_t i = 0; i < n && via; i++) {
		const struct ent *b = &e[i];
		if (b->state != SMT_WAITING || !b->write || b->since >= since ||
		    (x->registered && b->slot == (uint32_t)x->hold.slot) ||
		    !overlap(x->hold.off, x->hold.len, b->off, b->len))
			continue;
		/* never yield to a writer that waits (directly or not) for us:
		 * that would make a deadlock out of fairness */
		if (me != UINT32_MAX && (b->node == me || reach(e, n, b->node, me, via)))
			continue;
		slot = (int32_t)b->slot;
		break;
	}
	free(via);
	free(e);
	return slot;
}

/* A live held or pending entry blocking us (not ours), as its slot index,
 * or -1; *held tells which. */
static int32_t blocker(struct waiter *x, bool *held)
{
	struct smt_table *t = x->t;
	struct sm_wait *w = x->w;
	bool (*conflicts)(const struct sm_wait *, const struct smt_slot *) =
		w->conflicts ? w->conflicts : default_conflicts;
	int32_t found = -1;

	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		struct smt_slot s;
		uint32_t st;
		if (smt_snapshot(t, i, &s) != 1)
			continue;
		st = SMT_STATE(s.state);
		if ((st != SMT_HELD && st != SMT_PENDING) || !conflicts(w, &s) ||
		    !smt_owner_alive(t, SMT_OWNER(s.state)))
			continue;
		found = (int32_t)i;
		*held = st == SMT_HELD;
		if (*held)
			break; /* prefer a holder to an attempt in progress */
	}
	return found;
}

/* Is every hold of f that conflicts with us the calling thread's own?
 * Then only we could release it: -EDEADLK at once (SPEC §3.4).  Needs the
 * table (f's entries name their acquirer); without one we wait. */
static bool only_mine(struct waiter *x)
{
	struct smt_table *t = x->t;
	bool any = false;

	if (!t || !t->owner_held)
		return false;
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		struct smt_slot s;
		uint32_t st;
		if (smt_snapshot(t, i, &s) != 1 || SMT_OWNER(s.state) != t->owner)
			continue;
		st = SMT_STATE(s.state);
		if ((st != SMT_HELD && st != SMT_PENDING) || !overlap(x->hold.off, x->hold.len, s.off, s.len) ||
		    !(x->hold.write || s.mode == SMT_MODE_WRITE))
			continue;
		if (s.acquirer != x->me)
			return false;
		any = true;
	}
	return any;
}

/* ---- the loop ---------------------------------------------------------------- */

/* Sleep on bucket k's word while it still reads v, at most ns, as a
 * cancellation point. */
static void sleep_on(struct waiter *x, uint32_t *word, uint32_t v, uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };
	int old;

	pthread_setcancelstate(x->w->cancel_state, &old);
	pthread_testcancel();
	if (word)
		futex(word, FUTEX_WAIT, v, &ts);
	else
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL); /* a cancellation point */
	pthread_testcancel();
	pthread_setcancelstate(old, NULL);
}

int sm_wait_acquire(struct sm_wait *w)
{
	sm_file *f = w->f;
	struct waiter x = { .w = w, .t = f->table, .me = sm_acquirer() };
	uint64_t start = mono_ns(), deadline;
	uint32_t words[SMT_MAX_BUCKETS];
	bool cycle_seen = false;
	int rc = 0;

	if (w->deadline) /* the call's own (sm_map_read_timed, sm_lock_timed) */
		deadline = w->deadline;
	else if (f->wait_ns == SM_WAIT_FOREVER)
		deadline = UINT64_MAX;
	else
		deadline = start + (f->wait_ns ? (f->wait_ns < UINT64_MAX - start ? f->wait_ns
										 : UINT64_MAX - start)
					       : WAIT_DEFAULT_NS);
	x.hold.f = f;
	x.hold.off = w->off;
	x.hold.len = w->len;
	x.hold.write = w->write;
	x.hold.slot = -1;
	if (x.t && x.t->guard->state != SM_MAP_OK)
		x.t = NULL;
	pthread_once(&pidns_once, read_pidns);
	x.pidns = self_pidns;

	pthread_cleanup_push(leave_cleanup, &x);
	for (;;) {
		uint64_t set[2] = { 0, 0 }, now;
		int32_t yield = -1, blame = -1;
		bool held = false, have_geom = false;
		struct geom g;

		/* the futex words, before the attempt */
		if (x.t && (have_geom = geometry(x.t, &g))) {
			cover(&g, w->off, w->len, set);
			FOR_EACH_BUCKET(set, k)
				words[k] = __atomic_load_n(&bucket(x.t, k)->futex, __ATOMIC_SEQ_CST);
		}
		if (x.t && !w->write)
			yield = writer_to_yield_to(&x, x.registered ? x.since : real_ns());
		if (yield < 0) {
			rc = w->attempt(w->arg);
			if (rc != -EBUSY)
				break;
		}
		if (x.t && !x.registered) {
			/* register, then read the words and try again */
			if ((rc = enter(&x)) < 0) {
				x.t = NULL; /* table full: wait by backoff alone */
				rc = 0;
			}
			continue;
		}
		now = mono_ns();
		if (now >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		if (x.t) {
			bool inproc;
			pthread_mutex_lock(&f->lock);
			inproc = sm_ranges_conflict(f, w->off, w->len, w->write) < 0;
			pthread_mutex_unlock(&f->lock);
			if (inproc && only_mine(&x)) {
				rc = -EDEADLK;
				break;
			}
			blame = yield >= 0 ? yield : blocker(&x, &held);
			if (yield >= 0)
				held = true; /* a live waiting writer: it bumps when it goes */
			__atomic_store_n(&x.t->slots[x.hold.slot].wait_for,
					 blame >= 0 ? (uint32_t)blame + 1 : 0, __ATOMIC_RELEASE);
			if (blame >= 0 && deadlocked(&x)) {
				if (cycle_seen) {
					rc = -EDEADLK;
					break;
				}
				cycle_seen = true;
				continue; /* confirm after a fresh attempt */
			}
			cycle_seen = false;
		}
		/* sleep until a release in our buckets, or the backoff */
		{
			uint64_t ns = held && !w->table_authority ? LIVENESS_NS : BACKOFF_NS;
			uint32_t *word = NULL, k = 0;
			if (w->table_authority)
				ns = LIVENESS_NS; /* the table sees everyone */
			if (ns > deadline - now)
				ns = deadline - now;
			if (have_geom) {
				uint64_t at = w->off;
				if (blame >= 0) {
					uint64_t boff = x.t->slots[blame].off;
					if (boff > at && boff < w->off + w->len)
						at = boff;
				}
				k = bucket_of(&g, at);
				if (set[k >> 6] & ((uint64_t)1 << (k & 63)))
					word = &bucket(x.t, k)->futex;
			}
			sleep_on(&x, word, word ? words[k] : 0, ns);
		}
	}
	pthread_cleanup_pop(0);
	leave(&x, rc == 0);
	return rc;
}
