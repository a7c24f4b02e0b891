/*
 * What the supervisor's socket files share (docs/ARCHITECTURE.md, "Static and Go programs:
 * seccomp", "Sockets"): the per-socket state of what was rewritten, kept by socket inode
 * (sockets.c), and the reading and writing of the program's socket addresses.
 *
 *   sockets.c   per-socket state by inode; the program's sockaddr arguments
 *   connect.c   connect, getpeername/getsockname
 *   udp.c       sendto/sendmsg/sendmmsg of datagrams with a destination
 *   udprecv.c   recvfrom/recvmsg/recvmmsg: the sources of relayed datagrams
 * (udpwindow.c, which places UDP sockets where the filter tests them, needs none of it.)
 */
#ifndef TSMIRROR_SV_SOCKETS_H
#define TSMIRROR_SV_SOCKETS_H

#include "sv.h"

#define SV_FLOWS 16   /* UDP destinations remembered per socket */
#define SV_MAX_DATAGRAM 65536

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

/* Guards every struct sv_sock. */
extern pthread_mutex_t sv_socks_lock;
/* The slot of inode, or (create) a free or else the least recently used one of its
 * probes. Under sv_socks_lock. */
struct sv_sock *sv_sock_slot(uint64_t inode, bool create);
/* The socket inode of the supervisor's descriptor fd (and its owner), or 0: not a socket. */
uint64_t sv_sock_inode(int fd, uint32_t *uid);
/* Set once a UDP socket's datagrams first go to a relay: until then a notified recvfrom
 * is continued before its descriptor is even looked at. */
extern atomic_bool sv_relayed_udp;

/* Reads the sockaddr argument of a call: false (let the kernel answer) when it is not an
 * inet address we can read. */
bool sv_read_inet_addr(struct sv_call *call, uint64_t ptr, uint64_t len, union shim_addr *dest, int *family);
/* Reads the capacity *addrlen of an (addr, addrlen) pair of the program: 0, -EFAULT or
 * -EINVAL (negative), as the kernel checks it. */
int sv_read_address_cap(struct sv_call *call, uint64_t lenp, socklen_t *cap);
/* Writes a into the program's (addr, addrlen) pair as the kernel would: at most cap
 * bytes, the full length back. 0 or -EFAULT. */
int sv_write_address(struct sv_call *call, uint64_t addr, uint64_t lenp, socklen_t cap, const void *a, socklen_t alen);

#endif
