/* SPDX-License-Identifier: MIT */
/*
 * kvstore.c - a small storage engine: a mapped data file made recoverable
 * by a write-ahead log, with safemap doing the ordering.
 *
 * README
 *
 * Files.  DIR/data: page 0 is a header (magic, number of data pages); data
 * pages 1..N of 4 KiB each start with their page LSN (the LSN of the last
 * log record applied to the page), then 31 slots of 128 bytes {u64 key,
 * u32 used|length, u32 checksum, value[100]}.  A key lives in the page its
 * hash names, in the first free slot probing from a second hash.  DIR/log
 * is an sm_log: one record {u64 key, u32 length, value} per put, plus
 * one-byte markers that end recovery passes.
 *
 * Put (durable when it returns).  Map the key's page as a buffered write
 * slice (write-locked: the page's records are appended in LSN order),
 * append the record, bind the slice to it (sm_slice_set_lsn), change the
 * slot and the page LSN, commit with SM_ASYNC.  The commit first commits
 * the log up to the record (durable and visible to every process; the
 * flush is shared by every thread and process committing at the same
 * time: group commit), then writes the page into the page cache, where
 * every process's gets see it; it is not yet synced.  The binding stays
 * held, in every process's view, until a later sync of the data file: the
 * log keeps the record until then, also if this process dies or the machine
 * loses power.  A bind that meets a trim of the record (another process's
 * checkpoint, after a group commit made it durable) appends it again.
 *
 * Checkpoint (every 1000 puts of a handle, and at close).  An SM_SYNC
 * commit of the file (the header page, unchanged) syncs it, which ends this
 * process's bindings; then sm_redo_lsn gives the lowest record any process
 * still needs, and sm_log_trim discards the log below it.
 *
 * Recovery (at open, and whenever a slice meets -EBUSY from a range a dead
 * process left bound).  Commit the log (records a dead process appended
 * become visible), sm_redo_lsn, iterate from there, and apply each record
 * to its page unless the page LSN shows it is there already (page LSNs make
 * replay idempotent: pages of live processes are skipped); the slices are
 * mapped with SM_RECOVER, which alone may enter the ranges a dead process
 * left bound.  Then sync the data file (it also makes durable the pages a
 * dead process wrote with SM_ASYNC but never synced), append a marker, and
 * sm_redo_done with the marker's LSN: the dead processes' bindings, all
 * below it, stop counting, and their ranges open again.  Recovery runs
 * while other processes put: they skip the fenced pages' records by LSN.
 *
 * Gets map the page for reading.  The data file uses table-authority mode
 * (SM_OPT_TABLE_LOCKS) by default: an uncontended slice takes no system
 * call, so a get costs a few hundred nanoseconds instead of a lock, a map
 * and an unlock in the kernel; every process using the store must then use
 * that mode (kv_options.kernel_locks selects kernel locks for all).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kvstore.h"
#include "safemap.h"

/* Recovery's slices may enter ranges a dead process left bound. */
#ifdef SM_RECOVER
#define KV_RECOVER SM_RECOVER
#else
#define KV_RECOVER 0
#endif

#define PAGE 4096
#define HDR 64
#define SLOT 128
#define SLOTS 31
#define USED 0x80000000u
#define REC_HDR 12
#define MAGIC 0x31305453564b4d53ull /* "SMKVST01" */

struct kv_store {
	sm_file *f;
	sm_log *log;
	uint64_t pages;
	unsigned every;
	atomic_ulong puts;
	atomic_ulong recoveries, replayed;
	pthread_mutex_t rmu; /* one recovery pass of this handle at a time */
};

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint32_t fnv(uint32_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static uint32_t slot_sum(uint64_t key, uint32_t len, const void *val)
{
	uint32_t h = fnv(2166136261u, &key, 8);

	h = fnv(h, &len, 4);
	return fnv(h, val, len);
}

static uint64_t page_off(const kv_store *kv, uint64_t key)
{
	return (1 + mix(key) % kv->pages) * PAGE;
}

static unsigned first_slot(uint64_t key)
{
	return (unsigned)((mix(key) >> 40) % SLOTS);
}

/* The slot of key in page slice s, or the first free one (*found 0);
 * -ENOSPC when neither. */
static int find(const sm_slice *s, uint64_t key, unsigned *slot, int *found)
{
	unsigned i = first_slot(key);

	for (unsigned n = 0; n < SLOTS; n++, i = (i + 1) % SLOTS) {
		uint64_t off = HDR + (uint64_t)i * SLOT, k;
		uint32_t meta;
		int rc;
		if ((rc = sm_get_u32_le(s, off + 8, &meta)) < 0)
			return rc;
		if (!(meta & USED)) {
			*slot = i;
			*found = 0;
			return 0;
		}
		if ((rc = sm_get_u64_le(s, off, &k)) < 0)
			return rc;
		if (k == key) {
			*slot = i;
			*found = 1;
			return 0;
		}
	}
	return -ENOSPC;
}

/* Set slot i of page slice s to (key, val) and the page LSN to lsn. */
static int write_slot(sm_slice *s, unsigned i, uint64_t key, const void *val, uint32_t len,
		      uint64_t lsn)
{
	unsigned char b[SLOT] = { 0 };
	uint32_t meta = USED | len, sum = slot_sum(key, len, val);
	int rc;

	memcpy(b, &key, 8); /* little-endian hosts (the log record is too) */
	memcpy(b + 8, &meta, 4);
	memcpy(b + 12, &sum, 4);
	memcpy(b + 16, val, len);
	if ((rc = sm_write(s, HDR + (uint64_t)i * SLOT, b, SLOT)) < 0)
		return rc;
	return sm_put_u64_le(s, 0, lsn);
}

/* Apply the put record rec (n bytes, LSN lsn) to its page unless the page
 * already has it (recovery).  *did says whether it did. */
static int apply(kv_store *kv, const unsigned char *rec, size_t n, uint64_t lsn, int *did)
{
	uint64_t key, page_lsn;
	uint32_t len;
	unsigned i;
	int found, rc;
	sm_slice *s;

	*did = 0;
	memcpy(&key, rec, 8);
	memcpy(&len, rec + 8, 4);
	if (len > KV_VAL_MAX || n != REC_HDR + len)
		return -EUCLEAN; /* not a put of this engine */
	rc = sm_map_write(kv->f, page_off(kv, key), PAGE, SM_BUFFERED | SM_WAIT | KV_RECOVER, &s);
	if (rc < 0)
		return rc;
	if ((rc = sm_get_u64_le(s, 0, &page_lsn)) == 0 && page_lsn < lsn &&
	    (rc = find(s, key, &i, &found)) == 0 &&
	    (rc = write_slot(s, i, key, rec + REC_HDR, len, lsn)) == 0 &&
	    (rc = sm_commit(s, SM_ASYNC)) == 0) /* synced once, at the pass's end */
		*did = 1;
	sm_release(s);
	return rc;
}

/* Sync the data file: the header page rewritten as it is, SM_SYNC. */
static int sync_file(kv_store *kv, int mflags)
{
	uint64_t magic;
	sm_slice *s;
	int rc;

	if ((rc = sm_map_write(kv->f, 0, PAGE, SM_BUFFERED | SM_WAIT | mflags, &s)) < 0)
		return rc;
	if ((rc = sm_get_u64_le(s, 0, &magic)) == 0 && (rc = sm_put_u64_le(s, 0, magic)) == 0)
		rc = sm_commit(s, 0);
	sm_release(s);
	return rc;
}

static int recover_once(kv_store *kv)
{
	uint64_t from, lsn, end;
	unsigned long applied = 0;
	sm_log_iter *it;
	const void *p;
	size_t n;
	int rc, did;

	/* what dead processes appended becomes visible; then the redo point
	 * (it also notes which binders are dead now, for sm_redo_done) */
	if ((rc = sm_log_commit(kv->log)) < 0 || (rc = sm_redo_lsn(kv->f, kv->log, &from)) < 0 ||
	    (rc = sm_log_iter_open(kv->log, from, &it)) < 0)
		return rc;
	while ((rc = sm_log_iter_next_ptr(it, &p, &n, &lsn)) == 1) {
		if (n < REC_HDR)
			continue; /* a marker */
		if ((rc = apply(kv, p, n, lsn, &did)) < 0)
			break;
		applied += (unsigned long)did;
	}
	sm_log_iter_close(it);
	if (rc < 0)
		return rc;
	atomic_fetch_add(&kv->replayed, applied);
	if ((rc = sync_file(kv, KV_RECOVER)) < 0 || (rc = sm_log_append(kv->log, "R", 1, &end)) < 0 ||
	    (rc = sm_log_commit(kv->log)) < 0)
		return rc;
	/* -EINVAL: a checkpoint trimmed past the marker meanwhile, which it
	 * does only when no dead binding below it was left: pass again */
	rc = sm_redo_done(kv->f, kv->log, end);
	return rc == -EINVAL ? -ESTALE : rc;
}

int kv_recover(kv_store *kv)
{
	int rc;

	if (!kv)
		return -EINVAL;
	pthread_mutex_lock(&kv->rmu);
	/* another process's checkpoint may trim between our redo point and
	 * our replay (-ESTALE: what it trimmed is synced): start again */
	for (int tries = 0; (rc = recover_once(kv)) == -ESTALE && tries < 100; tries++)
		;
	pthread_mutex_unlock(&kv->rmu);
	atomic_fetch_add(&kv->recoveries, 1);
	return rc;
}

/* Is part of page off held by a dead process's bound change (listed as a
 * stale holder: it stays until a recovery pass redoes it)? */
static bool stale_holder(kv_store *kv, uint64_t off)
{
	sm_holder h[16];
	int n = sm_holders(kv->f, off, PAGE, h, 16);

	for (int i = 0; i < n && i < 16; i++)
		if (h[i].state == SM_STALE)
			return true;
	return false;
}

/* Map page off (write: a buffered slice), waiting for live holders up to
 * 10 s in steps of 50 ms; a page a dead process left bound is -EBUSY at
 * once, for the caller to recover (waiting would only end at the bound:
 * nobody else may run that recovery). */
static int map_page(kv_store *kv, uint64_t off, bool write, sm_slice **s)
{
	const uint64_t step = 50 * 1000 * 1000;
	int rc = -ETIMEDOUT;

	for (int t = 0; t <= 200; t++) {
		uint64_t wait = t ? step : 0; /* first fail-fast, then bounded waits */
		rc = write ? sm_map_write_timed(kv->f, off, PAGE, SM_BUFFERED, wait, s)
			   : sm_map_read_timed(kv->f, off, PAGE, 0, wait, s);
		if (rc != -EBUSY && rc != -ETIMEDOUT)
			return rc;
		if (stale_holder(kv, off))
			return -EBUSY;
	}
	return rc;
}

static int put_once(kv_store *kv, uint64_t key, const void *val, uint32_t len,
		    void (*after_log)(void *), void *arg)
{
	unsigned char rec[REC_HDR + KV_VAL_MAX];
	uint64_t lsn;
	unsigned i;
	int found, rc;
	sm_slice *s;

	if ((rc = map_page(kv, page_off(kv, key), true, &s)) < 0)
		return rc;
	if ((rc = find(s, key, &i, &found)) < 0)
		goto out;
	memcpy(rec, &key, 8);
	memcpy(rec + 8, &len, 4);
	memcpy(rec + REC_HDR, val, len);
	/* -ESTALE: another thread's or process's commit made the record
	 * durable and a checkpoint discarded it before the bind */
	do
		rc = sm_log_append(kv->log, rec, REC_HDR + len, &lsn);
	while (rc == 0 && (rc = sm_slice_set_lsn(s, kv->log, lsn)) == -ESTALE);
	if (rc < 0 || (rc = write_slot(s, i, key, val, len, lsn)) < 0)
		goto out;
	if (after_log) {
		if ((rc = sm_log_commit(kv->log)) < 0)
			goto out;
		after_log(arg);
	}
	/* the log first (group commit), then the page into the page cache */
	rc = sm_commit(s, SM_ASYNC);
out:
	/* after SM_ASYNC the binding outlives the slice until a sync; after
	 * a failure the change is dropped (never acknowledged) */
	sm_release(s);
	return rc;
}

int kv_put_hook(kv_store *kv, uint64_t key, const void *val, size_t len,
		void (*after_log)(void *arg), void *arg)
{
	int rc;

	if (!kv || (!val && len) || len > KV_VAL_MAX)
		return -EINVAL;
	/* -EBUSY: a dead process left the page bound; recover, then retry */
	for (int tries = 0; (rc = put_once(kv, key, val, (uint32_t)len, after_log, arg)) == -EBUSY &&
			    tries < 5;
	     tries++)
		if ((rc = kv_recover(kv)) < 0)
			return rc;
	if (rc == 0 && (atomic_fetch_add(&kv->puts, 1) + 1) % kv->every == 0)
		(void)kv_checkpoint(kv); /* the put is durable: a failed checkpoint
					  * only keeps the log longer */
	return rc;
}

int kv_put(kv_store *kv, uint64_t key, const void *val, size_t len)
{
	return kv_put_hook(kv, key, val, len, NULL, NULL);
}

static int get_once(kv_store *kv, uint64_t key, void *val, size_t cap, size_t *len)
{
	uint32_t meta;
	unsigned i;
	int found, rc;
	sm_slice *s;

	if ((rc = map_page(kv, page_off(kv, key), false, &s)) < 0)
		return rc;
	if ((rc = find(s, key, &i, &found)) == -ENOSPC)
		rc = found = 0; /* a full page without it */
	if (rc == 0 && found) {
		uint64_t off = HDR + (uint64_t)i * SLOT;
		if ((rc = sm_get_u32_le(s, off + 8, &meta)) == 0) {
			size_t n = meta & ~USED;
			*len = n;
			rc = n > KV_VAL_MAX ? -EUCLEAN : n > cap ? -ERANGE :
			     n ? sm_read(s, off + 16, val, n) : 0;
			if (rc == 0)
				rc = 1;
		}
	}
	sm_release(s);
	return rc;
}

int kv_get(kv_store *kv, uint64_t key, void *val, size_t cap, size_t *len)
{
	int rc;

	if (!kv || !len || (!val && cap))
		return -EINVAL;
	for (int tries = 0; (rc = get_once(kv, key, val, cap, len)) == -EBUSY && tries < 5; tries++)
		if ((rc = kv_recover(kv)) < 0)
			return rc;
	return rc;
}

int kv_checkpoint(kv_store *kv)
{
	uint64_t r;
	int rc;

	if (!kv)
		return -EINVAL;
	/* an SM_SYNC commit syncs the file: this process's bindings end */
	if ((rc = sync_file(kv, 0)) < 0 || (rc = sm_redo_lsn(kv->f, kv->log, &r)) < 0)
		return rc;
	return sm_log_trim(kv->log, r);
}

/* The header: written by the first opener, checked by the others. */
static int header(kv_store *kv, uint64_t pages)
{
	uint64_t magic, n;
	sm_slice *s;
	int rc;

	if ((rc = sm_map_write(kv->f, 0, PAGE, SM_BUFFERED | SM_WAIT, &s)) < 0)
		return rc;
	if ((rc = sm_get_u64_le(s, 0, &magic)) < 0 || (rc = sm_get_u64_le(s, 8, &n)) < 0)
		goto out;
	if (magic == 0) {
		n = pages;
		if ((rc = sm_put_u64_le(s, 0, MAGIC)) < 0 || (rc = sm_put_u64_le(s, 8, n)) < 0 ||
		    (rc = sm_commit(s, 0)) < 0)
			goto out;
	} else if (magic != MAGIC || n == 0) {
		rc = -EINVAL; /* not a store of this engine */
		goto out;
	}
	kv->pages = n;
out:
	sm_release(s);
	return rc;
}

int kv_open(const char *dir, const struct kv_options *opt, kv_store **out)
{
	struct kv_options d = { 0 };
	char dpath[4096], lpath[4096];
	sm_options o = { .size = sizeof(o) };
	struct stat sb;
	kv_store *kv;
	int rc;

	if (!dir || !out)
		return -EINVAL;
	if (!opt)
		opt = &d;
	if (!(kv = calloc(1, sizeof(*kv))))
		return -ENOMEM;
	pthread_mutex_init(&kv->rmu, NULL);
	kv->every = opt->checkpoint ? opt->checkpoint : 1000;
	o.flags = opt->kernel_locks ? 0 : SM_OPT_TABLE_LOCKS;
	o.create_size = ((opt->pages ? opt->pages : 256) + 1) * PAGE;
	snprintf(dpath, sizeof(dpath), "%s/data", dir);
	snprintf(lpath, sizeof(lpath), "%s/log", dir);
	if ((rc = sm_open(dpath, SM_RDWR | SM_CREATE, &o, &kv->f)) < 0)
		goto fail;
	if ((rc = sm_log_open(lpath, SM_RDWR | SM_CREATE, NULL, &kv->log)) < 0)
		goto fail;
	if ((rc = header(kv, o.create_size / PAGE - 1)) < 0)
		goto fail;
	if (stat(dpath, &sb) < 0 || (uint64_t)sb.st_size < (kv->pages + 1) * PAGE) {
		rc = -EINVAL; /* shorter than its header says */
		goto fail;
	}
	if ((rc = kv_recover(kv)) < 0)
		goto fail;
	*out = kv;
	return 0;
fail:
	if (kv->log)
		sm_log_close(kv->log);
	if (kv->f)
		sm_close(kv->f);
	pthread_mutex_destroy(&kv->rmu);
	free(kv);
	return rc;
}

/* Check one page (p >= 1); adds its keys and LSN to st. */
static int check_page(kv_store *kv, uint64_t p, struct kv_stats *st)
{
	uint64_t keys[SLOTS], lsn;
	unsigned nk = 0;
	sm_slice *s;
	int rc;

	if ((rc = map_page(kv, p * PAGE, false, &s)) < 0)
		return rc;
	if ((rc = sm_get_u64_le(s, 0, &lsn)) < 0)
		goto out;
	if (lsn > st->max_lsn)
		st->max_lsn = lsn;
	for (unsigned i = 0; i < SLOTS && rc == 0; i++) {
		unsigned char b[SLOT];
		uint32_t meta, sum, len;
		uint64_t key;
		if ((rc = sm_read(s, HDR + (uint64_t)i * SLOT, b, SLOT)) < 0)
			break;
		memcpy(&key, b, 8);
		memcpy(&meta, b + 8, 4);
		memcpy(&sum, b + 12, 4);
		len = meta & ~USED;
		if (!(meta & USED)) {
			static const unsigned char zero[SLOT];
			if (memcmp(b, zero, SLOT) != 0)
				rc = -EUCLEAN; /* bytes in a free slot */
			continue;
		}
		if (len > KV_VAL_MAX || sum != slot_sum(key, len, b + 16) || page_off(kv, key) != p * PAGE ||
		    lsn == 0)
			rc = -EUCLEAN; /* torn, foreign or unlogged */
		for (unsigned j = 0; j < nk; j++)
			if (keys[j] == key)
				rc = -EUCLEAN; /* twice */
		keys[nk++] = key;
	}
	st->keys += nk;
out:
	sm_release(s);
	return rc;
}

void kv_counters(kv_store *kv, struct kv_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->recoveries = atomic_load(&kv->recoveries);
	st->replayed = atomic_load(&kv->replayed);
}

int kv_check(kv_store *kv, struct kv_stats *st)
{
	uint64_t mark;
	int rc;

	if (!kv || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	st->pages = kv->pages;
	st->recoveries = atomic_load(&kv->recoveries);
	st->replayed = atomic_load(&kv->replayed);
	/* a marker: every page LSN must lie below it */
	if ((rc = sm_log_append(kv->log, "C", 1, &mark)) < 0 || (rc = sm_log_commit(kv->log)) < 0)
		return rc;
	for (uint64_t p = 1; p <= kv->pages; p++) {
		int r = check_page(kv, p, st);
		if (r == -EBUSY && (r = kv_recover(kv)) == 0)
			r = check_page(kv, p, st);
		if (r < 0 && (rc == 0 || r != -EUCLEAN))
			rc = r;
	}
	if (st->max_lsn >= mark)
		rc = -EUCLEAN; /* a page ahead of its log */
	st->tail = mark;
	if (rc == 0)
		rc = sm_redo_lsn(kv->f, kv->log, &st->redo);
	return rc;
}

int kv_close(kv_store *kv)
{
	int rc, r;

	if (!kv)
		return -EINVAL;
	rc = kv_checkpoint(kv);
	if ((r = sm_log_close(kv->log)) < 0 && rc == 0)
		rc = r;
	if ((r = sm_close(kv->f)) < 0 && rc == 0)
		rc = r;
	pthread_mutex_destroy(&kv->rmu);
	free(kv);
	return rc;
}

/* --- self-checking values ------------------------------------------------ */

static void filler(unsigned char *v, size_t from, size_t len)
{
	uint64_t x = fnv(2166136261u, v, from) ^ ((uint64_t)len << 32);

	for (size_t i = from; i < len; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		v[i] = (unsigned char)('a' + (x >> 59) % 26);
	}
}

void kv_value_make(void *v, size_t len, const char *tag)
{
	unsigned char *b = v;
	size_t t = strcspn(tag, "|");

	if (len > KV_VAL_MAX)
		len = KV_VAL_MAX;
	if (t > len - 1)
		t = len - 1;
	memcpy(b, tag, t);
	b[t] = '|';
	filler(b, t + 1, len);
}

int kv_value_check(const void *v, size_t len, char *tag, size_t cap)
{
	const unsigned char *b = v;
	unsigned char w[KV_VAL_MAX];
	const unsigned char *bar;
	size_t t;

	if (len == 0 || len > KV_VAL_MAX || !(bar = memchr(b, '|', len)))
		return 0;
	t = (size_t)(bar - b);
	memcpy(w, b, t + 1);
	filler(w, t + 1, len);
	if (memcmp(w, b, len) != 0)
		return 0;
	if (cap) {
		size_t c = t < cap - 1 ? t : cap - 1;
		memcpy(tag, b, c);
		tag[c] = 0;
	}
	return 1;
}
