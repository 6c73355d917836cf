/* SPDX-License-Identifier: MIT */
/*
 * main.c - lockctl's entry: the command table (as kmod's tools/kmod.c),
 * the global options (stopping at the command: its options are its own),
 * the help, and the dispatch to the command's file.  lockctl.h lists the
 * files and what lives in each.
 */
#include <stdio.h>
#include <string.h>

#include "lockctl.h"

static int cmd_help(int argc, char **argv);
static int cmd_completion(int argc, char **argv);

static const struct option main_opts[] = {
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "version", no_argument, NULL, 'V' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const struct option no_opts[] = { { NULL, 0, NULL, 0 } };

static const struct command commands[] = {
	{ "list", cmd_list, list_opts, "regions held in files: the lock table joined with the kernel's locks" },
	{ "check", cmd_check, check_opts, "is a region free? if not, who holds it" },
	{ "hold", cmd_hold, hold_opts, "hold a region while a command runs (like flock(1))" },
	{ "reap", cmd_reap, reap_opts, "remove table entries whose holder is gone" },
	{ "info", cmd_info, info_opts, "the table's header, capacity, generation and consistency" },
	{ "log", cmd_log, log_opts, "a log's retained range, bytes on disk and bindings" },
	{ "map", cmd_map, map_longopts, "a picture of the file's regions: who holds what" },
	{ "watch", cmd_watch, watch_longopts, "the picture, redrawn every second" },
	{ "completion", cmd_completion, no_opts, "print the bash completion script (completion bash)" },
	{ "help", cmd_help, no_opts, "this help" },
};


/* `lockctl completion bash` > ${datadir}/bash-completion/completions/lockctl */
static int cmd_completion(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[1], "bash") != 0)
		usage_err("completion needs the shell: bash");
	completion_bash(commands, ARRAY_SIZE(commands), main_opts);
	return 0;
}

static void help(void)
{
	printf("\nUsage:\n"
	       " %s [options] <command> [command options] [args]\n"
	       "\nInspect and hold regions of files shared through safemap.\n"
	       "\nCommands:\n",
	       prog);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		printf("  %-8s %s\n", commands[i].name, commands[i].help);
	printf("\nOptions:\n"
	       "     --table-dir <dir>   tables live in DIR (default: $SAFEMAP_TABLE_DIR, or PATH.smlock)\n"
	       " -V, --version           display version\n"
	       " -h, --help              display this help\n"
	       "\n'%s <command> --help' describes a command's options.\n"
	       "\nExit status: 0 success (check: free), 1 conflict (check, hold), 2 bad usage,\n"
	       "3 the file or its table could not be read; hold exits with COMMAND's status.\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	help();
	return 0;
}

int main(int argc, char **argv)
{
	int c;

	opterr = 0; /* bad_option says it on one line */
	/* "+": stop at the command; its options are its own */
	while ((c = getopt_long(argc, argv, "+:hV", main_opts, NULL)) != -1) {
		switch (c) {
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'V': printf("%s from safemap %s\n", prog, PACKAGE_VERSION); return 0;
		case 'h': help(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (optind >= argc)
		usage_err("missing command");
	const char *name = argv[optind];
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(commands[i].name, name) != 0)
			continue;
		cmd_name = name;
		argc -= optind;
		argv += optind;
		optind = 0; /* a fresh getopt for the command */
		return commands[i].fn(argc, argv);
	}
	usage_err("unknown command '%s'", name);
}
