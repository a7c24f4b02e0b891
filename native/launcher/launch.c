/*
 * tsmirror-launch: starts the program so that it never outlives the CLI.
 *
 * usage: tsmirror-launch CLI_PID PATH ARGV0 [ARG...]
 *
 * A SIGKILLed CLI cannot stop its program, which would run on with broken remote calls
 * (its session proxy gone). Node cannot set a parent-death signal on a child it spawns,
 * so the CLI spawns this instead: it asks the kernel for SIGKILL when its parent dies
 * (PR_SET_PDEATHSIG; kept across execve, except into a setuid/setgid program, which
 * tsmirror refuses anyway), checks that the parent is still the CLI (it may have died
 * before the prctl: then the program never starts), and becomes the program (execvp:
 * same pid, same fds, same signal dispositions, and a file without `#!` runs under /bin/sh
 * as it does when Node spawns it). It works for statically linked programs too, which the
 * shim never sees.
 *
 * The signal comes when the *thread* that forked this process exits: Node spawns from
 * its main thread, which lives as long as the CLI.
 *
 * Exit codes when the program cannot start: 127 (not found), 126 (cannot run), as a
 * shell's; 125 for a usage error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: tsmirror-launch CLI_PID PATH ARGV0 [ARG...]\n");
    return 125;
  }
  char *end;
  long cli = strtol(argv[1], &end, 10);
  if (*end || cli <= 0) {
    fprintf(stderr, "tsmirror-launch: bad CLI pid %s\n", argv[1]);
    return 125;
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    fprintf(stderr, "tsmirror-launch: prctl(PR_SET_PDEATHSIG): %s\n", strerror(errno));
    return 125;
  }
  if (getppid() != (pid_t)cli) return 125; /* the CLI died before the prctl: nobody waits for us */
  const char *path = argv[2];
  execvp(path, &argv[3]); /* argv0, then the program's arguments */
  int err = errno;
  fprintf(stderr, "tsmirror: cannot start %s: %s\n", path, strerror(err));
  return err == ENOENT || err == ENOTDIR ? 127 : 126;
}
