/* SPDX-License-Identifier: MIT */
/*
 * bench.c - SPEC §8 figures (and figure 8, issue 14's lock pair), each
 * measured against the raw-syscall
 * baseline in the same run: the two are interleaved, repeated, and the
 * medians and their ratio printed beside the target.
 *
 *   bench/bench [-r REPS] [-d DIR] [-f FIGURE]
 *   bench/bench --callgrind FIG sm|raw ITERS   (one loop, for instruction counts)
 *
 * Times on a shared virtual machine are noisy; `make bench-callgrind`
 * counts instructions per operation for figures 1, 2, 4 and 8 with valgrind.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-util.h"
#include "safemap.h"

#define PG 4096
#define NOINLINE __attribute__((noinline))

static int reps = 7;
static char dir[256] = "/var/tmp";
static char path[512];

static void make_file(uint64_t size)
{
	snprintf(path, sizeof(path), "%s/safemap-bench.%d", dir, (int)getpid());
	make_file_at(path, size);
}

static int raw_lock(int fd, short type, uint64_t off, uint64_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = (off_t)len };
	return fcntl(fd, F_OFD_SETLK, &fl);
}

/* Report one figure: medians of ns/op (or a rate), their ratio, the target. */
static void report(const char *name, const char *unit, double *sm, double *raw, int n,
		   const char *target, int higher_is_better)
{
	double a = median(sm, n), b = median(raw, n);
	double ratio = higher_is_better ? a / b : a / b;
	printf("  %-44s safemap %10.1f %-6s raw %10.1f %-6s ratio %.2fx  (target %s)\n", name, a,
	       unit, b, unit, ratio, target);
}

/* ---- figure 1 and 2: map + release of a 4 KiB read slice ------------- */

#define F1_SPAN (16ull << 20) /* offsets cycle over 16 MiB */

NOINLINE static void fig1_sm(sm_file *f, uint64_t base, long iters)
{
	for (long i = 0; i < iters; i++) {
		uint64_t off = base + ((uint64_t)i * 7 * PG) % F1_SPAN;
		sm_slice *s;
		uint8_t b;
		int rc = sm_map_read(f, off, PG, 0, &s);
		if (rc < 0)
			die("sm_map_read", rc);
		if ((rc = sm_get_u8(s, 0, &b)) < 0)
			die("sm_get_u8", rc);
		sm_release(s);
	}
}

NOINLINE static void fig1_raw(int fd, uint64_t base, long iters)
{
	for (long i = 0; i < iters; i++) {
		uint64_t off = base + ((uint64_t)i * 7 * PG) % F1_SPAN;
		if (raw_lock(fd, F_RDLCK, off, PG) < 0)
			die("F_OFD_SETLK", 0);
		volatile uint8_t *p = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, (off_t)off);
		if (p == MAP_FAILED)
			die("mmap", 0);
		(void)p[0];
		munmap((void *)p, PG);
		raw_lock(fd, F_UNLCK, off, PG);
	}
}

static void fig1(const char *label, sm_file *f, int fd, uint64_t base, long iters,
		 const char *target)
{
	double sm[64], raw[64];

	fig1_sm(f, base, iters / 4); /* warm the window cache and page cache */
	fig1_raw(fd, base, iters / 4);
	for (int r = 0; r < reps; r++) {
		double t0 = now();
		fig1_sm(f, base, iters);
		double t1 = now();
		fig1_raw(fd, base, iters);
		double t2 = now();
		sm[r] = (t1 - t0) / (double)iters * 1e9;
		raw[r] = (t2 - t1) / (double)iters * 1e9;
	}
	report(label, "ns/op", sm, raw, reps, target, 0);
}

/* Hold n read slices of 32 bytes at i*64 in f: n distinct kernel locks. */
static sm_slice **hold_regions(sm_file *f, int n)
{
	sm_slice **v = calloc((size_t)n, sizeof(*v));
	for (int i = 0; i < n; i++) {
		int rc = sm_map_read(f, (uint64_t)i * 64, 32, 0, &v[i]);
		if (rc < 0)
			die("hold", rc);
	}
	return v;
}

static void release_regions(sm_slice **v, int n)
{
	for (int i = 0; i < n; i++)
		sm_release(v[i]);
	free(v);
}

/* Another process holding n raw OFD read locks until told to stop. */
static pid_t hold_in_child(int n, int *stop_fd)
{
	int ready[2], stop[2];
	pid_t pid;
	char c;

	if (pipe(ready) < 0 || pipe(stop) < 0)
		die("pipe", 0);
	if ((pid = fork()) == 0) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		close(stop[1]); /* so the parent's close is our EOF */
		for (int i = 0; i < n; i++)
			if (raw_lock(fd, F_RDLCK, (uint64_t)i * 64, 32) < 0)
				_exit(1);
		(void)!write(ready[1], "r", 1);
		(void)!read(stop[0], &c, 1);
		_exit(0);
	}
	if (read(ready[0], &c, 1) != 1)
		die("child holder", 0);
	close(ready[0]);
	close(ready[1]);
	close(stop[0]);
	*stop_fd = stop[1];
	return pid;
}

static void figures_1_2(void)
{
	const int held = 10000;
	sm_file *f;
	int fd, rc, stop;

	make_file(64ull << 20);
	if ((rc = sm_open(path, SM_RDWR, NULL, &f)) < 0)
		die("sm_open", rc);
	fd = open(path, O_RDWR | O_CLOEXEC);
	printf("1. map + release of a 4 KiB read slice (lock, map, first read, unmap, unlock)\n");
	fig1("no other region held", f, fd, 32ull << 20, 20000, "<= 1.0x");
	{
		/* the lock table's share: the same without it */
		sm_options o = { .size = sizeof(o), .flags = SM_OPT_NO_TABLE };
		sm_file *nt;
		if ((rc = sm_open(path, SM_RDWR, &o, &nt)) < 0)
			die("sm_open", rc);
		fig1("same, without the lock table", nt, fd, 32ull << 20, 20000, "(table cost)");
		sm_close(nt);
	}

	printf("2. the same with %d other regions held\n", held);
	sm_slice **v = hold_regions(f, held);
	fig1("held in this process (same sm_file)", f, fd, 32ull << 20, 1000, "<= 1.5x");
	release_regions(v, held);
	pid_t pid = hold_in_child(held, &stop);
	fig1("held by another process", f, fd, 32ull << 20, 1000, "<= 1.5x");
	close(stop);
	waitpid(pid, NULL, 0);
	close(fd);
	sm_close(f);
	unlink(path);
}

/* ---- figure 3 and 4: accessors ------------------------------------- */

NOINLINE static void fig3_sm(sm_slice *s, uint64_t len, char *buf)
{
	for (uint64_t o = 0; o < len; o += 65536)
		if (sm_read(s, o, buf, 65536) < 0)
			die("sm_read", -EIO);
}

NOINLINE static void fig3_raw(const char *map, uint64_t len, char *buf)
{
	for (uint64_t o = 0; o < len; o += 65536) {
		memcpy(buf, map + o, 65536);
		__asm__ volatile("" ::"r"(buf) : "memory");
	}
}

NOINLINE static uint64_t fig4_sm(sm_slice *s, uint64_t len)
{
	uint64_t sum = 0, v;
	for (uint64_t o = 0; o < len; o += 8) {
		if (sm_get_u64(s, o, &v) < 0)
			die("sm_get_u64", -EIO);
		sum += v;
	}
	return sum;
}

NOINLINE static uint64_t fig4_raw(const volatile uint64_t *p, uint64_t len)
{
	uint64_t sum = 0;
	for (uint64_t i = 0; i < len / 8; i++)
		sum += p[i];
	return sum;
}

/* The bulk path for hot loops (sm_get_u64(3)): the same raw volatile loop,
 * run by sm_guarded under the fault guard, the slice's state checked once
 * after it. */
struct fig4b {
	uint64_t len, sum;
};

static int fig4b_fn(void *p, size_t n, void *arg)
{
	struct fig4b *a = arg;

	(void)n;
	a->sum = fig4_raw(p, a->len);
	return 0;
}

NOINLINE static uint64_t fig4_guarded(sm_slice *s, uint64_t len)
{
	struct fig4b a = { len, 0 };
	int rc;

	if ((rc = sm_guarded(s, fig4b_fn, &a)) < 0)
		die("sm_guarded", rc);
	return a.sum;
}

/* Figure 4's rounds: words 64-bit words summed by fn through s, against
 * the raw loop over map, alternately; the sums must agree. */
static void fig4_rounds(uint64_t (*fn)(sm_slice *, uint64_t), sm_slice *s, const char *map,
			uint64_t words)
{
	double sm[64], raw[64];
	uint64_t a = 0, b = 0;

	for (int r = 0; r < reps; r++) {
		double t0 = now();
		a += fn(s, words);
		double t1 = now();
		b += fig4_raw((const volatile uint64_t *)map, words);
		double t2 = now();
		sm[r] = (double)words / (t1 - t0) / 1e9;
		raw[r] = (double)words / (t2 - t1) / 1e9;
	}
	if (a != b)
		die("checksums differ", -EIO);
	report("throughput", "GB/s", sm, raw, reps, ">= 0.8x", 1);
}

static void figures_3_4(void)
{
	const uint64_t big = 256ull << 20, words = 64ull << 20;
	double sm[64], raw[64];
	char *buf = malloc(65536);
	sm_file *f;
	sm_slice *s;
	int fd, rc;

	make_file(big);
	if ((rc = sm_open(path, SM_RDONLY, NULL, &f)) < 0 ||
	    (rc = sm_map_read(f, 0, big, SM_POPULATE, &s)) < 0)
		die("map 256 MiB", rc);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	char *map = mmap(NULL, big, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (map == MAP_FAILED)
		die("mmap", 0);
	fig3_sm(s, big, buf);
	fig3_raw(map, big, buf);
	for (int r = 0; r < reps; r++) {
		double t0 = now();
		fig3_sm(s, big, buf);
		double t1 = now();
		fig3_raw(map, big, buf);
		double t2 = now();
		sm[r] = (double)big / (t1 - t0) / 1e9;
		raw[r] = (double)big / (t2 - t1) / 1e9;
	}
	printf("3. sm_read of 64 KiB blocks over a 256 MiB slice vs memcpy from a raw mapping\n");
	report("throughput", "GB/s", sm, raw, reps, ">= 0.9x", 1);

	printf("4. sm_get_u64 over 64 MiB vs a raw volatile uint64_t loop (inline fast path)\n");
	fig4_rounds(fig4_sm, s, map, words);
	printf("4b. the bulk path: the raw loop run by sm_guarded (what sm_get_u64(3) names for hot loops)\n");
	fig4_rounds(fig4_guarded, s, map, words);
	munmap(map, big);
	close(fd);
	sm_release(s);
	sm_close(f);
	free(buf);
	unlink(path);
}

/* ---- figure 5: commit of one dirty page ------------------------------ */

static void figure_5(void)
{
	const uint64_t big = 512ull << 20;
	const int iters = 40;
	double sm[64], raw[64];
	sm_file *f;
	sm_slice *s;
	int fd, rc;

	make_file(big);
	if ((rc = sm_open(path, SM_RDWR, NULL, &f)) < 0 || (rc = sm_map_write(f, 0, big, 0, &s)) < 0)
		die("map 512 MiB", rc);
	fd = open(path, O_RDWR | O_CLOEXEC);
	volatile char *map = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap", 0);
	for (int r = 0; r < reps; r++) {
		double tsm = 0, traw = 0;
		for (int i = 0; i < iters; i++) {
			uint64_t pg = (uint64_t)(r * iters + i) * 997 % (big / PG);
			for (int k = 0; k < 2; k++) { /* alternate the order, as in 5b */
				double t0 = now();
				if ((k == 0) == (i % 2 == 0)) {
					if ((rc = sm_put_u64(s, pg * PG, (uint64_t)i)) < 0 || (rc = sm_commit(s, 0)) < 0)
						die("commit", rc);
					tsm += now() - t0;
				} else {
					map[(pg ^ 1) * PG] = (char)i;
					if (msync((void *)(map + (pg ^ 1) * PG), PG, MS_SYNC) < 0)
						die("msync", 0);
					traw += now() - t0;
				}
			}
		}
		sm[r] = tsm / iters * 1e6;
		raw[r] = traw / iters * 1e6;
	}
	printf("5. sm_commit of 1 dirty 4 KiB page in a 512 MiB direct slice vs msync of that page\n");
	report("latency", "us/op", sm, raw, reps, "<= 1.2x", 0);

	/* buffered: one dirty page of a 64 MiB private copy vs pwrite + fdatasync */
	sm_release(s);
	sm_slice *b;
	char page[PG];
	memset(page, 7, sizeof(page));
	if ((rc = sm_map_write(f, big - (64ull << 20), 64ull << 20, SM_BUFFERED, &b)) < 0)
		die("map buffered", rc);
	for (int r = 0; r < reps; r++) {
		double tsm = 0, traw = 0;
		for (int i = 0; i < iters; i++) {
			uint64_t pg = (uint64_t)(r * iters + i) * 997 % ((64ull << 20) / PG);
			/* alternate which goes first: the first flush after the
			 * other's pays for journal work both caused */
			for (int k = 0; k < 2; k++) {
				double t0 = now();
				if ((k == 0) == (i % 2 == 0)) {
					if ((rc = sm_put_u64(b, pg * PG, (uint64_t)i)) < 0 || (rc = sm_commit(b, 0)) < 0)
						die("buffered commit", rc);
					tsm += now() - t0;
				} else {
					if (pwrite(fd, page, PG, (off_t)(big - (64ull << 20) + (pg ^ 1) * PG)) != PG ||
					    fdatasync(fd) < 0)
						die("pwrite", 0);
					traw += now() - t0;
				}
			}
		}
		sm[r] = tsm / iters * 1e6;
		raw[r] = traw / iters * 1e6;
	}
	printf("5b. buffered sm_commit of 1 dirty page in a 64 MiB slice vs pwrite + fdatasync\n");
	report("latency", "us/op", sm, raw, reps, "<= 1.2x", 0);
	sm_release(b);
	munmap((void *)map, big);
	close(fd);
	sm_close(f);
	unlink(path);
}

/* ---- figure 6: contended throughput --------------------------------- */

/* Each worker takes random 4 KiB slices (1 in 4 a write) for `secs`
 * seconds: in a partition of its own (non-overlapping) or anywhere in a
 * shared 1 MiB (overlapping, conflicts fail fast).  Prints ops and busy. */
static void worker(int id, int nproc, int overlap, int raw, double secs, int out)
{
	uint64_t span = overlap ? (1ull << 20) : (64ull << 20) / (uint64_t)nproc;
	uint64_t base = overlap ? 0 : span * (uint64_t)id;
	unsigned seed = (unsigned)id * 7919u + 1;
	long ops = 0, busy = 0;
	sm_file *f = NULL;
	int fd = -1;

	if (raw)
		fd = open(path, O_RDWR | O_CLOEXEC);
	else if (sm_open(path, SM_RDWR, NULL, &f) < 0)
		_exit(1);
	double end = now() + secs;
	while (now() < end) {
		for (int k = 0; k < 64; k++) {
			uint64_t off = base + (uint64_t)(rand_r(&seed) % (int)((span - PG) / 64)) * 64;
			int write = rand_r(&seed) % 4 == 0;
			if (raw) {
				if (raw_lock(fd, write ? F_WRLCK : F_RDLCK, off, PG) < 0) {
					busy++;
					continue;
				}
				uint64_t poff = off & ~(uint64_t)(PG - 1);
				volatile char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
							(off_t)poff);
				if (write)
					p[off - poff] = 1;
				else
					(void)p[off - poff];
				munmap((void *)p, 2 * PG);
				raw_lock(fd, F_UNLCK, off, PG);
			} else {
				sm_slice *s;
				int rc = write ? sm_map_write(f, off, PG, 0, &s) : sm_map_read(f, off, PG, 0, &s);
				uint8_t b;
				if (rc == -EBUSY) {
					busy++;
					continue;
				}
				if (rc < 0)
					_exit(2);
				if ((write ? sm_put_u8(s, 0, 1) : sm_get_u8(s, 0, &b)) < 0)
					_exit(3);
				sm_release(s);
			}
			ops++;
		}
	}
	dprintf(out, "%ld %ld\n", ops, busy);
	_exit(0);
}

static double contended(int nproc, int overlap, int raw, double secs, double *busy_rate)
{
	int p[2];
	long total = 0, busy = 0;

	if (pipe(p) < 0)
		die("pipe", 0);
	for (int i = 0; i < nproc; i++)
		if (fork() == 0) {
			close(p[0]);
			worker(i, nproc, overlap, raw, secs, p[1]);
		}
	close(p[1]);
	FILE *in = fdopen(p[0], "r");
	long o, b;
	while (fscanf(in, "%ld %ld", &o, &b) == 2) {
		total += o;
		busy += b;
	}
	fclose(in);
	while (wait(NULL) > 0)
		;
	*busy_rate = (double)busy / secs;
	return (double)total / secs;
}

static void figure_6(void)
{
	const double secs = 1.0;
	const int counts[] = { 2, 4, 8 };

	make_file(64ull << 20);
	printf("6. contended throughput, random 4 KiB slices (1 in 4 a write), %.0f s per run\n", secs);
	for (int overlap = 0; overlap < 2; overlap++)
		for (size_t c = 0; c < 3; c++) {
			double sm[8], raw[8], sb = 0, rb = 0;
			int r3 = reps < 3 ? reps : 3;
			for (int r = 0; r < r3; r++) {
				sm[r] = contended(counts[c], overlap, 0, secs, &sb);
				raw[r] = contended(counts[c], overlap, 1, secs, &rb);
			}
			char name[96];
			snprintf(name, sizeof(name), "%d procs, %s (busy/s %.0f vs %.0f)", counts[c],
				 overlap ? "overlapping" : "non-overlapping", sb, rb);
			report(name, "op/s", sm, raw, r3, "higher is better", 1);
		}
	printf("  (safemap rows include the lock table: one slot write per acquire)\n");
	unlink(path);
}


/* ---- figure 7: the log's figures are bench/bench_log (appends quiet and
 * loaded, beside write+fdatasync and RocksDB; iteration beside read(2)). */

/* ---- figure 8: a lock without a mapping (issue 14) ---------------------- */

/* One byte, as SQLite's WAL read marks: sm_lock + sm_unlock against two
 * fcntl(F_OFD_SETLK), the unix VFS's cost (both make the same 2 system
 * calls; the difference is the table entry and the in-process counting).
 * The sm_file holds a second lock meanwhile, as the -shm's DMS byte. */
#define F8_OFF 124

NOINLINE static void fig8_sm(sm_file *f, long iters)
{
	for (long i = 0; i < iters; i++) {
		sm_range *r;
		int rc = sm_lock(f, F8_OFF, 1, SM_LOCK_READ, "READ-1", &r);
		if (rc < 0)
			die("sm_lock", rc);
		sm_unlock(r);
	}
}

NOINLINE static void fig8_raw(int fd, long iters)
{
	for (long i = 0; i < iters; i++) {
		if (raw_lock(fd, F_RDLCK, F8_OFF, 1) < 0)
			die("F_OFD_SETLK", 0);
		raw_lock(fd, F_UNLCK, F8_OFF, 1);
	}
}

/* f and fd over path, each holding the DMS-like byte */
static void fig8_open(sm_file **f, sm_range **dms, int *fd)
{
	int rc;

	if ((rc = sm_open(path, SM_RDWR, NULL, f)) < 0 ||
	    (rc = sm_lock(*f, F8_OFF + 4, 1, SM_LOCK_READ, "DMS", dms)) < 0)
		die("sm_open/sm_lock", rc);
	if ((*fd = open(path, O_RDWR | O_CLOEXEC)) < 0 || raw_lock(*fd, F_RDLCK, F8_OFF + 4, 1) < 0)
		die("open/F_OFD_SETLK", 0);
}

static void figure_8(void)
{
	const long iters = 20000;
	double sm[64], raw[64];
	sm_range *dms;
	sm_file *f;
	int fd;

	make_file(PG);
	fig8_open(&f, &dms, &fd);
	printf("8. sm_lock + sm_unlock of 1 byte (no mapping) against 2 x fcntl(F_OFD_SETLK)\n");
	fig8_sm(f, iters / 4);
	fig8_raw(fd, iters / 4);
	for (int r = 0; r < reps; r++) {
		double t0 = now();
		fig8_sm(f, iters);
		double t1 = now();
		fig8_raw(fd, iters);
		double t2 = now();
		sm[r] = (t1 - t0) / (double)iters * 1e9;
		raw[r] = (t2 - t1) / (double)iters * 1e9;
	}
	report("lock + unlock, uncontended", "ns/op", sm, raw, reps, "~1.0x (issue 14)", 0);
	sm_unlock(dms);
	sm_close(f);
	close(fd);
	unlink(path);
}

/* ---- callgrind mode ----------------------------------------------------- */

static int callgrind(int fig, const char *which, long iters)
{
	int is_sm = strcmp(which, "sm") == 0;
	sm_file *f;
	sm_slice *s;
	int fd, rc;

	if (fig == 4) {
		make_file(8ull << 20);
		if ((rc = sm_open(path, SM_RDONLY, NULL, &f)) < 0 ||
		    (rc = sm_map_read(f, 0, 8ull << 20, 0, &s)) < 0)
			die("map", rc);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		void *map = mmap(NULL, 8ull << 20, PROT_READ, MAP_SHARED, fd, 0);
		uint64_t bytes = (uint64_t)iters * 8;
		if (bytes > (8ull << 20))
			bytes = 8ull << 20;
		if (is_sm)
			fig4_sm(s, bytes);
		else
			fig4_raw(map, bytes);
		unlink(path);
		return 0;
	}
	if (fig == 8) {
		sm_range *dms;

		make_file(PG);
		fig8_open(&f, &dms, &fd);
		if (is_sm)
			fig8_sm(f, iters);
		else
			fig8_raw(fd, iters);
		unlink(path);
		return 0;
	}
	make_file(64ull << 20);
	if ((rc = sm_open(path, SM_RDWR, NULL, &f)) < 0)
		die("sm_open", rc);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fig == 2)
		hold_regions(f, 10000);
	if (is_sm)
		fig1_sm(f, 32ull << 20, iters);
	else
		fig1_raw(fd, 32ull << 20, iters);
	unlink(path);
	return 0;
}

int main(int argc, char **argv)
{
	int only = 0, c;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 5 && strcmp(argv[1], "--callgrind") == 0)
		return callgrind(atoi(argv[2]), argv[3], atol(argv[4]));
	while ((c = getopt(argc, argv, "r:d:f:")) != -1) {
		switch (c) {
		case 'r': reps = atoi(optarg) < 1 ? 1 : atoi(optarg) > 64 ? 64 : atoi(optarg); break;
		case 'd': snprintf(dir, sizeof(dir), "%s", optarg); break;
		case 'f': only = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: bench [-r REPS] [-d DIR] [-f FIGURE]\n");
			return 2;
		}
	}
	printf("safemap bench: %d repetitions, medians, files in %s (command: %s", reps, dir, argv[0]);
	for (int i = 1; i < argc; i++)
		printf(" %s", argv[i]);
	printf(")\n");
	if (!only || only == 1 || only == 2)
		figures_1_2();
	if (!only || only == 3 || only == 4)
		figures_3_4();
	if (!only || only == 5)
		figure_5();
	if (!only || only == 6)
		figure_6();
	if (only == 7)
		printf("7. log figures: see bench/bench_log\n");
	if (!only || only == 8)
		figure_8();
	return 0;
}
