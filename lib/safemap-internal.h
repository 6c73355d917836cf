/* SPDX-License-Identifier: MIT */
/*
 * safemap-internal.h - the one private header of libsafemap.
 *
 * Shared by the lib/ sources and by the private test build (libsafemap-internal.la),
 * never installed.  Objects:
 *   sm_file  - one open file description, its in-process range bookkeeping
 *              (ranges.c), its mapping cache (map.c) and its slices.
 *   sm_map   - one mmap'ed window, refcounted by the slices that use it.
 *   sm_slice - a locked byte range; begins with the public struct sm_view.
 */
#ifndef SAFEMAP_INTERNAL_H
#define SAFEMAP_INTERNAL_H

/* The library is compiled with -DSM_BUILDING_LIBRARY (Makefile.am), so
 * safemap.h gives it the exported accessors, not the inline macros. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <bsd/sys/queue.h>
#include <bsd/sys/tree.h>

#include "safemap.h"
#include "table.h"

#define SM_HIDDEN __attribute__((visibility("hidden")))
/* The lock path (issue 14): grouped in .text.hot, a few pages of code. */
#define SM_HOT __attribute__((hot))

/* libbsd's RB_GENERATE_STATIC needs a __unused macro it does not define. */
#define SM_RB_GENERATE_STATIC(name, type, field, cmp) \
	RB_GENERATE_INTERNAL(name, type, field, cmp, __attribute__((unused, hot)) static)

/* Mapping cache geometry: window k maps file bytes [k*STEP, k*STEP + SPAN).
 * Windows overlap by half, so every slice of at most STEP bytes fits in the
 * window of the step its first page lies in, whatever its alignment. */
#define SM_WINDOW_STEP ((uint64_t)1 << 20)
#define SM_WINDOW_SPAN (2 * SM_WINDOW_STEP)
/* Idle windows kept mapped for reuse, per sm_file (bounds VMAs and memory). */
#define SM_IDLE_MAX 64

/* sm_map.state: nonzero sends the inline accessors to the slow path. */
#define SM_MAP_OK 0u
#define SM_MAP_DEAD 1u  /* a page of the window vanished (file shrank) */
#define SM_MAP_STALE 2u /* this process is a fork child of the mapper */

/* One run of bytes with the same in-process lock state (ranges.c).  Runs are
 * disjoint; a read run counts the read slices covering it, a write run
 * belongs to exactly one write slice. */
struct sm_seg {
	RB_ENTRY(sm_seg) rb;
	uint64_t start, end; /* [start, end) */
	uint32_t count;      /* read slices covering the run */
	bool write;
	struct sm_seg *next; /* in a free list while not in the tree */
};
RB_HEAD(sm_segtree, sm_seg);

struct sm_map {
	RB_ENTRY(sm_map) rb;     /* in f->maps (cached windows only) */
	LIST_ENTRY(sm_map) all;  /* in f->all_maps (every mapping) */
	RB_ENTRY(sm_map) by_addr; /* in the process-wide fault registry */
	TAILQ_ENTRY(sm_map) lru; /* in f->idle while refs == 0 */
	unsigned char *addr;
	uint64_t foff, len; /* file offset and length of the mapping */
	uint64_t key;       /* window index << 1 | writable */
	unsigned long refs;
	bool cached, writable;
	bool anon;     /* private copy or caller's buffer: not in the fault registry */
	bool borrowed; /* the caller's buffer (sm_open_memory): never unmapped */
	volatile uint32_t state; /* SM_MAP_* */
	/* Pages the fault handler replaced with zero pages (fault.c), as
	 * known at fault time: the lowest file offset of one that lay beyond
	 * end of file (UINT64_MAX: none), and the span of those the file
	 * still covered (lost_io_lo > lost_io_hi: none).  fd: the mapped
	 * file, for the handler's fstat (-1: unknown). */
	uint64_t lost_eof, lost_io_lo, lost_io_hi;
	int fd;
};
RB_HEAD(sm_maptree, sm_map);
TAILQ_HEAD(sm_maplist, sm_map);
LIST_HEAD(sm_mapall, sm_map);

/* An attached lock table (table.c). */
struct smt_table {
	int fd;
	void *base;
	size_t size;
	struct smt_header hdr; /* validated copy */
	struct smt_slot *slots;
	uint32_t nslots;
	uint32_t owner;   /* our liveness byte, when owner_held */
	bool owner_held;
	uint32_t hint;    /* next slot to try */
	/* set by the mode's prepare hook for claim_owner: false leaves byte k
	 * alone (table mode bumps area k's incarnation before the byte is
	 * locked, tmode.c) */
	bool (*before_claim)(void *arg, uint32_t k);
	void *mode_arg;
	struct sm_map *guard; /* registers the mapping with the SIGBUS guard */
	char *path;       /* where sm_table_open found it (NULL in lockctl) */
	/* our own part of the header's fence counts (fence.c): where they are
	 * all ours, an acquisition has nothing to look for.  own_fence_seq is
	 * odd while a thread of ours changes both (readers then scan) */
	uint32_t own_fence_seq;
	uint32_t own_fence_n;
	uint32_t own_fence[SMT_FENCE_BUCKETS];
};

struct sm_file {
	pthread_mutex_t lock; /* guards everything below but fd and flags */
	int fd;
	int flags; /* SM_RDONLY / SM_RDWR */
	pid_t pid; /* of the opener: a child after fork must not unlock */
	struct sm_segtree segs;
	struct sm_seg *seg_pool; /* free nodes kept for reuse */
	unsigned nseg_pool;
	unsigned seg_reserved; /* of them, owed to read holds' releases (ranges.c) */
	struct sm_range *range_pool; /* free sm_lock ranges kept for reuse (lock.c) */
	unsigned nrange_pool;
	struct sm_slice *slice_pool; /* free slices and holds kept for reuse (slice.c) */
	struct sm_hold *hold_pool;
	unsigned nslice_pool, nhold_pool;
	struct sm_maptree maps;
	struct sm_maplist idle;
	unsigned nidle;
	/* private copies of released buffered slices kept for reuse (map.c):
	 * a put maps and unmaps none, and a process's threads do not take
	 * turns at its address-space lock for them */
	struct sm_maplist anon_pool;
	unsigned nanon_pool;
	struct sm_mapall all_maps;
	LIST_ENTRY(sm_file) registry; /* in the process's list of files (fork.c) */
	unsigned long nslices;
	bool closing;
	int poison; /* first failed direct commit (negative errno), or 0 */
	char *tag;
	/* sm_open_memory: the caller's buffer, no descriptor, no kernel locks */
	bool memory;
	unsigned char *mem;
	uint64_t mem_len;
	struct sm_map *mem_map;
	struct smt_table *table; /* NULL: no table (memory file, option, or error) */
	int table_err;           /* why there is no table */
	bool netfs;              /* on a network filesystem: the table sees this host only */
	uint64_t wait_ns;        /* sm_options.wait_ns (wait.c) */
	/* table-authority mode (tmode.c): NULL in kernel-lock mode */
	struct sm_tmode *tmode;
	uint64_t size_cache; /* file size as last seen (tmode: trusted for read slices below it) */
	/* device and inode, once redo.c needed them (id_ok, under lock) */
	uint64_t id_dev, id_ino;
	bool id_ok;
	/* the logs sm_redo_lsn was asked about on it (their fence keys, fence.c):
	 * its SM_RECOVER slices pass those logs' fences */
	uint32_t redo_keys[4];
	unsigned nredo_keys;
};

/* What a slice and its sub-slices share: the lock, the mapping (a window,
 * or the private copy of a buffered slice) and the dirty-page bitmap.
 * Freed, and the range unlocked, when the last slice using it is released. */
struct sm_hold {
	sm_file *f;
	struct sm_map *map;
	uint64_t off, len;     /* the locked range */
	uint64_t dirty_origin; /* file offset of dirty bit 0 (page aligned) */
	size_t dirty_words;
	uint64_t *dirty;       /* page bitmap (write holds) */
	uint64_t *flight;      /* pages a commit is writing (same allocation) */
	bool write;            /* lock mode */
	bool buffered;         /* map is a private copy, written at commit */
	bool need_sync;        /* sm_commit_many: written, awaiting its file's flush */
	bool nolock;           /* SM_NOLOCK mapping: no lock, not in f->segs */
	unsigned long refs;    /* slices using this hold; guarded by f->lock */
	unsigned long wsubs;   /* live writable sub-slices; guarded by f->lock */
	int32_t slot;          /* lock table slot, or -1 */
	struct sm_bind *bind;  /* its binding to log records (redo.c), or NULL */
	bool fenced;           /* its slot carries SMT_SF_BOUND (fence.c) */
	bool recover;          /* mapped with SM_RECOVER */
};

/* An sm_lock range: a hold without a mapping (lock.c). */
struct sm_range {
	struct sm_hold h;
	struct sm_range *next; /* in f->range_pool while free */
};

struct sm_slice {
	struct sm_view v; /* first: the inline accessors cast to it */
	struct sm_hold *h;
	sm_file *f;          /* == h->f */
	struct sm_map *map;  /* == h->map */
	uint64_t off, len;   /* this view's file range */
	bool write;          /* writable view (false after sm_downgrade) */
	bool sub;            /* made by sm_sub */
	int dead; /* negative errno once the slice lost a page; sticky */
};
/* --- redo.c: buffered slices bound to log records (write-ahead) ------
 * commit.c and slice.c call redo.c only through these hooks, which redo.c
 * installs at the first bind (no commit.c <-> redo.c circle).  Every hook
 * is called only for a hold with h->bind set (so sm_bind_ops is set). */
struct sm_bind;
struct sm_bind_ops {
	/* Before a commit writes any page of h: commit the log up to h's
	 * highest bound record (0, or the log's error: write nothing). */
	int (*before_write)(struct sm_hold *h);
	/* After a commit or an abort of h: how is SM_BIND_SYNCED (an SM_SYNC
	 * commit flushed the file), SM_BIND_ASYNC (pages written, not
	 * flushed) or SM_BIND_ABORTED. */
	void (*after)(struct sm_hold *h, int how);
	/* The last slice of h is released; caller holds h->f->lock. */
	void (*hold_gone)(struct sm_hold *h);
	/* A commit flushed f; bindings detached at or before epoch are synced. */
	void (*file_synced)(sm_file *f, uint64_t epoch);
};
#define SM_BIND_SYNCED 1
#define SM_BIND_ASYNC 2
#define SM_BIND_ABORTED 3
#define SM_BIND_CLEAN 4 /* an SM_SYNC commit found nothing to write */
SM_HIDDEN extern const struct sm_bind_ops *sm_bind_ops;
/* Detached bindings waiting for a flush of their file (atomic), and the
 * epoch counter that orders their detaching against a flush's start. */
SM_HIDDEN extern unsigned long sm_bind_pending;
SM_HIDDEN extern uint64_t sm_bind_epoch;

/* --- sys.c: the syscall seam (fault injection in tests) --------------- */
struct sm_sys {
	int (*msync)(void *addr, size_t len, int flags);
	int (*fdatasync)(int fd);
	ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
	int (*fallocate)(int fd, int mode, off_t off, off_t len);
	int (*ftruncate)(int fd, off_t len);
	int (*sync_file_range)(int fd, off_t off, off_t n, unsigned flags);
};
extern SM_HIDDEN struct sm_sys sm_sys;
SM_HIDDEN void sm_sys_reset(void);

/* --- util ------------------------------------------------------------- */
SM_HIDDEN extern unsigned sm_page_shift;
SM_HIDDEN extern uint64_t sm_page_size;
SM_HIDDEN void sm_init_once(void);
/* The current pid without a system call (SPEC §16): cached, and re-read
 * when the word in a MADV_WIPEONFORK page reads 0, which it does in any
 * child that copied our memory (fork, _Fork, clone without CLONE_VM)
 * before its first call.  Without MADV_WIPEONFORK (Linux < 4.14) every
 * call asks getpid().  A vfork child shares our memory and cannot be told
 * apart: it may only exec or _exit (POSIX). */
SM_HIDDEN extern pid_t sm_cached_pid;
SM_HIDDEN extern uint32_t *sm_fork_word;
SM_HIDDEN pid_t sm_pid_slow(void);
static inline pid_t sm_pid(void)
{
	uint32_t *w = sm_fork_word;

	if (w && __atomic_load_n(w, __ATOMIC_ACQUIRE))
		return __atomic_load_n(&sm_cached_pid, __ATOMIC_RELAXED);
	return sm_pid_slow();
}
/* The calling thread's id, cached per thread (initial-exec TLS: one load,
 * no __tls_get_addr on the lock path) and read again in a fork child,
 * whose pid (sm_pid()) differs from the one the cache was filled under. */
struct sm_tid_cache {
	pid_t tid, pid;
};
SM_HIDDEN extern __thread struct sm_tid_cache sm_tid_cache __attribute__((tls_model("initial-exec")));
SM_HIDDEN pid_t sm_tid_slow(pid_t pid);
static inline pid_t sm_tid(pid_t pid)
{
	return sm_tid_cache.pid == pid ? sm_tid_cache.tid : sm_tid_slow(pid);
}

/* sm_lock and sm_test ranges end at or below 2^62: the bytes from there on
 * are the library's (the log's lock bytes, table mode's identity band; a
 * user's unlock there would drop one of them). */
#define SM_LOCK_LIMIT ((uint64_t)1 << 62)
/* The kernel-mode mark: every kernel-mode opener read-locks this byte of
 * the data file for as long as it has the file open; a table-mode attach
 * tests it (tmode.c, "Opening"). */
#define SM_KERNEL_MARK (SM_LOCK_LIMIT + ((uint64_t)1 << 32))

/* Check off/len: nonzero, off + len <= INT64_MAX. */
static inline int sm_check_range(uint64_t off, uint64_t len)
{
	if (len == 0)
		return -EINVAL;
	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -ERANGE;
	if (sizeof(size_t) < sizeof(uint64_t) && len > SIZE_MAX)
		return -ERANGE;
	return 0;
}

/* Bits of bitmap word p >> 6 covering pages p .. min(last, end of word). */
static inline uint64_t sm_word_mask(uint64_t p, uint64_t last)
{
	uint64_t lo = p & 63, hi = (last >> 6) == (p >> 6) ? (last & 63) : 63;

	return (hi == 63 ? ~(uint64_t)0 : (((uint64_t)1 << (hi + 1)) - 1)) & ~(((uint64_t)1 << lo) - 1);
}

/* Disable thread cancellation around blocking syscalls (SPEC §2): returns
 * the state to give back to sm_cancel_restore. */
static inline int sm_nocancel(void)
{
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}
static inline void sm_cancel_restore(int old)
{
	pthread_setcancelstate(old, NULL);
}

/* --- ofd.c: kernel locks ------------------------------------------------ */
SM_HIDDEN int sm_ofd_lock(int fd, bool write, uint64_t off, uint64_t len);
SM_HIDDEN int sm_ofd_unlock(int fd, uint64_t off, uint64_t len);
/* Would another description's lock conflict?  0 no, -EBUSY yes (F_OFD_GETLK). */
SM_HIDDEN int sm_ofd_test(int fd, bool write, uint64_t off, uint64_t len);
/* Another description's lock wholly inside [from, to)?  1, 0, or -EPROTO
 * when a wider lock hides the answer (*mask) and /proc/locks cannot settle
 * it (ofd.c). */
struct flock;
SM_HIDDEN int sm_ofd_held_in(int fd, uint64_t from, uint64_t to, struct flock *mask);

/* --- ranges.c: in-process lock counting (caller holds f->lock) ----------- */
SM_HIDDEN int sm_ranges_acquire(sm_file *f, struct sm_hold *h);
SM_HIDDEN int sm_ranges_release(sm_file *f, struct sm_hold *h, bool owner);
/* Convert h's write run to a read run and the kernel lock with it. */
SM_HIDDEN int sm_ranges_downgrade(sm_file *f, struct sm_hold *h);
/* Does no slice of f but the write hold h cover a byte at or after from?
 * (The kernel cannot say: f's own locks never conflict with each other.) */
SM_HIDDEN bool sm_ranges_alone_from(sm_file *f, const struct sm_hold *h, uint64_t from);
SM_HIDDEN void sm_ranges_free_all(sm_file *f);
/* Would a hold of [off, off+len) in this mode conflict with f's own holds
 * (SPEC §3.2)?  0 no, -EBUSY yes. */
SM_HIDDEN int sm_ranges_conflict(sm_file *f, uint64_t off, uint64_t len, bool write);

/* --- lock.c: taking and dropping a hold's lock (caller holds f->lock) ---- */
/* Publish h's entry (pending, tag: NULL for the file's), take the in-process
 * range and the kernel lock, mark the entry held; undone on failure.  An
 * SM_NOLOCK hold only gets an unlocked-mapping entry. */
SM_HIDDEN int sm_hold_lock(sm_file *f, struct sm_hold *h, const char *tag);
/* Drop the kernel lock (owner only), then the entry. */
SM_HIDDEN int sm_hold_unlock(sm_file *f, struct sm_hold *h, bool owner);
/* Tests only: the pre-0.2 order (entry after the lock, removed before the
 * unlock), to show that the race it had is measurable. */
SM_HIDDEN extern int sm_debug_late_publish;

/* --- map.c: the window cache (caller holds f->lock) ----------------------- */
SM_HIDDEN int sm_window_get(sm_file *f, uint64_t off, uint64_t len, bool writable,
			    struct sm_map **out);
SM_HIDDEN void sm_window_put(sm_file *f, struct sm_map *m);
SM_HIDDEN void sm_window_free_all(sm_file *f);
/* An anonymous private mapping of len bytes (buffered slices). */
SM_HIDDEN int sm_window_anon(sm_file *f, uint64_t foff, uint64_t len, struct sm_map **out);

/* --- fault.c: the SIGBUS guard ------------------------------------------- */
SM_HIDDEN void sm_fault_install(void);
SM_HIDDEN void sm_fault_register(struct sm_map *m);
SM_HIDDEN void sm_fault_unregister(struct sm_map *m);
/* The file behind registered window m (caller holds its file's lock). */
SM_HIDDEN void sm_fault_bind(struct sm_map *m, int fd);
/* The error of file range [off, off+len) of window m, 0 if it lost nothing. */
SM_HIDDEN int sm_fault_classify(const struct sm_map *m, uint64_t off, uint64_t len);
/* fork.c's atfork handlers: prepare takes the registry lock, last. */
SM_HIDDEN void sm_fault_atfork_prepare(void);
SM_HIDDEN void sm_fault_atfork_release(void);

/* --- table.c: the shared lock table -------------------------------------- */
/* The lock modes' hooks, registered by the layer above (file.c passes
 * tmode.c's): table.c calls them and never the modes themselves.
 * prepare: after the table is mapped, before an owner byte is claimed;
 * attach: after the claim (the mode bytes; table mode's fence, identity and
 * area), any error fails the open; abandon: undo prepare after a failure;
 * no_table: an opener without a table (the identity band's test). */
struct smt_mode_ops {
	int (*prepare)(sm_file *f, struct smt_table *t, const sm_options *o);
	int (*attach)(sm_file *f, struct smt_table *t, const sm_options *o);
	void (*abandon)(struct smt_table *t);
	int (*no_table)(sm_file *f);
};
SM_HIDDEN int sm_table_open(sm_file *f, const char *data_path, const struct stat *st,
			    const sm_options *o, const struct smt_mode_ops *ops);
/* Set by file.c to wait.c's sm_wait_forget: a reaper that frees a dead
 * waiter's slot gives its bucket counts back through it (NULL: the counts,
 * hints, stay). */
extern void (*smt_forget_hook)(struct smt_table *t, const struct smt_slot *s);
SM_HIDDEN void sm_table_close(sm_file *f);
SM_HIDDEN int sm_table_add(sm_file *f, struct sm_hold *h, const char *tag, uint32_t state);
/* h's kernel lock was granted: its pending entry becomes held.  One atomic
 * store of the state word, no sequence bump: the other fields do not
 * change, and a reader never finds the entry of a lock holder "changing"
 * (a holder preempted mid-update would otherwise hide itself from a
 * process it just refused).  Inline: the lock path (issue 14). */
static inline void sm_table_held(sm_file *f, struct sm_hold *h)
{
	struct smt_table *t = f->table;

	if (t && h->slot >= 0)
		__atomic_store_n(&t->slots[h->slot].state, t->owner << 8 | SMT_HELD, __ATOMIC_RELEASE);
}

/* Withdraw h's entry.  owner: this process opened f (a fork child never
 * clears its parent's entries).  One store of the state word, no sequence
 * bump (as sm_table_held): the other fields do not change, a reader that
 * copied them while the entry was in use took a consistent picture of it,
 * and the next claim makes seq odd before it writes them.  Nobody else
 * writes a live owner's slot, so no reaper's swap can be judging the word. */
static inline void sm_table_remove(sm_file *f, struct sm_hold *h, bool owner)
{
	struct smt_table *t = f->table;

	if (!t || h->slot < 0 || !owner)
		return;
	__atomic_store_n(&t->slots[h->slot].state, SMT_FREE, __ATOMIC_RELEASE);
	t->hint = (uint32_t)h->slot; /* ours and in our cache: the next claim's first try */
	h->slot = -1;
}
SM_HIDDEN void sm_table_downgrade(sm_file *f, struct sm_hold *h);
/* --- fence.c: a dead process's bound changes stay held --------------------
 * set: mark h's entry bound to the log named key (on) or not (off); its
 * owner only.  check: after h's lock step, 0 or -EBUSY if another's bound
 * entry overlaps h (inline: one load when nothing is bound).  clear_dead:
 * free the dead owners' entries bound to key that still_held says the log
 * no longer counts; returns how many. */
SM_HIDDEN void sm_fence_set(sm_file *f, struct sm_hold *h, uint32_t key, bool on);
SM_HIDDEN int sm_fence_check_slow(sm_file *f, const struct sm_hold *h);
SM_HIDDEN int sm_fence_clear_dead(sm_file *f, uint32_t key, bool (*still_held)(void *arg, int32_t pid),
				  void *arg);
/* sm_redo_lsn(f, log) was asked: f's SM_RECOVER slices pass key's fences. */
SM_HIDDEN void sm_fence_recovering(sm_file *f, uint32_t key);
static inline int sm_fence_check(sm_file *f, const struct sm_hold *h)
{
	const struct smt_table *t = f->table;

	uint32_t s;

	/* nothing bound, or only our own (read while no thread of ours
	 * changed them) */
	if (__builtin_expect(!t, 0))
		return 0;
	s = __atomic_load_n(&t->own_fence_seq, __ATOMIC_SEQ_CST);
	if (__builtin_expect(!(s & 1) &&
				     __atomic_load_n(&((const struct smt_header *)t->base)->fence_n, __ATOMIC_SEQ_CST) ==
					     __atomic_load_n(&t->own_fence_n, __ATOMIC_SEQ_CST) &&
				     __atomic_load_n(&t->own_fence_seq, __ATOMIC_SEQ_CST) == s,
			     1))
		return 0;
	return sm_fence_check_slow(f, h);
}
/* for lockctl and tests (the private build links these) */
int smt_path(const char *data_path, const struct stat *st, const char *dir, char *out, size_t size);
int smt_check_header(const struct smt_header *h, uint64_t file_size);
int smt_attach_path(const char *path, bool writable, struct smt_table *t);
int smt_attach_fd(int fd, bool writable, struct smt_table *t);
void smt_detach(struct smt_table *t);
int smt_snapshot(const struct smt_table *t, uint32_t i, struct smt_slot *out);
uint32_t smt_scan_limit(const struct smt_table *t);
bool smt_owner_alive(const struct smt_table *t, uint32_t owner);
int smt_reap(struct smt_table *t, bool dry);
/* Free slot i judged dead as w (a swap of its seq and state word), or, if
 * it holds a bound change, make it an orphan's (fence.c); true if freed. */
bool smt_retire(struct smt_table *t, uint32_t i, union smt_word w);
bool smt_free_judged(struct smt_table *t, uint32_t i, union smt_word w);
/* Apply d to the header's fence counts of [off, off+len) (fence.c): the
 * total, then each page bucket once; lowered in the reverse order. */
void smt_fence_count(struct smt_header *hd, uint64_t off, uint64_t len, int d);
/* lockctl reap --bound: free the dead processes' bound entries too (their
 * changes then exist only in the log); how many (dry: would). */
int smt_fence_drop_dead(struct smt_table *t, bool dry);
/* statfs f_type of a network filesystem (NFS, SMB, Ceph, FUSE, GPFS)? */
bool smt_netfs_type(unsigned long f_type);

/* --- wait.c: SM_WAIT (SPEC §3.4) ------------------------------------------ */
/* One blocking acquisition.  attempt(arg) does the whole fail-fast
 * acquisition (0, -EBUSY on a conflict, or another error) and is called
 * with f->lock NOT held; the waiter never holds f->lock while it sleeps.
 * conflicts (NULL: range overlap and mode) says whether a table entry
 * blocks this acquisition: table-authority mode may give its own.
 * table_authority: the table is the whole truth (no backoff for invisible
 * holders).  cancel_state: the caller's saved cancel state (sm_nocancel),
 * restored around each sleep (a wait is a cancellation point). */
struct sm_wait {
	sm_file *f;
	uint64_t off, len;
	bool write;
	const char *tag;      /* the waiting entry's (NULL: the file's) */
	bool table_authority;
	int cancel_state;
	int (*attempt)(void *arg);
	void *arg;
	bool (*conflicts)(const struct sm_wait *w, const struct smt_slot *s);
	uint64_t deadline;    /* CLOCK_MONOTONIC ns (sm_deadline_after); 0: the
			       * file's bound, sm_options.wait_ns */
};
SM_HIDDEN int sm_wait_acquire(struct sm_wait *w);
/* The deadline of a wait of timeout_ns from now for struct sm_wait:
 * UINT64_MAX (none) for SM_WAIT_FOREVER or past the clock's range. */
SM_HIDDEN uint64_t sm_deadline_after(uint64_t timeout_ns);
/* A release of [off, off+len) of t: call after the lock is dropped and the
 * entry removed.  Bumps and wakes the buckets that have waiters; no system
 * call when none has. */
SM_HIDDEN void sm_wait_bump(struct smt_table *t, uint64_t off, uint64_t len);
/* A waiting slot (copy s) of a dead owner was freed by a reaper: give back
 * its bucket counts. */
SM_HIDDEN void sm_wait_forget(struct smt_table *t, const struct smt_slot *s);
/* The calling thread's acquirer id (its thread id, cached). */
SM_HIDDEN uint32_t sm_acquirer(void);
/* Set the bucket geometry of a table that has none (0 -> default, CAS). */
SM_HIDDEN void sm_wait_geometry_init(struct smt_table *t);
/* --- tmode.c: table-authority mode (SM_OPT_TABLE_LOCKS, SPEC §12) --------- */
/* The hooks table.c calls at open (struct smt_mode_ops above). */
SM_HIDDEN extern const struct smt_mode_ops sm_tmode_ops;
/* A kernel-mode opener without a table: -EPROTO if table-mode owners hold
 * the data file's identity band. */
SM_HIDDEN int sm_tmode_no_table(sm_file *f);
SM_HIDDEN void sm_tmode_close(sm_file *f);
SM_HIDDEN int sm_tmode_hold_lock(sm_file *f, struct sm_hold *h, const char *tag);
SM_HIDDEN int sm_tmode_hold_unlock(sm_file *f, struct sm_hold *h, bool owner);
SM_HIDDEN int sm_tmode_downgrade(sm_file *f, struct sm_hold *h);
SM_HIDDEN int sm_tmode_test(sm_file *f, bool write, uint64_t off, uint64_t len);
/* table.c's slot filler (pid, tid, comm, tag, since), for tmode.c */
SM_HIDDEN void sm_table_fill(struct smt_slot *s, const struct sm_hold *h, const char *tag, bool own);
/* Does f (table mode) keep kernel locks?  No: ranges.c skips them. */
static inline bool sm_kernel_locks(const sm_file *f)
{
	return !f->memory && !f->tmode;
}
/* private build (tests): every live area's two copies are treaps with exact
 * maxima indexing exactly its owner's entries; 0 or -EPROTO with the reason
 * in why. */
int smt_tree_check(sm_file *f, char *why, size_t n);
/* Test seam: called in an acquire after it announced (slot pending, node
 * linked in both copies) and before it validates. */
extern void (*smt_test_in_tree_lock)(void);

/* --- fork.c: fork safety ------------------------------------------------- */
SM_HIDDEN void sm_fork_register(sm_file *f);
SM_HIDDEN void sm_fork_unregister(sm_file *f);

/* --- file.c --------------------------------------------------------------- */
SM_HIDDEN void sm_file_destroy(sm_file *f);

/* --- slice.c ---------------------------------------------------------------- */
SM_HIDDEN int sm_slice_error(const sm_slice *s);
SM_HIDDEN int sm_file_size(sm_file *f, uint64_t *size);
/* Fill file bytes [off, off+len) of a buffered hold's copy from the file. */
SM_HIDDEN int sm_hold_load(struct sm_hold *h, uint64_t off, uint64_t len);
/* The dirty-page bitmap of a write hold: pages are bit indexes from
 * h->dirty_origin; every view of the hold shares it.  A commit moves the
 * bits it writes to h->flight first, so a write made meanwhile stays dirty. */
/* Pages [*p0, *p1) of h's bitmap covering slice s. */
SM_HIDDEN void sm_slice_pages(const sm_slice *s, uint64_t *p0, uint64_t *p1);
/* Mark the pages of s's bytes [off, off+len) dirty. */
SM_HIDDEN void sm_dirty_set(sm_slice *s, uint64_t off, uint64_t len);
SM_HIDDEN void sm_dirty_clear(struct sm_hold *h, uint64_t p0, uint64_t p1);
/* Move the dirty bits of pages [p0, p1) in flight (a commit starts). */
SM_HIDDEN void sm_dirty_take(struct sm_hold *h, uint64_t p0, uint64_t p1);
/* A commit of pages [p0, p1) ended: forget the pages in flight, or (failed)
 * make them dirty again. */
SM_HIDDEN void sm_dirty_settle(struct sm_hold *h, uint64_t p0, uint64_t p1, bool done);
/* The first page in [p, end) whose bit in map is set (set) or clear
 * (!set), or end: with set, then !set, the runs. */
SM_HIDDEN uint64_t sm_bits_find(const uint64_t *map, uint64_t p, uint64_t end, bool set);
/* Has s a page dirty or in flight? */
SM_HIDDEN bool sm_dirty_any(const sm_slice *s);

#endif /* SAFEMAP_INTERNAL_H */
