/* SPDX-License-Identifier: MIT */
/*
 * log.c - lockctl log: a safemap log's retained range (first retained LSN,
 * committed and appended tails), the bytes retained against the bytes the
 * file still holds on disk (trimmed space is given back by hole punching),
 * and the entries of the header's bindings area.
 *
 * It reads the header page with pread and takes none of the log's locks:
 * for display, like the rest of lockctl.  A slot is {u64 value, u64
 * ~value}; one that stays torn (a writer racing the read) is shown as
 * such.  The layout is lib/log.h's.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lockctl.h"
#include "log.h"

static void help_log(void)
{
	printf("\nUsage:\n"
	       " %s log [options] PATH\n"
	       "\nThe log's retained range: the first retained record (the trim point), the\n"
	       "committed and appended tails, the bytes retained against the bytes the file\n"
	       "holds on disk (trimmed space is given back), and the bindings of data files\n"
	       "to its records.  Reads the header without taking the log's locks.\n"
	       "\nOptions:\n"
	       " -J, --json              JSON output\n"
	       " -b, --bytes             print sizes in bytes rather than in human-readable form\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

const struct option log_opts[] = {
	{ "json", no_argument, NULL, 'J' },
	{ "bytes", no_argument, NULL, 'b' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static uint64_t le64_at(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static uint32_t le32_at(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

/* A slot of the header h: false if it is torn. */
static bool slot(const unsigned char *h, size_t at, uint64_t *v)
{
	uint64_t x = le64_at(h + at), y = le64_at(h + at + 8);

	if (x == 0 && y == 0 && at >= SLOT_FIRST) {
		*v = LOG_HDR; /* a log from before trimming: never trimmed */
		return true;
	}
	*v = x;
	return x == ~y;
}

struct loginfo {
	uint32_t version, hdr_size;
	uint64_t first, committed, tail, punched;
	uint64_t size, allocated; /* st_size, st_blocks * 512 */
	bool torn;
};

struct binding {
	unsigned idx;
	bool held;   /* BIND_HELD (else BIND_IDLE: claimed, nothing bound) */
	bool alive;  /* its owner's lock byte is held */
	uint64_t seq, dev, ino, first, high, pid;
};

/* Read the header until its slots are whole (a few tries: writers store
 * them in place). */
static int read_header(int fd, unsigned char *h, struct loginfo *li)
{
	for (int tries = 0; tries < 100; tries++) {
		ssize_t n = pread(fd, h, LOG_HDR, 0);
		if (n < 0)
			return -errno;
		if (n != LOG_HDR || memcmp(h, LOG_MAGIC, 8) != 0)
			return -EINVAL;
		li->version = le32_at(h + 8);
		li->hdr_size = le32_at(h + 12);
		if (li->version != LOG_VERSION || li->hdr_size != LOG_HDR)
			return -EINVAL;
		li->torn = !slot(h, SLOT_FIRST, &li->first) | !slot(h, SLOT_COMMITTED, &li->committed) |
			   !slot(h, SLOT_TAIL, &li->tail) | !slot(h, SLOT_PUNCHED, &li->punched);
		if (!li->torn)
			return 0;
		usleep(1000);
	}
	return 0; /* shown torn */
}

/* The bindings area's claimed entries; whether each owner is alive: its
 * owner holds a write lock on byte MUTEX_BIND(i) of the log. */
static size_t read_bindings(int fd, const unsigned char *h, struct binding *b)
{
	size_t n = 0;

	for (unsigned i = 0; i < BIND_SLOTS; i++) {
		const unsigned char *e = h + BIND_AREA + (size_t)i * BIND_SLOT;
		uint64_t st = le64_at(e + 8 * BE_STATE);
		if (st != BIND_HELD && st != BIND_IDLE)
			continue;
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
				    .l_start = (off_t)MUTEX_BIND(i), .l_len = 1 };
		b[n] = (struct binding){
			.idx = i, .held = st == BIND_HELD,
			.alive = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK,
			.seq = le64_at(e + 8 * BE_SEQ), .dev = le64_at(e + 8 * BE_DEV),
			.ino = le64_at(e + 8 * BE_INO), .first = le64_at(e + 8 * BE_FIRST),
			.high = le64_at(e + 8 * BE_HIGH), .pid = le64_at(e + 8 * BE_PID),
		};
		n++;
	}
	return n;
}

/* n bytes, as lsblk prints sizes (or exactly, with --bytes). */
static const char *size_str(uint64_t n, bool bytes, char *buf, size_t len)
{
	static const char units[] = "BKMGTPE";
	double v = (double)n;
	int u = 0;

	if (bytes || n < 1024) {
		snprintf(buf, len, "%llu%s", (unsigned long long)n, bytes ? "" : "B");
		return buf;
	}
	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f%c", v, units[u]);
	return buf;
}

static void print_text(const char *path, const struct loginfo *li, const struct binding *b, size_t nb,
		       bool bytes)
{
	char s1[32], s2[32], s3[32];
	uint64_t retained = li->committed > li->first ? li->committed - li->first : 0;
	uint64_t trimmed = li->first - LOG_HDR;

	printf("log:          %s\n", path);
	printf("format:       version %u, header %u bytes%s\n", li->version, li->hdr_size,
	       li->torn ? " (a slot stayed torn while read: a writer raced us, figures may be off)" : "");
	printf("first LSN:    %llu (the first retained record; the first ever is %u)\n",
	       (unsigned long long)li->first, LOG_HDR);
	printf("committed:    %llu (the committed tail: records below it are durable)\n",
	       (unsigned long long)li->committed);
	printf("appended:     %llu (%llu bytes appended, not yet committed)\n", (unsigned long long)li->tail,
	       (unsigned long long)(li->tail > li->committed ? li->tail - li->committed : 0));
	printf("retained:     %s in [%llu, %llu)\n", size_str(retained, bytes, s1, sizeof(s1)),
	       (unsigned long long)li->first, (unsigned long long)li->committed);
	printf("trimmed:      %s below the first LSN, given back up to %llu\n",
	       size_str(trimmed, bytes, s1, sizeof(s1)), (unsigned long long)li->punched);
	printf("on disk:      %s allocated, file size %s (%s reserved ahead of the tail)\n",
	       size_str(li->allocated, bytes, s1, sizeof(s1)), size_str(li->size, bytes, s2, sizeof(s2)),
	       size_str(li->size > li->tail ? li->size - li->tail : 0, bytes, s3, sizeof(s3)));
	size_t held = 0;
	for (size_t i = 0; i < nb; i++)
		held += b[i].held;
	printf("bindings:     %zu held, %zu idle (of %u entries)\n", held, nb - held, (unsigned)BIND_SLOTS);
	for (size_t i = 0; i < nb; i++) {
		printf("  entry %u: %s, owner pid %llu %s, data file dev %llx inode %llu", b[i].idx,
		       b[i].held ? "held" : "idle", (unsigned long long)b[i].pid,
		       b[i].alive ? "(alive)" : "(gone)", (unsigned long long)b[i].dev,
		       (unsigned long long)b[i].ino);
		if (b[i].held)
			printf(", LSNs %llu-%llu (trim stops at %llu)", (unsigned long long)b[i].first,
			       (unsigned long long)b[i].high, (unsigned long long)b[i].first);
		printf("\n");
	}
}

static void print_json(const char *path, const struct loginfo *li, const struct binding *b, size_t nb)
{
	char *abs = realpath(path, NULL);

	printf("{\n   \"log\": {\n      \"path\": ");
	json_str(abs ? abs : path);
	free(abs);
	printf(",\n      \"version\": %u,\n      \"torn\": %s,\n", li->version, li->torn ? "true" : "false");
	printf("      \"first\": %llu,\n      \"committed\": %llu,\n      \"appended\": %llu,\n",
	       (unsigned long long)li->first, (unsigned long long)li->committed, (unsigned long long)li->tail);
	printf("      \"retained\": %llu,\n      \"punched\": %llu,\n",
	       (unsigned long long)(li->committed > li->first ? li->committed - li->first : 0),
	       (unsigned long long)li->punched);
	printf("      \"size\": %llu,\n      \"allocated\": %llu,\n      \"bindings\": [",
	       (unsigned long long)li->size, (unsigned long long)li->allocated);
	for (size_t i = 0; i < nb; i++)
		printf("%s\n         {\"entry\": %u, \"state\": \"%s\", \"pid\": %llu, \"alive\": %s, "
		       "\"dev\": %llu, \"inode\": %llu, \"first\": %llu, \"high\": %llu}",
		       i ? "," : "", b[i].idx, b[i].held ? "held" : "idle", (unsigned long long)b[i].pid,
		       b[i].alive ? "true" : "false", (unsigned long long)b[i].dev, (unsigned long long)b[i].ino,
		       (unsigned long long)b[i].first, (unsigned long long)b[i].high);
	printf("%s]\n   }\n}\n", nb ? "\n      " : "");
}

int cmd_log(int argc, char **argv)
{
	unsigned char *h;
	struct loginfo li = { 0 };
	struct binding b[BIND_SLOTS];
	struct stat st;
	bool json = false, bytes = false;
	size_t nb;
	int c, rc, fd;

	while ((c = getopt_long(argc, argv, ":Jbh", log_opts, NULL)) != -1) {
		switch (c) {
		case 'J': json = true; break;
		case 'b': bytes = true; break;
		case 'h': help_log(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("log needs one PATH");
	argv += optind;
	if ((fd = open_regular(argv[0], O_RDONLY, &st)) < 0) {
		warnx_("%s: %s", argv[0], describe(fd));
		return EXIT_ERROR;
	}
	if (!(h = malloc(LOG_HDR)))
		errx_(EXIT_ERROR, "out of memory");
	if ((rc = read_header(fd, h, &li)) < 0) {
		warnx_("%s: %s", argv[0], rc == -EINVAL ? "not a safemap log (no log header)" : describe(rc));
		free(h);
		close(fd);
		return EXIT_ERROR;
	}
	li.size = (uint64_t)st.st_size;
	li.allocated = (uint64_t)st.st_blocks * 512;
	nb = read_bindings(fd, h, b);
	if (json)
		print_json(argv[0], &li, b, nb);
	else
		print_text(argv[0], &li, b, nb, bytes);
	free(h);
	close(fd);
	return 0;
}
