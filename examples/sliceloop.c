/* SPDX-License-Identifier: MIT */
/*
 * sliceloop.c - map + first read + release of a 4 KiB read slice, N times,
 * in either lock mode: the loop to run under `strace -f -c` to see that
 * table-authority mode makes no system call per slice (an uncontended
 * read slice from a cached window: no fcntl, fstat, getpid nor futex), and a
 * quick ns/op figure of both modes (the official figures: `make bench`).
 *
 *   examples/sliceloop [-t|-k] [-n N] [-H M [-O]] FILE
 *     -t  table-authority mode (SM_OPT_TABLE_LOCKS), -k  kernel-lock mode
 *     -H  hold M other regions (sm_lock ranges past 1 GiB) meanwhile
 *     -O  hold them through another sm_file (else through the measured one)
 *
 * The file must be at least 1 MiB; slices walk its first 256 pages, so
 * every one comes from a cached window.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "safemap.h"

int main(int argc, char **argv)
{
	sm_options o = { .size = sizeof(o) };
	struct timespec t0, t1;
	unsigned long n = 20000, sum = 0, held = 0;
	sm_range **other = NULL;
	bool own = true;
	sm_file *h;
	sm_file *f;
	int c, rc;

	while ((c = getopt(argc, argv, "tkn:H:O")) != -1) {
		switch (c) {
		case 't': o.flags |= SM_OPT_TABLE_LOCKS; break;
		case 'k': o.flags &= ~SM_OPT_TABLE_LOCKS; break;
		case 'n': n = strtoul(optarg, NULL, 0); break;
		case 'H': held = strtoul(optarg, NULL, 0); break;
		case 'O': own = false; break;
		default:
			fprintf(stderr, "usage: %s [-t|-k] [-n N] [-H M [-O]] FILE\n", argv[0]);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: %s [-t|-k] [-n N] [-H M [-O]] FILE\n", argv[0]);
		return 2;
	}
	if ((rc = sm_open(argv[optind], SM_RDONLY, &o, &f)) < 0) {
		fprintf(stderr, "sm_open: %s\n", sm_strerror(rc));
		return 1;
	}
	h = f;
	if (!own && (rc = sm_open(argv[optind], SM_RDONLY, &o, &h)) < 0) {
		fprintf(stderr, "sm_open: %s\n", sm_strerror(rc));
		return 1;
	}
	if (held && !(other = calloc(held, sizeof(*other))))
		return 1;
	for (unsigned long i = 0; i < held; i++) {
		if ((rc = sm_lock(h, (1ull << 30) + 2 * i, 1, SM_LOCK_READ, NULL, &other[i])) < 0) {
			fprintf(stderr, "holding region %lu: %s\n", i, sm_strerror(rc));
			return 1;
		}
	}
	/* one warm-up slice: maps the window and caches the size */
	for (int pass = 0; pass < 2; pass++) {
		unsigned long iters = pass ? n : 1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (unsigned long i = 0; i < iters; i++) {
			sm_slice *s;
			uint64_t v = 0;
			if ((rc = sm_map_read(f, (i % 256) * 4096, 4096, 0, &s)) < 0 ||
			    (rc = sm_get_u64(s, 0, &v)) < 0 || (rc = sm_release(s)) < 0) {
				fprintf(stderr, "slice %lu: %s\n", i, sm_strerror(rc));
				return 1;
			}
			sum += v;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
	}
	double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
	printf("%s mode, %lu other regions held%s: %lu x (map + sm_get_u64 + release of 4 KiB): "
	       "%.1f ns/op (checksum %lu)\n",
	       (o.flags & SM_OPT_TABLE_LOCKS) ? "table" : "kernel", held,
	       held ? (own ? " (same sm_file)" : " (another sm_file)") : "", n, ns / (double)n, sum);
	for (unsigned long i = 0; i < held; i++)
		(void)sm_unlock(other[i]);
	free(other);
	if (h != f)
		(void)sm_close(h);
	return sm_close(f) < 0;
}
