/*
 * The sources of relayed datagrams, for the supervisor.
 *
 * recvfrom with a source buffer, on a UDP socket with relayed flows (or a relayed
 * connect): the replies come from the relays' loopback addresses, and musl's resolver
 * (sendto on an unconnected socket) drops a reply whose source is not a nameserver. So
 * the supervisor makes the receive itself, on its duplicate of the socket (the same open
 * file: O_NONBLOCK, SO_RCVTIMEO, the flags as given), and writes the data and the source
 * into the program's memory, a relay's address replaced by the destination it stands
 * for. A blocking receive waits on this worker thread (notify.c starts another for the
 * other calls), polling the socket with a short slice so that it notices the caller's
 * death and a signal for it: the call is then continued, so that the kernel interrupts it
 * as it would have (EINTR, or a restart under SA_RESTART). The filter notifies only
 * recvfrom with a source buffer (a TCP read has none), and a recvfrom on a socket with
 * nothing relayed is continued. recvmsg and recvmmsg are not notified (their address
 * buffer is inside a msghdr the filter cannot see, and TCP programs call them
 * constantly): a program that reads relayed replies with them sees the relay's address.
 */
#include "sockets.h"

#include <poll.h>
#include <string.h>

/* ---- recvfrom: the sources of relayed datagrams ---- */

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

/* recvfrom on dup as the program's call would make it, waiting here if it would block. */
static enum receipt receive_for(struct sv_call *call, int dup, void *buf, size_t len, int flags, union shim_addr *from,
                                socklen_t *from_len, ssize_t *result) {
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
  for (;;) {
    *from_len = sizeof *from;
    ssize_t r = recvfrom(dup, buf, len, flags | MSG_DONTWAIT, &from->sa, from_len);
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

void sv_recvfrom(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int flags = (int)a[3];
  if (!atomic_load(&sv_relayed_udp) || (flags & ~SV_RECV_FLAGS)) return sv_continue(call);
  socklen_t cap;
  if (sv_read_address_cap(call, a[5], &cap) < 0) return sv_continue(call); /* the kernel's EFAULT or EINVAL */
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) return sv_continue(call);
  uint64_t inode = sv_sock_inode(dup, NULL);
  bool relayed = false;
  struct sv_sock seen;
  if (inode) {
    pthread_mutex_lock(&sv_socks_lock);
    struct sv_sock *s = sv_sock_slot(inode, false);
    if (s && s->udp && (s->nflows || s->has_peer)) {
      seen = *s;
      relayed = true;
    }
    pthread_mutex_unlock(&sv_socks_lock);
  }
  /* A datagram is at most 64 KiB: a bigger buffer is never filled beyond that. */
  size_t len = a[2] < SV_MAX_DATAGRAM ? (size_t)a[2] : SV_MAX_DATAGRAM;
  char *data = relayed ? malloc(len ? len : 1) : NULL;
  if (!data) {
    close(dup);
    return sv_continue(call);
  }
  union shim_addr from, source;
  socklen_t from_len = 0, source_len;
  ssize_t r = 0;
  enum receipt got = receive_for(call, dup, data, len, flags, &from, &from_len, &r);
  close(dup);
  if (got == RECEIVED) {
    /* The datagram is taken: from here every answer is the call's result. */
    size_t copied = (size_t)r < len ? (size_t)r : len;
    const void *src = &from;
    socklen_t src_len = from_len;
    if (source_of(&seen, &from, from_len, &source, &source_len)) {
      src = &source;
      src_len = source_len;
    }
    if (!sv_valid(call)) got = RECEIVE_ABANDONED; /* its memory is no longer the caller's */
    else if (sv_write(call, a[1], data, copied) < 0 || sv_write_address(call, a[4], a[5], cap, src, src_len) < 0) r = -EFAULT;
    if (got == RECEIVED) {
      shim_log("recvfrom: socket %llu: %zd bytes%s", (unsigned long long)inode, r, src == &source ? ", source rewritten" : "");
      r < 0 ? sv_fail(call, (int)-r) : sv_return(call, r);
    }
  } else if (got == RECEIVE_FAILED) {
    sv_fail(call, (int)-r);
  } else if (got == RECEIVE_INTERRUPTED) {
    shim_log("recvfrom: socket %llu: a signal for tid %u; continued", (unsigned long long)inode, call->req->pid);
    sv_continue(call); /* the kernel sees the signal and interrupts (or restarts) the call */
  }
  free(data);
}
