/* SPDX-License-Identifier: MIT */
/*
 * map.c - lockctl map: the file as a bar scaled to the terminal, each
 * cell showing the strongest region that touches it (write over kernel
 * lock over read over waiting over stale), with a scale, a legend and the
 * holders listed under it; optionally the same picture as SVG (svg.c).
 * layout.c places the bytes on the cells; watch.c redraws the picture.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <bsd/stdlib.h>

#include "map.h"

static const char *color_of(char c)
{
	for (size_t i = 0; i < nglyphs; i++)
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
	       "holders listed under it.  Long empty stretches past the end of the file\n"
	       "are left out (one '/' cell each).\n"
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

static struct span *new_span(struct picture *pic, uint64_t start, uint64_t len, char glyph)
{
	GROW(pic->sp, pic->n, pic->cap);
	struct span *x = &pic->sp[pic->n++];
	x->start = start;
	x->len = len;
	x->glyph = glyph;
	return x;
}

/* The table's entries, stale and waiting ones included; SM_NOLOCK
 * mappings hold no region (lockctl list shows them). */
static void table_spans(struct picture *pic, const struct entries *e)
{
	for (size_t i = 0; i < e->n; i++) {
		const struct smt_slot *s = &e->v[i];
		if (SMT_STATE(s->state) == SMT_UNLOCKED)
			continue;
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
	if (pic->n) /* qsort wants an array, even of none */
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
static char *draw_bar(const struct picture *pic, const struct layout *l)
{
	char *bar = xrealloc(NULL, l->cells + 1, 1);

	memset(bar, '.', l->cells);
	bar[l->cells] = '\0';
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].gap)
			bar[l->v[i].c0] = GAP_GLYPH;
	for (size_t i = 0; i < pic->n; i++) {
		const struct span *sp = &pic->sp[i];
		size_t first, last;
		/* every cell that holds a byte of the region, so that a
		 * one-byte lock still shows */
		layout_cells(l, sp->start, sp->len ? sp->start + sp->len : pic->extent, &first, &last);
		for (size_t k = first; k < last && k < l->cells; k++)
			if (precedence(sp->glyph) > precedence(bar[k]))
				bar[k] = sp->glyph;
	}
	return bar;
}

static void print_legend(const struct layout *l, bool color)
{
	for (size_t i = 0; i < nglyphs; i++) {
		const char *col = color ? glyphs[i].color : NULL;
		printf("%s%s%c%s %s", i ? "  " : " ", col ? col : "", glyphs[i].c, col ? "\033[0m" : "", glyphs[i].name);
	}
	if (l->left_out)
		printf("  %c left out", GAP_GLYPH);
	printf("\n");
}

static void print_picture(const struct picture *pic, const struct layout *l, const char *shown, const char *bar,
			  bool color)
{
	char num[32];

	printf("%s: %llu bytes, %zu cells of ~%llu bytes", shown, (unsigned long long)pic->st.st_size, l->cells,
	       (unsigned long long)l->per_cell);
	if (l->left_out)
		printf(", %llu empty bytes past the end left out (%c)", (unsigned long long)l->left_out, GAP_GLYPH);
	printf("\n");
	putchar('[');
	for (size_t k = 0; k < l->cells; k++) {
		const char *col = color ? color_of(bar[k]) : NULL;
		if (col)
			printf("%s%c\033[0m", col, bar[k]);
		else
			putchar(bar[k]);
	}
	printf("]\n");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)(pic->extent - 1));
	printf(" 0%*s\n", (int)(l->cells - 1), num);
	print_legend(l, color);
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
	struct layout l;
	int rc;

	if ((rc = read_picture(path, &pic)) != 0)
		return rc;
	layout_build(&l, &pic, (size_t)m->width - 2);
	char *bar = draw_bar(&pic, &l), *abs = realpath(path, NULL);
	const char *shown = abs ? abs : path;
	print_picture(&pic, &l, shown, bar, m->color);
	if (m->svg && (rc = write_svg(m->svg, shown, &pic, &l, m->width)) < 0) {
		warnx_("%s: %s", m->svg, strerror(-rc));
		rc = EXIT_ERROR;
	} else
		rc = 0;
	free(bar);
	free(pic.sp);
	free(abs);
	layout_free(&l);
	return rc;
}

int cmd_map(int argc, char **argv)
{
	struct map_opts m;
	int i = map_options(argc, argv, &m, map_longopts, help_map, "map");

	return draw_map(argv[i], &m);
}
