/*
 * tsmirror-supervise in place, detached: the exec'd process becomes the program (CLI_PID 0,
 * started by the shim's exec hooks; main.c parses the arguments and holds the forked mode
 * this falls back to).
 *
 * Started in place of a program (CLI_PID 0), this process P is the one its caller
 * exec'd or spawned: its pid is the one the caller knows. So P itself becomes the
 * program, under the filter, and the supervisor S runs beside it, never its child:
 *
 *   P: socketpair; pidfd of itself; clone (no exit signal: P's SIGCHLD, its handler and
 *      its wait() never hear of it) a middle process, which leaves P's session and
 *      process group (setsid: terminal and group signals meant for the program pass S by)
 *      and forks S, then exits; P reaps it at once. P has no child left.
 *   S: closes every descriptor of the program's (those without FD_CLOEXEC: the
 *      supervisor's own all have it), stdin/stdout on /dev/null, keeps stderr; proves it
 *      may reach P (pidfd_getfd of P's end of the socketpair: the permission every
 *      handler needs, which Yama's ptrace_scope 1 refuses to a process that is not P's
 *      ancestor, unless privileged), and says so.
 *   P: installs the filter with a listener and writes the listener's number (write and
 *      send without an address are never notified; a sendmsg with SCM_RIGHTS could be);
 *   S: copies the listener out of P (pidfd_getfd), starts its guard G and the workers,
 *      and answers "ready"; P then execs the program (the listener is O_CLOEXEC).
 *   S: ends when P ends (P's pidfd), after writing back pod files.
 *   G: S's child, which holds no listener: if S dies first (SIGKILL, a crash), G kills
 *      P with a message, as the forked program's parent-death signal does; otherwise it
 *      is ended by S.
 *
 * Where S may not reach P (Yama), P falls back to forking the program as the CLI's
 * supervisor does (sv_start_detached returns -1). Failures before the filter do the same.
 * Once the filter is installed P must not make a notified call that nobody would answer
 * (close and exit_group are notified in write mode): failures then end P with the exit
 * system call of its only thread, which is not notified.
 */
#include "launch.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static ssize_t send_int(int fd, int v) { return send(fd, &v, sizeof v, MSG_NOSIGNAL); }

static int pidfd_self(void) { return (int)syscall(SYS_pidfd_open, getpid(), 0); }

/* G, the guard (see above). Never returns. */
static void guard(int program_pidfd, int sv_pidfd, pid_t program, const char *name) {
  prctl(PR_SET_NAME, "tsmirror-guard");
  int p = fcntl(program_pidfd, F_DUPFD_CLOEXEC, 10), s = fcntl(sv_pidfd, F_DUPFD_CLOEXEC, 10);
  if (p < 0 || s < 0 || dup2(p, 3) < 0 || dup2(s, 4) < 0) _exit(1);
  syscall(SYS_close_range, 5, ~0U, 0);
  struct pollfd fds[2] = {{.fd = 3, .events = POLLIN}, {.fd = 4, .events = POLLIN}};
  for (;;) {
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) _exit(1);
    if (fds[0].revents) _exit(0); /* the program ended: the supervisor ends too */
    if (fds[1].revents) break;
  }
  struct pollfd again = {.fd = 3, .events = POLLIN};
  if (poll(&again, 1, 0) > 0) _exit(0);
  sv_error("tsmirror: the seccomp supervisor of %s ended unexpectedly; %s (pid %d) is stopped, since what it asks of the session would fail",
           name, name, (int)program);
  syscall(SYS_pidfd_send_signal, 3, SIGKILL, NULL, 0);
  _exit(0);
}

/* Closes the program's descriptors in S: every one without FD_CLOEXEC but stderr. */
static void drop_program_fds(void) {
  int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  int fds[1024];
  size_t n = 0;
  bool more = true;
  while (more) { /* close as found, then list again: closing while reading skips none on procfs */
    more = false;
    n = 0;
    char buf[4096];
    lseek(dir, 0, SEEK_SET);
    for (;;) {
      long got = syscall(SYS_getdents64, dir, buf, sizeof buf);
      if (got <= 0) break;
      for (long off = 0; off < got;) {
        struct dirent64 *d = (struct dirent64 *)(buf + off);
        off += d->d_reclen;
        char *end;
        long fd = strtol(d->d_name, &end, 10);
        if (*end || fd <= 2 || fd == dir) continue;
        int flags = fcntl((int)fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) {
          if (n < sizeof fds / sizeof fds[0]) fds[n++] = (int)fd;
          else more = true;
        }
      }
    }
    for (size_t i = 0; i < n; i++) close(fds[i]);
  }
  close(dir);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    close(null);
  }
}

/* S: never returns. sock: S's end; peer_fd: P's end (its number in P). */
static void serve_detached(int sock, int peer_fd, int program_pidfd, pid_t program, const struct sv_program *prog) {
  if (prog->at_fd >= 0) close(prog->at_fd); /* the program's file is not held by the supervisor */
  drop_program_fds();
  if (chdir("/") != 0) {} /* nor its folder */
  int probe = (int)syscall(SYS_pidfd_getfd, program_pidfd, peer_fd, 0);
  if (send_int(sock, probe < 0 ? -errno : 0) < 0 || probe < 0) _exit(0);
  close(probe);
  int number;
  if (sv_read_full(sock, &number, sizeof number) < 0 || number < 0) _exit(0); /* P runs it unintercepted, or died */
  int listener = (int)syscall(SYS_pidfd_getfd, program_pidfd, number, 0);
  if (listener < 0) {
    int err = errno;
    sv_error("tsmirror: cannot take the seccomp listener from %s: %s", prog->name, strerror(err));
    send_int(sock, -err);
    _exit(0);
  }
  fcntl(listener, F_SETFD, FD_CLOEXEC);
  int self = pidfd_self();
  pid_t guard_pid = self >= 0 ? fork() : -1;
  if (guard_pid == 0) {
    close(listener);
    close(sock);
    guard(program_pidfd, self, program, prog->name);
  }
  if (guard_pid < 0) shim_log("no guard for %s (pidfd_open or fork: %s): a SIGKILLed supervisor leaves it running", prog->name, strerror(errno));
  if (self >= 0) close(self);
  int r = sv_serve(listener);
  if (r < 0) {
    sv_error("tsmirror: cannot serve the seccomp listener: %s", strerror(-r));
    if (guard_pid > 0) {
      kill(guard_pid, SIGKILL);
      while (waitpid(guard_pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    send_int(sock, r);
    _exit(0);
  }
  send_int(sock, 0);
  close(sock);
  struct pollfd pfd = {.fd = program_pidfd, .events = POLLIN};
  while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {}
  sv_files_finish(); /* write-mode files the program left open are in the pod before we end */
  if (guard_pid > 0) {
    kill(guard_pid, SIGKILL);
    while (waitpid(guard_pid, NULL, 0) < 0 && errno == EINTR) {}
  }
  _exit(0);
}

/* P. Returns -1 to fall back to forking the program; otherwise does not return (it
 * execs the program, or ends with the exit system call) or returns an exit code
 * before the filter was installed. */
int sv_start_detached(const struct sv_program *prog) {
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) return -1;
  int self = pidfd_self();
  if (self < 0) {
    close(sp[0]);
    close(sp[1]);
    return -1;
  }
  pid_t me = getpid();
  /* exit signal 0: P gets no SIGCHLD for it (a caller's blocked SIGCHLD would stay
   * pending into the program); waited for with __WALL. */
  pid_t middle = (pid_t)syscall(SYS_clone, 0, 0, NULL, NULL, 0);
  if (middle == 0) {
    close(sp[0]);
    if (setsid() < 0) _exit(1);
    pid_t s = fork();
    if (s == 0) serve_detached(sp[1], sp[0], self, me, prog);
    _exit(s < 0 ? 1 : 0);
  }
  close(sp[1]);
  close(self);
  int status = 0;
  if (middle > 0)
    while (waitpid(middle, &status, __WALL) < 0 && errno == EINTR) {}
  int probe = -EPIPE;
  if (middle < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || sv_read_full(sp[0], &probe, sizeof probe) < 0 || probe != 0) {
    shim_log("the supervisor cannot run beside %s (%s); it forks the program instead", prog->name,
             middle < 0 ? strerror(errno) : strerror(probe < 0 ? -probe : EPIPE));
    close(sp[0]);
    return -1;
  }
  bool killable;
  int listener = sv_install_filter(&killable);
  if (send_int(sp[0], listener) < 0 && listener >= 0) {
    sv_error("tsmirror: the seccomp supervisor of %s ended before it started", prog->name);
    syscall(SYS_exit, 125);
  }
  if (listener < 0) {
    close(sp[0]);
    /* The caller exec'd the program: it runs, as it would have without tsmirror. */
    sv_error("tsmirror: warning: %s runs NOT intercepted (its traffic, lookups and files are this machine's): %s",
             prog->name, sv_unavailable(-listener));
    return sv_exec_failed(prog, sv_exec_program(prog));
  }
  int ready = -EPIPE;
  if (sv_read_full(sp[0], &ready, sizeof ready) < 0 || ready != 0) {
    /* Under a filter nobody will serve: no close, no exit_group (notified in write mode). */
    sv_error("tsmirror: cannot run %s: its seccomp supervisor did not start (%s)", prog->name,
             strerror(ready < 0 ? -ready : EPIPE));
    syscall(SYS_exit, 125);
  }
  close(sp[0]);
  int code = sv_exec_failed(prog, sv_exec_program(prog));
  _exit(code); /* the supervisor serves this exit_group; it ends as P does */
}
