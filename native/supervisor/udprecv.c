/*
 * The sources of relayed datagrams, for the supervisor.
 *
 * recvfrom with a source buffer, recvmsg and recvmmsg with a msg_name, on a UDP socket
 * with relayed flows (or a relayed connect): the replies come from the relays' loopback
 * addresses, and musl's resolver (sendto on an unconnected socket) drops a reply whose
 * source is not a nameserver; Go's ReadMsgUDP would report the relay. So the supervisor
 * makes the receive itself, on its duplicate of the socket (the same open file:
 * O_NONBLOCK, SO_RCVTIMEO, the flags as given), and writes the data, the ancillary data
 * and the source into the program's memory, a relay's address replaced by the
 * destination it stands for. A receive that has to wait waits on this worker thread,
 * which first hands the receiving of the other calls over (sv_stop_receiving), polling the
 * socket with a short slice so that it notices the caller's death and a signal for it:
 * the call is then continued, so that the kernel interrupts it as it would have (EINTR,
 * or a restart under SA_RESTART). A call
 * on a socket with nothing relayed, or without a source buffer, is continued.
 *
 * The filter notifies these calls only on descriptors of the UDP window, where
 * udpwindow.c places UDP sockets (a TCP read never comes here); without a window, only
 * recvfrom with a source buffer, on any descriptor.
 */
#include "sockets.h"

#include <poll.h>
#include <string.h>

/* ---- recvfrom ---- */

/* How long a blocking receive waits between looks at its caller (alive? a signal?): the
 * longest a signal for a program blocked in recvfrom waits to interrupt it. */
#define SV_RECV_SLICE_MS 50
/* The flags the supervisor's own receive honours as the kernel would; a call with any
 * other (MSG_ERRQUEUE, MSG_OOB, ...) is continued. */
#define SV_RECV_FLAGS (MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC | MSG_WAITALL | MSG_CMSG_CLOEXEC)

/* The signal masks of a line "Name:\t%016llx" of /proc/TID/status. */
static uint64_t status_mask(const char *text, const char *name) {
  const char *at = strstr(text, name);
  return at ? strtoull(at + strlen(name), NULL, 16) : 0;
}

/*
 * Whether a signal waits for the thread tid, which sits in a notified call (once the
 * supervisor has received a call, the kernel lets only a fatal signal end the wait:
 * filter.c, WAIT_KILLABLE_RECV). One sent to the thread itself (SigPnd) counts at once;
 * one sent to its process (ShdPnd) only when it is still there at the second look: a
 * running thread of the process would have taken it by then.
 */
static bool signal_waiting(pid_t tid, bool *shared_seen) {
  char path[64], text[8192]; /* the masks come after the Groups line, which can be long */
  snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t got = 0;
  for (ssize_t n; got < sizeof text - 1 && (n = read(fd, text + got, sizeof text - 1 - got)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    got += (size_t)n;
  }
  close(fd);
  text[got] = 0;
  if (!strstr(text, "\nSigBlk:")) return false;
  uint64_t blocked = status_mask(text, "\nSigBlk:");
  if (status_mask(text, "\nSigPnd:") & ~blocked) return true;
  bool shared = (status_mask(text, "\nShdPnd:") & ~blocked) != 0;
  bool waiting = shared && *shared_seen;
  *shared_seen = shared;
  return waiting;
}

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* What became of a receive the supervisor made for the program. */
enum receipt {
  RECEIVED,            /* *result bytes (or the datagram's length under MSG_TRUNC) */
  RECEIVE_FAILED,      /* *result is -errno: the call fails with it */
  RECEIVE_INTERRUPTED, /* a signal waits for the caller: continue the call */
  RECEIVE_ABANDONED,   /* the caller is gone: nothing to answer */
};

/* recvmsg on dup as the program's call would make it (m: the supervisor's buffers; its
 * msg_namelen and msg_controllen are set to what came), waiting here if it would block. */
static enum receipt receive_for(struct sv_call *call, int dup, struct msghdr *m, int flags, ssize_t *result) {
  int fl = fcntl(dup, F_GETFL);
  bool wait = !(flags & MSG_DONTWAIT) && fl >= 0 && !(fl & O_NONBLOCK);
  int64_t deadline = 0; /* SO_RCVTIMEO: the kernel's EAGAIN after it */
  if (wait) {
    struct timeval tv;
    socklen_t tl = sizeof tv;
    if (getsockopt(dup, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 && (tv.tv_sec > 0 || tv.tv_usec > 0))
      deadline = now_ms() + (int64_t)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
  }
  bool shared_seen = false;
  socklen_t name_cap = m->msg_namelen;
  size_t control_cap = m->msg_controllen;
  for (;;) {
    m->msg_namelen = name_cap;
    m->msg_controllen = control_cap;
    m->msg_flags = 0;
    ssize_t r = recvmsg(dup, m, flags | MSG_DONTWAIT);
    if (r >= 0) {
      *result = r;
      return RECEIVED;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (!wait || (err != EAGAIN && err != EWOULDBLOCK)) {
      *result = -err;
      return RECEIVE_FAILED;
    }
    int slice = SV_RECV_SLICE_MS;
    if (deadline) {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        *result = -EAGAIN;
        return RECEIVE_FAILED;
      }
      if (left < slice) slice = (int)left;
    }
    sv_stop_receiving(); /* it waits: another worker receives the next calls */
    struct pollfd p = {.fd = dup, .events = POLLIN};
    (void)poll(&p, 1, slice);
    if (!sv_valid(call)) return RECEIVE_ABANDONED;
    if (signal_waiting((pid_t)call->req->pid, &shared_seen)) return RECEIVE_INTERRUPTED;
  }
}

/* The source to report for a datagram from `from` on the socket seen: the destination a
 * relay stands for, in the family of the socket (from's); false when from is no relay. */
static bool source_of(const struct sv_sock *seen, const union shim_addr *from, socklen_t from_len, union shim_addr *out,
                      socklen_t *out_len) {
  union shim_addr norm, relay_norm;
  socklen_t norm_len;
  if (!shim_addr_from(&from->sa, from_len, &norm, &norm_len)) return false;
  for (unsigned i = 0; i < seen->nflows && i < SV_FLOWS; i++) {
    const struct sv_flow *f = &seen->flows[i];
    if (f->local || !shim_addr_from(&f->relay.sa, f->relay_len, &relay_norm, &norm_len)) continue;
    if (shim_addr_equal(&norm, &relay_norm)) return shim_addr_for_domain(&f->dest, from->sa.sa_family, out, out_len);
  }
  union shim_addr peer_norm;
  if (seen->has_peer && shim_addr_from(&seen->relay_peer.sa, seen->relay_peer_len, &relay_norm, &norm_len) &&
      shim_addr_equal(&norm, &relay_norm) && shim_addr_from(&seen->peer.sa, seen->peer_len, &peer_norm, &norm_len))
    return shim_addr_for_domain(&peer_norm, from->sa.sa_family, out, out_len);
  return false;
}

/* The program's descriptor fd when it is a UDP socket with relayed flows or a relayed
 * connect: the supervisor's duplicate (the caller closes it) and what is known of it in
 * *seen; else -1 (the call is the kernel's to make). */
static int relayed_socket(struct sv_call *call, int fd, struct sv_sock *seen) {
  if (!atomic_load(&sv_relayed_udp)) return -1;
  int dup = sv_getfd(call, fd);
  if (dup < 0) return -1;
  uint64_t inode = sv_sock_inode(dup, NULL);
  bool relayed = false;
  if (inode) {
    pthread_mutex_lock(&sv_socks_lock);
    struct sv_sock *s = sv_sock_slot(inode, false);
    if (s && s->udp && (s->nflows || s->has_peer)) {
      *seen = *s;
      relayed = true;
    }
    pthread_mutex_unlock(&sv_socks_lock);
  }
  if (!relayed) {
    close(dup);
    return -1;
  }
  return dup;
}

/* The source of a received datagram as the program must see it, in *src (from itself, or
 * the destination its relay stands for); true when rewritten. */
static bool reported_source(const struct sv_sock *seen, const union shim_addr *from, socklen_t from_len,
                            union shim_addr *src, socklen_t *src_len) {
  union shim_addr source;
  socklen_t source_len;
  if (from_len > 0 && source_of(seen, from, from_len, &source, &source_len)) {
    *src = source;
    *src_len = source_len;
    return true;
  }
  *src = *from;
  *src_len = from_len;
  return false;
}

void sv_recvfrom(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int flags = (int)a[3];
  if (!atomic_load(&sv_relayed_udp) || (flags & ~SV_RECV_FLAGS)) return sv_continue(call);
  socklen_t cap;
  if (sv_read_address_cap(call, a[5], &cap) < 0) return sv_continue(call); /* the kernel's EFAULT or EINVAL */
  struct sv_sock seen;
  int dup = relayed_socket(call, (int)a[0], &seen);
  if (dup < 0) return sv_continue(call);
  /* A datagram is at most 64 KiB: a bigger buffer is never filled beyond that. */
  size_t len = a[2] < SV_MAX_DATAGRAM ? (size_t)a[2] : SV_MAX_DATAGRAM;
  char *data = malloc(len ? len : 1);
  if (!data) {
    close(dup);
    return sv_continue(call);
  }
  union shim_addr from, src;
  socklen_t src_len;
  struct iovec one = {data, len};
  struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &one, .msg_iovlen = 1};
  ssize_t r = 0;
  enum receipt got = receive_for(call, dup, &m, flags, &r);
  close(dup);
  if (got == RECEIVED) {
    /* The datagram is taken: from here every answer is the call's result. */
    size_t copied = (size_t)r < len ? (size_t)r : len;
    bool rewritten = reported_source(&seen, &from, m.msg_namelen, &src, &src_len);
    if (!sv_valid(call)) got = RECEIVE_ABANDONED; /* its memory is no longer the caller's */
    else if (sv_write(call, a[1], data, copied) < 0 || sv_write_address(call, a[4], a[5], cap, &src, src_len) < 0) r = -EFAULT;
    if (got == RECEIVED) {
      shim_log("recvfrom: fd %d: %zd bytes%s", (int)a[0], r, rewritten ? ", source rewritten" : "");
      r < 0 ? sv_fail(call, (int)-r) : sv_return(call, r);
    }
  } else if (got == RECEIVE_FAILED) {
    sv_fail(call, (int)-r);
  } else if (got == RECEIVE_INTERRUPTED) {
    shim_log("recvfrom: fd %d: a signal for tid %u; continued", (int)a[0], call->req->pid);
    sv_continue(call); /* the kernel sees the signal and interrupts (or restarts) the call */
  }
  free(data);
}

/* ---- recvmsg, recvmmsg ---- */

#define SV_MAX_IOV 1024      /* UIO_MAXIOV: the kernel refuses more itself */
#define SV_MAX_CONTROL 4096  /* ancillary data kept per message (timestamps, IP_PKTINFO, ...) */

/* One message of the program (a msghdr at `at`), received here and written back there. */
struct message {
  uint64_t at;
  struct msghdr user;      /* as the program gave it */
  struct iovec *iov;       /* the program's iovecs */
  size_t len;              /* their total, at most SV_MAX_DATAGRAM */
  char *data;
  char control[SV_MAX_CONTROL];
  union shim_addr from;
  struct msghdr m;         /* the supervisor's receive */
};

/* Reads the program's msghdr at `at` and its iovecs: 0, -EFAULT, or 1 when the call is
 * the kernel's to make (no source buffer to rewrite, a length the kernel refuses). */
static int message_read(struct sv_call *call, uint64_t at, struct message *msg) {
  memset(msg, 0, offsetof(struct message, control));
  msg->at = at;
  if (sv_read(call, at, &msg->user, sizeof msg->user) < 0) return -EFAULT;
  struct msghdr *u = &msg->user;
  if (!u->msg_name || (int)u->msg_namelen < 0 || u->msg_iovlen > SV_MAX_IOV) return 1;
  if (u->msg_iovlen) {
    msg->iov = malloc(u->msg_iovlen * sizeof *msg->iov);
    if (!msg->iov) return 1;
    if (sv_read(call, (uint64_t)(uintptr_t)u->msg_iov, msg->iov, u->msg_iovlen * sizeof *msg->iov) < 0) return -EFAULT;
  }
  for (size_t i = 0; i < u->msg_iovlen && msg->len < SV_MAX_DATAGRAM; i++)
    msg->len += msg->iov[i].iov_len < SV_MAX_DATAGRAM - msg->len ? msg->iov[i].iov_len : SV_MAX_DATAGRAM - msg->len;
  msg->data = malloc(msg->len ? msg->len : 1);
  if (!msg->data) return 1;
  msg->m.msg_name = &msg->from;
  msg->m.msg_namelen = sizeof msg->from;
  /* msg_iov: set by message_receive, where its iovec lives */
  msg->m.msg_control = u->msg_control && u->msg_controllen ? msg->control : NULL;
  msg->m.msg_controllen = msg->m.msg_control ? (u->msg_controllen < SV_MAX_CONTROL ? u->msg_controllen : SV_MAX_CONTROL) : 0;
  return 0;
}

static void message_free(struct message *msg) {
  free(msg->iov);
  free(msg->data);
}

static enum receipt message_receive(struct sv_call *call, int dup, struct message *msg, int flags, ssize_t *r) {
  struct iovec one = {msg->data, msg->len};
  msg->m.msg_iov = &one;
  msg->m.msg_iovlen = 1;
  enum receipt got = receive_for(call, dup, &msg->m, flags, r);
  msg->m.msg_iov = NULL;
  msg->m.msg_iovlen = 0;
  return got;
}

/* Writes a received message into the program's buffers as the kernel would: the data
 * over its iovecs, the source (a relay's replaced), the ancillary data, and the msghdr's
 * msg_namelen, msg_controllen and msg_flags. 0 or -EFAULT. */
static int message_write(struct sv_call *call, const struct sv_sock *seen, struct message *msg, ssize_t received,
                         bool *rewritten) {
  size_t left = (size_t)received < msg->len ? (size_t)received : msg->len, off = 0;
  for (size_t i = 0; i < msg->user.msg_iovlen && left; i++) {
    size_t n = msg->iov[i].iov_len < left ? msg->iov[i].iov_len : left;
    if (sv_write(call, (uint64_t)(uintptr_t)msg->iov[i].iov_base, msg->data + off, n) < 0) return -EFAULT;
    off += n;
    left -= n;
  }
  union shim_addr src;
  socklen_t src_len;
  *rewritten = reported_source(seen, &msg->from, msg->m.msg_namelen, &src, &src_len);
  socklen_t cap = msg->user.msg_namelen < sizeof(struct sockaddr_storage) ? msg->user.msg_namelen : sizeof(struct sockaddr_storage);
  size_t name_n = cap < src_len ? cap : src_len;
  if (name_n && sv_write(call, (uint64_t)(uintptr_t)msg->user.msg_name, &src, name_n) < 0) return -EFAULT;
  if (msg->m.msg_controllen && sv_write(call, (uint64_t)(uintptr_t)msg->user.msg_control, msg->control, msg->m.msg_controllen) < 0)
    return -EFAULT;
  struct msghdr out = msg->user;
  out.msg_namelen = src_len;
  out.msg_controllen = msg->m.msg_control ? msg->m.msg_controllen : 0;
  out.msg_flags = msg->m.msg_flags;
  if (sv_write(call, msg->at + offsetof(struct msghdr, msg_namelen), &out.msg_namelen, sizeof out.msg_namelen) < 0 ||
      sv_write(call, msg->at + offsetof(struct msghdr, msg_controllen), &out.msg_controllen, sizeof out.msg_controllen) < 0 ||
      sv_write(call, msg->at + offsetof(struct msghdr, msg_flags), &out.msg_flags, sizeof out.msg_flags) < 0)
    return -EFAULT;
  return 0;
}

void sv_recvmsg(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int flags = (int)a[2];
  if (!atomic_load(&sv_relayed_udp) || (flags & ~SV_RECV_FLAGS)) return sv_continue(call);
  struct message *msg = malloc(sizeof *msg);
  if (!msg) return sv_continue(call);
  int read = message_read(call, a[1], msg);
  struct sv_sock seen;
  int dup = read == 0 ? relayed_socket(call, (int)a[0], &seen) : -1;
  if (dup < 0) { /* the kernel's call: no source to rewrite, EFAULT, EINVAL, not relayed */
    message_free(msg);
    free(msg);
    return sv_continue(call);
  }
  ssize_t r = 0;
  enum receipt got = message_receive(call, dup, msg, flags, &r);
  close(dup);
  bool rewritten = false;
  if (got == RECEIVED) {
    if (!sv_valid(call)) got = RECEIVE_ABANDONED;
    else if (message_write(call, &seen, msg, r, &rewritten) < 0) r = -EFAULT;
    if (got == RECEIVED) {
      shim_log("recvmsg: fd %d: %zd bytes%s", (int)a[0], r, rewritten ? ", source rewritten" : "");
      r < 0 ? sv_fail(call, (int)-r) : sv_return(call, r);
    }
  } else if (got == RECEIVE_FAILED) {
    sv_fail(call, (int)-r);
  } else if (got == RECEIVE_INTERRUPTED) {
    sv_continue(call);
  }
  message_free(msg);
  free(msg);
}

static int64_t timespec_ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return timespec_ns(&t);
}

/*
 * recvmmsg as the kernel makes it: message after message, each as recvmsg would receive
 * it (waiting for the first; with MSG_WAITFORONE not for the others), the timeout looked
 * at after each datagram and the time left written back; an error or a signal after
 * some messages ends the call with their count. Continued (the kernel's call) unless the
 * socket has relayed flows and every message of the vector has a source buffer.
 */
void sv_recvmmsg(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int flags = (int)a[3];
  unsigned vlen = (unsigned)a[2];
  if (vlen > SV_MAX_IOV) vlen = SV_MAX_IOV; /* as the kernel caps it */
  if (!atomic_load(&sv_relayed_udp) || vlen == 0 || (flags & ~(SV_RECV_FLAGS | MSG_WAITFORONE))) return sv_continue(call);
  struct timespec timeout;
  int64_t deadline = 0;
  if (a[4]) {
    if (sv_read(call, a[4], &timeout, sizeof timeout) < 0 || timeout.tv_sec < 0 || timeout.tv_nsec < 0 ||
        timeout.tv_nsec >= 1000000000)
      return sv_continue(call); /* the kernel's EFAULT or EINVAL */
    deadline = now_ns() + timespec_ns(&timeout);
  }
  struct message *msg = malloc(sizeof *msg);
  if (!msg) return sv_continue(call);
  /* Every message must be one whose source can be rewritten before any is taken. */
  for (unsigned i = 0; i < vlen; i++) {
    int read = message_read(call, a[1] + (uint64_t)i * sizeof(struct mmsghdr), msg);
    message_free(msg);
    if (read != 0) {
      free(msg);
      return sv_continue(call);
    }
  }
  struct sv_sock seen;
  int dup = relayed_socket(call, (int)a[0], &seen);
  if (dup < 0) {
    free(msg);
    return sv_continue(call);
  }
  unsigned done = 0;
  ssize_t err = 0;
  bool answered = false;
  for (unsigned i = 0; i < vlen; i++) {
    uint64_t at = a[1] + (uint64_t)i * sizeof(struct mmsghdr);
    ssize_t r = 0;
    bool rewritten = false;
    enum receipt got = message_read(call, at, msg) != 0 ? (r = -EFAULT, RECEIVE_FAILED)
                       : message_receive(call, dup, msg, (flags & ~MSG_WAITFORONE) | (done && (flags & MSG_WAITFORONE) ? MSG_DONTWAIT : 0), &r);
    if (got == RECEIVED) {
      unsigned len = (unsigned)r;
      if (!sv_valid(call)) got = RECEIVE_ABANDONED;
      else if (message_write(call, &seen, msg, r, &rewritten) < 0 ||
               sv_write(call, at + offsetof(struct mmsghdr, msg_len), &len, sizeof len) < 0)
        got = (r = -EFAULT, RECEIVE_FAILED);
      else
        done++;
    }
    message_free(msg);
    if (got == RECEIVE_ABANDONED) {
      answered = true; /* nobody to answer */
      break;
    }
    if (got == RECEIVE_INTERRUPTED) {
      if (!done) {
        sv_continue(call); /* the kernel sees the signal as it would have */
        answered = true;
      }
      break;
    }
    if (got == RECEIVE_FAILED) {
      err = r;
      break;
    }
    if (deadline) {
      int64_t left = deadline - now_ns();
      if (left < 0) left = 0;
      timeout.tv_sec = (time_t)(left / 1000000000);
      timeout.tv_nsec = (long)(left % 1000000000);
      if (left == 0) break;
    }
  }
  close(dup);
  free(msg);
  if (answered) return;
  shim_log("recvmmsg: fd %d: %u messages", (int)a[0], done);
  /* The time left goes back as the kernel writes it, once something was received. */
  if (done && deadline && sv_write(call, a[4], &timeout, sizeof timeout) < 0) return sv_fail(call, EFAULT);
  if (done) return sv_return(call, done);
  sv_fail(call, err ? (int)-err : EAGAIN);
}
