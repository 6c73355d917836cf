/* SPDX-License-Identifier: MIT */
/*
 * fault.c - the SIGBUS guard: truncation never kills the process.
 *
 * When another process truncates a mapped file, touching a page wholly
 * beyond the new end of file raises SIGBUS.  Design (SPEC §5.3, the
 * zero-page design of systemd's sigbus.c): the handler checks that the
 * faulting address lies in one of safemap's mappings, maps an anonymous
 * zero page over the faulting page (MAP_FIXED), records in the mapping what
 * the fault means and sets the mapping's state word, then returns.  The
 * access re-executes against the zero page and completes; the accessor then
 * loads the state word (it does so after every access anyway) and its slow
 * path asks sm_fault_classify for the error.  Nothing unwinds, so there is
 * no sigsetjmp per access and sm_guarded's callback may lock and allocate.
 *
 * What a fault means is decided in the handler, from the file size at fault
 * time (fstat is async-signal-safe): a page beyond end of file then is a
 * truncation (-ENXIO) even if the file has grown back by the time anyone
 * asks; a page the file still covered is an I/O error or a full disk.  Per
 * mapping the handler keeps only what classification needs, whatever the
 * number of pages lost: the lowest truncated page (every slice reaching it
 * or beyond was shrunk under) and the span of the others.  Slices of a
 * damaged window that lost none of their own pages keep working; the window
 * is never handed to a new slice.  This file works on mappings only.
 *
 * Mappings are registered in a process-wide tree ordered by address, guarded
 * by a spinlock that the handler also takes.  A thread holding it touches no
 * mapped file memory, so a fault never interrupts its holder -- except in a
 * fork: the atfork prepare handler (fork.c) takes it so that a child never
 * inherits it held by a thread that does not exist there, and holds it
 * until the parent and child handlers; another library's atfork handler, or
 * the fork itself, may fault meanwhile.  The handler then reads the tree
 * without the lock: it is frozen, and its holder is this very thread.
 *
 * Signals that are not ours (another address, a signal sent with kill or
 * sigqueue, BUS_MCEERR_* hardware memory errors) are passed on exactly as
 * the kernel would have delivered them to the disposition installed before
 * safemap's: its sa_mask and SA_NODEFER decide the mask it runs with,
 * SA_RESETHAND makes it run once, SA_SIGINFO gets the real siginfo, SIG_IGN
 * ignores what the kernel lets a process ignore, and the default action is
 * taken for real (the process dies of SIGBUS).  safemap's own handler stays
 * installed throughout: the guard is never lost.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "safemap-internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define SM_CPU_RELAX() __builtin_ia32_pause()
#else
#define SM_CPU_RELAX() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#endif

static int addr_cmp(const struct sm_map *a, const struct sm_map *b)
{
	return a->addr < b->addr ? -1 : a->addr > b->addr;
}

RB_HEAD(sm_addrtree, sm_map);
SM_RB_GENERATE_STATIC(sm_addrtree, sm_map, by_addr, addr_cmp)

static struct sm_addrtree registry = RB_INITIALIZER(&registry);
static volatile int registry_spin;
/* What this thread does with the spinlock; initial-exec: read in the
 * handler, which must not allocate TLS lazily. */
enum { SPIN_NONE, SPIN_MUTATING, SPIN_FORK };
static __thread int spin_mine __attribute__((tls_model("initial-exec")));

static struct sigaction previous; /* the disposition before safemap's */
static struct sigaction ours;
static int previous_spent;        /* an SA_RESETHAND handler has run */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void spin_lock(int why)
{
	while (__atomic_exchange_n(&registry_spin, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&registry_spin, __ATOMIC_RELAXED))
			SM_CPU_RELAX();
	spin_mine = why;
}

static void spin_unlock(void)
{
	spin_mine = SPIN_NONE;
	__atomic_store_n(&registry_spin, 0, __ATOMIC_RELEASE);
}

void sm_fault_register(struct sm_map *m)
{
	/* Nothing lost yet; the file is bound by the mapper (sm_fault_bind). */
	m->lost_eof = UINT64_MAX;
	m->lost_io_lo = UINT64_MAX;
	m->lost_io_hi = 0;
	m->fd = -1;
	spin_lock(SPIN_MUTATING);
	RB_INSERT(sm_addrtree, &registry, m);
	spin_unlock();
}

void sm_fault_unregister(struct sm_map *m)
{
	spin_lock(SPIN_MUTATING);
	RB_REMOVE(sm_addrtree, &registry, m);
	spin_unlock();
}

void sm_fault_bind(struct sm_map *m, int fd)
{
	if (!m->anon)
		__atomic_store_n(&m->fd, fd, __ATOMIC_RELAXED);
}

void sm_fault_atfork_prepare(void)
{
	spin_lock(SPIN_FORK);
}

void sm_fault_atfork_release(void)
{
	spin_unlock();
}

/* The mapping containing p, or NULL; caller holds the spinlock. */
static struct sm_map *lookup(const unsigned char *p)
{
	struct sm_map key = { .addr = (unsigned char *)p };
	struct sm_map *m = RB_NFIND(sm_addrtree, &registry, &key);

	if (!m || m->addr != p)
		m = m ? RB_PREV(sm_addrtree, &registry, m) : RB_MAX(sm_addrtree, &registry);
	if (m && p >= m->addr && p < m->addr + m->len)
		return m;
	return NULL;
}

static void atomic_min(uint64_t *p, uint64_t v)
{
	uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);

	while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED))
		;
}

static void atomic_max(uint64_t *p, uint64_t v)
{
	uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);

	while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED))
		;
}

/* Record that page foff of m faulted, and what it meant then. */
static void record(struct sm_map *m, uint64_t foff)
{
	int fd = __atomic_load_n(&m->fd, __ATOMIC_RELAXED);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size <= foff) {
		atomic_min(&m->lost_eof, foff); /* beyond end of file now */
	} else {
		atomic_min(&m->lost_io_lo, foff);
		atomic_max(&m->lost_io_hi, foff);
	}
	/* release: a reader that sees the state sees what was recorded; a
	 * fork child's stale mark stays */
	if (__atomic_load_n(&m->state, __ATOMIC_RELAXED) != SM_MAP_STALE)
		__atomic_store_n(&m->state, SM_MAP_DEAD, __ATOMIC_RELEASE);
}

int sm_handle_sigbus(int sig, siginfo_t *info, void *uctx)
{
	unsigned char *p, *page;
	struct sm_map *m;
	int saved = errno, ours_ = 0, mine = spin_mine;

	(void)uctx;
	/* Only kernel-raised address faults can be a vanished file page. */
	if (sig != SIGBUS || !info || (info->si_code != BUS_ADRERR && info->si_code != BUS_OBJERR))
		return 0;
	/* Interrupted while changing the tree: not a fault (that code touches
	 * no mapped memory), a signal queued with a forged si_code. */
	if (mine == SPIN_MUTATING)
		return 0;
	p = info->si_addr;
	page = (unsigned char *)((uintptr_t)p & ~(uintptr_t)(sm_page_size - 1));
	if (mine != SPIN_FORK)
		spin_lock(SPIN_MUTATING);
	if ((m = lookup(p))) {
		void *z = mmap(page, sm_page_size, PROT_READ | (m->writable ? PROT_WRITE : 0),
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (z != MAP_FAILED) {
			record(m, m->foff + (uint64_t)(page - m->addr));
			ours_ = 1;
		}
	}
	if (mine != SPIN_FORK)
		spin_unlock();
	errno = saved;
	return ours_;
}

/* Raised by the kernel for a fault of this very access: the kernel forces
 * the default action of such a signal if it is ignored or blocked. */
static bool synchronous(const siginfo_t *info)
{
	return info && info->si_code > 0 && info->si_code != BUS_MCEERR_AO;
}

/* The default action of SIGBUS, for real: terminate (with a core dump).
 * A synchronous fault needs no new signal: with the default disposition
 * restored, returning re-executes the access, which faults again and the
 * kernel kills the process with the fault's own siginfo (this also works
 * under valgrind, which cannot re-queue a kernel siginfo to itself).  Any
 * other SIGBUS (an asynchronous memory error, a sent signal) is sent again
 * to this thread, unblocked, so it is delivered before the syscall returns;
 * a kernel-made siginfo (si_code > 0) cannot be queued faithfully, so that
 * one is raised plainly. */
static void die_by_default(siginfo_t *info)
{
	struct sigaction dfl, cur;
	sigset_t set;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGBUS, &dfl, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGBUS);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (synchronous(info))
		return;
	if (!info || info->si_code > 0 ||
	    syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGBUS, info) < 0)
		raise(SIGBUS);
	/* Still alive: another thread installed a handler meanwhile.  Never
	 * leave the process without the guard. */
	if (sigaction(SIGBUS, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL)
		sigaction(SIGBUS, &ours, NULL);
}

/* Deliver a signal that is not ours to the previous disposition. */
static void chain(int sig, siginfo_t *info, void *uctx)
{
	const struct sigaction *prev = &previous;
	sigset_t block, old;

	if (prev->sa_handler == SIG_IGN) {
		if (synchronous(info))
			die_by_default(info);
		return;
	}
	if (prev->sa_handler == SIG_DFL ||
	    ((prev->sa_flags & SA_RESETHAND) && __atomic_exchange_n(&previous_spent, 1, __ATOMIC_ACQ_REL))) {
		die_by_default(info);
		return;
	}
	/* safemap's handler blocks nothing (SA_NODEFER, empty sa_mask), so the
	 * mask now is the interrupted one: add what the kernel would have. */
	block = prev->sa_mask;
	if (!(prev->sa_flags & SA_NODEFER))
		sigaddset(&block, sig);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	if (prev->sa_flags & SA_SIGINFO)
		prev->sa_sigaction(sig, info, uctx);
	else
		prev->sa_handler(sig);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void handler(int sig, siginfo_t *info, void *uctx)
{
	int saved = errno;

	if (!sm_handle_sigbus(sig, info, uctx))
		chain(sig, info, uctx);
	errno = saved;
}

static void install(void)
{
	/* Read the previous disposition before ours is live, so a signal
	 * that arrives at once finds it. */
	sigaction(SIGBUS, NULL, &previous);
	memset(&ours, 0, sizeof(ours));
	ours.sa_sigaction = handler;
	/* SA_NODEFER: a handler chained to may leave with siglongjmp from a
	 * sigsetjmp(env, 0) (SPEC §11); chain() blocks what the kernel would
	 * have.  Stack and restart behaviour are the previous handler's. */
	ours.sa_flags = SA_SIGINFO | SA_NODEFER;
	if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN)
		ours.sa_flags |= SA_ONSTACK | SA_RESTART;
	else
		ours.sa_flags |= previous.sa_flags & (SA_ONSTACK | SA_RESTART);
	sigemptyset(&ours.sa_mask);
	sigaction(SIGBUS, &ours, NULL);
}

void sm_fault_install(void)
{
	pthread_once(&install_once, install);
}

/* Called on the slow path when the window's state is SM_MAP_DEAD. */
int sm_fault_classify(const struct sm_map *m, uint64_t off, uint64_t len)
{
	uint64_t first = off & ~(sm_page_size - 1), end = off + len, lo, hi;
	struct statvfs vfs;
	int fd;

	if (__atomic_load_n(&m->state, __ATOMIC_ACQUIRE) != SM_MAP_DEAD)
		return 0;
	/* A page at or above lost_eof lay beyond end of file when it faulted:
	 * the file shrank under any range reaching it. */
	if (__atomic_load_n(&m->lost_eof, __ATOMIC_RELAXED) < end)
		return -ENXIO;
	lo = __atomic_load_n(&m->lost_io_lo, __ATOMIC_RELAXED);
	hi = __atomic_load_n(&m->lost_io_hi, __ATOMIC_RELAXED);
	if (lo > hi || hi < first || lo >= end)
		return 0; /* the window is damaged elsewhere; this range is whole */
	fd = __atomic_load_n(&m->fd, __ATOMIC_RELAXED);
	if (fd >= 0 && fstatvfs(fd, &vfs) == 0 && vfs.f_bavail == 0)
		return -ENOSPC;
	return -EIO;
}
