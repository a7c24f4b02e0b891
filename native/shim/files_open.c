/*
 * Opens of pod files: open/openat (and their 64, _2 fortify and creat variants). Asks
 * pathrules.c first: a local path goes straight to libc. A remote open becomes a memfd
 * filled by the session proxy (rfile.c); a remote directory becomes an fd of an empty
 * private directory standing for it.
 */
#include "files.h"

#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>

SHIM_HIDDEN enum remote_result remote_open(int dirfd, const char *path, int flags, mode_t mode,
                                           bool eager, int *fd) {
  *fd = -1;
  if (!shim_intercepting()) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  if (route == FS_LOCAL) {
    SHIM_LEAVE();
    errno = saved;
    return REMOTE_PASS;
  }
  int result = -1, err = 0;
  if (route == FS_NOT_FOUND) {
    err = ENOENT;
    goto out;
  }
  int memfd = memfd_create("tsmirror-pod-file", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
  if (memfd < 0) {
    err = errno;
    goto out;
  }
  struct fs_reply rep;
  int wire_flags = flags & ~(O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_PATH);
  if (flags & O_PATH) wire_flags &= ~O_ACCMODE;
  if (fsproto_open(abs, wire_flags, (int)(mode & 07777), memfd, eager, &rep) < 0) {
    REAL(close)(memfd);
    err = EIO;
    goto out;
  }
  if (rep.err) {
    REAL(close)(memfd);
    err = rep.err;
    goto out;
  }
  if (rep.dir) {
    REAL(close)(memfd);
    int dfd = REAL(open)(fs_empty_dir(), O_RDONLY | O_DIRECTORY | (flags & (O_CLOEXEC | O_PATH)));
    if (dfd < 0) {
      err = errno;
      goto out;
    }
    rfile_register(dfd, abs, &rep, true);
    result = dfd;
  } else {
    if (flags & O_APPEND) REAL(fcntl)(memfd, F_SETFL, O_APPEND);
    rfile_register(memfd, abs, &rep, false);
    result = memfd;
  }
  shim_log("open %s flags 0x%x -> pod %s fd %d%s", path, flags, rep.dir ? "dir" : "file", result,
           rep.lazy ? " (lazy)" : "");
out:
  SHIM_LEAVE();
  errno = result >= 0 ? saved : err;
  *fd = result;
  return result >= 0 ? REMOTE_DONE : REMOTE_FAILED;
}

static mode_t va_mode(int flags, va_list ap) {
  return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define OPEN_BODY(real_call)                                                        \
  int fd;                                                                           \
  if (remote_open(dirfd, path, flags, mode, false, &fd) != REMOTE_PASS) return fd;  \
  return real_call;

SHIM_EXPORT int open(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = va_mode(flags, ap);
  va_end(ap);
  int dirfd = AT_FDCWD;
  OPEN_BODY(REAL(open)(path, flags, mode))
}

SHIM_EXPORT int open64(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = va_mode(flags, ap);
  va_end(ap);
  int dirfd = AT_FDCWD;
  OPEN_BODY(REAL(open64)(path, flags, mode))
}

SHIM_EXPORT int openat(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = va_mode(flags, ap);
  va_end(ap);
  OPEN_BODY(REAL(openat)(dirfd, path, flags, mode))
}

SHIM_EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t mode = va_mode(flags, ap);
  va_end(ap);
  OPEN_BODY(REAL(openat64)(dirfd, path, flags, mode))
}

SHIM_EXPORT int __open_2(const char *path, int flags) {
  int dirfd = AT_FDCWD;
  mode_t mode = 0;
  OPEN_BODY((REAL(__open_2) ? REAL(__open_2)(path, flags) : REAL(open)(path, flags)))
}

SHIM_EXPORT int __open64_2(const char *path, int flags) {
  int dirfd = AT_FDCWD;
  mode_t mode = 0;
  OPEN_BODY((REAL(__open64_2) ? REAL(__open64_2)(path, flags) : REAL(open64)(path, flags)))
}

SHIM_EXPORT int __openat_2(int dirfd, const char *path, int flags) {
  mode_t mode = 0;
  OPEN_BODY((REAL(__openat_2) ? REAL(__openat_2)(dirfd, path, flags) : REAL(openat)(dirfd, path, flags)))
}

SHIM_EXPORT int __openat64_2(int dirfd, const char *path, int flags) {
  mode_t mode = 0;
  OPEN_BODY((REAL(__openat64_2) ? REAL(__openat64_2)(dirfd, path, flags) : REAL(openat64)(dirfd, path, flags)))
}

SHIM_EXPORT int creat(const char *path, mode_t mode) {
  int dirfd = AT_FDCWD, flags = O_CREAT | O_WRONLY | O_TRUNC;
  OPEN_BODY(REAL(creat)(path, mode))
}

SHIM_EXPORT int creat64(const char *path, mode_t mode) {
  int dirfd = AT_FDCWD, flags = O_CREAT | O_WRONLY | O_TRUNC;
  OPEN_BODY(REAL(creat64)(path, mode))
}
