/*
 * slice.c - creating and releasing slices.
 *
 * Order of a map: validate arguments, check the file size (a read slice
 * must lie inside the file), take the in-process range and the kernel lock
 * (ranges.c), take a window from the mapping cache (map.c), then for write
 * slices reserve the blocks with fallocate so a full disk is -ENOSPC here
 * instead of SIGBUS at the first store (SPEC §5.4).  Every step undoes the
 * previous ones on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"

#define MAP_FLAGS (SM_BUFFERED | SM_WAIT | SM_EXTEND | SM_POPULATE)

static int file_size(sm_file *f, uint64_t *size)
{
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* Undo sm_ranges_acquire + sm_map_get; f->lock not held. */
static int slice_teardown(sm_slice *s)
{
	sm_file *f = s->f;
	bool destroy;
	int rc;

	pthread_mutex_lock(&f->lock);
	rc = sm_ranges_release(f, s);
	sm_map_put(f, s->map);
	f->nslices--;
	destroy = f->closing && f->nslices == 0;
	pthread_mutex_unlock(&f->lock);
	free(s->v.dirty);
	free(s);
	if (destroy)
		sm_file_destroy(f);
	return rc;
}

/* Reserve the write slice's blocks (and grow the file for SM_EXTEND). */
static int reserve(sm_slice *s, int flags)
{
	sm_file *f = s->f;
	uint64_t size;
	int rc;

	if (sm_sys.fallocate(f->fd, 0, (off_t)s->off, (off_t)s->len) == 0)
		return 0;
	rc = -errno;
	if (rc != -EOPNOTSUPP)
		return rc;
	/* No reservation on this filesystem: map anyway (documented risk). */
	if (!(flags & SM_EXTEND))
		return 0;
	if ((rc = file_size(f, &size)) < 0)
		return rc;
	if (size < s->off + s->len && sm_sys.ftruncate(f->fd, (off_t)(s->off + s->len)) < 0)
		return -errno;
	return 0;
}

static void populate(sm_slice *s)
{
	uint64_t pmask = sm_page_size - 1;
	uintptr_t a = (uintptr_t)s->v.base & ~(uintptr_t)pmask;
	uintptr_t b = ((uintptr_t)s->v.base + s->len + pmask) & ~(uintptr_t)pmask;

	/* Best effort: MADV_POPULATE_* needs Linux 5.14; WILLNEED still
	 * starts read-ahead on older kernels. */
	if (madvise((void *)a, b - a, s->write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) < 0)
		madvise((void *)a, b - a, MADV_WILLNEED);
}

static int do_map(sm_file *f, uint64_t off, uint64_t len, int flags, bool write, sm_slice **out)
{
	uint64_t size, pmask = sm_page_size - 1;
	sm_slice *s;
	int rc;

	if ((rc = file_size(f, &size)) < 0)
		return rc;
	if (off + len > size && !(write && (flags & SM_EXTEND)))
		return -ERANGE;

	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->f = f;
	s->off = off;
	s->len = len;
	s->write = write;
	if (write) {
		uint64_t pages = ((off & pmask) + len + pmask) >> sm_page_shift;
		s->dirty_origin = off & ~pmask;
		s->dirty_words = (size_t)((pages + 63) / 64);
		if (!(s->v.dirty = calloc(s->dirty_words, sizeof(uint64_t)))) {
			free(s);
			return -ENOMEM;
		}
	}

	pthread_mutex_lock(&f->lock);
	if (f->closing) {
		rc = -EBADF;
	} else if ((rc = sm_ranges_acquire(f, s)) == 0) {
		if ((rc = sm_map_get(f, off, len, write, &s->map)) < 0)
			sm_ranges_release(f, s);
		else
			f->nslices++;
	}
	pthread_mutex_unlock(&f->lock);
	if (rc < 0) {
		free(s->v.dirty);
		free(s);
		return rc;
	}

	s->v.base = s->map->addr + (off - s->map->foff);
	s->v.len = len;
	s->v.state = &s->map->state;
	s->v.dirty_off = off & pmask;
	s->v.flags = write ? SM_VIEW_WRITE : 0;
	s->v.page_shift = sm_page_shift;

	if (write && (rc = reserve(s, flags)) < 0) {
		slice_teardown(s);
		return rc;
	}
	if (flags & SM_POPULATE)
		populate(s);
	*out = s;
	return 0;
}

static int map_slice(sm_file *f, uint64_t off, uint64_t len, int flags, bool write,
		     sm_slice **out)
{
	int rc, cs;

	if (out)
		*out = NULL;
	if (!f || !out || (flags & ~MAP_FLAGS))
		return -EINVAL;
	if (!write && (flags & SM_EXTEND))
		return -EINVAL;
	if ((rc = sm_check_range(off, len)) < 0)
		return rc;
	if (flags & (SM_BUFFERED | SM_WAIT))
		return -ENOTSUP;
	if (write && f->flags != SM_RDWR)
		return -EBADF;
	if (getpid() != f->pid)
		return -ESTALE; /* a fork child must sm_open afresh */
	cs = sm_nocancel();
	rc = do_map(f, off, len, flags, write, out);
	sm_cancel_restore(cs);
	return rc;
}

int sm_map_read(sm_file *f, uint64_t off, uint64_t len, int flags, sm_slice **out)
{
	return map_slice(f, off, len, flags, false, out);
}

int sm_map_write(sm_file *f, uint64_t off, uint64_t len, int flags, sm_slice **out)
{
	return map_slice(f, off, len, flags, true, out);
}

int sm_release(sm_slice *s)
{
	int rc;

	if (!s)
		return -EINVAL;
	SM_NOCANCEL_BEGIN;
	rc = slice_teardown(s);
	SM_NOCANCEL_END;
	return rc;
}

uint64_t sm_offset(const sm_slice *s)
{
	return s ? s->off : 0;
}

uint64_t sm_length(const sm_slice *s)
{
	return s ? s->len : 0;
}

int sm_slice_error(const sm_slice *s)
{
	/* The state word covers fork children made through fork(); the pid
	 * check covers vfork, _Fork and raw clone, which skip atfork. */
	uint32_t state = s->map->state;
	int rc;

	if (state == SM_MAP_STALE || getpid() != s->f->pid)
		return -ESTALE;
	if ((rc = __atomic_load_n(&s->dead, __ATOMIC_RELAXED)) < 0)
		return rc;
	if (state == SM_MAP_DEAD && (rc = sm_fault_classify(s)) < 0) {
		/* sticky: the slice is dead from now on (SPEC §5.3) */
		__atomic_store_n(&((sm_slice *)s)->dead, rc, __ATOMIC_RELAXED);
		return rc;
	}
	return 0;
}

int sm_unsafe_ptr(sm_slice *s, void **out)
{
	int rc;

	if (out)
		*out = NULL;
	if (!s || !out)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	*out = s->v.base;
	return 0;
}

void sm_dirty_set(sm_slice *s, uint64_t off, uint64_t len)
{
	uint64_t first = (s->v.dirty_off + off) >> sm_page_shift;
	uint64_t last = (s->v.dirty_off + off + len - 1) >> sm_page_shift;

	while (first <= last) {
		uint64_t w = first >> 6, lo = first & 63;
		uint64_t hi = (last >> 6) == w ? (last & 63) : 63;
		uint64_t mask = (hi == 63 ? ~(uint64_t)0 : (((uint64_t)1 << (hi + 1)) - 1)) &
				~(((uint64_t)1 << lo) - 1);

		if ((__atomic_load_n(&s->v.dirty[w], __ATOMIC_RELAXED) & mask) != mask)
			__atomic_fetch_or(&s->v.dirty[w], mask, __ATOMIC_RELAXED);
		first = (w + 1) << 6;
	}
}

int sm_mark_dirty(sm_slice *s, uint64_t off, uint64_t len)
{
	if (!s || len == 0)
		return -EINVAL;
	if (!s->write)
		return -EBADF;
	if (off >= s->len || len > s->len - off)
		return -ERANGE;
	sm_dirty_set(s, off, len);
	return 0;
}
