/* SPDX-License-Identifier: MIT */
/*
 * slice.c - creating, sharing, downgrading and releasing slices.
 *
 * Order of a map: validate arguments, check the file size (a read slice
 * must lie inside the file), take the in-process range and the kernel lock
 * (ranges.c), take a window from the mapping cache (map.c) or, for
 * SM_BUFFERED, make a private copy, then for write slices reserve the
 * blocks with fallocate so a full disk is -ENOSPC here instead of SIGBUS at
 * the first store (SPEC §5.4).  Every step undoes the previous ones on
 * failure.
 *
 * The lock, mapping and dirty bitmap live in a refcounted sm_hold shared by
 * a slice and its sub-slices (sm_sub), so a sub-slice keeps the parent's
 * lock and mapping alive after the parent is released.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"

#define MAP_FLAGS (SM_BUFFERED | SM_WAIT | SM_EXTEND | SM_POPULATE)

int sm_file_size(sm_file *f, uint64_t *size)
{
	struct stat st;

	if (f->memory) {
		*size = f->mem_len;
		return 0;
	}
	if (fstat(f->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* The last slice of h is gone: unlock, unmap, free.  Caller holds f->lock. */
static int hold_free(struct sm_hold *h)
{
	sm_file *f = h->f;
	/* A pid comparison, not only the atfork state: vfork, _Fork and raw
	 * clone children skip atfork handlers (SPEC §3.6). */
	bool owner = getpid() == f->pid;
	int rc;

	sm_table_remove(f, h, owner);
	rc = sm_ranges_release(f, h, owner);

	sm_map_put(f, h->map);
	f->nslices--;
	free(h->dirty);
	free(h);
	return rc;
}

/* Drop slice s (and its hold if it was the last user); f->lock not held. */
static int slice_free(sm_slice *s)
{
	sm_file *f = s->f;
	struct sm_hold *h = s->h;
	bool destroy;
	int rc = 0;

	pthread_mutex_lock(&f->lock);
	if (s->sub && s->write)
		h->wsubs--;
	if (--h->refs == 0)
		rc = hold_free(h);
	destroy = f->closing && f->nslices == 0;
	pthread_mutex_unlock(&f->lock);
	free(s);
	if (destroy)
		sm_file_destroy(f);
	return rc;
}

/* Reserve the write slice's blocks (and grow the file for SM_EXTEND). */
static int reserve(struct sm_hold *h, int flags)
{
	sm_file *f = h->f;
	uint64_t size;
	int rc;

	if (f->memory)
		return 0;
	if (sm_sys.fallocate(f->fd, 0, (off_t)h->off, (off_t)h->len) == 0)
		return 0;
	rc = -errno;
	if (rc != -EOPNOTSUPP)
		return rc;
	/* No reservation on this filesystem: map anyway (documented risk). */
	if (!(flags & SM_EXTEND))
		return 0;
	if ((rc = sm_file_size(f, &size)) < 0)
		return rc;
	if (size < h->off + h->len && sm_sys.ftruncate(f->fd, (off_t)(h->off + h->len)) < 0)
		return -errno;
	return 0;
}

/* Fill a buffered slice's private copy from the file (zeros past EOF). */
static int load_copy(struct sm_hold *h, uint64_t off, uint64_t len)
{
	unsigned char *dst = h->map->addr + (off - h->map->foff);

	while (len > 0) {
		ssize_t n = pread(h->f->fd, dst, len > (1u << 30) ? (1u << 30) : (size_t)len,
				  (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			memset(dst, 0, (size_t)len);
			break;
		}
		dst += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
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

static void view_init(sm_slice *s)
{
	struct sm_hold *h = s->h;

	s->v.base = h->map->addr + (s->off - h->map->foff);
	s->v.len = s->len;
	s->v.state = &h->map->state;
	s->v.dirty = h->dirty;
	s->v.dirty_off = s->off - h->dirty_origin;
	s->v.flags = s->write ? SM_VIEW_WRITE : 0;
	s->v.page_shift = sm_page_shift;
}

static int do_map(sm_file *f, uint64_t off, uint64_t len, int flags, bool write, sm_slice **out)
{
	uint64_t size, pmask = sm_page_size - 1;
	bool buffered = write && (flags & SM_BUFFERED);
	struct sm_hold *h;
	sm_slice *s;
	int rc;

	if ((rc = sm_file_size(f, &size)) < 0)
		return rc;
	if (off + len > size && !(write && (flags & SM_EXTEND) && !f->memory))
		return -ERANGE;

	s = calloc(1, sizeof(*s));
	h = calloc(1, sizeof(*h));
	if (!s || !h)
		goto nomem;
	h->f = f;
	h->off = off;
	h->len = len;
	h->write = write;
	h->buffered = buffered;
	h->refs = 1;
	h->slot = -1;
	if (write) {
		uint64_t pages = ((off & pmask) + len + pmask) >> sm_page_shift;
		h->dirty_origin = off & ~pmask;
		h->dirty_words = (size_t)((pages + 63) / 64);
		if (!(h->dirty = calloc(h->dirty_words, sizeof(uint64_t))))
			goto nomem;
	}

	pthread_mutex_lock(&f->lock);
	if (f->closing) {
		rc = -EBADF;
	} else if ((rc = sm_ranges_acquire(f, h)) == 0) {
		if ((rc = sm_table_add(f, h)) == 0) {
			rc = buffered ? sm_map_anon(f, off, len, &h->map)
				      : sm_map_get(f, off, len, write, &h->map);
			if (rc < 0)
				sm_table_remove(f, h, true);
			else
				sm_fault_bind(h->map, f->fd); /* for the fault handler */
		}
		if (rc < 0)
			sm_ranges_release(f, h, true);
		else
			f->nslices++;
	}
	pthread_mutex_unlock(&f->lock);
	if (rc < 0) {
		free(h->dirty);
		free(h);
		free(s);
		return rc;
	}

	s->h = h;
	s->f = f;
	s->map = h->map;
	s->off = off;
	s->len = len;
	s->write = write;
	view_init(s);

	if ((write && (rc = reserve(h, flags)) < 0) || (buffered && (rc = load_copy(h, off, len)) < 0)) {
		slice_free(s);
		return rc;
	}
	if (flags & SM_POPULATE)
		populate(s);
	*out = s;
	return 0;

nomem:
	if (h)
		free(h->dirty);
	free(h);
	free(s);
	return -ENOMEM;
}

static int map_slice(sm_file *f, uint64_t off, uint64_t len, int flags, bool write,
		     sm_slice **out)
{
	int rc, cs;

	if (out)
		*out = NULL;
	if (!f || !out || (flags & ~MAP_FLAGS))
		return -EINVAL;
	if (!write && (flags & (SM_EXTEND | SM_BUFFERED)))
		return -EINVAL;
	if ((rc = sm_check_range(off, len)) < 0)
		return rc;
	if ((flags & SM_WAIT) || (f->memory && (flags & SM_BUFFERED)))
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

int sm_sub(sm_slice *s, uint64_t off, uint64_t len, sm_slice **out)
{
	sm_slice *t;
	int rc;

	if (out)
		*out = NULL;
	if (!s || !out || len == 0)
		return -EINVAL;
	if (off >= s->len || len > s->len - off)
		return -ERANGE;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	if (!(t = calloc(1, sizeof(*t))))
		return -ENOMEM;
	*t = *s;
	t->off = s->off + off;
	t->len = len;
	t->sub = true;
	t->dead = 0;
	view_init(t);
	pthread_mutex_lock(&s->f->lock);
	s->h->refs++;
	if (t->write)
		s->h->wsubs++;
	pthread_mutex_unlock(&s->f->lock);
	*out = t;
	return 0;
}

static bool any_dirty(const sm_slice *s)
{
	uint64_t p0, p1;

	sm_slice_pages(s, &p0, &p1);
	for (uint64_t p = p0; p < p1; p++)
		if (__atomic_load_n(&s->h->dirty[p >> 6], __ATOMIC_RELAXED) >> (p & 63) & 1)
			return true;
	return false;
}

int sm_downgrade(sm_slice *s)
{
	int rc, cs;

	if (!s || s->sub)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	if (!s->write)
		return -EBADF;
	cs = sm_nocancel();
	pthread_mutex_lock(&s->f->lock);
	if (s->h->wsubs > 0 || (s->h->buffered && any_dirty(s)))
		rc = -EBUSY; /* commit or abort first; release writable subs */
	else if ((rc = sm_ranges_downgrade(s->f, s->h)) == 0) {
		sm_table_downgrade(s->f, s->h);
		s->write = false;
		s->v.flags &= ~SM_VIEW_WRITE;
	}
	pthread_mutex_unlock(&s->f->lock);
	sm_cancel_restore(cs);
	return rc;
}

int sm_release(sm_slice *s)
{
	int rc, cs;

	if (!s)
		return -EINVAL;
	cs = sm_nocancel();
	rc = slice_free(s);
	sm_cancel_restore(cs);
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
	if (state == SM_MAP_DEAD && (rc = sm_fault_classify(s->map, s->off, s->len)) < 0) {
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

void sm_slice_pages(const sm_slice *s, uint64_t *p0, uint64_t *p1)
{
	*p0 = (s->off - s->h->dirty_origin) >> sm_page_shift;
	*p1 = ((s->off + s->len - 1 - s->h->dirty_origin) >> sm_page_shift) + 1;
}

void sm_dirty_set(sm_slice *s, uint64_t off, uint64_t len)
{
	uint64_t first = (s->v.dirty_off + off) >> sm_page_shift;
	uint64_t last = (s->v.dirty_off + off + len - 1) >> sm_page_shift;

	while (first <= last) {
		uint64_t w = first >> 6, mask = sm_word_mask(first, last);

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

int sm_dirty_pages(const sm_slice *s)
{
	uint64_t p0, p1, n = 0;

	if (!s)
		return -EINVAL;
	if (!s->h->dirty)
		return 0;
	sm_slice_pages(s, &p0, &p1);
	for (uint64_t p = p0; p < p1; p++)
		n += __atomic_load_n(&s->h->dirty[p >> 6], __ATOMIC_RELAXED) >> (p & 63) & 1;
	return n > INT32_MAX ? INT32_MAX : (int)n;
}
