/* SPDX-License-Identifier: MIT */
/*
 * bench-util.h - what the bench programs share: the clock, dying with the
 * library's error text, the median of a run's figures, and a data file
 * whose blocks are real and in the page cache (so a figure measures locks
 * and copies, not the disk).  Static: each program includes it once.
 */
#ifndef SAFEMAP_BENCH_UTIL_H
#define SAFEMAP_BENCH_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "safemap.h"

/* CLOCK_MONOTONIC, in seconds */
static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Exit with "PROGRAM: what: reason": rc < 0 is a safemap error, else errno's. */
__attribute__((noreturn)) static inline void die(const char *what, int rc)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
		rc < 0 ? sm_strerror(rc) : strerror(errno));
	exit(1);
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of v[0..n) (n >= 1); v keeps its order (the paired figures
 * of a round stay side by side). */
static inline double median(const double *v, int n)
{
	double *s = malloc((size_t)n * sizeof(*s)), m;

	if (!s)
		die("malloc", 0);
	memcpy(s, v, (size_t)n * sizeof(*v));
	qsort(s, (size_t)n, sizeof(*s), cmp_double);
	m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	free(s);
	return m;
}

/* Create (or truncate) p with size bytes of real, cached, zeroed blocks. */
static inline void make_file_at(const char *p, uint64_t size)
{
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	char *buf = calloc(1, 1 << 20);

	if (fd < 0 || !buf || ftruncate(fd, (off_t)size) < 0)
		die(p, 0);
	/* the zeros written below allocate too, where fallocate cannot */
	if (fallocate(fd, 0, 0, (off_t)size) < 0 && errno != EOPNOTSUPP)
		die("fallocate", 0);
	for (uint64_t o = 0; o < size; o += 1 << 20)
		if (pwrite(fd, buf, size - o < (1 << 20) ? (size_t)(size - o) : 1 << 20, (off_t)o) < 0)
			die("pwrite", 0);
	free(buf);
	fsync(fd);
	close(fd);
}

#endif
