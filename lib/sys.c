/* SPDX-License-Identifier: MIT */
/*
 * sys.c - the one syscall seam.
 *
 * Every syscall whose failure safemap must report from commit or map
 * (msync, fdatasync, pwrite, fallocate, ftruncate, sync_file_range) goes
 * through this table.  The private test build replaces entries to inject
 * EIO and ENOSPC; nothing else in the library calls these directly.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safemap-internal.h"

#define SM_SYS_DEFAULT                                                         \
	{                                                                      \
		.msync = msync, .fdatasync = fdatasync, .pwrite = pwrite,      \
		.fallocate = fallocate, .ftruncate = ftruncate,                \
		.sync_file_range = sync_file_range,                            \
	}

static const struct sm_sys sm_sys_default = SM_SYS_DEFAULT;
struct sm_sys sm_sys = SM_SYS_DEFAULT;

void sm_sys_reset(void)
{
	sm_sys = sm_sys_default;
}
