/* SPDX-License-Identifier: MIT */
/*
 * wal.c - a tiny key-value store on safemap: writes go to a log, a
 * checkpoint publishes a snapshot object.
 *
 * DIR/wal.log is an sm_log of records "key=value"; DIR/snapshot is an
 * sm_object holding the LSN of the last record it includes (0: none), then
 * the state as "key=value\n" lines.  The state is the snapshot plus the log
 * records after that LSN (a later record for a key wins).  Any number of
 * processes may put, get and checkpoint at once:
 *
 *   - put appends one record and commits it (the commit is shared with
 *     concurrent putters: group commit);
 *   - checkpoint reads the state up to the last committed record X and
 *     publishes {X, state} as the new snapshot (SM_OBJECT_REPLACE): readers see the
 *     old or the new snapshot, whole, and either replays to the same state,
 *     since the records after X are still in the log.
 *
 *   wal DIR put KEY VALUE        set KEY
 *   wal DIR fill PREFIX N        put PREFIX0..PREFIX<N-1> = v0..v<N-1>
 *   wal DIR get KEY              print the value (exit 1 if none)
 *   wal DIR dump                 print every key=value, sorted
 *   wal DIR checkpoint           publish a snapshot
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safemap.h"

struct kv {
	char *key, *val;
};

struct state {
	struct kv *v;
	size_t n, cap;
	uint64_t last; /* LSN of the last log record applied, 0: none */
};

static char logpath[PATH_MAX], dirpath[PATH_MAX];

static int die(const char *what, int rc)
{
	fprintf(stderr, "wal: %s: %s\n", what, sm_strerror(rc));
	return 2;
}

static int set(struct state *s, const char *k, size_t kl, const char *v, size_t vl)
{
	char *nk, *nv = strndup(v, vl);

	if (!nv)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++)
		if (strlen(s->v[i].key) == kl && !memcmp(s->v[i].key, k, kl)) {
			free(s->v[i].val);
			s->v[i].val = nv;
			return 0;
		}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct kv *p = realloc(s->v, cap * sizeof(*p));
		if (!p) {
			free(nv);
			return -ENOMEM;
		}
		s->v = p;
		s->cap = cap;
	}
	if (!(nk = strndup(k, kl))) {
		free(nv);
		return -ENOMEM;
	}
	s->v[s->n++] = (struct kv){ nk, nv };
	return 0;
}

/* Apply "key=value" lines (snapshot) or one record (log). */
static int apply(struct state *s, const char *p, size_t n)
{
	const char *eq = memchr(p, '=', n);

	if (!eq)
		return -EBADMSG;
	return set(s, p, (size_t)(eq - p), eq + 1, n - (size_t)(eq - p) - 1);
}

/* Load the snapshot, if any (a whole one: objects appear complete). */
static int load_snapshot(struct state *s)
{
	char path[PATH_MAX + 16];
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/snapshot", dirpath);
	if (!(f = fopen(path, "re")))
		return errno == ENOENT ? 0 : -errno;
	if (fscanf(f, "%" SCNu64 "\n", &s->last) != 1)
		rc = -EBADMSG;
	while (rc == 0 && (n = getline(&line, &cap, f)) > 0)
		rc = apply(s, line, (size_t)n - (line[n - 1] == '\n'));
	free(line);
	fclose(f);
	return rc;
}

/* Apply the committed records after s->last; leaves s->last at the last. */
static int replay(sm_log *log, struct state *s)
{
	sm_log_iter *it;
	sm_slice *r;
	uint64_t lsn;
	int rc;

	bool skip = s->last != 0; /* the iterator starts at the applied record */

	if ((rc = sm_log_iter_open(log, s->last, &it)) < 0)
		return rc;
	while ((rc = sm_log_iter_next(it, &r, &lsn)) == 1) {
		if (skip) {
			skip = false;
			sm_release(r);
			continue;
		}
		size_t n = (size_t)sm_length(r);
		char *buf = malloc(n);
		if (!buf) {
			rc = -ENOMEM;
		} else if ((rc = sm_read(r, 0, buf, n)) == 0) {
			rc = apply(s, buf, n);
			s->last = lsn;
		}
		free(buf);
		sm_release(r);
		if (rc < 0)
			break;
	}
	sm_log_iter_close(it);
	return rc;
}

static int cmp(const void *a, const void *b)
{
	return strcmp(((const struct kv *)a)->key, ((const struct kv *)b)->key);
}

static int checkpoint(struct state *s)
{
	sm_object *o;
	sm_slice *sl;
	size_t len = 32;
	char *buf, *p;
	int rc;

	for (size_t i = 0; i < s->n; i++)
		len += strlen(s->v[i].key) + strlen(s->v[i].val) + 2;
	if (!(buf = malloc(len)))
		return -ENOMEM;
	p = buf + sprintf(buf, "%" PRIu64 "\n", s->last);
	for (size_t i = 0; i < s->n; i++)
		p += sprintf(p, "%s=%s\n", s->v[i].key, s->v[i].val);
	if ((rc = sm_object_create(dirpath, "snapshot", SM_OBJECT_REPLACE, &o)) < 0)
		goto out;
	if ((rc = sm_object_map(o, 0, (uint64_t)(p - buf), &sl)) == 0) {
		rc = sm_write(sl, 0, buf, (size_t)(p - buf));
		sm_release(sl);
	}
	if (rc == 0 && (rc = sm_object_publish(o)) == 0)
		goto out;
	sm_object_abort(o);
out:
	free(buf);
	return rc;
}

static int put(sm_log *log, const char *k, const char *v)
{
	char rec[1024];
	int n = snprintf(rec, sizeof(rec), "%s=%s", k, v);

	if (n < 0 || (size_t)n >= sizeof(rec) || strchr(k, '=') || strchr(v, '\n'))
		return -EINVAL;
	return sm_log_append(log, rec, (size_t)n, NULL);
}

int main(int argc, char **argv)
{
	struct state s = { 0 };
	sm_log *log;
	int rc = 0, ret = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: wal DIR put|fill|get|dump|checkpoint ...\n");
		return 2;
	}
	snprintf(dirpath, sizeof(dirpath), "%s", argv[1]);
	snprintf(logpath, sizeof(logpath), "%s/wal.log", argv[1]);
	if ((rc = sm_log_open(logpath, SM_RDWR | SM_CREATE, NULL, &log)) < 0)
		return die(logpath, rc);

	if (!strcmp(argv[2], "put") && argc == 5) {
		if ((rc = put(log, argv[3], argv[4])) == 0)
			rc = sm_log_commit(log);
	} else if (!strcmp(argv[2], "fill") && argc == 5) {
		long n = atol(argv[4]);
		for (long i = 0; rc == 0 && i < n; i++) {
			char k[256], v[32];
			snprintf(k, sizeof(k), "%s%ld", argv[3], i);
			snprintf(v, sizeof(v), "v%ld", i);
			if ((rc = put(log, k, v)) == 0)
				rc = sm_log_commit(log);
		}
	} else if ((!strcmp(argv[2], "get") && argc == 4) ||
		   (!strcmp(argv[2], "dump") && argc == 3) ||
		   (!strcmp(argv[2], "checkpoint") && argc == 3)) {
		if ((rc = load_snapshot(&s)) == 0 && (rc = replay(log, &s)) == 0) {
			if (argv[2][0] == 'c') {
				rc = checkpoint(&s);
			} else if (argv[2][0] == 'd') {
				qsort(s.v, s.n, sizeof(*s.v), cmp);
				for (size_t i = 0; i < s.n; i++)
					printf("%s=%s\n", s.v[i].key, s.v[i].val);
			} else {
				ret = 1;
				for (size_t i = 0; i < s.n; i++)
					if (!strcmp(s.v[i].key, argv[3])) {
						printf("%s\n", s.v[i].val);
						ret = 0;
					}
			}
		}
	} else {
		fprintf(stderr, "wal: bad command\n");
		ret = 2;
	}
	for (size_t i = 0; i < s.n; i++) {
		free(s.v[i].key);
		free(s.v[i].val);
	}
	free(s.v);
	if (rc < 0)
		ret = die(argv[2], rc);
	if ((rc = sm_log_close(log)) < 0 && ret == 0)
		ret = die("close", rc);
	return ret;
}
