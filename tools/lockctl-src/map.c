/* SPDX-License-Identifier: MIT */
/*
 * map.c - lockctl map: the file as a bar scaled to the terminal, each
 * cell showing the strongest region that touches it (write over kernel
 * lock over read over waiting over stale), with a scale, a legend and the
 * holders listed under it; optionally the same picture as SVG, where each
 * region sits at its exact place.  watch.c redraws it.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <bsd/stdlib.h>

#include "lockctl.h"

/* One region drawn on the bar, and listed under it. */
struct span {
	uint64_t start, len; /* len 0: to end of file */
	char glyph;
	char desc[192];
};

/* Glyphs, by precedence when regions share a cell, with their colours. */
static const struct glyph {
	char c;
	const char *color, *name, *svg_class, *fill;
} glyphs[] = {
	{ '#', "\033[1;31m", "write", "write", "#d62728" },
	{ 'K', "\033[35m", "kernel lock without safemap", "kernel", "#9467bd" },
	{ '=', "\033[32m", "read", "read", "#2ca02c" },
	{ '~', "\033[33m", "waiting", "waiting", "#ffbf00" },
	{ '?', "\033[2m", "stale", "stale", "#999999" },
	{ '.', NULL, "free", "free", "#f4f4f4" },
};

static const struct glyph *glyph_of(char c)
{
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++)
		if (glyphs[i].c == c)
			return &glyphs[i];
	return &glyphs[ARRAY_SIZE(glyphs) - 1];
}

static void span_range(const struct span *sp, char *buf, size_t n)
{
	if (sp->len)
		snprintf(buf, n, "%llu-%llu", (unsigned long long)sp->start,
			 (unsigned long long)(sp->start + sp->len - 1));
	else
		snprintf(buf, n, "%llu-EOF", (unsigned long long)sp->start);
}

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
static void svg_regions(FILE *f, const struct span *sp, size_t nsp, uint64_t extent, double x0, double y0,
			double bar_w, double bar_h)
{
	for (size_t g = ARRAY_SIZE(glyphs); g-- > 0;) {
		for (size_t i = 0; i < nsp; i++) {
			if (sp[i].glyph != glyphs[g].c)
				continue;
			uint64_t end = sp[i].len ? sp[i].start + sp[i].len : extent;
			double x = x0 + bar_w * (double)sp[i].start / (double)extent;
			double w = bar_w * (double)(end - sp[i].start) / (double)extent;
			char range[64];
			span_range(&sp[i], range, sizeof(range));
			fprintf(f, "<rect class=\"%s\" x=\"%.2f\" y=\"%.0f\" width=\"%.2f\" height=\"%.0f\" fill=\"%s\">"
				   "<title>%s ", glyphs[g].svg_class, x, y0, w < 1 ? 1 : w, bar_h, glyphs[g].fill, range);
			xml_text(f, sp[i].desc);
			fputs("</title></rect>\n", f);
		}
	}
}

/* The SVG legend at height y, then the holders, a line each. */
static void svg_legend(FILE *f, const struct span *sp, size_t nsp, double x0, double y, int line_h)
{
	double lx = x0;

	for (size_t g = 0; g < ARRAY_SIZE(glyphs); g++) {
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
static int write_svg(const char *file, const char *title, uint64_t size, uint64_t extent, const struct span *sp,
		     size_t nsp, long width)
{
	const double bar_w = (double)width * 8, x0 = 10, y0 = 34, bar_h = 28;
	const int line_h = 16;
	int height = (int)(y0 + bar_h + 24 + line_h * (2 + (int)nsp) + 10);
	double svg_w = bar_w + 2 * x0, legend_w = x0;
	FILE *f = fopen(file, "we");

	if (!f)
		return -errno;
	for (size_t g = 0; g < ARRAY_SIZE(glyphs); g++)
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
	svg_regions(f, sp, nsp, extent, x0, y0, bar_w, bar_h);
	double y = y0 + bar_h + 14;
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">0</text>\n<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%llu</text>\n",
		x0, y, x0 + bar_w, y, (unsigned long long)(extent - 1));
	svg_legend(f, sp, nsp, x0, y + line_h + 4, line_h);
	fputs("</svg>\n", f);
	if (ferror(f) | (fclose(f) != 0))
		return -EIO;
	return 0;
}

static int precedence(char c)
{
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++)
		if (glyphs[i].c == c)
			return (int)(ARRAY_SIZE(glyphs) - i);
	return 0;
}

static const char *color_of(char c)
{
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++)
		if (glyphs[i].c == c)
			return glyphs[i].color;
	return NULL;
}

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void map_defaults(struct map_opts *m)
{
	if (m->color < 0)
		m->color = isatty(STDOUT_FILENO);
	if (!m->width) {
		struct winsize ws;
		const char *cols = getenv("COLUMNS");
		if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 12)
			m->width = ws.ws_col;
		else if (cols && atol(cols) >= 12 && atol(cols) <= 1000)
			m->width = atol(cols);
		else
			m->width = 80;
	}
}

const struct option map_longopts[] = {
	{ "width", required_argument, NULL, 'w' },
	{ "color", optional_argument, NULL, OPT_COLOR },
	{ "svg", required_argument, NULL, OPT_SVG },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void help_map(void)
{
	printf("\nUsage:\n"
	       " %s map [options] PATH\n"
	       "\nThe file as a bar scaled to the terminal: read and write regions, waiters,\n"
	       "stale entries and kernel locks of other programs, with a legend and the\n"
	       "holders listed under it.\n"
	       "\nOptions:\n"
	       " -w, --width <n>         width of the picture (default: the terminal's, or 80)\n"
	       "     --color[=<when>]    colour the bar: auto (on a terminal), always, never\n"
	       "     --svg <file>        also write the picture as SVG to FILE\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}


/* map's or watch's options (opts, help, name: the command's own); returns
 * the index of PATH. */
int map_options(int argc, char **argv, struct map_opts *m, const struct option *opts, void (*help)(void),
		const char *name)
{
	int c;

	m->width = 0;
	m->color = -1;
	m->count = 0;
	m->svg = NULL;
	while ((c = getopt_long(argc, argv, ":w:h", opts, NULL)) != -1) {
		const char *err = NULL;
		switch (c) {
		case 'w':
			m->width = (long)strtonum(optarg, 12, 1000, &err);
			if (err)
				usage_err("width '%s' is %s (12 to 1000)", optarg, err);
			break;
		case OPT_COLOR:
			if (!optarg || !strcmp(optarg, "always"))
				m->color = 1;
			else if (!strcmp(optarg, "never"))
				m->color = 0;
			else if (!strcmp(optarg, "auto"))
				m->color = -1;
			else
				usage_err("--color must be auto, always or never, not '%s'", optarg);
			break;
		case OPT_COUNT:
			m->count = (long)strtonum(optarg, 1, LONG_MAX, &err);
			if (err)
				usage_err("count '%s' is %s", optarg, err);
			break;
		case OPT_SVG:
			m->svg = optarg;
			break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h':
			help();
			exit(0);
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("%s needs one PATH", name);
	map_defaults(m);
	return optind;
}

/* A picture: the regions of one file, sorted by start. */
struct picture {
	struct stat st;
	struct span *sp;
	size_t n, cap;
	uint64_t extent; /* the bar covers [0, extent): the file, or further if regions do */
};

static struct span *new_span(struct picture *pic, uint64_t start, uint64_t len, char glyph)
{
	GROW(pic->sp, pic->n, pic->cap);
	struct span *x = &pic->sp[pic->n++];
	x->start = start;
	x->len = len;
	x->glyph = glyph;
	return x;
}

/* The table's entries, stale and waiting ones included. */
static void table_spans(struct picture *pic, const struct entries *e)
{
	for (size_t i = 0; i < e->n; i++) {
		const struct smt_slot *s = &e->v[i];
		char glyph = !strcmp(e->state[i], "stale") ? '?' : !strcmp(e->state[i], "waiting") ? '~'
							 : s->mode == SMT_MODE_WRITE ? '#' : '=';
		struct span *x = new_span(pic, s->off, s->len, glyph);
		snprintf(x->desc, sizeof(x->desc), "%-5s %-7s pid %d (%s)%s%s%s", s->mode == SMT_MODE_WRITE ? "WRITE" : "READ",
			 e->state[i], s->pid, s->comm, *s->tag ? " tag \"" : "", s->tag, *s->tag ? "\"" : "");
	}
}

/* Kernel locks that are not safemap's own (in table mode: not the owners'
 * fences and identity bytes, which are no regions). */
static void kernel_spans(struct picture *pic, const struct entries *e, bool tm)
{
	struct klocks kl = { 0 };

	kernel_locks(&kl, &(struct fileid){ pic->st.st_dev, pic->st.st_ino }, 1);
	for (size_t i = 0; i < kl.n; i++) {
		const struct klock *k = &kl.v[i];
		char comm[32];
		if (k->dev != pic->st.st_dev || k->ino != pic->st.st_ino ||
		    (tm ? tm_kind(k) != TM_FOREIGN : covered(k, e)))
			continue;
		long pid = owner_of(k);
		comm_of(pid, comm, sizeof(comm));
		struct span *x = new_span(pic, k->start, k->len, k->blocked ? '~' : 'K');
		snprintf(x->desc, sizeof(x->desc), "%-5s %-7s pid %ld (%s) %s", k->write ? "WRITE" : "READ",
			 tm ? tm_state(k) : k->blocked ? "waiting" : "held", pid, comm, k->type);
	}
	klocks_free(&kl);
}

/* Read path's regions into pic; 0, or the exit status. */
static int read_picture(const char *path, struct picture *pic)
{
	struct smt_table t;
	struct entries e = { 0 };
	char tpath[PATH_MAX];
	const char *which;
	int rc = open_table(path, false, &pic->st, &t, tpath, sizeof(tpath), &which);

	if (rc < 0 && rc != -E_NOTABLE) {
		warnx_("%s: %s", which, describe(rc));
		return EXIT_ERROR;
	}
	bool tm = false; /* table mode: the owners' fences are not regions */
	if (rc == 0) {
		tm = table_mode(&t);
		read_entries(&t, &e, true);
		smt_detach(&t);
	}
	table_spans(pic, &e);
	kernel_spans(pic, &e, tm);
	entries_free(&e);
	qsort(pic->sp, pic->n, sizeof(*pic->sp), span_cmp);
	pic->extent = (uint64_t)pic->st.st_size;
	for (size_t i = 0; i < pic->n; i++) {
		uint64_t end = pic->sp[i].len ? pic->sp[i].start + pic->sp[i].len : pic->sp[i].start + 1;
		if (end > pic->extent)
			pic->extent = end;
	}
	if (!pic->extent)
		pic->extent = 1;
	return 0;
}

/* The bar of cells, each the glyph of the strongest region in it. */
static char *draw_bar(const struct picture *pic, size_t cells)
{
	char *bar = xrealloc(NULL, cells + 1, 1);
	uint64_t extent = pic->extent;

	memset(bar, '.', cells);
	bar[cells] = '\0';
	for (size_t i = 0; i < pic->n; i++) {
		const struct span *sp = &pic->sp[i];
		uint64_t end = sp->len ? sp->start + sp->len : extent;
		/* every cell that holds a byte of the region, so that a
		 * one-byte lock still shows */
		size_t first = (size_t)((unsigned __int128)sp->start * cells / extent);
		size_t last = (size_t)(((unsigned __int128)end * cells + extent - 1) / extent);
		for (size_t k = first; k < last && k < cells; k++)
			if (precedence(sp->glyph) > precedence(bar[k]))
				bar[k] = sp->glyph;
	}
	return bar;
}

static void print_picture(const struct picture *pic, const char *shown, const char *bar, size_t cells,
			  bool color)
{
	char num[32];

	printf("%s: %llu bytes, %zu cells of ~%llu bytes\n", shown, (unsigned long long)pic->st.st_size, cells,
	       (unsigned long long)((pic->extent + cells - 1) / cells));
	putchar('[');
	for (size_t k = 0; k < cells; k++) {
		const char *col = color ? color_of(bar[k]) : NULL;
		if (col)
			printf("%s%c\033[0m", col, bar[k]);
		else
			putchar(bar[k]);
	}
	printf("]\n");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)(pic->extent - 1));
	printf(" 0%*s\n", (int)(cells - 1), num);
	for (size_t i = 0; i < ARRAY_SIZE(glyphs); i++) {
		const char *col = color ? glyphs[i].color : NULL;
		printf("%s%s%c%s %s", i ? "  " : " ", col ? col : "", glyphs[i].c, col ? "\033[0m" : "", glyphs[i].name);
	}
	printf("\n");
	for (size_t i = 0; i < pic->n; i++) {
		char range[64];
		span_range(&pic->sp[i], range, sizeof(range));
		printf(" %c %-21s %s\n", pic->sp[i].glyph, range, pic->sp[i].desc);
	}
}

/* One picture of path, on stdout (and as SVG if asked); 0 or the exit
 * status. */
int draw_map(const char *path, const struct map_opts *m)
{
	struct picture pic = { 0 };
	size_t cells = (size_t)m->width - 2;
	int rc;

	if ((rc = read_picture(path, &pic)) != 0)
		return rc;
	char *bar = draw_bar(&pic, cells), *abs = realpath(path, NULL);
	const char *shown = abs ? abs : path;
	print_picture(&pic, shown, bar, cells, m->color);
	if (m->svg &&
	    (rc = write_svg(m->svg, shown, (uint64_t)pic.st.st_size, pic.extent, pic.sp, pic.n, m->width)) < 0) {
		warnx_("%s: %s", m->svg, strerror(-rc));
		rc = EXIT_ERROR;
	} else
		rc = 0;
	free(bar);
	free(pic.sp);
	free(abs);
	return rc;
}

int cmd_map(int argc, char **argv)
{
	struct map_opts m;
	int i = map_options(argc, argv, &m, map_longopts, help_map, "map");

	return draw_map(argv[i], &m);
}
