/* SPDX-License-Identifier: MIT */
/*
 * log.c - append-only logs of framed records over slices (SPEC §13).
 *
 * File layout (all integers little-endian):
 *   [0, 4096)   header: magic, version, header size, and two slots of
 *               {u64 value, u64 ~value}: the committed tail (offset 64) and
 *               the appended tail (offset 128); the first retained LSN
 *               (offset 256: the trim point) and the end of the space given
 *               back below it (288), see log_trim.c.  The complement lets a
 *               reader of a slot that races its writer see the tear and
 *               read again (pread/pwrite promise no atomicity).  The
 *               retained records are [first retained, committed tail).
 *   [4096, ...) records, each at an 8-byte aligned offset (its LSN):
 *               u32 length, u32 CRC-32C, payload, zero padding to 8 bytes.
 *               The CRC covers the payload, then the LSN and the length, so
 *               a stale record left at another offset never validates.
 *
 * Appenders serialise on a kernel lock (mutex bytes far beyond any data, on
 * the log's own open file description, so they block instead of spinning),
 * read the appended tail, place the record through a write slice at the
 * tail (the tail region is write-locked while the record is placed), and
 * only then move the appended tail.  A process killed mid-record leaves
 * bytes past the appended tail, which no reader looks at and the next
 * appender overwrites.
 *
 * sm_log_commit is a group commit: a committer that finds the committed tail
 * already past what it needs returns at once.  Otherwise it queues on the
 * flush mutex (one flush at a time); the first in line leads a flush of
 * everything any process placed so far (the page cache is shared) and
 * publishes the committed tail only after it; those queued behind find
 * themselves covered and return.  Whole records left past the committed
 * tail by a dead appender are kept: the next commit of any process commits
 * them.
 *
 * Space is reserved ahead in big steps and written with zeros once, so that
 * a commit flushes data pages only (no unwritten-extent conversion, no
 * journal commit of its own).
 *
 * Iterators (log_iter.c) read up to the committed tail only, and check
 * each record's CRC; a record is handed out as a read sub-slice of a larger
 * read slice (zero-copy), which keeps the mapping and read lock alive until
 * released.  Trimming is log_trim.c.  Both call into this file, never the
 * other way.
 *
 * Public calls run with thread cancellation disabled (SPEC §2): pread and
 * fdatasync are cancellation points, and a thread cancelled there would
 * leave the mutexes held.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"

/* Space is reserved ahead in steps of at least this much (or 1/8 of what
 * is retained). */
#define RESERVE_STEP ((uint64_t)1 << 20)
/* Threads of one handle pass the append kernel lock on at most this many
 * times in a row. */
#define APP_HANDOFFS 16
/* Frames up to this size are assembled on the stack and copied once. */
#define SMALL_REC 1024u
/* A slot that stays torn this long is corrupt, not racing a writer. */
#define SLOT_TRIES 100000
/* A committer that finds its round open waits for it to fill while records
 * keep coming (no wait of SETTLE_IDLE_NS without one), for at most
 * SETTLE_MAX_NS, then flushes what is there.  Longer than a round plus its
 * flush (~80 + ~100 us here): the timer must not fire in the middle of the
 * flush that the committer who filled the round leads.  A round that does
 * not fill (an appender stopped) costs this once: the next round expects
 * only the committers that were asleep. */
#define SETTLE_IDLE_NS 200000L
#define SETTLE_MAX_NS 400000.0
/* A committer waiting for another's flush checks the leader is alive (tries
 * the flush mutex) at least this often: a leader killed mid-fdatasync never
 * wakes anyone. */
#define WAIT_NS 20000000L


static uint64_t align8(uint64_t n)
{
	return (n + 7) & ~(uint64_t)7;
}

static uint32_t get32le(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64le(const unsigned char *p)
{
	return (uint64_t)get32le(p) | (uint64_t)get32le(p + 4) << 32;
}

static void put32le(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64le(unsigned char *p, uint64_t v)
{
	put32le(p, (uint32_t)v);
	put32le(p + 4, (uint32_t)(v >> 32));
}

/* The CRC of the record at lsn: its payload's CRC (pcrc) continued over its
 * LSN and length.  Payload first, so appenders checksum it before they take
 * the tail, where the LSN becomes known. */
static uint32_t frame_crc(uint32_t pcrc, uint64_t lsn, uint32_t len)
{
	unsigned char b[12];

	put64le(b, lsn);
	put32le(b + 8, len);
	return sm_crc32c(pcrc, b, sizeof(b));
}

/* --- fork ------------------------------------------------------------------
 * A log handle belongs to the process that opened it (a child shares its
 * open file description, so its kernel-lock mutexes would be the parent's).
 * A fork counter, not getpid(): getpid is a system call, per append. */
static unsigned long forks;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_child(void)
{
	__atomic_fetch_add(&forks, 1, __ATOMIC_RELAXED);
}

static void fork_init(void)
{
	pthread_atfork(NULL, NULL, fork_child);
}

int smlog_forked(const sm_log *l)
{
	return __atomic_load_n(&forks, __ATOMIC_RELAXED) != l->gen ? -ESTALE : 0;
}

int smlog_writable(const sm_log *l)
{
	return !(l->flags & SM_RDWR) ? -EBADF : smlog_forked(l);
}

/* --- kernel-lock mutexes ------------------------------------------------- */

static int mutex_lock(int fd, short type, uint64_t at)
{
	struct flock fl;
	int rc = 0;
	int cs_ = sm_nocancel();

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)at;
	fl.l_len = 1;
	while (fcntl(fd, F_OFD_SETLKW, &fl) < 0) {
		if (errno != EINTR) {
			rc = -errno;
			break;
		}
	}
	sm_cancel_restore(cs_);
	return rc;
}

static void mutex_unlock(int fd, uint64_t at)
{
	(void)sm_ofd_unlock(fd, at, 1);
}

/* Both halves: the pthread mutex orders this process's threads (which share
 * one open file description, so the kernel lock does not), the kernel lock
 * orders processes and other handles. */
int smlog_lock(sm_log *l, pthread_mutex_t *mu, uint64_t at)
{
	int rc;

	pthread_mutex_lock(mu);
	if ((rc = mutex_lock(l->fd, F_WRLCK, at)) < 0)
		pthread_mutex_unlock(mu);
	return rc;
}

void smlog_unlock(sm_log *l, pthread_mutex_t *mu, uint64_t at)
{
	mutex_unlock(l->fd, at);
	pthread_mutex_unlock(mu);
}

/*
 * The append mutex, handed from thread to thread of one handle without
 * the kernel lock in between: an appender that finds another thread of its
 * handle queued keeps the kernel lock for it (two fcntl calls fewer per
 * record), at most APP_HANDOFFS times in a row, so that appenders of other
 * handles and processes (asleep in the kernel lock) get their turn.
 */
static int append_lock(sm_log *l)
{
	int rc;

	__atomic_fetch_add(&l->app_queue, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&l->app_mu);
	__atomic_fetch_sub(&l->app_queue, 1, __ATOMIC_SEQ_CST);
	if (l->app_held)
		return 0; /* handed over */
	if ((rc = mutex_lock(l->fd, F_WRLCK, MUTEX_APPEND)) < 0) {
		pthread_mutex_unlock(&l->app_mu);
		return rc;
	}
	l->app_held = true;
	l->app_handoffs = 0;
	return 0;
}

static void append_unlock(sm_log *l)
{
	if (__atomic_load_n(&l->app_queue, __ATOMIC_SEQ_CST) > 0 &&
	    l->app_handoffs < APP_HANDOFFS) {
		l->app_handoffs++; /* the next thread of this handle takes it as is */
	} else {
		mutex_unlock(l->fd, MUTEX_APPEND);
		l->app_held = false;
	}
	pthread_mutex_unlock(&l->app_mu);
}

/* --- header slots -------------------------------------------------------- */

/* A group commit word in the mapped header (read-write handles only). */
static uint32_t *hword(const sm_log *l, off_t at)
{
	return (uint32_t *)(void *)(l->hdr->v.base + at);
}

/* The 32-bit futex word of a slot in the mapped header: its low half. */
static uint32_t *slot_word(const sm_log *l, off_t at)
{
	return (uint32_t *)(void *)(l->hdr->v.base + at);
}

int smlog_slot_read(const sm_log *l, off_t at, uint64_t *v)
{
	unsigned char b[16];

	/* Through the mapping (no system call): two aligned 8-byte loads of
	 * the page cache page that pwrite updates; the complement catches a
	 * load racing a writer.  The header slice is under the fault guard:
	 * a log truncated under it reads zeros, a tear that never settles. */
	if (l->hdr && *l->hdr->v.state == 0) {
		const uint64_t *p = (const uint64_t *)(const void *)(l->hdr->v.base + at);
		for (int i = 0; i < SLOT_TRIES; i++) {
			uint64_t x = le64toh(__atomic_load_n(&p[0], __ATOMIC_ACQUIRE));
			uint64_t y = le64toh(__atomic_load_n(&p[1], __ATOMIC_ACQUIRE));
			if (*l->hdr->v.state)
				break;
			if (x == 0 && y == 0 && at >= SLOT_FIRST) {
				*v = LOG_HDR; /* never trimmed (header from before trim) */
				return 0;
			}
			if (x == ~y) {
				*v = x;
				return 0;
			}
			sched_yield(); /* a writer is halfway through the slot */
		}
	}

	for (int i = 0; i < SLOT_TRIES; i++) {
		ssize_t n = pread(l->fd, b, sizeof(b), at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n != (ssize_t)sizeof(b))
			return -EBADMSG;
		if (get64le(b) == 0 && get64le(b + 8) == 0 && at >= SLOT_FIRST) {
			*v = LOG_HDR;
			return 0;
		}
		if (get64le(b) == ~get64le(b + 8)) {
			*v = get64le(b);
			return 0;
		}
		sched_yield(); /* a writer is halfway through the slot */
	}
	return -EBADMSG;
}

int smlog_slot_write(sm_log *l, off_t at, uint64_t v)
{
	unsigned char b[16];
	ssize_t n;
	int cs_;

#if defined(__x86_64__) && defined(__GNUC__)
	/* In place, with one 16-byte store: a process dies between
	 * instructions, never inside one, so a kill never leaves a torn slot
	 * (two 8-byte stores could); readers on other CPUs that see the halves
	 * apart (CPUs without AVX do not promise 16-byte atomicity) catch it
	 * with the complement and read again.  The page is written back by
	 * the next fdatasync, as after pwrite. */
	if (l->hdr_w && *l->hdr->v.state == 0) {
		typedef long long v2 __attribute__((vector_size(16)));
		v2 x = { (long long)htole64(v), (long long)htole64(~v) };
		__asm__ volatile("movdqa %1, %0"
				 : "=m"(*(v2 *)(void *)(l->hdr->v.base + at))
				 : "x"(x)
				 : "memory");
		if (*l->hdr->v.state == 0)
			return 0;
		/* the page was lost under the store (truncated file): pwrite */
	}
#endif
	cs_ = sm_nocancel();
	put64le(b, v);
	put64le(b + 8, ~v);
	while ((n = sm_sys.pwrite(l->fd, b, sizeof(b), at)) < 0 && errno == EINTR)
		;
	sm_cancel_restore(cs_);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(b) ? 0 : -EIO;
}

/* --- records --------------------------------------------------------------- */

void smlog_window_drop(struct window *w)
{
	if (w->s)
		sm_release(w->s);
	w->s = NULL;
}

static int window_map(sm_log *l, struct window *w, uint64_t beg, uint64_t end)
{
	int rc;

	smlog_window_drop(w);
	/* Pre-faulted: the window is read whole (its records are checked),
	 * and one populating mmap costs far less than a fault per 64 KiB
	 * (measured: 226-351 ns per 100-byte record without, 133-153 with). */
	if ((rc = sm_map_read(l->f, beg, end - beg, SM_POPULATE, &w->s)) < 0)
		return rc;
	w->beg = beg;
	w->end = end;
	return 0;
}

/* Checks the records of a window in one guarded pass (one library call
 * for many records, instead of one per record). */
struct scan {
	uint64_t base, pos, limit, wend;
	bool bad; /* stopped at an invalid record, not at the window's end */
};

#if defined(__x86_64__) && defined(__GNUC__)
/*
 * The same loop with the crc32 instruction inline: per record a chain of
 * crc32 over the payload (eight bytes a step), its LSN and its length.  No
 * call per record, and records do not depend on each other's CRC, so the
 * CPU runs the chains of several records at once (measured: 23 GB/s for
 * 100-byte records, against ~5 GB/s through two calls per record).  Long
 * payloads go to sm_crc32c_raw (ISA-L when built with it).
 */
__attribute__((target("sse4.2"))) static void scan_hw(struct scan *sc, const unsigned char *b)
{
	uint64_t pos = sc->pos, end = sc->limit < sc->wend ? sc->limit : sc->wend;

	while (pos + FRAME <= end) {
		const unsigned char *fr = b + (pos - sc->base), *q = fr + FRAME;
		uint32_t len = get32le(fr), crc = get32le(fr + 4), n, c32;
		uint64_t sz = align8((uint64_t)FRAME + len), c;

		if (len == 0 || len > REC_MAX || sz > sc->limit - pos) {
			sc->bad = true;
			break;
		}
		if (pos + sz > sc->wend)
			break; /* continues past the window */
		if (len >= SM_CRC32C_LONG) {
			c32 = sm_crc32c_raw(0xffffffffu, q, len);
		} else {
			c = 0xffffffffu;
			for (n = len; n >= 8; n -= 8, q += 8) {
				uint64_t w;
				memcpy(&w, q, 8);
				c = __builtin_ia32_crc32di(c, le64toh(w));
			}
			c32 = (uint32_t)c;
			if (n & 4) {
				c32 = __builtin_ia32_crc32si(c32, get32le(q));
				q += 4;
			}
			if (n & 2) {
				c32 = __builtin_ia32_crc32hi(c32, (uint16_t)(q[0] | q[1] << 8));
				q += 2;
			}
			if (n & 1)
				c32 = __builtin_ia32_crc32qi(c32, q[0]);
		}
		c = __builtin_ia32_crc32di(c32, pos);
		if (~__builtin_ia32_crc32si((uint32_t)c, len) != crc) {
			sc->bad = true;
			break;
		}
		pos += sz;
	}
	sc->pos = pos;
}
#endif

static int scan_fn(void *p, size_t n, void *arg)
{
	struct scan *sc = arg;
	const unsigned char *b = p;

	(void)n;
#if defined(__x86_64__) && defined(__GNUC__)
	if (sm_crc32c_hw()) {
		scan_hw(sc, b);
		return 0;
	}
#endif
	while (sc->pos + FRAME <= sc->limit && sc->pos + FRAME <= sc->wend) {
		const unsigned char *fr = b + (sc->pos - sc->base);
		uint32_t len = get32le(fr), crc = get32le(fr + 4);
		uint64_t sz = align8((uint64_t)FRAME + len);

		if (len == 0 || len > REC_MAX || sz > sc->limit - sc->pos) {
			sc->bad = true;
			break;
		}
		if (sc->pos + sz > sc->wend)
			break; /* continues past the window */
		if (frame_crc(sm_crc32c(0, fr + FRAME, len), sc->pos, len) != crc) {
			sc->bad = true;
			break;
		}
		sc->pos += sz;
	}
	return 0;
}

/*
 * Check the records from pos on (they must end by limit), mapping w over
 * them: *upto receives the end of the run of valid records that starts at
 * pos and lies in the window (at least one).  -EBADMSG: the record at pos
 * is not valid.
 */
int smlog_scan_from(sm_log *l, struct window *w, uint64_t pos, uint64_t limit, uint64_t *upto)
{
	struct scan sc;
	uint64_t end = limit - pos > ITER_WINDOW ? pos + ITER_WINDOW : limit;
	uint32_t len;
	int rc;

	if (pos + FRAME > limit)
		return -EBADMSG;
	if (!w->s || pos < w->beg || pos + FRAME > w->end || w->end < end) {
		if ((rc = window_map(l, w, pos, end)) < 0)
			return rc;
	}
	if ((rc = sm_get_u32_le(w->s, pos - w->beg, &len)) < 0)
		return rc;
	if (len == 0 || len > REC_MAX || align8((uint64_t)FRAME + len) > limit - pos)
		return -EBADMSG;
	if (pos + align8((uint64_t)FRAME + len) > w->end &&
	    (rc = window_map(l, w, pos, pos + align8((uint64_t)FRAME + len))) < 0)
		return rc;
	sc = (struct scan){ .base = w->beg, .pos = pos, .limit = limit, .wend = w->end };
	if ((rc = sm_guarded(w->s, scan_fn, &sc)) < 0)
		return rc;
	if (sc.pos == pos)
		return -EBADMSG;
	*upto = sc.pos;
	return 0;
}

/*
 * Write zeros over freshly reserved blocks, and start their write-back.
 * fallocate leaves "unwritten" extents: the first fdatasync after a record
 * lands in one must convert it, a journal commit (measured here: ~3.9 ms
 * against ~1.1 ms for an fdatasync that only writes data pages).  Blocks
 * written once (zeros) make every later commit a data-only flush, as a
 * database zero-fills its WAL segments.  Best effort: the blocks are
 * reserved already, zeros or not, and read as zeros either way.
 */
static void zero_fill(sm_log *l, uint64_t from, uint64_t to)
{
	static const unsigned char zeros[65536];
	uint64_t at;

	for (at = from; at < to;) {
		size_t n = to - at < sizeof(zeros) ? (size_t)(to - at) : sizeof(zeros);
		ssize_t w = sm_sys.pwrite(l->fd, zeros, n, (off_t)at);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		at += (uint64_t)w;
	}
	(void)sm_sys.sync_file_range(l->fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE);
}

/* Reserve blocks so that the file covers [0, end): in steps, so appends
 * rarely grow the file, and so that a full disk is -ENOSPC here rather
 * than SIGBUS at a store into a hole.  Caller holds the append mutex. */
static int reserve(sm_log *l, uint64_t end)
{
	struct stat st;
	uint64_t size, step, want, first;
	int rc;

	if (end <= l->reserved)
		return 0;
	if (fstat(l->fd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size;
	if (end <= size) {
		l->reserved = size;
		return 0;
	}
	/* A step in proportion to what is retained, not to the file size
	 * (which counts the trimmed space too). */
	if ((rc = smlog_slot_read(l, SLOT_FIRST, &first)) < 0)
		return rc;
	step = size > first ? (size - first) / 8 : 0;
	if (step < RESERVE_STEP)
		step = RESERVE_STEP;
	want = (end + step - 1) / step * step;
	if (sm_sys.fallocate(l->fd, 0, (off_t)size, (off_t)(want - size)) == 0) {
		zero_fill(l, size, want);
		l->reserved = want;
		return 0;
	}
	if (errno == ENOSPC && sm_sys.fallocate(l->fd, 0, (off_t)size, (off_t)(end - size)) == 0) {
		l->reserved = end; /* the disk is nearly full: just this record */
		return 0;
	}
	if (errno != EOPNOTSUPP)
		return -errno;
	/* No reservation on this filesystem (documented risk): just grow. */
	if (sm_sys.ftruncate(l->fd, (off_t)want) < 0)
		return -errno;
	l->reserved = want;
	return 0;
}

static int log_commit(sm_log *l);

/* --- open / close ------------------------------------------------------------ */

/* Write the header of a new (empty) log.  Caller holds MUTEX_INIT. */
static int init_header(sm_log *l)
{
	unsigned char *h = calloc(1, LOG_HDR);
	ssize_t n;
	int rc = 0;

	if (!h)
		return -ENOMEM;
	memcpy(h, LOG_MAGIC, 8);
	put32le(h + 8, LOG_VERSION);
	put32le(h + 12, LOG_HDR);
	put64le(h + SLOT_COMMITTED, LOG_HDR);
	put64le(h + SLOT_COMMITTED + 8, ~(uint64_t)LOG_HDR);
	put64le(h + SLOT_TAIL, LOG_HDR);
	put64le(h + SLOT_TAIL + 8, ~(uint64_t)LOG_HDR);
	put64le(h + SLOT_FLUSHING, 0);
	put64le(h + SLOT_FLUSHING + 8, ~(uint64_t)0);
	put64le(h + SLOT_FLUSHING + 16, 0);
	put64le(h + SLOT_FLUSHING + 24, ~(uint64_t)0);
	put64le(h + SLOT_FIRST, LOG_HDR);
	put64le(h + SLOT_FIRST + 8, ~(uint64_t)LOG_HDR);
	put64le(h + SLOT_PUNCHED, LOG_HDR);
	put64le(h + SLOT_PUNCHED + 8, ~(uint64_t)LOG_HDR);
	n = sm_sys.pwrite(l->fd, h, LOG_HDR, 0);
	if (n < 0)
		rc = -errno;
	else if (n != LOG_HDR)
		rc = -EIO;
	else if (sm_sys.fdatasync(l->fd) < 0)
		rc = -errno;
	free(h);
	return rc;
}

static int check_header(sm_log *l)
{
	unsigned char h[16];
	ssize_t n = pread(l->fd, h, sizeof(h), 0);

	if (n < 0)
		return -errno;
	if (n != (ssize_t)sizeof(h) || memcmp(h, LOG_MAGIC, 8) != 0 ||
	    get32le(h + 8) != LOG_VERSION || get32le(h + 12) != LOG_HDR)
		return -EINVAL; /* not a log (of this version) */
	return 0;
}

/*
 * Every handle read-locks MUTEX_OPEN for its life (the kernel drops the
 * lock when the handle's description closes, or its process dies).  A
 * read-write open that finds no other handle there (it can write-lock the
 * byte; the caller holds MUTEX_INIT, so no open races it) clears the group
 * commit hints: a committer killed while counted among the sleepers leaves
 * WAITERS high, which would cost every later commit a wake call that finds
 * nobody; a trimmer killed mid-way leaves its target in TRIMMING, which
 * would fail binds below it.  Caller holds MUTEX_INIT.
 */
static int join(sm_log *l)
{
	static const unsigned char zeros[WORD_TRIMMING + 8 - WORD_WAITERS];

	if ((l->flags & SM_RDWR) && sm_ofd_lock(l->fd, true, MUTEX_OPEN, 1) == 0) {
		ssize_t n = sm_sys.pwrite(l->fd, zeros, sizeof(zeros), WORD_WAITERS);
		if (n != (ssize_t)sizeof(zeros))
			return n < 0 ? -errno : -EIO;
	}
	return sm_ofd_lock(l->fd, false, MUTEX_OPEN, 1);
}

static int setup(sm_log *l)
{
	struct stat st;
	int rc;

	if ((rc = mutex_lock(l->fd, (l->flags & SM_RDWR) ? F_WRLCK : F_RDLCK, MUTEX_INIT)) < 0)
		return rc;
	if (fstat(l->fd, &st) < 0)
		rc = -errno;
	else if (st.st_size == 0 && (l->flags & SM_RDWR))
		rc = init_header(l);
	if (rc == 0)
		rc = check_header(l);
	if (rc == 0)
		rc = join(l);
	mutex_unlock(l->fd, MUTEX_INIT);
	return rc;
}

/*
 * Repair the appended tail (read-write opens): after a machine crash the
 * tail slot may have reached the disk before the records it covers, so walk
 * the records past the committed tail and cut at the first invalid one, then
 * commit the rest (they may include records whose commit had succeeded while
 * the committed slot itself had not reached the disk yet).
 */
static int recover(sm_log *l)
{
	struct window w = { 0 };
	uint64_t c, t, pos, upto;
	int rc;

	if ((rc = append_lock(l)) < 0)
		return rc;
	if ((rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0 || (rc = smlog_slot_read(l, SLOT_TAIL, &t)) < 0)
		goto out;
	if (c < LOG_HDR || t < c || (c & 7) || (t & 7) || t > INT64_MAX) {
		rc = -EBADMSG;
		goto out;
	}
	for (pos = c; pos < t; pos = upto)
		if ((rc = smlog_scan_from(l, &w, pos, t, &upto)) < 0)
			break;
	smlog_window_drop(&w);
	/* Garbage, or a file shorter than the tail says: cut there. */
	if (rc == -EBADMSG || rc == -ERANGE || rc == -ENXIO) {
		rc = smlog_slot_write(l, SLOT_TAIL, pos);
		t = pos;
	}
out:
	append_unlock(l);
	if (rc == 0 && t > c)
		rc = log_commit(l);
	return rc;
}

static int log_open(const char *path, int flags, const sm_options *opt, sm_log **out)
{
	sm_log *l;
	int rc, oflags;

	if (!path || !out || (flags & ~(SM_RDONLY | SM_RDWR | SM_CREATE)) ||
	    !(flags & SM_RDONLY) == !(flags & SM_RDWR) ||
	    ((flags & SM_CREATE) && (flags & SM_RDONLY)))
		return -EINVAL;
	/* a log sizes its file itself (a caller's struct too short to carry
	 * create_size is sm_open's to refuse) */
	if (opt && (!opt->size || opt->size >= offsetof(sm_options, reserved)) && opt->create_size)
		return -EINVAL;
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	l->fd = -1;
	l->flags = flags;
	pthread_once(&fork_once, fork_init);
	l->gen = __atomic_load_n(&forks, __ATOMIC_RELAXED);
	pthread_mutex_init(&l->app_mu, NULL);
	pthread_mutex_init(&l->flush_mu, NULL);
	pthread_mutex_init(&l->trim_mu, NULL);
	if ((rc = sm_open(path, flags, opt, &l->f)) < 0)
		goto err;
	oflags = ((flags & SM_RDWR) ? O_RDWR : O_RDONLY) | O_CLOEXEC;
	if ((l->fd = open(path, oflags)) < 0) {
		rc = -errno;
		goto err;
	}
	if ((rc = setup(l)) < 0)
		goto err;
	/* The header for the slots and the commit futex, held for the log's
	 * life.  Read-write handles store the slots in place: coordination
	 * memory (an unlocked write slice, under the fault guard), so that
	 * moving a tail is a store, not a system call. */
	if (flags & SM_RDWR) {
		if ((rc = sm_map_write(l->f, 0, LOG_HDR, SM_NOLOCK, &l->hdr)) < 0)
			goto err;
		l->hdr_w = true;
	} else if ((rc = sm_map_read(l->f, 0, LOG_HDR, 0, &l->hdr)) < 0) {
		goto err;
	}
	if ((flags & SM_RDWR) && (rc = recover(l)) < 0)
		goto err;
	*out = l;
	return 0;
err:
	if (l->hdr)
		sm_release(l->hdr);
	if (l->fd >= 0)
		close(l->fd);
	if (l->f)
		sm_close(l->f);
	pthread_mutex_destroy(&l->app_mu);
	pthread_mutex_destroy(&l->flush_mu);
	pthread_mutex_destroy(&l->trim_mu);
	free(l);
	return rc;
}

int sm_log_close(sm_log *l)
{
	int rc;

	if (!l)
		return -EINVAL;
	if (__atomic_load_n(&l->iters, __ATOMIC_ACQUIRE))
		return -EBUSY;
	if (l->redo_close && (rc = l->redo_close(l)) < 0)
		return rc; /* a slice is still bound through this handle */
	sm_release(l->hdr);
	rc = sm_close(l->f);
	close(l->fd);
	pthread_mutex_destroy(&l->app_mu);
	pthread_mutex_destroy(&l->flush_mu);
	pthread_mutex_destroy(&l->trim_mu);
	free(l);
	return rc;
}

/* --- append / commit --------------------------------------------------------- */

/* pwrite all of [buf, buf + n) at off, through the seam. */
static int pwrite_all(sm_log *l, const void *buf, size_t n, uint64_t off)
{
	const unsigned char *p = buf;

	while (n > 0) {
		ssize_t w = sm_sys.pwrite(l->fd, p, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/*
 * Place a record at the tail.  Under the append mutex no other appender
 * writes there and no reader looks past the committed tail, so the frame is
 * written with pwrite into blocks reserved (and zeroed) ahead: no region
 * lock, no mapping, no fallocate per record (measured before: 4 fcntl, 2
 * fstat, 1 fallocate and 1 pwrite per append through a write slice).
 */
static int log_append(sm_log *l, const void *rec, size_t len, uint64_t *lsn)
{
	static const unsigned char pad[FRAME];
	unsigned char fr[FRAME], small[SMALL_REC];
	uint64_t t, sz;
	uint32_t crc, pcrc;
	int rc;

	if (!l || !rec || len == 0)
		return -EINVAL;
	if ((rc = smlog_writable(l)) < 0)
		return rc;
	if (len > REC_MAX)
		return -ERANGE;
	sz = align8((uint64_t)FRAME + len);
	pcrc = sm_crc32c(0, rec, len);
	if (sz <= SMALL_REC) {
		memset(small + FRAME + len, 0, sz - FRAME - len);
		memcpy(small + FRAME, rec, len);
	}
	if ((rc = append_lock(l)) < 0)
		return rc;
	if ((rc = smlog_slot_read(l, SLOT_TAIL, &t)) < 0)
		goto out;
	if (t < LOG_HDR || (t & 7)) {
		rc = -EBADMSG;
		goto out;
	}
	if (t > INT64_MAX - sz) {
		rc = -ERANGE;
		goto out;
	}
	if ((rc = reserve(l, t + sz)) < 0)
		goto out;
	/* The CRC covers the LSN, known only now. */
	crc = frame_crc(pcrc, t, (uint32_t)len);
	if (sz <= SMALL_REC) {
		/* One write for the whole frame. */
		put32le(small, (uint32_t)len);
		put32le(small + 4, crc);
		if ((rc = pwrite_all(l, small, (size_t)sz, t)) < 0)
			goto out;
	} else {
		put32le(fr, (uint32_t)len);
		put32le(fr + 4, crc);
		if ((rc = pwrite_all(l, rec, len, t + FRAME)) < 0 ||
		    (sz > FRAME + len &&
		     (rc = pwrite_all(l, pad, (size_t)(sz - FRAME - len), t + FRAME + len)) < 0) ||
		    (rc = pwrite_all(l, fr, FRAME, t)) < 0)
			goto out;
	}
	/* Only now is the record whole: move the tail past it. */
	if ((rc = smlog_slot_write(l, SLOT_TAIL, t + sz)) < 0)
		goto out;
	/* Counted for the group commit: the append that completes a round
	 * leads its flush (log_commit). */
	__atomic_add_fetch(hword(l, WORD_APPENDS), 1, __ATOMIC_SEQ_CST);
	if (lsn)
		*lsn = t;
out:
	append_unlock(l);
	return rc;
}

static double mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no system call */
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/*
 * Whether the round has filled: the committers that the last flush woke
 * (WOKEN of them), plus the leader of that flush, have each placed one
 * record since (APPENDS counted from BASE).  A committer that finds the
 * round open waits for it (while records keep coming, at most
 * SETTLE_MAX_NS) rather than flush at once, so
 * one flush covers them all (the kernel's journal batches concurrent
 * fsyncs the same way); the committer whose record fills it leads the
 * flush itself, so nobody waits to be woken for it.  Nobody was woken (one
 * committer at a time): the round is full.
 */
static bool round_full(sm_log *l)
{
	uint32_t woken = __atomic_load_n(hword(l, WORD_WOKEN), __ATOMIC_ACQUIRE);
	uint32_t base = __atomic_load_n(hword(l, WORD_BASE), __ATOMIC_ACQUIRE);

	return woken == 0 || __atomic_load_n(hword(l, WORD_APPENDS), __ATOMIC_SEQ_CST) - base >= woken + 1;
}

/* fdatasync the log.  A failure poisons the handle: Linux reports a
 * write-back error once and marks the pages clean, so a retry would
 * "succeed" over lost data (SPEC §6.4). */
int smlog_sync(sm_log *l)
{
	int rc = 0, cs_ = sm_nocancel();

	if (sm_sys.fdatasync(l->fd) < 0)
		rc = -errno;
	sm_cancel_restore(cs_);
	if (rc < 0) {
		int zero = 0;
		__atomic_compare_exchange_n(&l->poison, &zero, rc, false, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE);
	}
	return rc;
}

/* One flush covering every record below the tail t, then publish t as the
 * committed tail (unless a later flush already published more). */
static int flush_and_publish(sm_log *l, uint64_t t)
{
	uint32_t g = __atomic_add_fetch(hword(l, WORD_FLUSH_START), 1, __ATOMIC_SEQ_CST);
	uint64_t c;
	int rc;

	if ((rc = smlog_sync(l)) < 0)
		return rc;
	/* Under the flush mutex: the only publisher (of both). */
	if ((int32_t)(g - __atomic_load_n(hword(l, WORD_FLUSH_DONE), __ATOMIC_ACQUIRE)) > 0)
		__atomic_store_n(hword(l, WORD_FLUSH_DONE), g, __ATOMIC_RELEASE);
	if ((rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) == 0 && c < t)
		rc = smlog_slot_write(l, SLOT_COMMITTED, t);
	return rc;
}

/* Futexes on the mapped header page: a shared file mapping, so the key is
 * the page cache page and processes meet on it (not FUTEX_PRIVATE). */
static bool futex_wait(uint32_t *w, uint32_t val, long ns)
{
	struct timespec ts = { 0, ns };

	return syscall(SYS_futex, w, FUTEX_WAIT, val, &ts, NULL, 0) < 0 && errno == ETIMEDOUT;
}

/* Before the flush mutex is released: how many committers sleep on the
 * committed slot (a wake with nobody counted is no system call), noted for
 * the next leader with the APPENDS it starts from.  The full fence orders
 * the slot's store before the count's load; a sleeper counts itself before
 * it checks the slot (futex_wait checks it), so one of the two sees the
 * other. */
static uint32_t note_round(sm_log *l)
{
	uint32_t n;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	n = __atomic_load_n(hword(l, WORD_WAITERS), __ATOMIC_SEQ_CST);
	if (n > 0)
		__atomic_store_n(hword(l, WORD_BASE),
				 __atomic_load_n(hword(l, WORD_APPENDS), __ATOMIC_ACQUIRE),
				 __ATOMIC_RELEASE);
	if (__atomic_load_n(hword(l, WORD_WOKEN), __ATOMIC_RELAXED) != n)
		__atomic_store_n(hword(l, WORD_WOKEN), n, __ATOMIC_RELEASE);
	return n;
}

/* After the flush mutex is released (a woken committer that is not
 * covered must find it free): wake them.  The kernel says how many slept;
 * fewer than counted (a count left by a killed committer) corrects WOKEN,
 * so the next leader does not wait for them. */
static void wake_waiters(sm_log *l, uint32_t counted)
{
	long n;

	if (counted == 0)
		return;
	n = syscall(SYS_futex, slot_word(l, SLOT_COMMITTED), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	if (n >= 0 && (uint32_t)n < counted)
		__atomic_compare_exchange_n(hword(l, WORD_WOKEN), &counted, (uint32_t)n, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* The flush mutex without waiting: its in-process half, then its kernel
 * lock byte (0 or -EBUSY). */
static int flush_try(sm_log *l)
{
	int rc;

	if (pthread_mutex_trylock(&l->flush_mu) != 0)
		return -EBUSY;
	if ((rc = sm_ofd_lock(l->fd, true, MUTEX_FLUSH, 1)) < 0)
		pthread_mutex_unlock(&l->flush_mu);
	return rc;
}

/*
 * Group commit: one flush at a time, under the flush mutex (a kernel lock
 * byte plus its in-process half).  A committer whose records the committed
 * tail already covers returns at once.  Otherwise, if the mutex is free and
 * the round is full (round_full: every committer the last flush woke has
 * placed its next record), it leads: it reads the appended tail (every
 * record any process placed so far: the page cache is shared), flushes
 * once, publishes that tail, and wakes every waiter.  If a flush is
 * running, or the round is still open, it sleeps on the committed slot's
 * futex word until a leader publishes (an open round: one of them, the
 * settler, waits while records keep coming, at most SETTLE_MAX_NS, then
 * leads with what is there), then
 * looks again: those the flush covered return, one of the others leads the
 * next flush for all of them.  N appenders committing every record thus
 * share one fdatasync per round, nobody queues on a lock just to learn it
 * was covered, and the committer that fills the round flushes it at once.
 * (Earlier designs: two flushes at once in two "lanes", waiters queued on
 * kernel locks -- on this machine concurrent flushes serialise in the disk
 * and the lock hand-offs serialised the wake-ups, ~1.6 records per round at
 * 8 appenders; then a leader that took the mutex first and slept until the
 * round filled, woken by the append that filled it -- one more wake-up,
 * ~10 us on this machine, on every round's critical path.)
 *
 * Liveness: the futex word only speeds things up.  Waits are bounded
 * (WAIT_NS, SETTLE_MAX_NS), and a waiter that times out tries the mutex
 * itself; its kernel lock dies with its holder, so a leader killed
 * mid-fdatasync (which never wakes anyone) frees the next waiter to lead
 * within WAIT_NS.  A
 * committed tail published by a process that then died is as good as any.
 */
static int log_commit(sm_log *l)
{
	uint64_t want, c, t;
	uint32_t n, seen = 0;
	double settle_start = 0;
	int rc;

	if (!l)
		return -EINVAL;
	if ((rc = smlog_writable(l)) < 0)
		return rc;
	if ((rc = smlog_slot_read(l, SLOT_TAIL, &want)) < 0)
		return rc;
	for (bool timed_out = false, settler = false;;) {
		bool flushing, full = false, settling;
		if ((rc = __atomic_load_n(&l->poison, __ATOMIC_ACQUIRE)) < 0 ||
		    (rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) < 0 || c >= want)
			return rc;
		/* A flush running (FLUSHING says so: no lock call to learn it),
		 * unless the last wait timed out: then ask the lock, which
		 * the kernel frees if the leader died.  No flush running:
		 * lead it if the round is full (or the wait for it is over). */
		flushing = __atomic_load_n(hword(l, WORD_FLUSHING), __ATOMIC_SEQ_CST);
		if (timed_out || (!flushing && (full = round_full(l)))) {
			if ((rc = flush_try(l)) == 0)
				break;
			if (rc != -EBUSY)
				return rc;
		}
		settling = !flushing && !full;
		if (settling && !settler) {
			/* one settler per round (WORD_SETTLER) */
			uint32_t r = __atomic_load_n(hword(l, WORD_BASE), __ATOMIC_ACQUIRE) + 1;
			uint32_t cur = __atomic_load_n(hword(l, WORD_SETTLER), __ATOMIC_ACQUIRE);
			if (cur != r && __atomic_compare_exchange_n(hword(l, WORD_SETTLER), &cur, r, false,
								    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
				settler = true;
				settle_start = mono_ns();
				seen = __atomic_load_n(hword(l, WORD_APPENDS), __ATOMIC_SEQ_CST);
			}
		}
		settling = settling && settler;
		__atomic_fetch_add(hword(l, WORD_WAITERS), 1, __ATOMIC_SEQ_CST);
		timed_out = futex_wait(slot_word(l, SLOT_COMMITTED), htole32((uint32_t)c),
				       settling ? SETTLE_IDLE_NS : WAIT_NS);
		__atomic_fetch_sub(hword(l, WORD_WAITERS), 1, __ATOMIC_RELEASE);
		if (timed_out && settling) {
			/* the round is still filling: wait on, up to SETTLE_MAX_NS */
			uint32_t a = __atomic_load_n(hword(l, WORD_APPENDS), __ATOMIC_SEQ_CST);
			if (a != seen && mono_ns() - settle_start < SETTLE_MAX_NS)
				timed_out = false;
			seen = a;
		}
	}
	__atomic_store_n(hword(l, WORD_FLUSHING), 1, __ATOMIC_SEQ_CST);
	/* Leader.  The flush that ran before we took the mutex may have
	 * covered our records; else one flush for everything placed so far. */
	if ((rc = __atomic_load_n(&l->poison, __ATOMIC_ACQUIRE)) == 0 &&
	    (rc = smlog_slot_read(l, SLOT_COMMITTED, &c)) == 0 && c < want &&
	    (rc = smlog_slot_read(l, SLOT_TAIL, &t)) == 0)
		rc = flush_and_publish(l, t);
	/* Also after a failure: the waiters then flush for themselves (and
	 * learn the error, which the kernel reports to each description). */
	__atomic_store_n(hword(l, WORD_FLUSHING), 0, __ATOMIC_SEQ_CST);
	n = note_round(l);
	smlog_unlock(l, &l->flush_mu, MUTEX_FLUSH);
	wake_waiters(l, n);
	return rc;
}

int sm_log_open(const char *path, int flags, const sm_options *opt, sm_log **out)
{
	int old = sm_nocancel();
	int rc = log_open(path, flags, opt, out);

	sm_cancel_restore(old);
	return rc;
}

int sm_log_append(sm_log *l, const void *rec, size_t len, uint64_t *lsn)
{
	int old = sm_nocancel();
	int rc = log_append(l, rec, len, lsn);

	sm_cancel_restore(old);
	return rc;
}

int sm_log_commit(sm_log *l)
{
	int old = sm_nocancel();
	int rc = log_commit(l);

	sm_cancel_restore(old);
	return rc;
}
