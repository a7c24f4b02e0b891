/*
 * glibc's resolver functions: res_query, res_search, res_querydomain, res_send, their
 * res_n* forms, and the __res_* names that binaries built before glibc 2.34 import.
 * Since 2.34 these read /etc/resolv.conf and use their sockets inside libc, past every
 * hook, so they would ask this machine's nameserver. Here:
 *  - res_init/res_ninit run glibc's, then put the pod's settings into the state
 *    (res.config: nameservers, search list, ndots, timeout, attempts), as glibc's
 *    res_ninit would have from the pod's resolv.conf;
 *  - a query is built by glibc's res_nmkquery (no I/O), and glibc's search rules are
 *    followed here (ndots, RES_DEFNAMES/RES_DNSRCH, the as-is try, the h_errno a failed
 *    search leaves);
 *  - each DNS message goes to the pod's nameservers through the agent (res.send), whose
 *    answer comes back as the nameserver sent it.
 * When the agent cannot send DNS messages (res.config answers "local") every call is
 * glibc's own. When the proxy cannot be reached, calls fail with TRY_AGAIN: they never
 * fall back to this machine's nameserver.
 *
 * Everything lives in the caller's state (its own struct __res_state, or the thread's
 * _res) and on the stack; the channel is per thread. The one process-wide value, whether
 * the agent sends DNS messages, never changes during a session.
 */
#include "shim.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* Whether res_* calls are answered by the pod: unknown until the first res.config. */
enum { MODE_UNKNOWN, MODE_POD, MODE_GLIBC };
static int res_mode = MODE_UNKNOWN;

/* This thread's _res has the pod's settings (glibc's getaddrinfo may have initialised it
 * with this machine's before the program's first res_* call). */
static __thread bool thread_res_ready __attribute__((tls_model("initial-exec")));

static void set_herrno(res_state statp, int code) {
  statp->res_h_errno = code;
  h_errno = code;
}

/* The next definition of a res_* function, for a call that stays glibc's. A __res_* name
 * has no default version in glibc 2.34+ (dlsym finds none): its plain name is the same
 * function there. */
#define GLIBC(plain, compat) (real_##compat ? real_##compat : REAL(plain))

/* Puts the pod's settings into an initialised state, the way glibc's res_ninit stores
 * what it read: IPv4 nameservers in nsaddr_list, IPv6 ones in _u._ext.nsaddrs (malloc'd;
 * res_nclose frees them), the search list as NUL-separated names in defdname with dnsrch
 * pointing at each. `options`: what glibc starts from before reading resolv.conf (the
 * pod's options other than ndots, timeout and attempts are not known here). Called
 * inside SHIM_ENTER. */
static void apply_pod_settings(res_state statp, const struct res_config_reply *c, unsigned long options) {
  /* Closes glibc's sockets and frees the IPv6 addresses it allocated for this machine's
   * nameservers; the state stays initialised. A state glibc set up has _vcsock -1 (or its
   * TCP socket); 0 means the program zeroed the state and set RES_INIT itself, and there
   * is nothing of glibc's to free (res_nclose would close fd 0). */
  if (statp->_vcsock != 0) res_nclose(statp);
  int n = 0;
  for (int i = 0; i < c->nnameservers && n < MAXNS; i++) {
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, c->nameservers[i], &a4) == 1) {
      memset(&statp->nsaddr_list[n], 0, sizeof statp->nsaddr_list[n]);
      statp->nsaddr_list[n].sin_family = AF_INET;
      statp->nsaddr_list[n].sin_port = htons(NAMESERVER_PORT);
      statp->nsaddr_list[n].sin_addr = a4;
      statp->_u._ext.nsaddrs[n] = NULL;
    } else if (inet_pton(AF_INET6, c->nameservers[i], &a6) == 1) {
      struct sockaddr_in6 *sa = calloc(1, sizeof *sa);
      if (!sa) continue;
      sa->sin6_family = AF_INET6;
      sa->sin6_port = htons(NAMESERVER_PORT);
      sa->sin6_addr = a6;
      memset(&statp->nsaddr_list[n], 0, sizeof statp->nsaddr_list[n]);
      statp->_u._ext.nsaddrs[n] = sa;
    } else {
      continue;
    }
    statp->_u._ext.nssocks[n] = -1;
    n++;
  }
  statp->nscount = n;

  memset(statp->defdname, 0, sizeof statp->defdname);
  size_t at = 0;
  int k = 0;
  for (int i = 0; i < c->nsearch && k < MAXDNSRCH; i++) {
    size_t len = strlen(c->search[i]);
    if (len == 0 || at + len + 1 > sizeof statp->defdname) break;
    memcpy(statp->defdname + at, c->search[i], len + 1);
    statp->dnsrch[k++] = statp->defdname + at;
    at += len + 1;
  }
  statp->dnsrch[k] = NULL;
  statp->ndots = (unsigned)c->ndots;
  statp->retrans = c->timeout_ms >= 1000 ? (int)(c->timeout_ms / 1000) : 1;
  statp->retry = (int)c->attempts;
  statp->options = RES_INIT | options;
}

/* Asks for the pod's settings and puts them into statp (initialised by glibc). Returns 0
 * (statp has the pod's settings), 1 (res_* stays glibc's for this session), or -1 with
 * errno (the proxy could not answer). Inside SHIM_ENTER. */
static int pod_settings(res_state statp, unsigned long options) {
  struct res_config_reply *c = malloc(sizeof *c);
  if (!c) {
    errno = ENOMEM;
    return -1;
  }
  int rc;
  if (proto_res_config(c) < 0) {
    errno = ECONNREFUSED;
    rc = -1;
  } else if (c->kind == REPLY_LOCAL) {
    __atomic_store_n(&res_mode, MODE_GLIBC, __ATOMIC_RELAXED);
    rc = 1;
  } else if (c->kind == REPLY_ERROR) {
    errno = c->err;
    rc = -1;
  } else {
    __atomic_store_n(&res_mode, MODE_POD, __ATOMIC_RELAXED);
    apply_pod_settings(statp, c, options);
    if (statp == &_res) thread_res_ready = true;
    rc = 0;
  }
  free(c);
  return rc;
}

/* res_ninit/res_init: glibc's, then the pod's settings. `options`: glibc's starting
 * options (res_ninit: RES_DEFAULT; res_init keeps those of a state already set up). */
static int ninit(res_state statp, int (*glibc_ninit)(res_state), unsigned long options) {
  int r = glibc_ninit(statp);
  if (r < 0 || !shim_intercepting() || __atomic_load_n(&res_mode, __ATOMIC_RELAXED) == MODE_GLIBC) return r;
  int saved = errno;
  SHIM_ENTER();
  int rc = pod_settings(statp, options);
  SHIM_LEAVE();
  if (rc < 0) {
    /* The state keeps this machine's settings, but no query of ours will use them: each
     * one asks the proxy again and fails (TRY_AGAIN) while it cannot answer. */
    shim_log("res_ninit: the pod's resolver settings are unavailable (errno %d)", errno);
  }
  errno = saved;
  return r;
}

static int glibc_res_init(res_state statp) {
  (void)statp;
  return REAL(__res_init)();
}

SHIM_EXPORT int __res_ninit(res_state statp) {
  if (!statp) return REAL(__res_ninit)(statp);
  return ninit(statp, REAL(__res_ninit), RES_DEFAULT);
}

SHIM_EXPORT int __res_init(void) {
  unsigned long before = _res.options;
  return ninit(&_res, glibc_res_init, (before & RES_INIT) ? before & ~(unsigned long)RES_INIT : RES_DEFAULT);
}

/* Whether this call is the pod's (1), glibc's (0), or failed (-1, h_errno set: the
 * proxy could not be reached). Makes sure statp has the pod's settings. Inside SHIM_ENTER. */
static int ready(res_state statp) {
  int mode = __atomic_load_n(&res_mode, __ATOMIC_RELAXED);
  if (mode == MODE_GLIBC) return 0;
  bool thread_state = statp == &_res;
  if ((statp->options & RES_INIT) && (!thread_state || thread_res_ready) && mode == MODE_POD) return 1;
  if (!(statp->options & RES_INIT)) {
    int saved = errno;
    int r = REAL(__res_ninit)(statp);
    errno = saved;
    if (r < 0) {
      set_herrno(statp, NETDB_INTERNAL);
      return -1;
    }
  }
  int rc = pod_settings(statp, RES_DEFAULT);
  if (rc == 1) return 0;
  if (rc < 0) {
    set_herrno(statp, TRY_AGAIN);
    return -1;
  }
  return 1;
}

/* ---- sending (res_send's part) ---- */

/* Sends one message to the pod's nameservers; the answer goes to answer (cut to anslen
 * with TC set when longer). Returns its length, or -1 with errno (ETIMEDOUT: no
 * nameserver answered; ECONNREFUSED: the proxy could not be reached). */
static int pod_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
  if (!msg || !answer || msglen < HFIXEDSZ || anslen < HFIXEDSZ) {
    errno = EINVAL;
    return -1;
  }
  struct res_send_reply r = {.buf = answer, .cap = (size_t)anslen};
  if (proto_res_send(msg, (size_t)msglen, &r) < 0) {
    errno = ECONNREFUSED;
    return -1;
  }
  if (r.err) {
    errno = r.err;
    return -1;
  }
  if (r.len < HFIXEDSZ) {
    errno = EMSGSIZE;
    return -1;
  }
  if (r.len > (size_t)anslen) {
    ((HEADER *)answer)->tc = 1;
    return anslen;
  }
  return (int)r.len;
}

/* Adds an EDNS0 OPT record (RFC 6891) to a query of n bytes, as glibc does for
 * RES_USE_EDNS0 / RES_USE_DNSSEC; returns the new length (n when it does not fit). */
static int add_edns0(res_state statp, unsigned char *q, int n, int cap, int anslen) {
  if (n + 11 > cap) return n;
  unsigned payload = anslen < 512 ? 512 : anslen > 1200 ? 1200 : (unsigned)anslen;
  unsigned char *p = q + n;
  p[0] = 0;                              /* root */
  p[1] = 0, p[2] = 41;                   /* type OPT */
  p[3] = (unsigned char)(payload >> 8), p[4] = (unsigned char)payload; /* UDP payload size */
  p[5] = 0, p[6] = 0;                    /* extended rcode, version */
  p[7] = (statp->options & RES_USE_DNSSEC) ? 0x80 : 0, p[8] = 0; /* DO */
  p[9] = 0, p[10] = 0;                   /* no options */
  HEADER *h = (HEADER *)q;
  h->arcount = htons((uint16_t)(ntohs(h->arcount) + 1));
  return n + 11;
}

/* ---- queries and the search (res_query's and res_search's part) ---- */

/* One query for name: res_query's result (the answer's length, or -1 with h_errno set).
 * *rcode gets the answer's rcode (NOERROR when there was none). */
static int pod_query(res_state statp, const char *name, int class, int type, unsigned char *answer,
                     int anslen, int *rcode) {
  unsigned char q[HFIXEDSZ + QFIXEDSZ + MAXCDNAME + 1 + 11];
  *rcode = NOERROR;
  int n = res_nmkquery(statp, QUERY, name, class, type, NULL, 0, NULL, q, (int)sizeof q - 11);
  if (n <= 0) {
    set_herrno(statp, NO_RECOVERY);
    return -1;
  }
  if (statp->options & (RES_USE_EDNS0 | RES_USE_DNSSEC)) n = add_edns0(statp, q, n, (int)sizeof q, anslen);
  n = pod_send(q, n, answer, anslen);
  if (n < 0) {
    set_herrno(statp, TRY_AGAIN);
    return -1;
  }
  const HEADER *hp = (const HEADER *)answer;
  *rcode = hp->rcode;
  if (hp->rcode == NOERROR && ntohs(hp->ancount) > 0) return n;
  switch (hp->rcode) {
    case NXDOMAIN: set_herrno(statp, HOST_NOT_FOUND); break;
    case SERVFAIL: set_herrno(statp, TRY_AGAIN); break;
    case NOERROR: set_herrno(statp, NO_DATA); break;
    default: set_herrno(statp, NO_RECOVERY); break;
  }
  return -1;
}

/* name.domain (or name alone when domain is NULL), as res_querydomain asks it. */
static int pod_querydomain(res_state statp, const char *name, const char *domain, int class, int type,
                           unsigned char *answer, int anslen, int *rcode) {
  char full[MAXDNAME];
  *rcode = NOERROR;
  size_t n = strlen(name);
  if (!domain) {
    if (n == 0 || n >= MAXDNAME) {
      set_herrno(statp, NO_RECOVERY);
      return -1;
    }
    return pod_query(statp, name, class, type, answer, anslen, rcode);
  }
  size_t d = strlen(domain);
  if (n + d + 1 >= MAXDNAME) {
    set_herrno(statp, NO_RECOVERY);
    return -1;
  }
  memcpy(full, name, n);
  full[n] = '.';
  memcpy(full + n + 1, domain, d + 1);
  return pod_query(statp, full, class, type, answer, anslen, rcode);
}

/* glibc's search: the name as is first when it has ndots dots (or a trailing one), then
 * with each search domain (RES_DEFNAMES for a name without dots, RES_DNSRCH for one
 * with), then as is if not tried yet. HOSTALIASES is not consulted. */
static int pod_search(res_state statp, const char *name, int class, int type, unsigned char *answer,
                      int anslen) {
  errno = 0;
  set_herrno(statp, HOST_NOT_FOUND); /* when nothing is asked */
  unsigned dots = 0;
  const char *cp;
  for (cp = name; *cp; cp++) dots += *cp == '.';
  bool trailing_dot = cp > name && cp[-1] == '.';
  int rcode, ret, saved_herrno = -1;
  bool tried_as_is = false, searched = false, root_on_list = false;
  int got_nodata = 0, got_servfail = 0;

  if (dots >= statp->ndots || trailing_dot) {
    ret = pod_querydomain(statp, name, NULL, class, type, answer, anslen, &rcode);
    if (ret > 0 || trailing_dot) return ret;
    saved_herrno = h_errno;
    tried_as_is = true;
  }
  if ((!dots && (statp->options & RES_DEFNAMES)) ||
      (dots && !trailing_dot && (statp->options & RES_DNSRCH))) {
    bool done = false;
    for (int i = 0; i < MAXDNSRCH && statp->dnsrch[i] && !done; i++) {
      const char *domain = statp->dnsrch[i];
      searched = true;
      if (domain[0] == '.') domain++;
      if (domain[0] == '\0') root_on_list = true;
      ret = pod_querydomain(statp, name, domain, class, type, answer, anslen, &rcode);
      if (ret > 0) return ret;
      if (errno == ECONNREFUSED) {
        set_herrno(statp, TRY_AGAIN);
        return -1;
      }
      switch (statp->res_h_errno) {
        case NO_DATA:
          got_nodata++;
          break;
        case HOST_NOT_FOUND:
          break;
        case TRY_AGAIN:
          if (rcode == SERVFAIL) {
            got_servfail++;
            break;
          }
          done = true;
          break;
        default:
          done = true;
      }
      if (!(statp->options & RES_DNSRCH)) done = true;
    }
  }
  if ((dots || !searched || !(statp->options & RES_NOTLDQUERY)) && !(tried_as_is || root_on_list)) {
    ret = pod_querydomain(statp, name, NULL, class, type, answer, anslen, &rcode);
    if (ret > 0) return ret;
  }
  if (saved_herrno != -1) set_herrno(statp, saved_herrno);
  else if (got_nodata) set_herrno(statp, NO_DATA);
  else if (got_servfail) set_herrno(statp, TRY_AGAIN);
  return -1;
}

/* ---- the exported functions: thin entries ---- */

/* Runs `pod` for statp when the call is the pod's, else `glibc`. errno as glibc leaves
 * it: kept on success, the send's on failure. */
#define RES_ENTRY(statp, glibc_call, pod_call)                       \
  do {                                                               \
    if (!(statp) || !shim_intercepting()) return glibc_call;         \
    int saved_ = errno;                                              \
    SHIM_ENTER();                                                    \
    int mode_ = ready(statp);                                        \
    int r_ = -1;                                                     \
    if (mode_ == 1) r_ = pod_call;                                   \
    int e_ = errno;                                                  \
    SHIM_LEAVE();                                                    \
    if (mode_ == 0) {                                                \
      errno = saved_;                                                \
      return glibc_call;                                             \
    }                                                                \
    errno = r_ >= 0 ? saved_ : e_;                                   \
    return r_;                                                       \
  } while (0)

static int nquery(res_state statp, const char *name, int class, int type, unsigned char *answer,
                  int anslen, int (*glibc)(res_state, const char *, int, int, unsigned char *, int)) {
  int rcode;
  RES_ENTRY(statp, glibc(statp, name, class, type, answer, anslen),
            name && answer ? pod_query(statp, name, class, type, answer, anslen, &rcode)
                           : (set_herrno(statp, NO_RECOVERY), -1));
}

static int nsearch(res_state statp, const char *name, int class, int type, unsigned char *answer,
                   int anslen, int (*glibc)(res_state, const char *, int, int, unsigned char *, int)) {
  RES_ENTRY(statp, glibc(statp, name, class, type, answer, anslen),
            name && answer ? pod_search(statp, name, class, type, answer, anslen)
                           : (set_herrno(statp, NO_RECOVERY), -1));
}

static int nquerydomain(res_state statp, const char *name, const char *domain, int class, int type,
                        unsigned char *answer, int anslen,
                        int (*glibc)(res_state, const char *, const char *, int, int, unsigned char *, int)) {
  int rcode;
  RES_ENTRY(statp, glibc(statp, name, domain, class, type, answer, anslen),
            name && answer ? pod_querydomain(statp, name, domain, class, type, answer, anslen, &rcode)
                           : (set_herrno(statp, NO_RECOVERY), -1));
}

static int nsend(res_state statp, const unsigned char *msg, int msglen, unsigned char *answer,
                 int anslen, int (*glibc)(res_state, const unsigned char *, int, unsigned char *, int)) {
  RES_ENTRY(statp, glibc(statp, msg, msglen, answer, anslen), pod_send(msg, msglen, answer, anslen));
}

/* The res_* forms without a state use the thread's _res, as glibc's do. */
static int glibc_query(res_state s, const char *n, int c, int t, unsigned char *a, int l) {
  (void)s;
  return GLIBC(res_query, __res_query)(n, c, t, a, l);
}
static int glibc_search(res_state s, const char *n, int c, int t, unsigned char *a, int l) {
  (void)s;
  return GLIBC(res_search, __res_search)(n, c, t, a, l);
}
static int glibc_querydomain(res_state s, const char *n, const char *d, int c, int t, unsigned char *a, int l) {
  (void)s;
  return GLIBC(res_querydomain, __res_querydomain)(n, d, c, t, a, l);
}
static int glibc_send(res_state s, const unsigned char *m, int ml, unsigned char *a, int l) {
  (void)s;
  return GLIBC(res_send, __res_send)(m, ml, a, l);
}
static int glibc_nquery(res_state s, const char *n, int c, int t, unsigned char *a, int l) {
  return GLIBC(res_nquery, __res_nquery)(s, n, c, t, a, l);
}
static int glibc_nsearch(res_state s, const char *n, int c, int t, unsigned char *a, int l) {
  return GLIBC(res_nsearch, __res_nsearch)(s, n, c, t, a, l);
}
static int glibc_nquerydomain(res_state s, const char *n, const char *d, int c, int t, unsigned char *a, int l) {
  return GLIBC(res_nquerydomain, __res_nquerydomain)(s, n, d, c, t, a, l);
}
static int glibc_nsend(res_state s, const unsigned char *m, int ml, unsigned char *a, int l) {
  return GLIBC(res_nsend, __res_nsend)(s, m, ml, a, l);
}

SHIM_EXPORT int res_nquery(res_state statp, const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nquery(statp, name, class, type, answer, anslen, glibc_nquery);
}
SHIM_EXPORT int __res_nquery(res_state statp, const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nquery(statp, name, class, type, answer, anslen, glibc_nquery);
}
SHIM_EXPORT int res_query(const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nquery(&_res, name, class, type, answer, anslen, glibc_query);
}
SHIM_EXPORT int __res_query(const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nquery(&_res, name, class, type, answer, anslen, glibc_query);
}

SHIM_EXPORT int res_nsearch(res_state statp, const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nsearch(statp, name, class, type, answer, anslen, glibc_nsearch);
}
SHIM_EXPORT int __res_nsearch(res_state statp, const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nsearch(statp, name, class, type, answer, anslen, glibc_nsearch);
}
SHIM_EXPORT int res_search(const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nsearch(&_res, name, class, type, answer, anslen, glibc_search);
}
SHIM_EXPORT int __res_search(const char *name, int class, int type, unsigned char *answer, int anslen) {
  return nsearch(&_res, name, class, type, answer, anslen, glibc_search);
}

SHIM_EXPORT int res_nquerydomain(res_state statp, const char *name, const char *domain, int class, int type,
                                 unsigned char *answer, int anslen) {
  return nquerydomain(statp, name, domain, class, type, answer, anslen, glibc_nquerydomain);
}
SHIM_EXPORT int __res_nquerydomain(res_state statp, const char *name, const char *domain, int class, int type,
                                   unsigned char *answer, int anslen) {
  return nquerydomain(statp, name, domain, class, type, answer, anslen, glibc_nquerydomain);
}
SHIM_EXPORT int res_querydomain(const char *name, const char *domain, int class, int type, unsigned char *answer,
                                int anslen) {
  return nquerydomain(&_res, name, domain, class, type, answer, anslen, glibc_querydomain);
}
SHIM_EXPORT int __res_querydomain(const char *name, const char *domain, int class, int type, unsigned char *answer,
                                  int anslen) {
  return nquerydomain(&_res, name, domain, class, type, answer, anslen, glibc_querydomain);
}

SHIM_EXPORT int res_nsend(res_state statp, const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
  return nsend(statp, msg, msglen, answer, anslen, glibc_nsend);
}
SHIM_EXPORT int __res_nsend(res_state statp, const unsigned char *msg, int msglen, unsigned char *answer,
                            int anslen) {
  return nsend(statp, msg, msglen, answer, anslen, glibc_nsend);
}
SHIM_EXPORT int res_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
  return nsend(&_res, msg, msglen, answer, anslen, glibc_send);
}
SHIM_EXPORT int __res_send(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {
  return nsend(&_res, msg, msglen, answer, anslen, glibc_send);
}
