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
#include <string.h>
#include <sys/syscall.h>
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
