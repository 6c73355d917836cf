/* SPDX-License-Identifier: MIT */
/*
 * test_fuzz_seeds.c - replay the fuzz seed corpus (tests/fuzz/seeds)
 * through the lock-table fuzz target in every `make check`, built with the
 * ordinary compiler, so an input that once crashed the parser keeps being
 * tried without clang (util-linux replays its fuzz corpora the same way).
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char *slurp(int dfd, const char *name, size_t *size)
{
	struct stat st;
	unsigned char *buf;
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*size = (size_t)st.st_size;
	return buf;
}

START_TEST(every_seed_replays)
{
	DIR *d = opendir(SEEDDIR);
	struct dirent *e;
	int n = 0;

	ck_assert_msg(d != NULL, "cannot open %s", SEEDDIR);
	while ((e = readdir(d)) != NULL) {
		size_t size;
		unsigned char *buf;

		if (e->d_name[0] == '.')
			continue;
		buf = slurp(dirfd(d), e->d_name, &size);
		ck_assert_int_eq(LLVMFuzzerTestOneInput(buf, size), 0);
		free(buf);
		n++;
	}
	closedir(d);
	/* an empty or missing corpus would make this test pass vacuously */
	ck_assert_int_ge(n, 10);
	printf("replayed %d fuzz seeds\n", n);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fuzz_seeds");
	TCase *tc = tcase_create("replay");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, every_seed_replays);
	suite_add_tcase(s, tc);
	return tu_run(s);
}
