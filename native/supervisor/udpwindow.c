/*
 * UDP sockets at descriptor numbers the filter can test (docs/ARCHITECTURE.md, "Static
 * and Go programs: seccomp", "Sockets").
 *
 * The replies to relayed datagrams come from the relays' loopback addresses; the program
 * must see the destination it sent to (musl's resolver drops a reply from anyone but a
 * nameserver). recvfrom says where its source buffer is (args[4]), but recvmsg and
 * recvmmsg carry theirs inside a msghdr the filter cannot read, and TCP programs call
 * them constantly: notifying them all would cost every TCP read a trip here. So, as for
 * lazily filled files (lazy.c), the sockets that matter are put where the filter can see
 * them: socket() of an inet datagram socket (AF_INET/AF_INET6, SOCK_DGRAM, protocol 0 or
 * IPPROTO_UDP) is notified, the supervisor makes the socket itself (in the caller's
 * network namespace, which it checks is its own) and installs it at a free number of the
 * UDP window, below the lazy window and below FD_SETSIZE (SECCOMP_IOCTL_NOTIF_ADDFD with
 * SECCOMP_ADDFD_FLAG_SETFD, and SEND where the kernel has it: the number is the call's
 * result). The filter then notifies recvfrom with a source buffer, recvmsg and recvmmsg
 * only on descriptors of the window (udprecv.c), and a copy made with dup or
 * fcntl(F_DUPFD, F_DUPFD_CLOEXEC) of a UDP socket there is placed in the window too (at a
 * number >= fcntl's minimum), so net.FilePacketConn's copy still has its sources
 * rewritten.
 *
 * Like a lazily filled file, such a socket is not at the lowest free number, which POSIX
 * promises socket() and dup(); no program known to us relies on that for a UDP socket.
 * Where no window is reserved (RLIMIT_NOFILE below 256) the filter notifies recvfrom with
 * a source buffer on every descriptor instead, as before the window existed. Where the
 * window is full, the caller lowered its limit below it, or it lives in another network
 * namespace, socket() is continued: the socket gets the kernel's number, outside the
 * window, and only its sources go unrewritten. dup2/dup3 name their target number: the
 * copy is where the program asked, and its sources are rewritten only when that number
 * is in the window.
 */
#include "sv.h"

#include <string.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>

#ifndef SECCOMP_ADDFD_FLAG_SETFD
#define SECCOMP_ADDFD_FLAG_SETFD (1UL << 0)
#endif

/* How many numbers the UDP window holds (UDP sockets open at once), and how many numbers
 * below it the program keeps for its ordinary descriptors at the least (else: no window). */
#define UDP_FDS 128
#define UDP_MIN_BELOW 64

/* Below the lazy window, and below FD_SETSIZE: a program may select() on a UDP socket, and
 * FD_SET of a number at or above 1024 writes past its fd_set. (The CLI, node, raises its
 * soft RLIMIT_NOFILE to the hard limit, so the lazy window is usually near 65,536.) */
bool sv_udp_window(unsigned *lo, unsigned *hi) {
  unsigned lazy_lo, lazy_hi;
  if (!sv_lazy_window(&lazy_lo, &lazy_hi)) return false;
  unsigned top = lazy_lo < FD_SETSIZE ? lazy_lo : FD_SETSIZE;
  if (top < UDP_FDS + UDP_MIN_BELOW) return false;
  *lo = top - UDP_FDS;
  *hi = top;
  return true;
}

/* One install at a time: two threads of one process must not pick the same free number. */
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Installs the supervisor's fd in the calling process at a free number in [from, hi) of
 * the window, highest first, and answers the call with that number. Free is what
 * pidfd_getfd says is no descriptor (EBADF); a number the program takes between that look
 * and the install would be replaced, which only a program that dup2()s onto window
 * numbers or uses all those below could do. 0, or -errno with the call unanswered
 * (-ENOSPC: none free; -EBADF: the number is at or above the process's own limit).
 */
static int install(struct sv_call *call, int fd, unsigned from, unsigned hi, bool cloexec) {
  pthread_mutex_lock(&install_lock);
  int r = -ENOSPC;
  for (unsigned number = hi; number-- > from;) {
    int probe = sv_getfd(call, (int)number);
    if (probe >= 0) {
      close(probe);
      continue;
    }
    if (probe != -EBADF) {
      r = probe; /* the caller is gone (ESRCH) or cannot be reached */
      break;
    }
    struct seccomp_notif_addfd a = {0};
    a.id = call->req->id;
    a.flags = SECCOMP_ADDFD_FLAG_SETFD | (sv_have_addfd_send ? SECCOMP_ADDFD_FLAG_SEND : 0);
    a.srcfd = (uint32_t)fd;
    a.newfd = number;
    a.newfd_flags = cloexec ? O_CLOEXEC : 0;
    if (ioctl(call->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0) {
      r = -errno;
      break;
    }
    if (sv_have_addfd_send) call->answered = true;
    else sv_return(call, number);
    r = 0;
    break;
  }
  pthread_mutex_unlock(&install_lock);
  return r;
}

/* Whether the calling thread's network namespace is the supervisor's (where the socket it
 * makes lives). */
static bool same_network(struct sv_call *call) {
  static _Atomic uint64_t own; /* the supervisor's, once looked at */
  uint64_t mine = atomic_load(&own);
  struct stat st;
  if (!mine) {
    if (stat("/proc/self/ns/net", &st) != 0) return false;
    mine = (uint64_t)st.st_ino;
    atomic_store(&own, mine);
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%u/ns/net", call->req->pid);
  return stat(path, &st) == 0 && (uint64_t)st.st_ino == mine;
}

void sv_socket(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int domain = (int)a[0], type = (int)a[1], protocol = (int)a[2];
  unsigned lo, hi;
  if (!sv_udp_window(&lo, &hi) || !same_network(call)) return sv_continue(call);
  /* Any failure here (EAFNOSUPPORT, EINVAL of a bad type, EMFILE) is the kernel's to say
   * to the program, from its own call. */
  int s = socket(domain, type | SOCK_CLOEXEC, protocol);
  if (s < 0) return sv_continue(call);
  int r = install(call, s, lo, hi, (type & SOCK_CLOEXEC) != 0);
  close(s);
  if (r < 0) {
    shim_log("socket: no number free in the UDP window (%s); the kernel's number: its sources are not rewritten", strerror(-r));
    sv_continue(call);
  }
}

/* dup and fcntl(F_DUPFD, F_DUPFD_CLOEXEC) of a descriptor in the window (the filter's
 * test): a UDP socket's copy goes to the window too. */
void sv_udp_dup(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int fd = (int)(uint32_t)a[0];
  unsigned lo, hi;
  if (!sv_udp_window(&lo, &hi) || fd < (int)lo || fd >= (int)hi) return;
  unsigned from = lo;
  bool cloexec = false;
  if (call->req->data.nr == __NR_fcntl) {
    int cmd = (int)a[1];
    if (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC) return;
    int min = (int)a[2];
    if (min < 0 || (unsigned)min >= hi) return; /* the kernel's EINVAL, or a copy above the window */
    if ((unsigned)min > from) from = (unsigned)min;
    cloexec = cmd == F_DUPFD_CLOEXEC;
  }
  int dup = sv_getfd(call, fd);
  if (dup < 0) return;
  int domain = 0;
  socklen_t len = sizeof domain;
  bool udp = shim_sock_type(dup) == SOCK_DGRAM && getsockopt(dup, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
             (domain == AF_INET || domain == AF_INET6);
  if (udp && install(call, dup, from, hi, cloexec) < 0)
    shim_log("dup: no number free in the UDP window; the kernel's number: the copy's sources are not rewritten");
  close(dup);
}
