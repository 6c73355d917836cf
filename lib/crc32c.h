/* SPDX-License-Identifier: MIT */
/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of log records (log.c).
 *
 * Long buffers go to Intel's ISA-L (Debian libisal: crc32_iscsi, which
 * folds with carry-less multiplication and runs several crc32 streams at
 * once, ~3x a single crc32 instruction chain at 4 KiB) when configure found
 * it; short ones, where a library call costs more than the work, to the
 * SSE4.2 crc32 instruction inline (the log checks records of ~100 bytes in
 * a loop, and independent records overlap in the CPU); slicing-by-8 where
 * the CPU has no crc32 instruction.
 */
#ifndef SAFEMAP_CRC32C_H
#define SAFEMAP_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC-32C: pass 0 to start; the result of one call may be fed
 * to the next.  sm_crc32c(0, "123456789", 9) == 0xe3069283. */
__attribute__((visibility("hidden"))) uint32_t sm_crc32c(uint32_t crc, const void *buf,
							  size_t n);

/* The raw CRC-32C register (no inversion on the way in or out): start at
 * 0xffffffff, finish with ~.  For callers that continue a CRC over a few
 * more bytes with the instruction themselves. */
__attribute__((visibility("hidden"))) uint32_t sm_crc32c_raw(uint32_t state, const void *buf,
							      size_t n);

/* Does this CPU have the SSE4.2 crc32 instruction (x86-64)? */
__attribute__((visibility("hidden"))) int sm_crc32c_hw(void);

/* From this many bytes on, sm_crc32c_raw is faster than the instruction
 * inline (measured here: a library call is the cost below ~2 KiB). */
#define SM_CRC32C_LONG 2048

#endif
