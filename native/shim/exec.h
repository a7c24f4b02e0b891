/*
 * Shared by the exec family's files: exec.c (the hooks: fork, vfork, the exec family,
 * posix_spawn), exec_env.c (the environment every exec'd program gets back) and
 * exec_supervisor.c (static and Go programs: the seccomp supervisor runs them).
 */
#ifndef TSMIRROR_EXEC_H
#define TSMIRROR_EXEC_H

#include "shim.h"

#include <string.h>
#include <sys/mman.h>

static inline bool has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The new environment (and argv) are built in mmap'd memory: exec may run in a child of a
 * multithreaded parent, where malloc's locks cannot be trusted. NULL on failure. */
static inline void *map_bytes(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* ---- exec_env.c ---- */

struct env_fix {
  void *map;
  size_t map_len;
};

/* The environment to exec with: envp itself, or a copy with what is missing put back
 * (release with env_release). */
SHIM_HIDDEN char *const *env_fixed(char *const envp[], struct env_fix *fix);
SHIM_HIDDEN void env_release(struct env_fix *fix);

/* ---- exec_supervisor.c: each returns when the exec is not switched to the supervisor ---- */

/* What an exec names: execve's path (dirfd AT_FDCWD), or execveat's descriptor, path
 * and flags (fexecve: the descriptor, "" and AT_EMPTY_PATH). */
struct exec_target {
  int dirfd;
  const char *path;
  int flags;
};

/* The exec of t under the supervisor when it is for it (errno unchanged). */
SHIM_HIDDEN void exec_supervised(const struct exec_target *t, char *const argv[], char *const env[]);
SHIM_HIDDEN void exec_path_supervised(const char *path, char *const argv[], char *const env[]);
/* execvp's: the file PATH's search would pick. */
SHIM_HIDDEN void exec_search_supervised(const char *file, char *const argv[], char *const env[]);
/* The file execvp(file) runs, found from a hook (errno unchanged); false: none. */
SHIM_HIDDEN bool find_on_path(const char *file, char *found, size_t size);
/* posix_spawn of the supervisor for a program that is for it; -1 when not switched. */
SHIM_HIDDEN int spawn_supervised(pid_t *pid, const char *path, const posix_spawn_file_actions_t *file_actions,
                                 const posix_spawnattr_t *attrp, char *const argv[], char *const env[]);

#endif
