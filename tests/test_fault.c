/* SPDX-License-Identifier: MIT */
/*
 * test_fault.c - truncation never crashes, foreign SIGBUS still reaches its
 * handler, full disks are errors.
 *
 * Another process (a child made with tu_spawn) truncates the file while
 * this one holds live slices; every accessor must return -ENXIO for pages
 * wholly beyond the new end of file, the slice stays dead, release works
 * and the process keeps running.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

#define PG 4096

/* A child that truncates PATH to each size it is sent, then reports 0. */
static int truncator(void *arg, int in, int out)
{
	const char *path = arg;
	char cmd[64];

	while (tu_recv(in, cmd, sizeof(cmd))) {
		long long size = atoll(cmd);
		tu_send(out, "%d", truncate(path, (off_t)size) == 0 ? 0 : -errno);
	}
	return 0;
}

static void truncate_by_other_process(const char *path, off_t size)
{
	struct tu_child c;

	tu_spawn(&c, truncator, (void *)path);
	tu_send(c.to, "%lld", (long long)size);
	ck_assert_int_eq(tu_recv_int(c.from), 0);
	ck_assert_int_eq(tu_wait(&c), 0);
}

static sm_file *open_filled(const char *path, int pages)
{
	sm_file *f;
	sm_slice *w;

	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, (uint64_t)pages * PG, 0, &w), 0);
	for (int i = 0; i < pages; i++)
		ck_assert_int_eq(sm_put_u64(w, (uint64_t)i * PG, 1000 + i), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	ck_assert_int_eq(sm_release(w), 0);
	return f;
}

START_TEST(truncate_to_zero_under_read_slice)
{
	const char *p = tu_tmpfile(16 * PG);
	sm_file *f = open_filled(p, 16);
	sm_slice *s;
	uint64_t v = 77;
	char buf[8];
	uint8_t b;

	ck_assert_int_eq(sm_map_read(f, 0, 16 * PG, 0, &s), 0);
	ck_assert_int_eq(sm_get_u64(s, 5 * PG, &v), 0);
	ck_assert_uint_eq(v, 1005);
	truncate_by_other_process(p, 0);
	v = 77;
	ck_assert_int_eq(sm_get_u64(s, 5 * PG, &v), -ENXIO);
	ck_assert_uint_eq(v, 77); /* untouched on failure */
	ck_assert_int_eq(sm_read(s, 9 * PG, buf, sizeof(buf)), -ENXIO);
	ck_assert_int_eq(sm_get_u8(s, 0, &b), -ENXIO);
	ck_assert_int_eq((sm_get_u64)(s, 12 * PG, &v), -ENXIO);
	ck_assert_int_eq(sm_release(s), 0);
	/* the file is usable again through new slices */
	ck_assert_int_eq(sm_map_read(f, 0, 1, 0, &s), -ERANGE);
	sm_close(f);
}
END_TEST

START_TEST(shrink_to_page_boundary_inside_slice)
{
	const char *p = tu_tmpfile(8 * PG);
	sm_file *f = open_filled(p, 8);
	sm_slice *s;
	uint64_t v;

	ck_assert_int_eq(sm_map_read(f, 100, 8 * PG - 100, 0, &s), 0);
	truncate_by_other_process(p, 4 * PG);
	/* pages the file still covers read normally until the slice dies */
	ck_assert_int_eq(sm_get_u64(s, 2 * PG - 100, &v), 0);
	ck_assert_uint_eq(v, 1002);
	ck_assert_int_eq(sm_get_u64(s, 6 * PG - 100, &v), -ENXIO);
	/* dead from then on, even for pages still in the file */
	ck_assert_int_eq(sm_get_u64(s, 2 * PG - 100, &v), -ENXIO);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(f);
}
END_TEST

START_TEST(shrink_then_grow_back)
{
	const char *p = tu_tmpfile(8 * PG);
	sm_file *f = open_filled(p, 8);
	sm_slice *s, *t;
	uint64_t v;

	ck_assert_int_eq(sm_map_read(f, 0, 8 * PG, 0, &s), 0);
	truncate_by_other_process(p, 2 * PG);
	ck_assert_int_eq(sm_get_u64(s, 6 * PG, &v), -ENXIO);
	truncate_by_other_process(p, 8 * PG);
	ck_assert_int_eq(sm_get_u64(s, 6 * PG, &v), -ENXIO);
	ck_assert_int_eq(sm_get_u64(s, 0, &v), -ENXIO);
	/* a new slice maps afresh and sees the regrown (zero) pages */
	ck_assert_int_eq(sm_map_read(f, 0, 8 * PG, 0, &t), 0);
	ck_assert_int_eq(sm_get_u64(t, 6 * PG, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(sm_get_u64(t, PG, &v), 0);
	ck_assert_uint_eq(v, 1001);
	sm_release(s);
	sm_release(t);
	sm_close(f);
}
END_TEST

START_TEST(write_slice_truncated)
{
	const char *p = tu_tmpfile(8 * PG);
	sm_file *f = open_filled(p, 8);
	sm_slice *w;

	ck_assert_int_eq(sm_map_write(f, 0, 8 * PG, 0, &w), 0);
	ck_assert_int_eq(sm_put_u64(w, 7 * PG, 5), 0);
	truncate_by_other_process(p, 3 * PG);
	/* commit refuses a slice that now extends past end of file */
	ck_assert_int_eq(sm_commit(w, 0), -ENXIO);
	ck_assert_int_eq(sm_put_u64(w, 6 * PG, 5), -ENXIO);
	ck_assert_int_eq(sm_write(w, 5 * PG, "x", 1), -ENXIO);
	ck_assert_int_eq(sm_fill(w, 4 * PG, 1, 10), -ENXIO);
	ck_assert_int_eq(sm_commit(w, 0), -ENXIO);
	ck_assert_int_eq(sm_release(w), 0);
	sm_close(f);
}
END_TEST

START_TEST(other_slices_of_the_window_survive)
{
	const char *p = tu_tmpfile(8 * PG);
	sm_file *f = open_filled(p, 8);
	sm_slice *a, *b;
	uint64_t v;

	ck_assert_int_eq(sm_map_read(f, 0, 100, 0, &a), 0);
	ck_assert_int_eq(sm_map_read(f, 5 * PG, 100, 0, &b), 0);
	truncate_by_other_process(p, 4 * PG);
	ck_assert_int_eq(sm_get_u64(b, 0, &v), -ENXIO);
	/* a shares b's window but lost no page */
	ck_assert_int_eq(sm_get_u64(a, 0, &v), 0);
	ck_assert_uint_eq(v, 1000);
	sm_release(a);
	sm_release(b);
	sm_close(f);
}
END_TEST

/* Threads reading all over a slice while another process truncates. */
struct reader_arg {
	sm_slice *s;
	pthread_barrier_t *start;
	int rc;
	long reads;
};

static void *reader_thread(void *p)
{
	struct reader_arg *a = p;
	uint64_t n = sm_length(a->s) / 8, i = 0, v;

	pthread_barrier_wait(a->start);
	for (;;) {
		int rc = sm_get_u64(a->s, (i * 4099) % n * 8, &v);
		a->reads++;
		i++;
		if (rc != 0) {
			a->rc = rc;
			return NULL;
		}
	}
}

static void readers_during_truncation(int nthreads)
{
	const char *p = tu_tmpfile(64 * PG);
	sm_file *f = open_filled(p, 64);
	struct reader_arg a[8];
	pthread_barrier_t start;
	pthread_t t[8];
	sm_slice *s;

	ck_assert_int_eq(sm_map_read(f, 0, 64 * PG, 0, &s), 0);
	pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
	for (int i = 0; i < nthreads; i++) {
		a[i] = (struct reader_arg){ .s = s, .start = &start };
		ck_assert_int_eq(pthread_create(&t[i], NULL, reader_thread, &a[i]), 0);
	}
	pthread_barrier_wait(&start);
	truncate_by_other_process(p, 0);
	for (int i = 0; i < nthreads; i++) {
		ck_assert_int_eq(pthread_join(t[i], NULL), 0);
		ck_assert_int_eq(a[i].rc, -ENXIO);
	}
	pthread_barrier_destroy(&start);
	ck_assert_int_eq(sm_release(s), 0);
	sm_close(f);
}

START_TEST(one_reader_during_truncation)
{
	readers_during_truncation(1);
}
END_TEST

START_TEST(eight_readers_during_truncation)
{
	readers_during_truncation(8);
}
END_TEST

/* ---- chaining ------------------------------------------------------- */

static sigjmp_buf jump;
static volatile sig_atomic_t foreign_seen, ours_seen;

static void earlier_handler(int sig, siginfo_t *info, void *uctx)
{
	(void)sig;
	(void)info;
	(void)uctx;
	foreign_seen++;
	siglongjmp(jump, 1);
}

/* Map a page of an empty file: touching it is a SIGBUS safemap must not
 * claim. */
static volatile char *foreign_page(void)
{
	const char *p = tu_tmpfile(0);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	void *m;

	ck_assert_int_ge(fd, 0);
	m = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	close(fd);
	return m;
}

START_TEST(foreign_fault_reaches_earlier_handler)
{
	const char *p = tu_tmpfile(4 * PG);
	struct sigaction sa;
	volatile char *page = foreign_page();
	sm_file *f;
	sm_slice *s;
	uint64_t v;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = earlier_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	ck_assert_int_eq(sigaction(SIGBUS, &sa, NULL), 0);
	f = open_filled(p, 4); /* installs safemap's handler, chaining */
	ck_assert_int_eq(sm_map_read(f, 0, 4 * PG, 0, &s), 0);
	if (sigsetjmp(jump, 1) == 0)
		(void)page[0];
	ck_assert_int_eq(foreign_seen, 1);
	if (sigsetjmp(jump, 1) == 0)
		raise(SIGBUS); /* sent, not a fault: not ours either */
	ck_assert_int_eq(foreign_seen, 2);
	/* and safemap's own faults still become errors */
	truncate_by_other_process(p, 0);
	ck_assert_int_eq(sm_get_u64(s, PG, &v), -ENXIO);
	ck_assert_int_eq(foreign_seen, 2);
	sm_release(s);
	sm_close(f);
}
END_TEST

static void later_handler(int sig, siginfo_t *info, void *uctx)
{
	if (sm_handle_sigbus(sig, info, uctx)) {
		ours_seen++;
		return;
	}
	foreign_seen++;
	siglongjmp(jump, 1);
}

START_TEST(application_handler_installed_later)
{
	const char *p = tu_tmpfile(4 * PG);
	volatile char *page = foreign_page();
	struct sigaction sa;
	sm_file *f = open_filled(p, 4);
	sm_slice *s;
	uint64_t v;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = later_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	ck_assert_int_eq(sigaction(SIGBUS, &sa, NULL), 0);
	ck_assert_int_eq(sm_map_read(f, 0, 4 * PG, 0, &s), 0);
	truncate_by_other_process(p, PG);
	ck_assert_int_eq(sm_get_u64(s, 2 * PG, &v), -ENXIO);
	ck_assert_int_eq(ours_seen, 1);
	ck_assert_int_eq(foreign_seen, 0);
	if (sigsetjmp(jump, 1) == 0)
		(void)page[0];
	ck_assert_int_eq(foreign_seen, 1);
	sm_release(s);
	sm_close(f);
}
END_TEST

/* With no earlier handler, a foreign fault kills the process with SIGBUS
 * as it would have without safemap. */
START_TEST(foreign_fault_default_action)
{
	const char *p = tu_tmpfile(PG);
	volatile char *page = foreign_page();
	sm_file *f;

	ck_assert_int_eq(sm_open(p, SM_RDWR, NULL, &f), 0);
	(void)page[0];
}
END_TEST

START_TEST(handle_sigbus_claims_only_its_own_faults)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_filled(p, 4);
	sm_slice *s;
	siginfo_t si;
	void *ptr;
	uint64_t v;

	ck_assert_int_eq(sm_map_read(f, 0, 4 * PG, 0, &s), 0);
	ck_assert_int_eq(sm_unsafe_ptr(s, &ptr), 0);
	memset(&si, 0, sizeof(si));
	si.si_addr = (char *)ptr + PG;
	si.si_code = BUS_MCEERR_AR; /* hardware memory error: passed on */
	ck_assert_int_eq(sm_handle_sigbus(SIGBUS, &si, NULL), 0);
	si.si_code = SI_USER;
	ck_assert_int_eq(sm_handle_sigbus(SIGBUS, &si, NULL), 0);
	si.si_code = BUS_ADRERR;
	ck_assert_int_eq(sm_handle_sigbus(SIGSEGV, &si, NULL), 0);
	ck_assert_int_eq(sm_handle_sigbus(SIGBUS, NULL, NULL), 0);
	si.si_addr = &si; /* not a safemap mapping */
	ck_assert_int_eq(sm_handle_sigbus(SIGBUS, &si, NULL), 0);
	ck_assert_int_eq(sm_get_u64(s, PG, &v), 0);
	ck_assert_uint_eq(v, 1001);

	/* A fault on a page the file still covers (as an I/O error would
	 * raise) is -EIO, not -ENXIO. */
	si.si_addr = (char *)ptr + 2 * PG + 8;
	errno = 1234;
	ck_assert_int_eq(sm_handle_sigbus(SIGBUS, &si, NULL), 1);
	ck_assert_int_eq(errno, 1234); /* preserved */
	ck_assert_int_eq(sm_get_u64(s, 2 * PG, &v), -EIO);
	ck_assert_int_eq(sm_get_u64(s, 0, &v), -EIO); /* dead */
	sm_release(s);
	sm_close(f);
}
END_TEST

static int sum_bytes(void *p, size_t n, void *arg)
{
	unsigned char *b = p;
	unsigned long *sum = arg;
	void *scratch = malloc(64); /* allowed: the guard does not unwind */

	free(scratch);
	for (size_t i = 0; i < n; i++)
		*sum += b[i];
	return 7;
}

START_TEST(guarded_callback)
{
	const char *p = tu_tmpfile(4 * PG);
	sm_file *f = open_filled(p, 4);
	unsigned long sum = 0;
	sm_slice *s;

	ck_assert_int_eq(sm_map_read(f, 0, 4 * PG, 0, &s), 0);
	ck_assert_int_eq(sm_guarded(s, sum_bytes, &sum), 7);
	ck_assert_uint_eq(sum, (1000 & 0xff) + (1000 >> 8) + (1001 & 0xff) + (1001 >> 8) +
				       (1002 & 0xff) + (1002 >> 8) + (1003 & 0xff) + (1003 >> 8));
	ck_assert_int_eq(sm_guarded(NULL, sum_bytes, &sum), -EINVAL);
	ck_assert_int_eq(sm_guarded(s, NULL, &sum), -EINVAL);
	truncate_by_other_process(p, PG);
	ck_assert_int_eq(sm_guarded(s, sum_bytes, &sum), -ENXIO);
	sm_release(s);
	sm_close(f);
}
END_TEST

/* ---- full disk (SPEC §5.4) ------------------------------------------ */

START_TEST(full_disk_is_enospc_at_map_time)
{
	char dir[] = "/tmp/safemap-small.XXXXXX", path[64];
	sm_file *f;
	sm_slice *w;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	/* A private mount namespace: the small tmpfs vanishes with this test
	 * process.  Needs root (CI runs as root); otherwise skip, saying why. */
	if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=1m") < 0) {
		printf("SKIP full_disk_is_enospc_at_map_time: cannot mount a small tmpfs (%s)\n",
		       strerror(errno));
		rmdir(dir);
		return;
	}
	snprintf(path, sizeof(path), "%s/data", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4 << 20), 0); /* sparse: 4 MiB on 1 MiB */
	close(fd);
	ck_assert_int_eq(sm_open(path, SM_RDWR, NULL, &f), 0);
	ck_assert_int_eq(sm_map_write(f, 0, 4 << 20, 0, &w), -ENOSPC);
	ck_assert_int_eq(sm_map_write(f, 4 << 20, 4 << 20, SM_EXTEND, &w), -ENOSPC);
	/* nothing stays locked; a slice that fits works */
	ck_assert_int_eq(tu_probe(path, F_WRLCK, 0, 0), F_UNLCK);
	ck_assert_int_eq(sm_map_write(f, 0, 64 * 1024, 0, &w), 0);
	ck_assert_int_eq(sm_fill(w, 0, 0x5a, 64 * 1024), 0);
	ck_assert_int_eq(sm_commit(w, 0), 0);
	sm_release(w);
	sm_close(f);
	umount(dir);
	rmdir(dir);
}
END_TEST

static Suite *fault_suite(void)
{
	Suite *s = suite_create("fault");
	TCase *tc = tcase_create("truncation");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, truncate_to_zero_under_read_slice);
	tcase_add_test(tc, shrink_to_page_boundary_inside_slice);
	tcase_add_test(tc, shrink_then_grow_back);
	tcase_add_test(tc, write_slice_truncated);
	tcase_add_test(tc, other_slices_of_the_window_survive);
	tcase_add_test(tc, one_reader_during_truncation);
	tcase_add_test(tc, eight_readers_during_truncation);
	tcase_add_test(tc, guarded_callback);
	suite_add_tcase(s, tc);

	tc = tcase_create("chaining");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, foreign_fault_reaches_earlier_handler);
	tcase_add_test(tc, application_handler_installed_later);
	tcase_add_test_raise_signal(tc, foreign_fault_default_action, SIGBUS);
	tcase_add_test(tc, handle_sigbus_claims_only_its_own_faults);
	suite_add_tcase(s, tc);

	tc = tcase_create("full_disk");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, full_disk_is_enospc_at_map_time);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run(fault_suite());
}
