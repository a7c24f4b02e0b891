/*
 * Temporary files on pod paths: glibc's mkstemp family opens internally, past the open
 * hooks, so a template in a pod directory gets its name made here and opened through
 * remote_open with O_EXCL, retried on EEXIST like glibc's.
 */
#include "files.h"

#include <fcntl.h>
#include <string.h>
#include <time.h>

static enum remote_result remote_mkstemp(char *tmpl, int suffixlen, int flags, int *fd) {
  *fd = -1;
  if (!shim_intercepting() || !tmpl) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(AT_FDCWD, tmpl, abs, sizeof abs);
  SHIM_LEAVE();
  if (route == FS_LOCAL) {
    errno = saved;
    return REMOTE_PASS;
  }
  size_t len = strlen(tmpl);
  if (suffixlen < 0 || len < 6 + (size_t)suffixlen || memcmp(tmpl + len - 6 - suffixlen, "XXXXXX", 6) != 0) {
    errno = EINVAL;
    return REMOTE_FAILED;
  }
  static const char letters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  char *x = tmpl + len - 6 - suffixlen;
  uint64_t seed = (uint64_t)getpid() * 2654435761u ^ (uint64_t)(uintptr_t)tmpl;
  int open_flags = O_RDWR | O_CREAT | O_EXCL | (flags & ~O_ACCMODE);
  for (int attempt = 0; attempt < 100; attempt++) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t v = seed ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)attempt << 40);
    for (int i = 0; i < 6; i++) {
      v = v * 6364136223846793005ULL + 1442695040888963407ULL;
      x[i] = letters[(v >> 33) % (sizeof letters - 1)];
    }
    /* The rules may send this name elsewhere than the template: then it is opened here. */
    if (remote_open(AT_FDCWD, tmpl, open_flags, 0600, false, fd) == REMOTE_PASS)
      *fd = REAL(open)(tmpl, open_flags, 0600);
    if (*fd >= 0) return REMOTE_DONE;
    if (errno != EEXIST) return REMOTE_FAILED;
  }
  errno = EEXIST;
  return REMOTE_FAILED;
}

#define MKSTEMP_BODY(tmpl, suffixlen, flags, real_call)                              \
  int fd;                                                                            \
  if (remote_mkstemp(tmpl, suffixlen, flags, &fd) != REMOTE_PASS) return fd;         \
  return real_call;

SHIM_EXPORT int mkstemp(char *tmpl) { MKSTEMP_BODY(tmpl, 0, 0, REAL(mkstemp)(tmpl)) }
SHIM_EXPORT int mkstemp64(char *tmpl) { MKSTEMP_BODY(tmpl, 0, 0, REAL(mkstemp64)(tmpl)) }
SHIM_EXPORT int mkostemp(char *tmpl, int flags) { MKSTEMP_BODY(tmpl, 0, flags, REAL(mkostemp)(tmpl, flags)) }
SHIM_EXPORT int mkostemp64(char *tmpl, int flags) { MKSTEMP_BODY(tmpl, 0, flags, REAL(mkostemp64)(tmpl, flags)) }
SHIM_EXPORT int mkstemps(char *tmpl, int suffixlen) { MKSTEMP_BODY(tmpl, suffixlen, 0, REAL(mkstemps)(tmpl, suffixlen)) }
SHIM_EXPORT int mkstemps64(char *tmpl, int suffixlen) {
  MKSTEMP_BODY(tmpl, suffixlen, 0, REAL(mkstemps64)(tmpl, suffixlen))
}
SHIM_EXPORT int mkostemps(char *tmpl, int suffixlen, int flags) {
  MKSTEMP_BODY(tmpl, suffixlen, flags, REAL(mkostemps)(tmpl, suffixlen, flags))
}
SHIM_EXPORT int mkostemps64(char *tmpl, int suffixlen, int flags) {
  MKSTEMP_BODY(tmpl, suffixlen, flags, REAL(mkostemps64)(tmpl, suffixlen, flags))
}
