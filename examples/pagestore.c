/* SPDX-License-Identifier: MIT */
/*
 * pagestore.c - a tiny page-oriented store with a compactor, on safemap.
 *
 * The file is an array of 4 KiB pages.  A page is FREE or holds records
 * (key, value) after a small header.  Deleting records leaves pages sparse;
 * the compactor gathers the live records of sparse pages into one new page
 * and frees the old ones, as the storage engines safemap is written for do:
 *
 *   1. take write slices on a few sparse pages (exclusive: no other
 *      compactor can copy the same records; -EBUSY: skip that page);
 *   2. take a free page as an SM_BUFFERED write slice and fill it: nothing
 *      reaches the file, so no reader can see a half-built page;
 *   3. sm_commit the new page, then free the old pages and commit them;
 *   4. release everything.
 *
 * Readers ("scan") take one read slice over the whole file: a consistent
 * snapshot, since no compactor can hold a write slice meanwhile.
 *
 *   pagestore init FILE PAGES          create, fill with records, delete some
 *   pagestore compact FILE [ROUNDS]    compaction passes
 *   pagestore scan FILE                print pages, records and a key checksum
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap.h"

#define PAGE 4096
#define MAGIC 0x50475354u /* "PGST" */
#define HDR 16            /* u32 magic, u32 count, u64 generation */
#define REC 16            /* u64 key, u64 value */
#define PER_PAGE ((PAGE - HDR) / REC)
#define DELETED UINT64_MAX

static int die(const char *what, int rc)
{
	fprintf(stderr, "pagestore: %s: %s\n", what, sm_strerror(rc));
	exit(1);
}

static uint32_t page_count(sm_slice *s, uint64_t page)
{
	uint32_t magic = 0, n = 0;
	if (sm_get_u32_le(s, page * PAGE, &magic) < 0 || magic != MAGIC)
		return 0;
	(void)!sm_get_u32_le(s, page * PAGE + 4, &n);
	return n > PER_PAGE ? PER_PAGE : n;
}

static int cmd_init(const char *path, uint64_t pages)
{
	sm_file *f;
	sm_slice *s;
	uint64_t key = 1;
	int rc;

	if ((rc = sm_open(path, SM_RDWR | SM_CREATE, NULL, &f)) < 0)
		die("open", rc);
	if ((rc = sm_map_write(f, 0, pages * PAGE, SM_EXTEND, &s)) < 0)
		die("map", rc);
	/* the first half of the pages hold records, two thirds deleted */
	for (uint64_t p = 0; p < pages / 2; p++) {
		if ((rc = sm_put_u32_le(s, p * PAGE, MAGIC)) < 0 ||
		    (rc = sm_put_u32_le(s, p * PAGE + 4, PER_PAGE)) < 0)
			die("write header", rc);
		for (uint64_t r = 0; r < PER_PAGE; r++, key++) {
			uint64_t at = p * PAGE + HDR + r * REC;
			if ((rc = sm_put_u64_le(s, at, key % 3 == 0 ? key : DELETED)) < 0 ||
			    (rc = sm_put_u64_le(s, at + 8, key * 7)) < 0)
				die("write record", rc);
		}
	}
	if ((rc = sm_commit(s, SM_SYNC)) < 0)
		die("commit", rc);
	sm_release(s);
	sm_close(f);
	return 0;
}

/* One compaction: returns how many pages were freed (0: nothing to do). */
static int compact_once(sm_file *f, uint64_t pages)
{
	sm_slice *src[8], *dst = NULL;
	uint64_t srcpage[8], live = 0;
	int nsrc = 0, rc, freed = 0;

	for (uint64_t p = 0; p < pages && nsrc < 8; p++) {
		sm_slice *s;
		if (sm_map_write(f, p * PAGE, PAGE, 0, &s) < 0)
			continue; /* -EBUSY: another compactor or a scan has it */
		uint32_t n = page_count(s, 0), keep = 0;
		for (uint32_t r = 0; r < n; r++) {
			uint64_t k;
			if (sm_get_u64_le(s, HDR + r * REC, &k) == 0 && k != DELETED)
				keep++;
		}
		if (n == 0 || keep == n || live + keep > PER_PAGE) {
			sm_release(s); /* free, full, or would not fit */
			continue;
		}
		src[nsrc] = s;
		srcpage[nsrc++] = p;
		live += keep;
	}
	if (nsrc >= 2) {
		/* a free page for the result, as a private copy */
		for (uint64_t p = 0; p < pages && !dst; p++) {
			sm_slice *s;
			bool used = false;
			for (int i = 0; i < nsrc; i++)
				used |= srcpage[i] == p;
			if (used || sm_map_write(f, p * PAGE, PAGE, SM_BUFFERED, &s) < 0)
				continue;
			if (page_count(s, 0) == 0)
				dst = s;
			else
				sm_release(s);
		}
	}
	if (dst) {
		uint32_t out = 0;
		for (int i = 0; i < nsrc; i++) {
			uint32_t n = page_count(src[i], 0);
			for (uint32_t r = 0; r < n; r++) {
				uint64_t k, v;
				if (sm_get_u64_le(src[i], HDR + r * REC, &k) < 0 || k == DELETED ||
				    sm_get_u64_le(src[i], HDR + r * REC + 8, &v) < 0)
					continue;
				if ((rc = sm_put_u64_le(dst, HDR + out * REC, k)) < 0 ||
				    (rc = sm_put_u64_le(dst, HDR + out * REC + 8, v)) < 0)
					die("copy record", rc);
				out++;
			}
		}
		if ((rc = sm_put_u32_le(dst, 0, MAGIC)) < 0 || (rc = sm_put_u32_le(dst, 4, out)) < 0)
			die("write new header", rc);
		/* the new page becomes visible only now, whole */
		if ((rc = sm_commit(dst, SM_SYNC)) < 0)
			die("commit new page", rc);
		for (int i = 0; i < nsrc; i++) {
			if ((rc = sm_fill(src[i], 0, 0, HDR)) < 0) /* free the old page */
				die("free page", rc);
			freed++;
		}
		if ((rc = sm_commit_many(src, (size_t)nsrc, SM_SYNC)) < 0)
			die("commit freed pages", rc);
		sm_release(dst);
	}
	for (int i = 0; i < nsrc; i++)
		sm_release(src[i]);
	return freed;
}

static int cmd_compact(const char *path, int rounds)
{
	sm_options o = { .size = sizeof(o), .tag = "compactor" };
	sm_file *f;
	uint64_t size;
	int rc, freed = 0;

	if ((rc = sm_open(path, SM_RDWR, &o, &f)) < 0)
		die("open", rc);
	struct stat st;
	if (stat(path, &st) < 0)
		die("stat", -errno);
	size = (uint64_t)st.st_size;
	for (int i = 0; i < rounds; i++)
		freed += compact_once(f, size / PAGE);
	printf("compact (pid %d): freed %d pages\n", (int)getpid(), freed);
	sm_close(f);
	return 0;
}

static int cmd_scan(const char *path)
{
	uint64_t records = 0, sum = 0, used = 0, pages;
	sm_file *f;
	sm_slice *s;
	int rc;

	if ((rc = sm_open(path, SM_RDONLY, NULL, &f)) < 0)
		die("open", rc);
	struct stat st;
	if (stat(path, &st) < 0)
		die("stat", -errno);
	pages = (uint64_t)st.st_size / PAGE;
	/* the whole file under one read lock: a consistent snapshot */
	while ((rc = sm_map_read(f, 0, pages * PAGE, 0, &s)) == -EBUSY)
		usleep(1000); /* a compactor is at work: retry (SM_WAIT is planned) */
	if (rc < 0)
		die("map", rc);
	for (uint64_t p = 0; p < pages; p++) {
		uint32_t n = page_count(s, p);
		used += n > 0;
		for (uint32_t r = 0; r < n; r++) {
			uint64_t k, v;
			if (sm_get_u64_le(s, p * PAGE + HDR + r * REC, &k) < 0 || k == DELETED)
				continue;
			if ((rc = sm_get_u64_le(s, p * PAGE + HDR + r * REC + 8, &v)) < 0)
				die("read", rc);
			if (v != k * 7) {
				fprintf(stderr, "pagestore: key %llu has a torn value\n", (unsigned long long)k);
				return 1;
			}
			records++;
			sum += k * 2654435761u;
		}
	}
	printf("scan: %llu pages in use of %llu, %llu live records, key checksum %llx\n",
	       (unsigned long long)used, (unsigned long long)pages, (unsigned long long)records,
	       (unsigned long long)sum);
	sm_release(s);
	sm_close(f);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "init") == 0)
		return cmd_init(argv[2], strtoull(argv[3], NULL, 10));
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "compact") == 0)
		return cmd_compact(argv[2], argc == 4 ? atoi(argv[3]) : 100);
	if (argc == 3 && strcmp(argv[1], "scan") == 0)
		return cmd_scan(argv[2]);
	fprintf(stderr, "usage: pagestore init FILE PAGES | compact FILE [ROUNDS] | scan FILE\n");
	return 2;
}
