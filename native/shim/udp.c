/*
 * Datagrams. A UDP socket that connect()s goes through connect.c (that covers c-ares,
 * which connects to the nameserver and write()s). Here: sendto/sendmsg/sendmmsg with an
 * explicit destination are sent to the proxy's relay for that destination (asked once
 * per socket and destination, then remembered), and recvfrom/recvmsg/recvmmsg report a
 * datagram that came from a relay as coming from the destination it stands for.
 */
#include "shim.h"

#include <stdlib.h>
#include <string.h>

enum route { ROUTE_PASS, ROUTE_RELAY, ROUTE_FAIL };

/* Decides where a datagram for `addr` goes. ROUTE_RELAY fills relay; ROUTE_FAIL sets
 * errno. Called inside SHIM_ENTER. */
static enum route route_datagram(int fd, const struct sockaddr *addr, socklen_t len,
                                 union shim_addr *relay, socklen_t *relay_len) {
  if (!addr || len < sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return ROUTE_PASS;
  union shim_addr dest;
  socklen_t dest_len;
  if (!shim_addr_from(addr, len, &dest, &dest_len)) return ROUTE_PASS;

  struct udp_flow flow;
  if (fdtable_udp_lookup(fd, &dest, &flow)) {
    if (flow.local) return ROUTE_PASS;
    *relay = flow.relay;
    *relay_len = flow.relay_len;
    return ROUTE_RELAY;
  }
  int type = shim_sock_type(fd);
  if (type != SOCK_DGRAM) return ROUTE_PASS; /* TCP ignores the address; others aren't ours */

  struct connect_reply reply;
  if (proto_connect(true, &dest, 0, shim_sock_uid(fd), &reply) < 0) {
    shim_log("sendto: session proxy unreachable; failing with ENETUNREACH");
    errno = ENETUNREACH;
    return ROUTE_FAIL;
  }
  if (reply.kind == REPLY_ERROR) {
    errno = reply.err;
    return ROUTE_FAIL;
  }
  memset(&flow, 0, sizeof flow);
  flow.dest = dest;
  flow.dest_len = dest_len;
  if (reply.kind == REPLY_LOCAL) {
    flow.local = true;
    fdtable_udp_add(fd, &flow);
    return ROUTE_PASS;
  }
  if (!shim_addr_for_domain(&reply.proxy, addr->sa_family, &flow.relay, &flow.relay_len)) {
    errno = ENETUNREACH;
    return ROUTE_FAIL;
  }
  fdtable_udp_add(fd, &flow);
  *relay = flow.relay;
  *relay_len = flow.relay_len;
  return ROUTE_RELAY;
}

/* TCP Fast Open: sendto(MSG_FASTOPEN) is a connect plus the first bytes. Connect through
 * the proxy, then send normally (the proxy's loopback leg gains nothing from TFO). */
static ssize_t fastopen(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                        socklen_t addr_len, int saved) {
  SHIM_ENTER();
  int r = shim_connect_inet(fd, addr, addr_len, SOCK_STREAM, saved);
  SHIM_LEAVE();
  if (r < 0) return -1; /* EINPROGRESS included: the data was not sent */
  return REAL(sendto)(fd, buf, n, flags & ~MSG_FASTOPEN, NULL, 0);
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, __CONST_SOCKADDR_ARG arg,
                           socklen_t addr_len) {
  const struct sockaddr *addr = SHIM_CSA(arg);
  if (!addr || !shim_intercepting()) return REAL(sendto)(fd, buf, n, flags, arg, addr_len);
  int saved = errno;
  if ((flags & MSG_FASTOPEN) && addr_len >= sizeof(sa_family_t) &&
      (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    SHIM_ENTER();
    int type = shim_sock_type(fd);
    SHIM_LEAVE();
    errno = saved;
    if (type == SOCK_STREAM) return fastopen(fd, buf, n, flags, addr, addr_len, saved);
  }
  union shim_addr relay;
  socklen_t relay_len;
  SHIM_ENTER();
  enum route rt = route_datagram(fd, addr, addr_len, &relay, &relay_len);
  SHIM_LEAVE();
  if (rt == ROUTE_FAIL) return -1;
  errno = saved;
  if (rt == ROUTE_RELAY) return REAL(sendto)(fd, buf, n, flags, &relay.sa, relay_len);
  return REAL(sendto)(fd, buf, n, flags, arg, addr_len);
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  if (!msg || !msg->msg_name || !shim_intercepting()) return REAL(sendmsg)(fd, msg, flags);
  int saved = errno;
  union shim_addr relay;
  socklen_t relay_len;
  SHIM_ENTER();
  enum route rt = route_datagram(fd, msg->msg_name, msg->msg_namelen, &relay, &relay_len);
  SHIM_LEAVE();
  if (rt == ROUTE_FAIL) return -1;
  errno = saved;
  if (rt == ROUTE_RELAY) {
    struct msghdr copy = *msg;
    copy.msg_name = &relay;
    copy.msg_namelen = relay_len;
    return REAL(sendmsg)(fd, &copy, flags);
  }
  return REAL(sendmsg)(fd, msg, flags);
}

SHIM_EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags) {
  if (!vec || !vlen || !shim_intercepting()) return REAL(sendmmsg)(fd, vec, vlen, flags);
  bool any_name = false;
  for (unsigned i = 0; i < vlen && !any_name; i++) any_name = vec[i].msg_hdr.msg_name != NULL;
  if (!any_name) return REAL(sendmmsg)(fd, vec, vlen, flags);
  if (vlen > 1024) vlen = 1024; /* UIO_MAXIOV: the kernel's own cap */

  int saved = errno;
  SHIM_ENTER();
  struct mmsghdr *copy = malloc(vlen * sizeof *copy);
  union shim_addr *relays = malloc(vlen * sizeof *relays);
  int r;
  if (!copy || !relays) {
    errno = ENOBUFS;
    r = -1;
  } else {
    unsigned ok = 0;
    int err = 0;
    for (; ok < vlen; ok++) {
      copy[ok] = vec[ok];
      socklen_t rl;
      enum route rt = route_datagram(fd, vec[ok].msg_hdr.msg_name, vec[ok].msg_hdr.msg_namelen,
                                     &relays[ok], &rl);
      if (rt == ROUTE_FAIL) {
        err = errno;
        break;
      }
      if (rt == ROUTE_RELAY) {
        copy[ok].msg_hdr.msg_name = &relays[ok];
        copy[ok].msg_hdr.msg_namelen = rl;
      }
    }
    if (ok == 0) {
      errno = err;
      r = -1;
    } else {
      /* Like the kernel: send what can be sent, report how many went. */
      errno = saved;
      r = REAL(sendmmsg)(fd, copy, ok, flags);
      int e = errno;
      for (int i = 0; i < r; i++) vec[i].msg_len = copy[i].msg_len;
      errno = e;
    }
  }
  int e = errno;
  free(copy);
  free(relays);
  SHIM_LEAVE();
  errno = e;
  return r;
}

SHIM_EXPORT ssize_t recvfrom(int fd, void *__restrict buf, size_t n, int flags, __SOCKADDR_ARG arg,
                             socklen_t *__restrict addr_len) {
  struct sockaddr *addr = SHIM_SA(arg);
  shim_hook_init();
  socklen_t cap = addr_len ? *addr_len : 0;
  ssize_t r = REAL(recvfrom)(fd, buf, n, flags, arg, addr_len);
  if (r >= 0 && addr && addr_len && !shim_depth && shim_cfg.active)
    fdtable_udp_unrelay(fd, addr, cap, addr_len);
  return r;
}

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  shim_hook_init();
  socklen_t cap = msg ? msg->msg_namelen : 0;
  ssize_t r = REAL(recvmsg)(fd, msg, flags);
  if (r >= 0 && msg && msg->msg_name && !shim_depth && shim_cfg.active)
    fdtable_udp_unrelay(fd, msg->msg_name, cap, &msg->msg_namelen);
  return r;
}

SHIM_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
                         struct timespec *timeout) {
  shim_hook_init();
  socklen_t caps[64];
  unsigned ncaps = vlen < 64 ? vlen : 64;
  for (unsigned i = 0; vec && i < ncaps; i++) caps[i] = vec[i].msg_hdr.msg_namelen;
  int r = REAL(recvmmsg)(fd, vec, vlen, flags, timeout);
  if (r > 0 && !shim_depth && shim_cfg.active && fdtable_has_sock(fd)) {
    int e = errno;
    for (int i = 0; i < r; i++) {
      struct msghdr *h = &vec[i].msg_hdr;
      /* Beyond the saved capacities the buffer size is unknown; the kernel reports the
       * length it wrote, which is what was there, so use that. */
      socklen_t cap = (unsigned)i < ncaps ? caps[i] : h->msg_namelen;
      if (h->msg_name) fdtable_udp_unrelay(fd, h->msg_name, cap, &h->msg_namelen);
    }
    errno = e;
  }
  return r;
}
