/*
 * The sweeper of the supervisor's incoming traffic (listen.c has the overview): close()
 * is not notified (every close of every file would pay for it), so a sweeper thread asks
 * the kernel which TCP sockets exist (NETLINK_SOCK_DIAG) every SWEEP_MS while the table is
 * not empty, unsubscribes a listener once its socket stopped listening (closed in every
 * process that held it, close_range, exec with FD_CLOEXEC, exit) and, every
 * FULL_SWEEP_EVERY rounds, forgets relayed connections that are gone (until then a stale
 * entry is harmless: every answer from it is checked against the socket's real peer). A
 * forked worker closing its copy therefore never unsubscribes, as with the shim.
 */
#include "listen.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <string.h>
#include <time.h>

#define SWEEP_MS 500
#define FULL_SWEEP_EVERY 20      /* relayed connections are forgotten every 10 s */

static pthread_once_t sweeper_once = PTHREAD_ONCE_INIT;

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

void listen_start_sweeper(void) { pthread_once(&sweeper_once, start_sweeper); }

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
  pthread_mutex_lock(&listen_lock);
  uint64_t gen = ++listen_sweep_gen; /* entries added from now on are not judged by this dump */
  if (!listen_naccepted) full = false;
  pthread_mutex_unlock(&listen_lock);
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
  pthread_mutex_lock(&listen_lock);
  for (size_t b = 0; b < LISTEN_NBUCKETS; b++) {
    struct known **p = &listen_buckets[b];
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
      if (k->kind == K_LISTENER) listen_drop_stashed_locked(k->ino); /* its kept connections go with it */
      listen_remove_locked(p);
    }
  }
  pthread_mutex_unlock(&listen_lock);
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
    if (!listen_table_empty()) sweep_once(nl, round % FULL_SWEEP_EVERY == 0);
  }
  return NULL;
}
