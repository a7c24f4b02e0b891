/*
 * The hostent resolvers: gethostbyname, gethostbyname2 and their _r forms,
 * gethostbyaddr(_r). Same questions as getaddrinfo (resolve / reverse), answered in
 * glibc's conventions: h_errno codes, and for the _r forms a return value of 0 with
 * *result == NULL when the name does not exist, EAGAIN for "try again", ERANGE when the
 * caller's buffer is too small.
 */
#include "shim.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static bool numeric_name(const char *name) {
  struct in_addr a;
  return strchr(name, ':') != NULL || inet_aton(name, &a) != 0;
}

/* Lays out a hostent with one name, no aliases and n addresses inside buf. */
static int fill_hostent(struct hostent *he, char *buf, size_t buflen, const char *name, int af,
                        const unsigned char (*addrs)[16], int n) {
  size_t alen = af == AF_INET ? 4 : 16;
  uintptr_t start = (uintptr_t)buf, p = (start + sizeof(char *) - 1) & ~(uintptr_t)(sizeof(char *) - 1);
  size_t need = (p - start) + sizeof(char *) /* aliases */ + (size_t)(n + 1) * sizeof(char *) +
                (size_t)n * alen + strlen(name) + 1;
  if (need > buflen) return ERANGE;
  char **aliases = (char **)p;
  char **list = aliases + 1;
  char *data = (char *)(list + n + 1);
  aliases[0] = NULL;
  for (int i = 0; i < n; i++) {
    memcpy(data, addrs[i], alen);
    list[i] = data;
    data += alen;
  }
  list[n] = NULL;
  strcpy(data, name);
  he->h_name = data;
  he->h_aliases = aliases;
  he->h_addrtype = af;
  he->h_length = (int)alen;
  he->h_addr_list = list;
  return 0;
}

static int herrno_for(int eai) {
  switch (eai) {
    case EAI_AGAIN: return TRY_AGAIN;
    case EAI_NODATA: return NO_DATA;
    case EAI_FAIL: return NO_RECOVERY;
    default: return HOST_NOT_FOUND;
  }
}

/* Result of asking the proxy: 1 = use the real function, else glibc _r convention. */
#define ASK_REAL 1000

static int byname(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                  struct hostent **result, int *h_errnop) {
  *result = NULL;
  if (strlen(name) > 1024) {
    *h_errnop = HOST_NOT_FOUND;
    return 0;
  }
  struct resolve_reply *reply = malloc(sizeof *reply);
  if (!reply) {
    *h_errnop = NETDB_INTERNAL;
    return ENOMEM;
  }
  int rc = 0;
  if (proto_resolve(name, af, reply) < 0) {
    *h_errnop = TRY_AGAIN;
    rc = EAGAIN;
  } else if (reply->kind == REPLY_LOCAL) {
    rc = ASK_REAL;
  } else if (reply->kind == REPLY_ERROR) {
    *h_errnop = herrno_for(reply->eai);
    rc = *h_errnop == TRY_AGAIN ? EAGAIN : 0;
  } else {
    unsigned char(*addrs)[16] = malloc(sizeof(*addrs) * SHIM_MAX_ADDRS);
    int n = 0;
    if (!addrs) {
      *h_errnop = NETDB_INTERNAL;
      rc = ENOMEM;
    } else {
      for (int i = 0; i < reply->naddrs; i++)
        if (reply->addrs[i].family == af) memcpy(addrs[n++], reply->addrs[i].bytes, 16);
      if (n == 0) {
        *h_errnop = NO_DATA;
      } else {
        rc = fill_hostent(ret, buf, buflen, reply->canonname[0] ? reply->canonname : name, af,
                          (const unsigned char(*)[16])addrs, n);
        if (rc == 0) {
          *result = ret;
          *h_errnop = 0;
        } else {
          *h_errnop = NETDB_INTERNAL;
        }
      }
      free(addrs);
    }
  }
  free(reply);
  return rc;
}

static int byaddr(const void *addr, socklen_t len, int type, struct hostent *ret, char *buf,
                  size_t buflen, struct hostent **result, int *h_errnop) {
  *result = NULL;
  struct reverse_reply *reply = malloc(sizeof *reply);
  if (!reply) {
    *h_errnop = NETDB_INTERNAL;
    return ENOMEM;
  }
  int rc = 0;
  if (proto_reverse(type, addr, reply) < 0) {
    *h_errnop = TRY_AGAIN;
    rc = EAGAIN;
  } else if (reply->kind == REPLY_LOCAL) {
    rc = ASK_REAL;
  } else if (reply->kind == REPLY_ERROR) {
    *h_errnop = herrno_for(reply->eai);
    rc = *h_errnop == TRY_AGAIN ? EAGAIN : 0;
  } else {
    unsigned char one[1][16];
    memset(one, 0, sizeof one);
    memcpy(one[0], addr, len);
    rc = fill_hostent(ret, buf, buflen, reply->name, type, (const unsigned char(*)[16])one, 1);
    if (rc == 0) {
      *result = ret;
      *h_errnop = 0;
    } else {
      *h_errnop = NETDB_INTERNAL;
    }
  }
  free(reply);
  return rc;
}

static bool byname_applies(const char *name, int af) {
  return name && *name && (af == AF_INET || af == AF_INET6) && !numeric_name(name);
}

static bool byaddr_applies(const void *addr, socklen_t len, int type) {
  return addr && ((type == AF_INET && len == 4) || (type == AF_INET6 && len == 16));
}

/* The non-reentrant forms return a per-thread buffer (glibc's is process-wide; per
 * thread is strictly safer), grown until the answer fits. */
struct scratch {
  struct hostent he;
  size_t size;
  char buf[];
};

static struct hostent *nonreentrant(bool by_name, const char *name, const void *addr,
                                    socklen_t len, int af, bool *use_real) {
  size_t size = 2048;
  *use_real = false;
  for (;;) {
    struct scratch *s = channel_thread_scratch(sizeof(struct scratch) + size);
    if (!s) {
      h_errno = NETDB_INTERNAL;
      return NULL;
    }
    struct hostent *result = NULL;
    int herr = 0;
    int rc = by_name ? byname(name, af, &s->he, s->buf, size, &result, &herr)
                     : byaddr(addr, len, af, &s->he, s->buf, size, &result, &herr);
    if (rc == ASK_REAL) {
      *use_real = true;
      return NULL;
    }
    if (rc == ERANGE && size < (1u << 20)) {
      size *= 4;
      continue;
    }
    h_errno = herr;
    return result;
  }
}

SHIM_EXPORT struct hostent *gethostbyname2(const char *name, int af) {
  if (!shim_intercepting() || !byname_applies(name, af)) return REAL(gethostbyname2)(name, af);
  int saved = errno;
  bool use_real;
  SHIM_ENTER();
  struct hostent *he = nonreentrant(true, name, NULL, 0, af, &use_real);
  SHIM_LEAVE();
  errno = saved;
  return use_real ? REAL(gethostbyname2)(name, af) : he;
}

SHIM_EXPORT struct hostent *gethostbyname(const char *name) {
  if (!shim_intercepting() || !byname_applies(name, AF_INET)) return REAL(gethostbyname)(name);
  int saved = errno;
  bool use_real;
  SHIM_ENTER();
  struct hostent *he = nonreentrant(true, name, NULL, 0, AF_INET, &use_real);
  SHIM_LEAVE();
  errno = saved;
  return use_real ? REAL(gethostbyname)(name) : he;
}

SHIM_EXPORT int gethostbyname2_r(const char *__restrict name, int af, struct hostent *__restrict ret,
                                 char *__restrict buf, size_t buflen,
                                 struct hostent **__restrict result, int *__restrict h_errnop) {
  if (!shim_intercepting() || !byname_applies(name, af) || !ret || !buf || !result || !h_errnop)
    return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop);
  int saved = errno;
  SHIM_ENTER();
  int rc = byname(name, af, ret, buf, buflen, result, h_errnop);
  SHIM_LEAVE();
  if (rc == ASK_REAL) {
    errno = saved;
    return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop);
  }
  errno = rc ? rc : saved;
  return rc;
}

SHIM_EXPORT int gethostbyname_r(const char *__restrict name, struct hostent *__restrict ret,
                                char *__restrict buf, size_t buflen,
                                struct hostent **__restrict result, int *__restrict h_errnop) {
  if (!shim_intercepting() || !byname_applies(name, AF_INET) || !ret || !buf || !result || !h_errnop)
    return REAL(gethostbyname_r)(name, ret, buf, buflen, result, h_errnop);
  int saved = errno;
  SHIM_ENTER();
  int rc = byname(name, AF_INET, ret, buf, buflen, result, h_errnop);
  SHIM_LEAVE();
  if (rc == ASK_REAL) {
    errno = saved;
    return REAL(gethostbyname_r)(name, ret, buf, buflen, result, h_errnop);
  }
  errno = rc ? rc : saved;
  return rc;
}

SHIM_EXPORT struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type) {
  if (!shim_intercepting() || !byaddr_applies(addr, len, type)) return REAL(gethostbyaddr)(addr, len, type);
  int saved = errno;
  bool use_real;
  SHIM_ENTER();
  struct hostent *he = nonreentrant(false, NULL, addr, len, type, &use_real);
  SHIM_LEAVE();
  errno = saved;
  return use_real ? REAL(gethostbyaddr)(addr, len, type) : he;
}

SHIM_EXPORT int gethostbyaddr_r(const void *__restrict addr, socklen_t len, int type,
                                struct hostent *__restrict ret, char *__restrict buf, size_t buflen,
                                struct hostent **__restrict result, int *__restrict h_errnop) {
  if (!shim_intercepting() || !byaddr_applies(addr, len, type) || !ret || !buf || !result || !h_errnop)
    return REAL(gethostbyaddr_r)(addr, len, type, ret, buf, buflen, result, h_errnop);
  int saved = errno;
  SHIM_ENTER();
  int rc = byaddr(addr, len, type, ret, buf, buflen, result, h_errnop);
  SHIM_LEAVE();
  if (rc == ASK_REAL) {
    errno = saved;
    return REAL(gethostbyaddr_r)(addr, len, type, ret, buf, buflen, result, h_errnop);
  }
  errno = rc ? rc : saved;
  return rc;
}
