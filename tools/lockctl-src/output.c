/* SPDX-License-Identifier: MIT */
/*
 * output.c - list's columns and rows, as in util-linux lslocks: the column
 * table ({name, width hint, flags, JSON type, help}), -o parsing, and the
 * libsmartcols table every row goes into (the library lslocks uses, so
 * --raw, --json and truncation behave the same).  Each column declares its
 * JSON type: numbers never print as words, an empty cell is null.  Also the
 * row of a kernel lock (with its owner found) and a JSON string writer for
 * check's hand-made JSON.
 */
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>

#include <bsd/string.h>

#include "lockctl.h"

const struct colinfo infos[NCOLS] = {
	[COL_PATH] = { "PATH", 0.3, SCOLS_FL_TRUNC, SCOLS_JSON_STRING, "absolute path of the locked file" },
	[COL_START] = { "START", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "first byte of the region" },
	[COL_END] = { "END", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER,
		      "last byte of the region (EOF, in JSON null: to the end of the file)" },
	[COL_SIZE] = { "SIZE", 4, SCOLS_FL_RIGHT, SCOLS_JSON_STRING,
		       "size of the region (empty: to the end of the file)" },
	[COL_MODE] = { "MODE", 5, 0, SCOLS_JSON_STRING, "READ or WRITE" },
	[COL_STATE] = { "STATE", 7, 0, SCOLS_JSON_STRING,
			"held, pending, waiting (blocked), stale (its holder is gone), unlocked (an SM_NOLOCK "
			"mapping: coordination memory, no lock), or foreign-read (table mode: a plain fcntl "
			"reader the fence does not exclude)" },
	[COL_PID] = { "PID", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER,
		      "holder's pid (-1: an OFD lock whose owner could not be found)" },
	[COL_COMMAND] = { "COMMAND", 15, 0, SCOLS_JSON_STRING, "holder's program name" },
	[COL_TAG] = { "TAG", 10, 0, SCOLS_JSON_STRING, "holder's safemap tag" },
	[COL_SINCE] = { "SINCE", 19, 0, SCOLS_JSON_STRING, "when the region was taken (safemap holders)" },
	[COL_TYPE] = { "TYPE", 7, 0, SCOLS_JSON_STRING,
		       "SAFEMAP (from the table), or the kernel lock type OFDLCK/POSIX/FLOCK" },
	[COL_TID] = { "TID", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "holder's thread id" },
	[COL_INODE] = { "INODE", 5, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER, "inode number" },
	[COL_MAJMIN] = { "MAJ:MIN", 6, 0, SCOLS_JSON_STRING, "major:minor device number" },
	[COL_M] = { "M", 1, 0, SCOLS_JSON_BOOLEAN, "mandatory state of the lock: 0 (none), 1 (set)" },
	[COL_BLOCKER] = { "BLOCKER", 0, SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER,
			  "pid of the process blocking a waiting lock" },
};

struct ctl ctl;

static int column_id(const char *name, size_t len)
{
	for (int i = 0; i < NCOLS; i++)
		if (strlen(infos[i].name) == len && strncasecmp(infos[i].name, name, len) == 0)
			return i;
	usage_err("unknown column: %.*s", (int)len, name);
}

/* -o LIST, or -o +LIST to add to the defaults */
void parse_columns(const char *list)
{
	if (*list == '+')
		list++;
	else
		ctl.ncolumns = 0;
	while (*list) {
		const char *end = strchrnul(list, ',');
		if (end == list)
			usage_err("empty column name in --output");
		if (ctl.ncolumns >= ARRAY_SIZE(ctl.columns))
			usage_err("too many columns specified, the limit is %zu", ARRAY_SIZE(ctl.columns));
		ctl.columns[ctl.ncolumns++] = column_id(list, (size_t)(end - list));
		list = *end ? end + 1 : end;
	}
}

void list_columns(void)
{
	for (int i = 0; i < NCOLS; i++)
		printf("%10s  %s\n", infos[i].name, infos[i].help);
}

/* Sizes as lslocks prints them: 10B, 4K, 1.5M. */
static void human_size(uint64_t n, char *buf, size_t size)
{
	static const char units[] = "BKMGTPE";
	int exp = 0;

	while (exp < 6 && n >= (1ull << (10 * (exp + 1))))
		exp++;
	if (!exp) {
		snprintf(buf, size, "%lluB", (unsigned long long)n);
		return;
	}
	uint64_t unit = 1ull << (10 * exp), whole = n / unit;
	uint64_t tenth = ((n % unit) * 10 + unit / 2) / unit;
	if (tenth == 10) {
		whole++;
		tenth = 0;
	}
	if (tenth)
		snprintf(buf, size, "%llu.%llu%c", (unsigned long long)whole, (unsigned long long)tenth, units[exp]);
	else
		snprintf(buf, size, "%llu%c", (unsigned long long)whole, units[exp]);
}

static void format_since(uint64_t ns, char *buf, size_t size)
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;

	if (!localtime_r(&t, &tm)) {
		buf[0] = '\0';
		return;
	}
	if (!ctl.json) {
		strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm);
		return;
	}
	/* ISO 8601 with the zone: 2026-11-26T01:02:03+01:00 */
	char z[8];
	strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
	strftime(z, sizeof(z), "%z", &tm);
	if (strlen(z) == 5)
		snprintf(buf + strlen(buf), size - strlen(buf), "%.3s:%s", z, z + 3);
}

/* The text of column col for row r: a string of the row's, or buf filled
 * in; empty means nothing to say (JSON null). */
static const char *cell(const struct row *r, int col, char *buf, size_t n)
{
	buf[0] = '\0';
	switch (col) {
	case COL_PATH: return r->path;
	case COL_MODE: return r->mode;
	case COL_STATE: return r->state;
	case COL_COMMAND: return r->comm;
	case COL_TAG: return r->tag;
	case COL_TYPE: return r->type;
	case COL_START: snprintf(buf, n, "%llu", (unsigned long long)r->start); break;
	case COL_END:
		/* a number or, to end of file, EOF (JSON: null) */
		if (r->len)
			snprintf(buf, n, "%llu", (unsigned long long)(r->start + r->len - 1));
		else if (!ctl.json)
			strlcpy(buf, "EOF", n);
		break;
	case COL_SIZE:
		if (r->len && ctl.bytes)
			snprintf(buf, n, "%llu", (unsigned long long)r->len);
		else if (r->len)
			human_size(r->len, buf, n);
		break;
	case COL_PID: snprintf(buf, n, "%ld", r->pid); break;
	case COL_TID:
		if (r->tid)
			snprintf(buf, n, "%ld", r->tid);
		break;
	case COL_SINCE:
		if (r->since)
			format_since(r->since, buf, n);
		break;
	case COL_INODE: snprintf(buf, n, "%llu", (unsigned long long)r->ino); break;
	case COL_MAJMIN:
		if (ctl.json || ctl.raw)
			snprintf(buf, n, "%u:%u", major(r->dev), minor(r->dev));
		else
			snprintf(buf, n, "%3u:%-3u", major(r->dev), minor(r->dev));
		break;
	case COL_M: strlcpy(buf, r->mandatory ? "1" : "0", n); break;
	case COL_BLOCKER:
		if (r->blocker)
			snprintf(buf, n, "%ld", r->blocker);
		break;
	}
	return buf;
}

void add_row(struct libscols_table *tb, const struct row *r)
{
	struct libscols_line *ln;

	if (ctl.pid && r->pid != ctl.pid)
		return;
	if (!(ln = scols_table_new_line(tb, NULL)))
		errx_(EXIT_ERROR, "out of memory");
	for (size_t i = 0; i < ctl.ncolumns; i++) {
		char buf[64];
		const char *v = cell(r, ctl.columns[i], buf, sizeof(buf));
		/* empty: nothing to say (JSON null) */
		if (scols_line_set_data(ln, i, v && *v ? v : NULL) < 0)
			errx_(EXIT_ERROR, "out of memory");
	}
}

struct libscols_table *new_table(void)
{
	struct libscols_table *tb = scols_new_table();

	if (!tb)
		errx_(EXIT_ERROR, "out of memory");
	scols_table_enable_raw(tb, ctl.raw);
	scols_table_enable_json(tb, ctl.json);
	scols_table_enable_noheadings(tb, ctl.noheadings);
	scols_table_set_name(tb, "locks");
	for (size_t i = 0; i < ctl.ncolumns; i++) {
		const struct colinfo *c = &infos[ctl.columns[i]];
		int flags = c->flags;
		if (ctl.notrunc)
			flags &= ~SCOLS_FL_TRUNC;
		struct libscols_column *cl = scols_table_new_column(tb, c->name, c->whint, flags);
		if (!cl)
			errx_(EXIT_ERROR, "out of memory");
		if (ctl.json)
			scols_column_set_json_type(cl, ctl.columns[i] == COL_SIZE && ctl.bytes ? SCOLS_JSON_NUMBER
											: c->json);
	}
	return tb;
}

/* Rows of kernel lock k (on the file shown as path). */
void kernel_row(struct libscols_table *tb, const struct klock *k, const char *path, const char *state)
{
	char comm[32];
	long pid = owner_of(k);

	comm_of(pid, comm, sizeof(comm));
	struct row r = { .path = path, .type = k->type, .mode = k->write ? "WRITE" : "READ",
			 .state = state ? state : k->blocked ? "waiting" : "held", .comm = comm, .tag = "",
			 .start = k->start, .len = k->len, .pid = pid, .dev = k->dev, .ino = k->ino,
			 .mandatory = k->mandatory, .blocker = k->blocked ? blocker_of(k) : 0 };
	add_row(tb, &r);
}

/* A JSON string, escaped */
void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}
