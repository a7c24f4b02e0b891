/*
 * Incoming traffic for the supervisor (issue 12, "Sockets"): what native/shim/listen.c
 * does for a preloaded program, done from outside for a program no preload reaches. The
 * proxy, the agent and the wire are the same (ops listen, unlisten, peer).
 *
 *   listen.c        the table of known sockets (listen.h: what the three files share);
 *                   bind, listen
 *   accept.c        accept, accept4, connections kept for the next accept;
 *                   getpeername/getsockname of the sockets in the table
 *   listen_sweep.c  the sweeper thread: which sockets still exist
 *
 * bind(): an AF_INET/AF_INET6 stream socket is bound by the supervisor itself, on its
 * duplicate of the program's socket (pidfd_getfd), with the address it read once from the
 * program's memory. If the port is taken on this machine the bind is deferred: listen()
 * binds a free port of the same address instead, connect() (connect.c) tries the asked port
 * again; getsockname() keeps reporting the asked address.
 * listen(): the supervisor listens on the duplicate, then tells the proxy (op `listen`),
 * which subscribes the pod's port before the program's listen() returns; a refusal fails
 * the call with the proxy's errno, as the shim's does.
 * accept()/accept4(), getpeername()/getsockname(): accept.c.
 *
 * Sockets are known by inode (the same socket in every process that shares it), so a
 * forked worker sees its parent's listeners. close() is not notified (every close of
 * every file would pay for it): a sweeper thread (listen_sweep.c) notices the sockets
 * that are gone.
 */
#include "listen.h"

#include <string.h>

#define MAX_KNOWN 65536          /* sockets the table holds; beyond, accept reports loopback */
#define MAX_DEFERRED 256         /* binds waiting for listen/connect (not seen by the sweep) */

struct known *listen_buckets[LISTEN_NBUCKETS];
static int nknown, ndeferred;
int listen_naccepted;
uint64_t listen_sweep_gen;
pthread_mutex_t listen_lock = PTHREAD_MUTEX_INITIALIZER;

bool listen_table_empty(void) { return __atomic_load_n(&nknown, __ATOMIC_ACQUIRE) == 0; }

static struct known **slot_of(uint64_t ino) {
  struct known **p = &listen_buckets[(ino * 0x9E3779B97F4A7C15ull) >> 52];
  while (*p && (*p)->ino != ino) p = &(*p)->next;
  return p;
}

/* Caller holds the lock. */
struct known *listen_find_locked(uint64_t ino) { return *slot_of(ino); }

void listen_remove_locked(struct known **p) {
  struct known *k = *p;
  *p = k->next;
  if (k->kind == K_LISTENER && k->deferred) ndeferred--;
  if (k->kind == K_ACCEPTED) listen_naccepted--;
  free(k);
  __atomic_sub_fetch(&nknown, 1, __ATOMIC_RELEASE);
}

/* Caller holds the lock. The entry for ino, made if new; NULL when the table is full. */
struct known *listen_get_locked(uint64_t ino, enum known_kind kind) {
  struct known **p = slot_of(ino);
  if (*p) {
    if ((*p)->kind == kind) return *p;
    listen_remove_locked(p); /* an inode reused by another kind of socket: the old one is gone */
    p = slot_of(ino);
  }
  if (nknown >= MAX_KNOWN) return NULL;
  struct known *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->ino = ino;
  k->kind = kind;
  k->gen = listen_sweep_gen;
  if (kind == K_ACCEPTED) listen_naccepted++;
  *p = k;
  __atomic_add_fetch(&nknown, 1, __ATOMIC_RELEASE);
  return k;
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
  pthread_mutex_lock(&listen_lock);
  if (ino && ndeferred < MAX_DEFERRED) {
    struct known *k = listen_get_locked(ino, K_LISTENER);
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
  pthread_mutex_unlock(&listen_lock);
  if (!deferred) { sv_fail(call, EADDRINUSE); return; }
  listen_start_sweeper();
  shim_log("bind: port %d is taken here; binding deferred to listen/connect", port_of(&asked));
  sv_return(call, 0);
}

/* The bind deferred for this socket, now: any_port for listen (a free port of the asked
 * address), else the asked port (connect). 0 (nothing deferred, or bound), or -errno. */
static int bind_deferred(int dup, uint64_t ino, bool any_port) {
  if (listen_table_empty() || !ino) return 0;
  union shim_addr to;
  bool deferred = false;
  pthread_mutex_lock(&listen_lock);
  struct known *k = listen_find_locked(ino);
  if (k && k->kind == K_LISTENER && k->deferred) {
    to = k->asked;
    deferred = true;
  }
  pthread_mutex_unlock(&listen_lock);
  if (!deferred) return 0;
  if (any_port) {
    if (to.sa.sa_family == AF_INET) to.in.sin_port = 0;
    else to.in6.sin6_port = 0;
  }
  if (bind(dup, &to.sa, to.sa.sa_family == AF_INET ? sizeof to.in : sizeof to.in6) < 0) return -errno;
  pthread_mutex_lock(&listen_lock);
  struct known **p = slot_of(ino);
  if (*p && (*p)->kind == K_LISTENER && (*p)->deferred) {
    (*p)->deferred = false;
    ndeferred--;
    /* Bound but not listening yet, which a sweep under way would take for gone. */
    (*p)->gen = listen_sweep_gen;
    if (!any_port) listen_remove_locked(p); /* bound where it asked after all */
  }
  pthread_mutex_unlock(&listen_lock);
  return 0;
}

int sv_incoming_bind_deferred(int dup) {
  if (listen_table_empty()) return 0;
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
  pthread_mutex_lock(&listen_lock);
  struct known *k = ino ? listen_find_locked(ino) : NULL;
  if (k && k->kind == K_LISTENER) {
    if (k->bound_elsewhere) asked = k->asked_port;
    already = k->subscribed;
  }
  pthread_mutex_unlock(&listen_lock);
  if (already) { sv_return(call, 0); return; } /* listen() again on a listener: a new backlog */
  struct listen_reply reply;
  if (proto_listen(asked, &me, &reply) < 0) {
    shim_log("listen: session proxy unreachable; port %d stays local", asked);
  } else if (reply.kind == REPLY_ERROR) {
    sv_fail(call, reply.err);
    return;
  } else if (reply.kind == REPLY_REMOTE) {
    bool kept = false;
    pthread_mutex_lock(&listen_lock);
    k = ino ? listen_get_locked(ino, K_LISTENER) : NULL;
    if (k) {
      k->subscribed = true;
      k->asked_port = asked;
      k->gen = listen_sweep_gen; /* judged by sweeps that start from now on */
      kept = true;
    }
    pthread_mutex_unlock(&listen_lock);
    if (kept) listen_start_sweeper();
    else {
      proto_unlisten(asked); /* cannot track it: better local than never given back */
      shim_log("listen: too many sockets tracked; port %d stays local", asked);
    }
  }
  sv_return(call, 0);
}
