/*
 * Outgoing connections: connect() asks the session proxy; for a remote destination the
 * program's own socket is connected to the proxy's local listener (TCP) or relay (UDP),
 * so the bytes never pass through a hook. getpeername/getsockname then report what the
 * program asked for and the pod-side address.
 */
#include "shim.h"

#include <fcntl.h>
#include <string.h>

/* ---- fresh descriptors start with no state (an fd number may be reused after a
 * close we did not see, e.g. inside libc) ---- */

SHIM_EXPORT int socket(int domain, int type, int protocol) {
  shim_hook_init();
  int fd = REAL(socket)(domain, type, protocol);
  if (fd >= 0 && !shim_depth) fdtable_clear(fd);
  return fd;
}

SHIM_EXPORT int socketpair(int domain, int type, int protocol, int fds[2]) {
  shim_hook_init();
  int r = REAL(socketpair)(domain, type, protocol, fds);
  if (r == 0 && !shim_depth) {
    fdtable_clear(fds[0]);
    fdtable_clear(fds[1]);
  }
  return r;
}

/* A connection accepted on a subscribed listener may stand for a pod client (listen.c). */
SHIM_EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len) {
  shim_hook_init();
  socklen_t cap = len ? *len : 0;
  int r = REAL(accept)(fd, addr, len);
  if (r >= 0 && !shim_depth) {
    fdtable_clear(r);
    if (shim_cfg.active && listen_is_subscribed(fd)) listen_after_accept(fd, r, SHIM_SA(addr), cap, len);
  }
  return r;
}

SHIM_EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len, int flags) {
  shim_hook_init();
  socklen_t cap = len ? *len : 0;
  int r = REAL(accept4)(fd, addr, len, flags);
  if (r >= 0 && !shim_depth) {
    fdtable_clear(r);
    if (shim_cfg.active && listen_is_subscribed(fd)) listen_after_accept(fd, r, SHIM_SA(addr), cap, len);
  }
  return r;
}

/* ---- connect ---- */


/* Returns the connect() result; errno is set for the program. */
/* Tells the proxy which socket is at the program's end of `stream`: its local port, and its
 * inode, which names it (another local user can connect or send to the proxy's loopback
 * port from the same port on another loopback address, never from this socket). */
static int attach_socket(int fd, bool udp, int64_t stream) {
  union shim_addr me;
  socklen_t me_len = sizeof me;
  struct stat sock_stat;
  if (REAL(getsockname)(fd, &me.sa, &me_len) < 0 || REAL(fstat)(fd, &sock_stat) < 0) return -1;
  return proto_attach(udp, stream, ntohs(me.sa.sa_family == AF_INET ? me.in.sin_port : me.in6.sin6_port),
                      (uint64_t)sock_stat.st_ino, (uint32_t)sock_stat.st_uid);
}

SHIM_HIDDEN int shim_connect_inet(int fd, const struct sockaddr *addr, socklen_t len, int type,
                                  int saved_errno) {
  union shim_addr dest;
  socklen_t dest_len;
  if (!shim_addr_from(addr, len, &dest, &dest_len)) {
    errno = saved_errno;
    return REAL(connect)(fd, addr, len);
  }
  int domain = addr->sa_family;
  bool udp = type == SOCK_DGRAM;

  /* A second connect() on a redirected TCP socket (non-blocking completion check, or a
   * retry after EINTR) goes to the same proxy listener and must not open another remote
   * connection. */
  struct sock_state st;
  if (!udp && fdtable_get_sock(fd, &st) && st.has_peer && shim_addr_equal(&st.peer, &dest)) {
    errno = saved_errno;
    return REAL(connect)(fd, &st.relay_peer.sa, st.relay_peer_len);
  }

  struct connect_reply reply;
  int timeout_ms = udp ? 0 : shim_connect_timeout_ms(fd, REAL(fcntl)(fd, F_GETFL));
  /* A blocking connect may wait for the pod as long as its kernel tries: a signal whose
   * handler has no SA_RESTART interrupts it, as it would the real connect. */
  channel_interruptible(!udp && timeout_ms >= 0);
  int asked = proto_connect(udp, &dest, timeout_ms, udp ? shim_sock_uid(fd) : -1, &reply);
  bool interrupted = channel_interrupted();
  channel_interruptible(false);
  if (asked < 0 && interrupted) {
    errno = EINTR;
    return -1;
  }
  if (asked < 0) {
    shim_log("connect: session proxy unreachable; failing with ENETUNREACH");
    errno = ENETUNREACH;
    return -1;
  }
  if (reply.kind == REPLY_ERROR) {
    errno = reply.err;
    return -1;
  }
  if (reply.kind == REPLY_LOCAL) {
    if (udp) fdtable_forget_peer(fd);
    errno = saved_errno;
    return REAL(connect)(fd, addr, len);
  }

  memset(&st, 0, sizeof st);
  st.type = type;
  if (!shim_addr_for_domain(&reply.proxy, domain, &st.relay_peer, &st.relay_peer_len)) {
    shim_log("connect: proxy address family does not fit an AF_INET socket");
    errno = ENETUNREACH;
    return -1;
  }
  int r = REAL(connect)(fd, &st.relay_peer.sa, st.relay_peer_len);
  int err = errno;
  bool underway = r == 0 || (!udp && (err == EINPROGRESS || err == EINTR));
  if (!underway) {
    shim_log("connect to proxy listener failed: %s", strerror(err));
    errno = err;
    return -1;
  }
  st.has_peer = true;
  /* The length the kernel would report for this family, whatever length was passed. */
  st.peer_len = domain == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  memcpy(&st.peer, addr, st.peer_len);
  if (reply.has_local) {
    st.has_local = shim_addr_for_domain(&reply.local, domain, &st.local, &st.local_len);
  }
  if (udp) {
    /* Keep the flows an earlier sendto() set up; only the connected peer changes. */
    struct sock_state old;
    if (fdtable_get_sock(fd, &old)) {
      st.nflows = old.nflows;
      st.next_victim = old.next_victim;
      memcpy(st.flows, old.flows, sizeof st.flows);
    }
  }
  fdtable_set_sock(fd, &st);

  if (!udp && attach_socket(fd, false, reply.stream) < 0) {
    shim_log("connect: could not attach stream %lld; failing with ENETUNREACH", (long long)reply.stream);
    fdtable_clear(fd);
    errno = ENETUNREACH;
    return -1;
  }
  /* A UDP flow through the pod: its relay learns which socket it serves, so the flow ends
   * with the socket even if it never sends (Go's dial to learn its local address). */
  if (udp && reply.stream > 0) (void)attach_socket(fd, true, reply.stream);
  errno = r == 0 ? saved_errno : err;
  return r;
}

SHIM_EXPORT int connect(int fd, __CONST_SOCKADDR_ARG arg, socklen_t len) {
  const struct sockaddr *addr = SHIM_CSA(arg);
  if (!shim_intercepting() || !addr || len < sizeof(sa_family_t))
    return REAL(connect)(fd, arg, len);
  if (addr->sa_family == AF_UNSPEC) {
    /* Dissolves a UDP association: the peer we reported is gone. */
    fdtable_forget_peer(fd);
    return REAL(connect)(fd, arg, len);
  }
  if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
    return REAL(connect)(fd, arg, len);
  if (listen_bind_deferred(fd, false) < 0) return -1; /* its bind() was deferred (listen.c) */
  int saved = errno;
  SHIM_ENTER();
  int type = shim_sock_type(fd);
  int r;
  if (type != SOCK_STREAM && type != SOCK_DGRAM) {
    errno = saved;
    r = REAL(connect)(fd, addr, len);
  } else {
    r = shim_connect_inet(fd, addr, len, type, saved);
  }
  SHIM_LEAVE();
  return r;
}

SHIM_EXPORT int getpeername(int fd, __SOCKADDR_ARG arg, socklen_t *__restrict len) {
  struct sockaddr *addr = SHIM_SA(arg);
  if (!len) return REAL(getpeername)(fd, arg, len);
  socklen_t cap = *len;
  int r = REAL(getpeername)(fd, arg, len);
  if (r < 0 || !shim_intercepting()) return r;
  struct sock_state st;
  if (fdtable_get_sock(fd, &st) && st.has_peer) shim_addr_copy_out(&st.peer, st.peer_len, addr, cap, len);
  return r;
}

SHIM_EXPORT int getsockname(int fd, __SOCKADDR_ARG arg, socklen_t *__restrict len) {
  struct sockaddr *addr = SHIM_SA(arg);
  if (!len) return REAL(getsockname)(fd, arg, len);
  socklen_t cap = *len;
  int r = REAL(getsockname)(fd, arg, len);
  if (r < 0 || !shim_intercepting()) return r;
  struct sock_state st;
  if (fdtable_get_sock(fd, &st) && st.has_peer && st.has_local)
    shim_addr_copy_out(&st.local, st.local_len, addr, cap, len);
  else
    listen_sockname(fd, addr, cap, len); /* a listener moved to a free port (listen.c) */
  return r;
}
