/* SPDX-License-Identifier: MIT */
/*
 * fork.c - what a fork child may and may not do with its parent's files.
 *
 * A child shares its parent's open file descriptions, hence its OFD locks:
 * an F_UNLCK in the child would drop the parent's lock, and the child's
 * descriptor would keep the parent's locks alive after the parent exits
 * (SPEC §3.6, §11).  So, in the child (pthread_atfork):
 *   - every mapping's state word becomes SM_MAP_STALE, so the inline
 *     accessors (which check that word after each access, no getpid per
 *     access) and every other call on an inherited slice return -ESTALE;
 *   - every inherited safemap descriptor is closed (closing one of several
 *     descriptors of a description never unlocks it);
 *   - every inherited shared mapping (windows, the lock table) is replaced
 *     by anonymous pages at the same address: a mapping pins its
 *     description, and with it the parent's locks, as a descriptor does;
 * and the lock/unlock paths compare the current pid with the opener's; the
 * current pid is cached (sm_pid()) and re-read in any child that copied our
 * memory, through a MADV_WIPEONFORK page, which also covers _Fork and raw
 * clone, which skip the atfork handlers.  A vfork child shares our memory
 * and may only exec or _exit.
 *
 * The prepare handler takes the registry lock, every file's lock, then the
 * fault registry's spinlock (fault.c), so the child sees consistent trees
 * and inherits no lock held by a thread it does not have; lock order is
 * always registry, then file, then the fault spinlock.  sm_open registers a
 * file before it opens any descriptor and holds the file's lock until all
 * are stored (file.c), so a fork from another thread either precedes the
 * opens or sees every descriptor they made.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safemap-internal.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static LIST_HEAD(, sm_file) registry = LIST_HEAD_INITIALIZER(registry);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void prepare(void)
{
	sm_file *f;

	pthread_mutex_lock(&registry_lock);
	LIST_FOREACH(f, &registry, registry)
		pthread_mutex_lock(&f->lock);
	sm_fault_atfork_prepare();
}

static void parent(void)
{
	sm_file *f;

	sm_fault_atfork_release();
	LIST_FOREACH(f, &registry, registry)
		pthread_mutex_unlock(&f->lock);
	pthread_mutex_unlock(&registry_lock);
}

/* Replace the inherited shared mapping [addr, addr+len) with anonymous
 * zero pages at the same address.  A mapping holds a reference to its open
 * file description, and OFD locks live as long as the description: a child
 * that kept the parent's windows or table mapping would keep the parent's
 * data locks and liveness byte alive after the parent died, however many
 * descriptors it closed.  The addresses stay valid (the child's stale
 * slices read zeros there before their state check says -ESTALE, and its
 * sm_close unmaps them as usual). */
static void unpin(void *addr, size_t len, bool writable)
{
	if (addr && len)
		(void)mmap(addr, len, PROT_READ | (writable ? PROT_WRITE : 0),
			   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void child(void)
{
	struct sm_map *m;
	sm_file *f;

	sm_fault_atfork_release(); /* taken by this thread, the only one here */
	/* the atfork generation of the pid cache (the wiped page covers the
	 * children that skip this handler) */
	if (sm_fork_word)
		__atomic_store_n(sm_fork_word, 0, __ATOMIC_RELAXED);
	sm_pid_slow();
	LIST_FOREACH(f, &registry, registry) {
		LIST_FOREACH(m, &f->all_maps, all) {
			m->state = SM_MAP_STALE;
			if (!m->anon)
				unpin(m->addr, (size_t)m->len, m->writable);
		}
		if (f->table && f->table->base)
			unpin(f->table->base, f->table->size, true);
		if (f->fd >= 0) {
			close(f->fd);
			f->fd = -1;
		}
		/* the table descriptor carries the parent's liveness lock: the
		 * child must not keep the parent's entries alive */
		if (f->table && f->table->fd >= 0) {
			close(f->table->fd);
			f->table->fd = -1;
		}
		pthread_mutex_unlock(&f->lock);
	}
	pthread_mutex_unlock(&registry_lock);
}

static void install(void)
{
	pthread_atfork(prepare, parent, child);
}

void sm_fork_register(sm_file *f)
{
	pthread_once(&atfork_once, install);
	pthread_mutex_lock(&registry_lock);
	LIST_INSERT_HEAD(&registry, f, registry);
	pthread_mutex_unlock(&registry_lock);
}

void sm_fork_unregister(sm_file *f)
{
	pthread_mutex_lock(&registry_lock);
	LIST_REMOVE(f, registry);
	pthread_mutex_unlock(&registry_lock);
}
