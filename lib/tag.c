/* SPDX-License-Identifier: MIT */
/*
 * tag.c - per-acquisition tags for slices (SPEC §16: "slices and ranges take
 * a per-acquisition tag ... for slices a way you choose").
 *
 * sm_lock takes its tag as an argument; a slice is named after it is made,
 * with sm_slice_tag, so the map calls keep their signatures.  Until then the
 * entry carries the file's tag (sm_options.tag).  Only the display fields
 * tag and flags of the hold's slot change, under the slot's sequence
 * protocol (seq odd while they change), by the thread holding f->lock: the
 * owner is the only writer of its slots (doc/safemap-table.5).
 */
#include <errno.h>
#include <string.h>

#include "safemap-internal.h"

int sm_slice_tag(sm_slice *s, const char *tag)
{
	struct sm_hold *h;
	struct smt_table *t;
	struct smt_slot *slot;
	sm_file *f;
	int rc = 0, cs;

	if (!s)
		return -EINVAL;
	f = s->f;
	h = s->h;
	if (sm_pid() != f->pid)
		return -ESTALE; /* a fork child never writes its parent's entries */
	cs = sm_nocancel();
	pthread_mutex_lock(&f->lock);
	t = f->table;
	if (!t) {
		rc = f->memory ? -ENOTSUP : (f->table_err ? f->table_err : -ENOTSUP);
	} else if (h->slot >= 0 && t->guard->state == SM_MAP_OK) {
		const char *use = tag ? tag : f->tag;

		slot = &t->slots[h->slot];
		__atomic_fetch_add(&slot->seq, 1, __ATOMIC_ACQ_REL); /* odd: changing */
		memset(slot->tag, 0, sizeof(slot->tag));
		if (use)
			strncpy(slot->tag, use, sizeof(slot->tag) - 1);
		/* atomic: the fence's bit of the same word changes under
		 * another lock (fence.c) */
		if (tag)
			__atomic_fetch_or(&slot->flags, SMT_SF_OWN_TAG, __ATOMIC_RELAXED);
		else
			__atomic_fetch_and(&slot->flags, ~SMT_SF_OWN_TAG, __ATOMIC_RELAXED);
		__atomic_fetch_add(&slot->seq, 1, __ATOMIC_RELEASE); /* even: stable */
	}
	pthread_mutex_unlock(&f->lock);
	sm_cancel_restore(cs);
	return rc;
}
