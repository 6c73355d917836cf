/* SPDX-License-Identifier: MIT */
/*
 * map.h - what lockctl map's files share: the regions of one file (the
 * picture), the glyphs they are drawn with, and the layout that places
 * bytes on the bar's cells (layout.c), used by the text bar (map.c) and
 * the SVG writer (svg.c).
 */
#ifndef LOCKCTL_MAP_H
#define LOCKCTL_MAP_H

#include "lockctl.h"

/* One region drawn on the bar, and listed under it. */
struct span {
	uint64_t start, len; /* len 0: to end of file */
	char glyph;
	char desc[192];
};

/* A picture: the regions of one file, sorted by start. */
struct picture {
	struct stat st;
	struct span *sp;
	size_t n, cap;
	uint64_t extent; /* the bar covers [0, extent): the file, or further if regions do */
};

/* Glyphs, by precedence when regions share a cell, with their colours;
 * the last is free space. */
struct glyph {
	char c;
	const char *color, *name, *svg_class, *fill;
};
extern const struct glyph glyphs[];
extern const size_t nglyphs;
#define GAP_GLYPH '/' /* a cell standing for empty bytes left out */

const struct glyph *glyph_of(char c);
int precedence(char c);
void span_range(const struct span *sp, char *buf, size_t n);

/* The bar as parts: byte ranges [lo, hi) drawn on cells [c0, c0 + nc),
 * proportionally, or (gap) an empty range past the end of the file drawn
 * as one cell.  One part and no gap: the plain linear scale. */
struct part {
	uint64_t lo, hi;
	size_t c0, nc;
	bool gap;
};
struct layout {
	struct part *v;
	size_t n, cells;
	uint64_t left_out; /* bytes in gaps */
	uint64_t per_cell; /* bytes per cell, rounded up, gaps aside */
};

void layout_build(struct layout *l, const struct picture *pic, size_t cells);
void layout_free(struct layout *l);
/* The cells [*first, *last) that hold a byte of [start, end). */
void layout_cells(const struct layout *l, uint64_t start, uint64_t end, size_t *first, size_t *last);
/* Where byte b (or the end of the bar, at extent) falls, as a fraction
 * of the bar's width. */
double layout_x(const struct layout *l, uint64_t b);

int write_svg(const char *file, const char *title, const struct picture *pic, const struct layout *l, long width);

#endif
