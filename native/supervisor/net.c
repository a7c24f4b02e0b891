/*
 * Outgoing sockets for the supervisor: what native/shim/connect.c and udp.c do in the
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
 *
 * sendto/sendmsg/sendmmsg with a destination, on a UDP socket: a remote destination's
 * datagram is sent by the supervisor, from the program's socket (the duplicate), to the
 * proxy's relay for that destination; the call returns what that send returned.
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
#include "sv.h"

#include <poll.h>
#include <string.h>
#include <sys/time.h>

/* ---- per-socket state, by inode ---- */

#define SV_SOCKS 4096 /* slots; open addressing, a few probes, the oldest overwritten */
#define SV_PROBES 8
#define SV_FLOWS 16   /* UDP destinations remembered per socket */

struct sv_flow {
  union shim_addr dest, relay;
  socklen_t relay_len;
  bool local;
};

struct sv_sock {
  uint64_t inode;          /* 0: free */
  uint64_t stamp;          /* last use, for eviction */
  bool udp;                /* a datagram socket (its flows or its connect relayed) */
  bool has_peer;
  union shim_addr peer;    /* what the program asked for */
  socklen_t peer_len;
  union shim_addr relay_peer; /* where the socket is really connected */
  socklen_t relay_peer_len;
  bool has_local;
  union shim_addr local;
  socklen_t local_len;
  unsigned nflows, next_victim;
  struct sv_flow flows[SV_FLOWS];
};

static struct sv_sock socks[SV_SOCKS];
static pthread_mutex_t socks_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t clock_stamp;
/* Set once a UDP socket's datagrams first go to a relay: until then a notified recvfrom
 * is continued before its descriptor is even looked at. */
static atomic_bool relayed_udp;

/* The slot of inode, or (create) a free or else the least recently used one of its
 * probes. Under socks_lock. */
static struct sv_sock *slot_of(uint64_t inode, bool create) {
  size_t h = (size_t)((inode * 0x9E3779B97F4A7C15ull) >> 40) % SV_SOCKS;
  struct sv_sock *victim = NULL;
  for (size_t i = 0; i < SV_PROBES; i++) {
    struct sv_sock *s = &socks[(h + i) % SV_SOCKS];
    if (s->inode == inode) {
      s->stamp = ++clock_stamp;
      return s;
    }
    if (!victim || (victim->inode != 0 && (s->inode == 0 || s->stamp < victim->stamp))) victim = s;
  }
  if (!create) return NULL;
  memset(victim, 0, sizeof *victim);
  victim->inode = inode;
  victim->stamp = ++clock_stamp;
  return victim;
}

static uint64_t inode_of(int fd, uint32_t *uid) {
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return 0;
  if (uid) *uid = (uint32_t)st.st_uid;
  return (uint64_t)st.st_ino;
}

static uint16_t port_of(const union shim_addr *a) {
  return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

/* ---- connect ---- */

/* What proto_connect takes: -1 for a non-blocking socket, else SO_SNDTIMEO in ms (0: none). */
static int connect_timeout_ms(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return 0;
  if (fl & O_NONBLOCK) return -1;
  struct timeval tv;
  socklen_t len = sizeof tv;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) < 0) return 0;
  long long ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
  if (ms <= 0 && tv.tv_usec > 0) ms = 1;
  return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* Reads the sockaddr argument of a call: false (let the kernel answer) when it is not an
 * inet address we can read. */
static bool read_inet_addr(struct sv_call *call, uint64_t ptr, uint64_t len, union shim_addr *dest,
                           int *family) {
  if (!ptr || len < sizeof(sa_family_t) || len > 4096) return false;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  size_t want = len < sizeof ss ? (size_t)len : sizeof ss;
  if (sv_read(call, ptr, &ss, want) < 0) return false;
  if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return false;
  socklen_t dest_len;
  if (!shim_addr_from((struct sockaddr *)&ss, (socklen_t)want, dest, &dest_len)) return false;
  *family = ss.ss_family;
  return true;
}

static void connect_socket(struct sv_call *call, int dup, const union shim_addr *dest, int family) {
  int type = shim_sock_type(dup);
  if (type != SOCK_STREAM && type != SOCK_DGRAM) return sv_continue(call);
  bool udp = type == SOCK_DGRAM;
  uint32_t uid = 0;
  uint64_t inode = inode_of(dup, &uid);
  if (!inode) return sv_continue(call);

  /* A second connect() of a redirected TCP socket (a non-blocking completion check, a
   * retry after EINTR) goes to the same proxy listener, not to a new remote connection. */
  pthread_mutex_lock(&socks_lock);
  struct sv_sock *known = slot_of(inode, false);
  struct sv_sock seen = known ? *known : (struct sv_sock){0};
  pthread_mutex_unlock(&socks_lock);
  if (!udp && known && seen.has_peer && shim_addr_equal(&seen.peer, dest)) {
    int r = connect(dup, &seen.relay_peer.sa, seen.relay_peer_len);
    return r == 0 ? sv_return(call, 0) : sv_fail(call, errno);
  }

  int timeout_ms = udp ? 0 : connect_timeout_ms(dup);
  struct connect_reply reply;
  if (proto_connect(udp, dest, timeout_ms, &reply) < 0) {
    shim_log("connect: session proxy unreachable; failing with ENETUNREACH");
    return sv_fail(call, ENETUNREACH);
  }
  if (reply.kind == REPLY_ERROR) return sv_fail(call, reply.err);
  if (reply.kind == REPLY_LOCAL) {
    if (udp && known) {
      pthread_mutex_lock(&socks_lock);
      struct sv_sock *s = slot_of(inode, false);
      if (s) s->has_peer = s->has_local = false;
      pthread_mutex_unlock(&socks_lock);
    }
    return sv_continue(call);
  }

  union shim_addr relay;
  socklen_t relay_len;
  if (!shim_addr_for_domain(&reply.proxy, family, &relay, &relay_len)) {
    shim_log("connect: proxy address family does not fit an AF_INET socket");
    return sv_fail(call, ENETUNREACH);
  }
  int r = connect(dup, &relay.sa, relay_len);
  int err = errno;
  bool underway = r == 0 || (!udp && (err == EINPROGRESS || err == EINTR));
  if (!underway) {
    shim_log("connect to proxy listener failed: %s", strerror(err));
    return sv_fail(call, err);
  }
  if (udp) atomic_store(&relayed_udp, true);
  pthread_mutex_lock(&socks_lock);
  struct sv_sock *s = slot_of(inode, true);
  s->udp = udp;
  s->has_peer = true;
  s->peer_len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  shim_addr_for_domain(dest, family, &s->peer, &s->peer_len);
  s->relay_peer = relay;
  s->relay_peer_len = relay_len;
  s->has_local = reply.has_local && shim_addr_for_domain(&reply.local, family, &s->local, &s->local_len);
  pthread_mutex_unlock(&socks_lock);

  if (!udp) {
    union shim_addr me;
    socklen_t me_len = sizeof me;
    if (getsockname(dup, &me.sa, &me_len) < 0 || proto_attach(reply.stream, port_of(&me), inode, uid) < 0) {
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
  if (!read_inet_addr(call, call->req->data.args[1], call->req->data.args[2], &dest, &family)) return sv_continue(call);
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
static int read_address_cap(struct sv_call *call, uint64_t lenp, socklen_t *cap) {
  if (!lenp || sv_read(call, lenp, cap, sizeof *cap) < 0) return -EFAULT;
  return (int)*cap < 0 ? -EINVAL : 0;
}

/* Writes a into the program's (addr, addrlen) pair as the kernel would: at most cap
 * bytes, the full length back. 0 or -EFAULT. */
static int write_address(struct sv_call *call, uint64_t addr, uint64_t lenp, socklen_t cap, const void *a, socklen_t alen) {
  size_t n = cap < alen ? cap : alen;
  if ((n && sv_write(call, addr, a, n) < 0) || sv_write(call, lenp, &alen, sizeof alen) < 0) return -EFAULT;
  return 0;
}

/* getpeername/getsockname's answer: a in their (addr, addrlen) arguments. */
static void answer_address(struct sv_call *call, const union shim_addr *a, socklen_t alen) {
  uint64_t addr = call->req->data.args[1], lenp = call->req->data.args[2];
  socklen_t cap;
  int r = read_address_cap(call, lenp, &cap);
  if (r == 0) r = write_address(call, addr, lenp, cap, a, alen);
  r < 0 ? sv_fail(call, -r) : sv_return(call, 0);
}

static void name_call(struct sv_call *call, bool peer) {
  int dup = sv_getfd(call, (int)call->req->data.args[0]);
  if (dup < 0) return sv_continue(call);
  if (sv_incoming_name(call, dup, peer)) { /* relayed from the pod, or bound elsewhere (listen.c) */
    close(dup);
    return;
  }
  uint64_t inode = inode_of(dup, NULL);
  struct sv_sock seen = {0};
  bool known = false;
  if (inode) {
    pthread_mutex_lock(&socks_lock);
    struct sv_sock *s = slot_of(inode, false);
    if (s) {
      seen = *s;
      known = true;
    }
    pthread_mutex_unlock(&socks_lock);
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
    pthread_mutex_lock(&socks_lock);
    struct sv_sock *s = slot_of(inode, false);
    if (s) s->has_peer = s->has_local = false;
    pthread_mutex_unlock(&socks_lock);
    return sv_continue(call);
  }
  shim_log("%s of socket %llu answered", peer ? "getpeername" : "getsockname", (unsigned long long)inode);
  if (peer) answer_address(call, &seen.peer, seen.peer_len);
  else answer_address(call, &seen.local, seen.local_len);
}

void sv_getpeername(struct sv_call *call) { name_call(call, true); }
void sv_getsockname(struct sv_call *call) { name_call(call, false); }

/* ---- datagrams with a destination ---- */

enum route { ROUTE_PASS, ROUTE_RELAY, ROUTE_FAIL };

/* Where a datagram of the socket `dup` for dest goes; ROUTE_FAIL sets *err. */
static enum route route_datagram(int dup, const union shim_addr *dest, int family, union shim_addr *relay,
                                 socklen_t *relay_len, int *err) {
  if (shim_sock_type(dup) != SOCK_DGRAM) return ROUTE_PASS; /* TCP ignores the address */
  uint64_t inode = inode_of(dup, NULL);
  if (!inode) return ROUTE_PASS;
  pthread_mutex_lock(&socks_lock);
  struct sv_sock *s = slot_of(inode, false);
  if (s) {
    for (unsigned i = 0; i < s->nflows; i++) {
      if (!shim_addr_equal(&s->flows[i].dest, dest)) continue;
      bool local = s->flows[i].local;
      *relay = s->flows[i].relay;
      *relay_len = s->flows[i].relay_len;
      pthread_mutex_unlock(&socks_lock);
      return local ? ROUTE_PASS : ROUTE_RELAY;
    }
  }
  pthread_mutex_unlock(&socks_lock);

  struct connect_reply reply;
  if (proto_connect(true, dest, 0, &reply) < 0) {
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
  if (!flow.local) atomic_store(&relayed_udp, true);
  pthread_mutex_lock(&socks_lock);
  s = slot_of(inode, true);
  s->udp = true;
  unsigned at = s->nflows < SV_FLOWS ? s->nflows++ : s->next_victim++ % SV_FLOWS;
  s->flows[at] = flow;
  pthread_mutex_unlock(&socks_lock);
  *relay = flow.relay;
  *relay_len = flow.relay_len;
  return flow.local ? ROUTE_PASS : ROUTE_RELAY;
}

#define SV_MAX_DATAGRAM 65536
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
  if (!read_inet_addr(call, (uint64_t)(uintptr_t)m.msg_name, m.msg_namelen, &dest, &family)) {
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
  if ((a[3] & MSG_FASTOPEN) || !read_inet_addr(call, a[4], a[5], &dest, &family)) return sv_continue(call);
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
  if (!atomic_load(&relayed_udp) || (flags & ~SV_RECV_FLAGS)) return sv_continue(call);
  socklen_t cap;
  if (read_address_cap(call, a[5], &cap) < 0) return sv_continue(call); /* the kernel's EFAULT or EINVAL */
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) return sv_continue(call);
  uint64_t inode = inode_of(dup, NULL);
  bool relayed = false;
  struct sv_sock seen;
  if (inode) {
    pthread_mutex_lock(&socks_lock);
    struct sv_sock *s = slot_of(inode, false);
    if (s && s->udp && (s->nflows || s->has_peer)) {
      seen = *s;
      relayed = true;
    }
    pthread_mutex_unlock(&socks_lock);
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
    else if (sv_write(call, a[1], data, copied) < 0 || write_address(call, a[4], a[5], cap, src, src_len) < 0) r = -EFAULT;
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
