/*
 * The shim's side of docs/shim-ipc.md: build requests, validate and parse responses.
 * A response that does not follow the contract counts as a broken channel.
 */
#include "shim.h"
#include "msgpack.h"
#include "replies.h"

#include <arpa/inet.h>
#include <stdatomic.h>
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

/* Sends the request in w and reads the reply into the table (common fields first). 0, or
 * -1 (channel failure or malformed reply, logged as `what`). */
static int call(struct mp_writer *w, const struct reply_field *fields, size_t n, uint64_t *seen,
                const char *what) {
  if (w->overflow) return -1;
  int rc = reply_call(w, fields, n, seen);
  if (rc == -2) shim_log("protocol error: malformed %s response", what);
  return rc < 0 ? -1 : 0;
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

/* ok/action -> kind; false if the reply breaks the contract (no ok, an unknown action). */
static bool classify(const struct reply_common *c, uint64_t seen, const char *remote_action,
                     enum reply_kind *kind) {
  if (!RF_SEEN(seen, RC_OK)) return false;
  if (!c->ok) {
    *kind = REPLY_ERROR;
    return true;
  }
  if (strcmp(c->action, WIRE_ACTION_LOCAL) == 0) *kind = REPLY_LOCAL;
  else if (strcmp(c->action, remote_action) == 0) *kind = REPLY_REMOTE;
  else return false;
  return true;
}

#define FIELDS(t) t, sizeof t / sizeof t[0]

/* UDP destinations whose relay the proxy shares among the session's sockets of one owner
 * (its DNS relay for a nameserver: sharedUid in the reply). A later connect of a socket of
 * that owner to the same destination is given the relay without asking: Go's resolver, for
 * one, makes a socket per query, and the question cost a round trip to the proxy each time.
 * Written once and only added to, so readers take no lock (a fork may copy it at any time);
 * two threads that learn the same destination at once may both add it, which is harmless. */
#define SHARED_RELAYS 8
static struct shared_relay {
  _Atomic bool ready;
  union shim_addr dest, proxy;
  uint32_t uid;
} shared_relays[SHARED_RELAYS];
static _Atomic unsigned shared_relays_used;

static bool shared_relay_lookup(const union shim_addr *dest, uint32_t uid, union shim_addr *proxy) {
  unsigned n = atomic_load_explicit(&shared_relays_used, memory_order_acquire);
  for (unsigned i = 0; i < n && i < SHARED_RELAYS; i++) {
    struct shared_relay *r = &shared_relays[i];
    if (!atomic_load_explicit(&r->ready, memory_order_acquire)) continue;
    if (r->uid == uid && shim_addr_equal(&r->dest, dest)) {
      *proxy = r->proxy;
      return true;
    }
  }
  return false;
}

static void shared_relay_add(const union shim_addr *dest, uint32_t uid, const union shim_addr *proxy) {
  unsigned at = atomic_fetch_add_explicit(&shared_relays_used, 1, memory_order_acq_rel);
  if (at >= SHARED_RELAYS) return; /* full: later connects ask, as before */
  struct shared_relay *r = &shared_relays[at];
  r->dest = *dest;
  r->proxy = *proxy;
  r->uid = uid;
  atomic_store_explicit(&r->ready, true, memory_order_release);
}

SHIM_HIDDEN int proto_connect(bool udp, const union shim_addr *dest, int timeout_ms, int64_t sock_uid,
                              struct connect_reply *out) {
  if (udp && sock_uid >= 0) {
    memset(out, 0, sizeof *out);
    if (shared_relay_lookup(dest, (uint32_t)sock_uid, &out->proxy)) {
      out->kind = REPLY_REMOTE;
      return 0;
    }
  }
  uint8_t buf[512];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  int family, port;
  char text[INET6_ADDRSTRLEN];
  addr_text(dest, &family, text, &port);
  bool nonblock = timeout_ms < 0, owned = udp && sock_uid >= 0;
  mp_write_map(&w, 6 + nonblock + owned);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_CONNECT);
  mp_write_kv_str(&w, WIRE_KEY_PROTO, udp ? WIRE_PROTO_UDP : WIRE_PROTO_TCP);
  mp_write_kv_int(&w, WIRE_KEY_FAMILY, family);
  mp_write_kv_str(&w, WIRE_KEY_ADDR, text);
  mp_write_kv_int(&w, WIRE_KEY_PORT, port);
  mp_write_kv_int(&w, WIRE_KEY_TIMEOUT_MS, nonblock ? 0 : timeout_ms);
  if (nonblock) mp_write_kv_bool(&w, WIRE_KEY_NONBLOCK, true);
  if (owned) mp_write_kv_int(&w, WIRE_KEY_UID, sock_uid);

  struct reply_common c = {0};
  char proxy_addr[WIRE_MAX_ADDRESS_TEXT + 1] = "", local_addr[WIRE_MAX_ADDRESS_TEXT + 1] = "";
  int64_t proxy_port = -1, local_port = -1, stream = -1, shared_uid = -1;
  const struct reply_field fields[] = {
    REPLY_COMMON_FIELDS(&c),
    {WIRE_KEY_PROXY_ADDR, RF_STR, proxy_addr, sizeof proxy_addr, NULL, NULL},
    {WIRE_KEY_LOCAL_ADDR, RF_STR, local_addr, sizeof local_addr, NULL, NULL},
    {WIRE_KEY_PROXY_PORT, RF_INT, &proxy_port, 0, NULL, NULL},
    {WIRE_KEY_LOCAL_PORT, RF_INT, &local_port, 0, NULL, NULL},
    {WIRE_KEY_STREAM, RF_INT, &stream, 0, NULL, NULL},
    {WIRE_KEY_SHARED_UID, RF_INT, &shared_uid, 0, NULL, NULL},
  };
  uint64_t seen;
  memset(out, 0, sizeof *out);
  if (call(&w, FIELDS(fields), &seen, WIRE_OP_CONNECT) < 0) return -1;
  if (!classify(&c, seen, WIRE_ACTION_PROXY, &out->kind)) {
    shim_log("protocol error: malformed connect response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) {
    out->err = RF_SEEN(seen, RC_ERRNO) ? sane_net_errno(c.err) : ECONNREFUSED;
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
  /* Remembered only for the socket's own owner, whom the proxy said it serves. */
  if (udp && sock_uid >= 0 && shared_uid == sock_uid) shared_relay_add(dest, (uint32_t)sock_uid, &out->proxy);
  shim_log("connect %s %s:%d -> proxy %s:%d stream %lld%s", udp ? "udp" : "tcp", text, port,
           proxy_addr, (int)proxy_port, (long long)stream, shared_uid >= 0 ? " (shared)" : "");
  return 0;
}

SHIM_HIDDEN int proto_attach(bool udp, int64_t stream, int port, uint64_t inode, uint32_t uid) {
  uint8_t buf[128];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, udp ? 6 : 5);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_ATTACH);
  mp_write_kv_int(&w, WIRE_KEY_STREAM, stream);
  mp_write_kv_int(&w, WIRE_KEY_PORT, port);
  mp_write_kv_int(&w, WIRE_KEY_INODE, (int64_t)inode);
  mp_write_kv_int(&w, WIRE_KEY_UID, (int64_t)uid);
  if (udp) mp_write_kv_str(&w, WIRE_KEY_PROTO, WIRE_PROTO_UDP);
  if (w.overflow) return -1;
  return channel_notify(w.buf, w.len);
}

SHIM_HIDDEN int proto_notice(const char *what) {
  uint8_t buf[64];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 2);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_NOTICE);
  mp_write_kv_str(&w, WIRE_KEY_WHAT, what);
  if (w.overflow) return -1;
  return channel_notify(w.buf, w.len);
}

/* resolve's addrs: a list of {family, addr}; the first SHIM_MAX_ADDRS are kept. */
static bool read_addrs(struct mp_reader *r, void *dst) {
  struct resolve_reply *out = dst;
  struct mp_value v;
  if (!mp_read(r, &v) || v.type != MP_ARRAY) return false;
  for (uint32_t i = 0; i < v.len; i++) {
    struct mp_value m;
    if (!mp_read(r, &m) || m.type != MP_MAP) return false;
    int64_t family = 0;
    char text[WIRE_MAX_ADDRESS_TEXT + 1] = "";
    const struct reply_field fields[] = {
      {WIRE_KEY_FAMILY, RF_INT, &family, 0, NULL, NULL},
      {WIRE_KEY_ADDR, RF_STR, text, sizeof text, NULL, NULL},
    };
    uint64_t seen;
    if (!reply_read_map(r, m.len, FIELDS(fields), &seen)) return false;
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
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_RESOLVE);
  mp_write_kv_str(&w, WIRE_KEY_NAME, name);
  mp_write_kv_int(&w, WIRE_KEY_FAMILY, family == AF_INET ? 4 : family == AF_INET6 ? 6 : 0);

  memset(out, 0, sizeof *out);
  struct reply_common c = {0};
  const struct reply_field fields[] = {
    REPLY_COMMON_FIELDS(&c),
    {WIRE_KEY_ADDRS, RF_CUSTOM, out, 0, read_addrs, NULL},
    {WIRE_KEY_CANONNAME, RF_OPT_STR, out->canonname, sizeof out->canonname, NULL, NULL},
  };
  uint64_t seen;
  if (call(&w, FIELDS(fields), &seen, WIRE_OP_RESOLVE) < 0) return -1;
  if (!classify(&c, seen, WIRE_ACTION_REMOTE, &out->kind)) {
    shim_log("protocol error: malformed resolve response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->eai = RF_SEEN(seen, RC_EAI) ? sane_eai(c.eai) : EAI_FAIL;
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
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_REVERSE);
  mp_write_kv_int(&w, WIRE_KEY_FAMILY, family == AF_INET ? 4 : 6);
  mp_write_kv_str(&w, WIRE_KEY_ADDR, text);

  memset(out, 0, sizeof *out);
  struct reply_common c = {0};
  const struct reply_field fields[] = {
    REPLY_COMMON_FIELDS(&c),
    {WIRE_KEY_NAME, RF_STR, out->name, sizeof out->name, NULL, NULL},
  };
  uint64_t seen;
  if (call(&w, FIELDS(fields), &seen, WIRE_OP_REVERSE) < 0) return -1;
  if (!classify(&c, seen, WIRE_ACTION_REMOTE, &out->kind) || (out->kind == REPLY_REMOTE && !out->name[0])) {
    shim_log("protocol error: malformed reverse response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->eai = RF_SEEN(seen, RC_EAI) ? sane_eai(c.eai) : EAI_NONAME;
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
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_LISTEN);
  mp_write_kv_int(&w, WIRE_KEY_PORT, asked_port);
  mp_write_kv_int(&w, WIRE_KEY_LOCAL_PORT, port);
  mp_write_kv_int(&w, WIRE_KEY_FAMILY, family);
  mp_write_kv_str(&w, WIRE_KEY_ADDR, text);

  memset(out, 0, sizeof *out);
  struct reply_common c = {0};
  const struct reply_field fields[] = {REPLY_COMMON_FIELDS(&c)};
  uint64_t seen;
  if (call(&w, FIELDS(fields), &seen, WIRE_OP_LISTEN) < 0) return -1;
  if (!classify(&c, seen, WIRE_ACTION_REMOTE, &out->kind)) {
    shim_log("protocol error: malformed listen response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->err = RF_SEEN(seen, RC_ERRNO) ? sane_net_errno(c.err) : EADDRINUSE;
  shim_log("listen port %d (here %s:%d) -> %s %s", asked_port, text, port,
           out->kind == REPLY_LOCAL ? "local" : out->kind == REPLY_REMOTE ? "pod" : "refused",
           c.message);
  return 0;
}

SHIM_HIDDEN int proto_unlisten(int asked_port) {
  uint8_t buf[64];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 2);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_UNLISTEN);
  mp_write_kv_int(&w, WIRE_KEY_PORT, asked_port);
  if (w.overflow) return -1;
  return channel_notify(w.buf, w.len);
}

SHIM_HIDDEN int proto_peer(const union shim_addr *from, int local_port, struct peer_reply *out) {
  uint8_t buf[128];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  int family, port;
  char text[INET6_ADDRSTRLEN];
  addr_text(from, &family, text, &port);
  mp_write_map(&w, 4);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_PEER);
  mp_write_kv_int(&w, WIRE_KEY_PORT, port);
  mp_write_kv_str(&w, WIRE_KEY_ADDR, text);
  mp_write_kv_int(&w, WIRE_KEY_LOCAL_PORT, local_port);

  memset(out, 0, sizeof *out);
  struct reply_common c = {0};
  char addr[WIRE_MAX_ADDRESS_TEXT + 1] = "", local_addr[WIRE_MAX_ADDRESS_TEXT + 1] = "";
  int64_t rport = -1, lport = -1;
  const struct reply_field fields[] = {
    REPLY_COMMON_FIELDS(&c),
    {WIRE_KEY_ADDR, RF_STR, addr, sizeof addr, NULL, NULL},
    {WIRE_KEY_LOCAL_ADDR, RF_STR, local_addr, sizeof local_addr, NULL, NULL},
    {WIRE_KEY_PORT, RF_INT, &rport, 0, NULL, NULL},
    {WIRE_KEY_LOCAL_PORT, RF_INT, &lport, 0, NULL, NULL},
  };
  uint64_t seen;
  if (call(&w, FIELDS(fields), &seen, WIRE_OP_PEER) < 0) return -1;
  if (!classify(&c, seen, WIRE_ACTION_REMOTE, &out->kind) || out->kind == REPLY_ERROR) {
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

/* ---- glibc's resolver (res.c): res.config, res.send ---- */

static void res_config_string(const char *key, const char *value, void *dst) {
  struct res_config_reply *out = dst;
  if (strcmp(key, WIRE_KEY_NAMESERVERS) == 0) {
    if (out->nnameservers < WIRE_MAX_NAMESERVERS && strlen(value) <= WIRE_MAX_ADDRESS_TEXT)
      strcpy(out->nameservers[out->nnameservers++], value);
  } else if (out->nsearch < WIRE_MAX_SEARCH && value[0] && strlen(value) <= WIRE_MAX_DOMAIN) {
    strcpy(out->search[out->nsearch++], value);
  }
}

SHIM_HIDDEN int proto_res_config(struct res_config_reply *out) {
  uint8_t buf[64];
  struct mp_writer w = {buf, sizeof buf, 0, false};
  mp_write_map(&w, 1);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_RES_CONFIG);

  memset(out, 0, sizeof *out);
  out->ndots = 1;
  out->timeout_ms = 5000;
  out->attempts = 2;
  struct reply_common c = {0};
  const struct reply_field fields[] = {
    REPLY_COMMON_FIELDS(&c),
    {WIRE_KEY_NAMESERVERS, RF_STRINGS, out, 0, NULL, res_config_string},
    {WIRE_KEY_SEARCH, RF_STRINGS, out, 0, NULL, res_config_string},
    {WIRE_KEY_NDOTS, RF_INT, &out->ndots, 0, NULL, NULL},
    {WIRE_KEY_TIMEOUT_MS, RF_INT, &out->timeout_ms, 0, NULL, NULL},
    {WIRE_KEY_ATTEMPTS, RF_INT, &out->attempts, 0, NULL, NULL},
  };
  uint64_t seen;
  if (call(&w, FIELDS(fields), &seen, WIRE_OP_RES_CONFIG) < 0) return -1;
  if (!classify(&c, seen, WIRE_ACTION_REMOTE, &out->kind)) {
    shim_log("protocol error: malformed res.config response");
    return -1;
  }
  if (out->kind == REPLY_ERROR) out->err = RF_SEEN(seen, RC_ERRNO) ? sane_net_errno(c.err) : ECONNREFUSED;
  if (out->ndots < 0 || out->ndots > 15) out->ndots = out->ndots < 0 ? 0 : 15;
  if (out->timeout_ms < 0 || out->timeout_ms > 30000) out->timeout_ms = 5000;
  if (out->attempts < 1 || out->attempts > 5) out->attempts = 2;
  shim_log("res.config -> %s (%d nameservers, %d search domains, ndots %d) %s",
           out->kind == REPLY_LOCAL ? "local" : out->kind == REPLY_REMOTE ? "pod" : "error",
           out->nnameservers, out->nsearch, (int)out->ndots, c.message);
  return 0;
}

/* res.send's answer: the first out->cap bytes go to out->buf; out->len is its whole length. */
static bool read_answer(struct mp_reader *r, void *dst) {
  struct res_send_reply *out = dst;
  struct mp_value v;
  if (!mp_read(r, &v) || v.type != MP_BIN || v.len > WIRE_MAX_DNS_MESSAGE) return false;
  out->len = v.len;
  memcpy(out->buf, v.s, v.len < out->cap ? v.len : out->cap);
  return true;
}

SHIM_HIDDEN int proto_res_send(const unsigned char *query, size_t len, struct res_send_reply *out) {
  out->err = 0;
  out->len = 0;
  if (len > WIRE_MAX_DNS_MESSAGE) {
    out->err = EMSGSIZE;
    return 0;
  }
  size_t cap = len + 64;
  uint8_t *buf = malloc(cap);
  if (!buf) return -1;
  struct mp_writer w = {buf, cap, 0, false};
  mp_write_map(&w, 2);
  mp_write_kv_str(&w, WIRE_KEY_OP, WIRE_OP_RES_SEND);
  mp_write_cstr(&w, WIRE_KEY_QUERY);
  mp_write_bin(&w, query, len);

  struct reply_common c = {0};
  const struct reply_field fields[] = {
    REPLY_COMMON_FIELDS(&c),
    {WIRE_KEY_ANSWER, RF_CUSTOM, out, 0, read_answer, NULL},
  };
  uint64_t seen;
  int rc = call(&w, FIELDS(fields), &seen, WIRE_OP_RES_SEND);
  free(buf);
  if (rc < 0) return -1;
  if (!RF_SEEN(seen, RC_OK) || (c.ok && !RF_SEEN(seen, RC_COUNT) /* answer */)) {
    shim_log("protocol error: malformed res.send response");
    return -1;
  }
  if (!c.ok) {
    out->err = RF_SEEN(seen, RC_ERRNO) ? sane_net_errno(c.err) : ETIMEDOUT;
    if (out->err == ECONNREFUSED && RF_SEEN(seen, RC_ERRNO) && c.err != ECONNREFUSED) out->err = ETIMEDOUT;
  }
  shim_log("res.send %zu bytes -> %s %zu bytes %s", len, c.ok ? "answer" : "error", out->len, c.message);
  return 0;
}
