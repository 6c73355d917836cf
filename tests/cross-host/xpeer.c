/* SPDX-License-Identifier: MIT */
/*
 * xpeer - a safemap process driven over a pipe (or a serial line) for the
 * cross-host suite.  Public API only, so it links statically for a
 * user-mode-Linux guest.  One command per line, one answer per line:
 * "ok [VALUES...]" or "err -ERRNO".
 *
 *   open PATH rw|ro [refuse|table]  sm_open; "refuse" adds SM_OPT_REFUSE_NETFS,
 *                                   "table" asks for table-authority mode
 *                                   (SM_OPT_TABLE_LOCKS) where this tree has it
 *   map r|w OFF LEN                 map a slice: "ok ID"
 *   release ID                      sm_release
 *   put ID OFF VALUE                sm_put_u64_le
 *   commit ID                       sm_commit (SM_SYNC)
 *   holders OFF LEN                 sm_holders: "ok N PID:r|w:held|waiting|stale|remote:TAG ..."
 *   kernel OFF LEN r|w              F_OFD_GETLK on a separate description:
 *                                   "ok free" or "ok held r|w PID"
 *   ofd r|w|u OFF LEN               plain F_OFD_SETLK on a separate description
 *   bench N                         N F_OFD_SETLK lock+unlock pairs on the open
 *                                   file's path (a fresh description): "ok NS_PER_PAIR"
 *   close                           sm_close (slices released first)
 *   pid                             "ok PID"
 *   sh CMDLINE                      run CMDLINE with /bin/sh (lockctl in a guest):
 *                                   "ok STATUS OUT<RS>ERR", newlines sent as
 *                                   <US> (0x1f), RS is 0x1e
 *   crash                           SIGKILL itself (no answer: the pipe closes)
 *   quit                            release everything, close, exit 0
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <safemap.h>

#define MAXS 64

static sm_file *f;
static sm_slice *slices[MAXS];
static int rawfd = -1;
static char path[4096];

static void reply(int rc, const char *vals)
{
	if (rc < 0)
		printf("err %d\n", rc);
	else if (vals && *vals)
		printf("ok %s\n", vals);
	else
		printf("ok\n");
	fflush(stdout);
}

static int raw(void)
{
	if (rawfd < 0 && (rawfd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return -errno;
	return rawfd;
}

/* Runs cmd; its output and error output, newlines as 0x1f, into out. */
static int run_sh(const char *cmd, char *out, size_t cap)
{
	int po[2], pe[2], st = 0;
	size_t n;
	pid_t pid;

	if (pipe2(po, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(pe, O_CLOEXEC) < 0) {
		close(po[0]);
		close(po[1]);
		return -errno;
	}
	if ((pid = fork()) == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	n = (size_t)snprintf(out, cap, "0 ");
	for (int k = 0; k < 2; k++) {
		char sink[256];
		ssize_t r;
		int fd = k ? pe[0] : po[0];
		if (k && n + 1 < cap)
			out[n++] = 0x1e;
		for (;;) {
			size_t room = cap - n - 1;
			r = room ? read(fd, out + n, room) : read(fd, sink, sizeof(sink));
			if (r <= 0)
				break;
			if (room)
				n += (size_t)r;
		}
		close(fd);
	}
	out[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (out[i] == '\n')
			out[i] = 0x1f;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -ECHILD;
	out[0] = (char)('0' + (WIFEXITED(st) ? (WEXITSTATUS(st) > 9 ? 9 : WEXITSTATUS(st)) : 9));
	return 0;
}

static const char *state_name(int state)
{
	switch (state) {
	case SM_HELD: return "held";
	case SM_WAITING: return "waiting";
	case SM_STALE: return "stale";
#ifdef SM_REMOTE
	case SM_REMOTE: return "remote";
#endif
	default: return "other";
	}
}

int main(void)
{
	struct rlimit no_core = { 0, 0 };
	char line[1024], raw_line[1024], out[8192];

	setrlimit(RLIMIT_CORE, &no_core); /* crashes on purpose */
	while (fgets(line, sizeof(line), stdin)) {
		char *tok[8];
		int n = 0, rc;
		snprintf(raw_line, sizeof(raw_line), "%s", line);
		raw_line[strcspn(raw_line, "\r\n")] = '\0';
		for (char *save = NULL, *t = strtok_r(line, " \t\r\n", &save); t && n < 8;
		     t = strtok_r(NULL, " \t\r\n", &save))
			tok[n++] = t;
		if (n == 0)
			continue;
		const char *c = tok[0];
		out[0] = '\0';
		if (!strcmp(c, "open") && n >= 3) {
			sm_options o = { .size = sizeof(o), .tag = "xpeer" };
			rc = 0;
			if (n >= 4 && !strcmp(tok[3], "refuse"))
				o.flags |= SM_OPT_REFUSE_NETFS;
			if (n >= 4 && !strcmp(tok[3], "table")) {
#ifdef SM_OPT_TABLE_LOCKS
				o.flags |= SM_OPT_TABLE_LOCKS;
#else
				rc = -ENOSYS; /* this tree has no table-authority mode */
#endif
			}
			snprintf(path, sizeof(path), "%s", tok[1]);
			if (rc == 0)
				rc = sm_open(path, !strcmp(tok[2], "rw") ? SM_RDWR | SM_CREATE : SM_RDONLY, &o, &f);
			if (rc < 0)
				f = NULL;
			reply(rc, NULL);
		} else if (!strcmp(c, "map") && n == 4) {
			sm_slice *s = NULL;
			uint64_t off = strtoull(tok[2], NULL, 0), len = strtoull(tok[3], NULL, 0);
			rc = tok[1][0] == 'w' ? sm_map_write(f, off, len, SM_EXTEND, &s) : sm_map_read(f, off, len, 0, &s);
			if (rc == 0) {
				rc = -ENOMEM;
				for (int i = 0; i < MAXS; i++)
					if (!slices[i]) {
						slices[i] = s;
						rc = i;
						break;
					}
				if (rc < 0)
					sm_release(s);
			}
			snprintf(out, sizeof(out), "%d", rc);
			reply(rc, out);
		} else if (!strcmp(c, "release") && n == 2) {
			int i = atoi(tok[1]);
			rc = i >= 0 && i < MAXS && slices[i] ? sm_release(slices[i]) : -EINVAL;
			if (i >= 0 && i < MAXS)
				slices[i] = NULL;
			reply(rc, NULL);
		} else if (!strcmp(c, "put") && n == 4) {
			int i = atoi(tok[1]);
			rc = i >= 0 && i < MAXS && slices[i]
				     ? sm_put_u64_le(slices[i], strtoull(tok[2], NULL, 0), strtoull(tok[3], NULL, 0))
				     : -EINVAL;
			reply(rc, NULL);
		} else if (!strcmp(c, "commit") && n == 2) {
			int i = atoi(tok[1]);
			reply(i >= 0 && i < MAXS && slices[i] ? sm_commit(slices[i], SM_SYNC) : -EINVAL, NULL);
		} else if (!strcmp(c, "holders") && n == 3) {
			sm_holder h[8];
			rc = sm_holders(f, strtoull(tok[1], NULL, 0), strtoull(tok[2], NULL, 0), h, 8);
			if (rc >= 0) {
				snprintf(out, sizeof(out), "%d", rc);
				for (int i = 0; i < rc && i < 8; i++) {
					size_t l = strlen(out);
					snprintf(out + l, sizeof(out) - l, " %d:%s:%s:%s", (int)h[i].pid,
						 h[i].mode == SM_MODE_WRITE ? "w" : "r", state_name(h[i].state),
						 h[i].tag[0] ? h[i].tag : "-");
				}
			}
			reply(rc, out);
		} else if (!strcmp(c, "kernel") && n == 4) {
			struct flock fl = { .l_whence = SEEK_SET, .l_start = strtoll(tok[1], NULL, 0),
					    .l_len = strtoll(tok[2], NULL, 0),
					    .l_type = tok[3][0] == 'w' ? F_WRLCK : F_RDLCK };
			/* a description of its own: never this process's safemap locks */
			int fd = open(path, O_RDWR | O_CLOEXEC);
			rc = fd < 0 ? -errno : fcntl(fd, F_OFD_GETLK, &fl) < 0 ? -errno : 0;
			if (fd >= 0)
				close(fd);
			if (rc == 0 && fl.l_type == F_UNLCK)
				snprintf(out, sizeof(out), "free");
			else if (rc == 0)
				snprintf(out, sizeof(out), "held %s %d", fl.l_type == F_WRLCK ? "w" : "r", (int)fl.l_pid);
			reply(rc, out);
		} else if (!strcmp(c, "ofd") && n == 4) {
			struct flock fl = { .l_whence = SEEK_SET, .l_start = strtoll(tok[2], NULL, 0),
					    .l_len = strtoll(tok[3], NULL, 0) };
			fl.l_type = tok[1][0] == 'w' ? F_WRLCK : tok[1][0] == 'r' ? F_RDLCK : F_UNLCK;
			if ((rc = raw()) >= 0)
				rc = fcntl(rawfd, F_OFD_SETLK, &fl) == 0 ? 0
				     : errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
			reply(rc, NULL);
		} else if (!strcmp(c, "bench") && n == 2) {
			long iters = atol(tok[1]);
			struct flock lk = { .l_whence = SEEK_SET, .l_start = 1 << 20, .l_len = 4096, .l_type = F_WRLCK };
			struct flock un = lk;
			struct timespec a, b;
			int fd = open(path, O_RDWR | O_CLOEXEC);
			un.l_type = F_UNLCK;
			rc = fd < 0 ? -errno : 0;
			clock_gettime(CLOCK_MONOTONIC, &a);
			for (long i = 0; rc == 0 && i < iters; i++)
				if (fcntl(fd, F_OFD_SETLK, &lk) < 0 || fcntl(fd, F_OFD_SETLK, &un) < 0)
					rc = -errno;
			clock_gettime(CLOCK_MONOTONIC, &b);
			if (fd >= 0)
				close(fd);
			if (rc == 0 && iters > 0)
				snprintf(out, sizeof(out), "%.0f",
					 ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)iters);
			reply(rc, out);
		} else if (!strcmp(c, "close")) {
			for (int i = 0; i < MAXS; i++)
				if (slices[i]) {
					sm_release(slices[i]);
					slices[i] = NULL;
				}
			reply(f ? sm_close(f) : -EBADF, NULL);
			f = NULL;
		} else if (!strcmp(c, "pid")) {
			snprintf(out, sizeof(out), "%d", (int)getpid());
			reply(0, out);
		} else if (!strcmp(c, "sh") && n >= 2) {
			rc = run_sh(strstr(raw_line, "sh") + 3, out, sizeof(out));
			reply(rc, out);
		} else if (!strcmp(c, "crash")) {
			raise(SIGKILL);
		} else if (!strcmp(c, "quit")) {
			break;
		} else {
			reply(-EINVAL, NULL);
		}
	}
	for (int i = 0; i < MAXS; i++)
		if (slices[i])
			sm_release(slices[i]);
	if (f)
		sm_close(f);
	return 0;
}
