/*
 * stdio on pod files: fopen/freopen (glibc opens stdio files internally, past any open
 * hook) and fclose (stdio closes its descriptor internally, past the close hook).
 */
#include "files.h"

#include <fcntl.h>
#include <stdio.h>

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
static enum remote_result remote_fopen(const char *path, const char *mode, FILE **stream) {
  int flags, fd;
  *stream = NULL;
  if (!stdio_flags(mode, &flags)) return REMOTE_PASS;
  enum remote_result opened = remote_open(AT_FDCWD, path, flags, 0666, true, &fd);
  if (opened != REMOTE_DONE) return opened;
  *stream = fdopen(fd, mode);
  if (!*stream) {
    int e = errno;
    close(fd);
    errno = e;
    return REMOTE_FAILED;
  }
  return REMOTE_DONE;
}

SHIM_EXPORT FILE *fopen(const char *path, const char *mode) {
  FILE *f;
  if (remote_fopen(path, mode, &f) != REMOTE_PASS) return f;
  return REAL(fopen)(path, mode);
}

SHIM_EXPORT FILE *fopen64(const char *path, const char *mode) {
  FILE *f;
  if (remote_fopen(path, mode, &f) != REMOTE_PASS) return f;
  return REAL(fopen64)(path, mode);
}

static enum remote_result remote_freopen(FILE *(*real)(const char *, const char *, FILE *),
                                         const char *path, const char *mode, FILE *stream,
                                         FILE **reopened) {
  int flags, fd;
  *reopened = NULL;
  if (!path || !stdio_flags(mode, &flags)) return REMOTE_PASS;
  enum remote_result opened = remote_open(AT_FDCWD, path, flags, 0666, true, &fd);
  if (opened != REMOTE_DONE) return opened;
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
  *reopened = f;
  return f ? REMOTE_DONE : REMOTE_FAILED;
}

SHIM_EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream) {
  FILE *f;
  if (remote_freopen(REAL(freopen), path, mode, stream, &f) != REMOTE_PASS) return f;
  return REAL(freopen)(path, mode, stream);
}

SHIM_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream) {
  FILE *f;
  if (remote_freopen(REAL(freopen64), path, mode, stream, &f) != REMOTE_PASS) return f;
  return REAL(freopen64)(path, mode, stream);
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
