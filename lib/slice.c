/* SPDX-License-Identifier: MIT */
/*
 * slice.c - creating, sharing, downgrading and releasing slices.
 *
 * Order of a map: validate arguments, check the file size (a read slice
 * must lie inside the file), publish the table entry as pending, take the
 * in-process range and the kernel lock (ranges.c), mark the entry held
 * (lock.c; an SM_NOLOCK slice only publishes an unlocked entry), take a window from the mapping cache (map.c) or, for
 * SM_BUFFERED, make and fill a private copy, then for write slices reserve
 * the blocks with fallocate so a full disk is -ENOSPC here instead of
 * SIGBUS at the first store (SPEC §5.4), and last grow the file for
 * SM_EXTEND.  Every step undoes the previous ones on failure; growth comes
 * last because it is the one step that cannot be undone safely (see
 * reserve()).
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

#define MAP_FLAGS (SM_BUFFERED | SM_WAIT | SM_EXTEND | SM_POPULATE | SM_NOLOCK | SM_RECOVER)

/*
 * Free lists of sm_slice and sm_hold objects per sm_file (at most POOL_MAX
 * each, freed by sm_ranges_free_all at destroy): a map and its release
 * take them and give them back under f->lock, which they hold anyway, so a
 * read slice costs no malloc or free once the file is warm.  Write slices
 * still allocate their dirty bitmap.
 */
#define POOL_MAX 64

static sm_slice *slice_get(sm_file *f)
{
	sm_slice *s = f->slice_pool;

	if (!s)
		return malloc(sizeof(*s));
	f->slice_pool = *(sm_slice **)s;
	f->nslice_pool--;
	return s;
}

static void slice_put(sm_file *f, sm_slice *s)
{
	if (f->nslice_pool >= POOL_MAX) {
		free(s);
		return;
	}
	*(sm_slice **)s = f->slice_pool; /* the link overlays the first bytes */
	f->slice_pool = s;
	f->nslice_pool++;
}

static struct sm_hold *hold_get(sm_file *f)
{
	struct sm_hold *h = f->hold_pool;

	if (!h)
		return malloc(sizeof(*h));
	f->hold_pool = *(struct sm_hold **)h;
	f->nhold_pool--;
	return h;
}

static void hold_put(sm_file *f, struct sm_hold *h)
{
	if (f->nhold_pool >= POOL_MAX) {
		free(h);
		return;
	}
	*(struct sm_hold **)h = f->hold_pool;
	f->hold_pool = h;
	f->nhold_pool++;
}

/* The last slice of h is gone: unlock, unmap, free.  Caller holds f->lock. */
static int hold_free(struct sm_hold *h)
{
	sm_file *f = h->f;
	/* A pid comparison, not only the atfork state: _Fork and raw clone
	 * children skip atfork handlers (SPEC §3.6); sm_pid() catches them. */
	bool owner = sm_pid() == f->pid;
	int rc;

	if (h->bind)
		sm_bind_ops->hold_gone(h); /* before the bitmap goes (redo.c) */
	rc = sm_hold_unlock(f, h, owner);

	sm_window_put(f, h->map);
	f->nslices--;
	free(h->dirty);
	hold_put(f, h);
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
	slice_put(f, s); /* sm_file_destroy frees the list */
	pthread_mutex_unlock(&f->lock);
	if (destroy)
		sm_file_destroy(f);
	return rc;
}

/* Give back the blocks reserved for h past old_size, the file's size once
 * h was locked, after a failed map.  Those bytes were past end of file
 * then and h's lock has kept every cooperating writer out of them since,
 * so they hold zeros whoever grew the file meanwhile: punching them loses
 * nothing (it frees the blocks on XFS, btrfs, tmpfs).  ext4 ignores a punch
 * past end of file and frees blocks preallocated there only on a truncate,
 * even to the same size; that truncate would cut the bytes of anyone who
 * grew the file between our fstat and it.  A cooperating writer grows the
 * file only into bytes it has locked, so take a write lock over
 * [old_size, end of all) first (it never conflicts with h's own lock, and
 * ranges.c vouches for f's other slices, which the kernel cannot see): no
 * one can grow the file while we hold it.  If someone holds any of it the
 * blocks stay reserved past end of file; the size is right either way.
 * Best effort throughout. */
static void unreserve(struct sm_hold *h, uint64_t old_size)
{
	sm_file *f = h->f;
	uint64_t a = h->off > old_size ? h->off : old_size, end = h->off + h->len, size = 0;

	if (a >= end)
		return; /* nothing was past end of file */
	sm_sys.fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)a,
			 (off_t)(end - a));
	if (f->tmode)
		return; /* no kernel lock may touch the fence: the blocks stay reserved */
	pthread_mutex_lock(&f->lock);
	/* An SM_NOLOCK hold has no range of its own: then no run at all may
	 * lie past old_size (the dummy hold covers nothing). */
	struct sm_hold none = { .off = UINT64_MAX, .len = 0 };
	if (sm_ranges_alone_from(f, h->nolock ? &none : h, old_size) &&
	    sm_ofd_lock(f->fd, true, old_size, 0) == 0) {
		if (sm_file_size(f, &size) == 0 && size < end)
			sm_sys.ftruncate(f->fd, (off_t)size);
		/* give back the tail, keeping h's own range locked */
		if (h->nolock) {
			sm_ofd_unlock(f->fd, old_size, 0);
		} else {
			if (old_size < h->off)
				sm_ofd_unlock(f->fd, old_size, h->off - old_size);
			sm_ofd_unlock(f->fd, end, 0);
		}
	}
	pthread_mutex_unlock(&f->lock);
}

/* Grow the file to at least end by writing the zero byte at end - 1 (in
 * h's locked range, past the old end of file, so zero already): unlike
 * ftruncate, a pwrite never shrinks a file another process grew past end
 * meanwhile, and a failed one-byte pwrite leaves the size alone. */
static int grow(sm_file *f, uint64_t end)
{
	static const unsigned char zero;
	ssize_t n;

	while ((n = sm_sys.pwrite(f->fd, &zero, 1, (off_t)(end - 1))) < 0 && errno == EINTR)
		;
	if (n < 0)
		return -errno;
	if (n != 1)
		return -EIO;
	/* the file is at least end bytes now (table mode trusts the cache) */
	uint64_t c = __atomic_load_n(&f->size_cache, __ATOMIC_RELAXED);
	while (c < end && !__atomic_compare_exchange_n(&f->size_cache, &c, end, true, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED))
		;
	return 0;
}

/* Reserve the write slice's blocks, then grow the file for SM_EXTEND.
 *
 * A failed SM_EXTEND map must leave the file's size as it found it.
 * Shrinking it back afterwards is not safe: between our fstat and our
 * ftruncate another process may grow the file for a slice of its own
 * (past our range, or between the old end and our offset), and the
 * ftruncate would cut its bytes.  So nothing here ever shrinks the file:
 * the blocks are reserved with FALLOC_FL_KEEP_SIZE (fallocate mode 0 on
 * ext4 grows i_size over whatever it allocated before ENOSPC), a failure
 * gives back the reservation past the old end (unreserve), and the file
 * grows only as the very last step, which either succeeds or changes
 * nothing. */
static int reserve(struct sm_hold *h, int flags)
{
	sm_file *f = h->f;
	uint64_t size, end = h->off + h->len;
	bool reserved = true;
	int rc;

	if (f->memory)
		return 0;
	if ((rc = sm_file_size(f, &size)) < 0)
		return rc;
	if (sm_sys.fallocate(f->fd, FALLOC_FL_KEEP_SIZE, (off_t)h->off, (off_t)h->len) < 0) {
		rc = -errno;
		if (rc != -EOPNOTSUPP) {
			unreserve(h, size);
			return rc;
		}
		reserved = false; /* this filesystem cannot: map anyway (documented risk) */
	}
	if (!(flags & SM_EXTEND) || size >= end)
		return 0;
	if ((rc = grow(f, end)) < 0 && reserved)
		unreserve(h, size);
	return rc;
}

/* Fill file bytes [off, off+len) of a buffered hold's private copy from
 * the file (zeros past end of file), retrying EINTR and short reads. */
int sm_hold_load(struct sm_hold *h, uint64_t off, uint64_t len)
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

/* Lock h's range, register it in the table and give it a mapping (a
 * window, or a private copy for a buffered hold); undoes itself on
 * failure.  Caller holds f->lock. */
static int hold_attach(sm_file *f, struct sm_hold *h)
{
	int rc;

	if (f->closing)
		return -EBADF;
	if ((rc = sm_hold_lock(f, h, NULL)) < 0)
		return rc;
	rc = h->buffered ? sm_window_anon(f, h->off, h->len, &h->map)
			 : sm_window_get(f, h->off, h->len, h->write, &h->map);
	if (rc < 0) {
		sm_hold_unlock(f, h, true);
		return rc;
	}
	sm_fault_bind(h->map, f->fd); /* for the fault handler */
	f->nslices++;
	return 0;
}

/* The file's size for a map ending at end.  In table mode, the size last
 * seen when end lies within it, without an fstat (SPEC §12.5): a read slice
 * past a foreign truncation may then be granted, and its first access
 * returns -ENXIO (SPEC §5.3).  Otherwise, and beyond it, fstat. */
static int map_size(sm_file *f, uint64_t end, uint64_t *size)
{
	if (f->tmode) {
		uint64_t c = __atomic_load_n(&f->size_cache, __ATOMIC_RELAXED);
		if (end <= c) {
			*size = c;
			return 0;
		}
	}
	return sm_file_size(f, size);
}

static int do_map(sm_file *f, uint64_t off, uint64_t len, int flags, bool write, sm_slice **out)
{
	uint64_t size, pmask = sm_page_size - 1;
	struct sm_hold *h = NULL;
	sm_slice *s = NULL;
	int rc;

	if ((rc = map_size(f, off + len, &size)) < 0)
		return rc;
	if (off + len > size && !(write && (flags & SM_EXTEND) && !f->memory))
		return -ERANGE;

	uint64_t *dirty = NULL;
	size_t dirty_words = 0;
	if (write) {
		uint64_t pages = ((off & pmask) + len + pmask) >> sm_page_shift;
		dirty_words = (size_t)((pages + 63) / 64);
		if (!(dirty = calloc(2 * dirty_words, sizeof(uint64_t))))
			return -ENOMEM;
	}

	pthread_mutex_lock(&f->lock);
	rc = -ENOMEM;
	if ((s = slice_get(f)) && (h = hold_get(f))) {
		memset(s, 0, sizeof(*s));
		memset(h, 0, sizeof(*h));
		h->f = f;
		h->off = off;
		h->len = len;
		h->write = write;
		h->buffered = write && (flags & SM_BUFFERED);
		h->nolock = flags & SM_NOLOCK;
		h->recover = flags & SM_RECOVER;
		h->refs = 1;
		h->slot = -1;
		if (write) {
			h->dirty_origin = off & ~pmask;
			h->dirty_words = dirty_words;
			h->dirty = dirty;
			h->flight = dirty + dirty_words;
		}
		rc = hold_attach(f, h);
	}
	if (rc < 0) {
		if (s)
			slice_put(f, s);
		if (h)
			hold_put(f, h);
		pthread_mutex_unlock(&f->lock);
		free(dirty);
		return rc;
	}
	pthread_mutex_unlock(&f->lock);
	s->h = h;
	s->f = f;
	s->map = h->map;
	s->off = off;
	s->len = len;
	s->write = write;
	view_init(s);

	/* reserve (and grow) last: see reserve() */
	if ((h->buffered && (rc = sm_hold_load(h, off, len)) < 0) ||
	    (write && (rc = reserve(h, flags)) < 0))
		goto fail;
	if (flags & SM_POPULATE)
		populate(s);
	*out = s;
	return 0;

fail:
	slice_free(s); /* unlocks, unmaps and frees h as well */
	return rc;
}

struct map_args {
	sm_file *f;
	uint64_t off, len;
	int flags;
	bool write;
	sm_slice **out;
};

static int map_once(void *arg)
{
	struct map_args *a = arg;

	return do_map(a->f, a->off, a->len, a->flags, a->write, a->out);
}

/* deadline: for SM_WAIT, struct sm_wait's (0: the file's bound). */
static int map_slice(sm_file *f, uint64_t off, uint64_t len, int flags, bool write,
		     uint64_t deadline, sm_slice **out)
{
	int rc, cs;

	if (out)
		*out = NULL;
	if (!f || !out || (flags & ~MAP_FLAGS))
		return -EINVAL;
	if (!write && (flags & (SM_EXTEND | SM_BUFFERED)))
		return -EINVAL;
	if ((flags & SM_NOLOCK) && (flags & (SM_BUFFERED | SM_WAIT)))
		return -EINVAL; /* coordination memory is shared and never waits */
	if ((rc = sm_check_range(off, len)) < 0)
		return rc;
	if (f->memory && (flags & SM_BUFFERED))
		return -ENOTSUP;
	if (write && f->flags != SM_RDWR)
		return -EBADF;
	if (sm_pid() != f->pid)
		return -ESTALE; /* a fork child must sm_open afresh */
	/* Cancellation (SPEC §2, §3.4): a fail-fast read map makes no call
	 * that is a cancellation point (F_OFD_SETLK, fstat, mmap, munmap, the
	 * table's robust mutex and its F_OFD_GETLK probes are not), so it
	 * skips the cancel-state dance; a write map (fallocate, pread for
	 * SM_BUFFERED) and SM_WAIT (its sleeps) keep it. */
	if (!write && !(flags & SM_WAIT))
		return do_map(f, off, len, flags, write, out);
	cs = sm_nocancel();
	if (flags & SM_WAIT) { /* wait.c: each attempt is a whole do_map */
		struct map_args a = { f, off, len, flags & ~SM_WAIT, write, out };
		struct sm_wait w = { .f = f, .off = off, .len = len, .write = write,
				     .cancel_state = cs, .attempt = map_once, .arg = &a,
				     .table_authority = f->tmode != NULL, .deadline = deadline };
		rc = sm_wait_acquire(&w);
	} else {
		rc = do_map(f, off, len, flags, write, out);
	}
	sm_cancel_restore(cs);
	return rc;
}

int sm_map_read(sm_file *f, uint64_t off, uint64_t len, int flags, sm_slice **out)
{
	return map_slice(f, off, len, flags, false, 0, out);
}

int sm_map_write(sm_file *f, uint64_t off, uint64_t len, int flags, sm_slice **out)
{
	return map_slice(f, off, len, flags, true, 0, out);
}

/* A per-call bound: 0 fails fast (as without SM_WAIT), anything else waits
 * up to timeout_ns whatever flags says about SM_WAIT. */
static int map_timed(sm_file *f, uint64_t off, uint64_t len, int flags, bool write,
		     uint64_t timeout_ns, sm_slice **out)
{
	if (timeout_ns == 0)
		return map_slice(f, off, len, flags & ~SM_WAIT, write, 0, out);
	return map_slice(f, off, len, flags | SM_WAIT, write, sm_deadline_after(timeout_ns), out);
}

int sm_map_read_timed(sm_file *f, uint64_t off, uint64_t len, int flags, uint64_t timeout_ns,
		      sm_slice **out)
{
	return map_timed(f, off, len, flags, false, timeout_ns, out);
}

int sm_map_write_timed(sm_file *f, uint64_t off, uint64_t len, int flags, uint64_t timeout_ns,
		       sm_slice **out)
{
	return map_timed(f, off, len, flags, true, timeout_ns, out);
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
	/* Copy s under f->lock: sm_downgrade changes s->write under it, and a
	 * mode read before the lock could hand out a writable sub-slice of a
	 * slice downgraded meanwhile (then under a read lock). */
	pthread_mutex_lock(&s->f->lock);
	*t = *s;
	t->off = s->off + off;
	t->len = len;
	t->sub = true;
	t->dead = 0;
	view_init(t);
	s->h->refs++;
	if (t->write)
		s->h->wsubs++;
	pthread_mutex_unlock(&s->f->lock);
	*out = t;
	return 0;
}

int sm_downgrade(sm_slice *s)
{
	int rc, cs;

	if (!s || s->sub || s->h->nolock)
		return -EINVAL; /* an SM_NOLOCK slice holds no lock to convert */
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	if (!s->write)
		return -EBADF;
	cs = sm_nocancel();
	pthread_mutex_lock(&s->f->lock);
	if (s->h->wsubs > 0 || (s->h->buffered && sm_dirty_any(s)))
		rc = -EBUSY; /* commit or abort first; release writable subs */
	else if (s->f->tmode && (rc = sm_tmode_downgrade(s->f, s->h)) == 0) {
		sm_wait_bump(s->f->table, s->h->off, s->h->len); /* readers may go (wait.c) */
		s->write = false;
		s->v.flags &= ~SM_VIEW_WRITE;
	} else if (!s->f->tmode && (rc = sm_ranges_downgrade(s->f, s->h)) == 0) {
		sm_table_downgrade(s->f, s->h);
		sm_wait_bump(s->f->table, s->h->off, s->h->len); /* readers may go (wait.c) */
		s->write = false;
		s->v.flags &= ~SM_VIEW_WRITE;
	}
	pthread_mutex_unlock(&s->f->lock);
	sm_cancel_restore(cs);
	return rc;
}

int sm_release(sm_slice *s)
{
	if (!s)
		return -EINVAL;
	/* No cancellation point on the way (an unlock is F_OFD_SETLK, a wake
	 * is a raw futex call, munmap is none, and sm_file_destroy disables
	 * cancellation itself): no cancel-state dance. */
	return slice_free(s);
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

	if (state == SM_MAP_STALE || sm_pid() != s->f->pid)
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

/* --- the dirty-page bitmap --------------------------------------------------
 * One bit per page of a write hold, bit 0 for the page at h->dirty_origin,
 * shared by all views of the hold: the page is the unit of dirtiness
 * (sm_sub(3)).  The inline accessors of safemap.h set bits too (through
 * sm_view.dirty), so every access is a relaxed atomic, a word at a time,
 * reading first so a word that needs no change is not written.
 *
 * A commit first moves the bits it will write to h->flight (take), then
 * writes and flushes those pages, then forgets them or, on failure, makes
 * them dirty again (settle).  Clearing after the write instead would mark
 * clean a write made meanwhile through another view, in another thread
 * (a sub-slice handed to a worker): the bit is already set then, so the
 * write does not set it again, and the commit's clear would lose it. */

/* Set the bits of pages [p0, p1) when some is missing. */
static void bits_set(uint64_t *map, uint64_t p0, uint64_t p1)
{
	while (p0 < p1) {
		uint64_t w = p0 >> 6, mask = sm_word_mask(p0, p1 - 1);

		if ((__atomic_load_n(&map[w], __ATOMIC_RELAXED) & mask) != mask)
			__atomic_fetch_or(&map[w], mask, __ATOMIC_RELAXED);
		p0 = (w + 1) << 6;
	}
}

/* Clear the bits of pages [p0, p1) of map; or them into to (if any). */
static void bits_move(uint64_t *map, uint64_t *to, uint64_t p0, uint64_t p1)
{
	while (p0 < p1) {
		uint64_t w = p0 >> 6, mask = sm_word_mask(p0, p1 - 1), got;

		if (__atomic_load_n(&map[w], __ATOMIC_RELAXED) & mask) {
			got = __atomic_fetch_and(&map[w], ~mask, __ATOMIC_ACQ_REL) & mask;
			if (to && got)
				__atomic_fetch_or(&to[w], got, __ATOMIC_RELAXED);
		}
		p0 = (w + 1) << 6;
	}
}

uint64_t sm_bits_find(const uint64_t *map, uint64_t p, uint64_t end, bool set)
{
	while (p < end) {
		uint64_t w = __atomic_load_n(&map[p >> 6], __ATOMIC_RELAXED);

		w = (set ? w : ~w) >> (p & 63);
		if (w) {
			p += (uint64_t)__builtin_ctzll(w);
			return p < end ? p : end;
		}
		p = ((p >> 6) + 1) << 6;
	}
	return end;
}

void sm_dirty_set(sm_slice *s, uint64_t off, uint64_t len)
{
	bits_set(s->v.dirty, (s->v.dirty_off + off) >> sm_page_shift,
		 ((s->v.dirty_off + off + len - 1) >> sm_page_shift) + 1);
}

void sm_dirty_clear(struct sm_hold *h, uint64_t p0, uint64_t p1)
{
	bits_move(h->dirty, NULL, p0, p1);
}

void sm_dirty_take(struct sm_hold *h, uint64_t p0, uint64_t p1)
{
	bits_move(h->dirty, h->flight, p0, p1);
}

void sm_dirty_settle(struct sm_hold *h, uint64_t p0, uint64_t p1, bool done)
{
	bits_move(h->flight, done ? NULL : h->dirty, p0, p1);
}

bool sm_dirty_any(const sm_slice *s)
{
	uint64_t p0, p1;

	sm_slice_pages(s, &p0, &p1);
	return sm_bits_find(s->h->dirty, p0, p1, true) < p1 ||
	       sm_bits_find(s->h->flight, p0, p1, true) < p1;
}

/* Pages dirty or in flight: not yet known to be committed. */
int sm_dirty_pages(const sm_slice *s)
{
	uint64_t p0, p1, n = 0;

	if (!s)
		return -EINVAL;
	if (!s->h->dirty)
		return 0;
	sm_slice_pages(s, &p0, &p1);
	while (p0 < p1) {
		uint64_t w = p0 >> 6, mask = sm_word_mask(p0, p1 - 1);
		uint64_t bits = __atomic_load_n(&s->h->dirty[w], __ATOMIC_RELAXED) |
				__atomic_load_n(&s->h->flight[w], __ATOMIC_RELAXED);

		n += (uint64_t)__builtin_popcountll(bits & mask);
		p0 = (w + 1) << 6;
	}
	return n > INT32_MAX ? INT32_MAX : (int)n;
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
