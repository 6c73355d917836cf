/* SPDX-License-Identifier: MIT */
/*
 * remote.c - locks other hosts hold.  On a network filesystem /proc/locks
 * never shows locks the server granted to other hosts: lockctl asks the
 * kernel with F_OFD_GETLK over every gap between the locks this host knows
 * of, and lists what it reports there as TYPE REMOTE.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "lockctl.h"

/* A byte range this host knows is locked: [start, end), end UINT64_MAX
 * to end of file. */
struct known {
	uint64_t start, end;
};

static int known_cmp(const void *a, const void *b)
{
	const struct known *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* List, as TYPE REMOTE, every lock F_OFD_GETLK reports in [pos, end). */
static void remote_walk(struct libscols_table *tb, int fd, const struct stat *st, uint64_t pos,
			uint64_t end, const char *shown)
{
	for (int n = 0; n < 100000 && pos < end; n++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)pos,
				    .l_len = end == UINT64_MAX ? 0 : (off_t)(end - pos) };
		if (fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
			return;
		struct klock k = { .write = fl.l_type == F_WRLCK, .pid = fl.l_pid > 0 ? fl.l_pid : -1,
				   .dev = st->st_dev, .ino = st->st_ino, .start = (uint64_t)fl.l_start,
				   .len = (uint64_t)fl.l_len };
		snprintf(k.type, sizeof(k.type), "REMOTE");
		kernel_row(tb, &k, shown, NULL);
		if (fl.l_len == 0)
			return; /* to end of file */
		pos = (uint64_t)fl.l_start + (uint64_t)fl.l_len;
	}
}

/* On a network filesystem /proc/locks never shows locks the server granted
 * to other hosts: ask the kernel with F_OFD_GETLK, from a description of
 * our own, over every gap between the locks this host knows (its table's
 * entries and /proc/locks: the kernel would report those first and hide a
 * remote lock behind them), and list what it reports there as TYPE REMOTE
 * (pid -1: unknown). */
void remote_rows(struct libscols_table *tb, const struct klocks *kl, const struct entries *e, const char *path,
		 const char *shown)
{
	struct statfs sfs;
	struct stat st;
	struct known *v = NULL;
	size_t n = 0;
	uint64_t pos = 0;
	int fd;

	if (statfs(path, &sfs) < 0 || !smt_netfs_type((unsigned long)sfs.f_type))
		return;
	/* read-write where we may: an NFS client answers a test for a write
	 * lock only on a description that could take one */
	if ((fd = open_regular(path, O_RDWR, &st)) < 0 && (fd = open_regular(path, O_RDONLY, &st)) < 0)
		return;
	v = xrealloc(NULL, e->n + kl->n + 1, sizeof(*v));
	for (size_t i = 0; i < e->n; i++)
		if (SMT_STATE(e->v[i].state) != SMT_UNLOCKED) /* a mapping, no lock */
			v[n++] = (struct known){ e->v[i].off, e->v[i].off + e->v[i].len };
	for (size_t i = 0; i < kl->n; i++)
		if (kl->v[i].dev == st.st_dev && kl->v[i].ino == st.st_ino)
			v[n++] = (struct known){ kl->v[i].start, kl->v[i].len ? kl->v[i].start + kl->v[i].len
									 : UINT64_MAX };
	qsort(v, n, sizeof(*v), known_cmp);
	for (size_t i = 0; i < n && pos != UINT64_MAX; i++) {
		if (v[i].start > pos)
			remote_walk(tb, fd, &st, pos, v[i].start, shown);
		if (v[i].end > pos)
			pos = v[i].end;
	}
	if (pos != UINT64_MAX)
		remote_walk(tb, fd, &st, pos, UINT64_MAX, shown);
	free(v);
	close(fd);
}
