/*
 * tsmirror-launch: starts the program so that neither it nor what it starts outlives the CLI.
 *
 * usage: tsmirror-launch CLI_PID PATH ARGV0 [ARG...]
 *        tsmirror-launch --watchdog SOCK   (internal: see below)
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
 * A parent-death signal reaches only the program: the processes it started (a shell's
 * commands, a daemon it forked, workers) would be reparented and run on. So before it
 * becomes the program, this starts a watchdog: a fresh copy of itself (`--watchdog`, no
 * LD_PRELOAD, its own session so that terminal and process-group signals pass it by, no
 * descriptor of the program's but a pidfd of the CLI and one of the program). It sleeps
 * in poll() until one of them ends. The CLI still there 2 s after the program ended (the
 * normal case): it exits. The CLI gone, and its session folder still there, which only a
 * killed CLI leaves: it kills the program and every process whose environment names
 * this session's socket (TSMIRROR_SOCK=…, inherited by all the program's descendants,
 * reparented or not), until none is left. It is never the program's child (double fork),
 * so the program's wait() never sees it.
 *
 * Exit codes when the program cannot start: 127 (not found), 126 (cannot run), as a
 * shell's; 125 for a usage error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/*
 * fork and execve as system calls: this process runs with the shim preloaded, whose fork
 * handlers would give the watchdog a channel to the session proxy and whose execve hook
 * would put LD_PRELOAD back into its environment. (The shim's syscall() hook passes these
 * through.) Nothing here needs what glibc's fork does besides: one thread, no locks.
 */
static pid_t raw_fork(void) { return (pid_t)syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0); }

/* Whether /proc/PID/environ holds exactly the entry `want` (NUL-terminated entries). */
static int environ_has(const char *pid, const char *want, size_t want_len) {
  char path[300];
  snprintf(path, sizeof path, "/proc/%s/environ", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  static char buf[1 << 18];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n <= 0) break;
    len += (size_t)n;
    if (len == sizeof buf - 1) break;
  }
  close(fd);
  buf[len] = '\0';
  for (size_t at = 0; at < len;) {
    size_t n = strnlen(buf + at, len - at);
    if (n == want_len && memcmp(buf + at, want, want_len) == 0) return 1;
    at += n + 1;
  }
  return 0;
}

/* SIGKILLs every process (but this one) whose environment holds `want`; returns how many. */
static int kill_session(const char *want) {
  size_t want_len = strlen(want);
  DIR *proc = opendir("/proc");
  if (!proc) return 0;
  int killed = 0;
  pid_t self = getpid();
  struct dirent *e;
  while ((e = readdir(proc)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0 || pid == self) continue;
    if (environ_has(e->d_name, want, want_len) && kill((pid_t)pid, SIGKILL) == 0) killed++;
  }
  closedir(proc);
  return killed;
}

/* fd 3: pidfd of the CLI; fd 4: pidfd of the program. */
static int watchdog(const char *sock) {
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  struct pollfd fds[2] = {{.fd = 3, .events = POLLIN}, {.fd = 4, .events = POLLIN}};
  for (;;) {
    int n = poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1;
    if (fds[0].revents || fds[1].revents) break;
  }
  if (!fds[0].revents) {
    /*
     * The program ended. Normally the CLI goes on (it prints, cleans up, exits, or starts
     * the program again under --watch). But a killed CLI's main thread takes the program
     * with it (the parent-death signal) a moment before the CLI's last thread is gone.
     */
    struct pollfd cli = {.fd = 3, .events = POLLIN};
    int n;
    while ((n = poll(&cli, 1, 2000)) < 0 && errno == EINTR) {}
    if (n <= 0) return 0;
  }
  /* The CLI is gone: killed, unless it removed its session folder, as every exit it lives to make does. */
  if (*sock && access(sock, F_OK) != 0) return 0;
  syscall(SYS_pidfd_send_signal, 4, SIGKILL, NULL, 0);
  if (!*sock) return 0;
  size_t len = strlen("TSMIRROR_SOCK=") + strlen(sock) + 1;
  char *want = malloc(len);
  if (!want) return 1;
  snprintf(want, len, "TSMIRROR_SOCK=%s", sock);
  /* Until a pass finds none: a process forking meanwhile has a child with the same environment. */
  for (int round = 0; round < 200; round++) {
    if (kill_session(want) == 0 && round > 0) break;
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  free(want);
  return 0;
}

/*
 * Starts the watchdog: pidfds of the CLI and of this process (soon the program), a double
 * fork, then the watchdog execs a clean copy of this binary. Failing to start it is not
 * fatal: the program still has its parent-death signal.
 */
static void start_watchdog(pid_t cli) {
  const char *sock = getenv("TSMIRROR_SOCK");
  int cfd = pidfd_open_(cli);
  if (cfd < 0) return;
  if (getppid() != cli) { /* the pidfd may name another process that took the pid */
    close(cfd);
    return;
  }
  int pfd = pidfd_open_(getpid());
  if (pfd < 0) {
    close(cfd);
    return;
  }
  char self[4096];
  /* As a system call too: the shim's readlink hook would open a channel to the session
   * proxy and ask for its file rules (a round trip to the CLI on every exec's start) for a
   * process that is about to become the program, which opens its own. */
  ssize_t n = syscall(SYS_readlink, "/proc/self/exe", self, sizeof self - 1);
  pid_t middle = n > 0 ? raw_fork() : -1;
  if (middle == 0) {
    if (raw_fork() != 0) _exit(0);
    /* the watchdog: fds 3 and 4 the pidfds, nothing else (stdio is /dev/null once it runs) */
    self[n] = '\0';
    setsid();
    int c = fcntl(cfd, F_DUPFD, 10), p = fcntl(pfd, F_DUPFD, 10); /* out of 3 and 4's way */
    if (c < 0 || p < 0 || dup2(c, 3) < 0 || dup2(p, 4) < 0) _exit(1);
    syscall(SYS_close_range, 0, 2, 0);
    syscall(SYS_close_range, 5, ~0U, 0);
    if (chdir("/") != 0) _exit(1);
    char *argv[] = {"tsmirror-watchdog", "--watchdog", (char *)(sock ? sock : ""), NULL};
    char *envp[] = {NULL};
    syscall(SYS_execve, self, argv, envp);
    _exit(1);
  }
  if (middle > 0) while (waitpid(middle, NULL, 0) < 0 && errno == EINTR) {}
  close(cfd);
  close(pfd);
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--watchdog") == 0) return watchdog(argv[2]);
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
  start_watchdog((pid_t)cli);
  const char *path = argv[2];
  execvp(path, &argv[3]); /* argv0, then the program's arguments */
  int err = errno;
  fprintf(stderr, "tsmirror: cannot start %s: %s\n", path, strerror(err));
  return err == ENOENT || err == ENOTDIR ? 127 : 126;
}
