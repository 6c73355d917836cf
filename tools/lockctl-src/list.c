/* SPDX-License-Identifier: MIT */
/*
 * list.c - lockctl list: the regions held in each file given (or, without
 * one, in every file the kernel holds locks on, as lslocks), from the
 * file's lock table joined with /proc/locks: safemap's entries as SAFEMAP
 * rows, kernel locks that are not theirs with their owner found, and on a
 * network filesystem the locks of other hosts.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/stdlib.h>

#include "lockctl.h"

/* quiet: a file found by scanning (it may vanish or be rewritten while we
 * look): no message, and a table we cannot read leaves the kernel's rows. */
static int list_file(struct libscols_table *tb, const struct klocks *kl, const char *path, bool quiet)
{
	struct smt_table t;
	struct stat st;
	struct entries e = { 0 };
	char tpath[PATH_MAX], *abs = realpath(path, NULL);
	const char *which, *shown = abs ? abs : path;
	int rc;

	rc = open_table(path, false, &st, &t, tpath, sizeof(tpath), &which);
	if (rc == -E_NOTABLE || (quiet && rc < 0 && which == tpath))
		rc = 0, t.fd = -1; /* no (usable) table: the kernel's locks only */
	if (rc < 0) {
		if (!quiet)
			warnx_("%s: %s", which, describe(rc));
		free(abs);
		return quiet ? 0 : EXIT_ERROR;
	}
	if (!quiet)
		netfs_note(path);
	if (t.fd >= 0) {
		read_entries(&t, &e, true);
		table_rows(tb, &t, &e, &st, shown);
	}
	/* in table mode no slot has a kernel lock: what the kernel shows is
	 * the owners' fence and identity locks (not holders: hidden, see
	 * lockctl info) and locks of programs without safemap */
	bool tm = table_mode(&t);
	for (size_t i = 0; i < kl->n; i++) {
		const struct klock *k = &kl->v[i];
		if (k->dev != st.st_dev || k->ino != st.st_ino)
			continue;
		if (tm ? tm_kind(k) != TM_FOREIGN : covered(k, &e))
			continue;
		kernel_row(tb, k, shown, tm ? tm_state(k) : NULL);
	}
	remote_rows(tb, kl, &e, path, shown);
	entries_free(&e);
	free(abs);
	if (t.fd >= 0)
		smt_detach(&t);
	return 0;
}

/* Every file the kernel holds locks on, as lslocks does: paths are found
 * through /proc/PID/fd (OFD locks report pid -1, so every process's
 * descriptors are searched). */
struct lockedfile {
	dev_t dev;
	ino_t ino;
	char *path;
};

/* The files asked for, and how many. */
struct wanted_files {
	struct lockedfile *v;
	size_t n;
};

/* A descriptor's file, if it is one of the files asked for and has a
 * path still. */
static void path_of_fd(const char *link, long pid, void *arg)
{
	struct wanted_files *w = arg;
	char target[PATH_MAX];
	struct stat st;
	ssize_t len;

	(void)pid;
	if (stat(link, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	for (size_t i = 0; i < w->n; i++) {
		struct lockedfile *f = &w->v[i];
		if (f->path || f->dev != st.st_dev || f->ino != st.st_ino)
			continue;
		if ((len = readlink(link, target, sizeof(target) - 1)) > 0) {
			target[len] = '\0';
			if (target[0] == '/' && !strstr(target, " (deleted)"))
				f->path = strdup(target);
		}
	}
}

static void find_paths(struct lockedfile *v, size_t n)
{
	struct wanted_files w = { v, n };

	ctl.unreadable += for_each_fd("fd", path_of_fd, &w);
}

static int list_all(struct libscols_table *tb, const struct klocks *kl)
{
	struct lockedfile *v = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	for (size_t k = 0; k < kl->n; k++) {
		bool seen = false;
		for (size_t i = 0; i < n && !seen; i++)
			seen = v[i].dev == kl->v[k].dev && v[i].ino == kl->v[k].ino;
		if (seen)
			continue;
		GROW(v, n, cap);
		v[n++] = (struct lockedfile){ kl->v[k].dev, kl->v[k].ino, NULL };
	}
	find_paths(v, n);
	for (size_t i = 0; i < n; i++) {
		/* safemap's own liveness bytes make a lock table look locked:
		 * a file whose locks all lie there is a table, not data */
		size_t nk = 0, live = 0;
		for (size_t k = 0; k < kl->n; k++) {
			if (kl->v[k].dev != v[i].dev || kl->v[k].ino != v[i].ino)
				continue;
			nk++;
			live += kl->v[k].start >= SMT_LIVE_BASE;
		}
		if (nk && live == nk) {
			free(v[i].path);
			continue;
		}
		if (v[i].path) {
			rc |= list_file(tb, kl, v[i].path, true);
			free(v[i].path);
			continue;
		}
		if (ctl.noinaccessible)
			continue; /* -i: no path, no row (lslocks) */
		for (size_t k = 0; k < kl->n; k++)
			if (kl->v[k].dev == v[i].dev && kl->v[k].ino == v[i].ino)
				kernel_row(tb, &kl->v[k], "", NULL);
	}
	free(v);
	if (ctl.unreadable && !ctl.noinaccessible)
		warnx_("note: the open files of %u processes could not be read (not permitted): "
		       "their locks show no PATH (-i hides them)",
		       ctl.unreadable);
	return rc;
}

static void help_list(void)
{
	printf("\nUsage:\n"
	       " %s list [options] [PATH...]\n"
	       "\nRegions held in each PATH (without PATH: in every locked file):\n"
	       "safemap's lock table joined with the kernel's locks.\n"
	       "\nOptions:\n"
	       " -o, --output <list>     output columns (+LIST adds to the defaults)\n"
	       "     --output-all        output all columns\n"
	       " -J, --json              JSON output\n"
	       " -r, --raw               raw output\n"
	       " -n, --noheadings        no headings\n"
	       " -b, --bytes             sizes in bytes\n"
	       " -u, --notruncate        do not truncate text in columns\n"
	       " -i, --noinaccessible    ignore locks whose file path cannot be found\n"
	       " -p, --pid <pid>         only the locks held by this process\n"
	       " -H, --list-columns      list the available columns\n"
	       "     --table-dir <dir>   tables live in DIR (default: $SAFEMAP_TABLE_DIR, or PATH.smlock)\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

const struct option list_opts[] = {
	{ "output", required_argument, NULL, 'o' },
	{ "output-all", no_argument, NULL, OPT_OUTPUT_ALL },
	{ "json", no_argument, NULL, 'J' },
	{ "raw", no_argument, NULL, 'r' },
	{ "noheadings", no_argument, NULL, 'n' },
	{ "bytes", no_argument, NULL, 'b' },
	{ "notruncate", no_argument, NULL, 'u' },
	{ "noinaccessible", no_argument, NULL, 'i' },
	{ "pid", required_argument, NULL, 'p' },
	{ "list-columns", no_argument, NULL, 'H' },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* list's options into ctl; true if --help or -H answered already. */
static bool list_options(int argc, char **argv)
{
	static const int excl[][EXCL_MAX] = { { 'J', 'r' } };
	int seen[ARRAY_SIZE(excl)] = { 0 }, c;
	bool list_cols = false;

	for (int i = 0; i < NDEFAULT; i++)
		ctl.columns[ctl.ncolumns++] = i;
	while ((c = getopt_long(argc, argv, ":o:JrnbuiHp:h", list_opts, NULL)) != -1) {
		check_exclusive(c, list_opts, excl, ARRAY_SIZE(excl), seen);
		switch (c) {
		case 'o': parse_columns(optarg); break;
		case OPT_OUTPUT_ALL:
			ctl.ncolumns = 0;
			for (int i = 0; i < NCOLS; i++)
				ctl.columns[ctl.ncolumns++] = i;
			break;
		case 'J': ctl.json = true; break;
		case 'r': ctl.raw = true; break;
		case 'n': ctl.noheadings = true; break;
		case 'b': ctl.bytes = true; break;
		case 'u': ctl.notrunc = true; break;
		case 'i': ctl.noinaccessible = true; break;
		case 'p': {
			const char *err = NULL;
			ctl.pid = (long)strtonum(optarg, 1, INT32_MAX, &err);
			if (err)
				usage_err("pid '%s' is %s", optarg, err);
			break;
		}
		case 'H': list_cols = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_list(); return true;
		default: bad_option(c, argv);
		}
	}
	if (list_cols)
		list_columns();
	return list_cols;
}

int cmd_list(int argc, char **argv)
{
	struct klocks kl = { 0 };
	size_t nids = 0;
	int rc = 0;

	if (list_options(argc, argv))
		return 0;
	struct libscols_table *tb = new_table();
	struct fileid *ids = xrealloc(NULL, (size_t)(argc - optind) + 1, sizeof(*ids));
	for (int i = optind; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0)
			ids[nids++] = (struct fileid){ st.st_dev, st.st_ino };
	}
	if (optind < argc && !nids)
		ids[nids++] = (struct fileid){ 0, 0 }; /* none of them: no lock */
	kernel_locks(&kl, ids, nids);
	free(ids);
	if (optind == argc)
		rc = list_all(tb, &kl);
	for (int i = optind; i < argc; i++)
		rc |= list_file(tb, &kl, argv[i], false);
	scols_print_table(tb);
	scols_unref_table(tb);
	klocks_free(&kl);
	return rc ? EXIT_ERROR : 0;
}
