/* SPDX-License-Identifier: MIT */
/*
 * crc32c.c - CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), as in
 * iSCSI and ext4: ISA-L's crc32_iscsi for long buffers (when built with
 * it), the SSE4.2 crc32 instruction when the CPU has it, else a
 * slicing-by-8 table (eight bytes per step).  See crc32c.h.
 */
#include <limits.h>
#include <pthread.h>
#include <string.h>
#ifdef HAVE_ISAL
#include <isa-l/crc.h>
#endif

#include "crc32c.h"

#define POLY 0x82f63b78u

static uint32_t table[8][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static uint32_t (*impl)(uint32_t, const unsigned char *, size_t);

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		n--;
	}
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		w = __builtin_bswap64(w);
#endif
		w ^= crc;
		crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^
		      table[5][(w >> 16) & 0xff] ^ table[4][(w >> 24) & 0xff] ^
		      table[3][(w >> 32) & 0xff] ^ table[2][(w >> 40) & 0xff] ^
		      table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
		p += 8;
		n -= 8;
	}
	while (n--)
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
							  size_t n)
{
	uint64_t c = crc;

	while (n && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		n--;
	}
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		n -= 8;
	}
	while (n--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

#ifdef HAVE_ISAL
/* ISA-L keeps the register as we do (no inversion): crc32_iscsi(buf, len,
 * 0xffffffff) continued.  Its length is an int. */
static uint32_t crc_isal(uint32_t crc, const unsigned char *p, size_t n)
{
	while (n > 0) {
		int k = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
		crc = crc32_iscsi((unsigned char *)p, k, crc);
		p += k;
		n -= (size_t)k;
	}
	return crc;
}
#endif

static int have_hw;

static void init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			table[t][i] = table[0][table[t - 1][i] & 0xff] ^ (table[t - 1][i] >> 8);
	impl = crc_sw;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2")) {
		impl = crc_hw;
		have_hw = 1;
	}
#endif
}

uint32_t sm_crc32c_raw(uint32_t state, const void *buf, size_t n)
{
	pthread_once(&once, init);
#ifdef HAVE_ISAL
	if (n >= SM_CRC32C_LONG)
		return crc_isal(state, buf, n);
#endif
	return impl(state, buf, n);
}

uint32_t sm_crc32c(uint32_t crc, const void *buf, size_t n)
{
	return ~sm_crc32c_raw(~crc, buf, n);
}

int sm_crc32c_hw(void)
{
	pthread_once(&once, init);
	return have_hw;
}
