/* SPDX-License-Identifier: MIT */
/*
 * fdcheck PATH - exit 0 if this process has no descriptor open on PATH,
 * 1 if it inherited one (test_procs execs it to check O_CLOEXEC).
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char real[PATH_MAX], link[PATH_MAX], target[PATH_MAX];
	struct dirent *d;
	DIR *dir;
	int found = 0;

	if (argc != 2 || !realpath(argv[1], real))
		return 2;
	if (!(dir = opendir("/proc/self/fd")))
		return 2;
	while ((d = readdir(dir))) {
		ssize_t n;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", d->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, real) == 0) {
			fprintf(stderr, "fdcheck: inherited fd %s on %s\n", d->d_name, real);
			found = 1;
		}
	}
	closedir(dir);
	return found;
}
