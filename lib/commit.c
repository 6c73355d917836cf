/*
 * commit.c - making write slices durable.
 *
 * Direct slices write into the shared mapping; the accessors set bits in a
 * page bitmap, and commit msyncs only the runs of dirty pages, so its cost
 * follows the dirty bytes, not the slice size (SPEC §6.2).  Bits are
 * cleared only after their run was flushed, so a failed commit leaves the
 * slice dirty.  A failed direct commit poisons the sm_file (SPEC §6.4):
 * after a write-back EIO Linux marks the pages clean and a second msync
 * returns 0 with the data gone, so retrying would lie.
 *
 * The file size is checked first: msync over pages a truncation removed
 * succeeds silently, so a slice now past end of file is -ENXIO.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "safemap-internal.h"

/* Flush (or start flushing) dirty pages [p0, p1) of s. */
static int flush_run(sm_slice *s, uint64_t p0, uint64_t p1, int flags)
{
	uint64_t foff = s->dirty_origin + (p0 << sm_page_shift);
	uint64_t n = (p1 - p0) << sm_page_shift;

	if (flags & SM_ASYNC) {
		if (sm_sys.sync_file_range(s->f->fd, (off_t)foff, (off_t)n,
					   SYNC_FILE_RANGE_WRITE) < 0)
			return -errno;
		return 0;
	}
	if (sm_sys.msync(s->map->addr + (foff - s->map->foff), (size_t)n, MS_SYNC) < 0)
		return -errno;
	return 0;
}

static void clear_run(sm_slice *s, uint64_t p0, uint64_t p1)
{
	for (uint64_t p = p0; p < p1; p++)
		__atomic_fetch_and(&s->v.dirty[p >> 6], ~((uint64_t)1 << (p & 63)),
				   __ATOMIC_RELAXED);
}

static int commit_direct(sm_slice *s, int flags)
{
	uint64_t npages = (uint64_t)s->dirty_words * 64;
	uint64_t p = 0;

	while (p < npages) {
		uint64_t w = s->v.dirty[p >> 6] >> (p & 63);
		uint64_t p1;
		int rc;

		if (!w) {
			p = ((p >> 6) + 1) << 6; /* skip a clean word */
			continue;
		}
		p += (uint64_t)__builtin_ctzll(w);
		for (p1 = p + 1; p1 < npages && (s->v.dirty[p1 >> 6] >> (p1 & 63) & 1); p1++)
			;
		if ((rc = flush_run(s, p, p1, flags)) < 0)
			return rc;
		if (!(flags & SM_ASYNC))
			clear_run(s, p, p1);
		p = p1;
	}
	return 0;
}

int sm_commit(sm_slice *s, int flags)
{
	struct stat st;
	int rc;

	if (!s || (flags & ~SM_ASYNC))
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	if (!s->write)
		return -EBADF;
	if ((rc = __atomic_load_n(&s->f->poison, __ATOMIC_ACQUIRE)) < 0)
		return rc;

	SM_NOCANCEL_BEGIN;
	if (fstat(s->f->fd, &st) < 0) {
		rc = -errno;
	} else if ((uint64_t)st.st_size < s->off + s->len) {
		rc = -ENXIO;
	} else if ((rc = commit_direct(s, flags)) < 0 && !(flags & SM_ASYNC)) {
		int expected = 0;
		__atomic_compare_exchange_n(&s->f->poison, &expected, rc, false,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
	}
	SM_NOCANCEL_END;
	return rc;
}
