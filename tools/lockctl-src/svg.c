/* SPDX-License-Identifier: MIT */
/*
 * svg.c - lockctl map --svg: the picture as SVG, each region at its place
 * on the bar (at least one pixel wide, with its holder as a tooltip), the
 * gaps left out, the scale, the legend and the holders.  Everything from a
 * tag or a command name is escaped: they may hold any byte.
 */
#include <errno.h>
#include <string.h>

#include "map.h"

static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default:
			/* control bytes are not XML; a tag or comm may hold any */
			if ((unsigned char)*s < 0x20)
				fputc('?', f);
			else
				fputc(*s, f);
		}
	}
}

/* The regions on the SVG bar, lowest precedence first so that writes are
 * drawn on top. */
static void svg_regions(FILE *f, const struct picture *pic, const struct layout *l, double x0, double y0,
			double bar_w, double bar_h)
{
	const struct span *sp = pic->sp;
	uint64_t extent = pic->extent;

	for (size_t g = nglyphs; g-- > 0;) {
		for (size_t i = 0; i < pic->n; i++) {
			if (sp[i].glyph != glyphs[g].c)
				continue;
			uint64_t end = sp[i].len ? sp[i].start + sp[i].len : extent;
			double x = x0 + bar_w * (double)sp[i].start / (double)extent;
			double w = bar_w * (double)(end - sp[i].start) / (double)extent;
			if (l->n > 1) { /* gaps left out */
				x = x0 + bar_w * layout_x(l, sp[i].start);
				w = bar_w * (layout_x(l, end) - layout_x(l, sp[i].start));
			}
			char range[64];
			span_range(&sp[i], range, sizeof(range));
			fprintf(f, "<rect class=\"%s\" x=\"%.2f\" y=\"%.0f\" width=\"%.2f\" height=\"%.0f\" fill=\"%s\">"
				   "<title>%s ", glyphs[g].svg_class, x, y0, w < 1 ? 1 : w, bar_h, glyphs[g].fill, range);
			xml_text(f, sp[i].desc);
			fputs("</title></rect>\n", f);
		}
	}
	for (size_t i = 0; i < l->n; i++) {
		const struct part *p = &l->v[i];
		if (!p->gap)
			continue;
		fprintf(f, "<rect class=\"gap\" x=\"%.2f\" y=\"%.0f\" width=\"%.2f\" height=\"%.0f\" fill=\"#ffffff\" "
			   "stroke=\"#888888\" stroke-dasharray=\"3,3\"><title>%llu-%llu: %llu empty bytes left out</title></rect>\n",
			x0 + bar_w * (double)p->c0 / (double)l->cells, y0, bar_w / (double)l->cells, bar_h,
			(unsigned long long)p->lo, (unsigned long long)(p->hi - 1), (unsigned long long)(p->hi - p->lo));
	}
}

/* The SVG legend at height y, then the holders, a line each. */
static void svg_legend(FILE *f, const struct span *sp, size_t nsp, double x0, double y, int line_h)
{
	double lx = x0;

	for (size_t g = 0; g < nglyphs; g++) {
		fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" height=\"10\" fill=\"%s\" stroke=\"#888888\"/>"
			   "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
			lx, y - 9, glyphs[g].fill, lx + 14, y, glyphs[g].name);
		lx += 14 + 7.5 * (double)strlen(glyphs[g].name) + 14;
	}
	for (size_t i = 0; i < nsp; i++) {
		char range[64];
		y += line_h;
		span_range(&sp[i], range, sizeof(range));
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%c %s ", x0, y, glyph_of(sp[i].glyph)->fill,
			sp[i].glyph, range);
		xml_text(f, sp[i].desc);
		fputs("</text>\n", f);
	}
}

/* The same picture as SVG: the bar with each region at its exact place
 * (at least one pixel wide), the scale, the legend and the holders. */
int write_svg(const char *file, const char *title, const struct picture *pic, const struct layout *l, long width)
{
	uint64_t size = (uint64_t)pic->st.st_size, extent = pic->extent;
	const struct span *sp = pic->sp;
	size_t nsp = pic->n;
	const double bar_w = (double)width * 8, x0 = 10, y0 = 34, bar_h = 28;
	const int line_h = 16;
	int height = (int)(y0 + bar_h + 24 + line_h * (2 + (int)nsp) + 10);
	double svg_w = bar_w + 2 * x0, legend_w = x0;
	FILE *f = fopen(file, "we");

	if (!f)
		return -errno;
	for (size_t g = 0; g < nglyphs; g++)
		legend_w += 14 + 7.5 * (double)strlen(glyphs[g].name) + 14;
	if (legend_w > svg_w)
		svg_w = legend_w;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%d\" "
		   "viewBox=\"0 0 %.0f %d\" font-family=\"monospace\" font-size=\"12\">\n",
		svg_w, height, svg_w, height);
	fputs("<title>lockctl map ", f);
	xml_text(f, title);
	fputs("</title>\n<text x=\"10\" y=\"20\">", f);
	xml_text(f, title);
	fprintf(f, ": %llu bytes</text>\n", (unsigned long long)size);
	fprintf(f, "<rect class=\"free\" x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\" stroke=\"#888888\"/>\n",
		x0, y0, bar_w, bar_h, glyph_of('.')->fill);
	svg_regions(f, pic, l, x0, y0, bar_w, bar_h);
	double y = y0 + bar_h + 14;
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">0</text>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%llu</text>\n",
		x0, y, x0 + bar_w, y, (unsigned long long)(extent - 1));
	svg_legend(f, sp, nsp, x0, y + line_h + 4, line_h);
	fputs("</svg>\n", f);
	if (ferror(f) | (fclose(f) != 0))
		return -EIO;
	return 0;
}

