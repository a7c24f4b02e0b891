/*
 * Incoming traffic: the program's TCP listeners.
 *
 * bind(): if the port is taken on this machine (another session's program listens on
 * it), the bind waits: listen() then binds a free port instead (getsockname() keeps
 * reporting the port the program asked for), connect() retries the asked port. listen(): tells the session proxy (op `listen`), which
 * subscribes the pod's port; a refusal (another session steals it) fails listen() with
 * the proxy's errno. accept()/accept4(): a connection relayed by tsmirror comes from
 * loopback; the proxy says which pod client it stands for (op `peer`), and accept(),
 * getpeername() and getsockname() report that client and the pod's address. close() of
 * a subscribed listener unsubscribes (op `unlisten`), only in the process that
 * subscribed it (a forked worker closing its copy does not).
 */
#include "shim.h"

#include <arpa/inet.h>
#include <string.h>

#define SHIM_LISTENERS 128

struct listener {
  int fd;                    /* -1: free slot */
  pid_t pid;                 /* the process that subscribed */
  int asked_port;
  bool subscribed;
  bool bound_elsewhere;      /* bind() found the port taken here: getsockname shows `asked` */
  bool deferred;             /* ...and the real bind waits for listen() or connect() */
  union shim_addr asked;     /* the address the program asked for */
  socklen_t asked_len;
};

static struct listener listeners[SHIM_LISTENERS];
static int nlisteners; /* slots in use, read without the lock as a fast-path hint */
static pthread_mutex_t listeners_lock = PTHREAD_MUTEX_INITIALIZER;

/* Caller holds the lock. */
static struct listener *find_locked(int fd) {
  for (int i = 0; i < SHIM_LISTENERS; i++)
    if (listeners[i].fd == fd && (listeners[i].subscribed || listeners[i].bound_elsewhere)) return &listeners[i];
  return NULL;
}

static struct listener *slot_locked(int fd) {
  struct listener *l = find_locked(fd);
  if (l) return l;
  for (int i = 0; i < SHIM_LISTENERS; i++) {
    if (!listeners[i].subscribed && !listeners[i].bound_elsewhere) {
      memset(&listeners[i], 0, sizeof listeners[i]);
      listeners[i].fd = fd;
      __atomic_add_fetch(&nlisteners, 1, __ATOMIC_RELEASE);
      return &listeners[i];
    }
  }
  return NULL;
}

static void free_locked(struct listener *l) {
  l->subscribed = false;
  l->bound_elsewhere = false;
  l->deferred = false;
  l->fd = -1;
  __atomic_sub_fetch(&nlisteners, 1, __ATOMIC_RELEASE);
}

static bool any_listeners(void) { return __atomic_load_n(&nlisteners, __ATOMIC_ACQUIRE) > 0; }

static int port_of(const union shim_addr *a) {
  return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

static bool is_loopback(const union shim_addr *a) {
  if (a->sa.sa_family == AF_INET) return (ntohl(a->in.sin_addr.s_addr) >> 24) == 127;
  return a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->in6.sin6_addr);
}

SHIM_EXPORT int bind(int fd, __CONST_SOCKADDR_ARG arg, socklen_t len) {
  const struct sockaddr *addr = SHIM_CSA(arg);
  if (!shim_intercepting() || !addr || len < sizeof(sa_family_t) ||
      (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return REAL(bind)(fd, arg, len);
  int saved = errno;
  int r = REAL(bind)(fd, arg, len);
  if (r == 0 || errno != EADDRINUSE) return r;
  int err = errno;
  SHIM_ENTER();
  union shim_addr asked;
  socklen_t asked_len;
  if (shim_sock_type(fd) == SOCK_STREAM && shim_addr_from(addr, len, &asked, &asked_len) &&
      port_of(&asked) != 0) {
    /* Taken here (say, by another session's program). Whether this socket will listen or
     * connect is not known yet: the bind is deferred. listen() binds a free port of the
     * same address (the pod's port still comes to it); connect() tries the asked port
     * again and fails with EADDRINUSE if it is still taken. */
    pthread_mutex_lock(&listeners_lock);
    struct listener *l = slot_locked(fd);
    if (l) {
      l->bound_elsewhere = true;
      l->deferred = true;
      l->asked_port = port_of(&asked);
      memcpy(&l->asked, addr, len < sizeof l->asked ? len : sizeof l->asked);
      l->asked_len = addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
      r = 0;
    }
    pthread_mutex_unlock(&listeners_lock);
    if (r == 0) shim_log("bind: port %d is taken here; binding deferred to listen/connect", port_of(&asked));
  }
  SHIM_LEAVE();
  errno = r == 0 ? saved : err;
  return r;
}

SHIM_HIDDEN int listen_bind_deferred(int fd, bool any_port) {
  if (!any_listeners()) return 0;
  union shim_addr a;
  bool deferred = false;
  pthread_mutex_lock(&listeners_lock);
  struct listener *l = find_locked(fd);
  if (l && l->deferred) {
    a = l->asked;
    deferred = true;
  }
  pthread_mutex_unlock(&listeners_lock);
  if (!deferred) return 0;
  if (any_port) {
    if (a.sa.sa_family == AF_INET) a.in.sin_port = 0;
    else a.in6.sin6_port = 0;
  }
  SHIM_ENTER();
  int r = REAL(bind)(fd, &a.sa, a.sa.sa_family == AF_INET ? sizeof a.in : sizeof a.in6);
  int err = errno;
  SHIM_LEAVE();
  if (r < 0) {
    errno = err;
    return -1;
  }
  pthread_mutex_lock(&listeners_lock);
  l = find_locked(fd);
  if (l) {
    l->deferred = false;
    if (!any_port && !l->subscribed) free_locked(l); /* bound where it asked after all */
  }
  pthread_mutex_unlock(&listeners_lock);
  if (any_port) shim_log("listen: port %d is taken here; listening on a free port instead", port_of(&a) ? port_of(&a) : 0);
  return 0;
}

SHIM_EXPORT int listen(int fd, int backlog) {
  if (!shim_intercepting()) return REAL(listen)(fd, backlog);
  int saved = errno;
  if (listen_bind_deferred(fd, true) < 0) return -1;
  int r = REAL(listen)(fd, backlog);
  if (r < 0) return r;
  SHIM_ENTER();
  union shim_addr me;
  socklen_t me_len = sizeof me;
  if (shim_sock_type(fd) != SOCK_STREAM || REAL(getsockname)(fd, &me.sa, &me_len) < 0 ||
      (me.sa.sa_family != AF_INET && me.sa.sa_family != AF_INET6)) {
    SHIM_LEAVE();
    errno = saved;
    return r;
  }
  int asked = port_of(&me);
  bool already = false;
  pthread_mutex_lock(&listeners_lock);
  struct listener *l = find_locked(fd);
  if (l) {
    if (l->bound_elsewhere) asked = l->asked_port;
    already = l->subscribed;
  }
  pthread_mutex_unlock(&listeners_lock);
  if (!already) {
    struct listen_reply reply;
    if (proto_listen(asked, &me, &reply) < 0) {
      shim_log("listen: session proxy unreachable; port %d stays local", asked);
    } else if (reply.kind == REPLY_ERROR) {
      r = -1;
      saved = reply.err;
    } else if (reply.kind == REPLY_REMOTE) {
      pthread_mutex_lock(&listeners_lock);
      l = slot_locked(fd);
      if (l) {
        l->subscribed = true;
        l->pid = getpid();
        l->asked_port = asked;
      }
      pthread_mutex_unlock(&listeners_lock);
    }
  }
  SHIM_LEAVE();
  errno = saved;
  return r;
}

SHIM_HIDDEN bool listen_is_subscribed(int fd) {
  if (!any_listeners()) return false;
  pthread_mutex_lock(&listeners_lock);
  struct listener *l = find_locked(fd);
  bool yes = l && l->subscribed;
  pthread_mutex_unlock(&listeners_lock);
  return yes;
}

SHIM_HIDDEN void listen_after_accept(int listen_fd, int fd, struct sockaddr *addr, socklen_t cap,
                                     socklen_t *len) {
  int saved = errno;
  SHIM_ENTER();
  union shim_addr peer, me;
  socklen_t peer_len = sizeof peer, me_len = sizeof me;
  if (REAL(getpeername)(fd, &peer.sa, &peer_len) == 0 &&
      REAL(getsockname)(fd, &me.sa, &me_len) == 0) {
    union shim_addr from;
    socklen_t from_len;
    struct peer_reply reply;
    if (shim_addr_from(&peer.sa, peer_len, &from, &from_len) && is_loopback(&from) &&
        proto_peer(&from, port_of(&me), &reply) == 0 && reply.kind == REPLY_REMOTE) {
      struct sock_state st;
      memset(&st, 0, sizeof st);
      st.type = SOCK_STREAM;
      int domain = me.sa.sa_family;
      if (shim_addr_for_domain(&reply.remote, domain, &st.peer, &st.peer_len)) {
        st.has_peer = true;
        st.relay_peer = peer;
        st.relay_peer_len = peer_len;
        if (reply.has_local)
          st.has_local = shim_addr_for_domain(&reply.local, domain, &st.local, &st.local_len);
        fdtable_set_sock(fd, &st);
        if (addr && len) shim_addr_copy_out(&st.peer, st.peer_len, addr, cap, len);
      }
    }
  }
  (void)listen_fd;
  SHIM_LEAVE();
  errno = saved;
}

SHIM_HIDDEN void listen_before_close(int fd) {
  if (!any_listeners()) return;
  int port = -1;
  pthread_mutex_lock(&listeners_lock);
  struct listener *l = find_locked(fd);
  if (l) {
    if (l->subscribed && l->pid == getpid()) port = l->asked_port;
    free_locked(l);
  }
  pthread_mutex_unlock(&listeners_lock);
  if (port > 0) {
    int saved = errno;
    SHIM_ENTER();
    proto_unlisten(port);
    SHIM_LEAVE();
    errno = saved;
  }
}

SHIM_HIDDEN bool listen_sockname(int fd, struct sockaddr *addr, socklen_t cap, socklen_t *len) {
  if (!any_listeners()) return false;
  union shim_addr out;
  socklen_t out_len = 0;
  bool found = false;
  pthread_mutex_lock(&listeners_lock);
  struct listener *l = find_locked(fd);
  if (l && l->bound_elsewhere) {
    out = l->asked;
    out_len = l->asked_len;
    found = true;
  }
  pthread_mutex_unlock(&listeners_lock);
  if (found) shim_addr_copy_out(&out, out_len, addr, cap, len);
  return found;
}

SHIM_HIDDEN void listen_before_close_range(unsigned first, unsigned last) {
  if (!any_listeners()) return;
  int ports[SHIM_LISTENERS];
  int n = 0;
  pthread_mutex_lock(&listeners_lock);
  for (int i = 0; i < SHIM_LISTENERS; i++) {
    struct listener *l = &listeners[i];
    if ((!l->subscribed && !l->bound_elsewhere) || (unsigned)l->fd < first || (unsigned)l->fd > last) continue;
    if (l->subscribed && l->pid == getpid()) ports[n++] = l->asked_port;
    free_locked(l);
  }
  pthread_mutex_unlock(&listeners_lock);
  for (int i = 0; i < n; i++) proto_unlisten(ports[i]);
}
