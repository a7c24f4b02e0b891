/*
 * Descriptor lifetime: close/close_range/closefrom forget per-fd state; dup/dup2/dup3/
 * F_DUPFD copy it. The shim's own fds (proxy channels, log) are protected: the program sees
 * them as not open (EBADF) and a dup2/dup3 onto one first moves the shim's fd out of the
 * way. One closed where no hook sees it (a raw close_range syscall) loses its mark when
 * its number is found holding another file (fdtable_is_shim checks st_dev/st_ino).
 * Nothing here logs: close paths run in children between fork and exec, and in
 * programs that close every fd they have.
 */
#include "shim.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <stdarg.h>
#include <stdlib.h>

SHIM_EXPORT int close(int fd) {
  shim_hook_init();
  if (!shim_depth && fdtable_before_close(fd)) {
    errno = EBADF;
    return -1;
  }
  if (!shim_depth) rfile_forget(fd); /* pod files: write back, release (rfile.c) */
  if (!shim_depth) listen_before_close(fd); /* a subscribed listener unsubscribes (listen.c) */
  return REAL(close)(fd);
}

/* close_range's logic, around the shim's fds (not inside SHIM_ENTER). */
static int close_range_around_shim(unsigned int first, unsigned int last, int flags) {
  if (!REAL(close_range)) {
    errno = ENOSYS;
    return -1;
  }
  int saved = errno;
  SHIM_ENTER();
  /* Split the range around the shim's fds (all below 1M, so m + 1 never wraps). */
  int mine[1024];
  int n = fdtable_shim_fds_in(first, last, mine, (int)(sizeof mine / sizeof mine[0]));
  int kept = 0; /* a marked fd closed behind our back may be the program's now */
  for (int i = 0; i < n; i++)
    if (fdtable_is_shim(mine[i])) mine[kept++] = mine[i];
  n = kept;
  unsigned lo = first;
  int r = 0;
  for (int i = 0; i < n && r == 0; i++) {
    unsigned m = (unsigned)mine[i];
    if (m > lo) r = REAL(close_range)(lo, m - 1, flags);
    lo = m + 1;
  }
  if (r == 0 && lo <= last && !(n > 0 && lo == 0)) r = REAL(close_range)(lo, last, flags);
  int err = errno;
  if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC)) {
    fdtable_clear_range(first, last);
    rfile_forget_range(first, last);
    listen_before_close_range(first, last); /* subscribed listeners unsubscribe (listen.c) */
  }
  SHIM_LEAVE();
  errno = r == 0 ? saved : err;
  return r;
}

SHIM_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
  shim_hook_init();
  if (!REAL(close_range)) {
    errno = ENOSYS;
    return -1;
  }
  if (shim_depth || first > last) return REAL(close_range)(first, last, flags);
  return close_range_around_shim(first, last, flags);
}

/* closefrom without close_range (a kernel before 5.9): what /proc/self/fd lists, one by
 * one, but the shim's. Inside SHIM_ENTER. */
static bool close_listed_from(int lowfd) {
  DIR *d = REAL(opendir)("/proc/self/fd");
  if (!d) return false;
  int self = REAL(dirfd)(d);
  int batch[256];
  for (;;) {
    int n = 0;
    struct dirent *e;
    while (n < (int)(sizeof batch / sizeof batch[0]) && (e = REAL(readdir)(d))) {
      char *end;
      long fd = strtol(e->d_name, &end, 10);
      if (*end || end == e->d_name || fd < lowfd || fd == self || fdtable_is_shim((int)fd)) continue;
      batch[n++] = (int)fd;
    }
    if (n == 0) break;
    /* Closing while listing may skip entries: list again until nothing is left. */
    for (int i = 0; i < n; i++) REAL(close)(batch[i]);
    REAL(rewinddir)(d);
  }
  REAL(closedir)(d);
  fdtable_clear_range((unsigned)lowfd, ~0U);
  rfile_forget_range((unsigned)lowfd, ~0U);
  listen_before_close_range((unsigned)lowfd, ~0U);
  return true;
}

/* glibc's closefrom (2.34+) calls the close_range system call itself, past our
 * close_range hook: daemons and python's subprocess (close_fds) would close the shim's
 * channels and log. */
SHIM_EXPORT void closefrom(int lowfd) {
  shim_hook_init();
  if (lowfd < 0) lowfd = 0;
  if (shim_depth) {
    if (REAL(closefrom)) REAL(closefrom)(lowfd);
    return;
  }
  int saved = errno;
  if (close_range_around_shim((unsigned)lowfd, ~0U, 0) == 0) return;
  SHIM_ENTER();
  bool done = close_listed_from(lowfd);
  SHIM_LEAVE();
  errno = saved;
  if (!done && REAL(closefrom)) REAL(closefrom)(lowfd);
}

SHIM_EXPORT int dup(int fd) {
  shim_hook_init();
  if (fdtable_is_shim(fd) && !shim_depth) {
    errno = EBADF;
    return -1;
  }
  int r = REAL(dup)(fd);
  if (r >= 0) {
    fdtable_copy(fd, r);
    rfile_copy(fd, r);
  }
  return r;
}

/* dup2 and dup3 share this: `target` is about to be replaced. */
static int prepare_target(int fd, int target) {
  if (shim_depth) return 0;
  shim_init();
  if (fdtable_is_shim(fd)) {
    errno = EBADF;
    return -1;
  }
  if (fd != target && fdtable_is_shim(target)) {
    int saved = errno;
    SHIM_ENTER();
    int r = shim_fd_evict(target);
    SHIM_LEAVE();
    if (r < 0) return -1; /* errno from F_DUPFD (EMFILE) */
    errno = saved;
  }
  return 0;
}

SHIM_EXPORT int dup2(int fd, int target) {
  if (prepare_target(fd, target) < 0) return -1;
  int r = REAL(dup2)(fd, target);
  if (r >= 0 && fd != target) {
    fdtable_copy(fd, target);
    rfile_copy(fd, target);
  }
  return r;
}

SHIM_EXPORT int dup3(int fd, int target, int flags) {
  if (prepare_target(fd, target) < 0) return -1;
  int r = REAL(dup3)(fd, target, flags);
  if (r >= 0) {
    fdtable_copy(fd, target);
    rfile_copy(fd, target);
  }
  return r;
}

/* fcntl's third argument is an int or a pointer; like glibc, pass it on as a pointer. */
static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg) {
  shim_hook_init();
  if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
    if (fdtable_is_shim(fd) && !shim_depth) {
      errno = EBADF;
      return -1;
    }
    int r = real(fd, cmd, arg);
    if (r >= 0) {
      fdtable_copy(fd, r);
      rfile_copy(fd, r);
    }
    return r;
  }
  return real(fd, cmd, arg);
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_common(REAL(fcntl), fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  int (*real)(int, int, ...) = REAL(fcntl64) ? REAL(fcntl64) : REAL(fcntl);
  return fcntl_common(real, fd, cmd, arg);
}
