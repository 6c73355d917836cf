/* SPDX-License-Identifier: MIT */
/*
 * check.c - lockctl check: is a region free for a read or write lock now,
 * and if not, who holds it.  In kernel mode the kernel answers
 * (F_OFD_GETLK on the data file) and the holders are named from the table
 * and /proc/locks; in table-authority mode the table's held slots of live
 * owners answer, and plain fcntl locks the fence does not exclude are
 * noted.  Text or JSON output; exit status 1 on a conflict.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/string.h>

#include "lockctl.h"

static void help_check(void)
{
	printf("\nUsage:\n"
	       " %s check [options] PATH OFF LEN r|w\n"
	       "\nIs [OFF, OFF+LEN) free for a read (r) or write (w) lock now?  If not, name\n"
	       "every holder in the way (exit status 1).  Files used in table-authority mode\n"
	       "(SM_OPT_TABLE_LOCKS) are answered from the lock table, others by the kernel.\n"
	       "\nOptions:\n"
	       " -v, --verbose           say which authority answered (table or kernel)\n"
	       " -J, --json              JSON output\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

const struct option check_opts[] = {
	{ "verbose", no_argument, NULL, 'v' },
	{ "json", no_argument, NULL, 'J' },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* A lock in check's way (or, in table mode, one the table does not see). */
struct hit {
	long pid;
	char comm[32], tag[32], type[8];
	bool write, safemap;
	uint64_t start, len; /* len 0: to end of file */
};

struct hits {
	struct hit *v;
	size_t n, cap;
};

static void hit_slot(struct hits *h, const struct smt_slot *s)
{
	GROW(h->v, h->n, h->cap);
	struct hit *x = &h->v[h->n++];
	memset(x, 0, sizeof(*x));
	x->pid = s->pid;
	strlcpy(x->comm, s->comm, sizeof(x->comm));
	strlcpy(x->tag, s->tag, sizeof(x->tag));
	strlcpy(x->type, "SAFEMAP", sizeof(x->type));
	x->write = s->mode == SMT_MODE_WRITE;
	x->safemap = true;
	x->start = s->off;
	x->len = s->len;
}

static void hit_klock(struct hits *h, const struct klock *k)
{
	GROW(h->v, h->n, h->cap);
	struct hit *x = &h->v[h->n++];
	memset(x, 0, sizeof(*x));
	x->pid = owner_of(k);
	comm_of(x->pid, x->comm, sizeof(x->comm));
	strlcpy(x->type, k->type, sizeof(x->type));
	x->write = k->write;
	x->start = k->start;
	x->len = k->len;
}

static void json_hits(const char *name, const struct hits *h)
{
	printf(",\n  \"%s\": [", name);
	for (size_t i = 0; i < h->n; i++) {
		const struct hit *x = &h->v[i];
		printf("%s\n    {\"pid\": %ld, \"command\": ", i ? "," : "", x->pid);
		if (*x->comm)
			json_str(x->comm);
		else
			printf("null");
		printf(", \"tag\": ");
		if (*x->tag)
			json_str(x->tag);
		else
			printf("null");
		printf(", \"type\": \"%s\", \"mode\": \"%s\", \"start\": %llu, \"end\": ", x->type,
		       x->write ? "WRITE" : "READ", (unsigned long long)x->start);
		if (x->len)
			printf("%llu}", (unsigned long long)(x->start + x->len - 1));
		else
			printf("null}");
	}
	printf("%s]", h->n ? "\n  " : "");
}

static void print_hit(const struct hit *x)
{
	if (x->safemap) {
		printf("held by pid %ld (%s)%s%s%s: %s ", x->pid, x->comm, *x->tag ? " tag \"" : "", x->tag,
		       *x->tag ? "\"" : "", x->write ? "WRITE" : "READ");
		print_range(x->start, x->len);
		printf("\n");
		return;
	}
	if (x->pid > 0)
		printf("held by pid %ld (%s): %s %s ", x->pid, *x->comm ? x->comm : "?", x->type,
		       x->write ? "WRITE" : "READ");
	else
		printf("held by an unknown process: %s %s ", x->type, x->write ? "WRITE" : "READ");
	print_range(x->start, x->len);
	printf(" (without safemap)\n");
}

/* One check: the question, and what the table and the kernel answered. */
struct check {
	const char *path;
	uint64_t off, len;
	bool write;
	bool tm;         /* owners attached in table-authority mode */
	int trc;         /* opening the table: 0, or why not */
	const char *which; /* the path at fault if trc < 0 */
	char tpath[PATH_MAX];
	struct stat st;
	struct flock fl; /* the kernel's answer (F_UNLCK: free, or not asked) */
	struct entries e;
	struct klocks kl;
	struct hits in_way, unfenced;
};

static void check_free(struct check *c)
{
	entries_free(&c->e);
	free(c->in_way.v);
	free(c->unfenced.v);
	klocks_free(&c->kl);
}

/* Read the table and, in kernel mode, ask the kernel. */
static int check_probe(struct check *c)
{
	struct smt_table t = { .fd = -1 };
	int fd;

	if ((fd = open_regular(c->path, O_RDONLY, &c->st)) < 0) {
		warnx_("%s: %s", c->path, describe(fd));
		return EXIT_ERROR;
	}
	c->trc = open_table(c->path, false, &c->st, &t, c->tpath, sizeof(c->tpath), &c->which);
	if (c->trc == 0) {
		c->tm = table_mode(&t);
		read_entries(&t, &c->e, true); /* stale ones too: bound ones still hold */
		smt_detach(&t);
	}
	memset(&c->fl, 0, sizeof(c->fl));
	c->fl.l_type = F_UNLCK;
	if (!c->tm) {
		/* kernel mode: the kernel decides */
		c->fl.l_type = c->write ? F_WRLCK : F_RDLCK;
		c->fl.l_whence = SEEK_SET;
		c->fl.l_start = (off_t)c->off;
		c->fl.l_len = (off_t)c->len;
		if (fcntl(fd, F_OFD_GETLK, &c->fl) < 0) {
			warnx_("%s: F_OFD_GETLK: %s", c->path, strerror(errno));
			close(fd);
			return EXIT_ERROR;
		}
	}
	close(fd);
	return 0;
}

/* The holders in the way: in both modes a dead process's bound change
 * (a stale entry that stays held until a recovery pass redoes it, against
 * readers too); in table mode the held slots of live owners (other stale
 * ones are free at the next conflict); in kernel mode, if the kernel found
 * a conflict, safemap's live entries, then the kernel locks that are not
 * theirs (with owners found for OFD locks). */
static int check_holders(struct check *c)
{
	for (size_t i = 0; i < c->e.n; i++) {
		const struct smt_slot *s = &c->e.v[i];
		bool live = !strcmp(c->e.state[i], "held") || !strcmp(c->e.state[i], "pending");
		bool fenced = !strcmp(c->e.state[i], "stale") && SMT_STATE(s->state) == SMT_HELD &&
			      (s->flags & SMT_SF_BOUND);
		if (!overlaps(s->off, s->len, c->off, c->len))
			continue;
		if (fenced || (live && (c->tm || c->fl.l_type != F_UNLCK) && (c->write || s->mode == SMT_MODE_WRITE)))
			hit_slot(&c->in_way, s);
	}
	if (!c->tm && c->fl.l_type == F_UNLCK)
		return 0;
	kernel_locks(&c->kl, &(struct fileid){ c->st.st_dev, c->st.st_ino }, 1);
	for (size_t i = 0; i < c->kl.n; i++) {
		const struct klock *k = &c->kl.v[i];
		if (k->dev != c->st.st_dev || k->ino != c->st.st_ino || k->blocked ||
		    !overlaps(k->start, k->len, c->off, c->len) || (!c->write && !k->write))
			continue;
		if (!c->tm && c->trc != 0 && tm_kind(k) == TM_FENCE) {
			/* a table-mode owner's fence, and no table to ask */
			warnx_("%s: owners are attached in table-authority mode, but %s: %s", c->path, c->which,
			       describe(c->trc));
			return EXIT_ERROR;
		}
		if (!c->tm && !covered(k, &c->e))
			hit_klock(&c->in_way, k);
		else if (c->tm && tm_kind(k) == TM_FOREIGN)
			hit_klock(&c->unfenced, k); /* the table does not see it */
	}
	return 0;
}

/* The answer as one JSON object; the path absolute, as list -J shows it. */
static void check_json(const struct check *c, bool busy)
{
	char *abs = realpath(c->path, NULL);

	printf("{\n  \"path\": ");
	json_str(abs ? abs : c->path);
	free(abs);
	printf(",\n  \"start\": %llu,\n  \"end\": %llu,\n  \"mode\": \"%s\",\n  \"authority\": \"%s\",\n"
	       "  \"free\": %s",
	       (unsigned long long)c->off, (unsigned long long)(c->off + c->len - 1), c->write ? "WRITE" : "READ",
	       c->tm ? "table" : "kernel", busy ? "false" : "true");
	json_hits("holders", &c->in_way);
	if (c->tm)
		json_hits("unexcluded", &c->unfenced);
	printf("\n}\n");
}

/* The fence keeps plain fcntl writers out, not readers: say so on stderr. */
static void note_unfenced(const struct hit *x)
{
	fprintf(stderr, "%s: note: pid %ld (%s) holds a plain %s %s lock on ", prog, x->pid,
		*x->comm ? x->comm : "?", x->type, x->write ? "WRITE" : "READ");
	fflush(stdout);
	if (x->len)
		fprintf(stderr, "%llu-%llu", (unsigned long long)x->start,
			(unsigned long long)(x->start + x->len - 1));
	else
		fprintf(stderr, "%llu-EOF", (unsigned long long)x->start);
	fprintf(stderr, ": table mode does not exclude it\n");
}

static void check_text(const struct check *c, bool busy, bool verbose)
{
	if (verbose)
		printf("authority: %s\n", c->tm ? "table (table-authority mode: held slots of live owners)"
					      : "kernel (F_OFD_GETLK on the data file)");
	if (!busy)
		printf("free\n");
	for (size_t i = 0; i < c->in_way.n; i++)
		print_hit(&c->in_way.v[i]);
	if (busy && !c->in_way.n) {
		/* gone between the probe and the listing, or hidden from us */
		printf("held: %s lock on ", c->fl.l_type == F_WRLCK ? "WRITE" : "READ");
		print_range((uint64_t)c->fl.l_start, (uint64_t)c->fl.l_len);
		printf(" (holder not found; see lockctl list %s)\n", c->path);
	}
	for (size_t i = 0; i < c->unfenced.n; i++)
		note_unfenced(&c->unfenced.v[i]);
}

int cmd_check(int argc, char **argv)
{
	struct check c = { 0 };
	bool verbose = false, json = false;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, ":vJh", check_opts, NULL)) != -1) {
		switch (opt) {
		case 'v': verbose = true; break;
		case 'J': json = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_check(); return 0;
		default: bad_option(opt, argv);
		}
	}
	argv += optind;
	if (argc - optind != 4)
		usage_err("check needs PATH OFF LEN r|w");
	parse_region(argv, &c.off, &c.len, &c.write);
	c.path = argv[0];
	if ((rc = check_probe(&c)) == 0 && (rc = check_holders(&c)) == 0) {
		/* kernel mode: the kernel's answer, or a dead process's bound
		 * change that still holds the range */
		bool busy = c.in_way.n > 0 || (!c.tm && c.fl.l_type != F_UNLCK);
		if (json)
			check_json(&c, busy);
		else
			check_text(&c, busy, verbose);
		rc = busy ? EXIT_CONFLICT : 0;
	}
	check_free(&c);
	return rc;
}
