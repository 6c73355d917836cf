/* SPDX-License-Identifier: MIT */
/*
 * ofd.c - kernel byte-range locks.
 *
 * Open file description locks (F_OFD_SETLK) belong to the open file
 * description, not the process: closing another fd of the same file does not
 * drop them (the classic POSIX lock trap SQLite's os_unix.c describes), and
 * the kernel drops them when the last fd of the description closes, so a
 * crashed holder never leaves a lock behind.  They merge and split silently
 * within one description, which is why ranges.c counts slices itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "safemap-internal.h"

/* fcntl(F_OFD_SETLK): 0 or -errno.  On x86-64 the system call instruction
 * itself: struct flock is the kernel's, and neither glibc's fcntl wrapper
 * nor syscall() with its errno store is on the lock path (together a
 * tenth of its instructions, issue 14).  Other 64-bit ABIs go through
 * syscall(); the rest through glibc, which maps it to fcntl64. */
static inline int setlk(int fd, struct flock *fl)
{
#if defined(__x86_64__) && defined(__LP64__) && defined(SYS_fcntl)
	long r;

	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "0"((long)SYS_fcntl), "D"((long)fd), "S"((long)F_OFD_SETLK), "d"(fl)
			 : "rcx", "r11", "memory");
	return (int)r;
#elif defined(__LP64__) && defined(SYS_fcntl)
	return syscall(SYS_fcntl, fd, F_OFD_SETLK, fl) == 0 ? 0 : -errno;
#else
	return fcntl(fd, F_OFD_SETLK, fl) == 0 ? 0 : -errno;
#endif
}

SM_HOT static int ofd_set(int fd, short type, uint64_t off, uint64_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = (off_t)len }; /* l_pid must be 0 for OFD locks */
	int rc = setlk(fd, &fl);

	/* EAGAIN and EACCES both mean "held elsewhere" (POSIX allows either). */
	return rc == -EAGAIN || rc == -EACCES ? -EBUSY : rc;
}

SM_HOT int sm_ofd_lock(int fd, bool write, uint64_t off, uint64_t len)
{
	return ofd_set(fd, write ? F_WRLCK : F_RDLCK, off, len);
}

SM_HOT int sm_ofd_unlock(int fd, uint64_t off, uint64_t len)
{
	return ofd_set(fd, F_UNLCK, off, len);
}

int sm_ofd_test(int fd, bool write, uint64_t off, uint64_t len)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = write ? F_WRLCK : F_RDLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)off;
	fl.l_len = (off_t)len;
	/* never reports this description's own locks: ranges.c covers them */
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type == F_UNLCK ? 0 : -EBUSY;
}

#define PASSES 8

/* One pass over /proc/locks: does a lock on (dev, ino) lie wholly inside
 * [from, to)?  -errno if the file cannot be read. */
static int locks_pass(dev_t dev, ino_t ino, uint64_t from, uint64_t to)
{
	char line[256];
	FILE *pl = fopen("/proc/locks", "re");
	int found = 0;

	if (!pl)
		return -errno;
	setvbuf(pl, NULL, _IOFBF, 1 << 16);
	while (fgets(line, sizeof(line), pl)) {
		unsigned maj, mnr;
		unsigned long long ino_, start, e;
		char end[32];
		/* "1: OFDLCK ADVISORY READ -1 08:01:1234 0 EOF"; "->" lines wait */
		const char *p = strstr(line, ": ");
		if (!p || strstr(line, "->"))
			continue;
		if (sscanf(p + 2, "%*s %*s %*s %*s %x:%x:%llu %llu %31s", &maj, &mnr, &ino_, &start, end) != 5)
			continue;
		if (maj != major(dev) || mnr != minor(dev) || ino_ != (unsigned long long)ino)
			continue;
		e = strcmp(end, "EOF") == 0 ? UINT64_MAX : strtoull(end, NULL, 10);
		if (start >= from && e < to) {
			found = 1;
			break;
		}
	}
	fclose(pl);
	return found;
}

/* Does another description hold a lock lying wholly inside [from, to) of
 * fd's file?  1 yes, 0 no, -EPROTO if nobody can tell.  F_OFD_GETLK
 * reports one conflicting lock only, and a wider one (a plain program's
 * whole-file read lock, which safemap lets in) can come first and hide the
 * locks inside the range; then the inode's locks are read from /proc/locks
 * (every lock inside the range counts: callers leave their own bytes out
 * of it).  The kernel gives /proc/locks a page per read(2), and locks taken
 * or dropped elsewhere meanwhile shift it, so a line can be skipped (or
 * read twice): a lock found in any pass counts, "none" takes PASSES passes
 * that all missed it.  -EPROTO when the mask stands and /proc/locks cannot
 * be read; *mask then says which lock hid the answer. */
int sm_ofd_held_in(int fd, uint64_t from, uint64_t to, struct flock *mask)
{
	struct flock fl;
	struct stat st;

	if (from >= to)
		return 0;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)from;
	fl.l_len = (off_t)(to - from);
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	if (fl.l_type == F_UNLCK)
		return 0;
	if ((uint64_t)fl.l_start >= from && fl.l_len > 0 && (uint64_t)fl.l_start + (uint64_t)fl.l_len <= to)
		return 1;
	if (mask)
		*mask = fl;
	if (fstat(fd, &st) < 0)
		return -EPROTO;
	for (int pass = 0; pass < PASSES; pass++) {
		int rc = locks_pass(st.st_dev, st.st_ino, from, to);
		if (rc != 0)
			return rc < 0 ? -EPROTO : 1;
	}
	return 0;
}
