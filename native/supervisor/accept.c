/*
 * Incoming connections for the supervisor (listen.c has the overview, listen.h the table
 * of known sockets).
 *
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
 */
#include "listen.h"

#include <poll.h>
#include <string.h>

#define MAX_STASHED 64           /* accepted connections waiting for the next accept */
#define ACCEPT_POLL_MS 250       /* a blocking accept checks its thread this often */

struct stashed {
  uint64_t listener_ino;
  int fd;                     /* the supervisor's; -1: free */
  union shim_addr report;     /* what accept reports for it */
  socklen_t report_len;
};

static struct stashed stash[MAX_STASHED] = {[0 ... MAX_STASHED - 1] = {.fd = -1}};
static int nstashed;
/* Serialises the last readiness check and accept4() of blocking accepts, so that two
 * workers woken by one connection do not both accept (the second would block unpolled). */
static pthread_mutex_t accept_lock = PTHREAD_MUTEX_INITIALIZER;

static bool is_loopback(const union shim_addr *a) {
  if (a->sa.sa_family == AF_INET) return (ntohl(a->in.sin_addr.s_addr) >> 24) == 127;
  return a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->in6.sin6_addr);
}

/* ---- accept, accept4 ---- */

static bool subscribed_listener(uint64_t ino) {
  pthread_mutex_lock(&listen_lock);
  struct known *k = listen_find_locked(ino);
  bool yes = k && k->kind == K_LISTENER && k->subscribed;
  pthread_mutex_unlock(&listen_lock);
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
  pthread_mutex_lock(&listen_lock);
  struct known *k = listen_get_locked(ino, K_ACCEPTED);
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
    k->gen = listen_sweep_gen;
  }
  pthread_mutex_unlock(&listen_lock);
}

static int take_stashed(uint64_t listener_ino, union shim_addr *report, socklen_t *report_len) {
  if (__atomic_load_n(&nstashed, __ATOMIC_ACQUIRE) == 0) return -1;
  int fd = -1;
  pthread_mutex_lock(&listen_lock);
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
  pthread_mutex_unlock(&listen_lock);
  return fd;
}

/* Keeps a connection no call could take for the listener's next accept (or drops it when
 * the stash is full). */
static void stash_conn(uint64_t listener_ino, int fd, const union shim_addr *report, socklen_t report_len) {
  bool kept = false;
  pthread_mutex_lock(&listen_lock);
  for (int i = 0; i < MAX_STASHED && !kept; i++) {
    if (stash[i].fd < 0) {
      stash[i] = (struct stashed){listener_ino, fd, *report, report_len};
      __atomic_add_fetch(&nstashed, 1, __ATOMIC_RELEASE);
      kept = true;
    }
  }
  pthread_mutex_unlock(&listen_lock);
  if (!kept) close(fd);
  shim_log("accept: a connection is kept for the listener's next accept%s", kept ? "" : " (no room: closed)");
}

/* The listener is gone (the sweeper, caller holds listen_lock): its kept connections go
 * with it. */
void listen_drop_stashed_locked(uint64_t listener_ino) {
  for (int i = 0; i < MAX_STASHED; i++) {
    if (stash[i].fd >= 0 && stash[i].listener_ino == listener_ino) {
      close(stash[i].fd);
      stash[i].fd = -1;
      __atomic_sub_fetch(&nstashed, 1, __ATOMIC_RELEASE);
    }
  }
}

/* A connection from the listener for a blocking accept: waits in this worker, -errno when
 * the call is gone or accept fails. */
static int accept_blocking(struct sv_call *call, int dup, int flags_cloexec) {
  sv_stop_receiving(); /* another worker receives the next calls */
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
  if (listen_table_empty()) { sv_continue(call); return; }
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
  pthread_mutex_lock(&listen_lock);
  struct known *k = listen_find_locked(ino);
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
  pthread_mutex_unlock(&listen_lock);
  if (!found || !check_relay) return found;
  /* Still the connection the proxy relayed (not a reused inode)? */
  union shim_addr real, a, b;
  socklen_t real_len = sizeof real, al, bl;
  return getpeername(dup, &real.sa, &real_len) == 0 && shim_addr_from(&real.sa, real_len, &a, &al) &&
         shim_addr_from(&relay.sa, sizeof relay, &b, &bl) && shim_addr_equal(&a, &b);
}

bool sv_incoming_name(struct sv_call *call, int dup, bool peer) {
  if (listen_table_empty()) return false;
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
