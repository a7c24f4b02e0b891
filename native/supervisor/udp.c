/*
 * Datagrams with a destination, for the supervisor: what native/shim/udp.c does in the
 * program, done from outside it.
 *
 * sendto/sendmsg/sendmmsg with a destination, on a UDP socket: a remote destination's
 * datagram is sent by the supervisor, from the program's socket (the duplicate), to the
 * proxy's relay for that destination; the call returns what that send returned.
 */
#include "sockets.h"

#include <string.h>

/* ---- datagrams with a destination ---- */

enum route { ROUTE_PASS, ROUTE_RELAY, ROUTE_FAIL };

/* Where a datagram of the socket `dup` for dest goes; ROUTE_FAIL sets *err. */
static enum route route_datagram(int dup, const union shim_addr *dest, int family, union shim_addr *relay,
                                 socklen_t *relay_len, int *err) {
  if (shim_sock_type(dup) != SOCK_DGRAM) return ROUTE_PASS; /* TCP ignores the address */
  uint32_t uid = 0;
  uint64_t inode = sv_sock_inode(dup, &uid);
  if (!inode) return ROUTE_PASS;
  pthread_mutex_lock(&sv_socks_lock);
  struct sv_sock *s = sv_sock_slot(inode, false);
  if (s) {
    for (unsigned i = 0; i < s->nflows; i++) {
      if (!shim_addr_equal(&s->flows[i].dest, dest)) continue;
      bool local = s->flows[i].local;
      *relay = s->flows[i].relay;
      *relay_len = s->flows[i].relay_len;
      pthread_mutex_unlock(&sv_socks_lock);
      return local ? ROUTE_PASS : ROUTE_RELAY;
    }
  }
  pthread_mutex_unlock(&sv_socks_lock);

  struct connect_reply reply;
  if (proto_connect(true, dest, 0, uid, &reply) < 0) {
    *err = ENETUNREACH;
    return ROUTE_FAIL;
  }
  if (reply.kind == REPLY_ERROR) {
    *err = reply.err;
    return ROUTE_FAIL;
  }
  struct sv_flow flow = {.dest = *dest, .local = reply.kind == REPLY_LOCAL};
  if (!flow.local && !shim_addr_for_domain(&reply.proxy, family, &flow.relay, &flow.relay_len)) {
    *err = ENETUNREACH;
    return ROUTE_FAIL;
  }
  if (!flow.local) atomic_store(&sv_relayed_udp, true);
  pthread_mutex_lock(&sv_socks_lock);
  s = sv_sock_slot(inode, true);
  s->udp = true;
  unsigned at = s->nflows < SV_FLOWS ? s->nflows++ : s->next_victim++ % SV_FLOWS;
  s->flows[at] = flow;
  pthread_mutex_unlock(&sv_socks_lock);
  *relay = flow.relay;
  *relay_len = flow.relay_len;
  return flow.local ? ROUTE_PASS : ROUTE_RELAY;
}

#define SV_MAX_IOV 64
#define SV_MAX_CONTROL 4096

/* One message of the program (a msghdr at `at`) sent from dup: the byte count or -errno;
 * *pass when the kernel should run the call itself (no inet destination, a local one). */
static ssize_t send_message(struct sv_call *call, int dup, uint64_t at, int flags, bool *pass) {
  struct msghdr m;
  if (sv_read(call, at, &m, sizeof m) < 0) return -EFAULT;
  union shim_addr dest, relay;
  socklen_t relay_len;
  int family, err = 0;
  if (!sv_read_inet_addr(call, (uint64_t)(uintptr_t)m.msg_name, m.msg_namelen, &dest, &family)) {
    *pass = true;
    return 0;
  }
  enum route route = route_datagram(dup, &dest, family, &relay, &relay_len, &err);
  if (route == ROUTE_FAIL) return -err;
  if (route == ROUTE_PASS) {
    *pass = true;
    return 0;
  }
  if (m.msg_iovlen > SV_MAX_IOV || m.msg_controllen > SV_MAX_CONTROL) return -EMSGSIZE;
  struct iovec iov[SV_MAX_IOV];
  if (m.msg_iovlen && sv_read(call, (uint64_t)(uintptr_t)m.msg_iov, iov, m.msg_iovlen * sizeof iov[0]) < 0) return -EFAULT;
  size_t total = 0;
  for (size_t i = 0; i < m.msg_iovlen; i++) {
    if (iov[i].iov_len > SV_MAX_DATAGRAM || total + iov[i].iov_len > SV_MAX_DATAGRAM) return -EMSGSIZE;
    total += iov[i].iov_len;
  }
  char *data = malloc(total ? total : 1);
  char control[SV_MAX_CONTROL];
  if (!data) return -ENOMEM;
  size_t off = 0;
  ssize_t r = 0;
  for (size_t i = 0; i < m.msg_iovlen && r == 0; i++) {
    if (sv_read(call, (uint64_t)(uintptr_t)iov[i].iov_base, data + off, iov[i].iov_len) < 0) r = -EFAULT;
    off += iov[i].iov_len;
  }
  if (r == 0 && m.msg_controllen && sv_read(call, (uint64_t)(uintptr_t)m.msg_control, control, m.msg_controllen) < 0) r = -EFAULT;
  if (r == 0) {
    struct iovec one = {data, total};
    struct msghdr out = {.msg_name = &relay, .msg_namelen = relay_len, .msg_iov = &one, .msg_iovlen = 1,
                         .msg_control = m.msg_controllen ? control : NULL, .msg_controllen = m.msg_controllen};
    /* The program's socket may be blocking: a full send buffer must not hold this worker. */
    r = sendmsg(dup, &out, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) r = -errno;
  }
  free(data);
  return r;
}

void sv_sendto(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  union shim_addr dest, relay;
  socklen_t relay_len;
  int family, err = 0;
  if ((a[3] & MSG_FASTOPEN) || !sv_read_inet_addr(call, a[4], a[5], &dest, &family)) return sv_continue(call);
  if (a[2] > SV_MAX_DATAGRAM) return sv_continue(call);
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) return sv_continue(call);
  enum route route = route_datagram(dup, &dest, family, &relay, &relay_len, &err);
  if (route != ROUTE_RELAY) {
    close(dup);
    return route == ROUTE_PASS ? sv_continue(call) : sv_fail(call, err);
  }
  char *data = malloc(a[2] ? a[2] : 1);
  ssize_t r = -ENOMEM;
  if (data) {
    r = sv_read(call, a[1], data, (size_t)a[2]);
    if (r == 0) {
      r = sendto(dup, data, (size_t)a[2], (int)a[3] | MSG_DONTWAIT | MSG_NOSIGNAL, &relay.sa, relay_len);
      if (r < 0) r = -errno;
    }
    free(data);
  }
  close(dup);
  r < 0 ? sv_fail(call, (int)-r) : sv_return(call, r);
}

void sv_sendmsg(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  /* Most sendmsg calls have no destination (TCP, connected UDP): look before taking the fd. */
  struct msghdr m;
  if (sv_read(call, a[1], &m, sizeof m) < 0 || !m.msg_name || (a[2] & MSG_FASTOPEN)) return sv_continue(call);
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) return sv_continue(call);
  bool pass = false;
  ssize_t r = send_message(call, dup, a[1], (int)a[2], &pass);
  close(dup);
  if (pass) return sv_continue(call);
  r < 0 ? sv_fail(call, (int)-r) : sv_return(call, r);
}

void sv_sendmmsg(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  unsigned n = (unsigned)a[2];
  if (n > 1024) n = 1024; /* UIO_MAXIOV, as the kernel caps it */
  if (n == 0) return sv_continue(call);
  /* Continued by the kernel unless the first message goes to a relay. */
  struct mmsghdr first;
  if (sv_read(call, a[1], &first, sizeof first) < 0 || !first.msg_hdr.msg_name) return sv_continue(call);
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) return sv_continue(call);
  unsigned sent = 0;
  ssize_t err = 0;
  for (unsigned i = 0; i < n; i++) {
    uint64_t at = a[1] + (uint64_t)i * sizeof(struct mmsghdr);
    bool pass = false;
    ssize_t r = send_message(call, dup, at, (int)a[3], &pass);
    if (pass) {
      if (i == 0) {
        close(dup);
        return sv_continue(call);
      }
      /* A local destination after remote ones: send it as the kernel would, here. */
      struct msghdr m;
      if (sv_read(call, at, &m, sizeof m) < 0) r = -EFAULT;
      else r = -EOPNOTSUPP; /* mixed local and remote destinations in one call: stop here */
      if (r == -EOPNOTSUPP) break;
    }
    if (r < 0) {
      err = r;
      break;
    }
    unsigned len = (unsigned)r;
    if (sv_write(call, at + offsetof(struct mmsghdr, msg_len), &len, sizeof len) < 0) {
      err = -EFAULT;
      break;
    }
    sent++;
  }
  close(dup);
  if (sent) return sv_return(call, sent);
  sv_fail(call, err ? (int)-err : EIO);
}
