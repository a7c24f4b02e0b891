/*
 * File hooks: open and stdio's fopen (glibc opens stdio files internally, past any open
 * hook), the stat family (including glibc's legacy __xstat entry points and statx, also
 * through syscall(2), which node's libuv uses), access, readlink, realpath, and in write
 * mode mkdir/unlink/rmdir/rename/truncate. Each asks pathrules.c first: a local path goes
 * straight to libc. A remote open becomes a memfd filled by the session proxy (rfile.c);
 * a remote directory becomes an fd of an empty private directory standing for it.
 */
#include "shim.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

_Static_assert(sizeof(struct stat) == sizeof(struct stat64), "struct stat and stat64 differ on this ABI");

/* ---- open ---- */

/* *handled = false: the caller does the real call. Otherwise returns the fd or -1/errno. */
static int remote_open(int dirfd, const char *path, int flags, mode_t mode, bool eager, bool *handled) {
  *handled = false;
  if (!shim_intercepting()) return 0;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  if (route == FS_LOCAL) {
    SHIM_LEAVE();
    errno = saved;
    return 0;
  }
  *handled = true;
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
  return result;
}

static mode_t va_mode(int flags, va_list ap) {
  return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

#define OPEN_BODY(real_call)                                          \
  bool handled;                                                       \
  int fd = remote_open(dirfd, path, flags, mode, false, &handled);    \
  if (handled) return fd;                                             \
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

/* ---- stdio ---- */

static bool stdio_flags(const char *mode, int *flags) {
  if (!mode) return false;
  int f;
  switch (mode[0]) {
    case 'r': f = O_RDONLY; break;
    case 'w': f = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': f = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return false;
  }
  for (const char *p = mode + 1; *p && *p != ','; p++) {
    if (*p == '+') f = (f & ~O_ACCMODE) | O_RDWR;
    else if (*p == 'e') f |= O_CLOEXEC;
    else if (*p == 'x') f |= O_EXCL;
  }
  *flags = f;
  return true;
}

/* stdio reads through libc's internal read(), which no hook sees: stdio streams of pod
 * files are always filled completely at open ("eager"). */
static FILE *remote_fopen(const char *path, const char *mode, bool *handled) {
  int flags;
  *handled = false;
  if (!stdio_flags(mode, &flags)) return NULL;
  int fd = remote_open(AT_FDCWD, path, flags, 0666, true, handled);
  if (!*handled || fd < 0) return NULL;
  FILE *f = fdopen(fd, mode);
  if (!f) {
    int e = errno;
    close(fd);
    errno = e;
  }
  return f;
}

SHIM_EXPORT FILE *fopen(const char *path, const char *mode) {
  bool handled;
  FILE *f = remote_fopen(path, mode, &handled);
  return handled ? f : REAL(fopen)(path, mode);
}

SHIM_EXPORT FILE *fopen64(const char *path, const char *mode) {
  bool handled;
  FILE *f = remote_fopen(path, mode, &handled);
  return handled ? f : REAL(fopen64)(path, mode);
}

static FILE *remote_freopen(FILE *(*real)(const char *, const char *, FILE *), const char *path,
                            const char *mode, FILE *stream) {
  int flags;
  bool handled = false;
  int fd = path && stdio_flags(mode, &flags) ? remote_open(AT_FDCWD, path, flags, 0666, true, &handled) : -1;
  if (!handled) return real(path, mode, stream);
  if (fd < 0) return NULL;
  /* Let stdio reopen our descriptor by its /proc name; it keeps the same open file. */
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  SHIM_ENTER();
  FILE *f = real(self, mode, stream);
  int e = errno;
  if (f) rfile_copy(fd, fileno(f));
  SHIM_LEAVE();
  close(fd);
  errno = f ? errno : e;
  return f;
}

SHIM_EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream) {
  return remote_freopen(REAL(freopen), path, mode, stream);
}

SHIM_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream) {
  return remote_freopen(REAL(freopen64), path, mode, stream);
}

/* stdio closes its descriptor internally: forget (and write back) a pod file first. */
SHIM_EXPORT int fclose(FILE *stream) {
  if (!shim_depth && stream && rfile_any()) {
    int fd = fileno(stream);
    if (fd >= 0 && rfile_info(fd, NULL, 0, NULL, NULL, NULL)) {
      fflush(stream);
      rfile_forget(fd);
    }
  }
  return REAL(fclose)(stream);
}

/* ---- stat ---- */

/* 1: local (do the real call); 0: *out filled; -1: errno set. */
static int remote_stat(int dirfd, const char *path, int atflags, struct rstat *out) {
  if (!shim_intercepting() || !path) return 1;
  int saved = errno;
  if (path[0] == 0 && (atflags & AT_EMPTY_PATH)) return 1; /* by fd: fixed up after the real call */
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  int rc = 1, err = 0;
  if (route == FS_NOT_FOUND) {
    rc = -1;
    err = ENOENT;
  } else if (route == FS_REMOTE) {
    struct fs_reply rep;
    if (fsproto_stat(abs, !(atflags & AT_SYMLINK_NOFOLLOW), &rep) < 0) {
      rc = -1;
      err = EIO;
    } else if (rep.err) {
      rc = -1;
      err = rep.err;
    } else {
      *out = rep.st;
      rc = 0;
    }
  }
  SHIM_LEAVE();
  errno = rc == -1 ? err : saved;
  return rc;
}

/* After a successful real fstat of fd: a pod file or directory reports the pod's stat
 * (a private writable copy keeps its own size). */
static void fix_fd_stat(int fd, struct stat *st) {
  if (shim_depth || !rfile_any()) return;
  struct rstat rs;
  bool is_dir, copy;
  int saved = errno;
  if (rfile_info(fd, NULL, 0, &rs, &is_dir, &copy)) {
    off_t size = st->st_size;
    blkcnt_t blocks = st->st_blocks;
    rstat_to_stat(&rs, st);
    if (copy && !is_dir) {
      st->st_size = size;
      st->st_blocks = blocks;
    }
  }
  errno = saved;
}

/* Out of line: glibc declares stat's path nonnull, and a NULL test on it would warn. */
static bool __attribute__((noinline)) empty_path(const char *p) { return p && !p[0]; }

#define STAT_BODY(dirfd, path, buf, atflags, real_call) \
  do {                                                  \
    struct rstat rs_;                                   \
    int rc_ = remote_stat(dirfd, path, atflags, &rs_);  \
    if (rc_ == 0) {                                     \
      rstat_to_stat(&rs_, buf);                         \
      return 0;                                         \
    }                                                   \
    if (rc_ < 0) return -1;                             \
    int r_ = real_call;                                 \
    if (r_ == 0 && (atflags & AT_EMPTY_PATH) && empty_path(path)) fix_fd_stat(dirfd, (struct stat *)(buf)); \
    return r_;                                          \
  } while (0)

SHIM_EXPORT int stat(const char *path, struct stat *buf) {
  STAT_BODY(AT_FDCWD, path, buf, 0, REAL(stat)(path, buf));
}
SHIM_EXPORT int stat64(const char *path, struct stat64 *buf) {
  STAT_BODY(AT_FDCWD, path, buf, 0, REAL(stat64)(path, buf));
}
SHIM_EXPORT int lstat(const char *path, struct stat *buf) {
  STAT_BODY(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW, REAL(lstat)(path, buf));
}
SHIM_EXPORT int lstat64(const char *path, struct stat64 *buf) {
  STAT_BODY(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW, REAL(lstat64)(path, buf));
}
SHIM_EXPORT int fstatat(int dirfd, const char *path, struct stat *buf, int flags) {
  STAT_BODY(dirfd, path, buf, flags, REAL(fstatat)(dirfd, path, buf, flags));
}
SHIM_EXPORT int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags) {
  STAT_BODY(dirfd, path, buf, flags, REAL(fstatat64)(dirfd, path, buf, flags));
}
SHIM_EXPORT int __xstat(int ver, const char *path, struct stat *buf) {
  STAT_BODY(AT_FDCWD, path, buf, 0, (REAL(__xstat) ? REAL(__xstat)(ver, path, buf) : REAL(stat)(path, buf)));
}
SHIM_EXPORT int __xstat64(int ver, const char *path, struct stat64 *buf) {
  STAT_BODY(AT_FDCWD, path, buf, 0, (REAL(__xstat64) ? REAL(__xstat64)(ver, path, buf) : REAL(stat64)(path, buf)));
}
SHIM_EXPORT int __lxstat(int ver, const char *path, struct stat *buf) {
  STAT_BODY(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW, (REAL(__lxstat) ? REAL(__lxstat)(ver, path, buf) : REAL(lstat)(path, buf)));
}
SHIM_EXPORT int __lxstat64(int ver, const char *path, struct stat64 *buf) {
  STAT_BODY(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW, (REAL(__lxstat64) ? REAL(__lxstat64)(ver, path, buf) : REAL(lstat64)(path, buf)));
}
SHIM_EXPORT int __fxstatat(int ver, int dirfd, const char *path, struct stat *buf, int flags) {
  STAT_BODY(dirfd, path, buf, flags, (REAL(__fxstatat) ? REAL(__fxstatat)(ver, dirfd, path, buf, flags) : REAL(fstatat)(dirfd, path, buf, flags)));
}
SHIM_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *buf, int flags) {
  STAT_BODY(dirfd, path, buf, flags, (REAL(__fxstatat64) ? REAL(__fxstatat64)(ver, dirfd, path, buf, flags) : REAL(fstatat64)(dirfd, path, buf, flags)));
}

SHIM_EXPORT int fstat(int fd, struct stat *buf) {
  int r = REAL(fstat)(fd, buf);
  if (r == 0) fix_fd_stat(fd, buf);
  return r;
}
SHIM_EXPORT int fstat64(int fd, struct stat64 *buf) {
  int r = REAL(fstat64)(fd, buf);
  if (r == 0) fix_fd_stat(fd, (struct stat *)buf);
  return r;
}
SHIM_EXPORT int __fxstat(int ver, int fd, struct stat *buf) {
  int r = REAL(__fxstat) ? REAL(__fxstat)(ver, fd, buf) : REAL(fstat)(fd, buf);
  if (r == 0) fix_fd_stat(fd, buf);
  return r;
}
SHIM_EXPORT int __fxstat64(int ver, int fd, struct stat64 *buf) {
  int r = REAL(__fxstat64) ? REAL(__fxstat64)(ver, fd, buf) : REAL(fstat64)(fd, buf);
  if (r == 0) fix_fd_stat(fd, (struct stat *)buf);
  return r;
}

static void rstat_to_statx(const struct rstat *r, struct statx *sx, unsigned mask) {
  (void)mask;
  memset(sx, 0, sizeof *sx);
  sx->stx_mask = STATX_BASIC_STATS;
  sx->stx_blksize = (uint32_t)r->blksize;
  sx->stx_nlink = (uint32_t)r->nlink;
  sx->stx_uid = (uint32_t)r->uid;
  sx->stx_gid = (uint32_t)r->gid;
  sx->stx_mode = (uint16_t)r->mode;
  sx->stx_ino = (uint64_t)r->ino;
  sx->stx_size = (uint64_t)r->size;
  sx->stx_blocks = (uint64_t)r->blocks;
  sx->stx_atime.tv_sec = r->atime;
  sx->stx_atime.tv_nsec = (uint32_t)r->atime_ns;
  sx->stx_mtime.tv_sec = r->mtime;
  sx->stx_mtime.tv_nsec = (uint32_t)r->mtime_ns;
  sx->stx_ctime.tv_sec = r->ctime;
  sx->stx_ctime.tv_nsec = (uint32_t)r->ctime_ns;
  sx->stx_rdev_major = major((dev_t)r->rdev);
  sx->stx_rdev_minor = minor((dev_t)r->rdev);
  sx->stx_dev_major = major((dev_t)r->dev);
  sx->stx_dev_minor = minor((dev_t)r->dev);
}

static void fix_fd_statx(int fd, struct statx *sx) {
  if (shim_depth || !rfile_any()) return;
  struct rstat rs;
  bool is_dir, copy;
  int saved = errno;
  if (rfile_info(fd, NULL, 0, &rs, &is_dir, &copy)) {
    uint64_t size = sx->stx_size, blocks = sx->stx_blocks;
    unsigned mask = sx->stx_mask;
    rstat_to_statx(&rs, sx, mask);
    if (copy && !is_dir) {
      sx->stx_size = size;
      sx->stx_blocks = blocks;
    }
  }
  errno = saved;
}

static int statx_common(int dirfd, const char *path, int flags, unsigned mask, struct statx *buf,
                        int (*real)(int, const char *, int, unsigned, struct statx *)) {
  struct rstat rs;
  int rc = remote_stat(dirfd, path, flags, &rs);
  if (rc == 0) {
    rstat_to_statx(&rs, buf, mask);
    return 0;
  }
  if (rc < 0) return -1;
  int r = real(dirfd, path, flags, mask, buf);
  if (r == 0 && (flags & AT_EMPTY_PATH) && path && !path[0]) fix_fd_statx(dirfd, buf);
  return r;
}

static int raw_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *buf) {
  return (int)REAL(syscall)(SYS_statx, dirfd, path, flags, mask, buf);
}

SHIM_EXPORT int statx(int dirfd, const char *__restrict path, int flags, unsigned int mask,
                      struct statx *__restrict buf) {
  return statx_common(dirfd, path, flags, mask, buf, REAL(statx));
}

/* libuv (node) calls statx, fstat and friends through syscall(2). */
SHIM_EXPORT long syscall(long number, ...) {
  va_list ap;
  va_start(ap, number);
  long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
  long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
  va_end(ap);
  if (!shim_depth) {
    if (number == SYS_statx)
      return statx_common((int)a1, (const char *)a2, (int)a3, (unsigned)a4, (struct statx *)a5, raw_statx);
#ifdef SYS_newfstatat
    if (number == SYS_newfstatat) return fstatat((int)a1, (const char *)a2, (struct stat *)a3, (int)a4);
#endif
    if (number == SYS_fstat) return fstat((int)a1, (struct stat *)a2);
  }
  return REAL(syscall)(number, a1, a2, a3, a4, a5, a6);
}

/* ---- access, readlink, realpath ---- */

static int access_common(int dirfd, const char *path, int mode, int flags, bool *handled) {
  *handled = false;
  if (!shim_intercepting() || !path) return 0;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  int r = 0, err = 0;
  if (route == FS_NOT_FOUND) {
    *handled = true;
    r = -1;
    err = ENOENT;
  } else if (route == FS_REMOTE) {
    *handled = true;
    struct fs_reply rep;
    if (fsproto_access(abs, mode, &rep) < 0) err = EIO;
    else err = rep.err;
    if (!err && (mode & W_OK) && !fs_write_mode()) err = 0; /* read mode: writes go to a private copy */
    r = err ? -1 : 0;
  }
  (void)flags;
  SHIM_LEAVE();
  errno = r ? err : saved;
  return r;
}

SHIM_EXPORT int access(const char *path, int mode) {
  bool handled;
  int r = access_common(AT_FDCWD, path, mode, 0, &handled);
  return handled ? r : REAL(access)(path, mode);
}

SHIM_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags) {
  bool handled;
  int r = access_common(dirfd, path, mode, flags, &handled);
  return handled ? r : REAL(faccessat)(dirfd, path, mode, flags);
}

SHIM_EXPORT int euidaccess(const char *path, int mode) {
  bool handled;
  int r = access_common(AT_FDCWD, path, mode, 0, &handled);
  return handled ? r : REAL(euidaccess)(path, mode);
}

SHIM_EXPORT int eaccess(const char *path, int mode) {
  bool handled;
  int r = access_common(AT_FDCWD, path, mode, 0, &handled);
  return handled ? r : REAL(eaccess)(path, mode);
}

static ssize_t readlink_common(int dirfd, const char *path, char *buf, size_t size, bool *handled) {
  *handled = false;
  if (!shim_intercepting() || !path) return 0;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  ssize_t r = 0;
  int err = 0;
  if (route != FS_LOCAL) {
    *handled = true;
    struct fs_reply *rep = malloc(sizeof *rep);
    if (!rep) err = ENOMEM;
    else if (route == FS_NOT_FOUND) err = ENOENT;
    else if (fsproto_readlink(abs, rep) < 0) err = EIO;
    else if (rep->err) err = rep->err;
    else {
      size_t n = strlen(rep->target);
      if (n > size) n = size;
      memcpy(buf, rep->target, n);
      r = (ssize_t)n;
    }
    free(rep);
    if (err) r = -1;
  }
  SHIM_LEAVE();
  errno = r < 0 ? err : saved;
  return r;
}

SHIM_EXPORT ssize_t readlink(const char *__restrict path, char *__restrict buf, size_t size) {
  bool handled;
  ssize_t r = readlink_common(AT_FDCWD, path, buf, size, &handled);
  return handled ? r : REAL(readlink)(path, buf, size);
}

SHIM_EXPORT ssize_t readlinkat(int dirfd, const char *__restrict path, char *__restrict buf, size_t size) {
  bool handled;
  ssize_t r = readlink_common(dirfd, path, buf, size, &handled);
  return handled ? r : REAL(readlinkat)(dirfd, path, buf, size);
}

/* A pod path is made canonical lexically and checked to exist in the pod (symlinks inside
 * the pod are not expanded). */
static char *remote_realpath(const char *path, char *resolved, bool *handled) {
  *handled = false;
  if (!shim_intercepting() || !path || path[0] != '/') return NULL;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  char *out = NULL;
  int err = 0;
  enum fs_route route = fs_route_at(AT_FDCWD, path, abs, sizeof abs);
  if (route != FS_LOCAL) {
    *handled = true;
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
  }
  SHIM_LEAVE();
  errno = out ? saved : err;
  return out;
}

SHIM_EXPORT char *realpath(const char *__restrict path, char *__restrict resolved) {
  bool handled;
  char *r = remote_realpath(path, resolved, &handled);
  return handled ? r : REAL(realpath)(path, resolved);
}

SHIM_EXPORT char *canonicalize_file_name(const char *path) {
  bool handled;
  char *r = remote_realpath(path, NULL, &handled);
  return handled ? r : REAL(canonicalize_file_name)(path);
}

/* ---- changes (write mode) ---- */

/* 1: local; else 0/-1 with errno. `to` is the second path of a rename. */
static int remote_change(const char *what, int dirfd, const char *path, int64_t arg, int to_dirfd,
                         const char *to) {
  if (!shim_intercepting() || !path) return 1;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096], abs_to[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  enum fs_route route_to = to ? fs_route_at(to_dirfd, to, abs_to, sizeof abs_to) : route;
  int rc = 1, err = 0;
  if (route == FS_LOCAL && route_to == FS_LOCAL) goto out;
  rc = -1;
  if (route == FS_NOT_FOUND) err = ENOENT;
  else if (route != route_to) err = EXDEV; /* across the pod boundary: mv copies instead */
  else if (!fs_write_mode()) err = EROFS;
  else {
    struct fs_reply rep;
    if (fsproto_change(what, abs, arg, to ? abs_to : NULL, &rep) < 0) err = EIO;
    else err = rep.err;
    rc = err ? -1 : 0;
  }
out:
  SHIM_LEAVE();
  errno = rc == -1 ? err : saved;
  return rc;
}

#define CHANGE(call, real_call) \
  int rc_ = call;               \
  return rc_ == 1 ? real_call : rc_;

SHIM_EXPORT int mkdir(const char *path, mode_t mode) {
  CHANGE(remote_change("mkdir", AT_FDCWD, path, mode, AT_FDCWD, NULL), REAL(mkdir)(path, mode))
}
SHIM_EXPORT int mkdirat(int dirfd, const char *path, mode_t mode) {
  CHANGE(remote_change("mkdir", dirfd, path, mode, AT_FDCWD, NULL), REAL(mkdirat)(dirfd, path, mode))
}
SHIM_EXPORT int unlink(const char *path) {
  CHANGE(remote_change("unlink", AT_FDCWD, path, 0, AT_FDCWD, NULL), REAL(unlink)(path))
}
SHIM_EXPORT int unlinkat(int dirfd, const char *path, int flags) {
  CHANGE(remote_change((flags & AT_REMOVEDIR) ? "rmdir" : "unlink", dirfd, path, 0, AT_FDCWD, NULL),
         REAL(unlinkat)(dirfd, path, flags))
}
SHIM_EXPORT int rmdir(const char *path) {
  CHANGE(remote_change("rmdir", AT_FDCWD, path, 0, AT_FDCWD, NULL), REAL(rmdir)(path))
}
SHIM_EXPORT int rename(const char *from, const char *to) {
  CHANGE(remote_change("rename", AT_FDCWD, from, 0, AT_FDCWD, to), REAL(rename)(from, to))
}
SHIM_EXPORT int renameat(int fromfd, const char *from, int tofd, const char *to) {
  CHANGE(remote_change("rename", fromfd, from, 0, tofd, to), REAL(renameat)(fromfd, from, tofd, to))
}
SHIM_EXPORT int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned int flags) {
  CHANGE(remote_change("rename", fromfd, from, 0, tofd, to), REAL(renameat2)(fromfd, from, tofd, to, flags))
}
SHIM_EXPORT int truncate(const char *path, off_t size) {
  CHANGE(remote_change("truncate", AT_FDCWD, path, size, AT_FDCWD, NULL), REAL(truncate)(path, size))
}
SHIM_EXPORT int truncate64(const char *path, off64_t size) {
  CHANGE(remote_change("truncate", AT_FDCWD, path, size, AT_FDCWD, NULL), REAL(truncate64)(path, size))
}

/* ---- extended attributes: pod files have none the program can see ---- */

/* 1: local; else the path is the pod's (or not found): -1 with errno. */
static int remote_xattr(const char *path, int err_if_remote) {
  if (!shim_intercepting() || !path) return 1;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(AT_FDCWD, path, abs, sizeof abs);
  SHIM_LEAVE();
  if (route == FS_LOCAL) {
    errno = saved;
    return 1;
  }
  errno = route == FS_NOT_FOUND ? ENOENT : err_if_remote;
  return -1;
}

SHIM_EXPORT ssize_t getxattr(const char *path, const char *name, void *value, size_t size) {
  return remote_xattr(path, ENODATA) == 1 ? REAL(getxattr)(path, name, value, size) : -1;
}
SHIM_EXPORT ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size) {
  return remote_xattr(path, ENODATA) == 1 ? REAL(lgetxattr)(path, name, value, size) : -1;
}
SHIM_EXPORT ssize_t listxattr(const char *path, char *list, size_t size) {
  int r = remote_xattr(path, 0);
  if (r == 1) return REAL(listxattr)(path, list, size);
  return errno == ENOENT ? -1 : 0;
}
SHIM_EXPORT ssize_t llistxattr(const char *path, char *list, size_t size) {
  int r = remote_xattr(path, 0);
  if (r == 1) return REAL(llistxattr)(path, list, size);
  return errno == ENOENT ? -1 : 0;
}

/* ---- temporary files: glibc's mkstemp family opens internally, past the open hooks ---- */

static int remote_mkstemp(char *tmpl, int suffixlen, int flags, bool *handled) {
  *handled = false;
  if (!shim_intercepting() || !tmpl) return 0;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(AT_FDCWD, tmpl, abs, sizeof abs);
  SHIM_LEAVE();
  if (route == FS_LOCAL) {
    errno = saved;
    return 0;
  }
  *handled = true;
  size_t len = strlen(tmpl);
  if (suffixlen < 0 || len < 6 + (size_t)suffixlen || memcmp(tmpl + len - 6 - suffixlen, "XXXXXX", 6) != 0) {
    errno = EINVAL;
    return -1;
  }
  static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  char *x = tmpl + len - 6 - suffixlen;
  uint64_t seed = (uint64_t)getpid() * 2654435761u ^ (uint64_t)(uintptr_t)tmpl;
  for (int attempt = 0; attempt < 100; attempt++) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t v = seed ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)attempt << 40);
    for (int i = 0; i < 6; i++) {
      v = v * 6364136223846793005ULL + 1442695040888963407ULL;
      x[i] = letters[(v >> 33) % (sizeof letters - 1)];
    }
    bool h;
    int fd = remote_open(AT_FDCWD, tmpl, O_RDWR | O_CREAT | O_EXCL | (flags & ~O_ACCMODE), 0600, false, &h);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

#define MKSTEMP(tmpl, suffixlen, flags, real_call)              \
  bool handled;                                                \
  int fd = remote_mkstemp(tmpl, suffixlen, flags, &handled);   \
  return handled ? fd : real_call;

SHIM_EXPORT int mkstemp(char *tmpl) { MKSTEMP(tmpl, 0, 0, REAL(mkstemp)(tmpl)) }
SHIM_EXPORT int mkstemp64(char *tmpl) { MKSTEMP(tmpl, 0, 0, REAL(mkstemp64)(tmpl)) }
SHIM_EXPORT int mkostemp(char *tmpl, int flags) { MKSTEMP(tmpl, 0, flags, REAL(mkostemp)(tmpl, flags)) }
SHIM_EXPORT int mkostemp64(char *tmpl, int flags) { MKSTEMP(tmpl, 0, flags, REAL(mkostemp64)(tmpl, flags)) }
SHIM_EXPORT int mkstemps(char *tmpl, int suffixlen) { MKSTEMP(tmpl, suffixlen, 0, REAL(mkstemps)(tmpl, suffixlen)) }
SHIM_EXPORT int mkstemps64(char *tmpl, int suffixlen) { MKSTEMP(tmpl, suffixlen, 0, REAL(mkstemps64)(tmpl, suffixlen)) }
SHIM_EXPORT int mkostemps(char *tmpl, int suffixlen, int flags) {
  MKSTEMP(tmpl, suffixlen, flags, REAL(mkostemps)(tmpl, suffixlen, flags))
}
SHIM_EXPORT int mkostemps64(char *tmpl, int suffixlen, int flags) {
  MKSTEMP(tmpl, suffixlen, flags, REAL(mkostemps64)(tmpl, suffixlen, flags))
}
