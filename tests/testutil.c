/* SPDX-License-Identifier: MIT */
/*
 * testutil.c - see testutil.h.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "safemap.h"
#include "testutil.h"

static char tmpdir[PATH_MAX];
static pid_t tmpdir_owner;
static int nfiles;

static void cleanup(void)
{
	char path[PATH_MAX + 32];

	if (!tmpdir[0] || getpid() != tmpdir_owner)
		return;
	for (int i = 0; i < nfiles; i++) {
		snprintf(path, sizeof(path), "%s/f%d", tmpdir, i);
		unlink(path);
		snprintf(path, sizeof(path), "%s/f%d.smlock", tmpdir, i);
		unlink(path);
	}
	rmdir(tmpdir);
}

const char *tu_tmpfile(off_t size)
{
	static char paths[64][PATH_MAX + 32];
	char *p;
	int fd;

	if (!tmpdir[0] || getpid() != tmpdir_owner) {
		const char *t = getenv("TMPDIR");
		snprintf(tmpdir, sizeof(tmpdir), "%s/safemap-test.XXXXXX", t && *t ? t : "/tmp");
		ck_assert_ptr_nonnull(mkdtemp(tmpdir));
		tmpdir_owner = getpid();
		nfiles = 0;
		atexit(cleanup);
	}
	ck_assert_int_lt(nfiles, 64);
	p = paths[nfiles];
	snprintf(p, sizeof(paths[0]), "%s/f%d", tmpdir, nfiles++);
	fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, size), 0);
	close(fd);
	return p;
}

int tu_probe(const char *path, short type, off_t off, off_t len)
{
	struct flock fl;
	int fd = open(path, O_RDWR | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = off;
	/* len 0: to 2^62, where the library's own marks begin */
	fl.l_len = len ? len : (off_t)(((uint64_t)1 << 62) - (uint64_t)off);
	ck_assert_int_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
	close(fd);
	return fl.l_type;
}

void tu_lines_exec(struct tu_lines *p, char *const argv[])
{
	int fd[2];

	ck_assert_int_eq(pipe(fd), 0);
	p->n = 0;
	p->pid = fork();
	ck_assert_int_ge(p->pid, 0);
	if (p->pid == 0) {
		dup2(fd[1], 1);
		close(fd[0]);
		close(fd[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fd[1]);
	p->out = fd[0];
	fcntl(p->out, F_SETFL, O_NONBLOCK);
}

void tu_lines_read(struct tu_lines *p, bool to_eof, void (*fn)(char *line, void *arg), void *arg)
{
	ssize_t r;

	if (to_eof)
		fcntl(p->out, F_SETFL, 0);
	while ((r = read(p->out, p->buf + p->n, sizeof(p->buf) - 1 - p->n)) > 0) {
		char *line = p->buf, *nl;
		p->n += (size_t)r;
		p->buf[p->n] = 0;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			fn(line, arg);
			line = nl + 1;
		}
		p->n -= (size_t)(line - p->buf);
		memmove(p->buf, line, p->n);
	}
}

uint64_t tu_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t tu_bound(uint64_t ns)
{
	const char *m = getenv("CK_TIMEOUT_MULTIPLIER");

	return m && atoi(m) > 1 ? ns * (uint64_t)atoi(m) : ns;
}

void tu_spawn(struct tu_child *c, tu_child_fn fn, void *arg)
{
	int down[2], up[2];

	ck_assert_int_eq(pipe2(down, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(up, O_CLOEXEC), 0);
	c->pid = fork();
	ck_assert_int_ge(c->pid, 0);
	if (c->pid == 0) {
		struct rlimit no_core = { 0, 0 };
		setrlimit(RLIMIT_CORE, &no_core); /* some children are killed on purpose */
		close(down[1]);
		close(up[0]);
		_exit(fn(arg, down[0], up[1]));
	}
	close(down[0]);
	close(up[1]);
	c->to = down[1];
	c->from = up[0];
}

void tu_send(int fd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	ck_assert(n >= 0 && (size_t)n < sizeof(buf) - 1);
	buf[n++] = '\n';
	ck_assert_int_eq(write(fd, buf, (size_t)n), n);
}

bool tu_recv(int fd, char *buf, size_t size)
{
	size_t n = 0;

	while (n + 1 < size) {
		ssize_t r = read(fd, buf + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return true;
}

int tu_recv_int(int fd)
{
	char buf[64];

	ck_assert_msg(tu_recv(fd, buf, sizeof(buf)), "child closed its pipe");
	return atoi(buf);
}

int tu_wait(struct tu_child *c)
{
	int status;

	close(c->to);
	close(c->from);
	while (waitpid(c->pid, &status, 0) < 0)
		ck_assert_int_eq(errno, EINTR);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int tu_fds_on(const char *path, int *without_cloexec)
{
	char link[PATH_MAX], target[PATH_MAX], real[PATH_MAX];
	struct dirent *d;
	DIR *dir = opendir("/proc/self/fd");
	int count = 0;

	ck_assert_ptr_nonnull(dir);
	ck_assert_ptr_nonnull(realpath(path, real));
	*without_cloexec = 0;
	while ((d = readdir(dir))) {
		int fd = atoi(d->d_name);
		ssize_t n;
		if (d->d_name[0] == '.' || fd == dirfd(dir))
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", d->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, real) != 0)
			continue;
		count++;
		if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			(*without_cloexec)++;
	}
	closedir(dir);
	return count;
}

int tu_vma_count(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	int c, n = 0;

	ck_assert_ptr_nonnull(f);
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

int tu_holder(void *arg, int in, int out)
{
	struct tu_holder_arg *a = arg;
	sm_options o;
	sm_file *f;
	sm_slice *s;
	char buf[8];
	int rc = sm_open(a->path, SM_RDWR, tu_options(&o, a->tag), &f);

	if (rc == 0 &&
	    (rc = a->write ? sm_map_write(f, a->off, a->len, 0, &s) : sm_map_read(f, a->off, a->len, 0, &s)) < 0)
		sm_close(f);
	tu_send(out, "%d", rc);
	tu_recv(in, buf, sizeof(buf));
	if (rc == 0) {
		sm_release(s);
		sm_close(f);
	}
	return 0;
}

int tu_klocker(void *arg, int in, int out)
{
	const struct tu_klock_arg *a = arg;
	struct flock fl = { .l_type = a->write ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = a->start,
			    .l_len = a->len };
	int fd = open(a->path, O_RDWR | O_CLOEXEC), rc;
	char buf[8];

	if (a->kind == 'w') {
		tu_send(out, "0"); /* about to block */
		rc = fcntl(fd, F_SETLKW, &fl);
		tu_recv(in, buf, sizeof(buf));
		return rc;
	}
	if (a->kind == 'f')
		rc = flock(fd, a->write ? LOCK_EX : LOCK_SH);
	else
		rc = fcntl(fd, a->kind == 'o' ? F_OFD_SETLK : F_SETLK, &fl);
	tu_send(out, "%d", fd >= 0 && rc == 0 ? 0 : -errno);
	tu_recv(in, buf, sizeof(buf));
	return 0;
}

void tu_spawn_ready(struct tu_child *c, tu_child_fn fn, void *arg)
{
	tu_spawn(c, fn, arg);
	ck_assert_int_eq(tu_recv_int(c->from), 0);
}

void tu_release(struct tu_child *c, ...)
{
	va_list ap;

	va_start(ap, c);
	for (struct tu_child *x = c; x; x = va_arg(ap, struct tu_child *))
		tu_send(x->to, "bye");
	va_end(ap);
	va_start(ap, c);
	for (struct tu_child *x = c; x; x = va_arg(ap, struct tu_child *))
		ck_assert_int_eq(tu_wait(x), 0);
	va_end(ap);
}

int tu_capture(char *out, size_t size, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	char sink[4096];
	size_t len = 0, n;
	int st;

	ck_assert_ptr_nonnull(p);
	while (len + 1 < size && (n = fread(out + len, 1, size - 1 - len, p)) > 0)
		len += n;
	out[len] = '\0';
	while (fread(sink, 1, sizeof(sink), p) > 0)
		;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void tu_holdmap_mark(struct tu_holdmap *m, int me, int first, int n, bool write, bool set)
{
	for (int b = first; b < first + n; b++) {
		_Atomic uint32_t *w = write ? &m->wmask[b] : &m->rmask[b];
		if (set)
			atomic_fetch_or(w, 1u << me);
		else
			atomic_fetch_and(w, ~(1u << me));
	}
}

/* Is another worker's bit on block b a conflict?  Not if its worker is
 * doomed; the bit is re-read after the doomed flag because the parent
 * clears a reaped worker's bits before it clears the flag. */
static bool foreign(struct tu_holdmap *m, int me, int b, bool write)
{
	uint32_t others = (atomic_load(&m->wmask[b]) | (write ? atomic_load(&m->rmask[b]) : 0)) & ~(1u << me);

	for (int j = 0; j < TU_HOLDMAP_WORKERS; j++) {
		if (!(others & (1u << j)) || atomic_load(&m->doomed[j]))
			continue;
		uint32_t again = atomic_load(&m->wmask[b]) | (write ? atomic_load(&m->rmask[b]) : 0);
		if (again & (1u << j))
			return true;
	}
	return false;
}

int tu_holdmap_conflict(struct tu_holdmap *m, int me, int first, int n, bool write)
{
	for (int b = first; b < first + n; b++)
		if (foreign(m, me, b, write))
			return b;
	return -1;
}

void tu_holdmap_doom(struct tu_holdmap *m, int j)
{
	atomic_store(&m->doomed[j], 1);
}

void tu_holdmap_forget(struct tu_holdmap *m, int j)
{
	for (int b = 0; b < TU_HOLDMAP_BLOCKS; b++) {
		atomic_fetch_and(&m->wmask[b], ~(1u << j));
		atomic_fetch_and(&m->rmask[b], ~(1u << j));
	}
	atomic_store(&m->doomed[j], 0);
}

void tu_sibling(const char *rel, char *out, size_t size)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	ck_assert_int_gt(n, 0);
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	if (strcmp(strrchr(self, '/'), "/.libs") == 0) /* a libtool-wrapped test */
		*strrchr(self, '/') = '\0';
	ck_assert_int_lt(snprintf(out, size, "%s/%s", self, rel), (int)size);
	ck_assert_msg(access(out, X_OK) == 0, "no %s", out);
}

void tu_comm(char *out, size_t size)
{
	FILE *f = fopen("/proc/self/comm", "re");

	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(out, (int)size, f));
	fclose(f);
	out[strcspn(out, "\n")] = '\0';
}

int tu_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

bool tu_table_mode(void)
{
	const char *m = getenv("SAFEMAP_TEST_MODE");

	return m && strcmp(m, "table") == 0;
}

sm_options *tu_options(sm_options *o, const char *tag)
{
	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	o->tag = tag;
	if (tu_table_mode())
		o->flags |= SM_OPT_TABLE_LOCKS;
	return o;
}

int tu_open(const char *path, int flags, const sm_options *opt, sm_file **out)
{
	sm_options o;

	tu_options(&o, NULL);
	if (opt) {
		o = *opt;
		o.size = sizeof(o);
		if (tu_table_mode())
			o.flags |= SM_OPT_TABLE_LOCKS;
	}
	return sm_open(path, flags, &o, out);
}

bool tu_mode_usable(const char *casename)
{
	char name[128], dir[PATH_MAX], path[PATH_MAX + 16];
	const char *t = getenv("TMPDIR");
	sm_options o;
	sm_file *f;
	int fd, rc;

	if (!tu_table_mode())
		return true;
	/* a private file: probing must not attach to the case's own files */
	snprintf(dir, sizeof(dir), "%s/safemap-probe.XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4096), 0);
	close(fd);
	rc = sm_open(path, SM_RDWR, tu_options(&o, NULL), &f);
	if (rc == 0)
		sm_close(f);
	unlink(path);
	snprintf(path, sizeof(path), "%s/f.smlock", dir);
	unlink(path);
	rmdir(dir);
	if (rc == -EINVAL || rc == -ENOTSUP) {
		snprintf(name, sizeof(name), "%s", casename);
		size_t n = strlen(name);
		if (n > 3 && strcmp(name + n - 3, "_fn") == 0)
			name[n - 3] = '\0';
		printf("SKIP %s: SM_OPT_TABLE_LOCKS not available (%s)\n", name, sm_strerror(rc));
		fflush(stdout);
		return false;
	}
	ck_assert_msg(rc == 0, "sm_open with SM_OPT_TABLE_LOCKS: %s", sm_strerror(rc));
	return true;
}
