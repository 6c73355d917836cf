/* SPDX-License-Identifier: MIT */
/*
 * map.c - the per-file mapping cache (the windows, sm_window_*).
 *
 * mmap + munmap cost ~3 µs whatever the size, plus a page fault on first
 * touch, and each mapping is a VMA counted against vm.max_map_count
 * (SPEC §11).  A slice should cost a lock, not a mapping.  So slices of at
 * most SM_WINDOW_STEP bytes share cached windows: window k maps file bytes
 * [k*STEP, k*STEP + SPAN) with SPAN = 2*STEP, so a small slice always fits in
 * the window of the step where its first page lies.  Windows are refcounted
 * by their slices; up to SM_IDLE_MAX unused windows per file stay mapped
 * (LRU) for the next slice.  Larger slices get a mapping of their own.
 *
 * Windows are keyed by writability too: read slices of a read-write file use
 * PROT_READ windows, so a stray store through a read slice's raw pointer
 * faults instead of silently changing the file.
 *
 * Mapping past end of file is allowed; only touching such pages faults, and
 * the accessors never touch bytes outside their slice.
 */
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "safemap-internal.h"

static int map_cmp(const struct sm_map *a, const struct sm_map *b)
{
	return a->key < b->key ? -1 : a->key > b->key;
}

SM_RB_GENERATE_STATIC(sm_maptree, sm_map, rb, map_cmp)

static void map_destroy(struct sm_map *m)
{
	LIST_REMOVE(m, all);
	if (!m->anon)
		sm_fault_unregister(m);
	if (!m->borrowed)
		munmap(m->addr, m->len);
	free(m);
}

static int map_new(sm_file *f, uint64_t foff, uint64_t len, bool writable, struct sm_map **out)
{
	struct sm_map *m = calloc(1, sizeof(*m));
	void *p;

	if (!m)
		return -ENOMEM;
	if (len > SIZE_MAX) {
		free(m);
		return -ERANGE;
	}
	p = mmap(NULL, (size_t)len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, f->fd,
		 (off_t)foff);
	if (p == MAP_FAILED) {
		int e = errno;
		free(m);
		return e == ENOMEM ? -ENOMEM : -e;
	}
	m->addr = p;
	m->foff = foff;
	m->len = len;
	m->writable = writable;
	m->refs = 1;
	LIST_INSERT_HEAD(&f->all_maps, m, all);
	sm_fault_register(m);
	*out = m;
	return 0;
}

/* Forget a cached window: it stays mapped while slices still use it. */
static void map_uncache(sm_file *f, struct sm_map *m)
{
	RB_REMOVE(sm_maptree, &f->maps, m);
	m->cached = false;
	if (m->refs == 0) {
		TAILQ_REMOVE(&f->idle, m, lru);
		f->nidle--;
		map_destroy(m);
	}
}

/* A private anonymous copy for a buffered slice: never faults on truncation
 * (not in the fault registry), but marked stale in a fork child like any
 * mapping. */
#define ANON_POOL_MAX 32            /* copies kept per file */
#define ANON_POOL_LEN (64u << 10)   /* of at most this size */

int sm_window_anon(sm_file *f, uint64_t foff, uint64_t len, struct sm_map **out)
{
	struct sm_map *m;
	void *p = NULL;

	if (len > SIZE_MAX)
		return -ERANGE;
	/* a kept copy of this size: zeroed, as a new one would be */
	TAILQ_FOREACH(m, &f->anon_pool, lru)
		if (m->len == len)
			break;
	if (m) {
		TAILQ_REMOVE(&f->anon_pool, m, lru);
		f->nanon_pool--;
		p = m->addr;
		memset(m, 0, sizeof(*m));
		memset(p, 0, (size_t)len);
	} else {
		if (!(m = calloc(1, sizeof(*m))))
			return -ENOMEM;
		p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			free(m);
			return -ENOMEM;
		}
	}
	m->addr = p;
	m->foff = foff;
	m->len = len;
	m->writable = true;
	m->anon = true;
	m->refs = 1;
	LIST_INSERT_HEAD(&f->all_maps, m, all);
	*out = m;
	return 0;
}

int sm_window_get(sm_file *f, uint64_t off, uint64_t len, bool writable, struct sm_map **out)
{
	uint64_t pmask = sm_page_size - 1;
	uint64_t pstart = off & ~pmask;
	uint64_t pend = (off + len + pmask) & ~pmask;
	uint64_t k = pstart / SM_WINDOW_STEP;
	struct sm_map key, *m;
	int rc;

	if (f->memory) {
		f->mem_map->refs++;
		*out = f->mem_map;
		return 0;
	}
	if (pend > k * SM_WINDOW_STEP + SM_WINDOW_SPAN)
		return map_new(f, pstart, pend - pstart, writable, out);

	key.key = k << 1 | writable;
	m = RB_FIND(sm_maptree, &f->maps, &key);
	if (m && m->state != SM_MAP_OK) {
		map_uncache(f, m); /* never hand a dead window to a new slice */
		m = NULL;
	}
	if (m) {
		if (m->refs++ == 0) {
			TAILQ_REMOVE(&f->idle, m, lru);
			f->nidle--;
		}
		*out = m;
		return 0;
	}
	if ((rc = map_new(f, k * SM_WINDOW_STEP, SM_WINDOW_SPAN, writable, &m)) < 0)
		return rc;
	m->key = key.key;
	m->cached = true;
	RB_INSERT(sm_maptree, &f->maps, m);
	*out = m;
	return 0;
}

void sm_window_put(sm_file *f, struct sm_map *m)
{
	if (--m->refs > 0 || m->borrowed)
		return;
	if (m->anon && m->len <= ANON_POOL_LEN && f->nanon_pool < ANON_POOL_MAX && m->state == SM_MAP_OK) {
		LIST_REMOVE(m, all); /* kept for the next buffered slice of its size */
		TAILQ_INSERT_HEAD(&f->anon_pool, m, lru);
		f->nanon_pool++;
		return;
	}
	if (!m->cached) {
		map_destroy(m);
		return;
	}
	if (m->state != SM_MAP_OK) {
		RB_REMOVE(sm_maptree, &f->maps, m);
		map_destroy(m);
		return;
	}
	TAILQ_INSERT_TAIL(&f->idle, m, lru);
	if (++f->nidle > SM_IDLE_MAX)
		map_uncache(f, TAILQ_FIRST(&f->idle));
}

void sm_window_free_all(sm_file *f)
{
	struct sm_map *m, *next;

	RB_FOREACH_SAFE(m, sm_maptree, &f->maps, next) {
		RB_REMOVE(sm_maptree, &f->maps, m);
		map_destroy(m);
	}
	TAILQ_INIT(&f->idle);
	f->nidle = 0;
	while ((m = TAILQ_FIRST(&f->anon_pool))) {
		TAILQ_REMOVE(&f->anon_pool, m, lru);
		munmap(m->addr, m->len);
		free(m);
	}
	f->nanon_pool = 0;
	if (f->mem_map)
		map_destroy(f->mem_map);
	f->mem_map = NULL;
}
