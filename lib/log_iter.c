/* SPDX-License-Identifier: MIT */
/*
 * log_iter.c - iterators over a log's committed records (SPEC §13): each
 * record checked (its CRC-32C) once per window before any of the window's
 * records is handed out, as a read sub-slice or a pointer into the window.
 * An iterator below the trim point gets -ESTALE (log_trim.c moves it).
 * Calls into log.c (slots, window mapping and scanning), never the other
 * way.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>

#include "log.h"

struct sm_log_iter {
	sm_log *log;
	uint64_t pos;    /* next record's LSN */
	uint64_t end;    /* committed tail last read */
	uint64_t valid;  /* records in [pos, valid) are checked */
	struct window w;
};

static uint32_t get32le(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t align8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

/* Is pos below the trim point?  The fast answer, from one load of the
 * mapped slot: a trim point at or below pos (or a torn load that looks so,
 * which is the answer from just before the trim) needs nothing more; one
 * above it is read again whole.  1 below, 0 not, or a negative errno. */
static inline int below_first(const sm_log *l, uint64_t pos)
{
	const uint64_t *p = (const uint64_t *)(const void *)(l->hdr->v.base + SLOT_FIRST);
	uint64_t first;
	int rc;

	if (le64toh(__atomic_load_n(p, __ATOMIC_ACQUIRE)) <= pos)
		return 0;
	if ((rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0)
		return rc;
	return pos < first;
}

/* An error met reading the record at pos: -ESTALE if a trim discarded it
 * meanwhile (its bytes may be punched: zeros), else rc. */
static int stale_or(const sm_log *l, uint64_t pos, int rc)
{
	int b = below_first(l, pos);

	return b > 0 ? -ESTALE : b < 0 ? b : rc;
}

static int log_iter_open(sm_log *l, uint64_t from, sm_log_iter **out)
{
	sm_log_iter *it;
	uint64_t c, first;
	int rc;

	if (!l || !out)
		return -EINVAL;
	if ((rc = smlog_forked(l)) < 0)
		return rc;
	if ((rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0 ||
	    (rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0)
		return rc;
	if (from == 0)
		from = first;
	if (from < LOG_HDR)
		return -EINVAL; /* below the first-ever record */
	if (from < first)
		return -ESTALE; /* trimmed (no boundary check: the bytes are gone) */
	if ((from & 7) || from > c)
		return -EINVAL;
	if (!(it = calloc(1, sizeof(*it))))
		return -ENOMEM;
	it->log = l;
	it->pos = it->valid = from;
	it->end = c;
	/* A record's LSN, or the committed tail: check the record is there
	 * (a trim since the slot was read may have punched it: -ESTALE). */
	if (from < c && (rc = smlog_scan_from(l, &it->w, from, c, &it->valid)) < 0) {
		smlog_window_drop(&it->w);
		free(it);
		rc = stale_or(l, from, rc);
		return rc == -EBADMSG ? -EINVAL : rc;
	}
	__atomic_fetch_add(&l->iters, 1, __ATOMIC_ACQ_REL);
	*out = it;
	return 0;
}

/* Bring the record at it->pos into the window, checked: 1, 0 at the
 * committed end (read again when reached), or a negative errno. */
static inline int iter_ready(sm_log_iter *it)
{
	int rc;

	if ((rc = below_first(it->log, it->pos)) != 0)
		return rc > 0 ? -ESTALE : rc;
	if (it->pos >= it->end) {
		if ((rc = smlog_slot_read(it->log, SLOT_COMMITTED, &it->end)) < 0)
			return rc;
		if (it->pos >= it->end)
			return 0;
	}
	if (it->pos >= it->valid &&
	    (rc = smlog_scan_from(it->log, &it->w, it->pos, it->end, &it->valid)) < 0)
		return stale_or(it->log, it->pos, rc);
	return 1;
}

static int log_iter_next(sm_log_iter *it, sm_slice **rec, uint64_t *lsn)
{
	uint32_t len;
	int rc;

	if (!it || !rec)
		return -EINVAL;
	if ((rc = iter_ready(it)) <= 0)
		return rc;
	/* Checked, and inside the window. */
	if ((rc = sm_get_u32_le(it->w.s, it->pos - it->w.beg, &len)) < 0 ||
	    (rc = sm_sub(it->w.s, it->pos - it->w.beg + FRAME, len, rec)) < 0)
		return rc;
	if (lsn)
		*lsn = it->pos;
	it->pos += align8((uint64_t)FRAME + len);
	return 1;
}

/*
 * The next record as a pointer into the iterator's window: no slice, no
 * lock, no allocation per record (the window's read slice, mapped and
 * checked once per ITER_WINDOW, keeps the bytes mapped and read-locked).
 * The window is under the fault guard like any slice: if the log is
 * truncated under it, its bytes read as zeros, and the next call (which
 * looks at the window's state) returns the error.
 */
static int log_iter_next_ptr(sm_log_iter *it, const void **rec, size_t *len, uint64_t *lsn)
{
	const unsigned char *fr;
	uint32_t n;
	int rc;

	if (!it || !rec || !len)
		return -EINVAL;
	if (it->w.s && *it->w.s->v.state && (rc = sm_slice_error(it->w.s)) < 0)
		return rc;
	if ((rc = iter_ready(it)) <= 0)
		return rc;
	/* Checked, and inside the window. */
	fr = it->w.s->v.base + (it->pos - it->w.beg);
	n = get32le(fr);
	*rec = fr + FRAME;
	*len = n;
	if (lsn)
		*lsn = it->pos;
	it->pos += align8((uint64_t)FRAME + n);
	return 1;
}

int sm_log_iter_close(sm_log_iter *it)
{
	if (!it)
		return -EINVAL;
	smlog_window_drop(&it->w);
	__atomic_fetch_sub(&it->log->iters, 1, __ATOMIC_ACQ_REL);
	free(it);
	return 0;
}

int sm_log_iter_open(sm_log *l, uint64_t from, sm_log_iter **out)
{
	int old = sm_nocancel();
	int rc = log_iter_open(l, from, out);

	sm_cancel_restore(old);
	return rc;
}

int sm_log_iter_next(sm_log_iter *it, sm_slice **rec, uint64_t *lsn)
{
	int old = sm_nocancel();
	int rc = log_iter_next(it, rec, lsn);

	sm_cancel_restore(old);
	return rc;
}

static __attribute__((noinline)) int next_ptr_slow(sm_log_iter *it, const void **rec, size_t *len,
						   uint64_t *lsn)
{
	int old = sm_nocancel();
	int rc = log_iter_next_ptr(it, rec, len, lsn);

	sm_cancel_restore(old);
	return rc;
}

int sm_log_iter_next_ptr(sm_log_iter *it, const void **rec, size_t *len, uint64_t *lsn)
{
	/* A record already checked, in a window that lost no page, at or past
	 * the trim point (one load of the mapped slot; anything else, a torn
	 * load included, takes the slow path): no system call ahead, so no
	 * need to defer cancellation, and no registers to save (the rest is a
	 * tail call). */
	if (__builtin_expect(it && rec && len, 1)) {
		uint64_t pos = it->pos;
		const sm_log *l = it->log;
		if (pos < it->valid && it->w.s && *it->w.s->v.state == 0 &&
		    le64toh(__atomic_load_n((const uint64_t *)(const void *)(l->hdr->v.base +
									     SLOT_FIRST),
					    __ATOMIC_ACQUIRE)) <= pos) {
			const unsigned char *fr = it->w.s->v.base + (pos - it->w.beg);
			uint32_t n = get32le(fr);
			*rec = fr + FRAME;
			*len = n;
			if (lsn)
				*lsn = pos;
			it->pos = pos + align8((uint64_t)FRAME + n);
			return 1;
		}
	}
	return next_ptr_slow(it, rec, len, lsn);
}
