/*
 * Processes. fork: the atfork handlers (channel.c) give the child its own channel.
 * vfork becomes fork, because the shim's work in the child (allocations, channel) is
 * not safe on a parent's borrowed stack. The exec family and posix_spawn put
 * LD_PRELOAD and the session variables back into an environment that the program
 * scrubbed (`env -i curl ...`), so the next program is intercepted too.
 *
 * The new environment is built in mmap'd memory: exec may run in a child of a
 * multithreaded parent, where malloc's locks cannot be trusted.
 */
#include "shim.h"

#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>

struct env_fix {
  void *map;
  size_t map_len;
};

static bool has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static bool preload_contains(const char *list, const char *path) {
  size_t n = strlen(path);
  for (const char *p = list; *p;) {
    while (*p == ':' || *p == ' ') p++;
    const char *end = p + strcspn(p, ": ");
    if ((size_t)(end - p) == n && strncmp(p, path, n) == 0) return true;
    p = end;
  }
  return false;
}

static void *map_bytes(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static char *put_var(char **cursor, const char *name, const char *a, const char *sep, const char *b) {
  char *start = *cursor, *p = start;
  p = stpcpy(p, name);
  *p++ = '=';
  p = stpcpy(p, a);
  if (sep) {
    p = stpcpy(p, sep);
    p = stpcpy(p, b);
  }
  *cursor = p + 1;
  return start;
}

/* Returns envp itself when nothing is missing, else a fixed copy (release with
 * env_release). Never fails the exec: on error the program's envp is used. */
static char *const *env_fixed(char *const envp[], struct env_fix *fix) {
  fix->map = NULL;
  fix->map_len = 0;
  if (!shim_intercepting() || !shim_cfg.shim_path[0]) return envp;
  rfile_before_exec(); /* pod files the new program inherits must be complete (rfile.c) */

  const char *sock = shim_cfg.sock_path, *shim = shim_cfg.shim_path, *log = shim_cfg.log_path;
  size_t n = 0;
  const char *preload = NULL;
  bool sock_ok = false, shim_ok = false, log_ok = !log[0];
  for (; envp && envp[n]; n++) {
    const char *e = envp[n];
    if (has_prefix(e, "LD_PRELOAD=")) preload = e + strlen("LD_PRELOAD=");
    else if (has_prefix(e, "TSMIRROR_SOCK=")) sock_ok = strcmp(e + strlen("TSMIRROR_SOCK="), sock) == 0;
    else if (has_prefix(e, "TSMIRROR_SHIM=")) shim_ok = strcmp(e + strlen("TSMIRROR_SHIM="), shim) == 0;
    else if (has_prefix(e, "TSMIRROR_SHIM_LOG=") && log[0])
      log_ok = strcmp(e + strlen("TSMIRROR_SHIM_LOG="), log) == 0;
  }
  bool preload_ok = preload && preload_contains(preload, shim);
  if (preload_ok && sock_ok && shim_ok && log_ok) return envp;

  size_t strings = strlen("LD_PRELOAD=") + strlen(shim) + 1 + (preload ? strlen(preload) : 0) + 1 +
                   strlen("TSMIRROR_SOCK=") + strlen(sock) + 1 + strlen("TSMIRROR_SHIM=") +
                   strlen(shim) + 1 + strlen("TSMIRROR_SHIM_LOG=") + strlen(log) + 1;
  size_t len = (n + 5) * sizeof(char *) + strings;
  char **out = map_bytes(len);
  if (!out) return envp;
  fix->map = out;
  fix->map_len = len;
  char *cursor = (char *)(out + n + 5);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = envp[i];
    if (has_prefix(e, "LD_PRELOAD=") || has_prefix(e, "TSMIRROR_SOCK=") ||
        has_prefix(e, "TSMIRROR_SHIM=") || (log[0] && has_prefix(e, "TSMIRROR_SHIM_LOG=")))
      continue;
    out[k++] = (char *)e;
  }
  /* Ours goes first so that our hooks win over another preload's. */
  if (preload_ok) out[k++] = put_var(&cursor, "LD_PRELOAD", preload, NULL, NULL);
  else if (preload && *preload) out[k++] = put_var(&cursor, "LD_PRELOAD", shim, ":", preload);
  else out[k++] = put_var(&cursor, "LD_PRELOAD", shim, NULL, NULL);
  out[k++] = put_var(&cursor, "TSMIRROR_SOCK", sock, NULL, NULL);
  out[k++] = put_var(&cursor, "TSMIRROR_SHIM", shim, NULL, NULL);
  if (log[0]) out[k++] = put_var(&cursor, "TSMIRROR_SHIM_LOG", log, NULL, NULL);
  out[k] = NULL;
  return out;
}

static void env_release(struct env_fix *fix) {
  if (fix->map) {
    int saved = errno;
    munmap(fix->map, fix->map_len);
    errno = saved;
  }
}

SHIM_EXPORT pid_t fork(void) {
  shim_hook_init(); /* so the atfork handlers are registered before the first fork */
  return REAL(fork)();
}

SHIM_EXPORT pid_t vfork(void) {
  shim_hook_init();
  return REAL(fork)();
}

static int exec_path(const char *path, char *const argv[], char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  int r = REAL(execve)(path, argv, env);
  env_release(&fix);
  return r;
}

static int exec_search(const char *file, char *const argv[], char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  int r = REAL(execvpe)(file, argv, env);
  env_release(&fix);
  return r;
}

SHIM_EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
  return exec_path(path, argv, envp);
}

SHIM_EXPORT int execv(const char *path, char *const argv[]) { return exec_path(path, argv, environ); }

SHIM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
  return exec_search(file, argv, envp);
}

SHIM_EXPORT int execvp(const char *file, char *const argv[]) { return exec_search(file, argv, environ); }

SHIM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  int r = REAL(fexecve)(fd, argv, env);
  env_release(&fix);
  return r;
}

/* execl*: gather the variadic arguments into an argv (in mmap'd memory, see above). */
static char **gather_args(const char *arg0, va_list ap, char *const **envp_out, size_t *map_len) {
  va_list count;
  va_copy(count, ap);
  size_t n = 1;
  if (arg0)
    while (va_arg(count, const char *)) n++;
  va_end(count);
  *map_len = (n + 1) * sizeof(char *);
  char **argv = map_bytes(*map_len);
  if (!argv) return NULL;
  argv[0] = (char *)arg0;
  size_t i = 1;
  if (arg0)
    for (; i < n; i++) argv[i] = va_arg(ap, char *);
  else
    i = 0;
  argv[i] = NULL;
  if (arg0) (void)va_arg(ap, char *); /* the terminating NULL */
  if (envp_out) *envp_out = va_arg(ap, char *const *);
  return argv;
}

/* The result of an exec that returned (it failed), after freeing the gathered argv. */
static int release_args(int result, char **argv, size_t len) {
  int saved = errno;
  munmap(argv, len);
  errno = saved;
  return result;
}

SHIM_EXPORT int execl(const char *path, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  size_t len;
  char **argv = gather_args(arg, ap, NULL, &len);
  va_end(ap);
  if (!argv) {
    errno = ENOMEM;
    return -1;
  }
  return release_args(exec_path(path, argv, environ), argv, len);
}

SHIM_EXPORT int execlp(const char *file, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  size_t len;
  char **argv = gather_args(arg, ap, NULL, &len);
  va_end(ap);
  if (!argv) {
    errno = ENOMEM;
    return -1;
  }
  return release_args(exec_search(file, argv, environ), argv, len);
}

SHIM_EXPORT int execle(const char *path, const char *arg, ...) {
  va_list ap;
  va_start(ap, arg);
  size_t len;
  char *const *envp = NULL;
  char **argv = gather_args(arg, ap, &envp, &len);
  va_end(ap);
  if (!argv) {
    errno = ENOMEM;
    return -1;
  }
  return release_args(exec_path(path, argv, envp), argv, len);
}

SHIM_EXPORT int posix_spawn(pid_t *__restrict pid, const char *__restrict path,
                            const posix_spawn_file_actions_t *file_actions,
                            const posix_spawnattr_t *__restrict attrp, char *const argv[],
                            char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  int r = REAL(posix_spawn)(pid, path, file_actions, attrp, argv, env);
  env_release(&fix);
  return r;
}

SHIM_EXPORT int posix_spawnp(pid_t *__restrict pid, const char *__restrict file,
                             const posix_spawn_file_actions_t *file_actions,
                             const posix_spawnattr_t *__restrict attrp, char *const argv[],
                             char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  int r = REAL(posix_spawnp)(pid, file, file_actions, attrp, argv, env);
  env_release(&fix);
  return r;
}
