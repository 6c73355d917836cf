/* SPDX-License-Identifier: MIT */
/*
 * redo.c - a mapped cache made recoverable by a log: the write-ahead
 * protocol of safemap-recovery(7) in one small program.
 *
 * DIR/data holds PAGES pages of 4 KiB; each page starts with its page LSN
 * (the LSN of the last log record applied to it), then SLOTS slots of 64
 * bytes {u64 key, u32 length, value}.  DIR/log holds one 64-byte record
 * per put, the new slot.  A put maps the key's page as a buffered slice,
 * appends its record, binds the slice to it, changes the page and commits:
 * the log is made durable first, then the page.  Every command opens the
 * store, which recovers first: it replays the log from the redo point into
 * the pages whose page LSN is older, commits, and ends the pass.
 *
 *   redo DIR put KEY VALUE     durable when it returns
 *   redo DIR crash KEY VALUE   as put, but the process is killed once the
 *                              record is durable, before the page is written
 *   redo DIR get KEY           print the value (exit 1 if none)
 *   redo DIR checkpoint        trim the log to the redo point
 *   redo DIR loop ID INC N     N puts (0: until killed) of keys ID, ID+3,
 *                              ... ID+27, value "ID.INC.SEQ", each printed
 *                              as "KEY VALUE" once durable; a checkpoint
 *                              every 50 puts (a crash test drives this)
 *
 * KEY is a number below PAGES * SLOTS (1008): its page and slot follow
 * from it.  Recovery may run while other processes put.  A process killed
 * between binding a page and committing it (the crash command: its put
 * was acknowledged at the log commit) leaves the page held, as a stale
 * holder, until a recovery pass has redone it: whoever finds its page so
 * held recovers, then tries again.  The recovery pass maps pages with
 * SM_RECOVER, which such a fence lets in.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safemap.h"

#define PAGES 16
#define PAGE 4096
#define SLOTS 63
#define SLOT 64
#define VAL (SLOT - 12)

/* A slot, and the log record of a put: key, length, value. */
static void slot_encode(unsigned char *b, uint64_t key, const char *val)
{
	uint32_t n = (uint32_t)strnlen(val, VAL);

	memset(b, 0, SLOT);
	memcpy(b, &key, 8);
	memcpy(b + 8, &n, 4);
	memcpy(b + 12, val, n);
}

static uint64_t page_of(uint64_t key)
{
	return (key % PAGES) * PAGE;
}

static uint64_t slot_of(uint64_t key)
{
	return 8 + (key / PAGES % SLOTS) * SLOT;
}

/* Redo record rec (LSN lsn) into its page, unless the page already has
 * it (a recovery pass: SM_RECOVER). */
static int apply(sm_file *f, const unsigned char *rec, uint64_t lsn)
{
	uint64_t key, page_lsn;
	sm_slice *s;
	int rc;

	memcpy(&key, rec, 8);
	if ((rc = sm_map_write(f, page_of(key), PAGE, SM_BUFFERED | SM_WAIT | SM_RECOVER, &s)) < 0)
		return rc;
	if ((rc = sm_get_u64_le(s, 0, &page_lsn)) == 0 && page_lsn < lsn &&
	    (rc = sm_write(s, slot_of(key), rec, SLOT)) == 0 && (rc = sm_put_u64_le(s, 0, lsn)) == 0)
		rc = sm_commit(s, 0);
	sm_release(s);
	return rc;
}

static int recover(sm_file *f, sm_log *log);

/* Is a dead process's bound change holding the page at off? */
static int stale_holder(sm_file *f, uint64_t off)
{
	sm_holder h[16];
	int n = sm_holders(f, off, PAGE, h, 16);

	for (int i = 0; i < n && i < 16; i++)
		if (h[i].state == SM_STALE)
			return 1;
	return 0;
}

/* Map key's page (write: a buffered slice), waiting for live holders; a
 * page held by a dead process's bound change is recovered first. */
static int map_page(sm_file *f, sm_log *log, uint64_t key, int write, sm_slice **s)
{
	const uint64_t tick = 100 * 1000 * 1000; /* 100 ms */
	int rc;

	for (int tries = 0; tries < 100; tries++) {
		rc = write ? sm_map_write_timed(f, page_of(key), PAGE, SM_BUFFERED, tick, s)
			   : sm_map_read_timed(f, page_of(key), PAGE, 0, tick, s);
		if (rc != -ETIMEDOUT && rc != -EBUSY)
			return rc;
		if (stale_holder(f, page_of(key)) && (rc = recover(f, log)) < 0)
			return rc;
	}
	return rc;
}

/* A put: the record is appended while the page is write-locked, so a
 * page's records are in LSN order. */
static int put(sm_file *f, sm_log *log, uint64_t key, const char *val, int crash)
{
	unsigned char rec[SLOT];
	uint64_t lsn;
	sm_slice *s;
	int rc;

	slot_encode(rec, key, val);
	if ((rc = map_page(f, log, key, 1, &s)) < 0)
		return rc;
	/* -ESTALE: another process's commit and checkpoint discarded the
	 * record before it was bound; append it again */
	do
		rc = sm_log_append(log, rec, SLOT, &lsn);
	while (rc == 0 && (rc = sm_slice_set_lsn(s, log, lsn)) == -ESTALE);
	if (rc == 0 && (rc = sm_write(s, slot_of(key), rec, SLOT)) == 0 &&
	    (rc = sm_put_u64_le(s, 0, lsn)) == 0) {
		if (crash) {
			/* acknowledged (the record is durable), then killed
			 * before the page reaches the file */
			if ((rc = sm_log_commit(log)) == 0)
				raise(SIGKILL);
		} else {
			rc = sm_commit(s, 0);
		}
	}
	sm_release(s);
	return rc;
}

static int recover_once(sm_file *f, sm_log *log);

/* Replay from the redo point, then end the pass with a marker record that
 * every replayed binding lies below.  Another process's checkpoint may trim
 * the log between our redo point and our replay, or past our marker
 * (-ESTALE: what it trimmed is in the file and synced): run it again. */
static int recover(sm_file *f, sm_log *log)
{
	int rc;

	for (int tries = 0; (rc = recover_once(f, log)) == -ESTALE && tries < 100; tries++)
		;
	return rc;
}

static int recover_once(sm_file *f, sm_log *log)
{
	uint64_t from, lsn, end;
	sm_log_iter *it;
	const void *p;
	size_t n;
	int rc;

	if ((rc = sm_redo_lsn(f, log, &from)) < 0 || (rc = sm_log_iter_open(log, from, &it)) < 0)
		return rc;
	while ((rc = sm_log_iter_next_ptr(it, &p, &n, &lsn)) == 1) {
		unsigned char rec[SLOT];
		if (n != SLOT)
			continue; /* a marker */
		memcpy(rec, p, SLOT);
		if ((rc = apply(f, rec, lsn)) < 0)
			break;
	}
	sm_log_iter_close(it);
	if (rc < 0)
		return rc;
	if ((rc = sm_log_append(log, "R", 1, &end)) < 0 || (rc = sm_log_commit(log)) < 0)
		return rc;
	/* -EINVAL: another process's checkpoint trimmed past our marker (the
	 * marker is no record any more): run the pass again */
	rc = sm_redo_done(f, log, end);
	return rc == -EINVAL ? -ESTALE : rc;
}

static int get(sm_file *f, sm_log *log, uint64_t key)
{
	unsigned char b[SLOT];
	uint64_t k;
	uint32_t n;
	sm_slice *s;
	int rc;

	if ((rc = map_page(f, log, key, 0, &s)) < 0)
		return rc;
	rc = sm_read(s, slot_of(key), b, SLOT);
	sm_release(s);
	if (rc < 0)
		return rc;
	memcpy(&k, b, 8);
	memcpy(&n, b + 8, 4);
	if (k != key || n == 0 || n > VAL)
		return 1;
	printf("%.*s\n", (int)n, (const char *)b + 12);
	return 0;
}

/* Puts of keys id, id + 3, ..., each acknowledged on stdout once durable. */
static int loop(sm_file *f, sm_log *log, unsigned id, const char *inc, long n)
{
	char val[VAL];
	uint64_t r;
	int rc = 0;

	for (long seq = 1; n == 0 || seq <= n; seq++) {
		unsigned key = id + 3 * (unsigned)(seq % 10);
		snprintf(val, sizeof(val), "%u.%s.%ld", id, inc, seq);
		if ((rc = put(f, log, key, val, 0)) < 0)
			break;
		printf("%u %s\n", key, val);
		fflush(stdout);
		if (seq % 50 == 0 &&
		    ((rc = sm_redo_lsn(f, log, &r)) < 0 || (rc = sm_log_trim(log, r)) < 0))
			break;
	}
	return rc;
}

int main(int argc, char **argv)
{
	sm_options o = { .size = sizeof(o), .create_size = (uint64_t)PAGES * PAGE };
	char dpath[4096], lpath[4096];
	uint64_t key = 0, r;
	sm_file *f;
	sm_log *log;
	int rc;

	if (argc < 3 || (argc > 3 && (key = strtoull(argv[3], NULL, 10)) >= PAGES * SLOTS)) {
		fprintf(stderr, "usage: redo DIR put|crash KEY VALUE | get KEY | checkpoint | "
				"loop ID INC N\n");
		return 2;
	}
	snprintf(dpath, sizeof(dpath), "%s/data", argv[1]);
	snprintf(lpath, sizeof(lpath), "%s/log", argv[1]);
	if ((rc = sm_open(dpath, SM_RDWR | SM_CREATE, &o, &f)) < 0 ||
	    (rc = sm_log_open(lpath, SM_RDWR | SM_CREATE, NULL, &log)) < 0 ||
	    (rc = recover(f, log)) < 0) {
		fprintf(stderr, "redo: open: %s\n", sm_strerror(rc));
		return 1;
	}
	if (strcmp(argv[2], "put") == 0 && argc == 5)
		rc = put(f, log, key, argv[4], 0);
	else if (strcmp(argv[2], "crash") == 0 && argc == 5)
		rc = put(f, log, key, argv[4], 1);
	else if (strcmp(argv[2], "get") == 0 && argc == 4)
		rc = get(f, log, key);
	else if (strcmp(argv[2], "loop") == 0 && argc == 6)
		rc = loop(f, log, (unsigned)key, argv[4], strtol(argv[5], NULL, 10));
	else if (strcmp(argv[2], "checkpoint") == 0 && argc == 3)
		rc = (rc = sm_redo_lsn(f, log, &r)) < 0 ? rc : sm_log_trim(log, r);
	else
		rc = -EINVAL;
	if (rc < 0)
		fprintf(stderr, "redo: %s: %s\n", argv[2], sm_strerror(rc));
	if (sm_log_close(log) < 0 || sm_close(f) < 0)
		rc = -EIO;
	return rc < 0 ? 1 : rc;
}
