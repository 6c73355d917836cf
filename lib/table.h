/* SPDX-License-Identifier: MIT */
/*
 * table.h - the on-disk format of the shared lock table (documented in
 * doc/safemap-table.5).  Fixed layout: little-endian, 64-bit fields at
 * natural alignment, no platform types; a table file is the same on every
 * 64-bit Linux build.
 */
#ifndef SAFEMAP_TABLE_H
#define SAFEMAP_TABLE_H

#include <stdint.h>

#define SMT_MAGIC "SMLOCKT\0"   /* 8 bytes */
#define SMT_VERSION 1u          /* revision 2 is a compatible extension */
#define SMT_REVISION 2u
#define SMT_HEADER_SIZE 4096u
#define SMT_SLOT_SIZE 128u
#define SMT_NSLOTS 16384u       /* capacity of a new table */
#define SMT_MAX_SLOTS (1u << 20)
#define SMT_MAX_OWNERS 65536u
#define SMT_OWNER_SPREAD 16u   /* owner k starts its slot search at k * 16 */
/* Owner k's liveness byte: an OFD write lock on byte SMT_LIVE_BASE + k of
 * the table file, held for as long as the owner has the table open. */
#define SMT_LIVE_BASE ((uint64_t)1 << 40)
/* Mode bytes (SPEC §12.1): read-locked by every owner attached in that
 * mode; above the liveness bytes, so every lock on a table file lies at or
 * above SMT_LIVE_BASE (lockctl tells tables from data files that way). */
#define SMT_MODE_BYTE_KERNEL (SMT_LIVE_BASE + SMT_MAX_OWNERS)
#define SMT_MODE_BYTE_TABLE (SMT_LIVE_BASE + SMT_MAX_OWNERS + 1) /* reserved */
/* Cleanup byte: write-locked by a closer that unlinks the table of a deleted
 * data file, read-locked by an opener checking that its table is still the
 * one at the path (table.c, "Footprint"). */
#define SMT_CLEANUP_BYTE (SMT_LIVE_BASE + SMT_MAX_OWNERS + 3)
/* Table-authority mode: owner k's area byte, write-locked by the owner of
 * area k while its area is published (tmode.c).  Only table-mode owners
 * lock it, so it vouches for area k's entries where the liveness byte,
 * which a kernel-mode opener may hold, cannot. */
#define SMT_AREA_BYTE_BASE (SMT_LIVE_BASE + 2 * (uint64_t)SMT_MAX_OWNERS)
#define SMT_MAX_BUCKETS 128u /* waiting (SPEC §3.4): futex buckets in the header */
#define SMT_NBUCKETS 128u    /* what a new table (or the first waiter) sets */
#define SMT_BUCKET_SHIFT 12u /* byte x -> bucket (x >> shift) % nbuckets */

/* slot states */
#define SMT_FREE 0u
#define SMT_HELD 1u
#define SMT_WAITING 2u
#define SMT_CLAIMING 3u /* being filled in by its owner */
#define SMT_PENDING 4u  /* published before the kernel lock is taken */
#define SMT_UNLOCKED 5u /* an SM_NOLOCK mapping: listed, never a holder */

/* slot flags */
#define SMT_SF_OWN_TAG 0x1u /* tag is the acquisition's own, not the file's */
#define SMT_SF_COUNTED 0x2u /* a waiter: counted in its buckets' waiter counts */
/* A held entry whose changes are bound to log records and not yet written
 * to the file (redo.c): if its owner dies it stays held, as an orphan's,
 * until a recovery pass clears it (sm_redo_done).  Set and cleared by its
 * owner with atomic OR/AND (no seq change); bits 8-31 then name the log
 * (SMT_SF_LOGKEY of its device and inode). */
#define SMT_SF_BOUND 0x4u
#define SMT_SF_LOGKEY(k) ((uint32_t)(k) << 8)
#define SMT_SF_KEY(flags) ((flags) >> 8)
/* The owner number of orphans: a dead owner's bound entries, still held.
 * Nobody ever claims its liveness byte, so it is never alive. */
#define SMT_ORPHAN (SMT_MAX_OWNERS - 1)
/* Fence counts: bound entries in the table (fence_n), and per page bucket
 * (page p of the data file in bucket p % SMT_FENCE_BUCKETS), so that an
 * acquisition looks at its own buckets' counts only.  Never below the truth
 * (raised before the flag is set, lowered after it is cleared). */
#define SMT_FENCE_BUCKETS 256u
#define SMT_FENCE_SHIFT 12u

#define SMT_STATE(w) ((w) & 0xffu)
#define SMT_OWNER(w) ((w) >> 8)

#define SMT_MODE_READ 1u
#define SMT_MODE_WRITE 2u

struct smt_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint32_t slot_size;
	uint32_t nslots;
	uint64_t generation;  /* bumped whenever the table is rebuilt */
	uint64_t data_dev;    /* identity of the data file (statx) */
	uint64_t data_ino;
	int64_t data_btime_sec; /* birth time, 0 when the filesystem has none */
	uint32_t data_btime_nsec;
	uint32_t flags;
	uint64_t live_base;   /* SMT_LIVE_BASE */
	uint32_t high_water;  /* slots [high_water, nslots) have never been used:
			       * scans stop there (and never touch those pages) */
	uint32_t revision;    /* SMT_REVISION; 0 in tables built by revision 1 */
	uint32_t nbuckets;    /* waiting: buckets in use (0: none yet, > 128: none) */
	uint32_t bucket_shift; /* waiting: byte x is in bucket (x >> shift) % nbuckets;
				* set together with nbuckets (one 64-bit CAS) */
	uint64_t table_id;    /* reserved (table-authority mode): 0 */
	uint64_t tree_off;    /* reserved (table-authority mode): 0 */
	uint64_t tree_size;   /* reserved (table-authority mode): 0 */
	uint64_t table_dev;   /* table-authority mode: the table file's own */
	uint64_t table_ino;   /* identity when table_id was drawn, and the */
	uint64_t table_boot;  /* boot's (a hash of boot_id), else 0 */
	uint64_t idx_off;     /* table-authority mode: the index area (tmode.c), */
	uint64_t idx_size;    /* 0 until one is laid out */
	uint32_t fence_n;     /* bound entries (SMT_SF_BOUND), a hint never low */
	uint32_t reserved0;
	uint8_t reserved1[864];
	struct smt_bucket {   /* waiting, at offset 1024 */
		uint32_t futex;   /* bumped by every release that covers the bucket
				   * and has waiters; waiters FUTEX_WAIT on it */
		uint32_t waiters; /* waiting entries covering the bucket (a hint) */
		uint64_t reserved;
	} buckets[SMT_MAX_BUCKETS];
	uint32_t fence[SMT_FENCE_BUCKETS]; /* bound entries per page bucket, at 3072 */
};

/* One holder.  A slot is claimed with one compare-and-swap of `state`
 * from 0 to (owner << 8 | SMT_CLAIMING), so the owner of a used slot is
 * always known, even if it died mid-update.  Writers: seq odd while the
 * other fields change, even when stable; readers copy the slot and retry if
 * seq changed or was odd. */
struct smt_slot {
	union {
		struct {
			uint32_t seq;
			uint32_t state; /* bits 0-7: SMT_FREE/HELD/WAITING/CLAIMING/PENDING/UNLOCKED; 8-31: owner */
		};
		uint64_t word; /* both at once: see union smt_word */
	};
	uint32_t flags;      /* SMT_SF_* */
	uint32_t mode;       /* SMT_MODE_READ / WRITE */
	uint64_t off, len;   /* the locked range */
	int32_t pid, tid;    /* for display only: pids are reused and namespaced */
	uint64_t start_time; /* process start time, clock ticks since boot */
	uint64_t pidns;      /* inode of the holder's pid namespace */
	uint64_t since_ns;   /* CLOCK_REALTIME when acquired */
	char comm[16];
	char tag[32];        /* the acquisition's tag, else the file's */
	uint32_t wait_for;   /* waiting: slot index + 1 of a holder it waits for, 0 */
	uint32_t acquirer;   /* thread id of the acquirer (in pidns): the wait-for
			      * graph's node is (pidns, acquirer) */
	uint64_t inc;        /* table-authority mode: the incarnation of the owner's
			      * area when the entry was published (tmode.c) */
};

/* A slot's seq and state as one 64-bit word.  Whoever frees a slot it
 * does not own (a reaper, a claimer of a dead owner's byte) swaps both at
 * once from the values it judged: a slot freed and claimed again since
 * (same owner number and state, the ABA case) has a different seq, so the
 * swap fails instead of freeing a live holder. */
union smt_word {
	struct {
		uint32_t seq;
		uint32_t state;
	};
	uint64_t word;
};

/* Test seam: called after each liveness probe of an owner byte (NULL
 * outside tests), so a test can let a new owner claim that byte at the
 * worst moment for a reaper. */
extern void (*smt_test_after_probe)(uint32_t owner);

_Static_assert(sizeof(struct smt_header) == SMT_HEADER_SIZE, "table header layout");
_Static_assert(sizeof(struct smt_slot) == SMT_SLOT_SIZE, "table slot layout");
_Static_assert(sizeof(union smt_word) == 8 && __builtin_offsetof(struct smt_slot, word) == 0 &&
		       __builtin_offsetof(struct smt_slot, state) == 4,
	       "seq and state form one word");
_Static_assert(__builtin_offsetof(struct smt_header, revision) == 76, "revision");
_Static_assert(__builtin_offsetof(struct smt_header, tree_size) == 104, "tree_size");
_Static_assert(__builtin_offsetof(struct smt_header, table_ino) == 120, "table_ino");
_Static_assert(__builtin_offsetof(struct smt_header, table_boot) == 128, "table_boot");
_Static_assert(__builtin_offsetof(struct smt_header, idx_size) == 144, "idx_size");
_Static_assert(__builtin_offsetof(struct smt_header, buckets) == 1024, "buckets");
_Static_assert(__builtin_offsetof(struct smt_header, fence_n) == 152, "fence_n");
_Static_assert(__builtin_offsetof(struct smt_header, fence) == 3072, "fence");
_Static_assert(__builtin_offsetof(struct smt_slot, wait_for) == 112, "wait_for");
_Static_assert(__builtin_offsetof(struct smt_slot, inc) == 120, "inc");

#endif
