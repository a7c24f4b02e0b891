/*
 * Questions about pod paths that open nothing: access, readlink, realpath, and extended
 * attributes (pod files have none the program can see).
 */
#include "files.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- access ---- */

static enum remote_result remote_access(int dirfd, const char *path, int mode) {
  if (!shim_intercepting() || !path) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  enum remote_result result = REMOTE_PASS;
  int err = 0;
  if (route == FS_NOT_FOUND) {
    err = ENOENT;
  } else if (route == FS_REMOTE) {
    struct fs_reply rep;
    if (fsproto_access(abs, mode, &rep) < 0) err = EIO;
    else err = rep.err;
    if (!err && (mode & W_OK) && !fs_write_mode()) err = 0; /* read mode: writes go to a private copy */
  }
  if (route != FS_LOCAL) result = err ? REMOTE_FAILED : REMOTE_DONE;
  SHIM_LEAVE();
  errno = result == REMOTE_FAILED ? err : saved;
  return result;
}

/* faccessat's flags (AT_EACCESS, AT_SYMLINK_NOFOLLOW) make no difference to the pod's answer. */
#define ACCESS_BODY(dirfd, path, mode, real_call)                 \
  enum remote_result r_ = remote_access(dirfd, path, mode);       \
  if (r_ != REMOTE_PASS) return remote_status(r_);                \
  return real_call;

SHIM_EXPORT int access(const char *path, int mode) {
  ACCESS_BODY(AT_FDCWD, path, mode, REAL(access)(path, mode))
}

SHIM_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags) {
  ACCESS_BODY(dirfd, path, mode, REAL(faccessat)(dirfd, path, mode, flags))
}

SHIM_EXPORT int euidaccess(const char *path, int mode) {
  ACCESS_BODY(AT_FDCWD, path, mode, REAL(euidaccess)(path, mode))
}

SHIM_EXPORT int eaccess(const char *path, int mode) {
  ACCESS_BODY(AT_FDCWD, path, mode, REAL(eaccess)(path, mode))
}

/* ---- readlink ---- */

/* REMOTE_DONE: *len bytes of the pod's link target are in buf (not terminated, as readlink). */
static enum remote_result remote_readlink(int dirfd, const char *path, char *buf, size_t size,
                                          ssize_t *len) {
  *len = -1;
  if (!shim_intercepting() || !path) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  enum remote_result result = REMOTE_PASS;
  int err = 0;
  if (route != FS_LOCAL) {
    struct fs_reply *rep = malloc(sizeof *rep);
    if (!rep) err = ENOMEM;
    else if (route == FS_NOT_FOUND) err = ENOENT;
    else if (fsproto_readlink(abs, rep) < 0) err = EIO;
    else if (rep->err) err = rep->err;
    else {
      size_t n = strlen(rep->target);
      if (n > size) n = size;
      memcpy(buf, rep->target, n);
      *len = (ssize_t)n;
    }
    free(rep);
    result = err ? REMOTE_FAILED : REMOTE_DONE;
  }
  SHIM_LEAVE();
  errno = result == REMOTE_FAILED ? err : saved;
  return result;
}

SHIM_EXPORT ssize_t readlink(const char *__restrict path, char *__restrict buf, size_t size) {
  ssize_t n;
  if (remote_readlink(AT_FDCWD, path, buf, size, &n) != REMOTE_PASS) return n;
  return REAL(readlink)(path, buf, size);
}

SHIM_EXPORT ssize_t readlinkat(int dirfd, const char *__restrict path, char *__restrict buf, size_t size) {
  ssize_t n;
  if (remote_readlink(dirfd, path, buf, size, &n) != REMOTE_PASS) return n;
  return REAL(readlinkat)(dirfd, path, buf, size);
}

/* ---- realpath ---- */

/* A pod path is made canonical lexically and checked to exist in the pod (symlinks inside
 * the pod are not expanded). REMOTE_DONE: *canonical is `resolved`, or malloc'd if NULL. */
static enum remote_result remote_realpath(const char *path, char *resolved, char **canonical) {
  *canonical = NULL;
  if (!shim_intercepting() || !path || path[0] != '/') return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  char *out = NULL;
  int err = 0;
  enum remote_result result = REMOTE_PASS;
  enum fs_route route = fs_route_at(AT_FDCWD, path, abs, sizeof abs);
  if (route != FS_LOCAL) {
    struct fs_reply rep;
    if (route == FS_NOT_FOUND) err = ENOENT;
    else if (fsproto_stat(abs, true, &rep) < 0) err = EIO;
    else if (rep.err) err = rep.err;
    else {
      char norm[PATH_MAX];
      fs_normalise(abs, norm, sizeof norm);
      out = resolved ? resolved : malloc(PATH_MAX);
      if (!out) err = ENOMEM;
      else snprintf(out, PATH_MAX, "%s", norm);
    }
    result = out ? REMOTE_DONE : REMOTE_FAILED;
  }
  SHIM_LEAVE();
  errno = result == REMOTE_FAILED ? err : saved;
  *canonical = out;
  return result;
}

SHIM_EXPORT char *realpath(const char *__restrict path, char *__restrict resolved) {
  char *canonical;
  if (remote_realpath(path, resolved, &canonical) != REMOTE_PASS) return canonical;
  return REAL(realpath)(path, resolved);
}

SHIM_EXPORT char *canonicalize_file_name(const char *path) {
  char *canonical;
  if (remote_realpath(path, NULL, &canonical) != REMOTE_PASS) return canonical;
  return REAL(canonicalize_file_name)(path);
}

/* ---- extended attributes: pod files have none the program can see ---- */

/* REMOTE_DONE: a pod path (the caller reports "no attributes"); REMOTE_FAILED: ENOENT. */
static enum remote_result remote_xattr(const char *path) {
  if (!shim_intercepting() || !path) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(AT_FDCWD, path, abs, sizeof abs);
  SHIM_LEAVE();
  if (route == FS_NOT_FOUND) {
    errno = ENOENT;
    return REMOTE_FAILED;
  }
  errno = saved;
  return route == FS_LOCAL ? REMOTE_PASS : REMOTE_DONE;
}

#define GETXATTR_BODY(real_call)          \
  switch (remote_xattr(path)) {           \
    case REMOTE_DONE: errno = ENODATA;    \
                      return -1;          \
    case REMOTE_FAILED: return -1;        \
    case REMOTE_PASS: break;              \
  }                                       \
  return real_call;

#define LISTXATTR_BODY(real_call)         \
  switch (remote_xattr(path)) {           \
    case REMOTE_DONE: return 0;           \
    case REMOTE_FAILED: return -1;        \
    case REMOTE_PASS: break;              \
  }                                       \
  return real_call;

SHIM_EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size) {
  GETXATTR_BODY(REAL(getxattr)(path, name, value, size))
}
SHIM_EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size) {
  GETXATTR_BODY(REAL(lgetxattr)(path, name, value, size))
}
SHIM_EXPORT ssize_t listxattr(const char *path, char *list, size_t size) {
  LISTXATTR_BODY(REAL(listxattr)(path, list, size))
}
SHIM_EXPORT ssize_t llistxattr(const char *path, char *list, size_t size) {
  LISTXATTR_BODY(REAL(llistxattr)(path, list, size))
}
