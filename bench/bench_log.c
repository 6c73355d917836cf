/* SPDX-License-Identifier: MIT */
/*
 * bench_log.c - the log's figures (SPEC §8, logs), each beside its
 * baseline from the same run:
 *   - appends of 100 B records, every appender committing every record:
 *     1 appender and 8 (threads, and processes) against O_APPEND write +
 *     fdatasync with as many writers, and 8 threads against RocksDB
 *     rocksdb_put with sync set (when configure found librocksdb); on a
 *     quiet machine and again with a CPU hog per CPU beside it (busy-loop
 *     processes the bench forks itself); records per flush for each;
 *   - iteration of 100 B (and 4 KiB) records against read(2) of the same
 *     bytes.
 * It prints the filesystem of the directory and what a raw fdatasync costs
 * there: where that is under 20 us the append ratios mean little.
 *
 *   bench/bench_log [-r REPS] [-d DIR] [-s SECONDS] [-p append|iter] [-q]
 *   (-q: quiet machine only, no loaded runs)
 *   bench/bench_log --callgrind iter|iterraw N   (one loop, for callgrind)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif

#include "bench-util.h"
#include "safemap.h"

#define MAXW 8
#define REC 100

static int reps = 3;
static double secs = 1.0;
static char dir[256] = "/var/tmp";
static char path[512];

/*
 * Flush counter: this program's fdatasync, which the library's calls
 * resolve to as well (the executable's definition comes first), counts
 * into a shared page (appenders may be processes) and makes the system
 * call.  Records / flushes is the group commit's batch size.
 */
static _Atomic long *flushes; /* [0]: flushes, [1]: ns spent in them */

int fdatasync(int fd)
{
	struct timespec a, b;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &a);
	rc = (int)syscall(SYS_fdatasync, fd);
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (flushes) {
		atomic_fetch_add_explicit(&flushes[0], 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&flushes[1],
					  (long)(b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec),
					  memory_order_relaxed);
	}
	return rc;
}

/* Of the last append_run: its flushes' mean time in fdatasync, and the
 * mean time from one flush's start to the next (safemap: one flush at a
 * time, so the difference is what a round spends outside the disk). */
static double last_sync_us, last_round_us;

/* Medians, and the median of the per-round ratios: each round measures the
 * two side by side (in alternating order), so a disk shared with other
 * programs, whose speed drifts over seconds, skews a round's pair less
 * than it skews the medians of separate runs. */
static void report(const char *name, const char *unit, double *a, double *b, int n,
		   const char *bname, const char *target)
{
	double x = median(a, n), y = median(b, n), q[16];

	for (int i = 0; i < n; i++)
		q[i] = a[i] / b[i];
	printf("  %-40s safemap %9.0f %-5s %-7s %9.0f %-5s ratio %5.2fx  (target %s)\n", name, x,
	       unit, bname, y, unit, median(q, n), target);
}

/* ---- the machine ------------------------------------------------------- */

static const char *fs_name(long type)
{
	switch ((unsigned long)type) {
	case 0xEF53: return "ext2/3/4";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x01021994: return "tmpfs";
	case 0x794c7630: return "overlayfs";
	case 0x6969: return "nfs";
	case 0x65735546: return "fuse";
	case 0x2fc12fc1: return "zfs";
	default: return "other";
	}
}

/* The filesystem of dir, and the median cost of a 100 B O_APPEND write +
 * fdatasync there (us). */
static double machine(void)
{
	struct statfs sf;
	double t[64];
	char p[600], buf[REC];
	int fd, n = 64;

	memset(buf, 'x', sizeof(buf));
	if (statfs(dir, &sf) < 0)
		die(dir, 0);
	snprintf(p, sizeof(p), "%s/safemap-bench-raw.%d", dir, (int)getpid());
	if ((fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644)) < 0)
		die(p, 0);
	for (int i = 0; i < n; i++) {
		double t0 = now();
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fdatasync(fd) < 0)
			die("write/fdatasync", 0);
		t[i] = (now() - t0) * 1e6;
	}
	close(fd);
	unlink(p);
	printf("filesystem of %s: %s (statfs type 0x%lx); raw 100 B write + fdatasync: %.1f us "
	       "(median of %d)%s\n",
	       dir, fs_name((long)sf.f_type), (unsigned long)sf.f_type, median(t, n), n,
	       median(t, n) < 20 ? "  -- under 20 us: the append ratios mean little here" : "");
	return median(t, n);
}

/* ---- load: one busy-loop process per CPU -------------------------------- */

static pid_t hogs[64];
static int nhogs;

static void load_start(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	nhogs = n < 1 ? 1 : n > 64 ? 64 : (int)n;
	for (int i = 0; i < nhogs; i++)
		if ((hogs[i] = fork()) == 0) {
			volatile unsigned long x = 0;
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench */
			for (;;)
				x++;
		}
	usleep(50000);
}

static void load_stop(void)
{
	for (int i = 0; i < nhogs; i++) {
		kill(hogs[i], SIGKILL);
		waitpid(hogs[i], NULL, 0);
	}
	nhogs = 0;
}

/* ---- appends ---------------------------------------------------------------- */

enum who { SM, RAW, ROCKS };

struct aw {
	enum who who;
	sm_log *log;
	int fd;
	void *db, *wo; /* RocksDB */
	int id;
	long ops;
};

static void log_fresh(enum who who)
{
	char tbl[600];
	sm_log *l;
	int rc, fd;

	snprintf(path, sizeof(path), "%s/safemap-bench-log.%d", dir, (int)getpid());
	snprintf(tbl, sizeof(tbl), "%s.smlock", path);
	unlink(tbl);
	if (who == ROCKS) {
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s.rocks'", path);
		if (system(cmd) != 0)
			die("rm", 0);
		return;
	}
	unlink(path);
	if (who == RAW) {
		if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
			die(path, 0);
		close(fd);
	} else {
		if ((rc = sm_log_open(path, SM_RDWR | SM_CREATE, NULL, &l)) < 0)
			die("sm_log_open", rc);
		sm_log_close(l);
	}
}

static void cleanup(void)
{
	char tbl[600], cmd[700];

	snprintf(tbl, sizeof(tbl), "%s.smlock", path);
	unlink(tbl);
	unlink(path);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s.rocks'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "rm failed\n");
}

#ifdef HAVE_ROCKSDB
static void rocks_open(struct aw *w)
{
	char p[600], *err = NULL;
	rocksdb_options_t *o = rocksdb_options_create();

	snprintf(p, sizeof(p), "%s.rocks", path);
	rocksdb_options_set_create_if_missing(o, 1);
	w->db = rocksdb_open(o, p, &err);
	rocksdb_options_destroy(o);
	if (err)
		fprintf(stderr, "rocksdb_open: %s\n", err), exit(1);
	w->wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(w->wo, 1);
}

static void rocks_close(struct aw *w)
{
	rocksdb_writeoptions_destroy(w->wo);
	rocksdb_close(w->db);
}
#endif

static void *append_worker(void *arg)
{
	struct aw *w = arg;
	char rec[REC];
	double end = now() + secs;

	memset(rec, 'r', sizeof(rec));
	while (now() < end) {
		for (int k = 0; k < 8; k++) {
			if (w->who == RAW) {
				if (write(w->fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec) ||
				    fdatasync(w->fd) < 0)
					die("write/fdatasync", 0);
			} else if (w->who == SM) {
				int rc = sm_log_append(w->log, rec, sizeof(rec), NULL);
				if (rc < 0 || (rc = sm_log_commit(w->log)) < 0)
					die("sm_log_append/commit", rc);
			} else {
#ifdef HAVE_ROCKSDB
				char key[32], *err = NULL;
				int kl = snprintf(key, sizeof(key), "%02d-%012ld", w->id, w->ops);
				/* a 100 B write: key + value */
				rocksdb_put(w->db, w->wo, key, (size_t)kl, rec, sizeof(rec) - (size_t)kl,
					    &err);
				if (err)
					fprintf(stderr, "rocksdb_put: %s\n", err), exit(1);
#endif
			}
			w->ops++;
		}
	}
	return NULL;
}

static void open_for(struct aw *w)
{
	int rc;

	if (w->who == RAW) {
		if ((w->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)) < 0)
			die(path, 0);
	} else if (w->who == SM) {
		if ((rc = sm_log_open(path, SM_RDWR, NULL, &w->log)) < 0)
			die("sm_log_open", rc);
	}
#ifdef HAVE_ROCKSDB
	else
		rocks_open(w);
#endif
}

static void close_for(struct aw *w)
{
	if (w->who == RAW)
		close(w->fd);
	else if (w->who == SM)
		sm_log_close(w->log);
#ifdef HAVE_ROCKSDB
	else
		rocks_close(w);
#endif
}

/* Records per second with n appenders (threads or processes); *per_flush
 * receives records per fdatasync. */
static double append_run(enum who who, int n, int procs, double *per_flush)
{
	long total = 0, f0;

	log_fresh(who);
	f0 = atomic_load(&flushes[0]);
	long ns0 = atomic_load(&flushes[1]);
	if (procs) {
		int p[2];
		if (pipe(p) < 0)
			die("pipe", 0);
		for (int i = 0; i < n; i++)
			if (fork() == 0) {
				struct aw w = { .who = who, .id = i };
				close(p[0]);
				open_for(&w);
				append_worker(&w);
				close_for(&w);
				dprintf(p[1], "%ld\n", w.ops);
				_exit(0);
			}
		close(p[1]);
		FILE *in = fdopen(p[0], "r");
		long o;
		while (fscanf(in, "%ld", &o) == 1)
			total += o;
		fclose(in);
		for (int i = 0; i < n; i++)
			wait(NULL);
	} else {
		struct aw shared = { .who = who }, w[MAXW];
		pthread_t t[MAXW];
		open_for(&shared);
		for (int i = 0; i < n; i++) {
			w[i] = shared;
			w[i].id = i;
			pthread_create(&t[i], NULL, append_worker, &w[i]);
		}
		for (int i = 0; i < n; i++) {
			pthread_join(t[i], NULL);
			total += w[i].ops;
		}
		close_for(&shared);
	}
	if (per_flush) {
		long f = atomic_load(&flushes[0]) - f0;
		*per_flush = f > 0 ? (double)total / (double)f : 0;
		last_sync_us = f > 0 ? (double)(atomic_load(&flushes[1]) - ns0) / 1e3 / (double)f : 0;
		last_round_us = f > 0 ? secs * 1e6 / (double)f : 0;
	}
	return (double)total / secs;
}

static void appends(const char *label)
{
	static const struct {
		int n, procs;
	} rows[] = { { 1, 0 }, { 8, 0 }, { 8, 1 } };
	double one_raw = 0;

	printf("log appends, %d B records, each appender committing each record (%s), %.1f s "
	       "per run, records/s:\n",
	       REC, label, secs);
	for (size_t k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
		double sm[16], raw[16], base1[16], pf[16], rpf[16], sync_us[16], round_us[16];
		char name[96];
		for (int r = 0; r < reps; r++) {
			if (r % 2 == 0) {
				sm[r] = append_run(SM, rows[k].n, rows[k].procs, &pf[r]);
				sync_us[r] = last_sync_us, round_us[r] = last_round_us;
				raw[r] = append_run(RAW, rows[k].n, rows[k].procs, &rpf[r]);
			} else {
				raw[r] = append_run(RAW, rows[k].n, rows[k].procs, &rpf[r]);
				sm[r] = append_run(SM, rows[k].n, rows[k].procs, &pf[r]);
				sync_us[r] = last_sync_us, round_us[r] = last_round_us;
			}
			base1[r] = rows[k].n > 1 ? append_run(RAW, 1, 0, NULL) : raw[r];
		}
		snprintf(name, sizeof(name), "%d %s (%.1f rec/flush)", rows[k].n,
			 rows[k].n == 1 ? "appender" : rows[k].procs ? "processes" : "threads",
			 median(pf, reps));
		if (rows[k].n == 1) {
			report(name, "rec/s", sm, raw, reps, "raw", ">= 1.0x write+fdatasync");
			one_raw = median(raw, reps);
		} else {
			char b[32];
			snprintf(b, sizeof(b), "raw x%d", rows[k].n);
			report(name, "rec/s", sm, raw, reps, b, ">= 3x raw with 8 writers");
			printf("  %-40s (1 raw writer, same rounds: %.0f rec/s; raw x%d is %.2fx it)\n",
			       "", median(base1, reps), rows[k].n, median(raw, reps) / median(base1, reps));
			double gap_us[16];
			for (int r = 0; r < reps; r++)
				gap_us[r] = round_us[r] - sync_us[r];
			printf("  %-40s (safemap round: %.0f us = fdatasync %.0f us + %.0f us to wake the "
			       "committers and take their next records)\n",
			       "", median(round_us, reps), median(sync_us, reps), median(gap_us, reps));
		}
	}
#ifdef HAVE_ROCKSDB
	{
		double sm[16], rk[16], pf[16], rpf[16];
		for (int r = 0; r < reps; r++) {
			if (r % 2 == 0) {
				sm[r] = append_run(SM, 8, 0, &pf[r]);
				rk[r] = append_run(ROCKS, 8, 0, &rpf[r]);
			} else {
				rk[r] = append_run(ROCKS, 8, 0, &rpf[r]);
				sm[r] = append_run(SM, 8, 0, &pf[r]);
			}
		}
		report("8 threads vs RocksDB put+sync, 8 threads", "rec/s", sm, rk, reps, "rocksdb",
		       ">= 3x RocksDB");
		printf("  %-40s (RocksDB: %.1f puts per fdatasync)\n", "", median(rpf, reps));
	}
#else
	printf("  (RocksDB comparison skipped: configure did not find librocksdb)\n");
#endif
	(void)one_raw;
}

/* ---- iteration ------------------------------------------------------------- */

static void fill_log(size_t size, uint64_t total)
{
	char *rec = calloc(1, size);
	sm_log *l;
	int rc;

	log_fresh(SM);
	if (!rec || (rc = sm_log_open(path, SM_RDWR, NULL, &l)) < 0)
		die("sm_log_open", rec ? rc : 0);
	for (uint64_t b = 0; b < total; b += size)
		if ((rc = sm_log_append(l, rec, size, NULL)) < 0)
			die("sm_log_append", rc);
	if ((rc = sm_log_commit(l)) < 0)
		die("sm_log_commit", rc);
	sm_log_close(l);
	free(rec);
}

__attribute__((noinline)) static uint64_t iter_ptr(sm_log *l)
{
	sm_log_iter *it;
	const void *p;
	size_t len;
	uint64_t bytes = 0, touch = 0;
	int rc;

	if ((rc = sm_log_iter_open(l, 0, &it)) < 0)
		die("sm_log_iter_open", rc);
	while ((rc = sm_log_iter_next_ptr(it, &p, &len, NULL)) == 1) {
		touch += *(const volatile unsigned char *)p;
		bytes += len;
	}
	if (rc < 0)
		die("sm_log_iter_next_ptr", rc);
	sm_log_iter_close(it);
	return bytes + (touch == 1);
}

__attribute__((noinline)) static uint64_t iter_slice(sm_log *l)
{
	sm_log_iter *it;
	sm_slice *s;
	uint64_t bytes = 0;
	int rc;

	if ((rc = sm_log_iter_open(l, 0, &it)) < 0)
		die("sm_log_iter_open", rc);
	while ((rc = sm_log_iter_next(it, &s, NULL)) == 1) {
		uint8_t b;
		if ((rc = sm_get_u8(s, 0, &b)) < 0)
			die("sm_get_u8", rc);
		bytes += sm_length(s);
		sm_release(s);
	}
	if (rc < 0)
		die("sm_log_iter_next", rc);
	sm_log_iter_close(it);
	return bytes;
}

/* read(2) of the file's bytes in 1 MiB blocks, touching one byte per 64. */
__attribute__((noinline)) static uint64_t iter_raw(char *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint64_t got = 0, sum = 0;
	ssize_t n;

	if (fd < 0)
		die(path, 0);
	while ((n = read(fd, buf, 1 << 20)) > 0) {
		for (ssize_t k = 0; k < n; k += 64)
			sum += (unsigned char)buf[k];
		got += (uint64_t)n;
	}
	close(fd);
	return got + (sum == 1);
}

/* This thread's CPU time (s): user and system, not the time other
 * programs on a shared machine take the CPU away. */
static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void iteration(void)
{
	static const size_t sizes[] = { REC, 4096 };
	const uint64_t total = 64ull << 20;
	char *buf = malloc(1 << 20);

	printf("log iteration, records checked (CRC-32C) and walked, cached, MB/s of file bytes "
	       "per CPU second (thread CPU time, user + system):\n");
	for (size_t z = 0; z < 2; z++) {
		double ptr[16], sl[16], raw[16];
		struct stat st;
		sm_log *l;
		int rc;
		char name[96];

		fill_log(sizes[z], total);
		if (stat(path, &st) < 0)
			die(path, 0);
		if ((rc = sm_log_open(path, SM_RDONLY, NULL, &l)) < 0)
			die("sm_log_open", rc);
		(void)iter_raw(buf); /* warm the cache */
		for (int r = 0; r < reps; r++) {
			double t0 = cpu_now();
			uint64_t file = 0;
			iter_ptr(l);
			ptr[r] = cpu_now() - t0;
			t0 = cpu_now();
			iter_slice(l);
			sl[r] = cpu_now() - t0;
			t0 = cpu_now();
			file = iter_raw(buf);
			raw[r] = cpu_now() - t0;
			/* rates over the same file bytes (records + framing) */
			ptr[r] = (double)file / ptr[r] / 1e6;
			sl[r] = (double)file / sl[r] / 1e6;
			raw[r] = (double)file / raw[r] / 1e6;
		}
		snprintf(name, sizeof(name), "%zu B records, sm_log_iter_next_ptr", sizes[z]);
		report(name, "MB/s", ptr, raw, reps, "read(2)",
		       sizes[z] == REC ? ">= 0.5x read(2)" : "higher is better");
		snprintf(name, sizeof(name), "%zu B records, sm_log_iter_next", sizes[z]);
		report(name, "MB/s", sl, raw, reps, "read(2)", "higher is better");
		sm_log_close(l);
	}
	free(buf);
}

static int callgrind(const char *what, int n)
{
	char *buf = malloc(1 << 20);
	sm_log *l;
	int rc;

	fill_log(REC, 16ull << 20);
	if ((rc = sm_log_open(path, SM_RDONLY, NULL, &l)) < 0)
		die("sm_log_open", rc);
	for (int i = 0; i < n; i++) {
		if (strcmp(what, "iter") == 0)
			iter_ptr(l);
		else
			iter_raw(buf);
	}
	sm_log_close(l);
	cleanup();
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	const char *part = NULL;
	int c, quiet_only = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	flushes = mmap(NULL, 2 * sizeof(*flushes), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	if (flushes == MAP_FAILED)
		die("mmap", 0);
	if (argc == 4 && strcmp(argv[1], "--callgrind") == 0)
		return callgrind(argv[2], atoi(argv[3]));
	while ((c = getopt(argc, argv, "r:d:s:p:qh")) != -1) {
		switch (c) {
		case 'r': reps = atoi(optarg) < 1 ? 1 : atoi(optarg) > 16 ? 16 : atoi(optarg); break;
		case 'd': snprintf(dir, sizeof(dir), "%s", optarg); break;
		case 's': secs = atof(optarg) > 0.05 ? atof(optarg) : 0.05; break;
		case 'p': part = optarg; break;
		case 'q': quiet_only = 1; break;
		case 'h':
			printf("usage: bench_log [-r REPS] [-d DIR] [-s SECONDS] [-p append|iter] [-q]\n"
			       "  -r  repetitions (medians; default 3)   -d  directory of the files (default /var/tmp)\n"
			       "  -s  seconds per run (default 1)        -p  only the appends or the iteration\n"
			       "  -q  quiet machine only (no run beside busy-loop processes)\n"
			       "  --callgrind iter|raw N  iterate a 16 MiB log N times (for callgrind)\n");
			return 0;
		default:
			fprintf(stderr, "usage: bench_log [-r REPS] [-d DIR] [-s SECONDS] "
					"[-p append|iter] [-q] [-h]\n");
			return 2;
		}
	}
	printf("safemap bench_log: %d repetitions, medians, files in %s (command: %s", reps, dir,
	       argv[0]);
	for (int i = 1; i < argc; i++)
		printf(" %s", argv[i]);
	printf(")\n");
	machine();
	if (!part || strcmp(part, "append") == 0) {
		appends("quiet machine");
		if (!quiet_only) {
			load_start();
			printf("(loaded: %d busy-loop processes beside the bench)\n", nhogs);
			appends("loaded machine");
			load_stop();
		}
	}
	if (!part || strcmp(part, "iter") == 0)
		iteration();
	cleanup();
	return 0;
}
