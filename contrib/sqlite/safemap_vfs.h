/* SPDX-License-Identifier: MIT */
/*
 * safemap_vfs.h - the "safemap" SQLite VFS (see contrib/sqlite/README).
 */
#ifndef SAFEMAP_VFS_H
#define SAFEMAP_VFS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Register the VFS "safemap" (the unix VFS with its database locks, its
 * -shm regions and its WAL locks on safemap, kernel-lock mode) and, when
 * the library has table-authority mode, "safemap-table".  make_default:
 * make "safemap" the default VFS.  Returns an SQLite result code; calling
 * it again is harmless. */
int sqlite3_safemap_vfs_register(int make_default);

#ifdef SAFEMAP_VFS_EXTENSION
/* Entry point of the loadable extension (the same source built with
 * -DSAFEMAP_VFS_EXTENSION): registers the VFSes (not as the default) and
 * stays loaded after the connection that loaded it closes. */
struct sqlite3;
struct sqlite3_api_routines;
int sqlite3_safemapvfs_init(struct sqlite3 *db, char **pzErrMsg,
			    const struct sqlite3_api_routines *pApi);
#endif

#ifdef __cplusplus
}
#endif

#endif
