/* SPDX-License-Identifier: MIT */
/*
 * test_model.c - differential test of write slices, their sub-slices,
 * commit, commit_many, abort and downgrade against an in-memory model.
 *
 * Random operations run on a small file through a few write holds (direct
 * or buffered, at unaligned offsets so neighbouring holds share pages) and
 * sub-slices of them.  The model keeps what every other process sees of the
 * file (direct writes land there at once, buffered ones at commit), each
 * buffered hold's private copy and each hold's dirty pages, following the
 * rules of sm_commit(3) and sm_sub(3): the page is the unit of dirtiness
 * shared by all views of a hold; a commit writes the whole dirty pages its
 * view touches (clipped to the hold); an abort restores its view's bytes and
 * marks clean only the pages its view covers wholly.
 *
 * After every step each live view's bytes and dirty count are compared with
 * the model; after every commit, abort and release the file is read through
 * a separate descriptor and compared byte for byte.
 *
 * Fixed seeds, plus SAFEMAP_MODEL_SEED from the environment; a failure
 * prints its seed and the last steps.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

#define FILE_PAGES 6
#define MAX_HOLDS 3
#define MAX_VIEWS 12
#define STEPS 400
#define ROUNDS 4
#define TRACE 24

static uint64_t pg, fsize;

static uint64_t rng_state;

static uint64_t rnd(void) /* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* ---- the model --------------------------------------------------------- */

struct mhold {
	bool live, buffered, write;
	uint64_t off, len;
	unsigned char *copy;       /* buffered: the private copy, file bytes [off, off+len) */
	bool dirty[FILE_PAGES];    /* by file page */
	unsigned views, wsubs;
};

struct mview {
	bool live, sub, write;
	int h;
	uint64_t off, len;
	sm_slice *s;
};

static struct {
	unsigned long long seed;
	int round, step;
	char trace[TRACE][96];
	unsigned ntrace;
	const char *path;
	sm_file *f;
	int fd; /* a separate descriptor: what everyone else reads */
	unsigned char file[FILE_PAGES * 65536]; /* the model of the file */
	struct mhold h[MAX_HOLDS];
	struct mview v[MAX_VIEWS];
} m;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m.trace[m.ntrace++ % TRACE], sizeof(m.trace[0]), fmt, ap);
	va_end(ap);
}

static void model_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void model_fail(const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "model: seed %llu round %d step %d: %s\n", m.seed, m.round, m.step, msg);
	fprintf(stderr, "model: last steps, oldest first:\n");
	for (unsigned i = m.ntrace > TRACE ? m.ntrace - TRACE : 0; i < m.ntrace; i++)
		fprintf(stderr, "  %s\n", m.trace[i % TRACE]);
	ck_abort_msg("seed %llu round %d step %d: %s (replay: SAFEMAP_MODEL_SEED=%llu)", m.seed,
		     m.round, m.step, msg, m.seed);
}

#define EXPECT_RC(call, want)                                                        \
	do {                                                                         \
		int rc_ = (call);                                                    \
		if (rc_ != (want))                                                   \
			model_fail("%s returned %d, model says %d", #call, rc_, (int)(want)); \
	} while (0)

/* Page span [*p0, *p1) of file range [off, off+len). */
static void pages(uint64_t off, uint64_t len, uint64_t *p0, uint64_t *p1)
{
	*p0 = off / pg;
	*p1 = (off + len - 1) / pg + 1;
}

/* File range of page p clipped to hold h. */
static void page_in_hold(const struct mhold *h, uint64_t p, uint64_t *a, uint64_t *b)
{
	*a = p * pg > h->off ? p * pg : h->off;
	*b = (p + 1) * pg < h->off + h->len ? (p + 1) * pg : h->off + h->len;
}

/* What view v shows at file offset x. */
static unsigned char view_byte(const struct mview *v, uint64_t x)
{
	const struct mhold *h = &m.h[v->h];

	return h->buffered ? h->copy[x - h->off] : m.file[x];
}

static int model_dirty(const struct mview *v)
{
	uint64_t p0, p1;
	int n = 0;

	pages(v->off, v->len, &p0, &p1);
	for (uint64_t p = p0; p < p1; p++)
		n += m.h[v->h].dirty[p];
	return n;
}

static void check_file(void)
{
	static unsigned char buf[sizeof(m.file)];

	if (pread(m.fd, buf, fsize, 0) != (ssize_t)fsize)
		model_fail("pread of the file failed");
	for (uint64_t i = 0; i < fsize; i++)
		if (buf[i] != m.file[i])
			model_fail("file byte %" PRIu64 " is %#x, model says %#x", i, buf[i], m.file[i]);
}

static void check_views(void)
{
	static unsigned char buf[FILE_PAGES * 65536];

	for (int i = 0; i < MAX_VIEWS; i++) {
		struct mview *v = &m.v[i];
		int d;
		if (!v->live)
			continue;
		EXPECT_RC(sm_read(v->s, 0, buf, v->len), 0);
		for (uint64_t k = 0; k < v->len; k++)
			if (buf[k] != view_byte(v, v->off + k))
				model_fail("view %d [%" PRIu64 ", +%" PRIu64 ") byte %" PRIu64
				     " is %#x, model says %#x",
				     i, v->off, v->len, v->off + k, buf[k], view_byte(v, v->off + k));
		if ((d = sm_dirty_pages(v->s)) != model_dirty(v))
			model_fail("view %d [%" PRIu64 ", +%" PRIu64 ") has %d dirty pages, model says %d",
			     i, v->off, v->len, d, model_dirty(v));
	}
}

/* ---- steps ------------------------------------------------------------- */

static int free_view(void)
{
	for (int i = 0; i < MAX_VIEWS; i++)
		if (!m.v[i].live)
			return i;
	return -1;
}

/* A random live view, or -1. */
static int pick_view(void)
{
	int live[MAX_VIEWS], n = 0;

	for (int i = 0; i < MAX_VIEWS; i++)
		if (m.v[i].live)
			live[n++] = i;
	return n ? live[below((uint64_t)n)] : -1;
}

/* An offset biased to page edges, in [lo, hi). */
static uint64_t edgy(uint64_t lo, uint64_t hi)
{
	uint64_t x = lo + below(hi - lo), e;

	switch (below(4)) {
	case 0:
		e = x / pg * pg; /* a page start */
		break;
	case 1:
		e = x / pg * pg + pg - 1; /* a page end */
		break;
	default:
		return x;
	}
	return e >= lo && e < hi ? e : x;
}

static void step_map(void)
{
	int hi = -1, vi = free_view();
	uint64_t off, len;
	struct mhold *h;
	struct mview *v;

	for (int i = 0; i < MAX_HOLDS && hi < 0; i++)
		if (!m.h[i].live)
			hi = i;
	if (hi < 0 || vi < 0)
		return;
	off = edgy(0, fsize);
	len = 1 + below(fsize - off < 3 * pg ? fsize - off : 3 * pg);
	if (below(2))
		len = edgy(off + 1, off + len + 1) - off;
	for (int i = 0; i < MAX_HOLDS; i++)
		if (m.h[i].live && off < m.h[i].off + m.h[i].len && m.h[i].off < off + len)
			return; /* would overlap a live hold: -EBUSY, not what we test */
	h = &m.h[hi];
	v = &m.v[vi];
	memset(h, 0, sizeof(*h));
	h->buffered = below(2);
	note("map %d [%" PRIu64 ", +%" PRIu64 ") %s -> view %d", hi, off, len,
	     h->buffered ? "buffered" : "direct", vi);
	EXPECT_RC(sm_map_write(m.f, off, len, h->buffered ? SM_BUFFERED : 0, &v->s), 0);
	h->live = h->write = true;
	h->off = off;
	h->len = len;
	h->views = 1;
	if (h->buffered) {
		h->copy = malloc(len);
		ck_assert_ptr_nonnull(h->copy);
		memcpy(h->copy, m.file + off, len);
	}
	*v = (struct mview){ .live = true, .write = true, .h = hi, .off = off, .len = len, .s = v->s };
}

static void step_sub(void)
{
	int pi = pick_view(), vi = free_view();
	struct mview *p, *v;
	uint64_t off, len;

	if (pi < 0 || vi < 0)
		return;
	p = &m.v[pi];
	v = &m.v[vi];
	off = edgy(0, p->len);
	len = 1 + below(p->len - off);
	if (below(2))
		len = edgy(off + 1, p->len + 1) - off;
	note("sub of view %d at +%" PRIu64 " len %" PRIu64 " -> view %d", pi, off, len, vi);
	EXPECT_RC(sm_sub(p->s, off, len, &v->s), 0);
	*v = (struct mview){ .live = true, .sub = true, .write = p->write, .h = p->h,
			     .off = p->off + off, .len = len, .s = v->s };
	m.h[p->h].views++;
	if (v->write)
		m.h[p->h].wsubs++;
}

static void step_write(void)
{
	static unsigned char buf[1024];
	int vi = pick_view();
	struct mview *v;
	struct mhold *h;
	uint64_t off, n, p0, p1;

	if (vi < 0)
		return;
	v = &m.v[vi];
	h = &m.h[v->h];
	off = edgy(0, v->len);
	n = 1 + below(v->len - off < sizeof(buf) ? v->len - off : sizeof(buf));
	for (uint64_t i = 0; i < n; i++)
		buf[i] = (unsigned char)(1 + below(255));
	note("write view %d at +%" PRIu64 " len %" PRIu64, vi, off, n);
	EXPECT_RC(sm_write(v->s, off, buf, n), v->write ? 0 : -EBADF);
	if (!v->write)
		return;
	memcpy(h->buffered ? h->copy + (v->off + off - h->off) : m.file + v->off + off, buf, n);
	pages(v->off + off, n, &p0, &p1);
	for (uint64_t p = p0; p < p1; p++)
		h->dirty[p] = true;
}

/* The model of one view's commit (its slice was accepted). */
static void model_commit(const struct mview *v, bool sync)
{
	struct mhold *h = &m.h[v->h];
	uint64_t p0, p1, a, b;

	pages(v->off, v->len, &p0, &p1);
	for (uint64_t p = p0; p < p1; p++) {
		if (!h->dirty[p])
			continue;
		page_in_hold(h, p, &a, &b);
		if (h->buffered)
			memcpy(m.file + a, h->copy + (a - h->off), b - a);
		if (sync)
			h->dirty[p] = false;
	}
}

static void step_commit(void)
{
	int vi = pick_view(), flags = below(5) ? 0 : SM_ASYNC;
	struct mview *v;

	if (vi < 0)
		return;
	v = &m.v[vi];
	note("commit view %d%s", vi, flags ? " async" : "");
	EXPECT_RC(sm_commit(v->s, flags), v->write ? 0 : -EBADF);
	if (v->write)
		model_commit(v, !flags);
	check_file();
}

static void step_commit_many(void)
{
	int idx[4], n = 0, want = 0, flags = below(5) ? 0 : SM_ASYNC;
	sm_slice *sv[4];
	char desc[48] = "";

	for (int k = 0, tries = (int)(1 + below(4)); k < tries; k++) {
		int vi = pick_view();
		if (vi < 0)
			break;
		idx[n] = vi;
		sv[n++] = m.v[vi].s;
		snprintf(desc + strlen(desc), sizeof(desc) - strlen(desc), " %d", vi);
	}
	if (!n)
		return;
	/* the model of the argument checks, in their order */
	for (int i = 0; i < n && !want; i++) {
		if (!m.v[idx[i]].write)
			want = -EBADF;
		for (int j = 0; j < i && !want; j++)
			if (m.v[idx[j]].h == m.v[idx[i]].h)
				want = -EINVAL;
	}
	note("commit_many views%s%s", desc, flags ? " async" : "");
	EXPECT_RC(sm_commit_many(sv, (size_t)n, flags), want);
	if (!want)
		for (int i = 0; i < n; i++)
			model_commit(&m.v[idx[i]], !flags);
	check_file();
}

static void step_abort(void)
{
	int vi = pick_view(), want;
	struct mview *v;
	struct mhold *h;
	uint64_t p0, p1, a, b;

	if (vi < 0)
		return;
	v = &m.v[vi];
	h = &m.h[v->h];
	want = !v->write ? -EBADF : !h->buffered ? -ENOTSUP : 0;
	note("abort view %d", vi);
	EXPECT_RC(sm_abort(v->s), want);
	if (want)
		return;
	pages(v->off, v->len, &p0, &p1);
	for (uint64_t p = p0; p < p1; p++) {
		uint64_t ra, rb;
		if (!h->dirty[p])
			continue;
		/* the view's bytes of the page come back from the file */
		ra = p * pg > v->off ? p * pg : v->off;
		rb = (p + 1) * pg < v->off + v->len ? (p + 1) * pg : v->off + v->len;
		memcpy(h->copy + (ra - h->off), m.file + ra, rb - ra);
		/* clean only if no byte of the page (in the hold) lies outside */
		page_in_hold(h, p, &a, &b);
		if (a >= v->off && b <= v->off + v->len)
			h->dirty[p] = false;
	}
	check_file();
}

static void step_downgrade(void)
{
	int vi = pick_view(), want;
	struct mview *v;
	struct mhold *h;
	bool dirty = false;

	if (vi < 0)
		return;
	v = &m.v[vi];
	h = &m.h[v->h];
	for (int p = 0; p < FILE_PAGES; p++)
		dirty |= h->dirty[p];
	want = v->sub ? -EINVAL : !v->write ? -EBADF
		: h->wsubs > 0 || (h->buffered && dirty) ? -EBUSY : 0;
	note("downgrade view %d", vi);
	EXPECT_RC(sm_downgrade(v->s), want);
	if (!want)
		v->write = h->write = false;
}

static void step_release(int vi)
{
	struct mview *v = &m.v[vi];
	struct mhold *h = &m.h[v->h];

	note("release view %d", vi);
	EXPECT_RC(sm_release(v->s), 0);
	v->live = false;
	if (v->sub && v->write)
		h->wsubs--;
	if (--h->views == 0) {
		free(h->copy);
		h->copy = NULL;
		h->live = false; /* uncommitted buffered changes are gone */
	}
	check_file();
}

static void run_round(void)
{
	uint64_t init = rnd();

	memset(m.h, 0, sizeof(m.h));
	memset(m.v, 0, sizeof(m.v));
	m.path = tu_tmpfile((off_t)fsize);
	for (uint64_t i = 0; i < fsize; i++)
		m.file[i] = (unsigned char)(init >> (i % 8 * 8)) ^ (unsigned char)i;
	m.fd = open(m.path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(m.fd, 0);
	ck_assert_int_eq(pwrite(m.fd, m.file, fsize, 0), (ssize_t)fsize);
	ck_assert_int_eq(sm_open(m.path, SM_RDWR, NULL, &m.f), 0);
	for (m.step = 0; m.step < STEPS; m.step++) {
		uint64_t r = below(100);
		int vi;
		if (r < 10)
			step_map();
		else if (r < 22)
			step_sub();
		else if (r < 55)
			step_write();
		else if (r < 67)
			step_commit();
		else if (r < 73)
			step_commit_many();
		else if (r < 83)
			step_abort();
		else if (r < 88)
			step_downgrade();
		else if ((vi = pick_view()) >= 0)
			step_release(vi);
		check_views();
	}
	for (int i = 0; i < MAX_VIEWS; i++)
		if (m.v[i].live)
			step_release(i);
	ck_assert_int_eq(sm_close(m.f), 0);
	check_file();
	close(m.fd);
}

static void run_seed(unsigned long long seed)
{
	m.seed = seed;
	m.ntrace = 0;
	rng_state = seed;
	for (m.round = 0; m.round < ROUNDS; m.round++)
		run_round();
}

static const unsigned long long seeds[] = { 1, 2, 3, 4, 5, 6, 7, 8, 0x5afe, 20261126 };
#define NSEEDS (int)(sizeof(seeds) / sizeof(seeds[0]))

START_TEST(model_matches)
{
	const char *env = getenv("SAFEMAP_MODEL_SEED");

	pg = (uint64_t)sysconf(_SC_PAGESIZE);
	fsize = FILE_PAGES * pg;
	ck_assert_uint_le(fsize, sizeof(m.file));
	if (_i < NSEEDS) {
		run_seed(seeds[_i]);
		return;
	}
	if (env && *env)
		run_seed(strtoull(env, NULL, 0));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("model");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, model_matches, 0, NSEEDS + 1);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
