/* SPDX-License-Identifier: MIT */
/*
 * fault.c - the SIGBUS guard: truncation never kills the process.
 *
 * When another process truncates a mapped file, touching a page wholly
 * beyond the new end of file raises SIGBUS.  Design (SPEC §5.3, the
 * zero-page design of systemd's sigbus.c): the handler checks that the
 * faulting address lies in one of safemap's mappings, maps an anonymous
 * zero page over the faulting page (MAP_FIXED), records the page in the
 * mapping and sets the mapping's state word, then returns.  The access
 * re-executes against the zero page and completes; the accessor then loads
 * the state word (it does so after every access anyway) and its slow path
 * decides the error: -ENXIO if the lost page now lies beyond end of file,
 * -EIO or -ENOSPC if the file still covers it (an I/O error, a full disk on
 * a filesystem that could not reserve).  Nothing unwinds, so there is no
 * sigsetjmp per access and sm_guarded's callback may lock and allocate.
 *
 * Slices that share a damaged window but lost none of their own pages keep
 * working (their slow path finds no lost page in their range); the window is
 * never handed to a new slice.
 *
 * Mappings are registered in a process-wide tree ordered by address, guarded
 * by a spinlock that the handler also takes.  That is safe because SIGBUS
 * from a fault is synchronous: the faulting thread is inside an accessor,
 * never inside the few instructions that hold the spinlock (which touch no
 * mapped file memory).  Faults that are not ours (another address, a signal
 * sent with kill, BUS_MCEERR_* hardware memory errors) go to the handler
 * installed before safemap's, or to the default action.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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
static struct sigaction previous;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void spin_lock(void)
{
	while (__atomic_exchange_n(&registry_spin, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&registry_spin, __ATOMIC_RELAXED))
			SM_CPU_RELAX();
}

static void spin_unlock(void)
{
	__atomic_store_n(&registry_spin, 0, __ATOMIC_RELEASE);
}

void sm_fault_register(struct sm_map *m)
{
	spin_lock();
	RB_INSERT(sm_addrtree, &registry, m);
	spin_unlock();
}

void sm_fault_unregister(struct sm_map *m)
{
	spin_lock();
	RB_REMOVE(sm_addrtree, &registry, m);
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

int sm_handle_sigbus(int sig, siginfo_t *info, void *uctx)
{
	unsigned char *p, *page;
	struct sm_map *m;
	int saved = errno, ours = 0;

	(void)uctx;
	/* Only kernel-raised address faults can be a vanished file page. */
	if (sig != SIGBUS || !info || (info->si_code != BUS_ADRERR && info->si_code != BUS_OBJERR))
		return 0;
	p = info->si_addr;
	page = (unsigned char *)((uintptr_t)p & ~(uintptr_t)(sm_page_size - 1));
	spin_lock();
	if ((m = lookup(p))) {
		void *z = mmap(page, sm_page_size, PROT_READ | (m->writable ? PROT_WRITE : 0),
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (z != MAP_FAILED) {
			uint64_t foff = m->foff + (uint64_t)(page - m->addr);
			unsigned n = m->nlost;
			if (n < SM_LOST_MAX)
				m->lost[n] = foff;
			m->nlost = n + 1;
			__atomic_store_n(&m->state, SM_MAP_DEAD, __ATOMIC_RELEASE);
			ours = 1;
		}
	}
	spin_unlock();
	errno = saved;
	return ours;
}

static void handler(int sig, siginfo_t *info, void *uctx)
{
	int saved = errno;

	if (sm_handle_sigbus(sig, info, uctx))
		return;
	if (previous.sa_flags & SA_SIGINFO) {
		if (previous.sa_sigaction) {
			previous.sa_sigaction(sig, info, uctx);
			errno = saved;
			return;
		}
	} else if (previous.sa_handler == SIG_IGN) {
		return;
	} else if (previous.sa_handler != SIG_DFL) {
		previous.sa_handler(sig);
		errno = saved;
		return;
	}
	/* Default action: restore it and let the signal kill us as it would
	 * have (re-raised, so a signal sent with kill is not swallowed; a
	 * fault re-executes and faults again under the default action). */
	signal(SIGBUS, SIG_DFL);
	if (info && info->si_code <= 0)
		raise(SIGBUS);
	errno = saved;
}

static void install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &previous);
}

void sm_fault_install(void)
{
	pthread_once(&install_once, install);
}

/* Did the slice lose a page, and what does that mean now?  Called on the
 * slow path when its window's state is SM_MAP_DEAD. */
int sm_fault_classify(const sm_slice *s)
{
	const struct sm_map *m = s->map;
	uint64_t first = s->off & ~(sm_page_size - 1), end = s->off + s->len;
	unsigned n = __atomic_load_n(&m->nlost, __ATOMIC_ACQUIRE);
	uint64_t lost = UINT64_MAX;
	struct statvfs vfs;
	struct stat st;

	if (n > SM_LOST_MAX) {
		lost = first; /* too many to tell: assume the worst */
	} else {
		for (unsigned i = 0; i < n; i++)
			if (m->lost[i] >= first && m->lost[i] < end && m->lost[i] < lost)
				lost = m->lost[i];
	}
	if (lost == UINT64_MAX)
		return 0; /* the window is damaged elsewhere; this slice is whole */
	if (s->f->fd < 0 || fstat(s->f->fd, &st) < 0)
		return -ENXIO;
	if ((uint64_t)st.st_size <= lost)
		return -ENXIO; /* the page lies wholly beyond the new end of file */
	if (fstatvfs(s->f->fd, &vfs) == 0 && vfs.f_bavail == 0)
		return -ENOSPC;
	return -EIO;
}

int sm_guarded(sm_slice *s, int (*fn)(void *p, size_t n, void *arg), void *arg)
{
	int rc, err;

	if (!s || !fn)
		return -EINVAL;
	if ((rc = sm_slice_error(s)) < 0)
		return rc;
	rc = fn(s->v.base, (size_t)s->len, arg);
	if (*s->v.state && (err = sm_slice_error(s)) < 0)
		return err;
	return rc;
}
