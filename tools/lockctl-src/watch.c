/* SPDX-License-Identifier: MIT */
/*
 * watch.c - lockctl watch: map's picture, redrawn every second.  Slots
 * change through a shared mapping, which inotify does not report, so a
 * tick it is (never a busy loop).
 */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "lockctl.h"

static void help_watch(void)
{
	printf("\nUsage:\n"
	       " %s watch [options] PATH\n"
	       "\nThe map of PATH, redrawn every second as locks come and go.\n"
	       "\nOptions:\n"
	       "     --count <n>         draw n pictures, then exit\n"
	       " -w, --width <n>         width of the picture (default: the terminal's, or 80)\n"
	       "     --color[=<when>]    colour the bar: auto (on a terminal), always, never\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}


const struct option watch_longopts[] = {
	{ "width", required_argument, NULL, 'w' },
	{ "color", optional_argument, NULL, OPT_COLOR },
	{ "count", required_argument, NULL, OPT_COUNT },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cmd_watch(int argc, char **argv)
{
	struct map_opts m;
	int i = map_options(argc, argv, &m, watch_longopts, help_watch, "watch"), rc = 0;
	bool tty = isatty(STDOUT_FILENO);

	for (long n = 0; !m.count || n < m.count; n++) {
		if (n) {
			struct timespec ts = { 1, 0 };
			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
		if (tty)
			fputs("\033[H\033[2J", stdout); /* like watch(1) */
		else if (n)
			putchar('\n');
		if ((rc = draw_map(argv[i], &m)) != 0)
			break;
		fflush(stdout);
	}
	return rc;
}
