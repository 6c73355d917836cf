/* SPDX-License-Identifier: MIT */
/*
 * main.c - the kvstore command line (the engine is kvstore.c).
 *
 *   kvstore [-k] [-p PAGES] [-c N] DIR put KEY VALUE   durable when it exits 0
 *   kvstore ... DIR get KEY            print the value (exit 1 if none)
 *   kvstore ... DIR check              check every page, print the figures
 *   kvstore ... DIR checkpoint         sync the data file, trim the log
 *   kvstore ... DIR loop ID STEP INC KEYS PERMILLE [THREADS]
 *       puts until killed: put number SEQ (1, 2, ...) sets key
 *       ID + STEP * (SEQ % KEYS) to a 100-byte self-checking value tagged
 *       "ID.INC.SEQ", then writes "KEY ID.INC.SEQ" on standard output (one
 *       write(2) per line, after the put returned).  With THREADS (1-16),
 *       thread T does the same as ID + T, all through one handle.  With PERMILLE > 0 that
 *       many puts in 1000 write their line once the record is durable and
 *       then kill the process (SIGKILL) before the page is written.  The
 *       first line says how many records the recovery at open redid:
 *       "# replayed N".
 *
 * Every command opens the store, which recovers first.  -k: kernel locks
 * instead of table mode (every process of a store must agree); -p: data
 * pages of a new store; -c: puts between checkpoints.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvstore.h"
#include "safemap.h"

struct ack {
	char line[64];
	size_t n;
};

static void say(const struct ack *a)
{
	if (write(1, a->line, a->n) != (ssize_t)a->n)
		_exit(3);
}

static void die_after_log(void *arg)
{
	say(arg);
	raise(SIGKILL);
}

struct putter {
	pthread_t t;
	kv_store *kv;
	unsigned long id, step, inc, keys, permille;
	int rc;
};

/* Puts of keys id, id + step, ..., each acknowledged once it returned. */
static void *putter(void *arg)
{
	struct putter *p = arg;
	unsigned seed = (unsigned)getpid() * 31u + (unsigned)p->id;
	unsigned char v[KV_VAL_MAX];
	char tag[48];
	struct ack a;

	for (unsigned long seq = 1;; seq++) {
		uint64_t key = p->id + p->step * (seq % p->keys);
		snprintf(tag, sizeof(tag), "%lu.%lu.%lu", p->id, p->inc, seq);
		kv_value_make(v, sizeof(v), tag);
		a.n = (size_t)snprintf(a.line, sizeof(a.line), "%" PRIu64 " %s\n", key, tag);
		if (p->permille && (unsigned long)rand_r(&seed) % 1000 < p->permille)
			p->rc = kv_put_hook(p->kv, key, v, sizeof(v), die_after_log, &a);
		else
			p->rc = kv_put(p->kv, key, v, sizeof(v));
		if (p->rc < 0)
			return NULL;
		say(&a);
	}
}

static int loop(kv_store *kv, char **av, int ac)
{
	unsigned long threads = ac > 5 ? strtoul(av[5], NULL, 10) : 1;
	struct putter p[16];
	struct kv_stats st;
	struct ack a;
	int rc = 0;

	if (threads < 1 || threads > 16)
		return -EINVAL;
	for (unsigned long t = 0; t < threads; t++) {
		p[t] = (struct putter){ .kv = kv, .id = strtoul(av[0], NULL, 10) + t,
					.step = strtoul(av[1], NULL, 10),
					.inc = strtoul(av[2], NULL, 10),
					.keys = strtoul(av[3], NULL, 10),
					.permille = strtoul(av[4], NULL, 10) };
		if (!p[t].step || !p[t].keys)
			return -EINVAL;
	}
	kv_counters(kv, &st); /* what the recovery at open redid */
	a.n = (size_t)snprintf(a.line, sizeof(a.line), "# replayed %" PRIu64 "\n", st.replayed);
	say(&a);
	for (unsigned long t = 0; t < threads; t++)
		if (pthread_create(&p[t].t, NULL, putter, &p[t]) != 0)
			return -EAGAIN;
	for (unsigned long t = 0; t < threads; t++) {
		pthread_join(p[t].t, NULL);
		if (p[t].rc < 0 && rc == 0)
			rc = p[t].rc;
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct kv_options o = { 0 };
	unsigned char v[KV_VAL_MAX];
	struct kv_stats st;
	const char *cmd;
	size_t n;
	kv_store *kv;
	int c, rc;

	while ((c = getopt(argc, argv, "kp:c:")) != -1) {
		if (c == 'k')
			o.kernel_locks = 1;
		else if (c == 'p')
			o.pages = strtoull(optarg, NULL, 10);
		else if (c == 'c')
			o.checkpoint = (unsigned)strtoul(optarg, NULL, 10);
		else
			return 2;
	}
	argc -= optind;
	argv += optind;
	if (argc < 2) {
		fprintf(stderr, "usage: kvstore [-k] [-p PAGES] [-c N] DIR put KEY VALUE | get KEY | "
				"check | checkpoint | loop ID STEP INC KEYS PERMILLE [THREADS]\n");
		return 2;
	}
	cmd = argv[1];
	if (mkdir(argv[0], 0777) < 0 && errno != EEXIST) {
		perror(argv[0]);
		return 1;
	}
	if ((rc = kv_open(argv[0], &o, &kv)) < 0) {
		fprintf(stderr, "kvstore: open %s: %s\n", argv[0], sm_strerror(rc));
		return 1;
	}
	if (strcmp(cmd, "put") == 0 && argc == 4) {
		n = strlen(argv[3]);
		rc = n > KV_VAL_MAX ? -E2BIG : kv_put(kv, strtoull(argv[2], NULL, 10), argv[3], n);
	} else if (strcmp(cmd, "get") == 0 && argc == 3) {
		if ((rc = kv_get(kv, strtoull(argv[2], NULL, 10), v, sizeof(v), &n)) == 1)
			printf("%.*s\n", (int)n, (const char *)v);
		rc = rc == 1 ? 0 : rc == 0 ? 1 : rc;
	} else if (strcmp(cmd, "check") == 0 && argc == 2) {
		if ((rc = kv_check(kv, &st)) == 0)
			printf("pages %" PRIu64 " keys %" PRIu64 " max-page-lsn %" PRIu64
			       " redo %" PRIu64 " mark %" PRIu64 " replayed %" PRIu64 "\n",
			       st.pages, st.keys, st.max_lsn, st.redo, st.tail, st.replayed);
	} else if (strcmp(cmd, "checkpoint") == 0 && argc == 2) {
		rc = kv_checkpoint(kv);
	} else if (strcmp(cmd, "loop") == 0 && (argc == 7 || argc == 8)) {
		rc = loop(kv, argv + 2, argc - 2);
	} else {
		rc = -EINVAL;
	}
	if (rc < 0)
		fprintf(stderr, "kvstore: %s: %s\n", cmd, sm_strerror(rc));
	if ((c = kv_close(kv)) < 0 && rc >= 0) {
		fprintf(stderr, "kvstore: close: %s\n", sm_strerror(c));
		rc = c;
	}
	return rc < 0 ? 1 : rc;
}
