/*
 * Outgoing connections for the supervisor: what native/shim/connect.c does in the
 * program, done from outside it.
 *
 * connect: the supervisor takes a duplicate of the program's socket (pidfd_getfd: the
 * same socket, not a copy), asks the session proxy (proto_connect, the shim's own
 * request), and connects the duplicate to the proxy's loopback listener or UDP relay, so
 * the program's socket ends up connected there and its bytes never pass the supervisor.
 * A blocking socket's connect waits for the pod here, on this worker thread; a
 * non-blocking one gets the proxy's held-connect answer as the shim does. The attach
 * names the socket by its inode and owner, exactly as the shim does. A local destination
 * is continued by the kernel.
 *
 * What was rewritten is remembered per socket, by its inode (a socket has one inode
 * however many fds or processes share it), and checked against the socket's real peer
 * before it is reported: getpeername answers the address asked for, getsockname the
 * pod-side address.
 */
#include "sockets.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/time.h>

static uint16_t port_of(const union shim_addr *a) {
  return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

/* ---- connect ---- */



/* The program's blocking connect, made to the proxy's listener: 0 or -errno. The proxy
 * answers a blocking connect once the pod's is made (the wait for that answer hands the
 * receiving over if another call comes meanwhile), so this connect is done at once, unless
 * the listener's accept queue is full: then the kernel retries the SYN for seconds. So it
 * is made non-blocking for that moment (the flags are the open file's, the program's own,
 * and put back at once), and only a connect not done within a millisecond hands the
 * receiving over to another worker and waits, as long as the program's would have
 * (SO_SNDTIMEO: EINPROGRESS after it, as the kernel says). A loopback connect made so is
 * EINPROGRESS and writable at once: five system calls, where handing over before every
 * blocking connect woke another worker each time. */
static int connect_blocking(int dup, const union shim_addr *relay, socklen_t relay_len, int fl, int timeout_ms) {
  if (fl < 0 || fcntl(dup, F_SETFL, fl | O_NONBLOCK) < 0) { /* flags unknown: wait as it would */
    sv_stop_receiving();
    return connect(dup, &relay->sa, relay_len) == 0 ? 0 : -errno;
  }
  int r = connect(dup, &relay->sa, relay_len);
  int err = errno;
  fcntl(dup, F_SETFL, fl);
  if (r == 0) return 0;
  if (err != EINPROGRESS) return -err;
  struct pollfd p = {.fd = dup, .events = POLLOUT};
  int n;
  while ((n = poll(&p, 1, 1)) < 0 && errno == EINTR) {}
  if (n == 0) {
    sv_stop_receiving();
    while ((n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1)) < 0 && errno == EINTR) {}
  }
  if (n < 0) return -errno;
  if (n == 0) return -EINPROGRESS; /* SO_SNDTIMEO ran out: the connect goes on, as the kernel's would */
  int so_error = 0;
  socklen_t len = sizeof so_error;
  if (getsockopt(dup, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0) return -errno;
  return so_error ? -so_error : 0;
}

static void connect_socket(struct sv_call *call, int dup, const union shim_addr *dest, int family) {
  int type = shim_sock_type(dup);
  if (type != SOCK_STREAM && type != SOCK_DGRAM) return sv_continue(call);
  bool udp = type == SOCK_DGRAM;
  uint32_t uid = 0;
  uint64_t inode = sv_sock_inode(dup, &uid);
  if (!inode) return sv_continue(call);

  /* A second connect() of a redirected TCP socket (a non-blocking completion check, a
   * retry after EINTR) goes to the same proxy listener, not to a new remote connection. */
  pthread_mutex_lock(&sv_socks_lock);
  struct sv_sock *known = sv_sock_slot(inode, false);
  struct sv_sock seen = known ? *known : (struct sv_sock){0};
  pthread_mutex_unlock(&sv_socks_lock);
  if (!udp && known && seen.has_peer && shim_addr_equal(&seen.peer, dest)) {
    int r = connect(dup, &seen.relay_peer.sa, seen.relay_peer_len);
    return r == 0 ? sv_return(call, 0) : sv_fail(call, errno);
  }

  int fl = udp ? O_NONBLOCK : fcntl(dup, F_GETFL); /* a UDP connect never waits */
  int timeout_ms = udp ? 0 : shim_connect_timeout_ms(dup, fl);
  struct connect_reply reply;
  if (proto_connect(udp, dest, timeout_ms, udp ? (int64_t)uid : -1, &reply) < 0) {
    shim_log("connect: session proxy unreachable; failing with ENETUNREACH");
    return sv_fail(call, ENETUNREACH);
  }
  if (reply.kind == REPLY_ERROR) return sv_fail(call, reply.err);
  if (reply.kind == REPLY_LOCAL) {
    if (udp && known) {
      pthread_mutex_lock(&sv_socks_lock);
      struct sv_sock *s = sv_sock_slot(inode, false);
      if (s) s->has_peer = s->has_local = false;
      pthread_mutex_unlock(&sv_socks_lock);
    }
    return sv_continue(call);
  }

  union shim_addr relay;
  socklen_t relay_len;
  if (!shim_addr_for_domain(&reply.proxy, family, &relay, &relay_len)) {
    shim_log("connect: proxy address family does not fit an AF_INET socket");
    return sv_fail(call, ENETUNREACH);
  }
  int r, err;
  if (!udp && (fl < 0 || !(fl & O_NONBLOCK))) {
    r = connect_blocking(dup, &relay, relay_len, fl, timeout_ms);
    err = r < 0 ? -r : 0;
    r = r < 0 ? -1 : 0;
  } else {
    r = connect(dup, &relay.sa, relay_len);
    err = errno;
  }
  bool underway = r == 0 || (!udp && (err == EINPROGRESS || err == EINTR));
  if (!underway) {
    shim_log("connect to proxy listener failed: %s", strerror(err));
    return sv_fail(call, err);
  }
  if (udp) atomic_store(&sv_relayed_udp, true);
  pthread_mutex_lock(&sv_socks_lock);
  struct sv_sock *s = sv_sock_slot(inode, true);
  s->udp = udp;
  s->has_peer = true;
  s->peer_len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  shim_addr_for_domain(dest, family, &s->peer, &s->peer_len);
  s->relay_peer = relay;
  s->relay_peer_len = relay_len;
  s->has_local = reply.has_local && shim_addr_for_domain(&reply.local, family, &s->local, &s->local_len);
  pthread_mutex_unlock(&sv_socks_lock);

  /* The program's socket named to the proxy: a TCP connection is paired by it; a UDP flow
   * through the pod learns which socket it serves, so it ends with the socket even if that
   * never sends (Go's dial to learn its local address). */
  if (!udp || reply.stream > 0) {
    union shim_addr me;
    socklen_t me_len = sizeof me;
    bool attached = getsockname(dup, &me.sa, &me_len) == 0 && proto_attach(udp, reply.stream, port_of(&me), inode, uid) == 0;
    if (!attached && !udp) {
      shim_log("connect: could not attach stream %lld; failing with ENETUNREACH", (long long)reply.stream);
      return sv_fail(call, ENETUNREACH);
    }
  }
  shim_log("connect: socket %llu (tid %u) stream %lld: %s", (unsigned long long)inode, call->req->pid,
           (long long)reply.stream, r == 0 ? "connected" : strerror(err));
  return r == 0 ? sv_return(call, 0) : sv_fail(call, err);
}

void sv_connect(struct sv_call *call) {
  union shim_addr dest;
  int family;
  if (!sv_read_inet_addr(call, call->req->data.args[1], call->req->data.args[2], &dest, &family)) return sv_continue(call);
  /* sv_getfd checks that the notification is still valid (its thread the caller). */
  int dup = sv_getfd(call, (int)call->req->data.args[0]);
  if (dup < 0) return sv_continue(call); /* EBADF and the like: the kernel says it */
  int bound = sv_incoming_bind_deferred(dup); /* its bind() was deferred (listen.c) */
  if (bound < 0) {
    close(dup);
    return sv_fail(call, -bound);
  }
  connect_socket(call, dup, &dest, family);
  close(dup);
}

/* ---- getpeername / getsockname ---- */

/* Reads the capacity *addrlen of an (addr, addrlen) pair of the program: 0, -EFAULT or
 * -EINVAL (negative), as the kernel checks it. */
/* getpeername/getsockname's answer: a in their (addr, addrlen) arguments. */
static void answer_address(struct sv_call *call, const union shim_addr *a, socklen_t alen) {
  uint64_t addr = call->req->data.args[1], lenp = call->req->data.args[2];
  socklen_t cap;
  int r = sv_read_address_cap(call, lenp, &cap);
  if (r == 0) r = sv_write_address(call, addr, lenp, cap, a, alen);
  r < 0 ? sv_fail(call, -r) : sv_return(call, 0);
}

static void name_call(struct sv_call *call, bool peer) {
  int dup = sv_getfd(call, (int)call->req->data.args[0]);
  if (dup < 0) return sv_continue(call);
  if (sv_incoming_name(call, dup, peer)) { /* relayed from the pod, or bound elsewhere (accept.c) */
    close(dup);
    return;
  }
  uint64_t inode = sv_sock_inode(dup, NULL);
  struct sv_sock seen = {0};
  bool known = false;
  if (inode) {
    pthread_mutex_lock(&sv_socks_lock);
    struct sv_sock *s = sv_sock_slot(inode, false);
    if (s) {
      seen = *s;
      known = true;
    }
    pthread_mutex_unlock(&sv_socks_lock);
  }
  if (!known || !seen.has_peer || (!peer && !seen.has_local)) {
    close(dup);
    return sv_continue(call);
  }
  /* Still connected where we put it? (An AF_UNSPEC connect dissolves a UDP association;
   * an inode may be reused by a new socket.) Not connected yet (ENOTCONN: a non-blocking
   * connect under way, which Go checks with getpeername) is the kernel's answer to give,
   * and forgets nothing. */
  union shim_addr real, real_norm, relay_norm;
  socklen_t real_len = sizeof real, norm_len;
  if (getpeername(dup, &real.sa, &real_len) < 0) {
    close(dup);
    return sv_continue(call);
  }
  close(dup);
  bool same = shim_addr_from(&real.sa, real_len, &real_norm, &norm_len) &&
              shim_addr_from(&seen.relay_peer.sa, seen.relay_peer_len, &relay_norm, &norm_len) &&
              shim_addr_equal(&real_norm, &relay_norm);
  if (!same) {
    pthread_mutex_lock(&sv_socks_lock);
    struct sv_sock *s = sv_sock_slot(inode, false);
    if (s) s->has_peer = s->has_local = false;
    pthread_mutex_unlock(&sv_socks_lock);
    return sv_continue(call);
  }
  shim_log("%s of socket %llu answered", peer ? "getpeername" : "getsockname", (unsigned long long)inode);
  if (peer) answer_address(call, &seen.peer, seen.peer_len);
  else answer_address(call, &seen.local, seen.local_len);
}

void sv_getpeername(struct sv_call *call) { name_call(call, true); }
void sv_getsockname(struct sv_call *call) { name_call(call, false); }
