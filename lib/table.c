/* SPDX-License-Identifier: MIT */
/*
 * table.c - the shared lock table: who holds which region (SPEC §4).
 *
 * The kernel lock is the authority for exclusion; the table is a registry
 * for inspection (sm_holders, lockctl).  It is a small file beside the data
 * file (PATH.smlock, or DIR/DEV-INO.smlock with SAFEMAP_TABLE_DIR or the
 * table_dir option), mapped shared by every opener.  Format: lib/table.h and
 * doc/safemap-table.5.
 *
 * - Creation is race-free: the first opener builds the table in a private
 *   temporary file and link()s it into place; a loser of the race unlinks
 *   its copy and opens the winner's.  A table left by a deleted or replaced
 *   data file (other device, inode or birth time) is rebuilt the same way
 *   with rename().
 * - Updates are lock-free: a slot is claimed with one compare-and-swap that
 *   also records its owner; its fields change under an odd sequence number.
 *   Readers never block writers: they copy a slot and retry if its sequence
 *   number moved.  One slot write per acquire, no system call.
 * - Order (format revision 2, SPEC §16): an entry is published pending
 *   before its kernel lock is asked for, turned held by one store of its
 *   state word, withdrawn if the kernel refuses, and removed only after the
 *   kernel lock is dropped (lock.c), so a refused process finds its holder.
 *   SM_NOLOCK mappings are listed with state unlocked, never as holders.
 * - Liveness without trusting pids (SPEC §4.3): each open of the table (an
 *   owner) holds an OFD write lock on a byte of its own far beyond the end
 *   of the table; a slot whose owner byte is unlocked, asked with
 *   F_OFD_GETLK through another open file description, is stale.  Openers
 *   reap stale slots lazily, lockctl on demand.
 * - The table is untrusted input: every field read is validated, reads run
 *   under the SIGBUS guard (the mapping is registered like a window), and a
 *   table that cannot be used leaves exclusion to the kernel locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "safemap-internal.h"

/* ---- paths and identity ------------------------------------------------ */

int smt_path(const char *data_path, const struct stat *st, const char *dir, char *out, size_t size)
{
	int n;

	if (!dir || !*dir)
		dir = secure_getenv("SAFEMAP_TABLE_DIR");
	if (dir && *dir)
		n = snprintf(out, size, "%s/%llx-%llx.smlock", dir, (unsigned long long)st->st_dev,
			     (unsigned long long)st->st_ino);
	else
		n = snprintf(out, size, "%s.smlock", data_path);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static void data_identity(int fd, const struct stat *st, struct smt_header *h)
{
	struct statx sx;

	h->data_dev = (uint64_t)st->st_dev;
	h->data_ino = (uint64_t)st->st_ino;
	h->data_btime_sec = 0;
	h->data_btime_nsec = 0;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) == 0 && (sx.stx_mask & STATX_BTIME)) {
		h->data_btime_sec = sx.stx_btime.tv_sec;
		h->data_btime_nsec = sx.stx_btime.tv_nsec;
	}
}

/* ---- validation (every byte of a table is untrusted) ------------------- */

int smt_check_header(const struct smt_header *h, uint64_t file_size)
{
	if (memcmp(h->magic, SMT_MAGIC, sizeof(h->magic)) != 0)
		return -EPROTO;
	if (h->version != SMT_VERSION || h->header_size != SMT_HEADER_SIZE ||
	    h->slot_size != SMT_SLOT_SIZE || h->live_base != SMT_LIVE_BASE)
		return -EPROTO;
	if (h->nslots == 0 || h->nslots > SMT_MAX_SLOTS)
		return -EPROTO;
	if (file_size < (uint64_t)SMT_HEADER_SIZE + (uint64_t)h->nslots * SMT_SLOT_SIZE)
		return -EPROTO;
	return 0;
}

/* Copy slot i consistently into *out.  Returns 1 for a lock entry (held,
 * waiting or pending; fields validated), 2 for an unlocked mapping (an
 * SM_NOLOCK slice: listed, never a holder; readers that predate it skip
 * anything but 1), 0 for a free slot, -EAGAIN if it is being changed (or was
 * left half-changed by an owner that died: *out->state says whose),
 * -EPROTO for a slot with invalid fields. */
int smt_snapshot(const struct smt_table *t, uint32_t i, struct smt_slot *out)
{
	const struct smt_slot *s = &t->slots[i];

	for (int tries = 0; tries < 64; tries++) {
		uint32_t s1 = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE), s2;
		const volatile unsigned char *src = (const volatile unsigned char *)s;
		unsigned char *dst = (unsigned char *)out;
		for (size_t k = 0; k < sizeof(*out); k++)
			dst[k] = src[k];
		/* state changes alone (pending -> held) without a sequence
		 * bump: take it whole */
		out->state = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
		if (t->guard->state != SM_MAP_OK)
			return -EIO; /* the table file shrank under us */
		if (s1 != s2 || (s1 & 1))
			continue;
		if (SMT_STATE(out->state) == SMT_FREE)
			return 0;
		if (SMT_STATE(out->state) == SMT_CLAIMING)
			return -EAGAIN;
		if (SMT_STATE(out->state) > SMT_UNLOCKED || SMT_OWNER(out->state) >= SMT_MAX_OWNERS ||
		    (out->mode != SMT_MODE_READ && out->mode != SMT_MODE_WRITE) || out->len == 0 ||
		    out->off > (uint64_t)INT64_MAX || out->len > (uint64_t)INT64_MAX - out->off)
			return -EPROTO;
		out->comm[sizeof(out->comm) - 1] = '\0';
		out->tag[sizeof(out->tag) - 1] = '\0';
		return SMT_STATE(out->state) == SMT_UNLOCKED ? 2 : 1;
	}
	out->state = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
	return -EAGAIN;
}

/* How many slots a scan must visit. */
uint32_t smt_scan_limit(const struct smt_table *t)
{
	const struct smt_header *h = t->base;
	uint32_t n = __atomic_load_n(&h->high_water, __ATOMIC_ACQUIRE);

	if (t->guard->state != SM_MAP_OK)
		return 0;
	return n < t->nslots ? n : t->nslots; /* untrusted: clamp */
}

void (*smt_test_after_probe)(uint32_t owner);
void (*smt_forget_hook)(struct smt_table *t, const struct smt_slot *s);

bool smt_owner_alive(const struct smt_table *t, uint32_t owner)
{
	struct flock fl;
	bool alive;

	if (t->owner_held && owner == t->owner)
		return true;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)(SMT_LIVE_BASE + owner);
	fl.l_len = 1;
	/* cannot tell: never call a live holder stale */
	alive = fcntl(t->fd, F_OFD_GETLK, &fl) < 0 || fl.l_type != F_UNLCK;
	if (smt_test_after_probe)
		smt_test_after_probe(owner);
	return alive;
}

/* A state word no live owner ever writes: a state byte above CLAIMING, an
 * owner number beyond SMT_MAX_OWNERS, or "free" with owner bits set (owners
 * free a slot by storing 0).  Such a slot is garbage: anyone may take it
 * back (SPEC §4.4: a corrupted table may hide holders, never break
 * mapping). */
static bool state_invalid(uint32_t st)
{
	return SMT_STATE(st) > SMT_UNLOCKED || SMT_OWNER(st) >= SMT_MAX_OWNERS ||
	       (SMT_STATE(st) == SMT_FREE && st != SMT_FREE);
}

static union smt_word load_word(const struct smt_table *t, uint32_t i)
{
	return (union smt_word){ .word = __atomic_load_n(&t->slots[i].word, __ATOMIC_ACQUIRE) };
}

/* Free slot i if its seq and state are still exactly w (see union
 * smt_word); the new seq is even and larger. */
static bool free_slot(struct smt_table *t, uint32_t i, union smt_word w)
{
	union smt_word nw = { .seq = (w.seq | 1) + 1, .state = SMT_FREE };
	uint64_t expected = w.word;

	return __atomic_compare_exchange_n(&t->slots[i].word, &expected, nw.word, false,
					   __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

bool smt_free_judged(struct smt_table *t, uint32_t i, union smt_word w)
{
	return free_slot(t, i, w);
}

/* Does slot i, read as w, hold a bound change (fence.c)? */
static bool bound_entry(const struct smt_table *t, uint32_t i, union smt_word w)
{
	return SMT_STATE(w.state) == SMT_HELD && !state_invalid(w.state) &&
	       (__atomic_load_n(&t->slots[i].flags, __ATOMIC_ACQUIRE) & SMT_SF_BOUND);
}

bool smt_retire(struct smt_table *t, uint32_t i, union smt_word w)
{
	if (bound_entry(t, i, w)) {
		/* a bound change of a dead owner: held on, by nobody (fence.c) */
		union smt_word nw = { .seq = (w.seq | 1) + 1, .state = SMT_ORPHAN << 8 | SMT_HELD };
		uint64_t expected = w.word;
		if (SMT_OWNER(w.state) != SMT_ORPHAN)
			(void)__atomic_compare_exchange_n(&t->slots[i].word, &expected, nw.word, false,
							  __ATOMIC_RELEASE, __ATOMIC_RELAXED);
		return false;
	}
	return free_slot(t, i, w);
}

/* ---- attach / detach ------------------------------------------------------ */

void smt_fence_count(struct smt_header *hd, uint64_t off, uint64_t len, int d)
{
	uint64_t p0 = off >> SMT_FENCE_SHIFT, p1 = (off + len - 1) >> SMT_FENCE_SHIFT;
	uint64_t n = p1 - p0 + 1 < SMT_FENCE_BUCKETS ? p1 - p0 + 1 : SMT_FENCE_BUCKETS;

	if (d > 0)
		__atomic_fetch_add(&hd->fence_n, 1, __ATOMIC_SEQ_CST);
	for (uint64_t k = 0; k < n; k++)
		__atomic_fetch_add(&hd->fence[(p0 + k) % SMT_FENCE_BUCKETS], (uint32_t)d, __ATOMIC_SEQ_CST);
	if (d < 0)
		__atomic_fetch_sub(&hd->fence_n, 1, __ATOMIC_SEQ_CST);
}

/* A rebuild keeps dead processes' bound changes held (fence.c): every slot
 * of the old file at path that reads as a bound held entry goes into the
 * new table (fd, header *h) as an orphan's.  The old file failed
 * validation, so this keeps more than it should at worst (lockctl reap
 * --bound), never less than it can read. */
static void carry_bound(const char *path, int fd, struct smt_header *h)
{
	int old = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	uint64_t n = 0, nold;

	if (old < 0)
		return;
	if (fstat(old, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > SMT_HEADER_SIZE) {
		nold = ((uint64_t)st.st_size - SMT_HEADER_SIZE) / SMT_SLOT_SIZE;
		for (uint64_t i = 0; i < nold && i < SMT_MAX_SLOTS && n < SMT_NSLOTS; i++) {
			struct smt_slot s;
			if (pread(old, &s, sizeof(s), (off_t)(SMT_HEADER_SIZE + i * SMT_SLOT_SIZE)) != (ssize_t)sizeof(s))
				break;
			if (!(s.flags & SMT_SF_BOUND) || SMT_STATE(s.state) != SMT_HELD || s.len == 0 ||
			    s.off > (uint64_t)INT64_MAX || s.len > (uint64_t)INT64_MAX - s.off ||
			    (s.mode != SMT_MODE_READ && s.mode != SMT_MODE_WRITE))
				continue;
			s.seq = 2;
			s.state = SMT_ORPHAN << 8 | SMT_HELD;
			if (pwrite(fd, &s, sizeof(s), (off_t)(SMT_HEADER_SIZE + n * SMT_SLOT_SIZE)) != (ssize_t)sizeof(s))
				break;
			smt_fence_count(h, s.off, s.len, 1);
			n++;
		}
	}
	h->high_water = (uint32_t)n;
	close(old);
}

static int build(const char *tmp, int data_fd, const struct stat *st, uint64_t generation,
		 const char *carry)
{
	struct smt_header h;
	uint64_t size = (uint64_t)SMT_HEADER_SIZE + (uint64_t)SMT_NSLOTS * SMT_SLOT_SIZE;
	int fd, rc = 0;

	/* Permissions derived from the data file (SPEC §4.1): whoever may
	 * write it may register holders; the table never grants more than the
	 * data file.  The mode given to open() passes through the umask (0666
	 * would become 0644 and lock out the group), so set it with fchmod,
	 * after fchown (which may clear mode bits).  Only root can give the
	 * table the data file's owner; anyone may give it the data file's
	 * group if they belong to it. */
	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (geteuid() == 0)
		(void)!fchown(fd, st->st_uid, st->st_gid);
	else
		(void)!fchown(fd, (uid_t)-1, st->st_gid);
	if (fchmod(fd, st->st_mode & 0666) < 0) {
		rc = -errno;
		close(fd);
		unlink(tmp);
		return rc;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, SMT_MAGIC, sizeof(h.magic));
	h.version = SMT_VERSION;
	h.header_size = SMT_HEADER_SIZE;
	h.slot_size = SMT_SLOT_SIZE;
	h.nslots = SMT_NSLOTS;
	h.generation = generation;
	h.live_base = SMT_LIVE_BASE;
	h.revision = SMT_REVISION;
	h.nbuckets = SMT_NBUCKETS; /* waiting (wait.c) */
	h.bucket_shift = SMT_BUCKET_SHIFT;
	data_identity(data_fd, st, &h);
	if (ftruncate(fd, (off_t)size) < 0)
		rc = -errno;
	if (rc == 0 && carry)
		carry_bound(carry, fd, &h);
	if (rc == 0 && pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		rc = errno ? -errno : -EIO;
	close(fd);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

/* Make a new table at path: link (create) or rename (replace) it into
 * place, so no opener ever sees a half-built one.  carry: a rebuild of the
 * same data file's table, whose bound entries are kept. */
static int publish(const char *path, int data_fd, const struct stat *st, uint64_t generation,
		   bool replace, bool carry)
{
	char tmp[PATH_MAX];
	int rc;

	if (snprintf(tmp, sizeof(tmp), "%s.%d.%lx.tmp", path, (int)getpid(),
		     (unsigned long)random()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if ((rc = build(tmp, data_fd, st, generation, carry ? path : NULL)) < 0)
		return rc;
	if (replace)
		rc = rename(tmp, path) < 0 ? -errno : 0;
	else
		rc = link(tmp, path) < 0 && errno != EEXIST ? -errno : 0;
	unlink(tmp);
	return rc;
}

static int map_table(struct smt_table *t, int prot)
{
	struct stat st;
	void *p;

	/* A regular file before any read (a device in the table's place is
	 * never read), then the header before the size: a table grows file
	 * first, nslots last (tmode.c), so the size read after a header covers
	 * its slots. */
	if (fstat(t->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EPROTO;
	if (pread(t->fd, &t->hdr, sizeof(t->hdr), 0) != (ssize_t)sizeof(t->hdr))
		return -EPROTO;
	if (fstat(t->fd, &st) < 0)
		return -errno;
	if (smt_check_header(&t->hdr, (uint64_t)st.st_size) < 0)
		return -EPROTO;
	t->nslots = t->hdr.nslots;
	t->size = (size_t)SMT_HEADER_SIZE + (size_t)t->nslots * SMT_SLOT_SIZE;
	p = mmap(NULL, t->size, prot, MAP_SHARED, t->fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	if (!(t->guard = calloc(1, sizeof(*t->guard)))) {
		munmap(p, t->size);
		return -ENOMEM;
	}
	t->guard->addr = p;
	t->guard->len = t->size;
	t->guard->writable = prot & PROT_WRITE;
	sm_fault_install();
	sm_fault_register(t->guard);
	t->base = p;
	t->slots = (struct smt_slot *)((unsigned char *)p + SMT_HEADER_SIZE);
	return 0;
}

/* Attach the table open on fd (taken over: closed by smt_detach or on
 * failure). */
int smt_attach_fd(int fd, bool writable, struct smt_table *t)
{
	int rc;

	memset(t, 0, sizeof(*t));
	t->fd = fd;
	if ((rc = map_table(t, PROT_READ | (writable ? PROT_WRITE : 0))) < 0) {
		close(t->fd);
		t->fd = -1;
	}
	return rc;
}

int smt_attach_path(const char *path, bool writable, struct smt_table *t)
{
	/* O_NONBLOCK: a FIFO in the table's place must not block the open
	 * forever (read-only opens of a FIFO wait for a writer); map_table
	 * then refuses anything but a regular file. */
	int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		memset(t, 0, sizeof(*t));
		t->fd = -1;
		return -errno;
	}
	return smt_attach_fd(fd, writable, t);
}

void smt_detach(struct smt_table *t)
{
	if (t->guard) {
		sm_fault_unregister(t->guard);
		munmap(t->base, t->size);
		free(t->guard);
		t->guard = NULL;
	}
	if (t->fd >= 0)
		close(t->fd); /* drops the owner's liveness lock */
	t->fd = -1;
}

/* Claim a liveness byte of our own: the first one nobody holds. */
static void free_slots_of(struct smt_table *t, uint32_t owner);

static int claim_owner(struct smt_table *t)
{
	for (uint32_t k = 0; k < SMT_ORPHAN; k++) {
		if (t->before_claim && !t->before_claim(t->mode_arg, k))
			continue; /* the mode's hook (table mode: a live owner's area) */
		int rc = sm_ofd_lock(t->fd, true, SMT_LIVE_BASE + k, 1);
		if (rc == 0) {
			/* We hold byte k exclusively now, so any slot still naming
			 * owner k was left by a dead predecessor: free it before
			 * our liveness would make it look alive. */
			free_slots_of(t, k);
			t->owner = k;
			t->owner_held = true;
			/* Owners start their slot search apart (16 slots each):
			 * processes that lock and unlock all the time would
			 * otherwise take turns with the same slot and move its
			 * cache lines between CPUs at every acquisition. */
			t->hint = t->nslots ? (uint32_t)(((uint64_t)k * SMT_OWNER_SPREAD) % t->nslots) : 0;
			return 0; /* the mode bytes: the mode's attach hook */
		}
		if (rc != -EBUSY)
			return rc;
	}
	return -ENOLCK;
}

static void free_slots_of(struct smt_table *t, uint32_t owner)
{
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		/* only a reaper races us here (nobody else writes owner's
		 * slots): retry a few times if it moved the word */
		for (int tries = 0; tries < 4; tries++) {
			union smt_word w = load_word(t, i);
			struct smt_slot copy;
			if (w.state == SMT_FREE || state_invalid(w.state) || SMT_OWNER(w.state) != owner)
				break;
			copy = t->slots[i]; /* a dead owner's: stable */
			if (smt_retire(t, i, w)) {
				if (SMT_STATE(w.state) == SMT_WAITING)
					if (smt_forget_hook)
						smt_forget_hook(t, &copy);
				break;
			}
		}
	}
}

/* Free the slots of dead owners and invalid slots below lim.  Returns how
 * many were (or, dry, would be) freed.
 *
 * Order matters (SPEC §4.3): every slot is read first, then each owner's
 * byte is probed once, then the slots judged are freed with a swap of the
 * (seq, state) word that was read.  A new owner that claims a dead owner's
 * byte after the probe frees and reuses that owner's slots with new seqs,
 * so the swaps fail; one that claimed it before the probe makes the probe
 * say alive.  Probing first and trusting the verdict for slots read later
 * would free the new owner's slots. */
static int reap_upto(struct smt_table *t, uint32_t lim, bool dry)
{
	struct cand {
		uint32_t i;
		bool invalid;
		union smt_word w;
	} *c = NULL;
	uint8_t *known = calloc(SMT_MAX_OWNERS, 1); /* 0 unknown, 1 alive, 2 dead */
	size_t nc = 0, cap = 0;
	int n = 0;

	if (!known)
		return -ENOMEM;
	for (uint32_t i = 0; i < lim && t->guard->state == SM_MAP_OK; i++) {
		union smt_word w = load_word(t, i);
		bool invalid = state_invalid(w.state);
		struct smt_slot s;
		if (w.state == SMT_FREE)
			continue;
		/* a stable in-use slot with invalid fields: no live owner
		 * leaves one (fields change under an odd seq) */
		if (!invalid && !(w.seq & 1) && SMT_STATE(w.state) != SMT_CLAIMING &&
		    smt_snapshot(t, i, &s) == -EPROTO && s.seq == w.seq && s.state == w.state)
			invalid = true;
		if (!invalid && t->owner_held && SMT_OWNER(w.state) == t->owner)
			continue; /* ours */
		if (nc == cap) {
			struct cand *nc_ = realloc(c, (cap = cap ? 2 * cap : 64) * sizeof(*c));
			if (!nc_) {
				n = -ENOMEM;
				goto out;
			}
			c = nc_;
		}
		c[nc++] = (struct cand){ i, invalid, w };
	}
	for (size_t k = 0; k < nc; k++) {
		uint32_t owner = SMT_OWNER(c[k].w.state);
		if (!c[k].invalid) {
			if (!known[owner])
				known[owner] = smt_owner_alive(t, owner) ? 1 : 2;
			if (known[owner] == 1)
				continue;
		}
		struct smt_slot copy = t->slots[c[k].i];
		if (!c[k].invalid && bound_entry(t, c[k].i, c[k].w)) {
			if (!dry)
				(void)smt_retire(t, c[k].i, c[k].w); /* an orphan's now, not freed */
		} else if (dry) {
			n++;
		} else if (free_slot(t, c[k].i, c[k].w)) {
			n++;
			/* a dead waiter's bucket counts (wait.c) */
			if (!c[k].invalid && SMT_STATE(c[k].w.state) == SMT_WAITING)
				if (smt_forget_hook)
					smt_forget_hook(t, &copy);
		}
	}
out:
	free(c);
	free(known);
	return n;
}

int smt_reap(struct smt_table *t, bool dry)
{
	return reap_upto(t, smt_scan_limit(t), dry);
}

/* ---- the library's side -------------------------------------------------- */

static struct {
	pthread_once_t once;
	uint64_t start_time, pidns;
	char comm[16];
} self = { .once = PTHREAD_ONCE_INIT };

static void read_self(void)
{
	char buf[1024], *p;
	struct stat st;
	FILE *f;

	/* field 22 of /proc/self/stat, after the parenthesised comm */
	if ((f = fopen("/proc/self/stat", "re"))) {
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')'))) {
			unsigned long long v = 0;
			if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
				   &v) == 1)
				self.start_time = v;
		}
		fclose(f);
	}
	if (stat("/proc/self/ns/pid", &st) == 0)
		self.pidns = (uint64_t)st.st_ino;
	prctl(PR_GET_NAME, self.comm, 0, 0, 0);
	self.comm[sizeof(self.comm) - 1] = '\0';
}

/* Network filesystems forward OFD locks to the server, but this table only
 * sees this host (SPEC §4.6). */
bool smt_netfs_type(unsigned long f_type)
{
	switch (f_type) {
	case 0x6969UL:     /* NFS */
	case 0x517BUL:     /* SMB */
	case 0xFF534D42UL: /* CIFS */
	case 0xFE534D42UL: /* SMB2 */
	case 0x00C36400UL: /* Ceph */
	case 0x65735546UL: /* FUSE */
	case 0x47504653UL: /* GPFS */
		return true;
	default:
		return false;
	}
}

static bool is_netfs(int fd)
{
	struct statfs sfs;

	return fstatfs(fd, &sfs) == 0 && smt_netfs_type((unsigned long)sfs.f_type);
}

static int replace(const char *path, const char *data_path, int data_fd, const struct stat *st,
		   struct smt_table *t);
static bool names_file(const char *path, int fd);

/* Does anyone hold a liveness byte of the file at path? */
static bool owners_alive(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)SMT_LIVE_BASE,
			    .l_len = (off_t)SMT_MAX_OWNERS };
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	bool alive;

	if (fd < 0)
		return false;
	alive = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && fcntl(fd, F_OFD_GETLK, &fl) == 0 &&
		fl.l_type != F_UNLCK;
	close(fd);
	return alive;
}

/* Open (create or rebuild as needed) the table at path for the data file
 * f->fd and map it; identity checked, no owner byte yet. */
static int attach(sm_file *f, const char *data_path, const char *path, const struct stat *st,
		  struct smt_table *t)
{
	int rc = 0;

	/* Every round that publishes a table ends in -EAGAIN, so running out
	 * of rounds (openers and closers racing on a path whose data file is
	 * replaced over and over) is -EAGAIN, never "attached" without a table. */
	for (int attempt = 0; attempt < 8; attempt++) {
		struct stat ts;
		rc = smt_attach_path(path, true, t);
		if (rc == -ENOENT) {
			/* the table path belongs to the file now at data_path */
			if (!names_file(data_path, f->fd)) {
				rc = -ESTALE;
				break;
			}
			if ((rc = publish(path, f->fd, st, 1, false, false)) < 0)
				break;
			rc = -EAGAIN;
			continue;
		}
		if (rc == -EPROTO) {
			/* Not a table we can read: rebuild it (generation unknown),
			 * but only when nobody is attached to it (SPEC §12.7): a
			 * new table beside live owners would split the holders
			 * (in table-authority mode: exclusion) over two tables. */
			if (owners_alive(path))
				break;
			if ((rc = publish(path, f->fd, st, 1, true, true)) < 0)
				break;
			rc = -EAGAIN;
			continue;
		}
		if (rc < 0)
			break;
		/* accept only a table owned by the data file's owner, us, or root */
		if (fstat(t->fd, &ts) < 0 || (ts.st_uid != st->st_uid && ts.st_uid != geteuid() && ts.st_uid != 0)) {
			smt_detach(t);
			rc = -EPERM;
			break;
		}
		struct smt_header want;
		data_identity(f->fd, st, &want);
		if (t->hdr.data_dev != want.data_dev || t->hdr.data_ino != want.data_ino ||
		    t->hdr.data_btime_sec != want.data_btime_sec ||
		    t->hdr.data_btime_nsec != want.data_btime_nsec) {
			/* left over from a deleted or replaced data file */
			rc = replace(path, data_path, f->fd, st, t);
			smt_detach(t);
			if (rc < 0)
				break;
			rc = -EAGAIN;
			continue;
		}
		break;
	}
	return rc;
}

/*
 * Footprint (SPEC §16): no table is left behind once its data file is
 * deleted and the last user closes.  The closer that finds the data file
 * unlinked and no other owner attached unlinks the table.  The cleanup byte
 * makes that atomic against openers: the closer write-locks it around "no
 * other owner byte is locked, the path still names this table, unlink"; an
 * opener, once it holds its owner byte, read-locks it around "the path still
 * names the table I attached".  Either the opener's owner byte is seen (no
 * unlink) or the opener sees its table gone and starts over: two openers
 * never end up on two tables because of a cleanup.  An opener that rebuilds
 * a table left over from a replaced data file write-locks the old table's
 * byte around "the path still names it, rename the new one over it", so a
 * closer of the old data file never unlinks the new table.
 */
static int cleanup_lock(int fd, short type, int cmd)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)SMT_CLEANUP_BYTE, .l_len = 1 };

	while (fcntl(fd, cmd, &fl) < 0) {
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
	}
	return 0;
}

static bool names_table(const char *path, int fd)
{
	struct stat a, b;

	return lstat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Does path (followed) still name the file open on fd? */
static bool names_file(const char *path, int fd)
{
	struct stat a, b;

	return stat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* After claiming an owner byte: 0, or -EAGAIN if the path no longer names
 * our table (a closer removed it, or an opener rebuilt it): start over. */
static int still_named(struct smt_table *t, const char *path)
{
	int rc;

	if ((rc = cleanup_lock(t->fd, F_RDLCK, F_OFD_SETLKW)) < 0) /* held only briefly */
		return rc;
	rc = names_table(path, t->fd) ? 0 : -EAGAIN;
	(void)cleanup_lock(t->fd, F_UNLCK, F_OFD_SETLK);
	return rc;
}

/* Replace the table t, attached from path, by a new one for the data file
 * data_fd, under t's cleanup byte and only if path still names t: a closer
 * removing t (which it does under the same byte, after the same check)
 * never removes the new table instead. */
static int replace(const char *path, const char *data_path, int data_fd, const struct stat *st,
		   struct smt_table *t)
{
	int rc;

	/* An opener whose data file was deleted or replaced since it opened
	 * it must not replace the table of the file now at data_path. */
	if (!names_file(data_path, data_fd))
		return -ESTALE;
	if ((rc = cleanup_lock(t->fd, F_WRLCK, F_OFD_SETLKW)) < 0)
		return rc;
	if (names_table(path, t->fd))
		rc = publish(path, data_fd, st, t->hdr.generation + 1, true, false);
	(void)cleanup_lock(t->fd, F_UNLCK, F_OFD_SETLK);
	return rc; /* 0 also when it changed meanwhile: the caller starts over */
}

/* Unlink the table if f's data file is gone and nobody else is attached. */
static void cleanup(sm_file *f, struct smt_table *t)
{
	struct stat st;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)SMT_LIVE_BASE,
			    .l_len = (off_t)SMT_MAX_OWNERS };

	/* a fork child shares our descriptions: it would not see our owner byte */
	if (!t->path || !t->owner_held || sm_pid() != f->pid || fstat(f->fd, &st) < 0 || st.st_nlink > 0)
		return;
	if (cleanup_lock(t->fd, F_WRLCK, F_OFD_SETLK) < 0)
		return; /* an opener is checking: it will stay, let it clean up */
	/* our own owner byte is never reported (same description) */
	if (fcntl(t->fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_UNLCK && names_table(t->path, t->fd))
		(void)unlink(t->path);
	(void)cleanup_lock(t->fd, F_UNLCK, F_OFD_SETLK);
}

int sm_table_open(sm_file *f, const char *data_path, const struct stat *st, const sm_options *o,
		  const struct smt_mode_ops *ops)
{
	struct smt_table *t;
	char path[PATH_MAX];
	int rc = 0;

	f->netfs = is_netfs(f->fd);
	if (f->netfs && (o->flags & (SM_OPT_REFUSE_NETFS | SM_OPT_TABLE_LOCKS)))
		return -EREMOTE; /* table mode's exclusion would not cross hosts */
	if (o->flags & SM_OPT_NO_TABLE)
		return ops->no_table(f);
	if ((rc = smt_path(data_path, st, o->table_dir, path, sizeof(path))) < 0)
		return rc;
	if (!(t = calloc(1, sizeof(*t))))
		return -ENOMEM;
	pthread_once(&self.once, read_self);

	for (int round = 0; round < 4; round++) {
		if ((rc = attach(f, data_path, path, st, t)) < 0)
			break;
		if ((rc = ops->prepare(f, t, o)) < 0) /* table mode: its index first */
			break;
		if ((rc = claim_owner(t)) < 0 || (rc = still_named(t, path)) != -EAGAIN)
			break;
		ops->abandon(t);
		smt_detach(t); /* removed or replaced meanwhile: start over */
	}
	if (rc == 0 && !(t->path = strdup(path)))
		rc = -ENOMEM;
	if (rc == 0) {
		/* the modes: a refusal fails the open */
		if ((rc = ops->attach(f, t, o)) < 0) {
			ops->abandon(t);
			smt_detach(t);
			free(t->path);
			free(t);
			return rc;
		}
		if (!f->tmode)
			smt_reap(t, false); /* lazily, by every opener (table mode: in its attach) */
		f->table = t;
		return 0;
	}
	ops->abandon(t);
	if (t->fd >= 0 && t->guard)
		smt_detach(t);
	free(t);
	f->table_err = rc;
	if (o->flags & SM_OPT_TABLE_LOCKS)
		return rc; /* table mode needs its table */
	/* exclusion still holds through the kernel locks */
	if (o->flags & SM_OPT_TABLE_REQUIRED)
		return rc;
	return ops->no_table(f);
}

void sm_table_close(sm_file *f)
{
	if (!f->table)
		return;
	cleanup(f, f->table);
	smt_detach(f->table);
	free(f->table->path);
	free(f->table);
	f->table = NULL;
}

/* Copy n < 32 bytes without a call (two overlapping fixed-size moves):
 * the tag of every acquisition goes through here. */
static inline void copy_short(char *dst, const char *src, size_t n)
{
	struct w16 {
		uint64_t a, b;
	} x, y;
	uint64_t u, v;
	uint32_t p, q;

	if (n >= 16) {
		memcpy(&x, src, 16);
		memcpy(&y, src + n - 16, 16);
		memcpy(dst, &x, 16);
		memcpy(dst + n - 16, &y, 16);
	} else if (n >= 8) {
		memcpy(&u, src, 8);
		memcpy(&v, src + n - 8, 8);
		memcpy(dst, &u, 8);
		memcpy(dst + n - 8, &v, 8);
	} else if (n >= 4) {
		memcpy(&p, src, 4);
		memcpy(&q, src + n - 4, 4);
		memcpy(dst, &p, 4);
		memcpy(dst + n - 4, &q, 4);
	} else {
		for (size_t i = 0; i < n; i++)
			dst[i] = src[i];
	}
}

static inline __attribute__((always_inline)) void fill(struct smt_slot *s, const struct sm_hold *h,
							  const char *tag, bool own, bool precise)
{
	struct timespec ts;

	s->flags = own ? SMT_SF_OWN_TAG : 0;
	s->mode = h->write ? SMT_MODE_WRITE : SMT_MODE_READ;
	s->off = h->off;
	s->len = h->len;
	/* Only the opener registers (a fork child gets -ESTALE before), so
	 * f->pid is ours. */
	pid_t tid = sm_tid(h->f->pid);
	s->pid = (int32_t)h->f->pid;
	s->tid = (int32_t)tid;
	s->start_time = self.start_time;
	s->pidns = self.pidns;
	/* A held or pending entry's "since" is for display: the coarse clock
	 * (vDSO, no TSC read) is enough (SPEC §12.5).  A waiting entry's
	 * orders waiters (wait.c: fairness, the deadlock victim) against
	 * CLOCK_REALTIME readings: precise. */
	clock_gettime(precise ? CLOCK_REALTIME : CLOCK_REALTIME_COARSE, &ts);
	s->since_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	memcpy(s->comm, self.comm, sizeof(s->comm));
	s->wait_for = 0;
	s->acquirer = (uint32_t)tid; /* the wait-for graph's node, as sm_acquirer() */
	/* the tag, NUL-padded to its field: built in a zeroed local, stored
	 * as one fixed-size copy (no variable-length memset) */
	char t[sizeof(s->tag)] = { 0 };
	if (tag)
		copy_short(t, tag, strnlen(tag, sizeof(t) - 1));
	memcpy(s->tag, t, sizeof(t));
}

void sm_table_fill(struct smt_slot *s, const struct sm_hold *h, const char *tag, bool own)
{
	fill(s, h, tag, own, false); /* table mode's held entries */
}

/* Take a free or invalid slot and fill it for h with state and tag (own:
 * the acquisition's own tag, not the file's); false if none. */
SM_HOT static bool claim_slot(struct smt_table *t, const struct sm_hold *h, const char *tag, bool own,
		       uint32_t state, uint32_t *out)
{
	uint32_t i = t->hint < t->nslots ? t->hint : 0;

	for (uint32_t n = 0; n < t->nslots; n++, i = i + 1 < t->nslots ? i + 1 : 0) {
		struct smt_slot *s = &t->slots[i];
		uint32_t expected = __atomic_load_n(&s->state, __ATOMIC_RELAXED), seq;
		if (expected != SMT_FREE && !state_invalid(expected))
			continue;
		if (!__atomic_compare_exchange_n(&s->state, &expected, t->owner << 8 | SMT_CLAIMING, false,
						 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			continue;
		/* Ours now: nobody else writes a live owner's slot.  Make seq
		 * odd (and different: an invalid slot may have left it odd). */
		seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
		seq += (seq & 1) ? 2 : 1;
		__atomic_store_n(&s->seq, seq, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_RELEASE);
		fill(s, h, tag, own, state == SMT_WAITING);
		__atomic_store_n(&s->state, t->owner << 8 | state, __ATOMIC_RELAXED);
		__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE); /* even: stable */
		struct smt_header *hdr = t->base;
		uint32_t hw = __atomic_load_n(&hdr->high_water, __ATOMIC_RELAXED);
		while (hw < i + 1 && !__atomic_compare_exchange_n(&hdr->high_water, &hw, i + 1, true,
								   __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
		*out = i;
		return true;
	}
	return false;
}

/* Register h with state (SMT_PENDING before its kernel lock is taken,
 * SMT_UNLOCKED for an SM_NOLOCK mapping) and tag (NULL: the file's); caller
 * holds f->lock.  A full table is -ENOLCK, but only after a reap of the
 * whole table: slots of dead owners and garbage left by a corruption are
 * taken back first, beyond high_water too (the header may be corrupted as
 * well). */
SM_HOT int sm_table_add(sm_file *f, struct sm_hold *h, const char *tag, uint32_t state)
{
	struct smt_table *t = f->table;
	const char *use = tag ? tag : f->tag;
	uint32_t i;

	h->slot = -1;
	if (!t)
		return 0;
	for (bool reaped = false; !claim_slot(t, h, use, tag != NULL, state, &i); reaped = true)
		if (reaped || reap_upto(t, t->nslots, false) <= 0)
			return -ENOLCK;
	if (t->guard->state != SM_MAP_OK)
		return 0; /* the table file shrank: we wrote into a zero page */
	t->hint = i + 1;
	h->slot = (int32_t)i;
	return 0;
}

void sm_table_downgrade(sm_file *f, struct sm_hold *h)
{
	struct smt_table *t = f->table;
	struct smt_slot *s;

	if (!t || h->slot < 0)
		return;
	s = &t->slots[h->slot];
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_ACQ_REL);
	s->mode = SMT_MODE_READ;
	__atomic_fetch_add(&s->seq, 1, __ATOMIC_RELEASE);
}

static void to_holder(const struct smt_slot *s, int state, sm_holder *h)
{
	memset(h, 0, sizeof(*h));
	h->size = sizeof(*h);
	h->pid = s->pid;
	h->tid = s->tid;
	h->start_time = s->start_time;
	h->pidns = s->pidns;
	memcpy(h->comm, s->comm, sizeof(h->comm));
	memcpy(h->tag, s->tag, sizeof(h->tag));
	h->mode = s->mode == SMT_MODE_WRITE ? SM_MODE_WRITE : SM_MODE_READ;
	h->off = s->off;
	h->len = s->len;
	h->since = s->since_ns;
	h->state = state;
}

/* On a network filesystem the kernel also knows locks of other hosts, which
 * no table of this host lists: ask it (F_OFD_GETLK, through our own
 * description, so our own locks are never reported) whether something
 * conflicts with a write over [off, off+len), and if no live entry of the
 * table covers that lock, report it as a remote holder (SPEC §15, §16). */
static bool remote_holder(sm_file *f, const struct smt_table *t, uint64_t off, uint64_t len,
			  sm_holder *h)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)off,
			    .l_len = (off_t)len };

	if (!f->netfs || f->fd < 0 || fcntl(f->fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
		return false;
	for (uint32_t i = 0, lim = t ? smt_scan_limit(t) : 0; i < lim; i++) {
		struct smt_slot s;
		if (smt_snapshot(t, i, &s) != 1 || !smt_owner_alive(t, SMT_OWNER(s.state)) ||
		    SMT_STATE(s.state) == SMT_WAITING)
			continue;
		if (s.off <= (uint64_t)fl.l_start && (uint64_t)fl.l_start < s.off + s.len &&
		    (s.mode == SMT_MODE_WRITE) == (fl.l_type == F_WRLCK))
			return false; /* a holder of this host: already listed */
	}
	memset(h, 0, sizeof(*h));
	h->size = sizeof(*h);
	h->pid = fl.l_pid > 0 ? fl.l_pid : 0;
	h->mode = fl.l_type == F_WRLCK ? SM_MODE_WRITE : SM_MODE_READ;
	h->off = (uint64_t)fl.l_start;
	h->len = fl.l_len ? (uint64_t)fl.l_len : (uint64_t)INT64_MAX - (uint64_t)fl.l_start;
	h->state = SM_REMOTE;
	return true;
}

int sm_holders(sm_file *f, uint64_t off, uint64_t len, sm_holder *out, size_t cap)
{
	sm_holder remote;
	struct smt_table *t;
	size_t n = 0;
	int rc, cs;

	if (!f || (cap && !out))
		return -EINVAL;
	if ((rc = sm_check_range(off, len)) < 0)
		return rc;
	if (!(t = f->table))
		return f->memory ? -ENOTSUP : (f->table_err ? f->table_err : -ENOTSUP);
	cs = sm_nocancel();
	for (uint32_t i = 0, lim = smt_scan_limit(t); i < lim; i++) {
		struct smt_slot s;
		int state;
		rc = smt_snapshot(t, i, &s);
		if (rc <= 0)
			continue; /* free, changing, or invalid: hidden, never fatal */
		if (s.off >= off + len || off >= s.off + s.len)
			continue;
		if (!smt_owner_alive(t, SMT_OWNER(s.state)))
			state = SM_STALE;
		else if (SMT_STATE(s.state) == SMT_WAITING)
			state = SM_WAITING;
		else if (SMT_STATE(s.state) == SMT_PENDING)
			state = SM_PENDING;
		else if (SMT_STATE(s.state) == SMT_UNLOCKED)
			state = SM_UNLOCKED;
		else
			state = SM_HELD;
		if (n < cap)
			to_holder(&s, state, &out[n]);
		n++;
	}
	if (remote_holder(f, t, off, len, &remote)) {
		if (n < cap)
			out[n] = remote;
		n++;
	}
	sm_cancel_restore(cs);
	return n > INT32_MAX ? INT32_MAX : (int)n;
}
