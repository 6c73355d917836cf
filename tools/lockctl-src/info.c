/* SPDX-License-Identifier: MIT */
/*
 * info.c - lockctl info: a lock table's header, capacity, generation and
 * entries, and its consistency with the kernel: in kernel mode, whether
 * every held entry is backed by a kernel lock; in table-authority mode, the
 * owners, their fences, and the kernel locks the fence does not exclude.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lockctl.h"

static void help_info(void)
{
	printf("\nUsage:\n"
	       " %s info [options] PATH\n"
	       "\nThe table's path, format, capacity, generation, entries and lock mode.  In\n"
	       "kernel mode: whether every held entry is backed by a kernel lock; in table\n"
	       "mode: the owners, their fence, and the kernel locks the fence does not exclude.\n"
	       "\nOptions:\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

/* Every line of /proc/locks on file (dev, ino), each counted (the
 * deduplicated set of kernel_locks() would show many owners' identical
 * fences as one).  Racy against concurrent changes: for display. */
static void count_locks(dev_t dev, ino_t ino, uint64_t lo, uint64_t hi, bool write, unsigned *n)
{
	FILE *f = proc_open("/proc/locks");
	char *line = NULL;
	size_t cap = 0;

	*n = 0;
	while (f && getline(&line, &cap, f) > 0) {
		struct klock k;
		if (parse_lock_line(line, &k) && !k.blocked && k.dev == dev && k.ino == ino &&
		    k.write == write && k.start >= lo && k.start < hi && k.len == 1)
			++*n;
	}
	free(line);
	if (f)
		fclose(f);
}

/* info's table-mode part: owners, fences, and what the fence lets in. */
static void tm_info(const struct smt_table *t, const struct stat *st, unsigned held, unsigned stale)
{
	struct stat ts;
	struct klocks kl = { 0 };
	unsigned nown = 0, ids = 0, fences = 0, foreign = 0;

	/* owners: their liveness bytes (one write lock each, distinct) */
	if (fstat(t->fd, &ts) == 0)
		count_locks(ts.st_dev, ts.st_ino, SMT_LIVE_BASE, SMT_LIVE_BASE + SMT_MAX_OWNERS, true, &nown);
	count_locks(st->st_dev, st->st_ino, TM_BAND_MIN, TM_BAND_END, false, &ids);
	kernel_locks(&kl, &(struct fileid){ st->st_dev, st->st_ino }, 1);
	for (size_t i = 0; i < kl.n; i++) {
		int kind = tm_kind(&kl.v[i]);
		fences += kind == TM_FENCE;
		foreign += kind == TM_FOREIGN;
	}
	printf("owners:       %u attached in table mode\n", nown);
	printf("held slots:   %u of live owners, %u stale (free at the next conflict, or lockctl reap)\n",
	       held, stale);
	printf("fence:        %s over [0, 2^62), %u identity %s (table-mode owners' OFD read locks)\n",
	       fences ? "present" : "MISSING", ids, ids == 1 ? "lock" : "locks");
	printf("foreign:      %u kernel %s on the data file%s\n", foreign, foreign == 1 ? "lock" : "locks",
	       foreign ? " (plain fcntl readers are NOT excluded from table-mode writers):" : "");
	for (size_t i = 0; i < kl.n; i++) {
		const struct klock *k = &kl.v[i];
		if (tm_kind(k) != TM_FOREIGN)
			continue;
		long pid = owner_of(k);
		char comm[32];
		comm_of(pid, comm, sizeof(comm));
		printf("  pid %ld (%s): %s %s ", pid, *comm ? comm : "?", k->type, k->write ? "WRITE" : "READ");
		print_range(k->start, k->len);
		printf(" %s\n", tm_state(k));
	}
	klocks_free(&kl);
}

const struct option info_opts[] = {
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* What the slots hold, counted. */
struct slot_counts {
	uint32_t used; /* scan limit: the high water */
	unsigned held, stale, changing, invalid, backed;
	unsigned bound; /* of the stale: bound changes, held until redone */
};

/* Count the table's entries; in kernel mode, a live entry must be backed
 * by a kernel lock that conflicts with the opposite probe (fd: the data
 * file, -1 in table mode, where no slot has a kernel lock). */
static void count_slots(const struct smt_table *t, int fd, struct slot_counts *n)
{
	n->used = smt_scan_limit(t);
	for (uint32_t i = 0; i < n->used; i++) {
		struct smt_slot s;
		int rc = smt_snapshot(t, i, &s);
		if (rc == -EAGAIN)
			n->changing++;
		else if (rc < 0)
			n->invalid++;
		if (rc != 1)
			continue;
		if (strcmp(state_name(t, &s), "stale") == 0) {
			n->stale++;
			n->bound += SMT_STATE(s.state) == SMT_HELD && (s.flags & SMT_SF_BOUND);
			continue;
		}
		n->held++;
		struct flock fl = { .l_type = s.mode == SMT_MODE_WRITE ? F_RDLCK : F_WRLCK,
				    .l_whence = SEEK_SET, .l_start = (off_t)s.off, .l_len = (off_t)s.len };
		if (fd >= 0 && fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
			n->backed++;
	}
}

static void print_header(const struct smt_table *t, const char *tpath, const struct stat *st, bool tm)
{
	printf("table:        %s\n", tpath);
	printf("format:       version %u, %u slots of %u bytes, header %u bytes\n", t->hdr.version,
	       t->hdr.nslots, t->hdr.slot_size, t->hdr.header_size);
	printf("generation:   %llu\n", (unsigned long long)t->hdr.generation);
	/* the mode bytes: who is attached, in which lock mode */
	bool km = sm_ofd_test(t->fd, true, SMT_MODE_BYTE_KERNEL, 1) == -EBUSY;
	printf("mode:         %s\n", tm ? "table (SM_OPT_TABLE_LOCKS: the table decides exclusion; "
				     "plain fcntl readers are not fenced off)"
				  : km ? "kernel (OFD locks decide exclusion)" : "none attached");
	printf("data file:    dev %llx inode %llu%s\n", (unsigned long long)t->hdr.data_dev,
	       (unsigned long long)t->hdr.data_ino,
	       t->hdr.data_dev == (uint64_t)st->st_dev && t->hdr.data_ino == (uint64_t)st->st_ino
		       ? " (matches)"
		       : " (does NOT match: the next opener rebuilds the table)");
}

int cmd_info(int argc, char **argv)
{
	struct smt_table t;
	struct stat st, dst;
	struct slot_counts n = { 0 };
	char tpath[PATH_MAX];
	const char *which;
	int c, rc, fd;

	while ((c = getopt_long(argc, argv, ":h", info_opts, NULL)) != -1) {
		switch (c) {
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_info(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("info needs one PATH");
	argv += optind;
	if ((rc = open_table(argv[0], false, &st, &t, tpath, sizeof(tpath), &which)) < 0) {
		warnx_("%s: %s", which, describe(rc));
		return EXIT_ERROR;
	}
	bool tm = table_mode(&t);
	fd = tm ? -1 : open_regular(argv[0], O_RDONLY, &dst);
	count_slots(&t, fd, &n);
	if (fd >= 0)
		close(fd);
	print_header(&t, tpath, &st, tm);
	printf("slots used:   %u of %u (high water)\n", n.used, t.nslots);
	printf("entries:      %u held, %u stale, %u changing, %u invalid\n", n.held, n.stale, n.changing,
	       n.invalid);
	if (n.bound)
		printf("bound:        %u of the stale are a dead process's changes bound to a log: held "
		       "against everyone until a recovery pass redoes them (sm_redo_done); no reaping "
		       "frees them\n",
		       n.bound);
	if (tm)
		tm_info(&t, &st, n.held, n.stale);
	else
		printf("kernel locks: %u of %u held entries backed by a kernel lock%s\n", n.backed, n.held,
		       n.backed == n.held ? " (consistent)" : "");
	smt_detach(&t);
	netfs_note(argv[0]);
	return 0;
}
