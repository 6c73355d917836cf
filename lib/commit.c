/* SPDX-License-Identifier: MIT */
/*
 * commit.c - making write slices durable, or dropping their changes.
 *
 * Direct slices write into the shared mapping; the accessors set bits in a
 * page bitmap, and commit msyncs only the runs of dirty pages, so its cost
 * follows the dirty bytes, not the slice size (SPEC §6.2).  Buffered slices
 * write into a private copy; commit pwrites the dirty runs and fdatasyncs
 * (SPEC §6.3).  A commit moves the bits it writes in flight first (so a
 * write made meanwhile through another view stays dirty) and forgets them
 * only once their pages are durable, so a failed commit leaves the slice
 * dirty and a buffered retry really rewrites the data.  A failed direct
 * commit poisons the sm_file (SPEC §6.4): after a write-back EIO Linux
 * marks the pages clean and a second msync returns 0 with the data gone,
 * so retrying would lie.
 *
 * SM_ASYNC starts write-back (sync_file_range for direct runs, the pwrite
 * alone for buffered ones) and leaves the bits set: the next SM_SYNC commit
 * completes and confirms it.
 *
 * The page is the unit of dirtiness shared by a slice and its sub-slices
 * (one bitmap per hold).  So a commit writes whole dirty pages, clipped
 * only to the hold's locked range, never to the view's: writing just the
 * view's bytes and clearing the page's bit would mark clean, and lose, a
 * change another view made in the same page.  An abort restores the
 * view's own bytes but cleans only the pages the view covers wholly; a
 * page it shares with bytes outside it stays dirty, since those bytes may
 * hold another view's change.
 *
 * The file size is checked first: msync over pages a truncation removed
 * succeeds silently and pwrite would resurrect a deliberately truncated
 * file, so a slice whose pages now reach past end of file is -ENXIO.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safemap-internal.h"

#define COMMIT_FLAGS SM_ASYNC

/* Bindings to log records (redo.c installs the hooks at its first bind). */
const struct sm_bind_ops *sm_bind_ops;
unsigned long sm_bind_pending;
uint64_t sm_bind_epoch;

/* The epoch a flush starting now covers (0: no detached binding waits). */
static uint64_t bind_epoch(void)
{
	if (!__atomic_load_n(&sm_bind_pending, __ATOMIC_ACQUIRE))
		return 0;
	return __atomic_load_n(&sm_bind_epoch, __ATOMIC_ACQUIRE);
}

/* f was flushed by a flush that started at epoch e. */
static void bind_synced(sm_file *f, uint64_t e)
{
	if (e && sm_bind_ops)
		sm_bind_ops->file_synced(f, e);
}

/* File range [*a, *b) of pages [p0, p1) of hold h, clipped to the hold's
 * locked range (a buffered copy holds nothing else). */
static void page_range(const struct sm_hold *h, uint64_t p0, uint64_t p1, uint64_t *a,
		       uint64_t *b)
{
	*a = h->dirty_origin + (p0 << sm_page_shift);
	*b = h->dirty_origin + (p1 << sm_page_shift);
	if (*a < h->off)
		*a = h->off;
	if (*b > h->off + h->len)
		*b = h->off + h->len;
}

/* Write dirty pages [p0, p1) of h: pwrite from a buffered copy, or start
 * write-back (SM_ASYNC) or msync of a direct mapping. */
static int write_run(const struct sm_hold *h, uint64_t p0, uint64_t p1, int flags)
{
	uint64_t off, end, len;

	if (h->buffered) {
		const unsigned char *src;
		page_range(h, p0, p1, &off, &end);
		src = h->map->addr + (off - h->map->foff);
		for (len = end - off; len > 0;) {
			ssize_t n = sm_sys.pwrite(h->f->fd, src, (size_t)len, (off_t)off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (n == 0)
				return -EIO;
			src += n;
			off += (uint64_t)n;
			len -= (uint64_t)n;
		}
		return 0;
	}
	off = h->dirty_origin + (p0 << sm_page_shift);
	len = (p1 - p0) << sm_page_shift;
	if (flags & SM_ASYNC) {
		if (sm_sys.sync_file_range(h->f->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) < 0)
			return -errno;
		return 0;
	}
	if (sm_sys.msync(h->map->addr + (off - h->map->foff), (size_t)len, MS_SYNC) < 0)
		return -errno;
	return 0;
}

/* Write the runs of pages in [p0, p1) set in map. */
static int write_runs(const struct sm_hold *h, const uint64_t *map, uint64_t p0, uint64_t p1,
		      int flags, bool *wrote)
{
	uint64_t p, q;
	int rc;

	for (p = sm_bits_find(map, p0, p1, true); p < p1; p = sm_bits_find(map, q, p1, true)) {
		q = sm_bits_find(map, p + 1, p1, false);
		if ((rc = write_run(h, p, q, flags)) < 0)
			return rc;
		*wrote = true;
	}
	return 0;
}

/* Write every dirty page s touches (run_flags for write_run).  With take
 * (a commit that flushes), the pages go in flight first and the caller
 * settles them after the flush; without (SM_ASYNC) they stay dirty.
 * *wrote says whether anything was written. */
static int write_view(const sm_slice *s, int run_flags, bool take, bool *wrote)
{
	struct sm_hold *h = s->h;
	uint64_t p0, p1;

	sm_slice_pages(s, &p0, &p1);
	if (take)
		sm_dirty_take(h, p0, p1);
	return write_runs(h, take ? h->flight : h->dirty, p0, p1, run_flags, wrote);
}

/* The pages of s in flight are committed (done), or dirty again. */
static void settle_view(const sm_slice *s, bool done)
{
	uint64_t p0, p1;

	sm_slice_pages(s, &p0, &p1);
	sm_dirty_settle(s->h, p0, p1, done);
}

/* A memory file's commit, SM_ASYNC or not: the caller's buffer is the
 * storage, so the slice is clean at once (sm_commit(3)). */
static void memory_commit(const sm_slice *s)
{
	uint64_t p0, p1;

	sm_slice_pages(s, &p0, &p1);
	sm_dirty_clear(s->h, p0, p1);
}

static void poison(sm_file *f, int rc)
{
	int expected = 0;

	__atomic_compare_exchange_n(&f->poison, &expected, rc, false, __ATOMIC_RELEASE,
				    __ATOMIC_RELAXED);
}

/* A usable write slice? */
static int check_writable(const sm_slice *s)
{
	int rc;

	if (!s)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	return s->write ? 0 : -EBADF;
}

/* Checks shared by sm_commit and sm_commit_many. */
static int commit_check(const sm_slice *s)
{
	uint64_t size, p0, p1, a, b;
	int rc;

	if ((rc = check_writable(s)) < 0)
		return rc;
	if (!s->h->buffered && (rc = __atomic_load_n(&s->f->poison, __ATOMIC_ACQUIRE)) < 0)
		return rc;
	if (s->f->memory)
		return 0;
	if ((rc = sm_file_size(s->f, &size)) < 0)
		return rc;
	/* whole pages are written: a sub-slice's may reach past its end */
	sm_slice_pages(s, &p0, &p1);
	page_range(s->h, p0, p1, &a, &b);
	if (size < b)
		return -ENXIO;
	return 0;
}

static int commit_one(sm_slice *s, int flags)
{
	bool wrote = false, sync = !(flags & SM_ASYNC);
	uint64_t epoch;
	int rc;

	if ((rc = commit_check(s)) < 0)
		return rc;
	if (s->f->memory) {
		memory_commit(s);
		return 0;
	}
	/* Write-ahead: the records that describe a bound slice's changes
	 * are durable (and published) before any of its pages is written. */
	if (s->h->bind && (rc = sm_bind_ops->before_write(s->h)) < 0)
		return rc;
	epoch = bind_epoch();
	rc = write_view(s, flags, sync, &wrote);
	if (rc == 0 && s->h->buffered && wrote && sync && sm_sys.fdatasync(s->f->fd) < 0)
		rc = -errno;
	if (sync)
		settle_view(s, rc == 0);
	if (rc < 0 && sync && !s->h->buffered)
		poison(s->f, rc);
	/* Bindings released after an SM_ASYNC commit wait for a flush of
	 * the file: this one's, or (nothing written) one made for them. */
	if (rc == 0 && sync && epoch && s->h->buffered) {
		if (!wrote && sm_sys.fdatasync(s->f->fd) < 0)
			rc = -errno;
		else
			bind_synced(s->f, epoch);
	}
	if (rc == 0 && s->h->bind)
		sm_bind_ops->after(s->h, !sync ? SM_BIND_ASYNC : wrote ? SM_BIND_SYNCED : SM_BIND_CLEAN);
	return rc;
}

int sm_commit(sm_slice *s, int flags)
{
	int rc, cs;

	if (!s || (flags & ~COMMIT_FLAGS))
		return -EINVAL;
	cs = sm_nocancel();
	rc = commit_one(s, flags);
	sm_cancel_restore(cs);
	return rc;
}

/* All slices' dirty runs are written (direct ones with write-back started,
 * buffered ones pwritten), then each distinct file is flushed once; the
 * slices of a file whose flush succeeded become clean.  On error the first
 * error is returned and sm_dirty_pages() tells which slices are still
 * dirty. */
static int commit_many(sm_slice **v, size_t n, int flags)
{
	int first = 0, rc;
	uint64_t epoch = bind_epoch();

	for (size_t i = 0; i < n; i++) {
		bool wrote = false, sync = !(flags & SM_ASYNC);
		if ((rc = commit_check(v[i])) == 0 && v[i]->f->memory) {
			memory_commit(v[i]);
			v[i]->h->need_sync = false; /* nothing to flush */
			continue;
		}
		/* write-ahead, as in commit_one (a covered log returns at once) */
		if (rc == 0 && v[i]->h->bind)
			rc = sm_bind_ops->before_write(v[i]->h);
		if (rc == 0 &&
		    (rc = write_view(v[i], v[i]->h->buffered ? flags : SM_ASYNC, sync, &wrote)) < 0) {
			if (sync)
				settle_view(v[i], false);
		}
		if (rc < 0) {
			if (!first)
				first = rc;
			if (rc != -ENXIO && rc != -ESTALE && !v[i]->h->buffered && sync)
				poison(v[i]->f, rc);
			v[i]->h->need_sync = false;
			continue;
		}
		v[i]->h->need_sync = true; /* written: its file needs a flush */
		if ((flags & SM_ASYNC) && v[i]->h->bind)
			sm_bind_ops->after(v[i]->h, SM_BIND_ASYNC);
	}
	if (flags & SM_ASYNC)
		return first;
	for (size_t i = 0; i < n; i++) {
		sm_file *f = v[i]->f;
		bool seen = false, direct = false;
		if (!v[i]->h->need_sync)
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = v[j]->f == f && v[j]->h->need_sync;
		if (seen)
			continue; /* flushed with an earlier slice of the same file */
		rc = sm_sys.fdatasync(f->fd) < 0 ? -errno : 0; /* never a memory file's */
		for (size_t j = i; j < n; j++) {
			if (v[j]->f != f || !v[j]->h->need_sync)
				continue;
			direct |= !v[j]->h->buffered;
			settle_view(v[j], rc == 0);
			if (rc == 0 && v[j]->h->bind)
				sm_bind_ops->after(v[j]->h, SM_BIND_SYNCED);
		}
		if (rc == 0)
			bind_synced(f, epoch);
		if (rc < 0) {
			if (!first)
				first = rc;
			if (direct)
				poison(f, rc);
		}
	}
	for (size_t i = 0; i < n; i++)
		v[i]->h->need_sync = false;
	return first;
}

int sm_commit_many(sm_slice **v, size_t n, int flags)
{
	int rc, cs;

	if (!v || n == 0 || (flags & ~COMMIT_FLAGS))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!v[i])
			return -EINVAL;
		if (!v[i]->write)
			return -EBADF;
		for (size_t j = 0; j < i; j++)
			if (v[j]->h == v[i]->h)
				return -EINVAL; /* the same slice (or sub-slices of one) twice */
	}
	cs = sm_nocancel();
	rc = commit_many(v, n, flags);
	sm_cancel_restore(cs);
	return rc;
}

/* Is every byte of page p of s's hold inside s? */
static bool page_within(const sm_slice *s, uint64_t p)
{
	uint64_t a, b;

	page_range(s->h, p, p + 1, &a, &b);
	return a >= s->off && b <= s->off + s->len;
}

int sm_abort(sm_slice *s)
{
	struct sm_hold *h;
	uint64_t p, q, p0, p1, a, b;
	int rc, cs;

	if ((rc = check_writable(s)) < 0)
		return rc;
	h = s->h;
	if (!h->buffered)
		return -ENOTSUP; /* direct changes are already in the page cache */
	cs = sm_nocancel();
	sm_slice_pages(s, &p0, &p1);
	for (p = sm_bits_find(h->dirty, p0, p1, true); p < p1;
	     p = sm_bits_find(h->dirty, q, p1, true)) {
		uint64_t c0 = p, c1;
		q = c1 = sm_bits_find(h->dirty, p + 1, p1, false);
		/* the view's bytes of the run come back from the file... */
		page_range(h, p, q, &a, &b);
		if (a < s->off)
			a = s->off;
		if (b > s->off + s->len)
			b = s->off + s->len;
		if ((rc = sm_hold_load(h, a, b - a)) < 0)
			break;
		/* ...but a page with bytes outside the view stays dirty: they
		 * may hold another view's change.  Only the view's first and
		 * last pages can be such. */
		if (c0 == p0 && !page_within(s, p0))
			c0++;
		if (c1 == p1 && c1 > c0 && !page_within(s, p1 - 1))
			c1--;
		sm_dirty_clear(h, c0, c1);
	}
	if (rc == 0 && h->bind)
		sm_bind_ops->after(h, SM_BIND_ABORTED);
	sm_cancel_restore(cs);
	return rc;
}
