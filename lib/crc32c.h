/* SPDX-License-Identifier: MIT */
/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of log records (log.c).
 *
 * Debian packages no C library for CRC-32C (only a Python module), so the
 * library carries its own: SSE4.2 where the CPU has it, else slicing-by-8.
 */
#ifndef SAFEMAP_CRC32C_H
#define SAFEMAP_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC-32C: pass 0 to start; the result of one call may be fed
 * to the next.  sm_crc32c(0, "123456789", 9) == 0xe3069283. */
__attribute__((visibility("hidden"))) uint32_t sm_crc32c(uint32_t crc, const void *buf,
							  size_t n);

#endif
