/* SPDX-License-Identifier: MIT */
/*
 * error.c - sm_strerror: what each code means in safemap's terms.
 *
 * The messages say what happened to the caller's slice or file, not only
 * the generic errno text; codes safemap never returns fall back to
 * strerror's table (through strerrordesc_np, which is thread-safe and
 * returns static text).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "safemap-internal.h"

static const struct {
	int code;
	const char *msg;
} messages[] = {
	{ 0, "success" },
	{ EBUSY, "region is locked by another holder (another process, another sm_file, "
		 "or an overlapping slice of this sm_file)" },
	{ ENOLCK, "no lock available (kernel lock limit or lock table full)" },
	{ ETIMEDOUT, "timed out waiting for a region lock" },
	{ EDEADLK, "waiting for this region lock would deadlock" },
	{ ENXIO, "the file shrank under the slice; the slice is dead" },
	{ ERANGE, "region outside the slice or the file, or offset + length overflows" },
	{ EINVAL, "invalid argument (NULL, zero length or unknown flags)" },
	{ EBADF, "write through a read slice or a read-only file, or file already closed" },
	{ ESTALE, "slice or file used in a child after fork; open the file again" },
	{ ENOTSUP, "operation not supported for this slice or build" },
	{ EIO, "I/O error while writing back; the slice stays dirty and the file is "
	       "poisoned until reopened" },
	{ ENOSPC, "no space left on the device to reserve or write the region" },
	{ ENOMEM, "out of memory or address space" },
	/* One code, two causes (sm_open): the mismatch is the common one and
	 * comes first, so that it does not read as corruption. */
	{ EPROTO, "lock mode mismatch: the file is in use in the other lock mode (one "
		  "opener with SM_OPT_TABLE_LOCKS, another without) or through another "
		  "lock table (another table_dir or SAFEMAP_TABLE_DIR, a hard link); "
		  "or else its lock table failed validation (corrupted, foreign or "
		  "another version)" },
	{ EREMOTE, "the file is on a network filesystem and SM_OPT_REFUSE_NETFS or "
		   "SM_OPT_TABLE_LOCKS was given" },
	{ EPERM, "the lock table is owned by another user than the data file's owner, "
		 "the caller or root; it was not trusted" },
	{ EACCES, "permission denied on the data file or its lock table" },
	{ EISDIR, "the path is a directory, not a regular file" },
	{ ENOENT, "no such file (give SM_CREATE to create it)" },
	{ ENAMETOOLONG, "the path of the file or of its lock table is too long" },
	{ EAGAIN, "the lock table kept changing while it was opened; try again" },
	{ EEXIST, "the name already exists (sm_object_publish without SM_OBJECT_REPLACE)" },
	{ EBADMSG, "the log's header or a record failed its checksum (corrupted log)" },
};

const char *sm_strerror(int err)
{
	const char *s;

	if (err == INT_MIN)
		return "unknown error";
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++)
		if (messages[i].code == err)
			return messages[i].msg;
	s = strerrordesc_np(err);
	return s ? s : "unknown error";
}
