/*
 * The shim's side of docs/shim-ipc.md: build requests, validate and parse responses.
 * A response that does not follow the contract counts as a broken channel.
 */
#include "shim.h"
#include "msgpack.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static void addr_text(const union shim_addr *a, int *family, char *text, int *port) {
  if (a->sa.sa_family == AF_INET) {
    *family = 4;
    inet_ntop(AF_INET, &a->in.sin_addr, text, INET6_ADDRSTRLEN);
    *port = ntohs(a->in.sin_port);
  } else {
    *family = 6;
    inet_ntop(AF_INET6, &a->in6.sin6_addr, text, INET6_ADDRSTRLEN);
    *port = ntohs(a->in6.sin6_port);
  }
}

static bool parse_ip(const char *text, int port, union shim_addr *out) {
  memset(out, 0, sizeof *out);
  if (port < 0 || port > 65535) return false;
  if (inet_pton(AF_INET, text, &out->in.sin_addr) == 1) {
    out->in.sin_family = AF_INET;
    out->in.sin_port = htons((uint16_t)port);
    return true;
  }
  if (inet_pton(AF_INET6, text, &out->in6.sin6_addr) == 1) {
    out->in6.sin6_family = AF_INET6;
    out->in6.sin6_port = htons((uint16_t)port);
    /* "::ffff:127.0.0.1" is an IPv4 address; keeping it v4 lets an AF_INET socket use it
     * (shim_addr_for_domain maps it back for AF_INET6 sockets). */
    union shim_addr v6 = *out;
    socklen_t len;
    return shim_addr_from(&v6.sa, sizeof v6.in6, out, &len);
  }
  return false;
}

/* Sends a request and opens the response map. Returns the number of entries, or -1. */
static int call(struct mp_writer *w, uint8_t **body, struct mp_reader *r) {
  if (w->overflow) return -1;
  size_t len;
  if (channel_call(w->buf, w->len, body, &len) < 0) return -1;
  mp_reader_init(r, *body, len);
  struct mp_value v;
  if (!mp_read(r, &v) || v.type != MP_MAP) {
    shim_log("protocol error: response is not a map");
    return -1;
  }
  return (int)v.len;
}

static bool read_int(struct mp_reader *r, int64_t *out) {
  struct mp_value v;
  if (!mp_read(r, &v) || (v.type != MP_INT && v.type != MP_FLOAT) || !v.is_integral) return false;
  *out = v.i;
  return true;
}

static const int known_errnos[] = {
  ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET, ECONNABORTED, EACCES,
  EPERM, EADDRNOTAVAIL, EADDRINUSE, ENETDOWN, EHOSTDOWN, EAFNOSUPPORT, EINVAL, EAGAIN,
  EINPROGRESS, EINTR, EIO, ENOBUFS, EMSGSIZE,
};

static int sane_errno(int64_t e) {
  for (size_t i = 0; i < sizeof known_errnos / sizeof known_errnos[0]; i++)
    if (e == known_errnos[i]) return (int)e;
  return ECONNREFUSED;
}

static int sane_eai(int64_t e) {
  switch (e) {
    case EAI_NONAME: case EAI_AGAIN: case EAI_FAIL: case EAI_NODATA: case EAI_FAMILY:
    case EAI_SERVICE: case EAI_MEMORY: case EAI_OVERFLOW:
      return (int)e;
    default:
      return EAI_FAIL;
  }
}

/* Fields common to every response. Returns true if the key was one of them. */
struct common {
  int ok;          /* -1 missing */
  char action[16];
  int64_t err, eai;
  bool has_err, has_eai;
  char message[256];
};

static bool read_common(struct mp_reader *r, const struct mp_value *key, struct common *c,
                        bool *bad) {
  struct mp_value v;
  if (mp_str_eq(key, "ok")) {
    if (!mp_read(r, &v) || v.type != MP_BOOL) *bad = true;
    else c->ok = v.b;
  } else if (mp_str_eq(key, "action")) {
    if (!mp_read(r, &v) || !mp_str_copy(&v, c->action, sizeof c->action)) *bad = true;
  } else if (mp_str_eq(key, "errno")) {
    c->has_err = read_int(r, &c->err);
    if (!c->has_err) *bad = true;
  } else if (mp_str_eq(key, "eai")) {
    c->has_eai = read_int(r, &c->eai);
    if (!c->has_eai) *bad = true;
  } else if (mp_str_eq(key, "message")) {
    if (!mp_read(r, &v)) *bad = true;
    else if (v.type == MP_STR) {
      size_t n = v.len < sizeof c->message - 1 ? v.len : sizeof c->message - 1;
      memcpy(c->message, v.s, n);
      c->message[n] = 0;
    }
  } else {
    return false;
  }
  return true;
}

/* ok/action → kind; false if the response breaks the contract. */
static bool classify(const struct common *c, const char *remote_action, enum reply_kind *kind) {
  if (c->ok < 0) return false;
  if (!c->ok) {
    *kind = REPLY_ERROR;
    return true;
  }
  if (strcmp(c->action, "local") == 0) *kind = REPLY_LOCAL;
  else if (strcmp(c->action, remote_action) == 0) *kind = REPLY_REMOTE;
  else return false;
  return true;
}

SHIM_HIDDEN int proto_connect(bool udp, const union shim_addr *dest, int timeout_ms,
                              struct connect_reply *out) {
  uint8_t buf[512];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  int family, port;
  char text[INET6_ADDRSTRLEN];
  addr_text(dest, &family, text, &port);
  bool nonblock = timeout_ms < 0;
  mp_write_map(&w, nonblock ? 7 : 6);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "connect");
  mp_write_cstr(&w, "proto"); mp_write_cstr(&w, udp ? "udp" : "tcp");
  mp_write_cstr(&w, "family"); mp_write_int(&w, family);
  mp_write_cstr(&w, "addr"); mp_write_cstr(&w, text);
  mp_write_cstr(&w, "port"); mp_write_int(&w, port);
  mp_write_cstr(&w, "timeoutMs"); mp_write_int(&w, nonblock ? 0 : timeout_ms);
  if (nonblock) {
    mp_write_cstr(&w, "nonblock"); mp_write_bool(&w, true);
  }

  uint8_t *body = NULL;
  struct mp_reader r;
  int n = call(&w, &body, &r);
  if (n < 0) {
    free(body);
    return -1;
  }
  struct common c = {.ok = -1};
  char proxy_addr[64] = "", local_addr[64] = "";
  int64_t proxy_port = -1, local_port = -1, stream = -1;
  bool bad = false;
  for (int i = 0; i < n && !bad; i++) {
    struct mp_value key, v;
    if (!mp_read(&r, &key) || key.type != MP_STR) {
      bad = true;
      break;
    }
    if (read_common(&r, &key, &c, &bad)) continue;
    if (mp_str_eq(&key, "proxyAddr")) {
      if (!mp_read(&r, &v) || !mp_str_copy(&v, proxy_addr, sizeof proxy_addr)) bad = true;
    } else if (mp_str_eq(&key, "localAddr")) {
      if (!mp_read(&r, &v) || !mp_str_copy(&v, local_addr, sizeof local_addr)) bad = true;
    } else if (mp_str_eq(&key, "proxyPort")) {
      if (!read_int(&r, &proxy_port)) bad = true;
    } else if (mp_str_eq(&key, "localPort")) {
      if (!read_int(&r, &local_port)) bad = true;
    } else if (mp_str_eq(&key, "stream")) {
      if (!read_int(&r, &stream)) bad = true;
    } else if (!mp_skip(&r)) {
      bad = true;
    }
  }
  free(body);
  memset(out, 0, sizeof *out);
  if (bad || !classify(&c, "proxy", &out->kind)) {
    shim_log("protocol error: malformed connect response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) {
    out->err = c.has_err ? sane_errno(c.err) : ECONNREFUSED;
    shim_log("connect %s:%d refused by proxy: errno %d %s", text, port, out->err, c.message);
    return 0;
  }
  if (out->kind == REPLY_LOCAL) {
    shim_log("connect %s %s:%d -> local", udp ? "udp" : "tcp", text, port);
    return 0;
  }
  if (!parse_ip(proxy_addr, (int)(proxy_port >= 0 && proxy_port <= 65535 ? proxy_port : -1),
                &out->proxy) ||
      proxy_port == 0 || (!udp && stream < 0)) {
    shim_log("protocol error: connect response without a usable proxyAddr/proxyPort/stream");
    return -1;
  }
  out->stream = stream;
  if (local_addr[0] && local_port >= 0 && local_port <= 65535)
    out->has_local = parse_ip(local_addr, (int)local_port, &out->local);
  shim_log("connect %s %s:%d -> proxy %s:%d stream %lld", udp ? "udp" : "tcp", text, port,
           proxy_addr, (int)proxy_port, (long long)stream);
  return 0;
}

SHIM_HIDDEN int proto_attach(int64_t stream, int port) {
  uint8_t buf[128];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 3);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "attach");
  mp_write_cstr(&w, "stream"); mp_write_int(&w, stream);
  mp_write_cstr(&w, "port"); mp_write_int(&w, port);
  if (w.overflow) return -1;
  return channel_notify(w.buf, w.len);
}

static bool read_addrs(struct mp_reader *r, struct resolve_reply *out) {
  struct mp_value v;
  if (!mp_read(r, &v) || v.type != MP_ARRAY) return false;
  uint32_t count = v.len;
  for (uint32_t i = 0; i < count; i++) {
    struct mp_value m;
    if (!mp_read(r, &m) || m.type != MP_MAP) return false;
    int64_t family = 0;
    char text[64] = "";
    for (uint32_t k = 0; k < m.len; k++) {
      struct mp_value key, val;
      if (!mp_read(r, &key) || key.type != MP_STR) return false;
      if (mp_str_eq(&key, "family")) {
        if (!read_int(r, &family)) return false;
      } else if (mp_str_eq(&key, "addr")) {
        if (!mp_read(r, &val) || !mp_str_copy(&val, text, sizeof text)) return false;
      } else if (!mp_skip(r)) {
        return false;
      }
    }
    if (out->naddrs >= SHIM_MAX_ADDRS) continue; /* keep the first ones */
    struct resolved_addr *a = &out->addrs[out->naddrs];
    if (family == 4 && inet_pton(AF_INET, text, a->bytes) == 1) a->family = AF_INET;
    else if (family == 6 && inet_pton(AF_INET6, text, a->bytes) == 1) a->family = AF_INET6;
    else return false;
    out->naddrs++;
  }
  return true;
}

SHIM_HIDDEN int proto_resolve(const char *name, int family, struct resolve_reply *out) {
  uint8_t buf[1400];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 3);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "resolve");
  mp_write_cstr(&w, "name"); mp_write_cstr(&w, name);
  mp_write_cstr(&w, "family"); mp_write_int(&w, family == AF_INET ? 4 : family == AF_INET6 ? 6 : 0);

  memset(out, 0, sizeof *out);
  uint8_t *body = NULL;
  struct mp_reader r;
  int n = call(&w, &body, &r);
  if (n < 0) {
    free(body);
    return -1;
  }
  struct common c = {.ok = -1};
  bool bad = false;
  for (int i = 0; i < n && !bad; i++) {
    struct mp_value key, v;
    if (!mp_read(&r, &key) || key.type != MP_STR) {
      bad = true;
      break;
    }
    if (read_common(&r, &key, &c, &bad)) continue;
    if (mp_str_eq(&key, "addrs")) {
      if (!read_addrs(&r, out)) bad = true;
    } else if (mp_str_eq(&key, "canonname")) {
      if (!mp_read(&r, &v)) bad = true;
      else if (v.type == MP_STR && !mp_str_copy(&v, out->canonname, sizeof out->canonname)) bad = true;
    } else if (!mp_skip(&r)) {
      bad = true;
    }
  }
  free(body);
  if (bad || !classify(&c, "remote", &out->kind)) {
    shim_log("protocol error: malformed resolve response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->eai = c.has_eai ? sane_eai(c.eai) : EAI_FAIL;
  shim_log("resolve %s family %d -> %s (%d addrs, eai %d) %s", name, family,
           out->kind == REPLY_LOCAL ? "local" : out->kind == REPLY_REMOTE ? "remote" : "error",
           out->naddrs, out->eai, c.message);
  return 0;
}

SHIM_HIDDEN int proto_reverse(int family, const void *addr, struct reverse_reply *out) {
  char text[INET6_ADDRSTRLEN];
  if (!inet_ntop(family, addr, text, sizeof text)) return -1;
  uint8_t buf[256];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 3);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "reverse");
  mp_write_cstr(&w, "family"); mp_write_int(&w, family == AF_INET ? 4 : 6);
  mp_write_cstr(&w, "addr"); mp_write_cstr(&w, text);

  memset(out, 0, sizeof *out);
  uint8_t *body = NULL;
  struct mp_reader r;
  int n = call(&w, &body, &r);
  if (n < 0) {
    free(body);
    return -1;
  }
  struct common c = {.ok = -1};
  bool bad = false;
  for (int i = 0; i < n && !bad; i++) {
    struct mp_value key, v;
    if (!mp_read(&r, &key) || key.type != MP_STR) {
      bad = true;
      break;
    }
    if (read_common(&r, &key, &c, &bad)) continue;
    if (mp_str_eq(&key, "name")) {
      if (!mp_read(&r, &v) || !mp_str_copy(&v, out->name, sizeof out->name)) bad = true;
    } else if (!mp_skip(&r)) {
      bad = true;
    }
  }
  free(body);
  if (bad || !classify(&c, "remote", &out->kind) || (out->kind == REPLY_REMOTE && !out->name[0])) {
    shim_log("protocol error: malformed reverse response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->eai = c.has_eai ? sane_eai(c.eai) : EAI_NONAME;
  shim_log("reverse %s -> %s %s", text,
           out->kind == REPLY_LOCAL ? "local" : out->kind == REPLY_REMOTE ? out->name : "error",
           c.message);
  return 0;
}

/* ---- incoming traffic (listen.c): listen, unlisten, peer ---- */

SHIM_HIDDEN int proto_listen(int asked_port, const union shim_addr *bound, struct listen_reply *out) {
  uint8_t buf[256];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  int family, port;
  char text[INET6_ADDRSTRLEN];
  addr_text(bound, &family, text, &port);
  mp_write_map(&w, 5);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "listen");
  mp_write_cstr(&w, "port"); mp_write_int(&w, asked_port);
  mp_write_cstr(&w, "localPort"); mp_write_int(&w, port);
  mp_write_cstr(&w, "family"); mp_write_int(&w, family);
  mp_write_cstr(&w, "addr"); mp_write_cstr(&w, text);

  memset(out, 0, sizeof *out);
  uint8_t *body = NULL;
  struct mp_reader r;
  int n = call(&w, &body, &r);
  if (n < 0) {
    free(body);
    return -1;
  }
  struct common c = {.ok = -1};
  bool bad = false;
  for (int i = 0; i < n && !bad; i++) {
    struct mp_value key;
    if (!mp_read(&r, &key) || key.type != MP_STR) {
      bad = true;
      break;
    }
    if (read_common(&r, &key, &c, &bad)) continue;
    if (!mp_skip(&r)) bad = true;
  }
  free(body);
  if (bad || !classify(&c, "remote", &out->kind)) {
    shim_log("protocol error: malformed listen response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->err = c.has_err ? sane_errno(c.err) : EADDRINUSE;
  shim_log("listen port %d (here %s:%d) -> %s %s", asked_port, text, port,
           out->kind == REPLY_LOCAL ? "local" : out->kind == REPLY_REMOTE ? "pod" : "refused",
           c.message);
  return 0;
}

SHIM_HIDDEN int proto_unlisten(int asked_port) {
  uint8_t buf[64];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 2);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "unlisten");
  mp_write_cstr(&w, "port"); mp_write_int(&w, asked_port);
  if (w.overflow) return -1;
  return channel_notify(w.buf, w.len);
}

SHIM_HIDDEN int proto_peer(int port, struct peer_reply *out) {
  uint8_t buf[64];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 2);
  mp_write_cstr(&w, "op"); mp_write_cstr(&w, "peer");
  mp_write_cstr(&w, "port"); mp_write_int(&w, port);

  memset(out, 0, sizeof *out);
  uint8_t *body = NULL;
  struct mp_reader r;
  int n = call(&w, &body, &r);
  if (n < 0) {
    free(body);
    return -1;
  }
  struct common c = {.ok = -1};
  char addr[64] = "", local_addr[64] = "";
  int64_t rport = -1, lport = -1;
  bool bad = false;
  for (int i = 0; i < n && !bad; i++) {
    struct mp_value key, v;
    if (!mp_read(&r, &key) || key.type != MP_STR) {
      bad = true;
      break;
    }
    if (read_common(&r, &key, &c, &bad)) continue;
    if (mp_str_eq(&key, "addr")) {
      if (!mp_read(&r, &v) || !mp_str_copy(&v, addr, sizeof addr)) bad = true;
    } else if (mp_str_eq(&key, "localAddr")) {
      if (!mp_read(&r, &v) || !mp_str_copy(&v, local_addr, sizeof local_addr)) bad = true;
    } else if (mp_str_eq(&key, "port")) {
      if (!read_int(&r, &rport)) bad = true;
    } else if (mp_str_eq(&key, "localPort")) {
      if (!read_int(&r, &lport)) bad = true;
    } else if (!mp_skip(&r)) {
      bad = true;
    }
  }
  free(body);
  if (bad || !classify(&c, "remote", &out->kind) || out->kind == REPLY_ERROR) {
    shim_log("protocol error: malformed peer response");
    return -1;
  }
  if (out->kind == REPLY_REMOTE) {
    if (!parse_ip(addr, (int)(rport >= 0 && rport <= 65535 ? rport : -1), &out->remote)) {
      shim_log("protocol error: peer response without a usable addr/port");
      return -1;
    }
    out->has_local = local_addr[0] && lport >= 0 && lport <= 65535 &&
                     parse_ip(local_addr, (int)lport, &out->local);
  }
  return 0;
}
