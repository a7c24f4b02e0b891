/*
 * What the shim's wire code needs from the rest of the shim, for the supervisor. The
 * supervisor links native/shim/{msgpack,replies,proto,fsproto,channel,addr,program}.c unchanged;
 * here the shim's hooks-and-bookkeeping world shrinks to plain libc: the "real" functions
 * are libc's own (nothing is hooked in this process), the supervisor's descriptors are
 * its own (no program shares its fd table), and the log is TSMIRROR_SHIM_LOG.
 */
#include "sv.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>

struct shim_config shim_cfg;
__thread int shim_depth __attribute__((tls_model("initial-exec")));

#define SV_REAL(name) __typeof__(name) *real_##name = name;
SV_REAL(close)
SV_REAL(connect)
SV_REAL(fstat)
SV_REAL(fstatat)
SV_REAL(openat)
SV_REAL(pread)
SV_REAL(socket)
#undef SV_REAL

void shim_resolve_lazy(void **slot, const char *name) { *slot = dlsym(RTLD_DEFAULT, name); }

int shim_fd_adopt(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void shim_fd_release(int fd) { close(fd); }
bool fdtable_is_shim(int fd) { return true; }
void fdtable_mark_shim(int fd, bool owned) {}
void fdtable_lock(void) {}
void fdtable_unlock(void) {}

static int log_fd = -1;

void sv_log_open(void) {
  const char *path = getenv("TSMIRROR_SHIM_LOG");
  if (path && *path) log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

void shim_log(const char *fmt, ...) {
  if (log_fd < 0) return;
  int saved = errno;
  char line[1024];
  int n = snprintf(line, sizeof line, "[tsmirror-supervise %d/%ld] ", (int)getpid(), (long)syscall(SYS_gettid));
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
