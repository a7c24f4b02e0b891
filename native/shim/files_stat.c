/*
 * The stat family on pod paths and descriptors: stat/lstat/fstatat (and glibc's legacy
 * __xstat entry points), fstat, statx, and statx/newfstatat/fstat through syscall(2),
 * which node's libuv uses. A pod path is answered with the pod's stat; a descriptor that
 * stands for a pod file or directory gets the pod's stat after the real call.
 */
#include "files.h"

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

_Static_assert(sizeof(struct stat) == sizeof(struct stat64), "struct stat and stat64 differ on this ABI");

/* REMOTE_DONE: *out holds the pod's stat of path. */
static enum remote_result remote_stat(int dirfd, const char *path, int atflags, struct rstat *out) {
  if (!shim_intercepting() || !path) return REMOTE_PASS;
  int saved = errno;
  if (path[0] == 0 && (atflags & AT_EMPTY_PATH)) return REMOTE_PASS; /* by fd: fixed up after the real call */
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  enum remote_result result = REMOTE_PASS;
  int err = 0;
  if (route == FS_NOT_FOUND) {
    result = REMOTE_FAILED;
    err = ENOENT;
  } else if (route == FS_REMOTE) {
    struct fs_reply rep;
    if (fsproto_stat(abs, !(atflags & AT_SYMLINK_NOFOLLOW), &rep) < 0) {
      result = REMOTE_FAILED;
      err = EIO;
    } else if (rep.err) {
      result = REMOTE_FAILED;
      err = rep.err;
    } else {
      *out = rep.st;
      result = REMOTE_DONE;
    }
  }
  SHIM_LEAVE();
  errno = result == REMOTE_FAILED ? err : saved;
  return result;
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

#define STAT_BODY(dirfd, path, buf, atflags, real_call)                                          \
  do {                                                                                           \
    struct rstat rs_;                                                                            \
    switch (remote_stat(dirfd, path, atflags, &rs_)) {                                           \
      case REMOTE_DONE: rstat_to_stat(&rs_, buf); return 0;                                      \
      case REMOTE_FAILED: return -1;                                                             \
      case REMOTE_PASS: break;                                                                   \
    }                                                                                            \
    int r_ = real_call;                                                                          \
    if (r_ == 0 && (atflags & AT_EMPTY_PATH) && empty_path(path)) fix_fd_stat(dirfd, (struct stat *)(buf)); \
    return r_;                                                                                   \
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

/* ---- statx, also through syscall(2) ---- */

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
  switch (remote_stat(dirfd, path, flags, &rs)) {
    case REMOTE_DONE: rstat_to_statx(&rs, buf, mask); return 0;
    case REMOTE_FAILED: return -1;
    case REMOTE_PASS: break;
  }
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

/* libuv (node) calls statx, fstat and friends through syscall(2). Calls the hooks would
 * have redirected (connect, open, io_uring) are reported, not emulated (unseen.c). */
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
    /* a static or Go program goes to the seccomp supervisor, as with execve (exec_supervisor.c) */
    if (number == SYS_execve || number == SYS_execveat) shim_exec_syscall(number, a1, a2, a3, a4, a5);
    unseen_syscall(number, a1, a2);
  }
  return REAL(syscall)(number, a1, a2, a3, a4, a5, a6);
}
