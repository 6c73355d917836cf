/* SPDX-License-Identifier: MIT */
/*
 * tindex.h - table-authority mode's index area (doc/safemap-table.5,
 * "Table-authority mode"): one area per owner, each with its own treap over
 * the slots it published, kept in two copies (left-right).  Only the
 * area's owner writes it; every other process reads it without waiting.
 * Layout: little-endian, fixed sizes, no pointers (links are node index + 1).
 */
#ifndef SAFEMAP_TINDEX_H
#define SAFEMAP_TINDEX_H

#include <stdbool.h>
#include <stdint.h>

#define SMT_IDX_MAGIC "SMINDEX\0"
#define SMT_IDX_VERSION 2u
#define SMT_IDX_MAX_DEPTH 200 /* a treap of 2^20 nodes this deep: corrupted */

/* area states (low 32 bits of smt_area.word; the incarnation is the high 32) */
#define SMT_AREA_FREE 0u     /* nobody's */
#define SMT_AREA_CLAIMING 1u /* being taken over: no entry of it counts */
#define SMT_AREA_LIVE 2u     /* its owner's, at this incarnation */
#define SMT_AREA_DEAD 3u     /* its owner was found dead: no entry counts */

#define SMT_AREA_WORD(inc, st) ((uint64_t)(inc) << 32 | (st))
#define SMT_AREA_INC(w) ((uint32_t)((w) >> 32))
#define SMT_AREA_STATE(w) ((uint32_t)(w))

struct smt_idx_hdr { /* 4096 bytes at the header's idx_off */
	char magic[8];
	uint32_t version;
	uint32_t node_size;
	uint32_t nnodes;  /* = the table's nslots when laid out */
	uint32_t nareas;  /* = SMT_MAX_OWNERS: area k is owner k's */
	uint32_t area_hw; /* areas [area_hw, nareas) were never used */
	uint32_t reserved0;
	uint8_t reserved[4096 - 32];
};

struct smt_area { /* 64 bytes */
	uint64_t word;      /* incarnation << 32 | SMT_AREA_* */
	uint32_t act;       /* the copy readers search: 0 or 1 */
	uint32_t ver[2];    /* odd while that copy changes */
	uint32_t root[2];   /* node index + 1 of each copy's root, 0: empty */
	uint32_t count[2];  /* nodes linked in each copy */
	int32_t pid;        /* for display */
	uint8_t reserved[64 - 40];
};

struct smt_link { /* one copy's links of a node */
	uint32_t left, right; /* node index + 1, 0: none */
	uint64_t max_end;     /* largest end in the subtree */
	uint64_t max_wend;    /* largest end of a write region in it, 0: none */
};

struct smt_inode { /* node i belongs to slot i: 72 bytes */
	uint64_t off, end; /* the slot's range while linked */
	uint32_t prio;     /* heap priority: a hash of the index */
	uint32_t flags;    /* bit c: a write region in copy c */
	struct smt_link l[2];
};

_Static_assert(sizeof(struct smt_idx_hdr) == 4096, "index header layout");
_Static_assert(sizeof(struct smt_area) == 64, "area layout");
_Static_assert(sizeof(struct smt_inode) == 72, "index node layout");

/* One copy of one area, for its writer (tindex.c). */
struct tix {
	struct smt_inode *nodes;
	uint32_t nnodes;
	uint32_t *root; /* &area->root[c] */
	int c;
	int err;        /* -EPROTO: a corruption was met */
};

/* Link node i (off, end already set) with mode write; unlink it. */
void tix_insert(struct tix *x, uint32_t i, bool write);
void tix_remove(struct tix *x, uint32_t i);

/* Search one copy for nodes overlapping [a, b) that conflict with a request
 * of this mode (write: any node; read: write nodes), in key order, calling
 * judge(arg, i) on each until it returns true.  Returns the node index + 1
 * judge accepted, 0 if none, -1 on a link that cannot be (a torn read of a
 * copy being changed, or a corruption: the caller reads again or says so).
 * Reads only; never waits. */
int tix_search(const struct smt_inode *nodes, uint32_t nnodes, uint32_t root, int c, uint64_t a,
	       uint64_t b, bool write, bool (*judge)(void *arg, uint32_t i), void *arg);

/* Check one copy's treap and maxima; count its nodes into *n and call
 * seen(arg, i) for each.  0, or -EPROTO with the reason in why. */
int tix_check(const struct smt_inode *nodes, uint32_t nnodes, uint32_t root, int c,
	      void (*seen)(void *arg, uint32_t i), void *arg, uint32_t *n, char *why, size_t size);

#endif
