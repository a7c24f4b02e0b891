/*
 * Incoming traffic for the supervisor (issue 12, "Sockets"): what native/shim/listen.c
 * does for a preloaded program, done from outside for a program no preload reaches. The
 * proxy, the agent and the wire are the same (ops listen, unlisten, peer).
 *
 * bind(): an AF_INET/AF_INET6 stream socket is bound by the supervisor itself, on its
 * duplicate of the program's socket (pidfd_getfd), with the address it read once from the
 * program's memory. If the port is taken on this machine the bind is deferred: listen()
 * binds a free port of the same address instead, connect() (connect.c) tries the asked port
 * again; getsockname() keeps reporting the asked address.
 * listen(): the supervisor listens on the duplicate, then tells the proxy (op `listen`),
 * which subscribes the pod's port before the program's listen() returns; a refusal fails
 * the call with the proxy's errno, as the shim's does.
 * accept()/accept4() on a subscribed listener: the supervisor accepts on its duplicate,
 * asks the proxy who a loopback peer stands for (op `peer`), writes the pod client into
 * the program's addr/addrlen and installs the connection in the program
 * (SECCOMP_ADDFD_FLAG_SEND, O_CLOEXEC / O_NONBLOCK as asked). A non-blocking listener
 * (Go, node) answers at once (EAGAIN when nothing waits); a blocking one (busybox httpd)
 * waits in this worker thread, polling, and gives up as soon as the calling thread is
 * gone (the notify.c pool starts another worker, so nothing else waits for it). A
 * connection accepted for a call that can no longer take it (its thread died, the
 * program is out of descriptors) is kept for the listener's next accept, never dropped.
 * Accepts on any other socket continue in the kernel untouched.
 * getpeername()/getsockname() (connect.c asks sv_incoming_name first):
 * a relayed connection reports the pod client and the pod address it reached; a listener
 * bound elsewhere reports the port it asked for.
 *
 * Sockets are known by inode (the same socket in every process that shares it), so a
 * forked worker sees its parent's listeners. close() is not notified (every close of
 * every file would pay for it): a sweeper thread asks the kernel which TCP sockets exist
 * (NETLINK_SOCK_DIAG) every SWEEP_MS while the table is not empty, unsubscribes a listener
 * once its socket stopped listening (closed in every process that held it, close_range,
 * exec with FD_CLOEXEC, exit) and, every FULL_SWEEP_EVERY rounds, forgets relayed
 * connections that are gone (until then a stale entry is harmless: every answer from it
 * is checked against the socket's real peer). A forked worker closing its copy therefore
 * never unsubscribes, as with the shim.
 */
#include "sv.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#define SWEEP_MS 500
#define FULL_SWEEP_EVERY 20      /* relayed connections are forgotten every 10 s */
#define MAX_KNOWN 65536          /* sockets the table holds; beyond, accept reports loopback */
#define MAX_DEFERRED 256         /* binds waiting for listen/connect (not seen by the sweep) */
#define MAX_STASHED 64           /* accepted connections waiting for the next accept */
#define ACCEPT_POLL_MS 250       /* a blocking accept checks its thread this often */

enum known_kind { K_LISTENER = 1, K_ACCEPTED };

struct known {
  uint64_t ino;
  uint64_t gen;               /* sweep generation when added: a sweep judges only older ones */
  enum known_kind kind;
  /* K_LISTENER */
  int asked_port;
  bool subscribed;
  bool bound_elsewhere;       /* getsockname shows `asked` */
  bool deferred;              /* ...and the real bind waits for listen() or connect() */
  union shim_addr asked;
  socklen_t asked_len;
  /* K_ACCEPTED: what accept/getpeername/getsockname report, and where it really is */
  union shim_addr peer, local, relay_peer;
  socklen_t peer_len, local_len, relay_peer_len;
  bool has_local;
  struct known *next;         /* hash chain */
};

struct stashed {
  uint64_t listener_ino;
  int fd;                     /* the supervisor's; -1: free */
  union shim_addr report;     /* what accept reports for it */
  socklen_t report_len;
};

#define NBUCKETS 4096
static struct known *buckets[NBUCKETS];
static int nknown, ndeferred, naccepted;
static uint64_t sweep_gen;
static struct stashed stash[MAX_STASHED] = {[0 ... MAX_STASHED - 1] = {.fd = -1}};
static int nstashed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t sweeper_once = PTHREAD_ONCE_INIT;
/* Serialises the last readiness check and accept4() of blocking accepts, so that two
 * workers woken by one connection do not both accept (the second would block unpolled). */
static pthread_mutex_t accept_lock = PTHREAD_MUTEX_INITIALIZER;

static bool table_empty(void) { return __atomic_load_n(&nknown, __ATOMIC_ACQUIRE) == 0; }

static struct known **slot_of(uint64_t ino) {
  struct known **p = &buckets[(ino * 0x9E3779B97F4A7C15ull) >> 52];
  while (*p && (*p)->ino != ino) p = &(*p)->next;
  return p;
}

/* Caller holds the lock. */
static struct known *find_locked(uint64_t ino) { return *slot_of(ino); }

static void remove_locked(struct known **p) {
  struct known *k = *p;
  *p = k->next;
  if (k->kind == K_LISTENER && k->deferred) ndeferred--;
  if (k->kind == K_ACCEPTED) naccepted--;
  free(k);
  __atomic_sub_fetch(&nknown, 1, __ATOMIC_RELEASE);
}

static void *sweeper(void *arg);

static void start_sweeper(void) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t t;
  if (pthread_create(&t, &attr, sweeper, NULL) != 0) shim_log("listen: cannot start the sweeper thread");
  pthread_attr_destroy(&attr);
}

/* Caller holds the lock. The entry for ino, made if new; NULL when the table is full. */
static struct known *get_locked(uint64_t ino, enum known_kind kind) {
  struct known **p = slot_of(ino);
  if (*p) {
    if ((*p)->kind == kind) return *p;
    remove_locked(p); /* an inode reused by another kind of socket: the old one is gone */
    p = slot_of(ino);
  }
  if (nknown >= MAX_KNOWN) return NULL;
  struct known *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->ino = ino;
  k->kind = kind;
  k->gen = sweep_gen;
  if (kind == K_ACCEPTED) naccepted++;
  *p = k;
  __atomic_add_fetch(&nknown, 1, __ATOMIC_RELEASE);
  return k;
}

static int port_of(const union shim_addr *a) {
  return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

static bool is_loopback(const union shim_addr *a) {
  if (a->sa.sa_family == AF_INET) return (ntohl(a->in.sin_addr.s_addr) >> 24) == 127;
  return a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->in6.sin6_addr);
}

static uint64_t inode_of(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

/* The socket's domain if it is an AF_INET/AF_INET6 stream socket, else 0. */
static int inet_stream_domain(int fd) {
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) return 0;
  len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return 0;
  return domain == AF_INET || domain == AF_INET6 ? domain : 0;
}

/* ---- bind ---- */

void sv_bind(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int fd = (int)a[0];
  uint64_t len = (uint32_t)a[2];
  /* Not an inet address, or one the kernel will refuse anyway: the kernel answers. */
  if (a[1] == 0 || len < sizeof(struct sockaddr_in) || len > sizeof(struct sockaddr_storage)) { sv_continue(call); return; }
  struct sockaddr_storage raw;
  if (sv_read(call, a[1], &raw, (size_t)len) < 0) { sv_continue(call); return; }
  union shim_addr asked;
  socklen_t asked_len;
  if ((raw.ss_family != AF_INET && raw.ss_family != AF_INET6) ||
      !shim_addr_from((struct sockaddr *)&raw, (socklen_t)len, &asked, &asked_len) || port_of(&asked) == 0) {
    sv_continue(call);
    return;
  }
  int dup = sv_getfd(call, fd);
  if (dup < 0) { sv_continue(call); return; }
  if (!inet_stream_domain(dup) || !sv_valid(call)) {
    close(dup);
    sv_continue(call);
    return;
  }
  /* The address as read once: the kernel never reads the program's memory again. */
  if (bind(dup, (struct sockaddr *)&raw, (socklen_t)len) == 0) {
    close(dup);
    sv_return(call, 0);
    return;
  }
  int err = errno;
  if (err == EACCES || err == EPERM) {
    /* A privileged port: the program's own credentials decide, not the supervisor's. */
    close(dup);
    sv_continue(call);
    return;
  }
  if (err != EADDRINUSE) {
    close(dup);
    sv_fail(call, err);
    return;
  }
  /* Taken here (say, by another session's program). Whether this socket will listen or
   * connect is not known yet: the bind is deferred (see the top of this file). */
  uint64_t ino = inode_of(dup);
  close(dup);
  bool deferred = false;
  pthread_mutex_lock(&lock);
  if (ino && ndeferred < MAX_DEFERRED) {
    struct known *k = get_locked(ino, K_LISTENER);
    if (k) {
      if (!k->deferred) ndeferred++;
      k->bound_elsewhere = true;
      k->deferred = true;
      k->asked_port = port_of(&asked);
      memcpy(&k->asked, &raw, raw.ss_family == AF_INET ? sizeof k->asked.in : sizeof k->asked.in6);
      k->asked_len = raw.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
      deferred = true;
    }
  }
  pthread_mutex_unlock(&lock);
  if (!deferred) { sv_fail(call, EADDRINUSE); return; }
  pthread_once(&sweeper_once, start_sweeper);
  shim_log("bind: port %d is taken here; binding deferred to listen/connect", port_of(&asked));
  sv_return(call, 0);
}

/* The bind deferred for this socket, now: any_port for listen (a free port of the asked
 * address), else the asked port (connect). 0 (nothing deferred, or bound), or -errno. */
static int bind_deferred(int dup, uint64_t ino, bool any_port) {
  if (table_empty() || !ino) return 0;
  union shim_addr to;
  bool deferred = false;
  pthread_mutex_lock(&lock);
  struct known *k = find_locked(ino);
  if (k && k->kind == K_LISTENER && k->deferred) {
    to = k->asked;
    deferred = true;
  }
  pthread_mutex_unlock(&lock);
  if (!deferred) return 0;
  if (any_port) {
    if (to.sa.sa_family == AF_INET) to.in.sin_port = 0;
    else to.in6.sin6_port = 0;
  }
  if (bind(dup, &to.sa, to.sa.sa_family == AF_INET ? sizeof to.in : sizeof to.in6) < 0) return -errno;
  pthread_mutex_lock(&lock);
  struct known **p = slot_of(ino);
  if (*p && (*p)->kind == K_LISTENER && (*p)->deferred) {
    (*p)->deferred = false;
    ndeferred--;
    /* Bound but not listening yet, which a sweep under way would take for gone. */
    (*p)->gen = sweep_gen;
    if (!any_port) remove_locked(p); /* bound where it asked after all */
  }
  pthread_mutex_unlock(&lock);
  return 0;
}

int sv_incoming_bind_deferred(int dup) {
  if (table_empty()) return 0;
  return bind_deferred(dup, inode_of(dup), false);
}

/* ---- listen ---- */

void sv_listen(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) { sv_continue(call); return; }
  if (!inet_stream_domain(dup) || !sv_valid(call)) {
    close(dup);
    sv_continue(call);
    return;
  }
  uint64_t ino = inode_of(dup);
  int r = bind_deferred(dup, ino, true);
  if (r < 0) {
    close(dup);
    sv_fail(call, -r);
    return;
  }
  if (listen(dup, (int)a[1]) < 0) {
    int err = errno;
    close(dup);
    sv_fail(call, err);
    return;
  }
  union shim_addr me;
  socklen_t me_len = sizeof me;
  if (getsockname(dup, &me.sa, &me_len) < 0 || (me.sa.sa_family != AF_INET && me.sa.sa_family != AF_INET6)) {
    close(dup);
    sv_return(call, 0);
    return;
  }
  close(dup);
  int asked = port_of(&me);
  bool already = false;
  pthread_mutex_lock(&lock);
  struct known *k = ino ? find_locked(ino) : NULL;
  if (k && k->kind == K_LISTENER) {
    if (k->bound_elsewhere) asked = k->asked_port;
    already = k->subscribed;
  }
  pthread_mutex_unlock(&lock);
  if (already) { sv_return(call, 0); return; } /* listen() again on a listener: a new backlog */
  struct listen_reply reply;
  if (proto_listen(asked, &me, &reply) < 0) {
    shim_log("listen: session proxy unreachable; port %d stays local", asked);
  } else if (reply.kind == REPLY_ERROR) {
    sv_fail(call, reply.err);
    return;
  } else if (reply.kind == REPLY_REMOTE) {
    bool kept = false;
    pthread_mutex_lock(&lock);
    k = ino ? get_locked(ino, K_LISTENER) : NULL;
    if (k) {
      k->subscribed = true;
      k->asked_port = asked;
      k->gen = sweep_gen; /* judged by sweeps that start from now on */
      kept = true;
    }
    pthread_mutex_unlock(&lock);
    if (kept) pthread_once(&sweeper_once, start_sweeper);
    else {
      proto_unlisten(asked); /* cannot track it: better local than never given back */
      shim_log("listen: too many sockets tracked; port %d stays local", asked);
    }
  }
  sv_return(call, 0);
}

/* ---- accept, accept4 ---- */

static bool subscribed_listener(uint64_t ino) {
  pthread_mutex_lock(&lock);
  struct known *k = find_locked(ino);
  bool yes = k && k->kind == K_LISTENER && k->subscribed;
  pthread_mutex_unlock(&lock);
  return yes;
}

/* What accept reports for a connection just accepted on a subscribed listener of
 * `domain`: the pod client if the proxy relayed it (remembered for getpeername and
 * getsockname), else its real peer. */
static void who_is_it(int conn, int domain, union shim_addr *report, socklen_t *report_len) {
  union shim_addr peer, me, from;
  socklen_t peer_len = sizeof peer, me_len = sizeof me, from_len;
  if (getpeername(conn, &peer.sa, &peer_len) < 0 || getsockname(conn, &me.sa, &me_len) < 0) {
    memset(report, 0, sizeof *report);
    *report_len = 0;
    return;
  }
  *report = peer;
  *report_len = peer_len;
  struct peer_reply reply;
  if (!shim_addr_from(&peer.sa, peer_len, &from, &from_len) || !is_loopback(&from) ||
      proto_peer(&from, port_of(&me), &reply) < 0 || reply.kind != REPLY_REMOTE)
    return;
  union shim_addr pod_peer, pod_local;
  socklen_t pod_peer_len, pod_local_len = 0;
  if (!shim_addr_for_domain(&reply.remote, domain, &pod_peer, &pod_peer_len)) return;
  bool has_local = reply.has_local && shim_addr_for_domain(&reply.local, domain, &pod_local, &pod_local_len);
  *report = pod_peer;
  *report_len = pod_peer_len;
  uint64_t ino = inode_of(conn);
  if (!ino) return;
  pthread_mutex_lock(&lock);
  struct known *k = get_locked(ino, K_ACCEPTED);
  if (k) {
    k->peer = pod_peer;
    k->peer_len = pod_peer_len;
    k->has_local = has_local;
    if (has_local) {
      k->local = pod_local;
      k->local_len = pod_local_len;
    }
    k->relay_peer = peer;
    k->relay_peer_len = peer_len;
    k->gen = sweep_gen;
  }
  pthread_mutex_unlock(&lock);
}

static int take_stashed(uint64_t listener_ino, union shim_addr *report, socklen_t *report_len) {
  if (__atomic_load_n(&nstashed, __ATOMIC_ACQUIRE) == 0) return -1;
  int fd = -1;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_STASHED; i++) {
    if (stash[i].fd >= 0 && stash[i].listener_ino == listener_ino) {
      fd = stash[i].fd;
      *report = stash[i].report;
      *report_len = stash[i].report_len;
      stash[i].fd = -1;
      __atomic_sub_fetch(&nstashed, 1, __ATOMIC_RELEASE);
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  return fd;
}

/* Keeps a connection no call could take for the listener's next accept (or drops it when
 * the stash is full). */
static void stash_conn(uint64_t listener_ino, int fd, const union shim_addr *report, socklen_t report_len) {
  bool kept = false;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < MAX_STASHED && !kept; i++) {
    if (stash[i].fd < 0) {
      stash[i] = (struct stashed){listener_ino, fd, *report, report_len};
      __atomic_add_fetch(&nstashed, 1, __ATOMIC_RELEASE);
      kept = true;
    }
  }
  pthread_mutex_unlock(&lock);
  if (!kept) close(fd);
  shim_log("accept: a connection is kept for the listener's next accept%s", kept ? "" : " (no room: closed)");
}


/* A connection from the listener for a blocking accept: waits in this worker, -errno when
 * the call is gone or accept fails. */
static int accept_blocking(struct sv_call *call, int dup, int flags_cloexec) {
  for (;;) {
    struct pollfd p = {dup, POLLIN, 0};
    int n = poll(&p, 1, ACCEPT_POLL_MS);
    if (!sv_valid(call)) return -EINTR;
    if (n < 0 && errno != EINTR) return -errno;
    if (n <= 0) continue;
    pthread_mutex_lock(&accept_lock);
    int fd = -EAGAIN;
    p.revents = 0;
    /* POLLIN: a connection waits. POLLHUP/POLLERR: the socket stopped listening (a
     * shutdown() to wake the acceptor), where accept fails at once as the kernel's would. */
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
      fd = accept4(dup, NULL, NULL, flags_cloexec);
      if (fd < 0) fd = -errno;
    }
    pthread_mutex_unlock(&accept_lock);
    if (fd >= 0) return fd;
    if (fd != -EAGAIN && fd != -EWOULDBLOCK && fd != -ECONNABORTED && fd != -EINTR) return fd;
    /* The listener became non-blocking meanwhile, or the client gave up: wait on. */
  }
}

static void accept_common(struct sv_call *call, int flags) {
  const __u64 *a = call->req->data.args;
  if (table_empty()) { sv_continue(call); return; }
  int dup = sv_getfd(call, (int)a[0]);
  if (dup < 0) { sv_continue(call); return; }
  uint64_t ino = inode_of(dup);
  int domain = ino && subscribed_listener(ino) ? inet_stream_domain(dup) : 0;
  if (!domain) {
    close(dup);
    sv_continue(call);
    return;
  }
  if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) {
    close(dup);
    sv_fail(call, EINVAL);
    return;
  }
  /* addr/addrlen are checked before a connection is taken, so a bad pointer costs none. */
  uint64_t addr = a[1], lenp = a[2];
  int cap = 0;
  if (addr) {
    if (!lenp || sv_read(call, lenp, &cap, sizeof cap) < 0) {
      close(dup);
      sv_fail(call, EFAULT);
      return;
    }
    if (cap < 0) {
      close(dup);
      sv_fail(call, EINVAL);
      return;
    }
  }
  union shim_addr report;
  socklen_t report_len = 0;
  int conn = take_stashed(ino, &report, &report_len);
  if (conn < 0) {
    int fl = fcntl(dup, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK)) {
      conn = accept4(dup, NULL, NULL, SOCK_CLOEXEC);
      if (conn < 0) conn = -errno;
    } else {
      conn = accept_blocking(call, dup, SOCK_CLOEXEC);
    }
    if (conn < 0) {
      close(dup);
      if (conn == -EINTR && !sv_valid(call)) return; /* its thread is gone: nothing to answer */
      sv_fail(call, -conn);
      return;
    }
    who_is_it(conn, domain, &report, &report_len);
  }
  close(dup);
  if (flags & SOCK_NONBLOCK) {
    int fl = fcntl(conn, F_GETFL);
    if (fl >= 0) fcntl(conn, F_SETFL, fl | O_NONBLOCK);
  } else {
    int fl = fcntl(conn, F_GETFL); /* a stashed one was made for another call's flags */
    if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(conn, F_SETFL, fl & ~O_NONBLOCK);
  }
  if (addr) {
    socklen_t out_len = report_len;
    if (sv_write(call, lenp, &out_len, sizeof out_len) < 0 ||
        (report_len && cap && sv_write(call, addr, &report, (size_t)cap < report_len ? (size_t)cap : report_len) < 0)) {
      /* The kernel drops the connection in this case; the next accept gets it instead. */
      stash_conn(ino, conn, &report, report_len);
      sv_fail(call, EFAULT);
      return;
    }
  }
  int r = sv_valid(call) ? sv_addfd_send(call, conn, (flags & SOCK_CLOEXEC) != 0) : -ENOENT;
  if (r < 0) {
    stash_conn(ino, conn, &report, report_len);
    if (r != -ENOENT) sv_fail(call, -r); /* EMFILE and the like */
    return;
  }
  close(conn);
}

void sv_accept(struct sv_call *call) { accept_common(call, 0); }
void sv_accept4(struct sv_call *call) { accept_common(call, (int)call->req->data.args[3]); }

/* ---- getpeername, getsockname (asked by connect.c) ---- */

/* What getpeername (peer) / getsockname report for the socket dup, if listen.c knows it. */
static bool incoming_addr(int dup, bool peer, union shim_addr *out, socklen_t *len) {
  uint64_t ino = inode_of(dup);
  if (!ino) return false;
  union shim_addr relay;
  bool found = false, check_relay = false;
  pthread_mutex_lock(&lock);
  struct known *k = find_locked(ino);
  if (k && peer && k->kind == K_ACCEPTED) {
    *out = k->peer;
    *len = k->peer_len;
    relay = k->relay_peer;
    found = check_relay = true;
  } else if (k && !peer && k->kind == K_LISTENER && k->bound_elsewhere) {
    *out = k->asked;
    *len = k->asked_len;
    found = true;
  } else if (k && !peer && k->kind == K_ACCEPTED && k->has_local) {
    *out = k->local;
    *len = k->local_len;
    relay = k->relay_peer;
    found = check_relay = true;
  }
  pthread_mutex_unlock(&lock);
  if (!found || !check_relay) return found;
  /* Still the connection the proxy relayed (not a reused inode)? */
  union shim_addr real, a, b;
  socklen_t real_len = sizeof real, al, bl;
  return getpeername(dup, &real.sa, &real_len) == 0 && shim_addr_from(&real.sa, real_len, &a, &al) &&
         shim_addr_from(&relay.sa, sizeof relay, &b, &bl) && shim_addr_equal(&a, &b);
}

bool sv_incoming_name(struct sv_call *call, int dup, bool peer) {
  if (table_empty()) return false;
  const __u64 *a = call->req->data.args;
  int own = dup < 0 ? sv_getfd(call, (int)a[0]) : -1;
  if (dup < 0 && own < 0) return false;
  union shim_addr out;
  socklen_t out_len = 0;
  bool found = incoming_addr(dup < 0 ? own : dup, peer, &out, &out_len);
  if (own >= 0) close(own);
  if (!found) return false;
  /* The kernel's convention: at most *addrlen bytes written, the full length reported. */
  int cap;
  if (!a[2] || sv_read(call, a[2], &cap, sizeof cap) < 0) {
    sv_fail(call, EFAULT);
    return true;
  }
  if (cap < 0) {
    sv_fail(call, EINVAL);
    return true;
  }
  size_t n = (size_t)cap < out_len ? (size_t)cap : out_len;
  if ((n && sv_write(call, a[1], &out, n) < 0) || sv_write(call, a[2], &out_len, sizeof out_len) < 0) {
    sv_fail(call, EFAULT);
    return true;
  }
  sv_return(call, 0);
  return true;
}

/* ---- the sweeper: which sockets still exist ---- */

struct live {
  uint64_t ino;
  bool listening;
};

static int cmp_live(const void *x, const void *y) {
  uint64_t a = ((const struct live *)x)->ino, b = ((const struct live *)y)->ino;
  return a < b ? -1 : a > b;
}

/* Appends every TCP socket of `family` in this network namespace; -1 if the kernel could
 * not be asked (then nothing is judged). */
static int dump_family(int nl, int family, uint32_t states, struct live **v, size_t *n, size_t *cap) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = (uint8_t)family;
  req.r.sdiag_protocol = IPPROTO_TCP;
  req.r.idiag_states = states;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(nl, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -1;
  static char buf[32768]; /* the sweeper thread's */
  for (;;) {
    ssize_t got = recv(nl, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)got); h = NLMSG_NEXT(h, got)) {
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) return -1;
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) continue;
      const struct inet_diag_msg *m = NLMSG_DATA(h);
      if (!m->idiag_inode) continue;
      if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        struct live *nv = realloc(*v, nc * sizeof *nv);
        if (!nv) return -1;
        *v = nv;
        *cap = nc;
      }
      (*v)[(*n)++] = (struct live){m->idiag_inode, m->idiag_state == TCP_LISTEN};
    }
  }
}

/* One look at which sockets exist. full: every TCP socket (judges relayed connections
 * too); else only listening ones (judges only listeners: cheap, done often). */
static void sweep_once(int nl, bool full) {
  pthread_mutex_lock(&lock);
  uint64_t gen = ++sweep_gen; /* entries added from now on are not judged by this dump */
  if (!naccepted) full = false;
  pthread_mutex_unlock(&lock);
  /* TIME_WAIT and SYN_RECV entries have no socket (inode 0). */
  uint32_t states = full ? ~0u & ~(1u << TCP_TIME_WAIT) & ~(1u << TCP_SYN_RECV) : 1u << TCP_LISTEN;
  struct live *v = NULL;
  size_t n = 0, cap = 0;
  if (dump_family(nl, AF_INET, states, &v, &n, &cap) < 0 || dump_family(nl, AF_INET6, states, &v, &n, &cap) < 0) {
    static bool told;
    if (!told) shim_log("listen: cannot list this machine's TCP sockets (NETLINK_SOCK_DIAG): %s; closed listeners stay subscribed", strerror(errno));
    told = true;
    free(v);
    return;
  }
  qsort(v, n, sizeof *v, cmp_live);
  int ports[256];
  int nports = 0;
  pthread_mutex_lock(&lock);
  for (size_t b = 0; b < NBUCKETS; b++) {
    struct known **p = &buckets[b];
    while (*p) {
      struct known *k = *p;
      bool judge = k->gen < gen && (k->kind == K_LISTENER ? !k->deferred : full);
      struct live key = {k->ino, false};
      const struct live *l = judge ? bsearch(&key, v, n, sizeof *v, cmp_live) : NULL;
      bool gone = judge && (!l || (k->kind == K_LISTENER && k->subscribed && !l->listening));
      if (!gone) {
        p = &k->next;
        continue;
      }
      if (k->kind == K_LISTENER && k->subscribed) {
        if (nports == (int)(sizeof ports / sizeof ports[0])) { /* the next sweep does the rest */
          p = &k->next;
          continue;
        }
        ports[nports++] = k->asked_port;
      }
      if (k->kind == K_LISTENER) {
        /* its kept connections go with it */
        for (int i = 0; i < MAX_STASHED; i++) {
          if (stash[i].fd >= 0 && stash[i].listener_ino == k->ino) {
            close(stash[i].fd);
            stash[i].fd = -1;
            __atomic_sub_fetch(&nstashed, 1, __ATOMIC_RELEASE);
          }
        }
      }
      remove_locked(p);
    }
  }
  pthread_mutex_unlock(&lock);
  free(v);
  for (int i = 0; i < nports; i++) {
    shim_log("listen: the listener of port %d is closed; unsubscribing", ports[i]);
    proto_unlisten(ports[i]);
  }
}

static void *sweeper(void *arg) {
  (void)arg;
  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) {
    sv_error("tsmirror: cannot watch the program's listeners (NETLINK_SOCK_DIAG: %s); a closed listener keeps the pod's port until the program ends", strerror(errno));
    return NULL;
  }
  struct timeval tv = {2, 0};
  setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (unsigned round = 1;; round++) {
    struct timespec ts = {0, SWEEP_MS * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    if (!table_empty()) sweep_once(nl, round % FULL_SWEEP_EVERY == 0);
  }
  return NULL;
}
