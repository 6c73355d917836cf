/* SPDX-License-Identifier: MIT */
/*
 * object.c - files that appear under their name only when complete
 * (SPEC §13).
 *
 * An object is written in an unnamed file: O_TMPFILE in the target
 * directory where the filesystem supports it (a crash then leaves nothing
 * behind: the inode dies with its last descriptor), else a hidden name
 * beside the target that abort unlinks (a crash can leave that hidden
 * file).  Publish is fdatasync, then one atomic directory operation, then
 * fsync of the directory, so a reader that finds the name finds the whole
 * object, before and after a crash.
 *
 * linkat(fd, "", ..., AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH; linking
 * /proc/self/fd/N with AT_SYMLINK_FOLLOW does the same unprivileged
 * (open(2), "O_TMPFILE").  linkat never replaces a name, so
 * SM_OBJECT_REPLACE links to a hidden name first and renames it over.
 * The slices come from an sm_file opened on /proc/self/fd/N without a lock
 * table (nobody else can open an unnamed file, and no sidecar may appear).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap-internal.h"

/* Tests set this to take the path of filesystems without O_TMPFILE. */
extern SM_HIDDEN int sm__object_no_tmpfile;
int sm__object_no_tmpfile;

struct sm_object {
	sm_file *f;
	int dirfd, fd;
	int flags;
	char *name;
	char *hidden; /* without O_TMPFILE: the hidden name, else NULL */
	int err;      /* sticky flush error */
};

/* A hidden name beside name, unique enough with pid and a counter, made
 * unique by O_EXCL/linkat failing with EEXIST. */
static char *hidden_name(const char *name)
{
	static unsigned long seq;
	unsigned long n = __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED);
	size_t sz = strlen(name) + 64;
	char *p = malloc(sz);

	if (p)
		snprintf(p, sz, ".%s.%ld.%lu.smtmp", name, (long)getpid(), n);
	return p;
}

static bool name_ok(const char *name)
{
	return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0 && strlen(name) < NAME_MAX - 40;
}

static void object_free(sm_object *o)
{
	if (o->f)
		sm_close(o->f);
	if (o->fd >= 0)
		close(o->fd);
	if (o->dirfd >= 0)
		close(o->dirfd);
	free(o->hidden);
	free(o->name);
	free(o);
}

int sm_object_create(const char *dir, const char *name, int flags, sm_object **out)
{
	sm_options opt = { .size = sizeof(opt), .flags = SM_OPT_NO_TABLE };
	char path[64];
	sm_object *o;
	int rc;

	if (!dir || !out || !name_ok(name) || (flags & ~SM_OBJECT_REPLACE))
		return -EINVAL;
	if (!(o = calloc(1, sizeof(*o))))
		return -ENOMEM;
	o->fd = o->dirfd = -1;
	o->flags = flags;
	if (!(o->name = strdup(name))) {
		rc = -ENOMEM;
		goto err;
	}
	if ((o->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto err;
	}
	if (sm__object_no_tmpfile)
		errno = EOPNOTSUPP;
	else
		o->fd = openat(o->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
	if (o->fd < 0) {
		/* EOPNOTSUPP: the filesystem lacks it; EISDIR/EINVAL: the
		 * kernel or libc predates it. */
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
			rc = -errno;
			goto err;
		}
		for (int tries = 0; o->fd < 0 && tries < 100; tries++) {
			free(o->hidden);
			if (!(o->hidden = hidden_name(name))) {
				rc = -ENOMEM;
				goto err;
			}
			o->fd = openat(o->dirfd, o->hidden,
				       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
			if (o->fd < 0 && errno != EEXIST) {
				rc = -errno;
				free(o->hidden);
				o->hidden = NULL;
				goto err;
			}
		}
		if (o->fd < 0) {
			rc = -EEXIST;
			free(o->hidden);
			o->hidden = NULL;
			goto err;
		}
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", o->fd);
	if ((rc = sm_open(path, SM_RDWR, &opt, &o->f)) < 0)
		goto err;
	*out = o;
	return 0;
err:
	if (o->hidden)
		unlinkat(o->dirfd, o->hidden, 0);
	object_free(o);
	return rc;
}

int sm_object_map(sm_object *o, uint64_t off, uint64_t len, sm_slice **out)
{
	if (!o)
		return -EINVAL;
	return sm_map_write(o->f, off, len, SM_EXTEND, out);
}

static bool live_slices(sm_file *f)
{
	bool live;

	pthread_mutex_lock(&f->lock);
	live = f->nslices != 0;
	pthread_mutex_unlock(&f->lock);
	return live;
}

/* Put the (synced) object under its name: linkat, or for REPLACE a hidden
 * link renamed over the name. */
static int place(sm_object *o)
{
	char path[64], *tmp = NULL;
	int rc = 0;

	if (o->hidden) {
		if (!(o->flags & SM_OBJECT_REPLACE)) {
			if (linkat(o->dirfd, o->hidden, o->dirfd, o->name, 0) < 0)
				return -errno;
			unlinkat(o->dirfd, o->hidden, 0);
		} else if (renameat(o->dirfd, o->hidden, o->dirfd, o->name) < 0) {
			return -errno;
		}
		free(o->hidden);
		o->hidden = NULL;
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", o->fd);
	if (!(o->flags & SM_OBJECT_REPLACE))
		return linkat(AT_FDCWD, path, o->dirfd, o->name, AT_SYMLINK_FOLLOW) < 0 ? -errno
										      : 0;
	for (int tries = 0; tries < 100; tries++) {
		free(tmp);
		if (!(tmp = hidden_name(o->name)))
			return -ENOMEM;
		if (linkat(AT_FDCWD, path, o->dirfd, tmp, AT_SYMLINK_FOLLOW) == 0)
			break;
		rc = -errno;
		if (rc != -EEXIST) {
			free(tmp);
			return rc;
		}
	}
	if (rc == -EEXIST) {
		free(tmp);
		return rc;
	}
	rc = 0;
	if (renameat(o->dirfd, tmp, o->dirfd, o->name) < 0) {
		rc = -errno;
		unlinkat(o->dirfd, tmp, 0);
	}
	free(tmp);
	return rc;
}

int sm_object_publish(sm_object *o)
{
	int rc = 0;
	int cs_ = sm_nocancel();

	if (!o) {
		rc = -EINVAL;
		goto out;
	}
	if (live_slices(o->f)) {
		rc = -EBUSY;
		goto out;
	}
	if (o->err) {
		rc = o->err;
		goto out;
	}
	if (sm_sys.fdatasync(o->fd) < 0) {
		/* Never retried: the pages may be clean and lost (SPEC §6.4). */
		rc = o->err = -errno;
		goto out;
	}
	if ((rc = place(o)) < 0)
		goto out;
	/* The name is in place; make the directory entry durable. */
	if (sm_sys.fdatasync(o->dirfd) < 0) {
		rc = -errno;
		goto out;
	}
	object_free(o);
out:
	sm_cancel_restore(cs_);
	return rc;
}

int sm_object_abort(sm_object *o)
{
	if (!o)
		return -EINVAL;
	if (o->hidden)
		unlinkat(o->dirfd, o->hidden, 0);
	object_free(o);
	return 0;
}
