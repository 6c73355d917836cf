/* SPDX-License-Identifier: MIT */
/*
 * fuzz_table.c - libFuzzer target for the lock table parser: every byte of
 * a table is untrusted (SPEC §4.4).  The input becomes a table file (a
 * memfd); it is validated, attached, every slot snapshotted, holders
 * classified, a dry reap run, then a real one that must leave every slot
 * free.  Nothing may crash, hang or read out of bounds.  Built by `make fuzz`
 * when configure finds clang.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safemap-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs are patches over a valid table (8 slots), so the fuzzer reaches
 * the slot parser: the first two bytes choose where the rest lands; an
 * input of more than a table's size replaces it whole. */
#define NS 8
static unsigned char table[SMT_HEADER_SIZE + NS * SMT_SLOT_SIZE];

static void template(void)
{
	struct smt_header *h = (struct smt_header *)table;

	memset(table, 0, sizeof(table));
	memcpy(h->magic, SMT_MAGIC, 8);
	h->version = SMT_VERSION;
	h->header_size = SMT_HEADER_SIZE;
	h->slot_size = SMT_SLOT_SIZE;
	h->nslots = NS;
	h->live_base = SMT_LIVE_BASE;
	h->high_water = NS;
	for (int i = 0; i < NS; i++) {
		struct smt_slot *s = (struct smt_slot *)(table + SMT_HEADER_SIZE) + i;
		s->seq = 2;
		s->state = (uint32_t)i << 8 | SMT_HELD;
		s->mode = SMT_MODE_READ + (i & 1);
		s->off = (uint64_t)i * 100;
		s->len = 10;
		memcpy(s->comm, "fuzz", 5);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smt_table t;
	const unsigned char *buf = data;
	size_t n = size;
	int fd = memfd_create("table", MFD_CLOEXEC);

	if (fd < 0)
		return 0;
	sm_init_once();
	if (size >= 2 && size <= sizeof(table)) {
		size_t at = ((size_t)data[0] << 8 | data[1]) % sizeof(table);
		template();
		n = size - 2 < sizeof(table) - at ? size - 2 : sizeof(table) - at;
		memcpy(table + at, data + 2, n);
		buf = table;
		n = sizeof(table);
	}
	if (n && write(fd, buf, n) != (ssize_t)n) {
		close(fd);
		return 0;
	}
	if (smt_attach_fd(fd, true, &t) < 0)
		return 0; /* rejected: fine */
	for (uint32_t i = 0, lim = smt_scan_limit(&t); i < lim; i++) {
		struct smt_slot s;
		if (smt_snapshot(&t, i, &s) == 1)
			(void)smt_owner_alive(&t, SMT_OWNER(s.state));
	}
	(void)smt_reap(&t, true);
	/* Nobody holds a liveness byte of this memfd, so after a real reap
	 * every slot in view is free: dead owners' and garbage alike (SPEC
	 * §4.4: a corrupted table never keeps slots from claimers). */
	if (smt_reap(&t, false) >= 0) {
		if (smt_reap(&t, true) != 0)
			__builtin_trap();
		for (uint32_t i = 0, lim = smt_scan_limit(&t); i < lim; i++) {
			struct smt_slot s;
			if (smt_snapshot(&t, i, &s) == 1)
				__builtin_trap();
		}
	}
	smt_detach(&t);
	return 0;
}
