/* SPDX-License-Identifier: MIT */
/*
 * util.c - process-wide helpers every part of the library uses: the page
 * size, the cached pid and its fork detector, argument range checks and the
 * file size.  They live here, not in file.c or slice.c, so that no two
 * concept files depend on each other for them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "safemap-internal.h"

unsigned sm_page_shift;
uint64_t sm_page_size;
pid_t sm_cached_pid;
uint32_t *sm_fork_word;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

pid_t sm_pid_slow(void)
{
	pid_t pid = getpid();

	__atomic_store_n(&sm_cached_pid, pid, __ATOMIC_RELAXED);
	if (sm_fork_word) /* any thread may re-arm: all store the same pid */
		__atomic_store_n(sm_fork_word, 1, __ATOMIC_RELEASE);
	return pid;
}

static void init(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	void *p;

	if (ps <= 0 || (ps & (ps - 1)))
		ps = 4096;
	sm_page_size = (uint64_t)ps;
	sm_page_shift = (unsigned)__builtin_ctzl((unsigned long)ps);
	/* One page whose contents a child that copies our memory sees as
	 * zeros (fork, _Fork, clone without CLONE_VM): the pid cache's
	 * fork detector, no system call per check (see sm_pid()). */
	p = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED) {
		if (madvise(p, (size_t)ps, MADV_WIPEONFORK) == 0)
			sm_fork_word = p;
		else
			munmap(p, (size_t)ps);
	}
	sm_pid_slow();
}

void sm_init_once(void)
{
	pthread_once(&init_once, init);
}

__thread struct sm_tid_cache sm_tid_cache __attribute__((tls_model("initial-exec")));

pid_t sm_tid_slow(pid_t pid)
{
	sm_tid_cache.tid = gettid();
	sm_tid_cache.pid = pid;
	return sm_tid_cache.tid;
}

int sm_file_size(sm_file *f, uint64_t *size)
{
	struct stat st;

	if (f->memory) {
		*size = f->mem_len;
		return 0;
	}
	if (fstat(f->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	/* table mode maps read slices below it without asking (slice.c) */
	__atomic_store_n(&f->size_cache, *size, __ATOMIC_RELAXED);
	return 0;
}

uint64_t sm_deadline_after(uint64_t timeout_ns)
{
	struct timespec ts;
	uint64_t now;

	if (timeout_ns == SM_WAIT_FOREVER)
		return UINT64_MAX;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return timeout_ns < UINT64_MAX - now ? now + timeout_ns : UINT64_MAX;
}
