/* SPDX-License-Identifier: MIT */
/*
 * kvstore.h - a small key-value storage engine on one mapped data file and
 * one write-ahead log (see kvstore.c for the protocol).  Keys are 64-bit
 * numbers, values up to KV_VAL_MAX bytes.  Every function returns 0 (or 1,
 * as said) on success and a negative errno on failure, as safemap does.
 * A kv handle may be shared by threads.
 */
#ifndef KVSTORE_H
#define KVSTORE_H

#include <stddef.h>
#include <stdint.h>

#define KV_VAL_MAX 100

typedef struct kv_store kv_store;

struct kv_options {
	uint64_t pages;       /* data pages of a new store (0: 256); an existing
			       * store keeps its own */
	unsigned checkpoint;  /* puts of this handle between checkpoints (0: 1000) */
	int kernel_locks;     /* 1: kernel-lock mode instead of table mode */
};

/* Open (creating it if needed) the store in directory dir (which must
 * exist): dir/data and dir/log.  Recovers first: replays what the log holds
 * beyond the data file.  opt may be NULL. */
int kv_open(const char *dir, const struct kv_options *opt, kv_store **out);

/* Set key to the len bytes at val (len <= KV_VAL_MAX): durable when it
 * returns, and visible to every process's kv_get.  -ENOSPC: the key's page
 * is full (the store is too small), or the disk is. */
int kv_put(kv_store *kv, uint64_t key, const void *val, size_t len);

/* kv_put, calling after_log(arg) once the put's record is durable and
 * before its page is written (a crash test kills the process there). */
int kv_put_hook(kv_store *kv, uint64_t key, const void *val, size_t len,
		void (*after_log)(void *arg), void *arg);

/* Read key's value into val (cap bytes, at least KV_VAL_MAX is enough):
 * 1 with *len set when found, 0 when not. */
int kv_get(kv_store *kv, uint64_t key, void *val, size_t cap, size_t *len);

/* Make every put of this handle durable in the data file and trim the log
 * to what some process may still need. */
int kv_checkpoint(kv_store *kv);

/* Replay the log into the data file beyond every page's LSN, for the pages
 * of dead processes (kv_open and kv_put call it; a caller rarely needs to). */
int kv_recover(kv_store *kv);

struct kv_stats {
	uint64_t pages, keys, max_lsn; /* data pages, keys stored, highest page LSN */
	uint64_t redo;                 /* the log's redo point */
	uint64_t tail;                 /* kv_check's own marker record: above every page LSN */
	uint64_t recoveries, replayed; /* recovery passes and records applied by this handle */
};

/* Walk every page and check it (slot lengths and sums, no duplicate key,
 * page LSN not beyond the log's tail): -EUCLEAN on damage.  Fills st. */
int kv_check(kv_store *kv, struct kv_stats *st);

/* Only this handle's recovery counters of st (cheap); the rest is zero. */
void kv_counters(kv_store *kv, struct kv_stats *st);

/* Checkpoint, then close.  The handle is freed even on error. */
int kv_close(kv_store *kv);

/* Self-checking values for tests and benchmarks: kv_value_make fills len
 * bytes (16..KV_VAL_MAX) with tag (NUL-terminated, cut to fit) then a
 * filler derived from the tag and the length; kv_value_check returns 1 and
 * copies the tag into tag (cap bytes) if v is such a value, else 0. */
void kv_value_make(void *v, size_t len, const char *tag);
int kv_value_check(const void *v, size_t len, char *tag, size_t cap);

#endif
