/* SPDX-License-Identifier: MIT */
/*
 * safemap_vfs.c - the SQLite VFS "safemap".
 *
 * "safemap" wraps the "unix" VFS: reads, writes, syncs and the memory map
 * of the database stay with "unix"; every lock and the WAL index (-shm)
 * move onto safemap:
 *  - the main database locks (xLock family) are sm_lock() ranges on
 *    SQLite's lock bytes: PENDING (0x40000000), RESERVED (+1) and the
 *    510-byte SHARED range (+2), tagged PENDING, RESERVED, SHARED (read) or
 *    EXCLUSIVE (the SHARED range written);
 *  - the -shm regions are SM_NOLOCK slices (coordination memory shared
 *    with every other connection, stock SQLite's included), tagged SHM-0,
 *    SHM-1, ...;
 *  - the 8 WAL locks and the dead-man switch are sm_lock() ranges on the
 *    -shm bytes the unix VFS uses (120..127, 128), tagged WAL_WRITE, CKPT,
 *    RECOVER, READ-0..READ-4 and DMS.
 * The bytes and the lock protocol are the unix VFS's, and OFD locks conflict
 * with the POSIX locks stock SQLite takes, so stock processes and "safemap"
 * processes share one database (see contrib/sqlite/README for the limits).
 *
 * Each connection has its own sm_file (one open file description) for the
 * database and for its -shm, so two connections of one process exclude each
 * other as two processes do and no per-process lock bookkeeping is needed.
 *
 * Build: as ordinary core code by default (linked beside sqlite3.c or with
 * -lsqlite3; call sqlite3_safemap_vfs_register()); with
 * -DSAFEMAP_VFS_EXTENSION it is a loadable extension whose entry point is
 * sqlite3_safemapvfs_init.  Outside this tree compile with -D_GNU_SOURCE
 * (F_OFD_GETLK), as the tree's config.h does.
 */
#ifdef SAFEMAP_VFS_EXTENSION
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
#else
#include <sqlite3.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safemap.h"
#include "safemap_vfs.h"

/* The unix VFS's lock bytes (os.h, os_unix.c). */
#define SMV_PENDING_BYTE 0x40000000u
#define SMV_RESERVED_BYTE (SMV_PENDING_BYTE + 1)
#define SMV_SHARED_FIRST (SMV_PENDING_BYTE + 2)
#define SMV_SHARED_SIZE 510
#define SMV_SHM_NLOCK 8 /* SQLITE_SHM_NLOCK */
#define SMV_SHM_BASE ((22 + SMV_SHM_NLOCK) * 4) /* 120: first WAL lock byte */
#define SMV_SHM_DMS (SMV_SHM_BASE + SMV_SHM_NLOCK) /* 128: dead-man switch */
#define SMV_SHM_PAGE 4096 /* the unix VFS extends -shm a page at a time */

static const char *const smv_slot_tag[SMV_SHM_NLOCK] = {
	"WAL_WRITE", "CKPT", "RECOVER", "READ-0", "READ-1", "READ-2", "READ-3", "READ-4",
};

/* One registered VFS: its sqlite3_vfs and how it opens safemap files. */
struct smv_variant {
	sqlite3_vfs vfs;
	uint32_t opt_flags; /* sm_options.flags */
};

/* The -shm of one connection. */
struct smv_shm {
	char *path;
	int fd;          /* plain descriptor: size, extension, truncation by the DMS owner */
	sm_file *f;      /* locks and SM_NOLOCK mappings */
	int readonly;
	sm_range *dms;   /* the DMS read lock while attached */
	int nregion;
	sm_slice **slice;
	void **region;
	sm_range *slot[SMV_SHM_NLOCK];
	unsigned excl;   /* bit i: slot[i] is held exclusive */
};

typedef struct smv_file {
	sqlite3_file base;
	sqlite3_file *real;          /* the unix VFS's file, allocated after this struct */
	const struct smv_variant *variant;
	const char *path;            /* main database only (valid until xClose) */
	sm_file *db;                 /* main database only */
	int elock;                   /* SQLITE_LOCK_* held */
	sm_range *pending, *reserved, *shared;
	int shared_write;            /* shared is the EXCLUSIVE (write) lock */
	int timeout_ms;              /* SQLITE_FCNTL_LOCK_TIMEOUT */
	struct smv_shm *shm;
} smv_file;

#define SMV_REAL_OFFSET ((sizeof(smv_file) + 15) & ~(size_t)15)

static sqlite3_vfs *smv_root; /* "unix" */

/* A refusal (-EBUSY; -ETIMEDOUT and -EDEADLK after SM_WAIT) is SQLITE_BUSY;
 * anything else is the I/O error code given. */
static int smv_err(int e, int ioerr)
{
	if (e == -EBUSY || e == -ETIMEDOUT || e == -EDEADLK)
		return SQLITE_BUSY;
	return ioerr;
}

/* --- pass-through methods (journals, the WAL file, temporary files) ----- */

#define REAL(pf) (((smv_file *)(pf))->real)

static int smvClose(sqlite3_file *pf);

static int smvRead(sqlite3_file *pf, void *buf, int n, sqlite3_int64 off)
{
	return REAL(pf)->pMethods->xRead(REAL(pf), buf, n, off);
}

static int smvWrite(sqlite3_file *pf, const void *buf, int n, sqlite3_int64 off)
{
	return REAL(pf)->pMethods->xWrite(REAL(pf), buf, n, off);
}

static int smvTruncate(sqlite3_file *pf, sqlite3_int64 size)
{
	return REAL(pf)->pMethods->xTruncate(REAL(pf), size);
}

static int smvSync(sqlite3_file *pf, int flags)
{
	return REAL(pf)->pMethods->xSync(REAL(pf), flags);
}

static int smvFileSize(sqlite3_file *pf, sqlite3_int64 *size)
{
	return REAL(pf)->pMethods->xFileSize(REAL(pf), size);
}

static int smvPassLock(sqlite3_file *pf, int lock)
{
	return REAL(pf)->pMethods->xLock(REAL(pf), lock);
}

static int smvPassUnlock(sqlite3_file *pf, int lock)
{
	return REAL(pf)->pMethods->xUnlock(REAL(pf), lock);
}

static int smvPassCheckReservedLock(sqlite3_file *pf, int *out)
{
	return REAL(pf)->pMethods->xCheckReservedLock(REAL(pf), out);
}

static int smvPassFileControl(sqlite3_file *pf, int op, void *arg)
{
	return REAL(pf)->pMethods->xFileControl(REAL(pf), op, arg);
}

static int smvSectorSize(sqlite3_file *pf)
{
	return REAL(pf)->pMethods->xSectorSize(REAL(pf));
}

static int smvDeviceCharacteristics(sqlite3_file *pf)
{
	return REAL(pf)->pMethods->xDeviceCharacteristics(REAL(pf));
}

static int smvFetch(sqlite3_file *pf, sqlite3_int64 off, int n, void **pp)
{
	if (REAL(pf)->pMethods->iVersion < 3) {
		*pp = 0;
		return SQLITE_OK;
	}
	return REAL(pf)->pMethods->xFetch(REAL(pf), off, n, pp);
}

static int smvUnfetch(sqlite3_file *pf, sqlite3_int64 off, void *p)
{
	if (REAL(pf)->pMethods->iVersion < 3)
		return SQLITE_OK;
	return REAL(pf)->pMethods->xUnfetch(REAL(pf), off, p);
}

/* --- main database locks ----------------------------------------------- */

/* The unix VFS's protocol (os_unix.c, unixLock):
 *  SHARED:    read-lock PENDING, read-lock the SHARED range, drop PENDING;
 *  RESERVED:  write-lock RESERVED;
 *  EXCLUSIVE: write-lock PENDING (kept: the PENDING state if the next step
 *             fails), then write-lock the SHARED range.
 * safemap refuses to turn a range's read lock into a write lock in place
 * (-EBUSY within one sm_file, never a silent upgrade), so the SHARED range is unlocked and locked again in the
 * other mode.  That is safe because PENDING is write-locked by us at that
 * moment: nobody can take SHARED (it needs a read lock on PENDING) nor
 * EXCLUSIVE (it needs PENDING) in the gap. */
static int smvLock(sqlite3_file *pf, int want)
{
	smv_file *p = (smv_file *)pf;
	int e;

	if (p->elock >= want)
		return SQLITE_OK;
	if (want == SQLITE_LOCK_SHARED) {
		sm_range *pend = NULL;

		if (p->elock != SQLITE_LOCK_NONE)
			return SQLITE_MISUSE;
		e = sm_lock(p->db, SMV_PENDING_BYTE, 1, SM_LOCK_READ, "PENDING", &pend);
		if (e)
			return smv_err(e, SQLITE_IOERR_LOCK);
		e = sm_lock(p->db, SMV_SHARED_FIRST, SMV_SHARED_SIZE, SM_LOCK_READ, "SHARED",
			    &p->shared);
		if (sm_unlock(pend) && !e) {
			sm_unlock(p->shared);
			p->shared = NULL;
			return SQLITE_IOERR_UNLOCK;
		}
		if (e) {
			p->shared = NULL;
			return smv_err(e, SQLITE_IOERR_LOCK);
		}
		p->shared_write = 0;
		p->elock = SQLITE_LOCK_SHARED;
		return SQLITE_OK;
	}
	if (p->elock < SQLITE_LOCK_SHARED)
		return SQLITE_MISUSE;
	if (want == SQLITE_LOCK_RESERVED) {
		e = sm_lock(p->db, SMV_RESERVED_BYTE, 1, SM_LOCK_WRITE, "RESERVED", &p->reserved);
		if (e) {
			p->reserved = NULL;
			return smv_err(e, SQLITE_IOERR_LOCK);
		}
		p->elock = SQLITE_LOCK_RESERVED;
		return SQLITE_OK;
	}
	if (want != SQLITE_LOCK_EXCLUSIVE)
		return SQLITE_MISUSE; /* SQLite never asks for PENDING */
	if (p->elock < SQLITE_LOCK_PENDING) {
		e = sm_lock(p->db, SMV_PENDING_BYTE, 1, SM_LOCK_WRITE, "PENDING", &p->pending);
		if (e) {
			p->pending = NULL;
			return smv_err(e, SQLITE_IOERR_LOCK);
		}
		p->elock = SQLITE_LOCK_PENDING;
	}
	e = sm_unlock(p->shared);
	p->shared = NULL;
	if (e)
		return SQLITE_IOERR_UNLOCK; /* state: PENDING without SHARED; unlock cleans up */
	e = sm_lock(p->db, SMV_SHARED_FIRST, SMV_SHARED_SIZE, SM_LOCK_WRITE, "EXCLUSIVE", &p->shared);
	if (!e) {
		p->shared_write = 1;
		p->elock = SQLITE_LOCK_EXCLUSIVE;
		return SQLITE_OK;
	}
	/* Another connection still reads: back to our read lock (cannot be
	 * refused while we hold PENDING, unless someone ignores the protocol). */
	if (sm_lock(p->db, SMV_SHARED_FIRST, SMV_SHARED_SIZE, SM_LOCK_READ, "SHARED", &p->shared)) {
		p->shared = NULL;
		return SQLITE_IOERR_LOCK;
	}
	return smv_err(e, SQLITE_IOERR_LOCK);
}

static int smvUnlock(sqlite3_file *pf, int want)
{
	smv_file *p = (smv_file *)pf;
	int rc = SQLITE_OK;

	if (p->elock <= want)
		return SQLITE_OK;
	if (p->elock > SQLITE_LOCK_SHARED) {
		if (p->shared_write) {
			/* EXCLUSIVE -> SHARED while PENDING still keeps everyone out. */
			if (sm_unlock(p->shared))
				rc = SQLITE_IOERR_UNLOCK;
			p->shared = NULL;
			p->shared_write = 0;
			if (sm_lock(p->db, SMV_SHARED_FIRST, SMV_SHARED_SIZE, SM_LOCK_READ, "SHARED",
				    &p->shared)) {
				p->shared = NULL;
				rc = SQLITE_IOERR_RDLOCK;
			}
		}
		if (p->pending && sm_unlock(p->pending))
			rc = SQLITE_IOERR_UNLOCK;
		p->pending = NULL;
		if (p->reserved && sm_unlock(p->reserved))
			rc = SQLITE_IOERR_UNLOCK;
		p->reserved = NULL;
		p->elock = SQLITE_LOCK_SHARED;
	}
	if (want == SQLITE_LOCK_NONE) {
		if (p->shared && sm_unlock(p->shared))
			rc = SQLITE_IOERR_UNLOCK;
		p->shared = NULL;
		p->shared_write = 0;
		p->elock = SQLITE_LOCK_NONE;
	}
	return rc;
}

static int smvCheckReservedLock(sqlite3_file *pf, int *out)
{
	smv_file *p = (smv_file *)pf;
	int e;

	*out = 0;
	if (p->elock > SQLITE_LOCK_SHARED) {
		*out = 1;
		return SQLITE_OK;
	}
	e = sm_test(p->db, SMV_RESERVED_BYTE, 1, SM_LOCK_WRITE);
	if (e == -EBUSY)
		*out = 1;
	else if (e)
		return SQLITE_IOERR_CHECKRESERVEDLOCK;
	return SQLITE_OK;
}

/* --- the -shm: coordination memory and the WAL locks -------------------- */

static void smv_shm_free(struct smv_shm *s)
{
	for (int i = 0; i < SMV_SHM_NLOCK; i++)
		if (s->slot[i])
			sm_unlock(s->slot[i]);
	for (int i = 0; i < s->nregion; i++)
		if (s->slice[i])
			sm_release(s->slice[i]);
	if (s->dms)
		sm_unlock(s->dms);
	if (s->f)
		sm_close(s->f);
	if (s->fd >= 0)
		close(s->fd);
	sqlite3_free(s->slice);
	sqlite3_free(s->region);
	sqlite3_free(s->path);
	sqlite3_free(s);
}

/* Open DB-shm as the unix VFS does (O_NOFOLLOW, the database's permission
 * bits, read-only if it cannot be written or readonly_shm=1), then the
 * sm_file over it. */
static int smv_shm_open(smv_file *p)
{
	struct smv_shm *s;
	struct stat st;
	sm_options opt;
	int e;

	if (stat(p->path, &st))
		return SQLITE_IOERR_FSTAT;
	s = sqlite3_malloc(sizeof(*s));
	if (!s)
		return SQLITE_NOMEM;
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	s->path = sqlite3_mprintf("%s-shm", p->path);
	if (!s->path) {
		smv_shm_free(s);
		return SQLITE_NOMEM;
	}
	if (!sqlite3_uri_boolean(p->path, "readonly_shm", 0)) {
		s->fd = open(s->path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, st.st_mode & 0777);
		if (s->fd >= 0) {
			struct stat sst;

			/* Created under a umask: give it the database's bits. */
			if (!fstat(s->fd, &sst) && sst.st_size == 0 &&
			    (sst.st_mode & 0777) != (st.st_mode & 0777))
				(void)fchmod(s->fd, st.st_mode & 0777);
			if (geteuid() == 0)
				(void)!fchown(s->fd, st.st_uid, st.st_gid);
		}
	}
	if (s->fd < 0) {
		s->fd = open(s->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (s->fd < 0) {
			smv_shm_free(s);
			return SQLITE_CANTOPEN;
		}
		s->readonly = 1;
	}
	memset(&opt, 0, sizeof(opt));
	opt.size = sizeof(opt);
	opt.flags = p->variant->opt_flags;
	opt.tag = "sqlite-shm";
	e = sm_open(s->path, s->readonly ? SM_RDONLY : SM_RDWR, &opt, &s->f);
	if (e) {
		s->f = NULL;
		smv_shm_free(s);
		return e == -ENOMEM ? SQLITE_NOMEM : SQLITE_CANTOPEN;
	}
	p->shm = s;
	return SQLITE_OK;
}

/* The dead-man switch (os_unix.c, unixLockSharedMemory): attached
 * connections read-lock byte 128.  Nobody holding it means we are the first
 * to attach and the -shm may be left over from a crash: write-lock it,
 * truncate the -shm to 3 bytes, drop to a read lock.  A write lock held
 * elsewhere means someone else is doing that: SQLITE_BUSY (SQLite retries). */
static int smv_shm_attach(struct smv_shm *s)
{
	sm_range *w;
	int e;

	if (s->readonly) {
		/* sm_test refuses a write test on a read-only file: ask the
		 * kernel through the plain descriptor (a description of its own,
		 * holding nothing) who holds the byte, as the unix VFS does. */
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
				    .l_start = SMV_SHM_DMS, .l_len = 1 };

		if (fcntl(s->fd, F_OFD_GETLK, &fl))
			return SQLITE_IOERR_LOCK;
		if (fl.l_type == F_UNLCK)
			return SQLITE_READONLY_CANTINIT; /* nobody attached: cannot reset it */
		if (fl.l_type == F_WRLCK)
			return SQLITE_BUSY;
		e = -EBUSY; /* attached readers: join them */
	} else {
		e = sm_test(s->f, SMV_SHM_DMS, 1, SM_LOCK_WRITE);
	}
	if (e == 0) {
		e = sm_lock(s->f, SMV_SHM_DMS, 1, SM_LOCK_WRITE, "DMS", &w);
		if (e == 0) {
			int bad = ftruncate(s->fd, 3);

			sm_unlock(w);
			if (bad)
				return SQLITE_IOERR_SHMOPEN;
		} else if (e != -EBUSY) {
			return SQLITE_IOERR_LOCK;
		}
		/* -EBUSY: another connection attached meanwhile: join it. */
	} else if (e != -EBUSY) {
		return SQLITE_IOERR_LOCK;
	}
	e = sm_lock(s->f, SMV_SHM_DMS, 1, SM_LOCK_READ, "DMS", &s->dms);
	if (e) {
		s->dms = NULL;
		return smv_err(e, SQLITE_IOERR_LOCK);
	}
	return SQLITE_OK;
}

static int smvShmMap(sqlite3_file *pf, int iregion, int szregion, int extend,
		     void volatile **pp)
{
	smv_file *p = (smv_file *)pf;
	struct smv_shm *s;
	struct stat st;
	uint64_t need;
	int rc;

	*pp = NULL;
	if (iregion < 0 || szregion <= 0)
		return SQLITE_IOERR_SHMMAP;
	if (!p->shm) {
		rc = smv_shm_open(p);
		if (rc != SQLITE_OK)
			return rc;
	}
	s = p->shm;
	if (!s->dms) {
		rc = smv_shm_attach(s);
		if (rc != SQLITE_OK)
			return rc;
	}
	if (iregion < s->nregion && s->region[iregion]) {
		*pp = s->region[iregion];
		return s->readonly ? SQLITE_READONLY : SQLITE_OK;
	}
	need = (uint64_t)(iregion + 1) * (uint64_t)szregion;
	if (fstat(s->fd, &st))
		return SQLITE_IOERR_SHMSIZE;
	if ((uint64_t)st.st_size < need) {
		if (!extend)
			return s->readonly ? SQLITE_READONLY : SQLITE_OK;
		/* Grow as the unix VFS does: one byte at the end of each new page,
		 * so the pages exist (no SIGBUS later) and the file never shrinks
		 * under a concurrent extender. */
		for (uint64_t pg = (uint64_t)st.st_size / SMV_SHM_PAGE;
		     pg < (need + SMV_SHM_PAGE - 1) / SMV_SHM_PAGE; pg++) {
			if (pwrite(s->fd, "", 1, (off_t)(pg * SMV_SHM_PAGE + SMV_SHM_PAGE - 1)) != 1)
				return SQLITE_IOERR_SHMSIZE;
		}
	}
	if (iregion >= s->nregion) {
		int n = iregion + 1;
		sm_slice **ns = sqlite3_realloc(s->slice, (int)(n * sizeof(*ns)));
		void **nr;

		if (!ns)
			return SQLITE_IOERR_NOMEM;
		s->slice = ns;
		nr = sqlite3_realloc(s->region, (int)(n * sizeof(*nr)));
		if (!nr)
			return SQLITE_IOERR_NOMEM;
		s->region = nr;
		for (int i = s->nregion; i < n; i++) {
			s->slice[i] = NULL;
			s->region[i] = NULL;
		}
		s->nregion = n;
	}
	for (int i = 0; i <= iregion; i++) {
		uint64_t off = (uint64_t)i * (uint64_t)szregion;
		void *ptr;
		int e;

		if (s->region[i])
			continue;
		if (s->readonly)
			e = sm_map_read(s->f, off, (uint64_t)szregion, SM_NOLOCK, &s->slice[i]);
		else
			e = sm_map_write(s->f, off, (uint64_t)szregion, SM_NOLOCK, &s->slice[i]);
		if (e) {
			s->slice[i] = NULL;
			return e == -ENOMEM ? SQLITE_IOERR_NOMEM : SQLITE_IOERR_SHMMAP;
		}
		e = sm_unsafe_ptr(s->slice[i], &ptr);
		if (e) {
			sm_release(s->slice[i]);
			s->slice[i] = NULL;
			return SQLITE_IOERR_SHMMAP;
		}
		s->region[i] = ptr;
		/* display only: lockctl lists the region as SHM-i, not by the file's tag */
		char tag[16];
		snprintf(tag, sizeof(tag), "SHM-%d", i);
		(void)sm_slice_tag(s->slice[i], tag);
	}
	*pp = s->region[iregion];
	return s->readonly ? SQLITE_READONLY : SQLITE_OK;
}

/* A blocking lock: SQLite's lock timeout (SQLITE_FCNTL_LOCK_TIMEOUT, per
 * connection and per call) is the call's own wait bound (sm_lock_timed);
 * a release wakes the waiter at once (futex).  (noinline: smvShmLock's
 * common path stays short.) */
static __attribute__((noinline)) int smv_lock_timed(smv_file *p, sm_file *f, uint64_t off, int mode, const char *tag,
			  sm_range **out)
{
	return sm_lock_timed(f, off, 1, mode & ~SM_WAIT, (uint64_t)p->timeout_ms * 1000000ull, tag,
			     out);
}

/* Release slot i if this connection holds it (nothing otherwise). */
static int smv_slot_unlock(struct smv_shm *s, int i)
{
	sm_range *r = s->slot[i];

	if (!r)
		return 0;
	s->slot[i] = NULL;
	s->excl &= ~(1u << i);
	return sm_unlock(r);
}

/* All or nothing: drop slots [from, to), which this call took. */
static __attribute__((noinline)) void smv_shm_undo(struct smv_shm *s, int from, int to)
{
	for (int j = from; j < to; j++)
		smv_slot_unlock(s, j);
}

/* smvShmLock's general case: several slots, a slot already held, or a
 * blocking lock (out of line: the one-slot fail-fast lock of every read
 * transaction stays short). */
static __attribute__((noinline)) int smv_shm_lock_many(smv_file *p, struct smv_shm *s, int ofst, int n,
						       int flags)
{
	int excl = (flags & SQLITE_SHM_EXCLUSIVE) != 0;
	int mode = excl ? SM_LOCK_WRITE : SM_LOCK_READ;
	int rc = SQLITE_OK, i;

	/* Blocking locks (SQLITE_ENABLE_SETLK_TIMEOUT builds) map to SM_WAIT;
	 * never on RECOVER, as in the unix VFS. */
	if (p->timeout_ms > 0 && !(ofst <= 2 && ofst + n > 2))
		mode |= SM_WAIT;
	for (i = ofst; i < ofst + n; i++) {
		uint64_t off = SMV_SHM_BASE + (uint64_t)i;
		int e;

		if (s->slot[i]) {
			if (!excl == !(s->excl & (1u << i)))
				continue; /* already held so */
			rc = SQLITE_IOERR_SHMLOCK; /* a change of mode SQLite never asks for */
			break;
		}
		e = (mode & SM_WAIT) ? smv_lock_timed(p, s->f, off, mode, smv_slot_tag[i], &s->slot[i])
				     : sm_lock(s->f, off, 1, mode, smv_slot_tag[i], &s->slot[i]);
		if (e) {
			rc = smv_err(e, SQLITE_IOERR_SHMLOCK);
			break;
		}
		if (excl)
			s->excl |= 1u << i;
	}
	if (rc != SQLITE_OK)
		smv_shm_undo(s, ofst, i);
	return rc;
}

/* SQLite's rules (os_unix.c, unixShmLock): a slot goes unlocked -> shared
 * -> unlocked or unlocked -> exclusive -> unlocked; only exclusive requests
 * span several slots; unlocking a slot not held does nothing.  Each slot is
 * its own range (its own tag), so any subset can be released.  This runs
 * twice per read transaction (one slot locked, then unlocked): it calls
 * sm_lock or sm_unlock and little else (issue 14). */
static int smvShmLock(sqlite3_file *pf, int ofst, int n, int flags)
{
	smv_file *p = (smv_file *)pf;
	struct smv_shm *s = p->shm;
	unsigned excl;
	int rc = SQLITE_OK, e;

	if (!s || ofst < 0 || n < 1 || ofst + n > SMV_SHM_NLOCK)
		return SQLITE_IOERR_SHMLOCK;
	if (flags & SQLITE_SHM_UNLOCK) {
		for (int i = ofst; i < ofst + n; i++)
			if (smv_slot_unlock(s, i))
				rc = SQLITE_IOERR_SHMLOCK;
		return rc;
	}
	if (n > 1 || s->slot[ofst] || p->timeout_ms > 0)
		return smv_shm_lock_many(p, s, ofst, n, flags);
	excl = (flags & SQLITE_SHM_EXCLUSIVE) != 0;
	if ((e = sm_lock(s->f, SMV_SHM_BASE + (uint64_t)ofst, 1, excl ? SM_LOCK_WRITE : SM_LOCK_READ,
			 smv_slot_tag[ofst], &s->slot[ofst])) != 0)
		return smv_err(e, SQLITE_IOERR_SHMLOCK);
	s->excl |= excl << ofst;
	return SQLITE_OK;
}

static void smvShmBarrier(sqlite3_file *pf)
{
	(void)pf;
	atomic_thread_fence(memory_order_seq_cst);
}

static int smvShmUnmap(sqlite3_file *pf, int delete_flag)
{
	smv_file *p = (smv_file *)pf;
	struct smv_shm *s = p->shm;

	if (!s)
		return SQLITE_OK;
	p->shm = NULL;
	/* SQLite passes delete_flag only while it holds the database EXCLUSIVE:
	 * no other connection is attached.  Unlink while the DMS is still held. */
	if (delete_flag)
		unlink(s->path);
	smv_shm_free(s);
	return SQLITE_OK;
}

/* Does a connection other than this one hold a WAL read lock?
 * (SQLITE_FCNTL_EXTERNAL_READER; the read slots this connection holds
 * itself are not tested, and other connections of this process count.) */
static int smv_external_reader(smv_file *p, int *out)
{
	struct smv_shm *s = p->shm;

	*out = 0;
	if (!s)
		return SQLITE_OK;
	for (int i = 3; i < SMV_SHM_NLOCK; i++) {
		int e;

		if (s->slot[i])
			continue;
		e = sm_test(s->f, SMV_SHM_BASE + (uint64_t)i, 1, SM_LOCK_WRITE);
		if (e == -EBUSY) {
			*out = 1;
			return SQLITE_OK;
		}
		if (e)
			return SQLITE_IOERR_LOCK;
	}
	return SQLITE_OK;
}

static int smvFileControl(sqlite3_file *pf, int op, void *arg)
{
	smv_file *p = (smv_file *)pf;
	int rc;

	switch (op) {
	case SQLITE_FCNTL_LOCKSTATE:
		*(int *)arg = p->elock;
		return SQLITE_OK;
#ifdef SQLITE_FCNTL_LOCK_TIMEOUT
	case SQLITE_FCNTL_LOCK_TIMEOUT: {
		int old = p->timeout_ms;

		p->timeout_ms = *(int *)arg;
		*(int *)arg = old;
		return SQLITE_OK;
	}
#endif
#ifdef SQLITE_FCNTL_EXTERNAL_READER
	case SQLITE_FCNTL_EXTERNAL_READER:
		return smv_external_reader(p, (int *)arg);
#endif
	case SQLITE_FCNTL_VFSNAME:
		rc = p->real->pMethods->xFileControl(p->real, op, arg);
		if (rc == SQLITE_OK && *(char **)arg)
			*(char **)arg = sqlite3_mprintf("%s/%z", p->variant->vfs.zName, *(char **)arg);
		else
			*(char **)arg = sqlite3_mprintf("%s/unix", p->variant->vfs.zName);
		return SQLITE_OK;
	default:
		return p->real->pMethods->xFileControl(p->real, op, arg);
	}
}

/* --- method tables ------------------------------------------------------ */

static const sqlite3_io_methods smv_db_methods = {
	3,
	smvClose,
	smvRead,
	smvWrite,
	smvTruncate,
	smvSync,
	smvFileSize,
	smvLock,
	smvUnlock,
	smvCheckReservedLock,
	smvFileControl,
	smvSectorSize,
	smvDeviceCharacteristics,
	smvShmMap,
	smvShmLock,
	smvShmBarrier,
	smvShmUnmap,
	smvFetch,
	smvUnfetch,
};

static int smvPassShmMap(sqlite3_file *pf, int i, int sz, int ext, void volatile **pp)
{
	*pp = NULL;
	if (REAL(pf)->pMethods->iVersion < 2)
		return SQLITE_IOERR_SHMMAP;
	return REAL(pf)->pMethods->xShmMap(REAL(pf), i, sz, ext, pp);
}

static int smvPassShmLock(sqlite3_file *pf, int ofst, int n, int flags)
{
	if (REAL(pf)->pMethods->iVersion < 2)
		return SQLITE_IOERR_SHMLOCK;
	return REAL(pf)->pMethods->xShmLock(REAL(pf), ofst, n, flags);
}

static void smvPassShmBarrier(sqlite3_file *pf)
{
	if (REAL(pf)->pMethods->iVersion >= 2)
		REAL(pf)->pMethods->xShmBarrier(REAL(pf));
}

static int smvPassShmUnmap(sqlite3_file *pf, int delete_flag)
{
	if (REAL(pf)->pMethods->iVersion < 2)
		return SQLITE_OK;
	return REAL(pf)->pMethods->xShmUnmap(REAL(pf), delete_flag);
}

static const sqlite3_io_methods smv_pass_methods = {
	3,
	smvClose,
	smvRead,
	smvWrite,
	smvTruncate,
	smvSync,
	smvFileSize,
	smvPassLock,
	smvPassUnlock,
	smvPassCheckReservedLock,
	smvPassFileControl,
	smvSectorSize,
	smvDeviceCharacteristics,
	smvPassShmMap,
	smvPassShmLock,
	smvPassShmBarrier,
	smvPassShmUnmap,
	smvFetch,
	smvUnfetch,
};

static int smvClose(sqlite3_file *pf)
{
	smv_file *p = (smv_file *)pf;
	int rc;

	if (p->shm)
		smvShmUnmap(pf, 0);
	if (p->db) {
		smvUnlock(pf, SQLITE_LOCK_NONE);
		sm_close(p->db);
		p->db = NULL;
	}
	rc = p->real->pMethods->xClose(p->real);
	p->base.pMethods = NULL;
	return rc;
}

/* --- the VFS ------------------------------------------------------------ */

static int smvOpen(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *pf, int flags,
		   int *out_flags)
{
	smv_file *p = (smv_file *)pf;
	int oflags = 0;
	int rc;

	memset(p, 0, sizeof(*p));
	p->real = (sqlite3_file *)((char *)p + SMV_REAL_OFFSET);
	p->variant = (const struct smv_variant *)vfs;
	memset(p->real, 0, (size_t)smv_root->szOsFile);
	rc = smv_root->xOpen(smv_root, name, p->real, flags, &oflags);
	if (rc != SQLITE_OK) {
		if (p->real->pMethods)
			p->real->pMethods->xClose(p->real);
		return rc;
	}
	if (out_flags)
		*out_flags = oflags;
	if ((flags & SQLITE_OPEN_MAIN_DB) && name) {
		sm_options opt;
		int e;

		memset(&opt, 0, sizeof(opt));
		opt.size = sizeof(opt);
		opt.flags = p->variant->opt_flags;
		opt.tag = "sqlite";
		e = sm_open(name, (oflags & SQLITE_OPEN_READONLY) ? SM_RDONLY : SM_RDWR, &opt,
			    &p->db);
		if (e) {
			p->real->pMethods->xClose(p->real);
			return e == -ENOMEM ? SQLITE_NOMEM : SQLITE_CANTOPEN;
		}
		p->path = name;
		p->base.pMethods = &smv_db_methods;
	} else {
		p->base.pMethods = &smv_pass_methods;
	}
	return SQLITE_OK;
}

static int smvDelete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	return smv_root->xDelete(smv_root, name, sync_dir);
}

static int smvAccess(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	return smv_root->xAccess(smv_root, name, flags, out);
}

static int smvFullPathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return smv_root->xFullPathname(smv_root, name, n, out);
}

static void *smvDlOpen(sqlite3_vfs *vfs, const char *name)
{
	return smv_root->xDlOpen(smv_root, name);
}

static void smvDlError(sqlite3_vfs *vfs, int n, char *msg)
{
	smv_root->xDlError(smv_root, n, msg);
}

static void (*smvDlSym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	return smv_root->xDlSym(smv_root, h, sym);
}

static void smvDlClose(sqlite3_vfs *vfs, void *h)
{
	smv_root->xDlClose(smv_root, h);
}

static int smvRandomness(sqlite3_vfs *vfs, int n, char *out)
{
	return smv_root->xRandomness(smv_root, n, out);
}

static int smvSleep(sqlite3_vfs *vfs, int us)
{
	return smv_root->xSleep(smv_root, us);
}

static int smvCurrentTime(sqlite3_vfs *vfs, double *t)
{
	return smv_root->xCurrentTime(smv_root, t);
}

static int smvGetLastError(sqlite3_vfs *vfs, int n, char *msg)
{
	return smv_root->xGetLastError ? smv_root->xGetLastError(smv_root, n, msg) : 0;
}

static int smvCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *t)
{
	if (smv_root->iVersion >= 2 && smv_root->xCurrentTimeInt64)
		return smv_root->xCurrentTimeInt64(smv_root, t);
	double d;
	int rc = smv_root->xCurrentTime(smv_root, &d);
	*t = (sqlite3_int64)(d * 86400000.0);
	return rc;
}

#define SMV_VFS(zname)                                                              \
	{                                                                           \
		2, 0, 0, NULL, zname, NULL, smvOpen, smvDelete, smvAccess,          \
			smvFullPathname, smvDlOpen, smvDlError, smvDlSym, smvDlClose, \
			smvRandomness, smvSleep, smvCurrentTime, smvGetLastError,  \
			smvCurrentTimeInt64, NULL, NULL, NULL                       \
	}

static struct smv_variant smv_kernel = { SMV_VFS("safemap"), 0 };
#ifdef SM_OPT_TABLE_LOCKS
static struct smv_variant smv_table = { SMV_VFS("safemap-table"), SM_OPT_TABLE_LOCKS };
#endif

static pthread_once_t smv_once = PTHREAD_ONCE_INIT;

/* Once per process: find "unix" and size the VFSes after it, so that
 * threads registering at once never write what an open reads. */
static void smv_init(void)
{
	sqlite3_vfs *root = sqlite3_vfs_find("unix");

	if (!root)
		return;
	smv_kernel.vfs.szOsFile = (int)(SMV_REAL_OFFSET + (size_t)root->szOsFile);
	smv_kernel.vfs.mxPathname = root->mxPathname;
#ifdef SM_OPT_TABLE_LOCKS
	smv_table.vfs.szOsFile = smv_kernel.vfs.szOsFile;
	smv_table.vfs.mxPathname = root->mxPathname;
#endif
	smv_root = root;
}

int sqlite3_safemap_vfs_register(int make_default)
{
	int rc;

	pthread_once(&smv_once, smv_init);
	if (!smv_root)
		return SQLITE_ERROR;
	rc = sqlite3_vfs_register(&smv_kernel.vfs, make_default);
#ifdef SM_OPT_TABLE_LOCKS
	if (rc == SQLITE_OK)
		rc = sqlite3_vfs_register(&smv_table.vfs, 0);
#endif
	return rc;
}

#ifdef SAFEMAP_VFS_EXTENSION
int sqlite3_safemapvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi)
{
	int rc;

	(void)db;
	(void)pzErrMsg;
	SQLITE_EXTENSION_INIT2(pApi);
	rc = sqlite3_safemap_vfs_register(0);
	return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
#endif
