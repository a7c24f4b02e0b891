/*
 * Socket address helpers: plain functions on sockaddrs and sockets, with no hook and no libc state, so
 * that both the preloaded shim and the seccomp supervisor (native/supervisor) link them.
 */
#include "shim.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <string.h>

SHIM_HIDDEN bool shim_addr_from(const struct sockaddr *sa, socklen_t len, union shim_addr *out,
                                socklen_t *out_len) {
  memset(out, 0, sizeof *out);
  if (!sa || len < sizeof(sa_family_t)) return false;
  if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    memcpy(&out->in, sa, sizeof out->in);
    memset(out->in.sin_zero, 0, sizeof out->in.sin_zero);
    *out_len = sizeof out->in;
    return true;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      out->in.sin_family = AF_INET;
      out->in.sin_port = s6->sin6_port;
      memcpy(&out->in.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
      *out_len = sizeof out->in;
    } else {
      memcpy(&out->in6, s6, sizeof out->in6);
      *out_len = sizeof out->in6;
    }
    return true;
  }
  return false;
}

SHIM_HIDDEN bool shim_addr_equal(const union shim_addr *a, const union shim_addr *b) {
  if (a->sa.sa_family != b->sa.sa_family) return false;
  if (a->sa.sa_family == AF_INET)
    return a->in.sin_port == b->in.sin_port && a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
  if (a->sa.sa_family == AF_INET6)
    return a->in6.sin6_port == b->in6.sin6_port &&
           memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, 16) == 0;
  return false;
}

SHIM_HIDDEN bool shim_addr_for_domain(const union shim_addr *a, int domain, union shim_addr *out,
                                      socklen_t *out_len) {
  memset(out, 0, sizeof *out);
  if (a->sa.sa_family == domain) {
    *out = *a;
    *out_len = domain == AF_INET ? sizeof out->in : sizeof out->in6;
    return true;
  }
  if (a->sa.sa_family == AF_INET && domain == AF_INET6) {
    out->in6.sin6_family = AF_INET6;
    out->in6.sin6_port = a->in.sin_port;
    out->in6.sin6_addr.s6_addr[10] = 0xff;
    out->in6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&out->in6.sin6_addr.s6_addr[12], &a->in.sin_addr, 4);
    *out_len = sizeof out->in6;
    return true;
  }
  return false; /* a v6 address cannot be reached from an AF_INET socket */
}

/* The kernel's convention: copy at most cap bytes, report the full length. */
SHIM_HIDDEN void shim_addr_copy_out(const union shim_addr *a, socklen_t alen, void *addr,
                                    socklen_t cap, socklen_t *len) {
  if (addr && cap) memcpy(addr, a, alen < cap ? alen : cap);
  if (len) *len = alen;
}

SHIM_HIDDEN int shim_connect_timeout_ms(int fd, int status_flags) {
  if (status_flags < 0) return 0;
  if (status_flags & O_NONBLOCK) return -1;
  struct timeval tv;
  socklen_t len = sizeof tv;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) < 0) return 0;
  long long ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
  if (ms <= 0 && tv.tv_usec > 0) ms = 1;
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* The socket's owner (its inode's uid), or -1. A system call of its own: the shim hooks fstat. */
SHIM_HIDDEN int64_t shim_sock_uid(int fd) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return -1;
  return st.st_uid;
}

SHIM_HIDDEN int shim_sock_type(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return -1;
  if (type == SOCK_STREAM || type == SOCK_DGRAM) {
    int proto = 0;
    len = sizeof proto;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto != IPPROTO_TCP &&
        proto != IPPROTO_UDP)
      return 0; /* SCTP, UDP-Lite, ...: not ours to proxy */
  }
  return type;
}
