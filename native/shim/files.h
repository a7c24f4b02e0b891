/*
 * Shared by the pod-file hooks (files_open.c, files_stdio.c, files_stat.c, files_paths.c,
 * files_change.c, files_temp.c). Each file hooks one family; every exported hook asks its
 * remote_* helper first (an enum remote_result, shim.h) and calls the real function when
 * the helper says REMOTE_PASS.
 */
#ifndef TSMIRROR_FILES_H
#define TSMIRROR_FILES_H

#include "shim.h"

/* Opens a pod file or directory (files_open.c). REMOTE_DONE: *fd is the new descriptor (a
 * memfd, or an fd of an empty directory standing for a pod directory); REMOTE_FAILED: *fd
 * is -1 and errno set. `eager`: fill the whole file now (stdio, whose reads no hook sees). */
SHIM_HIDDEN enum remote_result remote_open(int dirfd, const char *path, int flags, mode_t mode,
                                           bool eager, int *fd);

#endif
