/*
 * Per-socket state of the supervisor's outgoing sockets, and the program's socket
 * addresses (sockets.h).
 *
 * What was rewritten is remembered per socket, by its inode (a socket has one inode
 * however many fds or processes share it), and checked against the socket's real peer
 * before it is reported.
 */
#include "sockets.h"

#include <string.h>

#define SV_SOCKS 4096 /* slots; open addressing, a few probes, the oldest overwritten */
#define SV_PROBES 8

static struct sv_sock socks[SV_SOCKS];
pthread_mutex_t sv_socks_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t clock_stamp;
atomic_bool sv_relayed_udp;

struct sv_sock *sv_sock_slot(uint64_t inode, bool create) {
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

uint64_t sv_sock_inode(int fd, uint32_t *uid) {
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return 0;
  if (uid) *uid = (uint32_t)st.st_uid;
  return (uint64_t)st.st_ino;
}

bool sv_read_inet_addr(struct sv_call *call, uint64_t ptr, uint64_t len, union shim_addr *dest, int *family) {
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

int sv_read_address_cap(struct sv_call *call, uint64_t lenp, socklen_t *cap) {
  if (!lenp || sv_read(call, lenp, cap, sizeof *cap) < 0) return -EFAULT;
  return (int)*cap < 0 ? -EINVAL : 0;
}

int sv_write_address(struct sv_call *call, uint64_t addr, uint64_t lenp, socklen_t cap, const void *a, socklen_t alen) {
  size_t n = cap < alen ? cap : alen;
  if ((n && sv_write(call, addr, a, n) < 0) || sv_write(call, lenp, &alen, sizeof alen) < 0) return -EFAULT;
  return 0;
}
