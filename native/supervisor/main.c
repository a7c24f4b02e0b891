/*
 * tsmirror-supervise: runs a program under a seccomp filter whose notified system calls
 * it answers for the session (the shim's work, for programs no preload reaches: static
 * binaries, Go). It replaces tsmirror-launch in seccomp mode.
 *
 * usage: tsmirror-supervise [--group] [--at FD FLAGS KEEP] CLI_PID SOCK STATUS_FD PATH ARGV0 [ARG...]
 *        tsmirror-supervise --probe
 *
 * The supervisor is the CLI's child and the program is the supervisor's: it forks; the
 * child asks for SIGKILL when the supervisor dies (PR_SET_PDEATHSIG, from this main
 * thread, which lives as long as the supervisor), sets PR_SET_NO_NEW_PRIVS, installs the
 * filter with a listener, hands the listener to the parent (pidfd_getfd), and execs the
 * program. The supervisor itself has the CLI's parent-death signal, as tsmirror-launch
 * gives the program. So a SIGKILLed CLI takes the supervisor and the program with it, and
 * a dead supervisor takes the program (whose notified calls would fail with ENOSYS).
 *
 * SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are relayed to the program (SIGINT
 * and SIGQUIT only when stdin is not a terminal: from the keyboard they reach the
 * program's process group already). With --group the CLI signals the whole process group
 * (exec --watch): the supervisor then relays nothing and only outlives the program, whose
 * shutdown would otherwise be cut short by its parent-death signal. When the program ends the supervisor writes
 * "exit N\n" or "signal N\n" to STATUS_FD (-1: none) and ends the same way, so the CLI
 * tells the program's end from the supervisor's death (no line).
 *
 * Exit codes when the program cannot start: 127 (not found), 126 (cannot run), 125
 * (usage, or seccomp user notification unavailable: the message says which).
 *
 * CLI_PID 0: started by the shim's exec hooks in place of a static or Go program that a
 * preloaded program (`sh -c ./server`, make, npm) runs (native/shim/exec_supervisor.c).
 * This process is the one the caller exec'd or spawned, and it becomes the program
 * itself, under the filter (same pid, parent, session, process group, signal mask and
 * dispositions, parent-death signal): the supervisor runs beside it, in its own session,
 * never its child, and ends when it ends (sv_start_detached, detached.c). No signal is
 * relayed and no status written: the caller's wait sees the program. If the supervisor
 * may not reach a process that is not its descendant (Yama's ptrace_scope), the program
 * is forked as above instead (then blocked signals inherited from the caller are
 * unblocked here, the program keeping the caller's mask, no parent-death signal of our
 * own is taken, and signals the CLI sent (TSMIRROR_CLI_PID) are not relayed: the CLI
 * signals only its own child or, under --watch, the whole process group, which the
 * program is in already). If the filter cannot be installed after all (another listener
 * is in place: EBUSY), the program is exec'd here, as it would have been without
 * tsmirror, with a warning that it is not intercepted.
 *
 * --at FD FLAGS KEEP (in place only): the program is execveat(FD, PATH, ..., FLAGS), for
 * the shim's execveat and fexecve hooks; KEEP 0: FD is a copy the shim made of a
 * close-on-exec descriptor, marked close-on-exec again here.
 *
 * --probe: exits 0 and prints "ok" when user notification works here, else exits 1 and
 * prints why (tsmirror doctor, --intercept auto).
 *
 * --inspect PATH: prints what native/shim/program.c finds in PATH, as one JSON object
 * ({"kind":…,"go":…,"setid":…,"elf32":…,"interpreter":…,"seccomp":…}: what the exec
 * hooks decide), so the CLI's own rules (cli/launch.ts) can be checked against it.
 */
#include "launch.h"

#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

void sv_log_open(void);

static volatile pid_t program_pid = -1;
static bool stdin_is_tty, group_signals;

/* In place (CLI_PID 0): the CLI's pid (TSMIRROR_CLI_PID), whose signals are not relayed. */
static pid_t cli_signaller = -1;

static void relay(int sig, siginfo_t *info, void *context) {
  (void)context;
  if (program_pid <= 0 || group_signals) return;
  if ((sig == SIGINT || sig == SIGQUIT) && stdin_is_tty) return;
  /* The CLI signals only its own child, or (--watch) the whole process group: a signal from
   * it here came to the group, so the program has it already. */
  if (info && info->si_code == SI_USER && info->si_pid == cli_signaller) return;
  int saved = errno;
  kill(program_pid, sig);
  errno = saved;
}

/*
 * Handing the listener to the parent. Once the filter is in place the child's own
 * sendmsg would be a notified call that nobody answers yet, so the child only writes the
 * listener's fd number (or -errno) on a pipe (write is never notified), the parent copies
 * the fd out of the child with pidfd_getfd, and answers one byte on a second pipe; only
 * then does the child close its copy and exec.
 */
struct handover {
  int up[2];   /* child -> parent: the fd number, or -errno */
  int down[2]; /* parent -> child: one byte, the parent has the listener */
};

static int handover_open(struct handover *h) {
  if (pipe2(h->up, O_CLOEXEC) < 0) return -1;
  if (pipe2(h->down, O_CLOEXEC) < 0) return -1;
  return 0;
}

int sv_read_full(int fd, void *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, (char *)buf + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    got += (size_t)n;
  }
  return 0;
}

/* In the parent: the listener fd, or -errno (the child's failure), or -EPIPE (the child died). */
static int receive_listener(struct handover *h, pid_t child) {
  close(h->up[1]);
  close(h->down[0]);
  int value;
  int fd = -EPIPE;
  if (sv_read_full(h->up[0], &value, sizeof value) == 0) {
    if (value < 0) {
      fd = value;
    } else {
      int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
      fd = pidfd < 0 ? -errno : (int)syscall(SYS_pidfd_getfd, pidfd, value, 0);
      if (fd < 0 && pidfd >= 0) fd = -errno;
      if (pidfd >= 0) close(pidfd);
      if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  }
  char ok = fd >= 0 ? 1 : 0;
  (void)!write(h->down[1], &ok, 1);
  close(h->up[0]);
  close(h->down[1]);
  return fd;
}

const char *sv_unavailable(int err) {
  switch (err) {
    case EINVAL: return "the kernel does not support seccomp user notification (SECCOMP_FILTER_FLAG_NEW_LISTENER needs Linux 5.0, answers with CONTINUE 5.5, ADDFD 5.9)";
    case EACCES: case EPERM: return "seccomp filters are not permitted here (no PR_SET_NO_NEW_PRIVS, or a seccomp policy of the container forbids them)";
    case ENOSYS: return "the kernel has no seccomp filter support (CONFIG_SECCOMP_FILTER) or a container policy blocks the seccomp() call";
    case EBUSY: return "another seccomp listener is already installed on this process";
    default: return strerror(err);
  }
}

/* In the forked child: parent-death signal, filter, listener to the parent. */
static int child_setup(struct handover *h, pid_t parent) {
  close(h->up[0]);
  close(h->down[1]);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) return -ESRCH;
  bool killable;
  int listener = sv_install_filter(&killable);
  if (write(h->up[1], &listener, sizeof listener) != (ssize_t)sizeof listener) return -EPIPE;
  if (listener < 0) return listener;
  char ok = 0;
  if (sv_read_full(h->down[0], &ok, 1) < 0 || !ok) return -EPIPE;
  close(listener);
  close(h->up[1]);
  close(h->down[0]);
  return 0;
}

static int probe(void) {
  struct handover h;
  if (handover_open(&h) < 0) {
    printf("unavailable: pipe: %s\n", strerror(errno));
    return 1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    printf("unavailable: fork: %s\n", strerror(errno));
    return 1;
  }
  if (pid == 0) _exit(child_setup(&h, parent) < 0 ? 1 : 0);
  int fd = receive_listener(&h, pid);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (fd < 0) {
    printf("unavailable: %s\n", sv_unavailable(-fd));
    return 1;
  }
  struct seccomp_notif_sizes sizes;
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) {
    printf("unavailable: %s\n", sv_unavailable(errno));
    return 1;
  }
  printf("ok\n");
  return 0;
}

static void report(int status_fd, const char *kind, int n) {
  if (status_fd < 0) return;
  char line[32];
  int len = snprintf(line, sizeof line, "%s %d\n", kind, n);
  (void)!write(status_fd, line, (size_t)len);
  close(status_fd);
}

static void json_string(const char *v) {
  putchar('"');
  for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
    if (*p == '"' || *p == '\\') printf("\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f) printf("\\u%04x", *p);
    else putchar(*p);
  }
  putchar('"');
}

static int inspect(const char *path) {
  struct shim_program p;
  int r = shim_program_inspect(path, &p);
  static const char *const kinds[] = {"other", "dynamic", "static", "script"};
  printf("{\"kind\":\"%s\",\"go\":%s,\"setid\":%s,\"elf32\":%s,\"interpreter\":", kinds[p.kind],
         p.go ? "true" : "false", p.setid ? "true" : "false", p.elf32 ? "true" : "false");
  json_string(p.interpreter);
  printf(",\"seccomp\":%s,\"error\":%d}\n", shim_program_wants_seccomp(path) ? "true" : "false", r < 0 ? -r : 0);
  return 0;
}

int sv_exec_program(const struct sv_program *prog) {
  if (prog->at_fd < 0) execvp(prog->path, prog->argv);
  else syscall(SYS_execveat, prog->at_fd, prog->path, prog->argv, environ, prog->at_flags);
  return errno;
}

int sv_exec_failed(const struct sv_program *prog, int err) {
  sv_error("tsmirror: cannot start %s: %s", prog->name, strerror(err));
  return err == ENOENT || err == ENOTDIR ? 127 : 126;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--probe") == 0) return probe();
  if (argc == 3 && strcmp(argv[1], "--inspect") == 0) return inspect(argv[2]);
  if (argc > 1 && strcmp(argv[1], "--group") == 0) {
    group_signals = true;
    argv++;
    argc--;
  }
  struct sv_program prog = {.at_fd = -1};
  char *end;
  if (argc > 4 && strcmp(argv[1], "--at") == 0) {
    /* --at FD FLAGS KEEP: execveat(FD, PATH, …, FLAGS); KEEP 0: FD is ours (a copy the
     * shim made of a close-on-exec descriptor), closed when the program starts */
    long fd = strtol(argv[2], &end, 10);
    bool bad = *end || fd < 0 || fd > INT32_MAX || fcntl((int)fd, F_GETFD) < 0;
    long flags = strtol(argv[3], &end, 10);
    bad = bad || *end || (flags & ~(long)(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) != 0;
    bad = bad || (strcmp(argv[4], "0") != 0 && strcmp(argv[4], "1") != 0);
    if (bad) {
      fprintf(stderr, "tsmirror-supervise: bad --at %s %s %s\n", argv[2], argv[3], argv[4]);
      return 125;
    }
    prog.at_fd = (int)fd;
    prog.at_flags = (int)flags;
    if (argv[4][0] == '0') fcntl(prog.at_fd, F_SETFD, FD_CLOEXEC);
    argv += 4;
    argc -= 4;
  }
  if (argc < 6) {
    fprintf(stderr, "usage: tsmirror-supervise [--group] [--at FD FLAGS KEEP] CLI_PID SOCK STATUS_FD PATH ARGV0 [ARG...]\n"
                    "       tsmirror-supervise --probe\n");
    return 125;
  }
  prog.path = argv[4];
  prog.argv = &argv[5];
  if (prog.at_fd < 0 || prog.path[0] == '/') snprintf(prog.name, sizeof prog.name, "%s", prog.path);
  else snprintf(prog.name, sizeof prog.name, "/dev/fd/%d%s%s", prog.at_fd, prog.path[0] ? "/" : "", prog.path);
  long cli = strtol(argv[1], &end, 10);
  if (*end || cli < 0 || (cli == 0 && group_signals)) {
    fprintf(stderr, "tsmirror-supervise: bad CLI pid %s\n", argv[1]);
    return 125;
  }
  if (strlen(argv[2]) >= sizeof shim_cfg.sock_path) {
    fprintf(stderr, "tsmirror-supervise: socket path too long\n");
    return 125;
  }
  long status_fd = strtol(argv[3], &end, 10);
  if (*end || status_fd < -1 || status_fd > INT32_MAX) {
    fprintf(stderr, "tsmirror-supervise: bad status fd %s\n", argv[3]);
    return 125;
  }
  if (status_fd >= 0) fcntl((int)status_fd, F_SETFD, FD_CLOEXEC);
  strcpy(shim_cfg.sock_path, argv[2]);
  shim_cfg.active = true;
  sv_log_open();
  bool in_place = cli == 0;
  if (!in_place && prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    fprintf(stderr, "tsmirror-supervise: prctl(PR_SET_PDEATHSIG): %s\n", strerror(errno));
    return 125;
  }
  if (!in_place && getppid() != (pid_t)cli) return 125; /* the CLI died before the prctl */
  sv_files_prepare(); /* before the filter: the path rules say what it notifies */
  sv_lazy_prepare();  /* before the filter: the descriptor window it watches */
  if (in_place) {
    int code = sv_start_detached(&prog);
    if (code >= 0) return code;
  }
  if (in_place) {
    const char *v = getenv("TSMIRROR_CLI_PID");
    long p = v ? strtol(v, &end, 10) : 0;
    if (v && !*end && p > 0 && p <= INT32_MAX) cli_signaller = (pid_t)p;
  }
  stdin_is_tty = isatty(0);

  struct handover h;
  if (handover_open(&h) < 0) {
    sv_error("tsmirror: pipe: %s", strerror(errno));
    return 125;
  }
  pid_t me = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    sv_error("tsmirror: cannot start %s: fork: %s", prog.name, strerror(errno));
    return 125;
  }
  if (pid == 0) {
    if (child_setup(&h, me) < 0) _exit(125);
    _exit(sv_exec_failed(&prog, sv_exec_program(&prog)));
  }
  program_pid = pid;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = relay;
  sa.sa_flags = SA_RESTART | SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  const int relayed[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  sigset_t relay_set;
  sigemptyset(&relay_set);
  for (size_t i = 0; i < sizeof relayed / sizeof relayed[0]; i++) {
    sigaction(relayed[i], &sa, NULL);
    sigaddset(&relay_set, relayed[i]);
  }
  pthread_sigmask(SIG_UNBLOCK, &relay_set, NULL);

  int listener = receive_listener(&h, pid);
  if (listener < 0) {
    int status;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (in_place && listener != -EPIPE && listener != -ESRCH) {
      /* The caller exec'd the program: it runs, as it would have without tsmirror. */
      sv_error("tsmirror: warning: %s runs NOT intercepted (its traffic, lookups and files are this machine's): %s",
               prog.name, sv_unavailable(-listener));
      return sv_exec_failed(&prog, sv_exec_program(&prog));
    }
    if (listener != -EPIPE && listener != -ESRCH)
      sv_error("tsmirror: cannot run %s under seccomp: %s", prog.name, sv_unavailable(-listener));
    report((int)status_fd, "exit", 125);
    return 125;
  }
  int r = sv_serve(listener);
  if (r < 0) {
    sv_error("tsmirror: cannot serve the seccomp listener: %s", strerror(-r));
    kill(pid, SIGKILL);
  }

  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      sv_error("tsmirror: waitpid: %s", strerror(errno));
      return 125;
    }
  }
  program_pid = -1;
  sv_files_finish(); /* write-mode files the program left open are in the pod before we end */
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    report((int)status_fd, "signal", sig);
    /* End the same way (no core file of our own), so a caller without STATUS_FD sees it. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 125;
  report((int)status_fd, "exit", code);
  _exit(code);
}
