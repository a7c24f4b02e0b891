/*
 * Debug log: silent unless TSMIRROR_SHIM_LOG names a file. Lines go out with one
 * write() each (O_APPEND), so lines from forked children and threads don't tear.
 * Never called from close paths.
 */
#include "shim.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>

static int log_fd = -1;
static dev_t log_dev; /* the log file's identity: a raw close_range may close log_fd */
static ino_t log_ino; /* unseen, and the program reuse its number */

SHIM_HIDDEN int shim_log_fd(void) { return log_fd; }
SHIM_HIDDEN void shim_log_set_fd(int fd) { log_fd = fd; }

SHIM_HIDDEN void shim_log_open(void) {
  if (!shim_cfg.log_path[0]) return;
  int fd = open(shim_cfg.log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  fd = shim_fd_adopt(fd);
  struct stat st;
  if (fd >= 0 && REAL(fstat)(fd, &st) == 0) {
    log_dev = st.st_dev;
    log_ino = st.st_ino;
  }
  log_fd = fd;
}

/* log_fd still is the log file; else forget it (without closing: the number is the
 * program's now) and open the log again. */
static bool log_intact(void) {
  struct stat st;
  if (REAL(fstat)(log_fd, &st) == 0 && st.st_dev == log_dev && st.st_ino == log_ino) return true;
  int gone = log_fd;
  log_fd = -1;
  (void)fdtable_is_shim(gone); /* drops its mark */
  SHIM_ENTER();
  shim_log_open();
  SHIM_LEAVE();
  return log_fd >= 0;
}

SHIM_HIDDEN void shim_log(const char *fmt, ...) {
  if (log_fd < 0) return;
  int saved = errno;
  if (!log_intact()) {
    errno = saved;
    return;
  }
  char line[1024];
  int n = snprintf(line, sizeof line, "[tsmirror %d/%ld] ", (int)getpid(), (long)syscall(SYS_gettid));
  if (n < 0) n = 0;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  (void)!write(log_fd, line, len);
  errno = saved;
}
