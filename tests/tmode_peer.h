/* SPDX-License-Identifier: MIT */
/*
 * tmode_peer.h - what test_tmode and test_tmode_stop share: opening in a
 * mode, the forked peer driven over pipes, and calls bounded in time.
 */
#ifndef SAFEMAP_TMODE_PEER_H
#define SAFEMAP_TMODE_PEER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "safemap-internal.h"
#include "testutil.h"

#define PEER_MAX 64

sm_options opts(uint32_t flags);
int open_mode(const char *path, char mode, sm_file **f);
void other_dir_remove(const char *path);
void tree_ok(sm_file *f);
int peer(void *arg, int in, int out);
void peer_start(struct tu_child *c, const char *path, char mode, int want);
int peer_take(struct tu_child *c, const char *verb, char mode, uint64_t off, uint64_t len, int *k);
int peer_cmd(struct tu_child *c, const char *verb, long arg);
void peer_quit(struct tu_child *c);
bool locked_by_other(const char *path, uint64_t off, uint64_t len);
int bounded_map(const char *path, bool wr, uint64_t off, uint64_t len);
uint32_t slot_of(const char *path, pid_t pid, uint64_t off, struct smt_table *t);

#endif
