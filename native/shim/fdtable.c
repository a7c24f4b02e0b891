/*
 * Per-fd state, indexed by fd: what connect() rewrote (for getpeername/getsockname and
 * UDP source rewriting) and which fds belong to the shim itself. Two levels so that a
 * high fd costs one chunk, not a table sized to RLIMIT_NOFILE. The mutex is held only
 * for table reads and writes, never across a system call that can block.
 */
#include "shim.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_BITS 10
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 1024u /* fds up to 1M, the kernel's default nr_open */

struct fd_entry {
  bool shim;
  dev_t shim_dev; /* a shim fd's identity (fstat when marked): a raw close_range or a */
  ino_t shim_ino; /* closefrom may close it unseen, and the number go to the program */
  struct sock_state *sock;
};

static struct fd_entry *chunks[MAX_CHUNKS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

SHIM_HIDDEN void fdtable_lock(void) { pthread_mutex_lock(&table_lock); }
SHIM_HIDDEN void fdtable_unlock(void) { pthread_mutex_unlock(&table_lock); }

/* Caller holds the lock. */
static struct fd_entry *entry(int fd, bool create) {
  if (fd < 0 || (unsigned)fd >= CHUNK_SIZE * MAX_CHUNKS) return NULL;
  unsigned c = (unsigned)fd >> CHUNK_BITS;
  if (!chunks[c]) {
    if (!create) return NULL;
    chunks[c] = calloc(CHUNK_SIZE, sizeof(struct fd_entry));
    if (!chunks[c]) return NULL;
  }
  return &chunks[c][(unsigned)fd & (CHUNK_SIZE - 1)];
}

/* Lock-free hint: most fds never had state. Chunks are never freed. */
static bool maybe_present(int fd) {
  if (fd < 0 || (unsigned)fd >= CHUNK_SIZE * MAX_CHUNKS) return false;
  return __atomic_load_n(&chunks[(unsigned)fd >> CHUNK_BITS], __ATOMIC_ACQUIRE) != NULL;
}

SHIM_HIDDEN void fdtable_clear(int fd) {
  if (!maybe_present(fd)) return;
  struct sock_state *old = NULL;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  if (e) {
    old = e->sock;
    e->sock = NULL;
  }
  fdtable_unlock();
  free(old);
}

SHIM_HIDDEN bool fdtable_before_close(int fd) {
  if (!maybe_present(fd)) return false;
  if (fdtable_is_shim(fd)) return true;
  fdtable_clear(fd);
  return false;
}

SHIM_HIDDEN void fdtable_clear_range(unsigned first, unsigned last) {
  if (last >= CHUNK_SIZE * MAX_CHUNKS) last = CHUNK_SIZE * MAX_CHUNKS - 1;
  if (first > last) return;
  fdtable_lock();
  for (unsigned c = first >> CHUNK_BITS; c <= last >> CHUNK_BITS; c++) {
    if (!chunks[c]) continue;
    unsigned lo = c << CHUNK_BITS, hi = lo + CHUNK_SIZE - 1;
    if (lo < first) lo = first;
    if (hi > last) hi = last;
    for (unsigned fd = lo; fd <= hi; fd++) {
      struct fd_entry *e = &chunks[c][fd & (CHUNK_SIZE - 1)];
      if (e->sock && !e->shim) {
        free(e->sock);
        e->sock = NULL;
      }
    }
  }
  fdtable_unlock();
}

SHIM_HIDDEN void fdtable_copy(int from, int to) {
  if (from == to) return;
  struct sock_state *copy = NULL, *old = NULL;
  if (maybe_present(from)) {
    copy = malloc(sizeof *copy);
  }
  if (!copy && !maybe_present(to)) return;
  fdtable_lock();
  struct fd_entry *src = entry(from, false);
  struct fd_entry *dst = entry(to, copy != NULL && src && src->sock);
  if (dst) {
    old = dst->sock;
    dst->sock = NULL;
    if (copy && src && src->sock) {
      memcpy(copy, src->sock, sizeof *copy);
      dst->sock = copy;
      copy = NULL;
    }
  }
  fdtable_unlock();
  free(copy);
  free(old);
}

SHIM_HIDDEN void fdtable_set_sock(int fd, const struct sock_state *st) {
  struct sock_state *copy = malloc(sizeof *copy), *old = NULL;
  if (!copy) return;
  memcpy(copy, st, sizeof *copy);
  fdtable_lock();
  struct fd_entry *e = entry(fd, true);
  if (e) {
    old = e->sock;
    e->sock = copy;
    copy = NULL;
  }
  fdtable_unlock();
  free(old);
  free(copy);
}

SHIM_HIDDEN bool fdtable_get_sock(int fd, struct sock_state *out) {
  if (!maybe_present(fd)) return false;
  bool found = false;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  if (e && e->sock) {
    memcpy(out, e->sock, sizeof *out);
    found = true;
  }
  fdtable_unlock();
  return found;
}

SHIM_HIDDEN bool fdtable_has_sock(int fd) {
  if (!maybe_present(fd)) return false;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  bool found = e && e->sock;
  fdtable_unlock();
  return found;
}

SHIM_HIDDEN void fdtable_forget_peer(int fd) {
  if (!maybe_present(fd)) return;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  if (e && e->sock) {
    e->sock->has_peer = false;
    e->sock->has_local = false;
  }
  fdtable_unlock();
}

SHIM_HIDDEN bool fdtable_udp_lookup(int fd, const union shim_addr *dest, struct udp_flow *out) {
  if (!maybe_present(fd)) return false;
  bool found = false;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  if (e && e->sock) {
    for (unsigned i = 0; i < e->sock->nflows; i++) {
      if (shim_addr_equal(&e->sock->flows[i].dest, dest)) {
        *out = e->sock->flows[i];
        found = true;
        break;
      }
    }
  }
  fdtable_unlock();
  return found;
}

SHIM_HIDDEN void fdtable_udp_add(int fd, const struct udp_flow *flow) {
  struct sock_state *fresh = calloc(1, sizeof *fresh);
  fdtable_lock();
  struct fd_entry *e = entry(fd, true);
  if (e && !e->sock && fresh) {
    fresh->type = SOCK_DGRAM;
    e->sock = fresh;
    fresh = NULL;
  }
  if (e && e->sock) {
    struct sock_state *s = e->sock;
    unsigned i;
    for (i = 0; i < s->nflows; i++)
      if (shim_addr_equal(&s->flows[i].dest, &flow->dest)) break;
    if (i == s->nflows) {
      /* Full: reuse the oldest slot; the proxy expires relays nobody uses. */
      if (s->nflows < SHIM_UDP_FLOWS) {
        i = s->nflows++;
      } else {
        i = s->next_victim;
        s->next_victim = (s->next_victim + 1) % SHIM_UDP_FLOWS;
      }
      s->flows[i] = *flow;
    }
  }
  fdtable_unlock();
  free(fresh);
}

SHIM_HIDDEN void fdtable_udp_unrelay(int fd, void *addr, socklen_t cap, socklen_t *len) {
  if (!maybe_present(fd) || !addr || !len) return;
  union shim_addr from;
  socklen_t from_len;
  socklen_t have = *len < cap ? *len : cap;
  if (!shim_addr_from(addr, have, &from, &from_len)) return;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  if (e && e->sock) {
    const struct sock_state *s = e->sock;
    const union shim_addr *dest = NULL;
    socklen_t dest_len = 0;
    for (unsigned i = 0; i < s->nflows && !dest; i++) {
      if (!s->flows[i].local && shim_addr_equal(&s->flows[i].relay, &from)) {
        dest = &s->flows[i].dest;
        dest_len = s->flows[i].dest_len;
      }
    }
    if (!dest && s->has_peer && s->type == SOCK_DGRAM && shim_addr_equal(&s->relay_peer, &from)) {
      dest = &s->peer;
      dest_len = s->peer_len;
    }
    if (dest) {
      /* Report it in the family the kernel used (a v6 socket sees v4 as mapped). */
      union shim_addr out;
      socklen_t out_len;
      if (shim_addr_for_domain(dest, ((struct sockaddr *)addr)->sa_family, &out, &out_len))
        shim_addr_copy_out(&out, out_len, addr, cap, len);
      else
        shim_addr_copy_out(dest, dest_len, addr, cap, len);
    }
  }
  fdtable_unlock();
}

SHIM_HIDDEN void fdtable_mark_shim(int fd, bool owned) {
  struct stat st;
  int saved = errno;
  bool known = owned && REAL(fstat)(fd, &st) == 0;
  errno = saved;
  fdtable_lock();
  struct fd_entry *e = entry(fd, owned);
  if (e) {
    e->shim = owned;
    e->shim_dev = known ? st.st_dev : 0;
    e->shim_ino = known ? st.st_ino : 0;
  }
  fdtable_unlock();
}

/* Whether fd, marked as the shim's, still is the file the shim opened there; if not (it
 * was closed where no hook sees, and the number reused), the mark goes: the fd is the
 * program's now, and nothing of the shim may close, refuse or move it. */
static bool shim_fd_genuine(int fd) {
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  bool marked = e && e->shim;
  dev_t dev = marked ? e->shim_dev : 0;
  ino_t ino = marked ? e->shim_ino : 0;
  fdtable_unlock();
  if (!marked) return false;
  struct stat st;
  int saved = errno;
  bool same = REAL(fstat)(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
  errno = saved;
  if (same) return true;
  fdtable_lock();
  if (e->shim && e->shim_dev == dev && e->shim_ino == ino) e->shim = false;
  fdtable_unlock();
  return false;
}

SHIM_HIDDEN bool fdtable_is_shim(int fd) {
  if (!maybe_present(fd)) return false;
  fdtable_lock();
  struct fd_entry *e = entry(fd, false);
  bool owned = e && e->shim;
  fdtable_unlock();
  return owned && shim_fd_genuine(fd);
}

SHIM_HIDDEN int fdtable_shim_fds_in(unsigned first, unsigned last, int *out, int max) {
  int n = 0;
  if (last >= CHUNK_SIZE * MAX_CHUNKS) last = CHUNK_SIZE * MAX_CHUNKS - 1;
  if (first > last) return 0;
  fdtable_lock();
  for (unsigned c = first >> CHUNK_BITS; c <= last >> CHUNK_BITS && n < max; c++) {
    if (!chunks[c]) continue;
    unsigned lo = c << CHUNK_BITS, hi = lo + CHUNK_SIZE - 1;
    if (lo < first) lo = first;
    if (hi > last) hi = last;
    for (unsigned fd = lo; fd <= hi && n < max; fd++)
      if (chunks[c][fd & (CHUNK_SIZE - 1)].shim) out[n++] = (int)fd;
  }
  fdtable_unlock();
  return n;
}

SHIM_HIDDEN int shim_fd_adopt(int fd) {
  if (fd < 0) return -1;
  int saved = errno;
  int moved = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, shim_cfg.fd_floor > 3 ? shim_cfg.fd_floor : 3);
  if (moved < 0) moved = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 3);
  if (moved >= 0) {
    REAL(close)(fd);
  } else if (fd > 2) {
    moved = fd;
    REAL(fcntl)(fd, F_SETFD, FD_CLOEXEC);
  } else {
    REAL(close)(fd);
    errno = saved;
    return -1;
  }
  fdtable_mark_shim(moved, true);
  errno = saved;
  return moved;
}

SHIM_HIDDEN void shim_fd_release(int fd) {
  if (fd < 0) return;
  int saved = errno;
  fdtable_mark_shim(fd, false);
  REAL(close)(fd);
  errno = saved;
}

SHIM_HIDDEN int shim_fd_evict(int fd) {
  int moved = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, shim_cfg.fd_floor > 3 ? shim_cfg.fd_floor : 3);
  if (moved < 0) moved = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return -1;
  fdtable_mark_shim(moved, true);
  if (!channel_renumber(fd, moved)) {
    if (shim_log_fd() == fd) shim_log_set_fd(moved);
  }
  fdtable_mark_shim(fd, false);
  /* The caller's dup2/dup3 now replaces `fd` atomically; nothing closes it here, so a
   * concurrent user of the old number never sees it vanish. */
  return 0;
}
