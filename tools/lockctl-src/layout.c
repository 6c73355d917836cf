/* SPDX-License-Identifier: MIT */
/*
 * layout.c - where lockctl map draws each byte.  The bar is the file at a
 * linear scale, each region marking every cell that holds one of its bytes
 * (a one-byte lock still shows).  A region far past the end of the file
 * (SQLite's lock bytes sit at 1 GiB, past most databases) would stretch
 * that scale until the whole file and each region share one cell: empty
 * stretches past the end of the file longer than the file itself are then
 * left out, one cell each (drawn '/'), and the cells that remain are shared
 * by the rest in proportion, at least one per part.  Also the glyph table
 * both the bar and the SVG draw with.
 */
#include <stdlib.h>

#include "map.h"

const struct glyph glyphs[] = {
	{ '#', "\033[1;31m", "write", "write", "#d62728" },
	{ 'K', "\033[35m", "kernel lock without safemap", "kernel", "#9467bd" },
	{ '=', "\033[32m", "read", "read", "#2ca02c" },
	{ '~', "\033[33m", "waiting", "waiting", "#ffbf00" },
	{ '?', "\033[2m", "stale", "stale", "#999999" },
	{ '.', NULL, "free", "free", "#f4f4f4" },
};
const size_t nglyphs = ARRAY_SIZE(glyphs);

const struct glyph *glyph_of(char c)
{
	for (size_t i = 0; i < nglyphs; i++)
		if (glyphs[i].c == c)
			return &glyphs[i];
	return &glyphs[nglyphs - 1];
}

int precedence(char c)
{
	for (size_t i = 0; i < nglyphs; i++)
		if (glyphs[i].c == c)
			return (int)(nglyphs - i);
	return 0;
}

void span_range(const struct span *sp, char *buf, size_t n)
{
	if (sp->len)
		snprintf(buf, n, "%llu-%llu", (unsigned long long)sp->start,
			 (unsigned long long)(sp->start + sp->len - 1));
	else
		snprintf(buf, n, "%llu-EOF", (unsigned long long)sp->start);
}

static uint64_t span_end(const struct span *sp, uint64_t extent)
{
	return sp->len ? sp->start + sp->len : extent;
}

/* Append [lo, hi) to the parts, joining a drawn part to the one before. */
static void add_part(struct layout *l, uint64_t lo, uint64_t hi, bool gap)
{
	if (lo >= hi)
		return;
	if (!gap && l->n && !l->v[l->n - 1].gap) {
		l->v[l->n - 1].hi = hi;
		return;
	}
	l->v[l->n++] = (struct part){ .lo = lo, .hi = hi, .gap = gap };
	if (gap)
		l->left_out += hi - lo;
}

/* Split the bar into drawn parts and gaps: an empty stretch at or past the
 * end of the file, longer than the file and than a cell of the linear
 * scale, is a gap.  Spans are sorted by start. */
static void find_parts(struct layout *l, const struct picture *pic)
{
	uint64_t size = (uint64_t)pic->st.st_size, extent = pic->extent, pos = 0;
	uint64_t min_gap = extent / l->cells > size ? extent / l->cells : size;

	for (size_t i = 0; i < pic->n; i++) {
		const struct span *sp = &pic->sp[i];
		uint64_t end = span_end(sp, extent);
		if (sp->start > pos && pos < size && sp->start > size) {
			add_part(l, pos, size, false); /* the file's own bytes are drawn */
			pos = size;
		}
		if (sp->start > pos)
			add_part(l, pos, sp->start, pos >= size && sp->start - pos > min_gap);
		if (end > pos) {
			add_part(l, pos > sp->start ? pos : sp->start, end, false);
			pos = end;
		}
	}
	add_part(l, pos, extent, false); /* inside the file: extent is its size */
}

/* Share the cells: a gap gets one, drawn parts the rest in proportion to
 * their bytes (at least one each, the rounding left to the largest). */
static bool share_cells(struct layout *l)
{
	size_t gaps = 0, drawn_cells, used = 0, largest = 0;
	uint64_t drawn = 0;

	for (size_t i = 0; i < l->n; i++) {
		gaps += l->v[i].gap;
		if (!l->v[i].gap)
			drawn += l->v[i].hi - l->v[i].lo;
	}
	if (gaps + (l->n - gaps) > l->cells)
		return false; /* too many parts for the width */
	drawn_cells = l->cells - gaps;
	for (size_t i = 0; i < l->n; i++) {
		struct part *p = &l->v[i];
		if (p->gap) {
			p->nc = 1;
		} else {
			p->nc = (size_t)((unsigned __int128)(p->hi - p->lo) * drawn_cells / drawn);
			if (!p->nc)
				p->nc = 1;
			if (p->hi - p->lo > l->v[largest].hi - l->v[largest].lo || l->v[largest].gap)
				largest = i;
		}
		used += p->nc;
	}
	if (used > l->cells && l->v[largest].nc <= used - l->cells)
		return false;
	l->v[largest].nc = l->v[largest].nc + l->cells - used;
	for (size_t i = 0, c = 0; i < l->n; c += l->v[i++].nc)
		l->v[i].c0 = c;
	l->per_cell = (drawn + drawn_cells - 1) / drawn_cells;
	return true;
}

void layout_build(struct layout *l, const struct picture *pic, size_t cells)
{
	*l = (struct layout){ .cells = cells };
	l->v = xrealloc(NULL, 2 * pic->n + 2, sizeof(*l->v));
	find_parts(l, pic);
	if (l->left_out && share_cells(l))
		return;
	/* the linear scale: one part */
	l->n = 1;
	l->v[0] = (struct part){ .lo = 0, .hi = pic->extent, .c0 = 0, .nc = cells };
	l->left_out = 0;
	l->per_cell = (pic->extent + cells - 1) / cells;
}

void layout_free(struct layout *l)
{
	free(l->v);
	l->v = NULL;
}

void layout_cells(const struct layout *l, uint64_t start, uint64_t end, size_t *first, size_t *last)
{
	*first = l->cells;
	*last = 0;
	for (size_t i = 0; i < l->n; i++) {
		const struct part *p = &l->v[i];
		uint64_t s = start > p->lo ? start : p->lo, e = end < p->hi ? end : p->hi, len = p->hi - p->lo;
		if (p->gap || s >= e)
			continue;
		size_t f = p->c0 + (size_t)((unsigned __int128)(s - p->lo) * p->nc / len);
		size_t t = p->c0 + (size_t)(((unsigned __int128)(e - p->lo) * p->nc + len - 1) / len);
		if (f < *first)
			*first = f;
		if (t > *last)
			*last = t;
	}
}

double layout_x(const struct layout *l, uint64_t b)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct part *p = &l->v[i];
		if (b > p->hi || (b == p->hi && i + 1 < l->n))
			continue;
		double in = p->gap ? (b > p->lo) : (double)(b - p->lo) / (double)(p->hi - p->lo);
		return ((double)p->c0 + in * (double)p->nc) / (double)l->cells;
	}
	return 1.0;
}
