/*
 * Changes to pod paths, in write mode: mkdir, unlink, rmdir, rename, truncate. In read
 * mode a change to a pod path fails with EROFS; a rename across the pod boundary with
 * EXDEV (mv then copies instead).
 */
#include "files.h"

#include <fcntl.h>

/* `what`: WIRE_CHANGE_* or SHIM_CHANGE_TRUNCATE (fsproto_change); `to` is the second path of a rename. */
static enum remote_result remote_change(const char *what, int dirfd, const char *path, int64_t arg,
                                        int to_dirfd, const char *to) {
  if (!shim_intercepting() || !path) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096], abs_to[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  enum fs_route route_to = to ? fs_route_at(to_dirfd, to, abs_to, sizeof abs_to) : route;
  enum remote_result result = REMOTE_PASS;
  int err = 0;
  if (route == FS_LOCAL && route_to == FS_LOCAL) goto out;
  if (route == FS_NOT_FOUND) err = ENOENT;
  else if (route != route_to) err = EXDEV; /* across the pod boundary: mv copies instead */
  else if (!fs_write_mode()) err = EROFS;
  else {
    struct fs_reply rep;
    if (fsproto_change(what, abs, arg, to ? abs_to : NULL, &rep) < 0) err = EIO;
    else err = rep.err;
  }
  result = err ? REMOTE_FAILED : REMOTE_DONE;
out:
  SHIM_LEAVE();
  errno = result == REMOTE_FAILED ? err : saved;
  return result;
}

#define CHANGE_BODY(remote_call, real_call)                \
  enum remote_result r_ = remote_call;                     \
  if (r_ != REMOTE_PASS) return remote_status(r_);         \
  return real_call;

SHIM_EXPORT int mkdir(const char *path, mode_t mode) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_MKDIR, AT_FDCWD, path, mode, AT_FDCWD, NULL), REAL(mkdir)(path, mode))
}
SHIM_EXPORT int mkdirat(int dirfd, const char *path, mode_t mode) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_MKDIR, dirfd, path, mode, AT_FDCWD, NULL), REAL(mkdirat)(dirfd, path, mode))
}
SHIM_EXPORT int unlink(const char *path) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_UNLINK, AT_FDCWD, path, 0, AT_FDCWD, NULL), REAL(unlink)(path))
}
SHIM_EXPORT int unlinkat(int dirfd, const char *path, int flags) {
  CHANGE_BODY(remote_change((flags & AT_REMOVEDIR) ? WIRE_CHANGE_RMDIR : WIRE_CHANGE_UNLINK, dirfd, path, 0, AT_FDCWD, NULL),
              REAL(unlinkat)(dirfd, path, flags))
}
SHIM_EXPORT int rmdir(const char *path) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_RMDIR, AT_FDCWD, path, 0, AT_FDCWD, NULL), REAL(rmdir)(path))
}
SHIM_EXPORT int rename(const char *from, const char *to) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_RENAME, AT_FDCWD, from, 0, AT_FDCWD, to), REAL(rename)(from, to))
}
SHIM_EXPORT int renameat(int fromfd, const char *from, int tofd, const char *to) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_RENAME, fromfd, from, 0, tofd, to), REAL(renameat)(fromfd, from, tofd, to))
}
SHIM_EXPORT int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned int flags) {
  CHANGE_BODY(remote_change(WIRE_CHANGE_RENAME, fromfd, from, 0, tofd, to), REAL(renameat2)(fromfd, from, tofd, to, flags))
}
SHIM_EXPORT int truncate(const char *path, off_t size) {
  CHANGE_BODY(remote_change(SHIM_CHANGE_TRUNCATE, AT_FDCWD, path, size, AT_FDCWD, NULL), REAL(truncate)(path, size))
}
SHIM_EXPORT int truncate64(const char *path, off64_t size) {
  CHANGE_BODY(remote_change(SHIM_CHANGE_TRUNCATE, AT_FDCWD, path, size, AT_FDCWD, NULL), REAL(truncate64)(path, size))
}
