/* SPDX-License-Identifier: MIT */
/*
 * log.h - what log.c shares with log_trim.c (the only other file that
 * includes it; log_trim.c calls into log.c, never the other way).
 */
#ifndef SAFEMAP_LOG_H
#define SAFEMAP_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "safemap-internal.h"

#define LOG_MAGIC "SMLOG\0\0\1"
#define LOG_VERSION 1u
#define LOG_HDR 4096u
/* Header slots: {u64 value, u64 ~value} at these offsets of page 0. */
#define SLOT_COMMITTED 64
#define SLOT_TAIL 128
#define SLOT_FLUSHING 192 /* and 208: no longer used (two flush lanes once) */
/* The first retained record's LSN (the trim point), and the end of the
 * space given back below it.  Both read {0, 0} in a log written before
 * trimming existed (its header was zeros there): that means LOG_HDR. */
#define SLOT_FIRST 256
#define SLOT_PUNCHED 288
/* Group commit words (u32, zero in a new or older log).  WAITERS: the
 * committers asleep (or about to sleep) on the committed slot's futex word.
 * WOKEN: how many the last flush woke (the kernel's count, not WAITERS);
 * BASE: APPENDS when it woke them; APPENDS: records placed, mod 2^32 (the
 * round is full when WOKEN + 1 were placed since BASE); TARGET: no longer
 * used (a settling leader once slept until APPENDS reached it).
 * Hints only: a committer killed while counted in WAITERS leaves it high,
 * which costs the next flushes a wake call that finds nobody, never a
 * missed wake (waits are bounded) nor a wait. */
#define WORD_WAITERS 320
#define WORD_WOKEN 324
#define WORD_APPENDS 328
#define WORD_BASE 332
#define WORD_TARGET 336 /* no longer used */
#define WORD_FLUSHING 340 /* a leader holds the flush mutex (a waiter whose wait
			   * times out asks the lock itself: its holder may be dead) */
/* The target of a trim in progress (u64, 0: none): a bind below it gets
 * -ESTALE (redo.c; a trimmer killed mid-way leaves it, which only makes
 * binds of records below a checkpoint's redo point fail). */
#define WORD_TRIMMING 344
/* Flush generations (u32, serial order): a flush leader adds one to START
 * before its fdatasync and stores that value in DONE after it succeeded.
 * A header store followed by a read of START = g is durable once DONE is
 * past g (redo.c: the bindings area is durable before the pages). */
#define WORD_FLUSH_START 352
#define WORD_FLUSH_DONE 356
/* The round whose settler is chosen (u32: BASE + 1): of the committers
 * waiting for an open round to fill, only the one that set it sleeps with a
 * short timeout (and flushes what is there if the round does not fill);
 * the others sleep until a flush wakes them, so that a flush led by the
 * committer that filled the round is not interrupted by their timers.  A
 * value left by a dead settler names an old round, which no longer
 * matches: the next round chooses again. */
#define WORD_SETTLER 360
/* The bindings area (redo.c): BIND_SLOTS entries of BIND_SLOT bytes, each
 * eight u64 fields: state (BIND_HELD, BIND_IDLE or 0), incarnation, data file device,
 * inode, first bound LSN, highest bound LSN, owner pid, 0.  Held entries
 * count for every trim (trim_floor in log_trim.c), live or dead; the owner
 * of entry i holds the kernel lock byte MUTEX_BIND(i) on its description. */
#define BIND_AREA 1024
#define BIND_SLOT 64
#define BIND_SLOTS ((LOG_HDR - BIND_AREA) / BIND_SLOT)
#define BIND_HELD UINT64_C(0x31444e4942534d53) /* "SMBIND1" */
#define BIND_IDLE UINT64_C(0x30444e4942534d53) /* "SMBIND0": claimed, no binding */
#define BE_STATE 0
#define BE_SEQ 1
#define BE_DEV 2
#define BE_INO 3
#define BE_FIRST 4
#define BE_HIGH 5
#define BE_PID 6
/* Kernel-lock mutex bytes: never mapped, far beyond any log. */
#define MUTEX_BASE ((uint64_t)1 << 62)
#define MUTEX_INIT (MUTEX_BASE + 0)
#define MUTEX_APPEND (MUTEX_BASE + 1)
#define MUTEX_PUBLISH (MUTEX_BASE + 2) /* no longer taken: publishing is the flush leader's */
#define MUTEX_FLUSH (MUTEX_BASE + 4) /* the group commit's flush mutex */
#define MUTEX_TRIM (MUTEX_BASE + 5)  /* one trim at a time */
#define MUTEX_OPEN (MUTEX_BASE + 6)  /* read-locked by every open handle */
#define MUTEX_BIND(i) (MUTEX_BASE + 64 + (uint64_t)(i)) /* owner of binding entry i */
#define FRAME 8u
/* Iterators map this much at a time, sub-slicing records out of it. */
#define ITER_WINDOW ((uint64_t)4 << 20)
#define REC_MAX ((size_t)UINT32_MAX - 64)

struct sm_log {
	sm_file *f;
	int fd; /* own open file description: slots, mutexes, fdatasync */
	int flags;
	unsigned long gen; /* fork generation at open */
	pthread_mutex_t app_mu;  /* in-process half of the append mutex */
	pthread_mutex_t flush_mu; /* in-process half of the flush mutex */
	uint64_t reserved;       /* file size known reserved (under app_mu) */
	unsigned app_queue;      /* threads waiting for app_mu (atomic) */
	bool app_held;           /* the append kernel lock is held (under app_mu) */
	unsigned app_handoffs;   /* consecutive hand-offs of it (under app_mu) */
	pthread_mutex_t trim_mu; /* in-process half of the trim mutex */
	int poison;              /* first failed flush (atomic) */
	sm_slice *hdr;           /* slice over the header: slots, futex and group commit words
				  * (read-write handles: an unlocked write slice, the slots
				  * stored in place; read-only: a read slice) */
	bool hdr_w;              /* hdr is writable */
	unsigned long iters;     /* live iterators (atomic) */
	struct redo *redo;       /* bindings made through this handle (redo.c) */
	int (*redo_close)(sm_log *l); /* set by redo.c: -EBUSY while a slice is bound */
};

/* Entry i of the bindings area, field k (a mapped header page). */
static inline uint64_t *smlog_bind_field(const sm_log *l, unsigned i, unsigned k)
{
	return (uint64_t *)(void *)(l->hdr->v.base + BIND_AREA + (size_t)i * BIND_SLOT) + k;
}

/* A read slice over [beg, end) of the log, moved along as records are read. */
struct window {
	sm_slice *s;
	uint64_t beg, end;
};

SM_HIDDEN int smlog_forked(const sm_log *l);
/* A handle that may write: -EBADF (opened read-only), -ESTALE (a fork
 * child's copy), else 0. */
SM_HIDDEN int smlog_writable(const sm_log *l);
SM_HIDDEN int smlog_lock(sm_log *l, pthread_mutex_t *mu, uint64_t at);
SM_HIDDEN void smlog_unlock(sm_log *l, pthread_mutex_t *mu, uint64_t at);
SM_HIDDEN int smlog_slot_read(const sm_log *l, off_t at, uint64_t *v);
SM_HIDDEN int smlog_slot_write(sm_log *l, off_t at, uint64_t v);
SM_HIDDEN int smlog_scan_from(sm_log *l, struct window *w, uint64_t pos, uint64_t limit,
			      uint64_t *upto);
SM_HIDDEN void smlog_window_drop(struct window *w);
SM_HIDDEN int smlog_sync(sm_log *l);

#endif
