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

#include "safemap-internal.h"

int sm_debug_late_publish;

int sm_hold_lock(sm_file *f, struct sm_hold *h, const char *tag)
{
	int rc;

	if (f->tmode)
		return sm_tmode_hold_lock(f, h, tag);
	h->slot = -1;
	if (h->nolock)
		return sm_table_add(f, h, tag, SMT_UNLOCKED);
	if (sm_debug_late_publish) {
		/* the pre-0.2 order, for tests only */
		if ((rc = sm_ranges_acquire(f, h)) < 0)
			return rc;
		if ((rc = sm_table_add(f, h, tag, SMT_HELD)) < 0)
			sm_ranges_release(f, h, true);
		return rc;
	}
	if ((rc = sm_table_add(f, h, tag, SMT_PENDING)) < 0)
		return rc;
	if ((rc = sm_ranges_acquire(f, h)) < 0) {
		sm_table_remove(f, h, true); /* withdrawn: the attempt failed */
		return rc;
	}
	sm_table_held(f, h);
	return 0;
}

int sm_hold_unlock(sm_file *f, struct sm_hold *h, bool owner)
{
	int rc = 0;

	if (f->tmode)
		return sm_tmode_hold_unlock(f, h, owner);
	if (h->nolock) {
		sm_table_remove(f, h, owner);
		return 0;
	}
	if (sm_debug_late_publish) {
		sm_table_remove(f, h, owner);
		return sm_ranges_release(f, h, owner);
	}
	/* A fork child updates its copy of the counts but never unlocks the
	 * parent's bytes nor clears the parent's entries (SPEC §3.6). */
	rc = sm_ranges_release(f, h, owner);
	sm_table_remove(f, h, owner);
	return rc;
}

#define LOCK_MODES (SM_LOCK_READ | SM_LOCK_WRITE)

static int check_args(sm_file *f, uint64_t off, uint64_t len, int flags, bool *write)
{
	int mode = flags & LOCK_MODES, rc;

	if (!f || (flags & ~(LOCK_MODES | SM_WAIT)) || (mode != SM_LOCK_READ && mode != SM_LOCK_WRITE))
		return -EINVAL;
	if ((rc = sm_check_range(off, len)) < 0)
		return rc;
	*write = mode == SM_LOCK_WRITE;
	if (*write && f->flags != SM_RDWR)
		return -EBADF; /* the kernel refuses write locks on read-only descriptors */
	if (sm_pid() != f->pid)
		return -ESTALE; /* a fork child must sm_open afresh */
	return 0;
}

int sm_lock(sm_file *f, uint64_t off, uint64_t len, int flags, const char *tag, sm_range **out)
{
	struct sm_range *r;
	bool write;
	int rc, cs;

	if (out)
		*out = NULL;
	if (!out)
		return -EINVAL;
	if ((rc = check_args(f, off, len, flags, &write)) < 0)
		return rc;
	if (flags & SM_WAIT)
		return -ENOTSUP; /* waiting (SPEC §3.4) is not implemented yet */
	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->h.f = f;
	r->h.off = off;
	r->h.len = len;
	r->h.write = write;
	r->h.refs = 1;
	r->h.slot = -1;

	cs = sm_nocancel();
	pthread_mutex_lock(&f->lock);
	if (f->closing)
		rc = -EBADF;
	else if ((rc = sm_hold_lock(f, &r->h, tag)) == 0)
		f->nslices++; /* sm_close waits for ranges as for slices */
	pthread_mutex_unlock(&f->lock);
	sm_cancel_restore(cs);
	if (rc < 0) {
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int sm_unlock(sm_range *r)
{
	sm_file *f;
	bool owner, destroy;
	int rc, cs;

	if (!r)
		return -EINVAL;
	f = r->h.f;
	owner = sm_pid() == f->pid;
	cs = sm_nocancel();
	pthread_mutex_lock(&f->lock);
	rc = sm_hold_unlock(f, &r->h, owner);
	f->nslices--;
	destroy = f->closing && f->nslices == 0;
	pthread_mutex_unlock(&f->lock);
	free(r);
	if (destroy)
		sm_file_destroy(f);
	sm_cancel_restore(cs);
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
	else if ((rc = sm_ranges_conflict(f, off, len, write)) == 0 && !f->memory)
		rc = f->tmode ? sm_tmode_test(f, write, off, len) : sm_ofd_test(f->fd, write, off, len);
	pthread_mutex_unlock(&f->lock);
	sm_cancel_restore(cs);
	return rc;
}
