/* SPDX-License-Identifier: MIT */
/*
 * log_trim.c - retention: sm_log_trim discards the records below a trim
 * point and gives their disk space back (SPEC §13 "Retention").
 *
 * How the space goes back: hole punching (fallocate PUNCH_HOLE |
 * KEEP_SIZE) in the one log file.  An LSN is a byte offset, and punching
 * keeps every offset where it is, so nothing is renumbered or copied, a
 * record slice or iterator elsewhere in the file is never moved under, and
 * the file stays one file (one lock table, one header, one fd per handle).
 * Segment files would give space back on filesystems without hole
 * punching too, but would turn every LSN into a (segment, offset) lookup,
 * every iterator into a chain of opens, and the header into a directory
 * that must itself be made crash-safe; every filesystem a log is meant for
 * (ext4, xfs, btrfs, tmpfs) punches holes.  Where it is not supported the
 * records are still discarded (the trim point moves, -ESTALE as anywhere),
 * only the space stays.  What is kept below the trim point: the partial
 * 4 KiB block under it (less than 4 MiB, as the contract allows), plus
 * whatever is under a live slice or iterator window (see below) until a
 * later trim.
 *
 * Steps, each safe to be killed after (one trim at a time: the trim mutex,
 * a kernel lock byte plus its in-process half):
 *   1. check lsn (a record's LSN, by its CRC which covers the LSN, or the
 *      committed tail); nothing is written;
 *   2. write the trim point in the FIRST header slot and fdatasync: from
 *      now on every process's iterators see -ESTALE below it, and the
 *      trim survives a crash.  A kill before the flush leaves the slot in
 *      the page cache (the same for every process); a machine crash
 *      before it reached the disk forgets the trim, and nothing was
 *      punched yet;
 *   3. punch [PUNCHED slot, trim point rounded down to a block) in chunks,
 *      each under a write lock on its bytes taken without waiting: a
 *      chunk that meets a live slice or iterator window (read-locked) is
 *      halved until it does not, and the trim stops below the first
 *      locked block (the rest waits for a later trim, which starts from
 *      the PUNCHED slot).  Punched bytes read as zeros, which no reader
 *      below the trim point mistakes for a record: it looks at the slot
 *      again and returns -ESTALE;
 *   4. write the PUNCHED slot (advisory: a kill before it only makes the
 *      next trim punch a hole again, which costs nothing).
 * Open and recovery read from the committed tail (recovery) or the trim
 * point (iterators from 0) on, so they cost what is retained.
 *
 * Bindings (a later addition: slices bound to log records for write-ahead
 * logging) must never lose a record they need: trim_floor() is the one
 * place that says how far a trim may go; trim clamps to it.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "log.h"

#define BLOCK ((uint64_t)4096)
/* Punch at most this much per write lock (so a held block costs a few
 * halvings, not one per block). */
#define PUNCH_CHUNK ((uint64_t)64 << 20)

/*
 * The lowest LSN something still needs, or UINT64_MAX: trim never moves
 * the trim point above it.  Bindings (redo.c: buffered slices bound to the
 * records that describe their changes) are announced in the bindings area
 * of the log's header page, so every process's trim sees every process's
 * bindings, live or dead, without a lock anyone could hold: the lowest
 * first LSN of every held entry.  A header page that is no longer mapped
 * (the log was truncated under us) vouches for nothing: 0, no trim.
 */
static uint64_t trim_floor(sm_log *l)
{
	uint64_t floor = UINT64_MAX;

	for (unsigned i = 0; i < BIND_SLOTS; i++) {
		uint64_t st = le64toh(__atomic_load_n(smlog_bind_field(l, i, BE_STATE), __ATOMIC_SEQ_CST));
		uint64_t first = le64toh(__atomic_load_n(smlog_bind_field(l, i, BE_FIRST), __ATOMIC_SEQ_CST));
		if (st == BIND_HELD && first < floor)
			floor = first;
	}
	return *l->hdr->v.state ? 0 : floor;
}

/* Give back [PUNCHED slot, first rounded down to a block): as far as no
 * slice or iterator window holds it.  Best effort: the records are already
 * discarded, only their space is at stake. */
static int punch_below(sm_log *l, uint64_t first)
{
	uint64_t at, end = first & ~(BLOCK - 1);
	int rc;

	if ((rc = smlog_slot_read(l, SLOT_PUNCHED, &at)) < 0)
		return rc;
	if (at < LOG_HDR || (at & (BLOCK - 1)))
		at = LOG_HDR; /* not ours: start over (punching a hole twice is harmless) */
	while (at < end) {
		uint64_t n = end - at < PUNCH_CHUNK ? end - at : PUNCH_CHUNK;
		sm_range *r;

		while ((rc = sm_lock(l->f, at, n, SM_LOCK_WRITE, "sm_log_trim", &r)) == -EBUSY &&
		       n > BLOCK)
			n = (n / 2 + BLOCK - 1) & ~(BLOCK - 1);
		if (rc < 0)
			break; /* held (or no lock): the rest waits for a later trim */
		rc = sm_sys.fallocate(l->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at,
				      (off_t)n);
		rc = rc < 0 ? -errno : 0;
		(void)sm_unlock(r);
		if (rc < 0)
			break;
		at += n;
	}
	if (rc == -EBUSY || rc == -EOPNOTSUPP)
		rc = 0; /* deferred, or a filesystem without holes: records are gone */
	if (at > LOG_HDR) {
		int rc2 = smlog_slot_write(l, SLOT_PUNCHED, at);
		if (rc == 0)
			rc = rc2;
	}
	return rc;
}

static int log_trim(sm_log *l, uint64_t lsn)
{
	struct window w = { 0 };
	uint64_t first, c, upto, floor;
	int rc;

	if (!l)
		return -EINVAL;
	if ((rc = smlog_writable(l)) < 0)
		return rc;
	if ((rc = smlog_lock(l, &l->trim_mu, MUTEX_TRIM)) < 0)
		return rc;
	if ((rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0 ||
	    (rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0)
		goto out;
	if (lsn <= first) {
		/* Nothing to discard (a concurrent checkpoint got here first):
		 * only space an earlier trim had to leave. */
		rc = punch_below(l, first);
		goto out;
	}
	if ((lsn & 7) || lsn > c) {
		rc = -EINVAL;
		goto out;
	}
	/* A record's LSN: the record there is whole and its CRC covers its
	 * LSN, so the bytes of a record elsewhere never pass for one. */
	if (lsn < c) {
		rc = smlog_scan_from(l, &w, lsn, c, &upto);
		smlog_window_drop(&w);
		if (rc < 0) {
			rc = rc == -EBADMSG ? -EINVAL : rc;
			goto out;
		}
	}
	/* Announce the target before reading the bindings: a bind below it
	 * either is seen here or sees this and fails (-ESTALE). */
	__atomic_store_n((uint64_t *)(void *)(l->hdr->v.base + WORD_TRIMMING), htole64(lsn),
			 __ATOMIC_SEQ_CST);
	if ((floor = trim_floor(l)) < lsn) {
		lsn = floor;
		/* a binding's first LSN is a record the binder named: check it
		 * (a bad one stops the trim, it never cuts a record in two) */
		if (lsn > first && lsn < c) {
			rc = smlog_scan_from(l, &w, lsn, c, &upto);
			smlog_window_drop(&w);
			if (rc < 0) {
				rc = rc == -EBADMSG ? 0 : rc;
				goto out;
			}
		}
	}
	if (lsn <= first) {
		rc = 0;
		goto out;
	}
	/* Durable before any byte goes: a crash never brings back a record
	 * that was reported gone, nor leaves a hole in what is retained. */
	if ((rc = smlog_slot_write(l, SLOT_FIRST, lsn)) < 0 || (rc = smlog_sync(l)) < 0)
		goto out;
	rc = punch_below(l, lsn);
out:
	__atomic_store_n((uint64_t *)(void *)(l->hdr->v.base + WORD_TRIMMING), 0, __ATOMIC_SEQ_CST);
	smlog_unlock(l, &l->trim_mu, MUTEX_TRIM);
	return rc;
}

int sm_log_trim(sm_log *l, uint64_t lsn)
{
	int old = sm_nocancel();
	int rc = log_trim(l, lsn);

	sm_cancel_restore(old);
	return rc;
}
