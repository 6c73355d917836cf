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
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
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

/*
 * SM_CREATE with sm_options.create_size: the file is made whole under a
 * name nobody opens (O_TMPFILE in the target's directory where the
 * filesystem supports it, else a hidden name beside it), sized, then
 * linked into place.  link never replaces a name, so of concurrent first
 * openers one link wins and the others get EEXIST and open the winner's
 * file: no opener ever sees it shorter than create_size (creating in place
 * and sizing after would let a second opener map a file still empty).
 * Sizing takes ftruncate (sparse): write slices reserve their blocks when
 * mapped, as for any file.  link(/proc/self/fd/N) with AT_SYMLINK_FOLLOW
 * links an O_TMPFILE file without CAP_DAC_READ_SEARCH.
 */
/* Tests set this to take the path of filesystems without O_TMPFILE. */
extern SM_HIDDEN int sm__create_no_tmpfile;
int sm__create_no_tmpfile;

static int create_sized(const char *path, uint64_t size)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX], tmp[PATH_MAX + 64], proc[64];
	int fd = -1, rc = 0;
	size_t dlen;

	if (!slash) {
		strcpy(dir, ".");
	} else {
		dlen = slash == path ? 1 : (size_t)(slash - path);
		if (dlen >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, dlen);
		dir[dlen] = 0;
	}
	tmp[0] = 0;
	if (sm__create_no_tmpfile)
		errno = EOPNOTSUPP;
	else
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
	if (fd < 0) {
		/* EOPNOTSUPP: the filesystem lacks it; EISDIR/EINVAL: the
		 * kernel or libc predates it */
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			return -errno;
		if (snprintf(tmp, sizeof(tmp), "%s/.%s.%d.%lx.smtmp", dir, slash ? slash + 1 : path,
			     (int)getpid(), (unsigned long)random()) >= (int)sizeof(tmp))
			return -ENAMETOOLONG;
		if ((fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666)) < 0)
			return -errno;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		rc = -errno;
	} else if (tmp[0]) {
		rc = link(tmp, path) < 0 && errno != EEXIST ? -errno : 0;
	} else {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0 && errno != EEXIST)
			rc = -errno;
	}
	if (tmp[0])
		unlink(tmp);
	close(fd);
	return rc;
}

/* open(2) for sm_open; with create_size, never O_CREAT in place. */
static int open_file(const char *path, int oflags, uint64_t create_size)
{
	int fd, rc;

	if (!create_size || !(oflags & O_CREAT))
		return open(path, oflags, 0666);
	oflags &= ~O_CREAT;
	/* a few rounds: the name may be removed between our link and open */
	for (int round = 0; round < 3; round++) {
		if ((fd = open(path, oflags)) >= 0 || errno != ENOENT)
			return fd;
		if ((rc = create_sized(path, create_size)) < 0) {
			errno = -rc;
			return -1;
		}
	}
	return open(path, oflags);
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
	if (o.create_size && !(flags & SM_CREATE))
		return -EINVAL;
	if (o.create_size > (uint64_t)INT64_MAX)
		return -ERANGE;

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
	TAILQ_INIT(&f->anon_pool);
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
	fd = f->fd = open_file(path, oflags, o.create_size);
	rc = fd < 0 ? -errno : 0;
	if (!rc && fstat(fd, &st) < 0)
		rc = -errno;
	if (!rc && !S_ISREG(st.st_mode))
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	if (!rc && fcntl(fd, F_SETFL, 0) < 0)
		rc = -errno;
	f->wait_ns = o.wait_ns; /* SM_WAIT's bound (wait.c) */
	smt_forget_hook = sm_wait_forget; /* table.c's reaper -> wait.c's counts */
	if (!rc)
		rc = sm_table_open(f, path, &st, &o, &sm_tmode_ops);
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
	TAILQ_INIT(&f->anon_pool);
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
