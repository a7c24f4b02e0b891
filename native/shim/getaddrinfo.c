/*
 * getaddrinfo/freeaddrinfo/getnameinfo. Names that are not numeric are resolved by the
 * session proxy (inside the pod, with the pod's resolv.conf); the service part and the
 * socktype/protocol expansion follow glibc exactly, so a program sees the same list
 * shape it would get from glibc. Lists we build are ours to free: freeaddrinfo tells
 * them apart from glibc's through a registry of the heads we handed out.
 */
#include "shim.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#ifndef SOCK_DCCP
#define SOCK_DCCP 6
#endif
#ifndef IPPROTO_DCCP
#define IPPROTO_DCCP 33
#endif

/* glibc's gaih_inet_typeproto table (sysdeps/posix/getaddrinfo.c). */
struct typeproto {
  int socktype, protocol;
  bool protoany, noserv, by_default;
  const char *name;
};
static const struct typeproto typeprotos[] = {
  {SOCK_STREAM, IPPROTO_TCP, false, false, true, "tcp"},
  {SOCK_DGRAM, IPPROTO_UDP, false, false, true, "udp"},
  {SOCK_DCCP, IPPROTO_DCCP, false, false, false, "dccp"},
  {SOCK_DGRAM, IPPROTO_UDPLITE, false, false, false, "udplite"},
  {SOCK_STREAM, IPPROTO_SCTP, false, false, false, "sctp"},
  {SOCK_SEQPACKET, IPPROTO_SCTP, false, false, false, "sctp"},
  {SOCK_RAW, 0, true, true, true, "raw"},
};
#define NTYPEPROTOS (sizeof typeprotos / sizeof typeprotos[0])

struct servtuple {
  int socktype, protocol;
  in_port_t port; /* network order */
};

static bool lookup_service(const char *service, const char *proto, in_port_t *port) {
  struct servent se, *found = NULL;
  char buf[1024];
  if (getservbyname_r(service, proto, &se, buf, sizeof buf, &found) != 0 || !found) return false;
  *port = (in_port_t)found->s_port;
  return true;
}

/* Returns 0 or an EAI_* code; fills up to NTYPEPROTOS tuples. */
static int service_tuples(const char *service, const struct addrinfo *h, struct servtuple *out,
                          int *n) {
  const struct typeproto *tp = NULL;
  *n = 0;
  if (h->ai_protocol || h->ai_socktype) {
    for (size_t i = 0; i < NTYPEPROTOS && !tp; i++) {
      const struct typeproto *t = &typeprotos[i];
      if ((h->ai_socktype == 0 || h->ai_socktype == t->socktype) &&
          (h->ai_protocol == 0 || t->protoany || h->ai_protocol == t->protocol))
        tp = t;
    }
    if (!tp) return h->ai_socktype ? EAI_SOCKTYPE : EAI_SERVICE;
  }
  in_port_t port = 0;
  if (service) {
    char *end;
    int num = (int)strtoul(service, &end, 10);
    if (*end) {
      if (h->ai_flags & AI_NUMERICSERV) return EAI_NONAME;
      num = -1;
    }
    if (tp && tp->noserv) return EAI_SERVICE;
    if (num < 0) {
      if (tp) {
        if (!lookup_service(service, tp->name, &port)) return EAI_SERVICE;
        out[(*n)++] = (struct servtuple){tp->socktype, tp->protoany ? h->ai_protocol : tp->protocol, port};
        return 0;
      }
      for (size_t i = 0; i < NTYPEPROTOS; i++) {
        const struct typeproto *t = &typeprotos[i];
        if (t->noserv) continue;
        if (lookup_service(service, t->name, &port))
          out[(*n)++] = (struct servtuple){t->socktype, t->protocol, port};
      }
      return *n ? 0 : EAI_SERVICE;
    }
    port = htons((uint16_t)num);
  }
  if (tp) {
    out[(*n)++] = (struct servtuple){tp->socktype, tp->protoany ? h->ai_protocol : tp->protocol, port};
  } else {
    for (size_t i = 0; i < NTYPEPROTOS; i++)
      if (typeprotos[i].by_default)
        out[(*n)++] = (struct servtuple){typeprotos[i].socktype, typeprotos[i].protocol, port};
  }
  return 0;
}

/* ---- registry of the lists we built ---- */

static pthread_mutex_t lists_lock = PTHREAD_MUTEX_INITIALIZER;
static struct addrinfo **lists;
static size_t nlists, caplists;

static bool register_list(struct addrinfo *head) {
  bool ok = true;
  pthread_mutex_lock(&lists_lock);
  if (nlists == caplists) {
    size_t cap = caplists ? caplists * 2 : 16;
    struct addrinfo **grown = realloc(lists, cap * sizeof *grown);
    if (grown) {
      lists = grown;
      caplists = cap;
    } else {
      ok = false;
    }
  }
  if (ok) lists[nlists++] = head;
  pthread_mutex_unlock(&lists_lock);
  return ok;
}

static bool unregister_list(struct addrinfo *head) {
  bool found = false;
  pthread_mutex_lock(&lists_lock);
  for (size_t i = nlists; i-- > 0;) {
    if (lists[i] == head) {
      lists[i] = lists[--nlists];
      found = true;
      break;
    }
  }
  pthread_mutex_unlock(&lists_lock);
  return found;
}

struct shim_ai {
  struct addrinfo ai;
  union shim_addr addr;
};

static void free_list(struct addrinfo *ai) {
  while (ai) {
    struct addrinfo *next = ai->ai_next;
    free(ai->ai_canonname);
    free(ai);
    ai = next;
  }
}

static bool is_numeric_host(const char *node) {
  struct in_addr a;
  return strchr(node, ':') != NULL || inet_aton(node, &a) != 0;
}

#define KNOWN_AI_FLAGS \
  (AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_ADDRCONFIG | AI_V4MAPPED | AI_NUMERICSERV | \
   AI_ALL | AI_IDN | AI_CANONIDN)

static int build_list(const char *node, const struct addrinfo *h, const struct servtuple *tuples,
                      int ntuples, const struct resolve_reply *reply, struct addrinfo **res) {
  bool want4 = h->ai_family == AF_UNSPEC || h->ai_family == AF_INET;
  bool want6 = h->ai_family == AF_UNSPEC || h->ai_family == AF_INET6;
  bool map4 = false;
  if (h->ai_family == AF_INET6 && (h->ai_flags & AI_V4MAPPED)) {
    bool any6 = false;
    for (int i = 0; i < reply->naddrs; i++) any6 |= reply->addrs[i].family == AF_INET6;
    map4 = !any6 || (h->ai_flags & AI_ALL);
  }
  struct addrinfo *head = NULL, **tail = &head;
  for (int i = 0; i < reply->naddrs; i++) {
    const struct resolved_addr *a = &reply->addrs[i];
    bool as_mapped = false;
    if (a->family == AF_INET && !want4) {
      if (!map4) continue;
      as_mapped = true;
    }
    if (a->family == AF_INET6 && !want6) continue;
    for (int t = 0; t < ntuples; t++) {
      struct shim_ai *n = calloc(1, sizeof *n);
      if (!n) {
        free_list(head);
        return EAI_MEMORY;
      }
      n->ai.ai_flags = h->ai_flags;
      n->ai.ai_socktype = tuples[t].socktype;
      n->ai.ai_protocol = tuples[t].protocol;
      n->ai.ai_addr = &n->addr.sa;
      if (a->family == AF_INET && !as_mapped) {
        n->ai.ai_family = AF_INET;
        n->ai.ai_addrlen = sizeof n->addr.in;
        n->addr.in.sin_family = AF_INET;
        n->addr.in.sin_port = tuples[t].port;
        memcpy(&n->addr.in.sin_addr, a->bytes, 4);
      } else {
        n->ai.ai_family = AF_INET6;
        n->ai.ai_addrlen = sizeof n->addr.in6;
        n->addr.in6.sin6_family = AF_INET6;
        n->addr.in6.sin6_port = tuples[t].port;
        if (as_mapped) {
          n->addr.in6.sin6_addr.s6_addr[10] = 0xff;
          n->addr.in6.sin6_addr.s6_addr[11] = 0xff;
          memcpy(&n->addr.in6.sin6_addr.s6_addr[12], a->bytes, 4);
        } else {
          memcpy(&n->addr.in6.sin6_addr, a->bytes, 16);
        }
      }
      *tail = &n->ai;
      tail = &n->ai.ai_next;
    }
  }
  if (!head) return EAI_NODATA;
  if (h->ai_flags & AI_CANONNAME) {
    head->ai_canonname = strdup(reply->canonname[0] ? reply->canonname : node);
    if (!head->ai_canonname) {
      free_list(head);
      return EAI_MEMORY;
    }
  }
  if (!register_list(head)) {
    free_list(head);
    return EAI_MEMORY;
  }
  *res = head;
  return 0;
}

static int shim_getaddrinfo(const char *node, const char *service, const struct addrinfo *h,
                            struct addrinfo **res) {
  struct servtuple tuples[NTYPEPROTOS];
  int ntuples;
  int rc = service_tuples(service, h, tuples, &ntuples);
  if (rc) return rc;
  if (strlen(node) > 1024) return EAI_NONAME;

  int ask = h->ai_family;
  if (ask == AF_INET6 && (h->ai_flags & AI_V4MAPPED)) ask = AF_UNSPEC;
  struct resolve_reply *reply = malloc(sizeof *reply);
  if (!reply) return EAI_MEMORY;
  if (proto_resolve(node, ask, reply) < 0) {
    shim_log("getaddrinfo %s: session proxy unreachable; EAI_AGAIN", node);
    rc = EAI_AGAIN;
  } else if (reply->kind == REPLY_ERROR) {
    rc = reply->eai;
  } else if (reply->kind == REPLY_LOCAL) {
    rc = 1; /* sentinel: ask the real resolver */
  } else {
    rc = build_list(node, h, tuples, ntuples, reply, res);
  }
  free(reply);
  return rc;
}

SHIM_EXPORT int getaddrinfo(const char *__restrict node, const char *__restrict service,
                            const struct addrinfo *__restrict hints,
                            struct addrinfo **__restrict res) {
  if (!shim_intercepting() || !node || !res || !*node) return REAL(getaddrinfo)(node, service, hints, res);
  struct addrinfo defaults = {.ai_flags = AI_V4MAPPED | AI_ADDRCONFIG, .ai_family = AF_UNSPEC};
  const struct addrinfo *h = hints ? hints : &defaults;
  if ((h->ai_flags & AI_NUMERICHOST) || (h->ai_flags & ~KNOWN_AI_FLAGS) ||
      (h->ai_family != AF_UNSPEC && h->ai_family != AF_INET && h->ai_family != AF_INET6) ||
      is_numeric_host(node))
    return REAL(getaddrinfo)(node, service, hints, res);

  int saved = errno;
  SHIM_ENTER();
  int rc = shim_getaddrinfo(node, service, h, res);
  SHIM_LEAVE();
  errno = saved;
  if (rc == 1) return REAL(getaddrinfo)(node, service, hints, res);
  return rc;
}

SHIM_EXPORT void freeaddrinfo(struct addrinfo *ai) {
  if (ai && unregister_list(ai)) {
    int saved = errno;
    free_list(ai);
    errno = saved;
    return;
  }
  REAL(freeaddrinfo)(ai);
}

/* ---- getnameinfo ---- */

static int numeric_fallback(const struct sockaddr *sa, socklen_t salen, char *host,
                            socklen_t hostlen, char *serv, socklen_t servlen, int flags, int eai) {
  if (flags & NI_NAMEREQD) return eai;
  return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags | NI_NUMERICHOST);
}

SHIM_EXPORT int getnameinfo(const struct sockaddr *__restrict sa, socklen_t salen,
                            char *__restrict host, socklen_t hostlen, char *__restrict serv,
                            socklen_t servlen, int flags) {
  if (!shim_intercepting() || !sa || !host || !hostlen || (flags & NI_NUMERICHOST) ||
      !((sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) ||
        (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6))))
    return REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);

  int saved = errno;
  SHIM_ENTER();
  const void *addr = sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                              : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
  struct reverse_reply *reply = malloc(sizeof *reply);
  int rc;
  if (!reply) {
    rc = EAI_MEMORY;
  } else if (proto_reverse(sa->sa_family, addr, reply) < 0) {
    rc = numeric_fallback(sa, salen, host, hostlen, serv, servlen, flags, EAI_AGAIN);
  } else if (reply->kind == REPLY_LOCAL) {
    rc = REAL(getnameinfo)(sa, salen, host, hostlen, serv, servlen, flags);
  } else if (reply->kind == REPLY_ERROR) {
    rc = numeric_fallback(sa, salen, host, hostlen, serv, servlen, flags, reply->eai);
  } else if (strlen(reply->name) >= hostlen) {
    rc = EAI_OVERFLOW;
  } else {
    rc = 0;
    if (serv && servlen) rc = REAL(getnameinfo)(sa, salen, NULL, 0, serv, servlen, flags);
    if (rc == 0) strcpy(host, reply->name);
  }
  free(reply);
  SHIM_LEAVE();
  errno = saved;
  return rc;
}
