/*
 * Processes. fork: the atfork handlers (channel.c) give the child its own channel.
 * vfork becomes fork, because the shim's work in the child (allocations, channel) is
 * not safe on a parent's borrowed stack. The exec family and posix_spawn put
 * LD_PRELOAD and the session variables back into an environment that the program
 * scrubbed (`env -i curl ...`), so the next program is intercepted too (exec_env.c).
 *
 * A program no preload reaches (a static or Go binary, or a script whose interpreter is
 * one: program.c) is run under the seccomp supervisor instead, when the CLI named one
 * (exec_supervisor.c).
 *
 * The new argv of execl* is built in mmap'd memory (map_bytes, exec.h).
 */
#include "exec.h"

#include <stdarg.h>
#include <sys/syscall.h>

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
  exec_path_supervised(path, argv, env);
  int r = REAL(execve)(path, argv, env);
  env_release(&fix);
  return r;
}

static int exec_search(const char *file, char *const argv[], char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  exec_search_supervised(file, argv, env);
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
  exec_supervised(&(struct exec_target){fd, "", AT_EMPTY_PATH}, argv, env);
  int r = REAL(fexecve)(fd, argv, env);
  env_release(&fix);
  return r;
}

SHIM_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  exec_supervised(&(struct exec_target){dirfd, path, flags}, argv, env);
  int r = REAL(execveat) ? REAL(execveat)(dirfd, path, argv, env, flags)
                         : (int)REAL(syscall)(SYS_execveat, dirfd, path, argv, env, flags);
  env_release(&fix);
  return r;
}

/* execl*: gather the variadic arguments into an argv (in mmap'd memory, see map_bytes). */
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
  int r = spawn_supervised(pid, path, file_actions, attrp, argv, env);
  if (r < 0) r = REAL(posix_spawn)(pid, path, file_actions, attrp, argv, env);
  env_release(&fix);
  return r;
}

SHIM_EXPORT int posix_spawnp(pid_t *__restrict pid, const char *__restrict file,
                             const posix_spawn_file_actions_t *file_actions,
                             const posix_spawnattr_t *__restrict attrp, char *const argv[],
                             char *const envp[]) {
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  int r = -1;
  if (shim_cfg.supervisor_path[0] && shim_intercepting()) {
    char found[4096];
    if (find_on_path(file, found, sizeof found)) r = spawn_supervised(pid, found, file_actions, attrp, argv, env);
  }
  if (r < 0) r = REAL(posix_spawnp)(pid, file, file_actions, attrp, argv, env);
  env_release(&fix);
  return r;
}
