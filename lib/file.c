/* SPDX-License-Identifier: MIT */
/*
 * file.c - opening and closing shared files.
 *
 * An sm_file is one open file description: OFD locks belong to it, so two
 * sm_files on one file conflict exactly like two processes (SPEC §3.3).
 * sm_close with live slices only marks the file closing; the last
 * sm_release does the real close (SPEC §3.7), so a slice never outlives the
 * descriptor its lock and mapping depend on.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"

static int check_options(const sm_options *opt, sm_options *o)
{
	size_t n;

	memset(o, 0, sizeof(*o));
	if (!opt)
		return 0;
	n = opt->size ? opt->size : sizeof(*o);
	if (n < offsetof(sm_options, tag) + sizeof(opt->tag))
		return -EINVAL; /* too old to carry any field we know */
	if (n > sizeof(*o)) {
		/* A newer caller: accept only if the fields we do not know are 0. */
		const unsigned char *extra = (const unsigned char *)opt + sizeof(*o);
		for (size_t i = 0; i < n - sizeof(*o); i++)
			if (extra[i])
				return -EINVAL;
		n = sizeof(*o);
	}
	memcpy(o, opt, n);
	if (o->flags & ~(SM_OPT_TABLE_REQUIRED | SM_OPT_NO_TABLE | SM_OPT_REFUSE_NETFS |
			 SM_OPT_TABLE_LOCKS))
		return -EINVAL;
	if ((o->flags & SM_OPT_TABLE_LOCKS) && (o->flags & SM_OPT_NO_TABLE))
		return -EINVAL; /* table mode decides in the table */
	for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
		if (o->reserved[i])
			return -EINVAL;
	return 0;
}

int sm_open(const char *path, int flags, const sm_options *opt, sm_file **out)
{
	int mode = flags & (SM_RDONLY | SM_RDWR);
	int oflags = O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	sm_options o;
	struct stat st;
	sm_file *f;
	int fd, rc;

	sm_init_once();
	sm_fault_install();
	if (out)
		*out = NULL;
	if (!path || !out || !*path)
		return -EINVAL;
	if ((flags & ~(SM_RDONLY | SM_RDWR | SM_CREATE)) || (mode != SM_RDONLY && mode != SM_RDWR))
		return -EINVAL;
	if ((rc = check_options(opt, &o)) < 0)
		return rc;

	oflags |= mode == SM_RDWR ? O_RDWR : O_RDONLY;
	if (flags & SM_CREATE)
		oflags |= O_CREAT;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	pthread_mutex_init(&f->lock, NULL);
	f->fd = -1;
	f->flags = mode;
	f->pid = sm_pid();
	RB_INIT(&f->segs);
	RB_INIT(&f->maps);
	TAILQ_INIT(&f->idle);
	LIST_INIT(&f->all_maps);
	if (o.tag && !(f->tag = strdup(o.tag))) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Known to the atfork child handler before any descriptor exists, and
	 * locked until every descriptor is stored in f: a fork from another
	 * thread waits for the opens (prepare takes every file's lock), so no
	 * child keeps a descriptor the handler cannot close, which would keep
	 * our locks alive after we exit (SPEC §3.6). */
	sm_fork_register(f);
	int cs_ = sm_nocancel();
	pthread_mutex_lock(&f->lock);
	/* O_NONBLOCK: opening a FIFO must fail below, not block forever. */
	fd = f->fd = open(path, oflags, 0666);
	rc = fd < 0 ? -errno : 0;
	if (!rc && fstat(fd, &st) < 0)
		rc = -errno;
	if (!rc && !S_ISREG(st.st_mode))
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	if (!rc && fcntl(fd, F_SETFL, 0) < 0)
		rc = -errno;
	if (!rc)
		rc = sm_table_open(f, path, &st, &o);
	if (rc < 0 && fd >= 0) {
		close(fd);
		f->fd = -1;
	}
	pthread_mutex_unlock(&f->lock);
	sm_cancel_restore(cs_);
	if (rc < 0) {
		sm_fork_unregister(f);
		goto fail;
	}
	*out = f;
	return 0;

fail:
	pthread_mutex_destroy(&f->lock);
	free(f->tag);
	free(f);
	return rc;
}

int sm_open_memory(void *buf, size_t len, int flags, sm_file **out)
{
	struct sm_map *m;
	sm_file *f;

	sm_init_once();
	if (out)
		*out = NULL;
	if (!buf || !out || len == 0)
		return -EINVAL;
	if (flags != SM_RDONLY && flags != SM_RDWR)
		return -EINVAL;
	if ((uint64_t)len > (uint64_t)INT64_MAX)
		return -ERANGE;
	f = calloc(1, sizeof(*f));
	m = calloc(1, sizeof(*m));
	if (!f || !m) {
		free(f);
		free(m);
		return -ENOMEM;
	}
	/* The caller's buffer is the one "window": never unmapped, never in
	 * the fault registry (it cannot be truncated), but marked stale in a
	 * fork child like any mapping. */
	m->addr = buf;
	m->len = len;
	m->writable = flags == SM_RDWR;
	m->anon = m->borrowed = true;
	pthread_mutex_init(&f->lock, NULL);
	f->fd = -1;
	f->flags = flags;
	f->pid = sm_pid();
	f->memory = true;
	f->mem = buf;
	f->mem_len = len;
	f->mem_map = m;
	RB_INIT(&f->segs);
	RB_INIT(&f->maps);
	TAILQ_INIT(&f->idle);
	LIST_INIT(&f->all_maps);
	LIST_INSERT_HEAD(&f->all_maps, m, all);
	sm_fork_register(f);
	*out = f;
	return 0;
}

/* Called with no slice left and f->lock not held. */
void sm_file_destroy(sm_file *f)
{
	/* As in sm_open: f stays known to the atfork child handler, and
	 * locked, until its descriptors are closed, so a fork from another
	 * thread never gives a child one it cannot close. */
	int cs_ = sm_nocancel();
	pthread_mutex_lock(&f->lock);
	sm_tmode_close(f);
	sm_table_close(f);
	sm_window_free_all(f);
	sm_ranges_free_all(f);
	if (f->fd >= 0)
		close(f->fd); /* drops every OFD lock of the description still held */
	f->fd = -1;
	pthread_mutex_unlock(&f->lock);
	sm_cancel_restore(cs_);
	sm_fork_unregister(f);
	pthread_mutex_destroy(&f->lock);
	free(f->tag);
	free(f);
}

int sm_close(sm_file *f)
{
	bool now;

	if (!f)
		return -EINVAL;
	pthread_mutex_lock(&f->lock);
	if (f->closing) {
		pthread_mutex_unlock(&f->lock);
		return -EBADF;
	}
	f->closing = true;
	now = f->nslices == 0;
	pthread_mutex_unlock(&f->lock);
	if (now)
		sm_file_destroy(f);
	return 0;
}
