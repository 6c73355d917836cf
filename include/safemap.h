/* SPDX-License-Identifier: MIT */
/*
 * safemap.h - map regions of shared files safely.
 *
 * safemap lets cooperating processes map byte ranges of a shared file under
 * reader/writer OFD range locks, access them through bounds-checked volatile
 * accessors, and make writes durable with an explicit, fallible commit.
 *
 * Conventions (see safemap(7)):
 *  - every function returns 0 (or a count) on success and a negative errno
 *    value on failure; sm_strerror() explains each code;
 *  - nothing aborts and nothing prints;
 *  - every call whose failure means bytes were not read, written, marked or
 *    made durable (or a handle was not made) warns when its result is
 *    ignored (SM_WUR); sm_close, sm_release and the pure getters do not;
 *  - a zero length is -EINVAL, off + len beyond INT64_MAX is -ERANGE,
 *    an access outside a slice is -ERANGE, a write through a read slice or a
 *    read-only file is -EBADF.
 *
 * Caveats:
 *  - fork: slices are not usable in a child (see safemap(7), "fork and exec").
 *  - raw pointers from sm_unsafe_ptr() bypass every guarantee; writes through
 *    them must be reported with sm_mark_dirty() to be committed.
 *  - network filesystems: kernel locks are forwarded to the server, the
 *    in-process bookkeeping only sees this process.
 *  - commit promises durability, not atomicity: writes through a direct
 *    slice are visible to other processes at once and may reach the disk
 *    before any commit.
 *
 * Each function has a manual page: sm_open(3), sm_map_read(3), sm_lock(3),
 * sm_read(3), sm_get_u64(3), sm_commit(3), sm_strerror(3), and the overview
 * safemap(7).
 */
#ifndef SAFEMAP_H
#define SAFEMAP_H

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#  define SM_EXPORT __attribute__((visibility("default")))
#  define SM_WUR __attribute__((warn_unused_result))
#  define SM_LIKELY(x) __builtin_expect(!!(x), 1)
#else
#  define SM_EXPORT
#  define SM_WUR
#  define SM_LIKELY(x) (x)
#endif

#define SAFEMAP_VERSION_MAJOR 0
#define SAFEMAP_VERSION_MINOR 1

typedef struct sm_file sm_file;
typedef struct sm_slice sm_slice;
typedef struct sm_range sm_range;

/* sm_open() flags */
#define SM_RDONLY 0x0001 /* read slices only */
#define SM_RDWR 0x0002   /* read and write slices */
#define SM_CREATE 0x0004 /* create the file (mode 0666 & ~umask) if missing */

/* sm_map_read() / sm_map_write() flags */
#define SM_DIRECT 0x0000   /* shared mapping (the default) */
#define SM_BUFFERED 0x0010 /* private copy, written to the file only at commit */
#define SM_WAIT 0x0020     /* wait (bounded by sm_options.wait_ns) for a conflicting lock */
#define SM_EXTEND 0x0040   /* write slice may grow the file */
#define SM_POPULATE 0x0080 /* pre-fault the pages of the slice */
#define SM_NOLOCK 0x40000  /* coordination memory: no lock (see sm_map_read(3)) */
#define SM_RECOVER 0x80000 /* a recovery pass's slice: may overlap the bound changes a
			    * dead process left (after sm_redo_lsn on the file; see
			    * sm_redo_lsn(3)) */

/* sm_lock() / sm_test() flags: exactly one of the modes, plus SM_WAIT (sm_lock) */
#define SM_LOCK_READ 0x10000
#define SM_LOCK_WRITE 0x20000

/* sm_commit() flags */
#define SM_SYNC 0x0000  /* write back and wait (the default) */
#define SM_ASYNC 0x0100 /* start write-back, do not wait; pages stay dirty */

/*
 * Options for sm_open().  A zero-initialised struct gives the defaults.
 * Set .size to sizeof(sm_options) so that later versions of the library can
 * tell which fields the caller knows; 0 is accepted and means "this version".
 */
typedef struct sm_options {
	uint32_t size;  /* sizeof(sm_options), or 0 */
	uint32_t flags; /* SM_OPT_* */
	const char *tag; /* caller's label for its locks (shown by sm_holders, lockctl) */
	const char *table_dir; /* put lock tables here (named DEV-INO.smlock); NULL:
				* $SAFEMAP_TABLE_DIR, else PATH.smlock beside the file */
	uint64_t wait_ns; /* SM_WAIT bound in ns: 0 = 10 s, SM_WAIT_FOREVER = none */
	uint64_t create_size; /* with SM_CREATE: a file this call creates appears
			       * under its name already this long (zeros), so
			       * concurrent first openers all see it whole; an
			       * existing file is not resized.  0: empty */
	uint64_t reserved[3]; /* must be 0 */
} sm_options;

/* sm_options.wait_ns: wait without a bound (the caller's explicit choice) */
#define SM_WAIT_FOREVER UINT64_MAX

/* sm_options.flags */
#define SM_OPT_TABLE_REQUIRED 0x1u /* fail sm_open if the lock table is unusable */
#define SM_OPT_NO_TABLE 0x2u       /* do not use a lock table (kernel locks only) */
#define SM_OPT_REFUSE_NETFS 0x4u   /* sm_open fails with -EREMOTE on NFS/SMB/Ceph/FUSE */
/* Table-authority mode (see sm_open(3) and safemap(7)): the lock
 * table decides exclusion, so an uncontended slice makes no system call.
 * Every process using the file must use safemap in this mode; plain fcntl
 * writers are fenced off, plain fcntl readers are not.  Not with
 * SM_OPT_NO_TABLE (-EINVAL), nor on a network filesystem (-EREMOTE). */
#define SM_OPT_TABLE_LOCKS 0x8u

/* One holder of a region, from the lock table (sm_holders). */
#define SM_MODE_READ 1
#define SM_MODE_WRITE 2
#define SM_HELD 1
#define SM_WAITING 2
#define SM_STALE 3 /* its process is gone; the kernel lock went with it */
#define SM_PENDING 4  /* entry published, the kernel lock is being taken (or refused) */
#define SM_UNLOCKED 5 /* an SM_NOLOCK mapping: listed, but holds no lock */
#define SM_REMOTE 6   /* network filesystem: a lock the kernel reports that no
		       * holder of this host's table covers (another host's, or a
		       * program without safemap); pid from F_OFD_GETLK or 0 */
typedef struct sm_holder {
	uint32_t size;       /* sizeof(sm_holder) */
	int32_t pid, tid;    /* for display: pids are reused and differ across namespaces */
	uint64_t start_time; /* holder process start time, clock ticks since boot */
	uint64_t pidns;      /* inode of its pid namespace */
	char comm[16];       /* program name */
	char tag[32];        /* the acquisition's tag (sm_lock), else its sm_options.tag */
	int mode;            /* SM_MODE_READ / SM_MODE_WRITE */
	int state;           /* SM_HELD / SM_WAITING / SM_STALE / SM_PENDING / SM_UNLOCKED */
	uint64_t off, len;
	uint64_t since;      /* acquired at, ns since the epoch (CLOCK_REALTIME; held entries
			      * may use the coarse clock, a few ms early) */
} sm_holder;

/*
 * Public view of a slice, for the inline word accessors only.  Every sm_slice
 * begins with this struct; its layout is versioned by SM_VIEW_VERSION and is
 * part of the ABI.  Do not use its fields directly.
 */
#define SM_VIEW_VERSION 1
#define SM_VIEW_WRITE 0x1u
struct sm_view {
	unsigned char *base;            /* address of the slice's byte 0 */
	uint64_t len;                   /* slice length */
	const volatile uint32_t *state; /* nonzero: take the slow path */
	uint64_t *dirty;                /* page bitmap (write slices) */
	uint64_t dirty_off;             /* byte offset of base from the bitmap origin */
	uint32_t flags;                 /* SM_VIEW_WRITE */
	uint32_t page_shift;            /* log2 of the page size */
};

/* --- files ------------------------------------------------------------- */

/* Open (SM_CREATE: create) a shared file.  flags: SM_RDONLY or SM_RDWR, plus
 * SM_CREATE.  opt may be NULL; with SM_CREATE, opt->create_size creates
 * the file already that long, atomically for concurrent openers.  Errors:
 * -EINVAL (bad flags or options, SM_OPT_TABLE_LOCKS with SM_OPT_NO_TABLE,
 * create_size without SM_CREATE), -ERANGE (create_size beyond INT64_MAX),
 * -ENOMEM, any open(2) error
 * (-ENOENT, -EACCES, -EISDIR, ...), -EINVAL if the path is not a regular
 * file, -EREMOTE (network filesystem with SM_OPT_REFUSE_NETFS or
 * SM_OPT_TABLE_LOCKS), -EPROTO (the file is in use in the other lock mode,
 * or in table mode through another table; in table mode also a table that
 * fails validation while other owners are attached), -EBUSY (table mode: a
 * foreign write lock lies on the data file), -ENOLCK (table mode: no
 * liveness byte left), or the table's error in table mode.  See sm_open(3). */
SM_EXPORT SM_WUR int sm_open(const char *path, int flags, const sm_options *opt,
			     sm_file **out);

/* The same API over a buffer already in memory (len bytes at buf, which
 * must outlive the sm_file): in-process range locks only, commit is a
 * successful no-op, truncation cannot happen.  flags: SM_RDONLY or SM_RDWR.
 * Errors: -EINVAL, -ERANGE, -ENOMEM.  See sm_open(3). */
SM_EXPORT SM_WUR int sm_open_memory(void *buf, size_t len, int flags, sm_file **out);

/* Close a file.  With live slices the real close is deferred until the last
 * one is released; the slices stay usable.  Errors: -EINVAL (NULL), -EBADF
 * (already closing: a second sm_close while slices are live).  See sm_open(3). */
SM_EXPORT int sm_close(sm_file *f);

/* --- slices ------------------------------------------------------------ */

/* Map [off, off+len) under a read (sm_map_read) or write (sm_map_write) OFD
 * lock.  Errors: -EINVAL (NULL, zero length, unknown flags), -ERANGE (region
 * overflows or lies beyond end of file without SM_EXTEND), -EBUSY (a
 * conflicting lock is held by another process, another sm_file or, for
 * writes, any overlapping slice of this sm_file), -EBADF (write slice on a
 * read-only file), -ENOTSUP (SM_BUFFERED on a memory file),
 * -ENOSPC (blocks could
 * not be reserved), -ENOMEM, -ENOLCK, -ESTALE (fork child).  SM_BUFFERED
 * (write slices) makes a private copy that reaches the file only at
 * sm_commit.  SM_NOLOCK maps coordination memory: accessors, truncation
 * guard and commit, but no lock and no part in the file's in-process lock
 * counting (sm_lock ranges inside it are fine); other processes share it and
 * synchronise through sm_lock ranges and atomics; it is listed by
 * sm_holders as SM_UNLOCKED.  SM_NOLOCK with SM_BUFFERED or SM_WAIT is
 * -EINVAL.  SM_WAIT waits for conflicting holders instead of -EBUSY, up to
 * sm_options.wait_ns (0: 10 s), then -ETIMEDOUT; -EDEADLK if waiting would
 * deadlock (a wait-for cycle, or a conflict with f's own holds that only
 * the calling thread could release).  A waiting thread holds no mutex and
 * is a cancellation point.  Waiters have no priority over fail-fast
 * acquisitions: a waiter for a large region behind takers of its parts in
 * a loop may wait its whole bound unless the takers pass a gate (a byte
 * each holds in read mode, taken with SM_WAIT, that the large waiter takes
 * in write mode first); a taker refused with -EBUSY waits or backs off,
 * never retries at once in a loop.  See sm_map_read(3). */
SM_EXPORT SM_WUR int sm_map_read(sm_file *f, uint64_t off, uint64_t len, int flags,
				 sm_slice **out);
SM_EXPORT SM_WUR int sm_map_write(sm_file *f, uint64_t off, uint64_t len, int flags,
				  sm_slice **out);

/* sm_map_read / sm_map_write with a bound of this call's own instead of
 * sm_options.wait_ns: timeout_ns 0 fails fast (-EBUSY, as without SM_WAIT),
 * SM_WAIT_FOREVER waits without a bound, any other value waits up to
 * timeout_ns ns (CLOCK_MONOTONIC) and then returns -ETIMEDOUT.  SM_WAIT in
 * flags changes nothing; SM_NOLOCK with a nonzero timeout is -EINVAL.
 * Otherwise as sm_map_read (same flags, errors and waiting rules).  See
 * sm_map_read_timed(3). */
SM_EXPORT SM_WUR int sm_map_read_timed(sm_file *f, uint64_t off, uint64_t len, int flags,
				       uint64_t timeout_ns, sm_slice **out);
SM_EXPORT SM_WUR int sm_map_write_timed(sm_file *f, uint64_t off, uint64_t len, int flags,
					uint64_t timeout_ns, sm_slice **out);

/* Unlock and free a slice.  Never commits: uncommitted changes of a direct
 * slice stay in the page cache.  Returns 0, -EINVAL (NULL), or a negative
 * errno from unlocking; the slice is freed in every case. */
SM_EXPORT int sm_release(sm_slice *s);

/* A zero-copy view of [off, off+len) of s (off relative to s), sharing its
 * mapping or private copy, dirty state and lock; it keeps them alive after
 * s is released and may be handed to another thread.  Errors: -EINVAL,
 * -ERANGE, -ESTALE, -ENXIO, -ENOMEM.  See sm_sub(3). */
SM_EXPORT SM_WUR int sm_sub(sm_slice *s, uint64_t off, uint64_t len, sm_slice **out);

/* Turn a write slice into a read slice atomically (one F_OFD_SETLK converts
 * the kernel lock: no other writer can slip in).  Errors: -EINVAL (NULL, a
 * sub-slice or an SM_NOLOCK slice), -EBADF (not a write slice), -EBUSY (a buffered slice with
 * uncommitted changes, or live writable sub-slices), -ESTALE, -ENXIO.  A
 * direct slice's uncommitted changes stay in the page cache uncommitted:
 * commit first.  See sm_sub(3). */
SM_EXPORT SM_WUR int sm_downgrade(sm_slice *s);

/* Name the slice's lock table entry tag (at most 31 bytes are kept; NULL:
 * back to the file's sm_options.tag), as sm_lock's tag argument names a
 * range: lockctl and sm_holders then say e.g. "READ-2".  The entry belongs
 * to the acquisition, so a slice and its sub-slices share it.  Until it is
 * called the entry carries the file's tag.  Errors: -EINVAL (NULL),
 * -ESTALE (fork child), -ENOTSUP (no lock table: memory file,
 * SM_OPT_NO_TABLE) or why the table could not be opened.  See
 * sm_slice_tag(3). */
SM_EXPORT int sm_slice_tag(sm_slice *s, const char *tag);

/* The slice's file offset and length (0 for NULL). */
SM_EXPORT uint64_t sm_offset(const sm_slice *s);
SM_EXPORT uint64_t sm_length(const sm_slice *s);

/* --- accessors (see sm_read(3), sm_get_u64(3)) ----------------------------
 * off is relative to the slice.  Errors: -EINVAL (NULL or zero length),
 * -ERANGE (outside the slice), -EBADF (write through a read slice),
 * -ESTALE (fork child), -ENXIO (a page the access touched lies wholly beyond
 * the file's new end: another process truncated it; the slice is dead from
 * then on), -EIO/-ENOSPC (a page the file still covers could not be read or
 * allocated).  Bytes past end of file inside the last partial page read as
 * zero without an error, and writes there are lost (see safemap(7)). */
SM_EXPORT SM_WUR int sm_read(const sm_slice *s, uint64_t off, void *dst, size_t n);
SM_EXPORT SM_WUR int sm_write(sm_slice *s, uint64_t off, const void *src, size_t n);
SM_EXPORT SM_WUR int sm_fill(sm_slice *s, uint64_t off, int byte, size_t n);

#define SM__DECL_WORD(bits)                                                        \
	SM_EXPORT SM_WUR int sm_get_u##bits(const sm_slice *s, uint64_t off,       \
					    uint##bits##_t *out);                  \
	SM_EXPORT SM_WUR int sm_get_u##bits##_le(const sm_slice *s, uint64_t off,  \
						 uint##bits##_t *out);             \
	SM_EXPORT SM_WUR int sm_get_u##bits##_be(const sm_slice *s, uint64_t off,  \
						 uint##bits##_t *out);             \
	SM_EXPORT SM_WUR int sm_put_u##bits(sm_slice *s, uint64_t off, uint##bits##_t v); \
	SM_EXPORT SM_WUR int sm_put_u##bits##_le(sm_slice *s, uint64_t off, uint##bits##_t v); \
	SM_EXPORT SM_WUR int sm_put_u##bits##_be(sm_slice *s, uint64_t off, uint##bits##_t v);
SM__DECL_WORD(8)
SM__DECL_WORD(16)
SM__DECL_WORD(32)
SM__DECL_WORD(64)
#undef SM__DECL_WORD

/* Explicit escape: the raw address of the slice's byte 0.  No bounds, no
 * truncation safety; writes through it must be reported with sm_mark_dirty()
 * to be committed.  Errors: -EINVAL (NULL), -ESTALE, -ENXIO. */
SM_EXPORT SM_WUR int sm_unsafe_ptr(sm_slice *s, void **out);

/* Run fn(p, n, arg) on the slice's raw bytes under the fault guard and
 * return what fn returns, or -ENXIO if the file shrank under the slice
 * meanwhile (-EIO/-ENOSPC if a page the file still covers could not be
 * read or allocated).  The guard does not unwind: fn may lock and allocate,
 * and runs to completion, reading zeros from vanished pages.  Errors:
 * -EINVAL, -ESTALE, -ENXIO.  See sm_guarded(3). */
SM_EXPORT SM_WUR int sm_guarded(sm_slice *s, int (*fn)(void *p, size_t n, void *arg), void *arg);

/* For applications that install their own SIGBUS handler after safemap's
 * (the first sm_open installs safemap's): call this first from it.  Returns
 * 1 if the fault was on a safemap mapping and has been handled (return from
 * your handler), else 0.  Async-signal-safe; preserves errno. */
SM_EXPORT int sm_handle_sigbus(int sig, siginfo_t *info, void *uctx);

/* Record that [off, off+len) of a write slice was changed outside the
 * accessors.  Errors: -EINVAL, -ERANGE, -EBADF (read slice). */
SM_EXPORT SM_WUR int sm_mark_dirty(sm_slice *s, uint64_t off, uint64_t len);

/* --- commit (see sm_commit(3)) -------------------------------------------- */

/* Make the dirty pages of a write slice durable (msync MS_SYNC), or with
 * SM_ASYNC start their write-back.  Errors: -EINVAL, -EBADF (read slice),
 * -ENXIO (the file shrank under the slice), and the error of the flush
 * (-EIO, -ENOSPC, ...).  A failed commit leaves the slice dirty and poisons
 * the sm_file: its later commits return the same error until it is reopened,
 * since Linux reports a write-back error once and then marks pages clean. */
SM_EXPORT SM_WUR int sm_commit(sm_slice *s, int flags);

/* Commit many slices: every slice's dirty pages are written first, then
 * each distinct file is flushed once (fdatasync).  Returns 0 or the first
 * error; slices whose file was flushed are clean, the others still dirty
 * (ask sm_dirty_pages()).  A slice may appear once (-EINVAL otherwise).
 * Errors: as sm_commit.  See sm_commit(3). */
SM_EXPORT SM_WUR int sm_commit_many(sm_slice **v, size_t n, int flags);

/* Drop the uncommitted changes of a buffered slice (its dirty pages are
 * read again from the file).  Errors: -EINVAL, -EBADF (read slice),
 * -ENOTSUP (direct slice: its writes are already in the page cache),
 * -ESTALE, and a pread error.  See sm_commit(3). */
SM_EXPORT SM_WUR int sm_abort(sm_slice *s);

/* Number of dirty (uncommitted) pages in the slice's range, 0 when clean.
 * Errors: -EINVAL. */
SM_EXPORT int sm_dirty_pages(const sm_slice *s);

/* --- range locks without a mapping (see sm_lock(3)) -------------------- */

/* Lock [off, off+len) of f: flags SM_LOCK_READ or SM_LOCK_WRITE.  No mapping
 * and no size check: the range may lie past end of file (it never grows the
 * file).  Same protocol as a slice's lock: an OFD lock, the same in-process
 * counting (a range conflicts with the file's overlapping slices and ranges
 * as slices do with each other: reads share, a write conflicts with any
 * overlap, and a read lock is never turned into a write lock in place), a
 * lock table entry named tag (at most 31 bytes are kept; NULL: the file's
 * sm_options.tag), published before the kernel lock is taken so that a
 * refused process can name the holder.
 * sm_close with live ranges is deferred to the last sm_unlock.  Errors:
 * -EINVAL (NULL f or out, zero length, not exactly one mode, unknown flags),
 * -ERANGE (off + len beyond 2^62: the bytes from 2^62 on are the library's
 * own lock bytes), -EBADF (write lock on a read-only
 * file, or f is closing), -EBUSY (held elsewhere, or conflicting with a slice
 * or range of f), -ETIMEDOUT / -EDEADLK (SM_WAIT, as sm_map_read),
 * -ESTALE (fork child), -ENOLCK (lock table full, or kernel lock table), -ENOMEM. */
SM_EXPORT SM_WUR int sm_lock(sm_file *f, uint64_t off, uint64_t len, int flags, const char *tag,
			     sm_range **out);

/* sm_lock with a bound of this call's own instead of sm_options.wait_ns:
 * timeout_ns 0 fails fast (-EBUSY), SM_WAIT_FOREVER waits without a bound,
 * any other value waits up to timeout_ns ns (CLOCK_MONOTONIC), then
 * -ETIMEDOUT.  SM_WAIT in flags changes nothing.  Otherwise as sm_lock.
 * See sm_map_read_timed(3). */
SM_EXPORT SM_WUR int sm_lock_timed(sm_file *f, uint64_t off, uint64_t len, int flags,
				   uint64_t timeout_ns, const char *tag, sm_range **out);

/* Unlock and free a range; its table entry is removed after the kernel lock
 * is dropped.  Errors: -EINVAL (NULL), -ESTALE (fork child: r is freed but
 * the bytes stay locked, they are the parent's), or an unlock error; r is
 * freed in every case. */
SM_EXPORT int sm_unlock(sm_range *r);

/* Would sm_lock(f, off, len, flags) succeed now?  0 free, -EBUSY held by
 * another process or sm_file (F_OFD_GETLK) or conflicting with a slice or
 * range of f (sm_holders names who).  Never locks; the answer may be stale
 * by the time it returns.  Errors: -EINVAL (as sm_lock, or SM_WAIT),
 * -ERANGE, -EBADF (write test on a read-only file), -ESTALE. */
SM_EXPORT SM_WUR int sm_test(sm_file *f, uint64_t off, uint64_t len, int flags);

/* --- holders ------------------------------------------------------------ */

/* Who holds regions overlapping [off, off+len): fills up to cap entries of
 * out and returns how many holders overlap (which may exceed cap), like
 * snprintf.  Includes this process's own slices and ranges, pending
 * acquisitions (SM_PENDING) and SM_NOLOCK mappings (SM_UNLOCKED, which
 * hold no lock: skip them when naming who refused a lock).  Errors: -EINVAL, -ERANGE,
 * -ENOTSUP (no lock table: memory file, SM_OPT_NO_TABLE), or why the table
 * could not be opened.  See sm_holders(3). */
SM_EXPORT int sm_holders(sm_file *f, uint64_t off, uint64_t len, sm_holder *out, size_t cap);

/* --- errors ------------------------------------------------------------ */

/* A static, human-readable explanation of a code returned by safemap
 * (negative or positive errno value, or 0).  Never NULL. */
SM_EXPORT const char *sm_strerror(int err);

/* --- inline fast paths --------------------------------------------------
 * The word accessors are also available as inline functions over the public
 * view: bounds check, one access, then one load of the view's state word.
 * sm__access_fail() computes the precise error when a check fails.  Define
 * SM_NO_INLINE before including this header to call the library functions.
 *
 * The getters read the view's base, length and state pointer before any
 * check, and sm__access_fail is declared pure (it changes nothing the
 * caller can see: only the slice's private sticky error): so in a loop over
 * a slice the compiler keeps all three in registers, and what stays per
 * word is one compare, the volatile load of the word and the volatile load
 * of the state word (which the fault handler sets when a page vanishes:
 * it must be reloaded after every access, and is).
 */
#if defined(__GNUC__)
SM_EXPORT __attribute__((pure)) int sm__access_fail(const sm_slice *s, uint64_t off, uint64_t n,
						    int write);
#else
SM_EXPORT int sm__access_fail(const sm_slice *s, uint64_t off, uint64_t n, int write);
#endif

#if defined(__GNUC__)

struct sm__u16 { uint16_t v; } __attribute__((packed, may_alias));
struct sm__u32 { uint32_t v; } __attribute__((packed, may_alias));
struct sm__u64 { uint64_t v; } __attribute__((packed, may_alias));
struct sm__u8 { uint8_t v; } __attribute__((packed, may_alias));

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#  define SM__LE(bits, x) (x)
#  define SM__BE(bits, x) SM__SWAP##bits(x)
#else
#  define SM__LE(bits, x) SM__SWAP##bits(x)
#  define SM__BE(bits, x) (x)
#endif
#define SM__SWAP8(x) (x)
#define SM__SWAP16(x) __builtin_bswap16(x)
#define SM__SWAP32(x) __builtin_bswap32(x)
#define SM__SWAP64(x) __builtin_bswap64(x)
#define SM__NATIVE(bits, x) (x)

static inline void sm__mark(const struct sm_view *v, uint64_t off, unsigned n)
{
	uint64_t first = (v->dirty_off + off) >> v->page_shift;
	uint64_t last = (v->dirty_off + off + n - 1) >> v->page_shift;
	for (uint64_t p = first; p <= last; p++) {
		uint64_t bit = (uint64_t)1 << (p & 63);
		if (!(__atomic_load_n(&v->dirty[p >> 6], __ATOMIC_RELAXED) & bit))
			__atomic_fetch_or(&v->dirty[p >> 6], bit, __ATOMIC_RELAXED);
	}
}

/* A fast-path check failed before the access: always an error, which the
 * compiler can see (so callers get no maybe-uninitialized warnings). */
static inline int sm__inline_fail(const sm_slice *s, uint64_t off, unsigned n, int write,
				  int have_out)
{
	int rc = have_out ? sm__access_fail(s, off, n, write) : -EINVAL;
	return rc < 0 ? rc : -ERANGE;
}

#define SM__INLINE_WORD(bits, name, conv)                                             \
	SM_WUR static inline int sm__inline_get_u##bits##name(const sm_slice *s, uint64_t off, \
						       uint##bits##_t *out)          \
	{                                                                             \
		const struct sm_view *v = (const struct sm_view *)s;                  \
		const unsigned char *b_ = 0;                                          \
		const volatile uint32_t *st_ = 0;                                     \
		uint64_t l_ = 0;                                                      \
		if (SM_LIKELY(s != 0))                                                \
			b_ = v->base, l_ = v->len, st_ = v->state;                    \
		if (SM_LIKELY(s && out && l_ >= sizeof(uint##bits##_t) &&             \
			      off <= l_ - sizeof(uint##bits##_t))) {                  \
			uint##bits##_t x =                                            \
				((const volatile struct sm__u##bits *)(b_ + off))->v;   \
			int rc_;                                                      \
			if (SM_LIKELY(*st_ == 0) ||                                   \
			    (rc_ = sm__access_fail(s, off, sizeof(x), 0)) >= 0) {     \
				*out = conv(bits, x);                                 \
				return 0;                                             \
			}                                                             \
			return rc_;                                                   \
		}                                                                     \
		return sm__inline_fail(s, off, sizeof(uint##bits##_t), 0, out != 0);  \
	}                                                                             \
	SM_WUR static inline int sm__inline_put_u##bits##name(sm_slice *s, uint64_t off,     \
						       uint##bits##_t x)             \
	{                                                                             \
		const struct sm_view *v = (const struct sm_view *)s;                  \
		if (SM_LIKELY(s && (v->flags & SM_VIEW_WRITE) && off < v->len &&      \
			      v->len - off >= sizeof(uint##bits##_t))) {              \
			int rc_;                                                      \
			((volatile struct sm__u##bits *)(v->base + off))->v = conv(bits, x); \
			if (SM_LIKELY(*v->state == 0) ||                              \
			    (rc_ = sm__access_fail(s, off, sizeof(x), 1)) >= 0) {     \
				sm__mark(v, off, sizeof(uint##bits##_t));             \
				return 0;                                             \
			}                                                             \
			return rc_;                                                   \
		}                                                                     \
		return sm__inline_fail(s, off, sizeof(uint##bits##_t), 1, 1);        \
	}

#define SM__INLINE_ALL(bits)                  \
	SM__INLINE_WORD(bits, , SM__NATIVE)   \
	SM__INLINE_WORD(bits, _le, SM__LE)    \
	SM__INLINE_WORD(bits, _be, SM__BE)
SM__INLINE_ALL(8)
SM__INLINE_ALL(16)
SM__INLINE_ALL(32)
SM__INLINE_ALL(64)
#undef SM__INLINE_ALL
#undef SM__INLINE_WORD

#if !defined(SM_NO_INLINE) && !defined(SM_BUILDING_LIBRARY)
/* Function-like macros: (sm_get_u64)(...) and &sm_get_u64 still reach the
 * exported functions. */
#define sm_get_u8(s, o, p) sm__inline_get_u8(s, o, p)
#define sm_get_u8_le(s, o, p) sm__inline_get_u8_le(s, o, p)
#define sm_get_u8_be(s, o, p) sm__inline_get_u8_be(s, o, p)
#define sm_get_u16(s, o, p) sm__inline_get_u16(s, o, p)
#define sm_get_u16_le(s, o, p) sm__inline_get_u16_le(s, o, p)
#define sm_get_u16_be(s, o, p) sm__inline_get_u16_be(s, o, p)
#define sm_get_u32(s, o, p) sm__inline_get_u32(s, o, p)
#define sm_get_u32_le(s, o, p) sm__inline_get_u32_le(s, o, p)
#define sm_get_u32_be(s, o, p) sm__inline_get_u32_be(s, o, p)
#define sm_get_u64(s, o, p) sm__inline_get_u64(s, o, p)
#define sm_get_u64_le(s, o, p) sm__inline_get_u64_le(s, o, p)
#define sm_get_u64_be(s, o, p) sm__inline_get_u64_be(s, o, p)
#define sm_put_u8(s, o, v) sm__inline_put_u8(s, o, v)
#define sm_put_u8_le(s, o, v) sm__inline_put_u8_le(s, o, v)
#define sm_put_u8_be(s, o, v) sm__inline_put_u8_be(s, o, v)
#define sm_put_u16(s, o, v) sm__inline_put_u16(s, o, v)
#define sm_put_u16_le(s, o, v) sm__inline_put_u16_le(s, o, v)
#define sm_put_u16_be(s, o, v) sm__inline_put_u16_be(s, o, v)
#define sm_put_u32(s, o, v) sm__inline_put_u32(s, o, v)
#define sm_put_u32_le(s, o, v) sm__inline_put_u32_le(s, o, v)
#define sm_put_u32_be(s, o, v) sm__inline_put_u32_be(s, o, v)
#define sm_put_u64(s, o, v) sm__inline_put_u64(s, o, v)
#define sm_put_u64_le(s, o, v) sm__inline_put_u64_le(s, o, v)
#define sm_put_u64_be(s, o, v) sm__inline_put_u64_be(s, o, v)
#endif /* !SM_NO_INLINE */
#endif /* __GNUC__ */


/* --- logs and objects (see sm_log(3), sm_object(3)) -----------------------
 * Small layers over slices.  Same conventions: 0 (or a count) on success, a
 * negative errno on failure; nothing aborts.
 */
typedef struct sm_log sm_log;
typedef struct sm_log_iter sm_log_iter;
typedef struct sm_object sm_object;

/* Open (SM_CREATE: create and initialise) a log.  flags: SM_RDONLY or
 * SM_RDWR, plus SM_CREATE (with SM_RDWR only).  opt as for sm_open (may be
 * NULL).  A read-write open repairs the tail after a crash (a torn or lost
 * record past the committed tail is cut) and commits whole records left
 * there.  Errors: as sm_open, and -EINVAL (bad flags, or the file is not a
 * log of this version), -EBADMSG (corrupt header), -EIO/-ENOSPC (writing
 * or flushing a new header, or the repair's commit). */
SM_EXPORT SM_WUR int sm_log_open(const char *path, int flags, const sm_options *opt,
				 sm_log **out);

/* Append one record (len bytes at rec) at the tail; *lsn (if lsn is not
 * NULL) receives its LSN, the byte offset of its frame in the file.
 * Records of several threads and processes interleave whole.  The record is
 * visible to iterators only after a commit (of any process).  Errors:
 * -EINVAL (NULL, zero length), -EBADF (read-only log), -ERANGE (record
 * longer than 4 GiB - 64, or the log would pass INT64_MAX), -ENOSPC (space
 * for it could not be reserved: never a SIGBUS later), -ESTALE (used in a
 * fork child), -EBADMSG (corrupt tail slot), -EIO (writing the record or
 * the tail slot), -ENOMEM. */
SM_EXPORT SM_WUR int sm_log_append(sm_log *log, const void *rec, size_t len, uint64_t *lsn);

/* Make every record appended so far (by any process) durable with one
 * fdatasync shared by concurrent committers (group commit), then publish
 * the committed tail.  Errors: -EINVAL, -EBADF (read-only log), -ESTALE,
 * -EBADMSG (corrupt header), and the flush's error (-EIO, -ENOSPC, ...),
 * which is sticky: later commits through this handle return it, since Linux
 * reports a write-back error once and then marks the pages clean. */
SM_EXPORT SM_WUR int sm_log_commit(sm_log *log);

/* Close a log.  Record slices from its iterators stay valid until released.
 * Errors: -EINVAL (NULL), -EBUSY (iterators still open: close them first;
 * the log stays open). */
SM_EXPORT int sm_log_close(sm_log *log);

/* An iterator over committed records, from from_lsn: 0 (the first retained
 * record), a committed record's LSN, or the committed tail (to wait for new
 * records).  Errors: -EINVAL (NULL, or from_lsn is none of those, or below
 * the log's first-ever record), -ESTALE (from_lsn was discarded by
 * sm_log_trim, in any process; or used in a fork child), -EBADMSG,
 * -ENOMEM, and errors of sm_map_read. */
SM_EXPORT SM_WUR int sm_log_iter_open(sm_log *log, uint64_t from_lsn, sm_log_iter **out);

/* The next committed record: returns 1 with *rec a read slice of its payload
 * (zero-copy, framing excluded; the caller releases it) and *lsn (if not
 * NULL) its LSN; 0 at the committed tail (call again later to see records
 * committed since); or an error: -EINVAL, -EBADMSG (a committed record
 * fails its checksum: the file was damaged; the iterator stays before it),
 * -ESTALE (the next record was discarded by sm_log_trim: open a new
 * iterator), -ENXIO (the log was truncated), and errors of
 * sm_map_read/sm_sub. */
SM_EXPORT SM_WUR int sm_log_iter_next(sm_log_iter *it, sm_slice **rec, uint64_t *lsn);

/* The next committed record without a slice, for hot loops (the checksum is
 * checked all the same): returns 1 with *rec pointing at its payload inside
 * the iterator's mapping, *len its length and *lsn (if not NULL) its LSN,
 * valid until the next call on the iterator or its close; 0 at the committed
 * tail; or the errors of sm_log_iter_next.  The bytes are under the fault
 * guard as sm_unsafe_ptr's: if the log is truncated meanwhile they read as
 * zeros and the next call returns -ENXIO.  See sm_log_iter_next(3). */
SM_EXPORT SM_WUR int sm_log_iter_next_ptr(sm_log_iter *it, const void **rec, size_t *len,
					  uint64_t *lsn);

/* Free an iterator (record slices it returned stay valid).  Errors: -EINVAL. */
SM_EXPORT int sm_log_iter_close(sm_log_iter *it);

/* Discard every record whose LSN is below lsn (a checkpoint's trim): lsn is
 * a committed record's LSN or the committed tail.  LSNs never change; the
 * disk space below lsn goes back to the filesystem (holes are punched; less
 * than 4 KiB is kept, plus what a live record slice or iterator window of
 * any process still maps: that is never changed under it and is given back
 * by a later trim).  Durable before it returns, and safe to be killed at
 * any point (a trim is either done or not; a done trim is never undone).
 * Afterwards every process's iterators below lsn get -ESTALE, and
 * sm_log_iter_open(log, 0) starts at lsn.  An lsn at or below the first
 * retained record returns 0 (so concurrent checkpoints never fail).
 * Errors: -EINVAL (NULL, lsn above the committed tail or not a record
 * boundary), -EBADF (read-only log), -ESTALE (fork child), -EBADMSG
 * (corrupt header), -EIO/-ENOSPC (flushing the new trim point: the handle
 * is then failed, as after a failed sm_log_commit), -ENOMEM. */
SM_EXPORT SM_WUR int sm_log_trim(sm_log *log, uint64_t lsn);

/* --- write-ahead logging of mapped pages (a cache recoverable by a log) -- */

/* Bind a buffered write slice's changes to the records of log that describe
 * them: the changes made so far are described by records from the slice's
 * first bound LSN up to and including the record at lsn (appended through
 * any handle of that log file).  Bind each record as you append it (at
 * least the first record that changes a clean slice) and before you
 * acknowledge the write.  From then on every commit of the slice (sm_commit,
 * sm_commit_many, SM_SYNC or SM_ASYNC) first commits the log up to its
 * highest bound record, as sm_log_commit does, and only then writes pages:
 * no page byte reaches the file before its records are durable.  The
 * binding is held, in every process's view, until the slice's pages are
 * synced (an SM_SYNC commit; after an SM_ASYNC commit until a later flush
 * of the file by a commit in this process) or sm_redo_done clears it; while
 * held, sm_log_trim (any process) never discards a record at or above its
 * first LSN, and sm_redo_lsn reports it, also after the binder died or the
 * machine lost power.  Repeated binds keep the lowest LSN for redo and the
 * highest for the flush.  A failed commit keeps the binding; releasing or
 * aborting a dirty bound slice drops it (its changes are discarded, and
 * the log still describes them).  One log handle per slice.
 * Errors: -EINVAL (NULL, a direct or read slice, lsn not a record boundary
 * or beyond the appended tail, the slice bound through another log handle),
 * -EBADF (read-only log), -ESTALE (lsn was discarded, or is being
 * discarded, by sm_log_trim; fork child), -ENOSPC (the log's bindings area
 * is full: 48 entries, one per open log handle and data file it has bound,
 * plus dead holders' until sm_redo_done), -ENOMEM, errors of the slice
 * (sm_slice_error). */
SM_EXPORT SM_WUR int sm_slice_set_lsn(sm_slice *s, sm_log *log, uint64_t lsn);

/* The redo point of f in log: the lowest first-bound LSN of every binding of
 * f to log still held, by any process, live or dead, or the log's committed
 * tail if that is lower.  A checkpoint commits the dirty slices, calls
 * this, then sm_log_trim(log, *lsn); recovery replays the log from *lsn.
 * Also notes which holders are dead now, for sm_redo_done.
 * Errors: -EINVAL (NULL), -ENOTSUP (f has no shared lock table:
 * SM_OPT_NO_TABLE, a memory file, or the table could not be opened),
 * -ESTALE (fork child), -EBADMSG (corrupt log header), -ENOMEM. */
SM_EXPORT SM_WUR int sm_redo_lsn(sm_file *f, sm_log *log, uint64_t *lsn);

/* End a recovery pass: the log was replayed into f up to lsn (a committed
 * record's LSN or the committed tail) and f was synced.  The bindings of f
 * whose holder was already dead at this caller's last sm_redo_lsn(f, log)
 * and whose highest bound LSN is below lsn stop counting; one that reaches
 * lsn or beyond counts from lsn on.  Live holders' bindings are never
 * touched.  Errors: -EINVAL (NULL, lsn not a committed record nor the
 * committed tail, or trimmed), -EBADF (read-only log), -ENOTSUP (as
 * sm_redo_lsn), -ESTALE (fork child), -EBADMSG, -ENOMEM. */
SM_EXPORT SM_WUR int sm_redo_done(sm_file *f, sm_log *log, uint64_t lsn);

/* sm_object_create() flags */
#define SM_OBJECT_REPLACE 0x1 /* sm_object_publish may replace an existing name */

/* Start an object that will appear under dir/name only when published: an
 * unnamed file in dir (O_TMPFILE where the filesystem supports it, else a
 * hidden name ".NAME.XXXXXX.smtmp" removed on abort).  Objects use no lock
 * table.  Errors: -EINVAL (NULL, empty name, a name with '/', "." or "..",
 * unknown flags), -ENOMEM, and open(2) errors (-ENOENT, -EACCES, ...). */
SM_EXPORT SM_WUR int sm_object_create(const char *dir, const char *name, int flags,
				      sm_object **out);

/* A write slice over [off, off+len) of the object, growing it as needed
 * (direct, blocks reserved).  Release it before publishing.  Errors: as
 * sm_map_write (-EINVAL, -ERANGE, -ENOSPC, -EBUSY for an overlapping live
 * slice, ...). */
SM_EXPORT SM_WUR int sm_object_map(sm_object *o, uint64_t off, uint64_t len, sm_slice **out);

/* Make the object durable (fdatasync), link it under its name atomically
 * (linkat; with SM_OBJECT_REPLACE a rename over an existing name), then
 * fsync the directory.  Frees the object on success only; after an error
 * the caller still owns it (and usually aborts it).  Errors: -EINVAL,
 * -EBUSY (live slices), -EEXIST (the name exists, without
 * SM_OBJECT_REPLACE), -EIO/-ENOSPC (the flush; sticky for this object),
 * and linkat/renameat/fsync errors.  If only the directory fsync fails the
 * name is already visible: the error is returned and abort cannot take the
 * name back. */
SM_EXPORT SM_WUR int sm_object_publish(sm_object *o);

/* Drop an unpublished object: nothing is left under its name or beside it.
 * Slices of it stay usable until released.  Errors: -EINVAL (NULL). */
SM_EXPORT int sm_object_abort(sm_object *o);

#ifdef __cplusplus
}
#endif
#endif /* SAFEMAP_H */
