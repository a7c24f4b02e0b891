/*
 * What the supervisor's incoming-traffic files share (listen.c has the overview): the
 * table of the sockets they know, by inode, and small helpers.
 *
 *   listen.c        the table; bind, listen
 *   accept.c        accept, accept4, connections kept for the next accept;
 *                   getpeername/getsockname of the sockets in the table
 *   listen_sweep.c  the sweeper thread: which sockets still exist
 */
#ifndef TSMIRROR_SV_LISTEN_H
#define TSMIRROR_SV_LISTEN_H

#include "sv.h"

#include <arpa/inet.h>

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

/* The table (listen.c): hash chains of struct known by inode, under listen_lock (which
 * also guards accept.c's connections kept for the next accept). */
#define LISTEN_NBUCKETS 4096
extern struct known *listen_buckets[LISTEN_NBUCKETS];
extern pthread_mutex_t listen_lock;
/* Counts the sweeps: an entry whose gen is not older than a sweep is not judged by it. */
extern uint64_t listen_sweep_gen;
/* K_ACCEPTED entries in the table (a full sweep is done only when there are some). */
extern int listen_naccepted;

/* Whether the table is empty (read without the lock). */
bool listen_table_empty(void);
/* Caller holds the lock. The entry for ino, or NULL. */
struct known *listen_find_locked(uint64_t ino);
/* Caller holds the lock. The entry for ino, made if new; NULL when the table is full. */
struct known *listen_get_locked(uint64_t ino, enum known_kind kind);
/* Caller holds the lock. Unlinks the entry *p and frees it. */
void listen_remove_locked(struct known **p);

/* listen_sweep.c: starts the sweeper thread, once (when a socket is first tracked). */
void listen_start_sweeper(void);
/* accept.c: the listener is gone (caller holds listen_lock): closes the connections kept
 * for its next accept. */
void listen_drop_stashed_locked(uint64_t listener_ino);

static inline int port_of(const union shim_addr *a) {
  return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

static inline uint64_t inode_of(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

/* The socket's domain if it is an AF_INET/AF_INET6 stream socket, else 0. */
static inline int inet_stream_domain(int fd) {
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) return 0;
  len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return 0;
  return domain == AF_INET || domain == AF_INET6 ? domain : 0;
}

#endif
