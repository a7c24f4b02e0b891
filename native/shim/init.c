/*
 * Initialisation: resolve the real functions once, read the session variables, and
 * register the fork handlers. Runs from our constructor through pthread_once, and from
 * every hook too, because another library's constructor may call a hook first.
 */
#include "shim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define SHIM_DEFINE_REAL(ret, name, params) SHIM_HIDDEN ret(*real_##name) params;
SHIM_HOOKS(SHIM_DEFINE_REAL)
#undef SHIM_DEFINE_REAL

SHIM_HIDDEN struct shim_config shim_cfg;
SHIM_HIDDEN __thread int shim_depth __attribute__((tls_model("initial-exec")));

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_done;

/* Hooks that may legitimately be missing from an older libc. */
static bool optional_hook(const char *name) {
  static const char *const optional[] = {"close_range", "closefrom", "io_uring_setup", "fcntl64", "statx", "preadv2", "preadv64v2",
                                         "renameat2", "copy_file_range", "eaccess", "execveat",
                                         /* libc's since glibc 2.34 (before, libresolv's __res_* only) */
                                         "res_query", "res_search", "res_querydomain", "res_send", "res_nquery",
                                         "res_nsearch", "res_nquerydomain", "res_nsend"};
  /* glibc-internal entry points (__xstat, __open_2, …) come and go between versions. */
  if (strncmp(name, "__", 2) == 0) return true;
  for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++)
    if (strcmp(name, optional[i]) == 0) return true;
  return false;
}

static void die(const char *what, const char *name) {
  char buf[256];
  int n = snprintf(buf, sizeof buf, "libtsmirror: fatal: %s: %s\n", what, name);
  if (n > 0) (void)!write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
  abort();
}

/* dlsym(RTLD_NEXT) must never hand back one of our own hooks: that would recurse
 * forever. Compare the defining object instead of the address, which works whether we
 * are preloaded or dlopen'ed. */
static void *resolve_next(const char *name) {
  void *fn = dlsym(RTLD_NEXT, name);
  if (!fn) {
    if (!optional_hook(name)) die("dlsym(RTLD_NEXT) found no definition of", name);
    return NULL;
  }
  Dl_info theirs, ours;
  if (dladdr(fn, &theirs) && dladdr((void *)&resolve_next, &ours) &&
      theirs.dli_fbase == ours.dli_fbase)
    die("dlsym(RTLD_NEXT) returned the shim's own hook for", name);
  return fn;
}

SHIM_HIDDEN void shim_resolve_lazy(void **slot, const char *name) {
  void *fn = resolve_next(name);
  __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
}

static void copy_env(const char *var, char *dst, size_t cap) {
  const char *v = getenv(var);
  dst[0] = 0;
  if (v && strlen(v) < cap) memcpy(dst, v, strlen(v) + 1);
}

/* The shim's fds sit just below the soft RLIMIT_NOFILE so they stay out of the way of
 * the program's own (which the kernel hands out lowest-first). The floor is capped so
 * that a huge limit (1M in many containers) does not make the kernel grow every fd
 * table, and copy it on every fork, for a handful of descriptors. */
static int compute_fd_floor(void) {
  struct rlimit rl;
  long soft = 1024;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) soft = (long)rl.rlim_cur;
  if (soft > 65536) soft = 65536;
  long floor = soft > 1024 ? soft - 256 : soft * 3 / 4;
  if (floor < 10) floor = 10;
  return (int)floor;
}

static void atfork_prepare(void) { channel_atfork_prepare(); }
static void atfork_parent(void) { channel_atfork_parent(); }
static void atfork_child(void) { channel_atfork_child(); }

static void init_once_body(void) {
#define SHIM_RESOLVE(ret, name, params) \
  if (!real_##name) shim_resolve_lazy((void **)&real_##name, #name);
  SHIM_HOOKS(SHIM_RESOLVE)
#undef SHIM_RESOLVE

  copy_env("TSMIRROR_SOCK", shim_cfg.sock_path, sizeof shim_cfg.sock_path);
  copy_env("TSMIRROR_SHIM", shim_cfg.shim_path, sizeof shim_cfg.shim_path);
  copy_env("TSMIRROR_SHIM_LOG", shim_cfg.log_path, sizeof shim_cfg.log_path);
  copy_env("TSMIRROR_SUPERVISOR", shim_cfg.supervisor_path, sizeof shim_cfg.supervisor_path);
  copy_env("TSMIRROR_CLI_PID", shim_cfg.cli_pid, sizeof shim_cfg.cli_pid);
  if (!shim_cfg.shim_path[0]) {
    Dl_info self;
    if (dladdr((void *)&resolve_next, &self) && self.dli_fname &&
        self.dli_fname[0] == '/' && strlen(self.dli_fname) < sizeof shim_cfg.shim_path)
      strcpy(shim_cfg.shim_path, self.dli_fname);
  }
  shim_cfg.fd_floor = compute_fd_floor();

  /* Without a session the shim is inert: not even a log file. */
  const char *sock = getenv("TSMIRROR_SOCK");
  if (sock && *sock) {
    shim_log_open();
    if (!shim_cfg.sock_path[0]) {
      shim_log("TSMIRROR_SOCK is longer than a unix socket path can be; shim inert");
    } else {
      channel_global_init();
      pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
      shim_cfg.active = true;
      shim_log("active: sock=%s shim=%s floor=%d", shim_cfg.sock_path, shim_cfg.shim_path,
               shim_cfg.fd_floor);
    }
  }
  __atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
}

SHIM_HIDDEN void shim_init(void) {
  if (__atomic_load_n(&init_done, __ATOMIC_ACQUIRE)) return;
  int saved = errno;
  SHIM_ENTER();
  pthread_once(&init_once, init_once_body);
  SHIM_LEAVE();
  errno = saved;
}

__attribute__((constructor)) static void shim_constructor(void) { shim_init(); }
