/*
 * Receiving and answering notifications. One worker thread at a time, the receiver, waits
 * in NOTIF_RECV on the one listener: the kernel (6.6+) wakes every thread waiting there
 * for each notification, one of which takes it while the others go back to sleep, and
 * with two or three idle workers those wasted wake-ups were most of what a notified call
 * that stays local cost. The receiver answers the call it took and receives again. It
 * hands the receiving over (to a standby worker, or a new one) before it may wait for
 * anything but the proxy and the program's thread: before a lazy fill, and in the
 * handlers themselves (sv_stop_receiving) before a receive or an accept that blocks
 * (udprecv.c, accept.c), a blocking connect (connect.c) or a write-back (files_writeback.c);
 * and, in every handler, as soon as another notification comes while it waits for the
 * proxy's answer (channel_wait_hook). So one slow call never stalls the others, and a
 * call that does not wait (a socket(), a non-blocking receive, a UDP connect, a bind, a
 * pod-file open) costs no hand-over: waking a standby worker and taking the role back
 * were a dozen futex calls and a wake-up of the other CPU per call. Each worker keeps its
 * own channel to the session proxy (the shim's channel.c is per thread).
 *
 * Every notification gets exactly one answer: handlers answer through sv_continue /
 * sv_return / sv_fail / sv_addfd_send, and the dispatcher answers CONTINUE for a handler
 * that did not. An answer to a notification whose thread died or was interrupted fails
 * with ENOENT, which is fine.
 */
#include "sv.h"

#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

#define SV_MAX_WORKERS 256

bool sv_have_addfd_send = true;

static int listener_fd = -1;
static struct seccomp_notif_sizes sizes;
static atomic_int all_workers;

static const struct {
  int nr;
  sv_handler handler;
} table[] = {
#define ENTRY(name, handler, notified) {__NR_##name, handler},
  SV_SYSCALLS(ENTRY)
#undef ENTRY
};

/* Direct lookup by number: the table is small, but this runs on every call. */
#define SV_MAX_NR 512
static sv_handler by_nr[SV_MAX_NR];
/* SV_LAZY_SYSCALLS: 1 + the descriptor argument's index (0: not one of them). */
static unsigned char lazy_arg[SV_MAX_NR];

void sv_error(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  (void)!write(2, line, (size_t)n);
  shim_log("%.*s", n - 1, line);
}

static int send_resp(struct sv_call *call, int64_t val, int err, uint32_t flags) {
  if (call->answered) return 0;
  struct seccomp_notif_resp resp_buf[4]; /* at least sizes.seccomp_notif_resp bytes */
  memset(resp_buf, 0, sizeof resp_buf);
  struct seccomp_notif_resp *resp = resp_buf;
  resp->id = call->req->id;
  resp->val = val;
  resp->error = err ? -err : 0;
  resp->flags = flags;
  call->answered = true;
  if (ioctl(call->listener, SECCOMP_IOCTL_NOTIF_SEND, resp) < 0) {
    if (errno != ENOENT) shim_log("NOTIF_SEND for syscall %d failed: %s", call->req->data.nr, strerror(errno));
    return -errno;
  }
  return 0;
}

void sv_continue(struct sv_call *call) { send_resp(call, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE); }
void sv_return(struct sv_call *call, int64_t value) { send_resp(call, value, 0, 0); }
void sv_fail(struct sv_call *call, int err) { send_resp(call, -1, err > 0 ? err : EIO, 0); }

static int addfd(struct sv_call *call, int fd, bool cloexec, bool send) {
  if (call->answered) return -EALREADY;
  struct seccomp_notif_addfd a = {0};
  a.id = call->req->id;
  a.flags = send ? SECCOMP_ADDFD_FLAG_SEND : 0;
  a.srcfd = (uint32_t)fd;
  a.newfd_flags = cloexec ? O_CLOEXEC : 0;
  int r = ioctl(call->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &a);
  if (r < 0) return -errno;
  if (send) call->answered = true;
  return r;
}

int sv_addfd_send(struct sv_call *call, int fd, bool cloexec) { return addfd(call, fd, cloexec, true); }
int sv_addfd(struct sv_call *call, int fd, bool cloexec) { return addfd(call, fd, cloexec, false); }

bool sv_valid(struct sv_call *call) {
  uint64_t id = call->req->id;
  return ioctl(call->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

int sv_read(struct sv_call *call, uint64_t addr, void *buf, size_t len) {
  if (len == 0) return 0;
  struct iovec local = {buf, len}, remote = {(void *)(uintptr_t)addr, len};
  ssize_t n = process_vm_readv(call->req->pid, &local, 1, &remote, 1, 0);
  return n == (ssize_t)len ? 0 : -EFAULT;
}

int sv_write(struct sv_call *call, uint64_t addr, const void *buf, size_t len) {
  if (len == 0) return 0;
  struct iovec local = {(void *)buf, len}, remote = {(void *)(uintptr_t)addr, len};
  ssize_t n = process_vm_writev(call->req->pid, &local, 1, &remote, 1, 0);
  return n == (ssize_t)len ? 0 : -EFAULT;
}

/* Page by page, so that a string ending just before an unmapped page still reads. */
ssize_t sv_read_string(struct sv_call *call, uint64_t addr, char *buf, size_t cap) {
  if (cap == 0) return -ENAMETOOLONG;
  size_t got = 0;
  while (got < cap - 1) {
    uint64_t at = addr + got;
    size_t to_page = 4096 - (size_t)(at & 4095);
    size_t want = cap - 1 - got < to_page ? cap - 1 - got : to_page;
    if (sv_read(call, at, buf + got, want) < 0) return -EFAULT;
    char *nul = memchr(buf + got, 0, want);
    if (nul) return nul - buf;
    got += want;
  }
  buf[cap - 1] = 0;
  return -ENAMETOOLONG;
}

/* The thread group of a thread, from /proc (kernels before 6.9 have no PIDFD_THREAD). */
static pid_t thread_group_of(pid_t tid) {
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n <= 0) return -1;
  text[n] = 0;
  char *t = strstr(text, "\nTgid:");
  return t ? (pid_t)strtol(t + 6, NULL, 10) : -1;
}

/* Each worker keeps the pidfd of the last thread it served: a program's calls come again
 * and again from the same few threads, and opening (and closing) a pidfd per call was two
 * of the connect path's syscalls. A pidfd names one task, never a later one with its
 * number: should that thread have ended and its tid been reused, the cached pidfd fails
 * with ESRCH (sv_getfd then opens a fresh one). */
static __thread pid_t cached_tid;
static __thread int cached_pidfd = -1;

static void forget_cached_pidfd(void) {
  if (cached_pidfd >= 0) close(cached_pidfd);
  cached_pidfd = -1;
  cached_tid = 0;
}

int sv_pidfd(struct sv_call *call) {
  if (call->pidfd >= 0) return call->pidfd;
  pid_t tid = (pid_t)call->req->pid;
  if (cached_pidfd >= 0 && cached_tid == tid) {
    /* Still the caller (its memory as read is its own): checked as for a fresh pidfd. */
    if (!sv_valid(call)) return -ESRCH;
    call->pidfd = cached_pidfd;
    return cached_pidfd;
  }
  int fd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
  bool of_thread = true; /* names the calling thread itself (or its group's leader) */
  if (fd < 0 && errno == EINVAL) {
    fd = (int)syscall(SYS_pidfd_open, tid, 0); /* a thread-group leader */
    if (fd < 0 && errno == EINVAL) {
      /* Before Linux 6.9: its thread group's. Not cached: once this thread has ended, its
       * tid could name a thread of another process while this group lives on. */
      of_thread = false;
      pid_t tgid = thread_group_of(tid);
      if (tgid > 0) fd = (int)syscall(SYS_pidfd_open, tgid, 0);
    }
  }
  if (fd < 0) return -errno;
  /* The pidfd was opened while the notification was pending: its thread is the caller. */
  if (!sv_valid(call)) {
    close(fd);
    return -ESRCH;
  }
  call->pidfd = fd;
  if (!of_thread) {
    call->pidfd_temporary = true;
    return fd;
  }
  forget_cached_pidfd();
  cached_tid = tid;
  cached_pidfd = fd;
  return fd;
}

int sv_getfd(struct sv_call *call, int fd) {
  bool cached = call->pidfd < 0 && cached_pidfd >= 0 && cached_tid == (pid_t)call->req->pid;
  int pidfd = sv_pidfd(call);
  if (pidfd < 0) return pidfd;
  int dup = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); /* FD_CLOEXEC already set */
  if (dup < 0 && errno == ESRCH && cached) {
    /* The cached pidfd's thread ended and its tid now names another: open that one's. */
    call->pidfd = -1;
    forget_cached_pidfd();
    pidfd = sv_pidfd(call);
    if (pidfd < 0) return pidfd;
    dup = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  }
  return dup < 0 ? -errno : dup;
}

static void start_worker(void);

/* ---- the receiver role (above): one worker in NOTIF_RECV, the others standing by ---- */

static pthread_mutex_t role_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t role_free = PTHREAD_COND_INITIALIZER;
static bool role_taken;
static int standby_workers;
static __thread bool receiving; /* this worker holds the role */

static void take_role(void) {
  pthread_mutex_lock(&role_lock);
  while (role_taken) {
    standby_workers++;
    pthread_cond_wait(&role_free, &role_lock);
    standby_workers--;
  }
  role_taken = true;
  pthread_mutex_unlock(&role_lock);
  receiving = true;
}

/* Lets go of the role: a standby worker takes it, or (`replace`, none standing by) a new one. */
static void give_up_role(bool replace) {
  if (!receiving) return;
  receiving = false;
  pthread_mutex_lock(&role_lock);
  role_taken = false;
  bool standby = standby_workers > 0;
  if (standby) pthread_cond_signal(&role_free);
  pthread_mutex_unlock(&role_lock);
  if (!standby && replace) start_worker();
}

void sv_stop_receiving(void) { give_up_role(true); }

/* channel_wait_hook: the receiver waits for the proxy's answer on `fd`, or for another
 * notification, whichever comes first; on a notification it hands the receiving over (the
 * answer is then read by a plain blocking receive). */
static void wait_for_answer(int fd) {
  if (!receiving) return;
  struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = listener_fd, .events = POLLIN}};
  for (;;) {
    int n = poll(p, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || p[0].revents) return; /* the answer (or a failure the receive reports) */
    if (p[1].revents) {
      give_up_role(true);
      return;
    }
  }
}

static void dispatch(struct sv_call *call) {
  int nr = call->req->data.nr;
  bool known = nr >= 0 && nr < SV_MAX_NR;
  /* Every handler runs in the receiver: it waits only for the proxy (a wait that hands the
   * receiving over when another call comes) and the program's thread, or hands the
   * receiving over itself before it may wait for anything else (sv_stop_receiving). A lazy
   * fill may read much from the pod: handed over first. */
  if (known && lazy_arg[nr]) give_up_role(true);
  if (known && lazy_arg[nr]) sv_lazy_before(call, lazy_arg[nr] - 1);
  sv_handler handler = known && !call->answered ? by_nr[nr] : NULL;
  if (handler) handler(call);
  if (!call->answered) sv_continue(call);
  /* Else call->pidfd is the worker's cached one (sv_pidfd): kept for the thread's next call. */
  if (call->pidfd >= 0 && call->pidfd_temporary) close(call->pidfd);
}

static void *worker(void *arg);

static void start_worker(void) {
  if (atomic_fetch_add(&all_workers, 1) >= SV_MAX_WORKERS) {
    atomic_fetch_sub(&all_workers, 1);
    return;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t t;
  if (pthread_create(&t, &attr, worker, NULL) != 0) atomic_fetch_sub(&all_workers, 1);
  pthread_attr_destroy(&attr);
}

/* Blocks until the listener has a call for us or no user left (every program thread and
 * child gone: no call will ever come). True in the second case. */
static bool no_more_calls(void) {
  for (;;) {
    struct pollfd p = {.fd = listener_fd, .events = POLLIN};
    int n = poll(&p, 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    return (p.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(p.revents & POLLIN);
  }
}

static void *worker(void *arg) {
  (void)arg;
  struct seccomp_notif *req = calloc(1, sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req);
  size_t req_size = sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req;
  if (!req) {
    atomic_fetch_sub(&all_workers, 1);
    return NULL;
  }
  for (;;) {
    if (!receiving) take_role();
    memset(req, 0, req_size);
    if (ioctl(listener_fd, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) {
      if (errno == EINTR) continue;
      /* ENOENT: the call's thread went away before we took it, or no program is left: the
       * kernel then returns ENOENT at once, forever (the listener reports POLLHUP). Wait
       * for the next call instead of spinning, and end when there will be none. */
      if (errno == ENOENT) {
        if (no_more_calls()) break;
        continue;
      }
      shim_log("NOTIF_RECV failed: %s; worker ends", strerror(errno));
      break;
    }
    struct sv_call call = {.req = req, .listener = listener_fd, .answered = false, .pidfd = -1};
    dispatch(&call);
  }
  /* No call will come (or NOTIF_RECV is broken): the workers standing by end the same way. */
  give_up_role(false);
  forget_cached_pidfd();
  atomic_fetch_sub(&all_workers, 1);
  free(req);
  return NULL;
}

int sv_serve(int listener) {
  listener_fd = listener;
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].nr >= 0 && table[i].nr < SV_MAX_NR) by_nr[table[i].nr] = table[i].handler;
#define LAZY_ENTRY(name, fd_arg) \
  if (__NR_##name < SV_MAX_NR) lazy_arg[__NR_##name] = (unsigned char)(fd_arg + 1);
  SV_LAZY_SYSCALLS(LAZY_ENTRY)
#undef LAZY_ENTRY
  channel_wait_hook = wait_for_answer;
  /* The program was forked before this, and nothing forks after: the channels need not
   * ask our pid, nor check that a program closed them (none shares our descriptors). */
  shim_cfg.fixed_pid = getpid();
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) return -errno;
  if (sizes.seccomp_notif_resp > sizeof(struct seccomp_notif_resp) * 4) return -ENOTSUP;
  /* Linux 6.6+: the program's thread and the worker hand the CPU to each other directly
   * (a notification and its answer wake the other side on the current CPU) instead of
   * each waiting to be scheduled: most of what a notified call costs on a busy machine.
   * Older kernels refuse the ioctl; the wake-ups are then ordinary ones. */
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, (uint64_t)SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) < 0)
    shim_log("synchronous wake-ups unavailable (Linux 6.6+): %s", strerror(errno));
  start_worker();
  return 0;
}
