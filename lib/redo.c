/* SPDX-License-Identifier: MIT */
/*
 * redo.c - buffered write slices bound to the log records that describe
 * their changes: write-ahead logging of mapped pages (sm_slice_set_lsn,
 * sm_redo_lsn, sm_redo_done).
 *
 * Write-ahead: a bound hold (h->bind) makes commit.c call before_write,
 * which commits the log (sm_log_commit: durable, then the committed tail
 * published) unless the committed tail already covers the highest bound
 * record; only then are pages written.  A failed log flush fails the
 * commit with nothing written, and the log handle stays poisoned.
 *
 * Where bindings live: in the bindings area of the log's own header page
 * (log.h), BIND_SLOTS entries, one per (log handle, data file) that has
 * bound: the data file's device and inode, the lowest first LSN and the
 * highest LSN of that handle's held bindings of that file, an incarnation
 * number and the owner's pid.  The handle's own bindings (one per hold)
 * are kept in memory, sorted by first LSN, and summed up in the entry as
 * they come and go; an entry with none left is idle (BIND_IDLE: not
 * counted, kept for the handle's next bind, so a put costs no claim).
 *   - Every process's trim reads the area (log_trim.c, trim_floor) without
 *     any lock: held entries count, live or dead.
 *   - An entry is owned through a kernel lock byte, MUTEX_BIND(i), taken
 *     without waiting on the handle's own open file description: claimed
 *     only when free or idle and its byte can be taken, written only by
 *     its owner (or by sm_redo_done once the owner is dead: then the byte
 *     can be taken).  The kernel drops the byte when the owner dies (or
 *     closes the log): a held entry stays held, and is dead; an idle one
 *     can be claimed again.  Nobody ever waits on an entry's byte.
 *   - The area is in the log file: the log flush that makes the bound
 *     records durable (the write-ahead commit) makes the entry durable
 *     too, so a power loss, a reboot or a lost lock table leave the entry
 *     (dead) where trim and sm_redo_lsn see it.  An entry made idle that
 *     had not reached the disk comes back held after a crash: conservative
 *     (recovery redoes from it; sm_redo_done clears it).
 *   - A bind racing a trim: the trim stores its target (WORD_TRIMMING),
 *     then reads the area; a bind stores its entry, then reads the trim
 *     point and the target (sequentially consistent both): either the
 *     trim sees the binding and stops below it, or the bind sees the trim
 *     and fails -ESTALE.
 * Held until synced: an SM_SYNC commit that leaves the hold clean drops
 * the binding; after an SM_ASYNC commit the binding stays with the hold,
 * and if the hold is released before a sync it is detached and kept until
 * a later flush of the file by a commit in this process (file_synced).
 *
 * commit.c and slice.c reach this file only through sm_bind_ops (installed
 * at the first bind); log.c only through l->redo_close.
 */
#include <endian.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

struct lslot;

struct sm_bind {
	struct lslot *ls;
	struct sm_hold *h; /* NULL once detached (released after SM_ASYNC) */
	uint64_t first, high;
	uint64_t epoch;    /* detached: sm_bind_epoch then */
	bool async;        /* pages written by SM_ASYNC, not flushed since */
	struct sm_bind *prev, *next; /* in ls->binds, sorted by first */
};

/* An entry of the area this handle owns: the bindings of one data file. */
struct lslot {
	sm_log *l;
	unsigned idx;
	uint64_t dev, ino;
	struct sm_bind *binds, *last; /* sorted by first: binds->first is the lowest */
	uint64_t hi;         /* BE_HIGH as published (never lowered: conservative) */
	pid_t pid;           /* the claimer (a fork child never touches the entry) */
	uint32_t gen0;       /* WORD_FLUSH_START read after the entry was last lowered */
	bool undurable;      /* no flush since that is known to have covered it */
	struct lslot *next;  /* in the handle's list */
	struct lslot *gnext; /* in the process's list (file_synced) */
};

struct redo {
	struct lslot *slots;
	uint64_t dead_seq[BIND_SLOTS]; /* entries dead at the last sm_redo_lsn (0: none) */
	uint32_t key;                  /* the log's name in bound table entries (fence.c) */
};

/* One mutex for the process's bindings: binds are per record appended, a
 * short critical section next to the append's own. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lslot *g_slots;

static uint64_t ld(const sm_log *l, unsigned i, unsigned k)
{
	return le64toh(__atomic_load_n(smlog_bind_field(l, i, k), __ATOMIC_SEQ_CST));
}

static void st(const sm_log *l, unsigned i, unsigned k, uint64_t v)
{
	__atomic_store_n(smlog_bind_field(l, i, k), htole64(v), __ATOMIC_SEQ_CST);
}

static int file_id(sm_file *f)
{
	struct stat sb;

	if (__atomic_load_n(&f->id_ok, __ATOMIC_ACQUIRE))
		return 0;
	if (fstat(f->fd, &sb) < 0)
		return -errno;
	pthread_mutex_lock(&f->lock);
	f->id_dev = (uint64_t)sb.st_dev;
	f->id_ino = (uint64_t)sb.st_ino;
	__atomic_store_n(&f->id_ok, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int redo_close(sm_log *l);

static struct redo *redo_get(sm_log *l)
{
	struct stat sb;

	if (!l->redo && (l->redo = calloc(1, sizeof(*l->redo)))) {
		l->redo_close = redo_close; /* frees it */
		/* the log's 24-bit name in bound table entries: a hash of its
		 * device and inode (a collision only keeps a fence longer) */
		if (fstat(l->fd, &sb) == 0)
			l->redo->key = (uint32_t)(((uint64_t)sb.st_dev * 0x9e3779b97f4a7c15ull ^
						   (uint64_t)sb.st_ino * 0xc2b2ae3d27d4eb4full) >>
						  40);
	}
	return l->redo;
}

static bool own_slot(const sm_log *l, unsigned i)
{
	for (const struct lslot *ls = l->redo ? l->redo->slots : NULL; ls; ls = ls->next)
		if (ls->idx == i)
			return true;
	return false;
}

/* Publish ls's lowest first (its list's head) and highest LSN; an lslot
 * with no binding left frees its entry and its byte.  Caller holds g_mu. */
static void publish(struct lslot *ls)
{
	sm_log *l = ls->l;

	if (ls->binds) {
		uint64_t old = ld(l, ls->idx, BE_FIRST), lo = ls->binds->first;
		if (lo != old)
			st(l, ls->idx, BE_FIRST, lo);
		if (lo < old) {
			/* it must be durable before any bound page is written:
			 * a flush that starts after this read covers it */
			ls->gen0 = __atomic_load_n((uint32_t *)(void *)(l->hdr->v.base +
									 WORD_FLUSH_START),
						   __ATOMIC_SEQ_CST);
			ls->undurable = true;
		}
		return;
	}
	/* No binding left: idle, still ours (its byte kept), so the next
	 * bind of the file costs no claim; trims and redo points ignore it,
	 * and once we are gone anyone may claim it. */
	st(l, ls->idx, BE_STATE, BIND_IDLE);
}

/* The highest bound LSN of ls is at least high. */
static void publish_high(struct lslot *ls, uint64_t high)
{
	if (high > ls->hi) {
		ls->hi = high;
		st(ls->l, ls->idx, BE_HIGH, high);
	}
}

/* Insert b into ls->binds by its first LSN: from the end, where a new
 * binding (the newest record) belongs. */
static void bind_insert(struct lslot *ls, struct sm_bind *b)
{
	struct sm_bind *p = ls->last;

	while (p && p->first > b->first)
		p = p->prev;
	b->prev = p;
	b->next = p ? p->next : ls->binds;
	if (b->next)
		b->next->prev = b;
	else
		ls->last = b;
	if (p)
		p->next = b;
	else
		ls->binds = b;
}

static void bind_remove(struct lslot *ls, struct sm_bind *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		ls->binds = b->next;
	if (b->next)
		b->next->prev = b->prev;
	else
		ls->last = b->prev;
	b->prev = b->next = NULL;
}

/* This handle's entry for file (dev, ino): found, or claimed (a free entry
 * whose byte we can take).  Caller holds g_mu. */
/* Entry i (ours: its byte is locked) holds bindings of (dev, ino) from now
 * on, as a new incarnation; its LSNs are published next. */
static void activate(const sm_log *l, unsigned i, uint64_t dev, uint64_t ino)
{
	st(l, i, BE_SEQ, ld(l, i, BE_SEQ) + 1);
	st(l, i, BE_DEV, dev);
	st(l, i, BE_INO, ino);
	st(l, i, BE_FIRST, UINT64_MAX);
	st(l, i, BE_HIGH, 0);
	st(l, i, BE_PID, (uint64_t)sm_pid());
	st(l, i, BE_STATE, BIND_HELD);
}

static int lslot_get(sm_log *l, uint64_t dev, uint64_t ino, struct lslot **out)
{
	struct redo *r = redo_get(l);
	struct lslot *ls;

	if (!r)
		return -ENOMEM;
	for (ls = r->slots; ls; ls = ls->next)
		if (ls->dev == dev && ls->ino == ino) {
			if (!ls->binds)
				activate(l, ls->idx, dev, ino); /* idle: a new incarnation */
			ls->hi = ls->binds ? ls->hi : 0;
			*out = ls;
			return 0;
		}
	if (!(ls = calloc(1, sizeof(*ls))))
		return -ENOMEM;
	for (unsigned i = 0; i < BIND_SLOTS; i++) {
		if (own_slot(l, i) || ld(l, i, BE_STATE) == BIND_HELD)
			continue;
		if (sm_ofd_lock(l->fd, true, MUTEX_BIND(i), 1) < 0)
			continue; /* a live owner's (idle), being claimed, or probed */
		if (ld(l, i, BE_STATE) == BIND_HELD) {
			(void)sm_ofd_unlock(l->fd, MUTEX_BIND(i), 1);
			continue;
		}
		activate(l, i, dev, ino);
		ls->l = l;
		ls->pid = sm_pid();
		ls->idx = i;
		ls->dev = dev;
		ls->ino = ino;
		ls->next = r->slots;
		r->slots = ls;
		ls->gnext = g_slots;
		g_slots = ls;
		*out = ls;
		return 0;
	}
	free(ls);
	return -ENOSPC; /* every entry held (dead ones wait for sm_redo_done) */
}

/* Did a trim discard, or is one about to discard, the record at lsn? */
static int raced(sm_log *l, uint64_t lsn)
{
	uint64_t first, target;
	int rc;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	target = le64toh(__atomic_load_n((uint64_t *)(void *)(l->hdr->v.base + WORD_TRIMMING),
					 __ATOMIC_SEQ_CST));
	if ((rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0)
		return rc;
	return lsn < first || (target && lsn < target) ? -ESTALE : 0;
}

static void drop(struct sm_bind *b)
{
	struct lslot *ls = b->ls;

	bind_remove(ls, b);
	if (b->h)
		b->h->bind = NULL;
	else
		__atomic_fetch_sub(&sm_bind_pending, 1, __ATOMIC_RELEASE);
	free(b);
	publish(ls);
}

static bool hold_dirty(const struct sm_hold *h)
{
	for (size_t i = 0; i < h->dirty_words; i++)
		if (__atomic_load_n(&h->dirty[i], __ATOMIC_RELAXED) ||
		    __atomic_load_n(&h->flight[i], __ATOMIC_RELAXED))
			return true;
	return false;
}

/* --- the hooks commit.c and slice.c call --------------------------------- */

static int before_write(struct sm_hold *h)
{
	uint64_t high, c;
	struct lslot *ls;
	uint32_t gen0, done;
	bool undurable;
	sm_log *l;
	int rc;

	pthread_mutex_lock(&g_mu);
	ls = h->bind->ls;
	high = h->bind->high;
	l = ls->l;
	pthread_mutex_unlock(&g_mu);
	if ((rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0)
		return rc;
	/* the records: unless already durable and published */
	if (c <= high && (rc = sm_log_commit(l)) < 0)
		return rc;
	/* the entry that holds them (a flush that covered the records may
	 * have started before the entry was stored: then flush again) */
	pthread_mutex_lock(&g_mu);
	undurable = ls->undurable;
	gen0 = ls->gen0;
	pthread_mutex_unlock(&g_mu);
	if (!undurable)
		return 0;
	if ((rc = __atomic_load_n(&l->poison, __ATOMIC_ACQUIRE)) < 0)
		return rc; /* a retried flush would "succeed" over lost pages */
	done = __atomic_load_n((uint32_t *)(void *)(l->hdr->v.base + WORD_FLUSH_DONE),
			       __ATOMIC_ACQUIRE);
	if ((int32_t)(done - gen0) <= 0 && (rc = smlog_sync(l)) < 0)
		return rc;
	pthread_mutex_lock(&g_mu);
	if (ls->gen0 == gen0)
		ls->undurable = false;
	pthread_mutex_unlock(&g_mu);
	return 0;
}

static void after(struct sm_hold *h, int how)
{
	struct sm_bind *b;

	pthread_mutex_lock(&g_mu);
	if ((b = h->bind) && b->ls->pid == sm_pid()) {
		if (how == SM_BIND_ASYNC)
			b->async = true;
		else if (!hold_dirty(h) && (how == SM_BIND_SYNCED || !b->async))
			drop(b);
		/* the file has its pages (or the changes are gone): no fence */
		if (!hold_dirty(h))
			sm_fence_set(h->f, h, 0, false);
	}
	pthread_mutex_unlock(&g_mu);
}

static void hold_gone(struct sm_hold *h)
{
	struct sm_bind *b;

	pthread_mutex_lock(&g_mu);
	if ((b = h->bind) && b->ls->pid != sm_pid()) {
		/* a fork child's copy: the entry is the parent's */
		h->bind = NULL;
	} else if (b) {
		h->bind = NULL;
		sm_fence_set(h->f, h, 0, false); /* before the lock goes (slice.c) */
		if (b->async) {
			/* its pages are in the page cache, not yet on disk */
			b->h = NULL;
			b->epoch = __atomic_add_fetch(&sm_bind_epoch, 1, __ATOMIC_ACQ_REL);
			__atomic_fetch_add(&sm_bind_pending, 1, __ATOMIC_RELEASE);
		} else {
			/* released dirty: its changes are gone (redo brings them
			 * back from the log) */
			drop(b);
		}
	}
	pthread_mutex_unlock(&g_mu);
}

static void file_synced(sm_file *f, uint64_t epoch)
{
	if (!__atomic_load_n(&f->id_ok, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&g_mu);
	for (struct lslot *ls = g_slots, *nls; ls; ls = nls) {
		nls = ls->gnext; /* drop may free ls */
		if (ls->dev != f->id_dev || ls->ino != f->id_ino || ls->pid != sm_pid())
			continue;
		for (struct sm_bind *b = ls->binds, *nb; b; b = nb) {
			nb = b->next;
			if (!b->h && b->epoch <= epoch)
				drop(b); /* the last one frees ls: nb is NULL then */
		}
	}
	pthread_mutex_unlock(&g_mu);
}

static const struct sm_bind_ops ops = {
	.before_write = before_write,
	.after = after,
	.hold_gone = hold_gone,
	.file_synced = file_synced,
};

/* sm_log_close: -EBUSY while a live slice is bound through l; detached
 * bindings stay held in the area (dead once the handle's description is
 * closed: recovery redoes them and sm_redo_done clears them). */
static int redo_close(sm_log *l)
{
	struct redo *r;

	pthread_mutex_lock(&g_mu);
	r = l->redo;
	for (struct lslot *ls = r ? r->slots : NULL; ls; ls = ls->next)
		for (struct sm_bind *b = ls->binds; b; b = b->next)
			if (b->h) {
				pthread_mutex_unlock(&g_mu);
				return -EBUSY;
			}
	while (r && r->slots) {
		struct lslot *ls = r->slots;
		while (ls->binds) {
			struct sm_bind *b = ls->binds;
			ls->binds = b->next;
			__atomic_fetch_sub(&sm_bind_pending, 1, __ATOMIC_RELEASE);
			free(b);
		}
		r->slots = ls->next;
		for (struct lslot **p = &g_slots; *p; p = &(*p)->gnext)
			if (*p == ls) {
				*p = ls->gnext;
				break;
			}
		free(ls);
	}
	free(r);
	l->redo = NULL;
	pthread_mutex_unlock(&g_mu);
	return 0;
}

/* --- the public calls ----------------------------------------------------- */

static int set_lsn(sm_slice *s, sm_log *l, uint64_t lsn)
{
	struct sm_hold *h;
	struct sm_bind *b;
	struct lslot *ls;
	uint64_t t, first;
	int rc;

	if (!s || !l)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	h = s->h;
	if (!s->write || !h->buffered)
		return -EINVAL; /* a direct slice's pages may reach the file any time */
	if ((rc = smlog_writable(l)) < 0)
		return rc;
	if (lsn < LOG_HDR || (lsn & 7))
		return -EINVAL;
	if ((rc = smlog_slot_read(l, SLOT_TAIL, &t)) < 0 ||
	    (rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0)
		return rc;
	if (lsn >= t)
		return -EINVAL; /* beyond the appended tail */
	if (lsn < first)
		return -ESTALE; /* trimmed */
	if ((rc = file_id(s->f)) < 0)
		return rc;
	pthread_mutex_lock(&g_mu);
	__atomic_store_n(&sm_bind_ops, &ops, __ATOMIC_RELEASE);
	if ((b = h->bind)) {
		uint64_t old = b->first;
		if (b->ls->l != l) {
			rc = -EINVAL; /* bound to another log (handle) */
		} else if (lsn >= b->first) {
			if (lsn > b->high) {
				b->high = lsn;
				publish_high(b->ls, lsn);
			}
		} else {
			/* lower (unusual): move it in the list */
			bind_remove(b->ls, b);
			b->first = lsn;
			bind_insert(b->ls, b);
			publish(b->ls);
			if ((rc = raced(l, lsn)) < 0) {
				bind_remove(b->ls, b);
				b->first = old;
				bind_insert(b->ls, b);
				publish(b->ls);
			}
		}
		if (rc == 0)
			sm_fence_set(s->f, h, l->redo ? l->redo->key : 0, true); /* dirty again after SM_ASYNC */
		pthread_mutex_unlock(&g_mu);
		return rc;
	}
	if ((rc = lslot_get(l, s->f->id_dev, s->f->id_ino, &ls)) < 0)
		goto out;
	if (!(b = calloc(1, sizeof(*b)))) {
		rc = -ENOMEM;
		if (!ls->binds)
			publish(ls); /* idle again */
		goto out;
	}
	b->ls = ls;
	b->h = h;
	b->first = b->high = lsn;
	bind_insert(ls, b);
	h->bind = b;
	publish_high(ls, lsn);
	publish(ls);
	if ((rc = raced(l, lsn)) < 0)
		drop(b);
	else
		sm_fence_set(s->f, h, l->redo ? l->redo->key : 0, true); /* before the caller acknowledges */
out:
	pthread_mutex_unlock(&g_mu);
	return rc;
}

int sm_slice_set_lsn(sm_slice *s, sm_log *log, uint64_t lsn)
{
	int old = sm_nocancel();
	int rc = set_lsn(s, log, lsn);

	sm_cancel_restore(old);
	return rc;
}

/* Checks shared by sm_redo_lsn and sm_redo_done. */
static int redo_check(sm_file *f, sm_log *l)
{
	int rc;

	if (!f || !l)
		return -EINVAL;
	if (f->memory || !f->table)
		return -ENOTSUP; /* no shared table to vouch for the file's bindings */
	if ((rc = smlog_forked(l)) < 0)
		return rc;
	return file_id(f);
}

static int redo_lsn(sm_file *f, sm_log *l, uint64_t *out)
{
	uint64_t c, lo = UINT64_MAX;
	struct redo *r;
	int rc;

	if (!out)
		return -EINVAL;
	if ((rc = redo_check(f, l)) < 0)
		return rc;
	if ((rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0)
		return rc;
	pthread_mutex_lock(&g_mu);
	if (!(r = redo_get(l))) {
		pthread_mutex_unlock(&g_mu);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < BIND_SLOTS; i++) {
		uint64_t seq = ld(l, i, BE_SEQ), first = ld(l, i, BE_FIRST);
		r->dead_seq[i] = 0;
		if (ld(l, i, BE_STATE) != BIND_HELD || ld(l, i, BE_DEV) != f->id_dev ||
		    ld(l, i, BE_INO) != f->id_ino)
			continue;
		lo = first < lo ? first : lo;
		/* dead: nobody holds its byte (our own entries are alive) */
		if (!own_slot(l, i) && sm_ofd_test(l->fd, true, MUTEX_BIND(i), 1) == 0 &&
		    ld(l, i, BE_SEQ) == seq)
			r->dead_seq[i] = seq;
	}
	uint32_t key = r->key;
	pthread_mutex_unlock(&g_mu);
	sm_fence_recovering(f, key); /* its SM_RECOVER slices pass this log's fences */
	*out = lo < c ? lo : c;
	return 0;
}

int sm_redo_lsn(sm_file *f, sm_log *log, uint64_t *lsn)
{
	int old = sm_nocancel();
	int rc = redo_lsn(f, log, lsn);

	sm_cancel_restore(old);
	return rc;
}

struct held_arg {
	const sm_log *l;
	const sm_file *f;
};

/* Does the log still count a binding of process pid to the file (a held
 * entry of the area that is not ours)?  Caller holds g_mu. */
static bool still_held(void *arg, int32_t pid)
{
	const struct held_arg *a = arg;

	for (unsigned i = 0; i < BIND_SLOTS; i++)
		if (ld(a->l, i, BE_STATE) == BIND_HELD && ld(a->l, i, BE_DEV) == a->f->id_dev &&
		    ld(a->l, i, BE_INO) == a->f->id_ino && ld(a->l, i, BE_PID) == (uint64_t)(int64_t)pid &&
		    !own_slot(a->l, i))
			return true;
	return false;
}

static int redo_done(sm_file *f, sm_log *l, uint64_t lsn)
{
	uint64_t c, first, upto;
	struct window w = { 0 };
	struct redo *r;
	int rc;

	if ((rc = redo_check(f, l)) < 0)
		return rc;
	if (!(l->flags & SM_RDWR))
		return -EBADF;
	if ((rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0 ||
	    (rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0)
		return rc;
	if (lsn < LOG_HDR || (lsn & 7) || lsn > c)
		return -EINVAL;
	if (lsn < first)
		return -EINVAL; /* trimmed: no longer a committed record */
	if (lsn < c) {
		rc = smlog_scan_from(l, &w, lsn, c, &upto);
		smlog_window_drop(&w);
		if (rc < 0)
			return rc == -EBADMSG ? -EINVAL : rc;
	}
	pthread_mutex_lock(&g_mu);
	r = l->redo;
	for (unsigned i = 0; r && i < BIND_SLOTS; i++) {
		uint64_t seq = r->dead_seq[i];
		if (!seq || own_slot(l, i))
			continue;
		/* the byte is free since its owner is dead; a prober of
		 * another sm_redo_done holds it an instant: try again */
		for (int k = 0; (rc = sm_ofd_lock(l->fd, true, MUTEX_BIND(i), 1)) == -EBUSY && k < 1000;
		     k++)
			sched_yield();
		if (rc < 0)
			continue; /* alive again: a new owner, not ours to touch */
		if (ld(l, i, BE_STATE) == BIND_HELD && ld(l, i, BE_SEQ) == seq &&
		    ld(l, i, BE_DEV) == f->id_dev && ld(l, i, BE_INO) == f->id_ino) {
			if (ld(l, i, BE_HIGH) < lsn) {
				st(l, i, BE_STATE, 0);
				r->dead_seq[i] = 0;
			} else if (ld(l, i, BE_FIRST) < lsn) {
				st(l, i, BE_FIRST, lsn); /* straddles: counts from lsn */
			}
		}
		(void)sm_ofd_unlock(l->fd, MUTEX_BIND(i), 1);
	}
	/* the table entries of dead processes' bound changes the log no
	 * longer counts: free, and their waiters told */
	struct held_arg ha = { l, f };
	if (r && sm_fence_clear_dead(f, r->key, still_held, &ha) > 0)
		sm_wait_bump(f->table, 0, SM_LOCK_LIMIT);
	pthread_mutex_unlock(&g_mu);
	return 0;
}

int sm_redo_done(sm_file *f, sm_log *log, uint64_t lsn)
{
	int old = sm_nocancel();
	int rc = redo_done(f, log, lsn);

	sm_cancel_restore(old);
	return rc;
}
