/* SPDX-License-Identifier: MIT */
/*
 * lock.c - range locks without a mapping (sm_lock, sm_unlock, sm_test;
 * SPEC §16), and the lock step every hold goes through, slices included.
 *
 * A range is a hold with no mapping: the same in-process counting
 * (ranges.c, so §3.2's rules apply between ranges and slices of one
 * sm_file), the same OFD lock, the same table entry, nothing else: no size
 * check (a range may lie past end of file and never grows it), no window,
 * no bitmap, no fstat, no fallocate.  An uncontended sm_lock + sm_unlock
 * makes two system calls, the two fcntl(F_OFD_SETLK): the fork check reads
 * the cached pid (sm_pid()), the table entry is a few stores to shared
 * memory and the clock is the vDSO's.
 *
 * Order (SPEC §16, "holders are nameable after -EBUSY every time"): the
 * table entry is published as pending before the kernel lock is asked
 * for, becomes held when it is granted and is withdrawn when it is refused;
 * a release drops the kernel lock first and the entry after.  So whenever
 * the kernel holds the lock, the table shows it, and a process the kernel
 * refuses finds the holder's entry (unless it released meanwhile).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "safemap-internal.h"

int sm_debug_late_publish;

/* The lock step of a hold in table-authority mode, of an SM_NOLOCK
 * mapping, and in the pre-0.2 order (tests): kept out of the kernel-mode
 * path below, whose instructions share the CPU's caches with the caller's
 * (issue 14). */
static __attribute__((noinline, cold)) int hold_lock_other(sm_file *f, struct sm_hold *h,
							    const char *tag)
{
	int rc;

	if (f->tmode) {
		if ((rc = sm_tmode_hold_lock(f, h, tag)) == 0 && (rc = sm_fence_check(f, h)) < 0)
			(void)sm_tmode_hold_unlock(f, h, true); /* a dead process's bound change */
		return rc;
	}
	h->slot = -1;
	if (h->nolock)
		return sm_table_add(f, h, tag, SMT_UNLOCKED);
	/* the pre-0.2 order, for tests only */
	if ((rc = sm_ranges_acquire(f, h)) < 0)
		return rc;
	if ((rc = sm_table_add(f, h, tag, SMT_HELD)) < 0)
		sm_ranges_release(f, h, true);
	return rc;
}

static __attribute__((noinline, cold)) int hold_unlock_other(sm_file *f, struct sm_hold *h,
							      bool owner)
{
	int rc;

	if (f->tmode) {
		rc = sm_tmode_hold_unlock(f, h, owner);
		if (owner && !h->nolock)
			sm_wait_bump(f->table, h->off, h->len); /* as in hold_unlock */
		return rc;
	}
	if (h->nolock) {
		sm_table_remove(f, h, owner);
		return 0;
	}
	sm_table_remove(f, h, owner); /* the pre-0.2 order, for tests only */
	return sm_ranges_release(f, h, owner);
}

/* The lock step of every hold (inlined into sm_lock; slices call
 * sm_hold_lock). */
static inline __attribute__((always_inline)) int hold_lock(sm_file *f, struct sm_hold *h,
							   const char *tag)
{
	int rc;

	if (__builtin_expect(f->tmode || h->nolock || sm_debug_late_publish, 0))
		return hold_lock_other(f, h, tag);
	h->slot = -1;
	if ((rc = sm_table_add(f, h, tag, SMT_PENDING)) < 0)
		return rc;
	if ((rc = sm_ranges_acquire(f, h)) < 0) {
		sm_table_remove(f, h, true); /* withdrawn: the attempt failed */
		return rc;
	}
	if (__builtin_expect((rc = sm_fence_check(f, h)) < 0, 0)) {
		/* a dead process's bound change overlaps (fence.c) */
		(void)sm_ranges_release(f, h, true);
		sm_table_remove(f, h, true);
		return rc;
	}
	sm_table_held(f, h);
	return 0;
}

static inline __attribute__((always_inline)) int hold_unlock(sm_file *f, struct sm_hold *h,
							     bool owner)
{
	int rc;

	if (__builtin_expect(f->tmode || h->nolock || sm_debug_late_publish, 0))
		return hold_unlock_other(f, h, owner);
	/* A fork child updates its copy of the counts but never unlocks the
	 * parent's bytes nor clears the parent's entries (SPEC §3.6). */
	rc = sm_ranges_release(f, h, owner);
	sm_table_remove(f, h, owner);
	/* Waiters (wait.c): unlock, remove, then bump.  No system call unless
	 * a bucket of the range has waiters. */
	if (owner)
		sm_wait_bump(f->table, h->off, h->len);
	return rc;
}

int sm_hold_lock(sm_file *f, struct sm_hold *h, const char *tag)
{
	return hold_lock(f, h, tag);
}

int sm_hold_unlock(sm_file *f, struct sm_hold *h, bool owner)
{
	return hold_unlock(f, h, owner);
}

#define LOCK_MODES (SM_LOCK_READ | SM_LOCK_WRITE)

static inline __attribute__((always_inline)) int check_args(sm_file *f, uint64_t off, uint64_t len,
							     int flags, bool *write)
{
	int mode = flags & LOCK_MODES, rc;

	if (!f || (flags & ~(LOCK_MODES | SM_WAIT)) || (mode != SM_LOCK_READ && mode != SM_LOCK_WRITE))
		return -EINVAL;
	if ((rc = sm_check_range(off, len)) < 0)
		return rc;
	if (off + len > SM_LOCK_LIMIT)
		return -ERANGE; /* the library's own bytes (doc/safemap-table.5) */
	*write = mode == SM_LOCK_WRITE;
	if (*write && f->flags != SM_RDWR)
		return -EBADF; /* the kernel refuses write locks on read-only descriptors */
	if (sm_pid() != f->pid)
		return -ESTALE; /* a fork child must sm_open afresh */
	return 0;
}

struct lock_args {
	sm_file *f;
	uint64_t off, len;
	bool write;
	const char *tag;
	sm_range **out;
};

#define RANGE_POOL_MAX 64

/* An sm_range from f's free list (or the heap); caller holds f->lock. */
SM_HOT static struct sm_range *range_get(sm_file *f)
{
	struct sm_range *r = f->range_pool;

	if (!r)
		return malloc(sizeof(*r));
	f->range_pool = r->next;
	f->nrange_pool--;
	return r;
}

/* Back to f's free list (freed by sm_ranges_free_all); caller holds f->lock. */
SM_HOT static void range_put(sm_file *f, struct sm_range *r)
{
	if (f->nrange_pool >= RANGE_POOL_MAX) {
		free(r);
		return;
	}
	r->next = f->range_pool;
	f->range_pool = r;
	f->nrange_pool++;
}

/* One fail-fast acquisition (also each attempt of an SM_WAIT one: it
 * allocates and frees nothing across a wait). */
static inline __attribute__((always_inline)) int lock_range(sm_file *f, uint64_t off, uint64_t len,
							    bool write, const char *tag,
							    sm_range **out)
{
	struct sm_range *r;
	int rc;

	pthread_mutex_lock(&f->lock);
	if (f->closing) {
		rc = -EBADF;
	} else if (!(r = range_get(f))) {
		rc = -ENOMEM;
	} else {
		r->h = (struct sm_hold){ .f = f, .off = off, .len = len, .write = write, .refs = 1,
					 .slot = -1 };
		if ((rc = hold_lock(f, &r->h, tag)) == 0) {
			f->nslices++; /* sm_close waits for ranges as for slices */
			*out = r;
		} else {
			range_put(f, r);
		}
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static int lock_once(void *arg)
{
	struct lock_args *a = arg;

	return lock_range(a->f, a->off, a->len, a->write, a->tag, a->out);
}

/*
 * Cancellation (SPEC §2, §3.4): only a wait is a cancellation point.  A
 * fail-fast acquisition or a release in kernel-lock mode calls nothing that
 * is one (F_OFD_SETLK is not, unlike F_OFD_SETLKW; the table's reap probes
 * with F_OFD_GETLK; sm_file_destroy disables cancellation itself), so it
 * skips the two pthread_setcancelstate calls.  SM_WAIT (its sleeps are the
 * cancellation points, sm_wait_acquire restores the caller's state around
 * them) and table-authority mode (its robust-mutex recovery and table
 * growth make system calls that are) keep them.
 */
static int lock_slow(sm_file *f, uint64_t off, uint64_t len, int flags, bool write,
		     const char *tag, uint64_t deadline, sm_range **out);

SM_HOT int sm_lock(sm_file *f, uint64_t off, uint64_t len, int flags, const char *tag, sm_range **out)
{
	bool write;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if ((rc = check_args(f, off, len, flags, &write)) < 0)
		return rc;
	if (__builtin_expect(!(flags & SM_WAIT), 1))
		return lock_range(f, off, len, write, tag, out);
	return lock_slow(f, off, len, flags, write, tag, 0, out);
}

/* sm_lock with its own bound: 0 fails fast (as without SM_WAIT), anything
 * else waits up to timeout_ns whatever flags says about SM_WAIT. */
int sm_lock_timed(sm_file *f, uint64_t off, uint64_t len, int flags, uint64_t timeout_ns,
		  const char *tag, sm_range **out)
{
	bool write;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if ((rc = check_args(f, off, len, flags, &write)) < 0)
		return rc;
	if (timeout_ns == 0)
		return sm_lock(f, off, len, flags & ~SM_WAIT, tag, out);
	return lock_slow(f, off, len, flags | SM_WAIT, write, tag, sm_deadline_after(timeout_ns),
			 out);
}

/* sm_lock with SM_WAIT or in table-authority mode; deadline as struct
 * sm_wait's (0: the file's bound). */
static __attribute__((noinline, cold)) int lock_slow(sm_file *f, uint64_t off, uint64_t len,
						      int flags, bool write, const char *tag,
						      uint64_t deadline, sm_range **out)
{
	struct lock_args a = { .f = f, .off = off, .len = len, .write = write, .tag = tag, .out = out };
	int rc, cs;

	cs = sm_nocancel();
	if (flags & SM_WAIT) {
		struct sm_wait w = { .f = f, .off = off, .len = len, .write = write, .tag = tag,
				     .cancel_state = cs, .attempt = lock_once, .arg = &a,
				     .table_authority = f->tmode != NULL, .deadline = deadline };
		rc = sm_wait_acquire(&w);
	} else {
		rc = lock_once(&a);
	}
	sm_cancel_restore(cs);
	return rc;
}

SM_HOT int sm_unlock(sm_range *r)
{
	sm_file *f;
	bool owner, destroy;
	int rc;

	if (!r)
		return -EINVAL;
	f = r->h.f;
	owner = sm_pid() == f->pid;
	pthread_mutex_lock(&f->lock); /* no cancellation point below: see sm_lock */
	rc = hold_unlock(f, &r->h, owner);
	f->nslices--;
	destroy = f->closing && f->nslices == 0;
	if (destroy)
		free(r);
	else
		range_put(f, r);
	pthread_mutex_unlock(&f->lock);
	if (destroy)
		sm_file_destroy(f);
	return owner ? rc : -ESTALE;
}

int sm_test(sm_file *f, uint64_t off, uint64_t len, int flags)
{
	bool write;
	int rc, cs;

	if ((rc = check_args(f, off, len, flags, &write)) < 0)
		return rc;
	if (flags & SM_WAIT)
		return -EINVAL; /* a test never waits */
	cs = sm_nocancel();
	pthread_mutex_lock(&f->lock);
	if (f->closing)
		rc = -EBADF;
	else if ((rc = sm_ranges_conflict(f, off, len, write)) == 0 && !f->memory &&
		 (rc = f->tmode ? sm_tmode_test(f, write, off, len) : sm_ofd_test(f->fd, write, off, len)) == 0)
		rc = sm_fence_check(f, &(struct sm_hold){ .f = f, .off = off, .len = len, .write = write });
	pthread_mutex_unlock(&f->lock);
	sm_cancel_restore(cs);
	return rc;
}
