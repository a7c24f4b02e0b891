/*
 * What the supervisor's two launch modes share: main.c (the arguments, --probe, --inspect,
 * the forked mode) and detached.c (in place: the exec'd process becomes the program).
 */
#ifndef TSMIRROR_SV_LAUNCH_H
#define TSMIRROR_SV_LAUNCH_H

#include "sv.h"

/* The program to run: execvp(path), or, for the shim's execveat/fexecve hooks (--at),
 * execveat(at_fd, path, argv, environ, at_flags). */
struct sv_program {
  const char *path;
  int at_fd; /* -1: none */
  int at_flags;
  char *const *argv;
  char name[4200]; /* for messages */
};

/* Execs the program; returns only on failure, with its errno. */
int sv_exec_program(const struct sv_program *prog);
/* Says on stderr that the program cannot start (err); the exit code for it: 127 (not
 * found) or 126. */
int sv_exec_failed(const struct sv_program *prog, int err);
/* Why seccomp user notification is unavailable, from the errno of installing the filter. */
const char *sv_unavailable(int err);
/* Reads exactly len bytes (a handshake message): 0, or -1 (error, or the other end closed). */
int sv_read_full(int fd, void *buf, size_t len);

/* In place (CLI_PID 0), detached.c: this process becomes the program, the supervisor
 * running beside it. Returns -1 to fall back to forking the program; otherwise does not
 * return (it execs the program, or ends with the exit system call) or returns an exit
 * code before the filter was installed. */
int sv_start_detached(const struct sv_program *prog);

#endif
