/* SPDX-License-Identifier: MIT */
/*
 * hold.c - the commands that change a lock table: lockctl hold takes a
 * region through the library (as any safemap user) and holds it while a
 * command runs, like flock(1); lockctl reap removes the entries whose
 * holder is gone.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lockctl.h"

static void help_hold(void)
{
	printf("\nUsage:\n"
	       " %s hold [options] PATH OFF LEN r|w -- COMMAND [ARG...]\n"
	       "\nHold [OFF, OFF+LEN) for reading (r) or writing (w) while COMMAND runs,\n"
	       "like flock(1); exit with COMMAND's status.\n"
	       "\nOptions:\n"
	       " -t, --tag <tag>         the tag to register\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

const struct option hold_opts[] = {
	{ "tag", required_argument, NULL, 't' },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};
/* Open path as a safemap user would.  Owners attached in table-authority
 * mode refuse a kernel-mode opener: join them in their mode. */
static int hold_open(const char *path, bool write, sm_options *o, sm_file **f)
{
	int rc = sm_open(path, write ? SM_RDWR : SM_RDONLY, o, f);

	if (rc == -EPROTO) {
		o->flags |= SM_OPT_TABLE_LOCKS;
		rc = sm_open(path, write ? SM_RDWR : SM_RDONLY, o, f);
	}
	return rc;
}

/* The region could not be taken: say why, and who holds it. */
static int hold_refused(sm_file *f, const char *path, uint64_t off, uint64_t len, int rc)
{
	warnx_("%s %llu+%llu: %s", path, (unsigned long long)off, (unsigned long long)len, sm_strerror(rc));
	int n = rc == -EBUSY ? sm_holders(f, off, len, NULL, 0) : 0;
	sm_holder *h = n > 0 ? xrealloc(NULL, (size_t)n, sizeof(*h)) : NULL;
	if (h)
		n = sm_holders(f, off, len, h, (size_t)n);
	for (int i = 0; h && i < n; i++)
		warnx_("held by pid %d (%s)%s%s%s", h[i].pid, h[i].comm, *h[i].tag ? " tag \"" : "", h[i].tag,
		       *h[i].tag ? "\"" : "");
	free(h);
	return rc == -EBUSY ? EXIT_CONFLICT : rc == -EINVAL || rc == -ERANGE ? EXIT_USAGE : EXIT_ERROR;
}

/* Run cmd and wait for it; its wait status. */
static int run_command(char **cmd)
{
	int status;
	pid_t pid;

	/* our descriptors are O_CLOEXEC, so the command cannot keep the
	 * region */
	if ((pid = fork()) == 0) {
		execvp(cmd[0], cmd);
		warnx_("%s: %s", cmd[0], strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		warnx_("fork: %s", strerror(errno));
		return EXIT_ERROR << 8;
	}
	signal(SIGINT, SIG_IGN);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

int cmd_hold(int argc, char **argv)
{
	sm_options o = { .size = sizeof(o) };
	sm_file *f;
	sm_slice *s;
	uint64_t off, len;
	bool write;
	int c, rc, status, dash;

	/* COMMAND keeps its own options: parse only what comes before "--"
	 * (getopt would permute "--" away) */
	for (dash = 1; dash < argc && strcmp(argv[dash], "--") != 0; dash++)
		;
	while ((c = getopt_long(dash, argv, ":t:h", hold_opts, NULL)) != -1) {
		switch (c) {
		case 't': o.tag = optarg; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_hold(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (dash - optind != 4 || dash + 1 >= argc)
		usage_err("hold needs PATH OFF LEN r|w -- COMMAND");
	char **cmd = argv + dash + 1;
	argv += optind;
	parse_region(argv, &off, &len, &write);
	o.table_dir = table_dir;
	if ((rc = hold_open(argv[0], write, &o, &f)) < 0) {
		warnx_("%s: %s", argv[0], sm_strerror(rc));
		return rc == -EINVAL || rc == -ERANGE ? EXIT_USAGE : EXIT_ERROR;
	}
	rc = write ? sm_map_write(f, off, len, 0, &s) : sm_map_read(f, off, len, 0, &s);
	if (rc < 0) {
		rc = hold_refused(f, argv[0], off, len, rc);
		sm_close(f);
		return rc;
	}
	/* like flock(1): the region is held while the command runs */
	status = run_command(cmd);
	sm_release(s);
	sm_close(f);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static void help_reap(void)
{
	printf("\nUsage:\n"
	       " %s reap [options] PATH\n"
	       "\nRemove the table entries whose holder is gone, and invalid ones.\n"
	       "\nOptions:\n"
	       "     --bound             also a dead process's changes bound to a log, which\n"
	       "                         otherwise stay held until a recovery pass redoes them\n"
	       "                         (their changes then exist only in the log)\n"
	       "     --dry-run           only count them\n"
	       "     --table-dir <dir>   tables live in DIR\n"
	       " -h, --help              display this help\n"
	       "\nSee lockctl(1).\n",
	       prog);
}

const struct option reap_opts[] = {
	{ "bound", no_argument, NULL, OPT_BOUND },
	{ "dry-run", no_argument, NULL, OPT_DRY },
	{ "table-dir", required_argument, NULL, OPT_TABLE_DIR },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cmd_reap(int argc, char **argv)
{
	struct smt_table t;
	struct stat st;
	char tpath[PATH_MAX];
	const char *which;
	bool dry = false, bound = false;
	int c, rc, nb = 0;

	while ((c = getopt_long(argc, argv, ":h", reap_opts, NULL)) != -1) {
		switch (c) {
		case OPT_BOUND: bound = true; break;
		case OPT_DRY: dry = true; break;
		case OPT_TABLE_DIR: table_dir = optarg; break;
		case 'h': help_reap(); return 0;
		default: bad_option(c, argv);
		}
	}
	if (argc - optind != 1)
		usage_err("reap needs one PATH");
	argv += optind;
	if ((rc = open_table(argv[0], !dry, &st, &t, tpath, sizeof(tpath), &which)) < 0) {
		warnx_("%s: %s", which, describe(rc));
		return EXIT_ERROR;
	}
	rc = smt_reap(&t, dry);
	if (rc >= 0 && bound)
		nb = smt_fence_drop_dead(&t, dry);
	smt_detach(&t);
	if (rc < 0) {
		warnx_("%s: %s", tpath, strerror(-rc));
		return EXIT_ERROR;
	}
	printf("%s %d stale %s\n", dry ? "would reap" : "reaped", rc, rc == 1 ? "entry" : "entries");
	if (bound)
		printf("%s %d bound %s of dead processes (their changes exist only in the log: "
		       "run recovery before writing those ranges)\n",
		       dry ? "would drop" : "dropped", nb, nb == 1 ? "entry" : "entries");
	return 0;
}
