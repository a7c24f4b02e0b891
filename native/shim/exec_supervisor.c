/*
 * Static and Go programs: the seccomp supervisor runs them (exec.c's hooks ask here).
 *
 * A program no preload reaches (a static or Go binary, or a script whose interpreter is
 * one: program.c) is run under the seccomp supervisor instead, when the CLI named one
 * (TSMIRROR_SUPERVISOR: --intercept auto on a kernel with seccomp user notification):
 * `sh -c './server'`, make, npm scripts. The exec becomes the supervisor's, with the
 * program and its argv; that process installs the filter and execs the program itself
 * (the supervisor runs beside it: supervisor/detached.c), so the program keeps the pid,
 * parent, descriptors, session, process group, signals and parent-death signal it would
 * have had, and the caller's wait sees its end. execve and the exec family, fexecve,
 * execveat (a descriptor and a path: `--at`) and syscall(SYS_execve/SYS_execveat) are
 * switched, and posix_spawn. Its environment and the program's lose our LD_PRELOAD entry
 * (the supervisor serves the program and its children; a preload too would intercept the
 * same calls twice) and keep TSMIRROR_SOCK (the launcher's watchdog finds a killed CLI's
 * processes by it). The checks that could make the exec fail (not found, not a regular
 * file, not executable: exec_ok) come first, so the caller sees the errno it would have
 * seen; if the supervisor's own exec fails, the program is exec'd as before.
 */
#include "exec.h"

#include <sys/syscall.h>

/* What execve(path) checks before it reads the file: it exists, is a regular file and
 * executable by us (also false on a noexec mount). Only then may the exec switch, so
 * that a failing exec fails with the program's errno, not one about the supervisor. */
static bool exec_ok(const char *path, bool nofollow) {
  struct stat st;
  return REAL(fstatat)(AT_FDCWD, path, &st, nofollow ? AT_SYMLINK_NOFOLLOW : 0) == 0 && S_ISREG(st.st_mode) &&
         REAL(faccessat)(AT_FDCWD, path, X_OK, AT_EACCESS) == 0;
}

#define EXEC_AT_FLAGS (AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)

/* Whether the target is relative to a descriptor (not the current folder). */
static bool target_at_fd(const struct exec_target *t) { return t->dirfd != AT_FDCWD && t->path[0] != '/'; }

/* The target as a path this process can read (a descriptor's through /proc/self/fd, the
 * way the kernel names it to a script's interpreter: /dev/fd/N[/path]); false when the
 * exec would fail by itself (no path, unknown flags) or the name does not fit. */
static bool target_file(const struct exec_target *t, char *out, size_t cap) {
  if (!t->path || (t->flags & ~EXEC_AT_FLAGS)) return false;
  if (!target_at_fd(t)) {
    if (!t->path[0] || strlen(t->path) >= cap) return false;
    strcpy(out, t->path);
    return true;
  }
  if (t->dirfd < 0 || (!t->path[0] && !(t->flags & AT_EMPTY_PATH))) return false;
  int n = snprintf(out, cap, "/proc/self/fd/%d%s%s", t->dirfd, t->path[0] ? "/" : "", t->path);
  return n > 0 && (size_t)n < cap;
}

/* Whether the target is a program for the supervisor that the exec would run (the
 * checks that could make it fail come first). Inside SHIM_ENTER. */
static bool target_wants_supervisor(const struct exec_target *t, char *file, size_t cap) {
  const char *sv = shim_cfg.supervisor_path;
  /* program.c first: it is false for most programs, and costs no more than exec_ok. */
  return sv[0] && target_file(t, file, cap) && shim_program_wants_seccomp(file) &&
         exec_ok(file, (t->flags & AT_SYMLINK_NOFOLLOW) && t->path[0]) && exec_ok(sv, false);
}

/* The supervisor's argv and environment, in one mapping (map_bytes, exec.h). */
struct sv_launch {
  void *map;
  size_t map_len;
  char **argv;
  char **envp;
  int dup_fd; /* a copy of a close-on-exec dirfd made for the supervisor, or -1 */
};

static void sv_launch_release(struct sv_launch *l) {
  int saved = errno;
  if (l->map) {
    munmap(l->map, l->map_len);
    l->map = NULL;
  }
  if (l->dup_fd >= 0) REAL(close)(l->dup_fd);
  l->dup_fd = -1;
  errno = saved;
}

/* Whether the target (argv, env: what the caller passes to execve) is to run under the
 * supervisor; if so fills `l` (release with sv_launch_release). Inside SHIM_ENTER.
 *
 * A target relative to a descriptor (execveat, fexecve) goes to the supervisor as
 * `--at FD FLAGS KEEP`: the exec keeps the descriptor unless it is close-on-exec, so a
 * close-on-exec one is copied first (KEEP 0: the supervisor marks the copy close-on-exec
 * again before the program starts, so the program gets the descriptors it would have).
 * A script named through a close-on-exec descriptor is left alone: the kernel refuses
 * it (ENOENT: its interpreter could not open /dev/fd/N), and so does the real call. */
static bool sv_launch_build(const struct exec_target *t, char *const argv[], char *const env[], struct sv_launch *l) {
  l->map = NULL;
  l->dup_fd = -1;
  const char *sv = shim_cfg.supervisor_path, *shim = shim_cfg.shim_path;
  char file[4096 + 32];
  if (!target_wants_supervisor(t, file, sizeof file)) return false;
  const char *path = t->path;
  bool at = target_at_fd(t);
  int at_fd = t->dirfd;
  char at_args[3][16];
  if (at) {
    int fd_flags = REAL(fcntl)(t->dirfd, F_GETFD);
    if (fd_flags < 0) return false;
    if (fd_flags & FD_CLOEXEC) {
      struct shim_program p;
      if (shim_program_inspect(file, &p) < 0 || p.kind == SHIM_PROG_SCRIPT) return false;
      at_fd = l->dup_fd = REAL(fcntl)(t->dirfd, F_DUPFD, 0);
      if (at_fd < 0) return false;
    }
    snprintf(at_args[0], sizeof at_args[0], "%d", at_fd);
    snprintf(at_args[1], sizeof at_args[1], "%d", t->flags & EXEC_AT_FLAGS);
    snprintf(at_args[2], sizeof at_args[2], "%d", (fd_flags & FD_CLOEXEC) ? 0 : 1);
  }
  size_t argc = 0, envc = 0, strings = 0;
  for (; argv && argv[argc]; argc++) {}
  for (; env && env[envc]; envc++) {}
  /* execve("prog") is relative to the current folder; the supervisor's execvp would search PATH. */
  bool dot = !at && strchr(path, '/') == NULL;
  strings += strlen(path) + 3 + strlen(shim_cfg.sock_path) + 1;
  for (size_t i = 0; i < envc; i++)
    if (has_prefix(env[i], "LD_PRELOAD=")) strings += strlen(env[i]) + 1;
  if (at) strings += sizeof at_args;
  size_t slots = (5 + 4 + (argc ? argc : 1) + 1) + (envc + 1);
  size_t len = slots * sizeof(char *) + strings;
  char **mem = map_bytes(len);
  if (!mem) {
    sv_launch_release(l);
    return false;
  }
  l->map = mem;
  l->map_len = len;
  l->argv = mem;
  char *cursor = (char *)(mem + slots);
  size_t k = 0;
  l->argv[k++] = (char *)sv;
  if (at) {
    l->argv[k++] = "--at";
    for (int i = 0; i < 3; i++) {
      l->argv[k++] = cursor;
      cursor = stpcpy(cursor, at_args[i]) + 1;
    }
  }
  l->argv[k++] = "0"; /* no CLI to watch: started in place of the program (main.c) */
  l->argv[k++] = cursor;
  cursor = stpcpy(cursor, shim_cfg.sock_path) + 1;
  l->argv[k++] = "-1"; /* no status pipe: the caller sees the end in our exit status */
  l->argv[k++] = cursor;
  cursor = stpcpy(stpcpy(cursor, dot ? "./" : ""), path) + 1;
  if (argc == 0) l->argv[k++] = ""; /* what the kernel gives a program run with no argv */
  for (size_t i = 0; i < argc; i++) l->argv[k++] = argv[i];
  l->argv[k] = NULL;
  l->envp = l->argv + k + 1;
  size_t e = 0;
  for (size_t i = 0; i < envc; i++) {
    if (!has_prefix(env[i], "LD_PRELOAD=")) {
      l->envp[e++] = env[i];
      continue;
    }
    /* LD_PRELOAD without our entry; dropped when nothing else is left */
    char *start = cursor, *p = stpcpy(cursor, "LD_PRELOAD=");
    bool any = false;
    size_t n = strlen(shim);
    for (const char *q = env[i] + strlen("LD_PRELOAD="); *q;) {
      while (*q == ':' || *q == ' ') q++;
      size_t tok = strcspn(q, ": ");
      if (tok && !(tok == n && strncmp(q, shim, n) == 0)) {
        if (any) *p++ = ':';
        memcpy(p, q, tok);
        p += tok;
        any = true;
      }
      q += tok;
    }
    *p = '\0';
    cursor = p + 1;
    if (any) l->envp[e++] = start;
  }
  l->envp[e] = NULL;
  return true;
}

/* The exec under the supervisor when it is for it; returns when the exec was not
 * switched (or the supervisor's exec failed), errno unchanged. */
SHIM_HIDDEN void exec_supervised(const struct exec_target *t, char *const argv[], char *const env[]) {
  if (!shim_cfg.supervisor_path[0] || !shim_intercepting()) return;
  int saved = errno;
  SHIM_ENTER();
  struct sv_launch l;
  if (sv_launch_build(t, argv, env, &l)) {
    shim_log("exec %s (fd %d): a static or Go program, run under the seccomp supervisor", t->path, t->dirfd);
    REAL(execve)(l.argv[0], l.argv, l.envp);
    shim_log("exec %s: the supervisor %s did not start (errno %d); exec as it is", t->path, l.argv[0], errno);
    sv_launch_release(&l);
  }
  SHIM_LEAVE();
  errno = saved;
}

SHIM_HIDDEN void exec_path_supervised(const char *path, char *const argv[], char *const env[]) {
  exec_supervised(&(struct exec_target){AT_FDCWD, path, 0}, argv, env);
}

/* The file execvp(file) runs: `file` when it names a path, else the first executable
 * regular file of that name in PATH's folders (glibc's order and default PATH; an empty
 * entry is the current folder). False when there is none: execvp then fails by itself. */
static bool search_path(const char *file, char *out, size_t cap) {
  if (!file || !file[0]) return false;
  size_t flen = strlen(file);
  if (strchr(file, '/')) {
    if (flen >= cap) return false;
    memcpy(out, file, flen + 1);
    return true;
  }
  const char *path = getenv("PATH");
  if (!path) path = "/bin:/usr/bin";
  for (const char *p = path;;) {
    size_t dlen = strcspn(p, ":");
    if (dlen + 1 + flen < cap) {
      char *q = out;
      if (dlen) {
        memcpy(q, p, dlen);
        q += dlen;
        *q++ = '/';
      }
      memcpy(q, file, flen + 1);
      if (exec_ok(out, false)) return true;
    }
    if (!p[dlen]) return false;
    p += dlen + 1;
  }
}

/* search_path from a hook: the shim's own calls bypass the hooks, and errno is the caller's. */
SHIM_HIDDEN bool find_on_path(const char *file, char *found, size_t size) {
  int saved = errno;
  SHIM_ENTER();
  bool ok = search_path(file, found, size);
  SHIM_LEAVE();
  errno = saved;
  return ok;
}

SHIM_HIDDEN void exec_search_supervised(const char *file, char *const argv[], char *const env[]) {
  if (!shim_cfg.supervisor_path[0] || !shim_intercepting()) return;
  char found[4096];
  if (find_on_path(file, found, sizeof found)) exec_path_supervised(found, argv, env);
}

/* syscall(SYS_execve / SYS_execveat, …) (the syscall() hook, files_stat.c): switched
 * to the supervisor as execve and execveat are, with the session variables put back for
 * it; returns when not switched, and the raw call then runs exactly as made (no
 * environment fix: tsmirror-launch's own raw execve relies on that). */
SHIM_HIDDEN void shim_exec_syscall(long number, long a1, long a2, long a3, long a4, long a5) {
  if (!shim_cfg.supervisor_path[0] || !shim_intercepting()) return;
  struct exec_target t = number == SYS_execve ? (struct exec_target){AT_FDCWD, (const char *)a1, 0}
                                              : (struct exec_target){(int)a1, (const char *)a2, (int)a5};
  char *const *argv = (char *const *)(number == SYS_execve ? a2 : a3);
  char *const *envp = (char *const *)(number == SYS_execve ? a3 : a4);
  int saved = errno;
  char file[4096 + 32];
  SHIM_ENTER();
  bool wanted = target_wants_supervisor(&t, file, sizeof file);
  SHIM_LEAVE();
  errno = saved;
  if (!wanted) return;
  struct env_fix fix;
  char *const *env = env_fixed(envp, &fix);
  exec_supervised(&t, argv, env);
  env_release(&fix);
}

/* posix_spawn of a program for the supervisor spawns the supervisor instead (glibc's
 * posix_spawn execs through an internal entry point, past the execve hook). The file
 * actions and attributes apply to the supervisor, and through it to the program it
 * forks: descriptors, session, process group, signal mask and defaults. A failed spawn
 * of the supervisor spawns the program as before. Returns -1 when not switched. */
SHIM_HIDDEN int spawn_supervised(pid_t *pid, const char *path, const posix_spawn_file_actions_t *file_actions,
                                 const posix_spawnattr_t *attrp, char *const argv[], char *const env[]) {
  if (!path || !shim_cfg.supervisor_path[0] || !shim_intercepting()) return -1;
  int saved = errno;
  SHIM_ENTER();
  struct sv_launch l;
  int r = -1;
  if (sv_launch_build(&(struct exec_target){AT_FDCWD, path, 0}, argv, env, &l)) {
    shim_log("posix_spawn %s: a static or Go program, run under the seccomp supervisor", path);
    r = REAL(posix_spawn)(pid, l.argv[0], file_actions, attrp, l.argv, l.envp);
    if (r != 0) {
      shim_log("posix_spawn %s: the supervisor did not start (errno %d); spawned as it is", path, r);
      r = -1;
    }
    sv_launch_release(&l);
  }
  SHIM_LEAVE();
  errno = saved;
  return r;
}
