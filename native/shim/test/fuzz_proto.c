/*
 * Feeds random and mutated responses to the shim's response parsers (proto.c over
 * msgpack.c), built with ASan/UBSan by run.sh. The channel is stubbed: channel_call
 * returns the current input. Checks only that nothing crashes or reads out of bounds.
 * usage: fuzz_proto [iterations] [seed-dir]   (seeds: see seeds.h)
 */
#include "../shim.h"
#include "../msgpack.h"
#include "seeds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t input[4096];
static size_t input_len;

int channel_call(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len) {
  (void)req, (void)len;
  if (!input_len) return -1;
  *resp = malloc(input_len);
  memcpy(*resp, input, input_len); /* exact size: ASan catches any overread */
  *resp_len = input_len;
  return 0;
}
int channel_notify(const uint8_t *req, size_t len) { (void)req, (void)len; return 0; }
void shim_log(const char *fmt, ...) { (void)fmt; }

static void seed(int which) {
  struct mp_writer w = {input, sizeof input, 0, false};
  if (which == 0) {
    mp_write_map(&w, 7);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, true);
    mp_write_cstr(&w, "action"); mp_write_cstr(&w, "proxy");
    mp_write_cstr(&w, "proxyAddr"); mp_write_cstr(&w, "127.0.0.1");
    mp_write_cstr(&w, "proxyPort"); mp_write_int(&w, 40000);
    mp_write_cstr(&w, "stream"); mp_write_int(&w, 7);
    mp_write_cstr(&w, "localAddr"); mp_write_cstr(&w, "10.0.0.1");
    mp_write_cstr(&w, "localPort"); mp_write_int(&w, 5555);
  } else if (which == 1) {
    mp_write_map(&w, 4);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, true);
    mp_write_cstr(&w, "action"); mp_write_cstr(&w, "remote");
    mp_write_cstr(&w, "addrs"); mp_write_array(&w, 2);
    mp_write_map(&w, 2); mp_write_cstr(&w, "family"); mp_write_int(&w, 4);
    mp_write_cstr(&w, "addr"); mp_write_cstr(&w, "1.2.3.4");
    mp_write_map(&w, 2); mp_write_cstr(&w, "family"); mp_write_int(&w, 6);
    mp_write_cstr(&w, "addr"); mp_write_cstr(&w, "fd00::1");
    mp_write_cstr(&w, "canonname"); mp_write_cstr(&w, "a.b.c");
  } else if (which == 3) {
    mp_write_map(&w, 6);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, true);
    mp_write_cstr(&w, "action"); mp_write_cstr(&w, "remote");
    mp_write_cstr(&w, "addr"); mp_write_cstr(&w, "10.0.0.9");
    mp_write_cstr(&w, "port"); mp_write_int(&w, 5555);
    mp_write_cstr(&w, "localAddr"); mp_write_cstr(&w, "fd00::5");
    mp_write_cstr(&w, "localPort"); mp_write_int(&w, 8080);
  } else {
    mp_write_map(&w, 3);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, false);
    mp_write_cstr(&w, "eai"); mp_write_int(&w, -2);
    mp_write_cstr(&w, "message"); mp_write_cstr(&w, "nope");
  }
  input_len = w.len;
}

static int network_seed(const char *name) { return !starts_with(name, "fs."); }

/* A sample reply from the TypeScript side must parse as the shape it names. */
static int replay(const struct seed *s) {
  memcpy(input, s->data, s->len);
  input_len = s->len;
  union shim_addr dest = {.in = {.sin_family = AF_INET}};
  unsigned char a4[4] = {1, 2, 3, 4};
  enum reply_kind want = shape_is(s->name, "error") ? REPLY_ERROR : shape_is(s->name, "local") ? REPLY_LOCAL : REPLY_REMOTE;
  int rc = -1;
  enum reply_kind got = REPLY_ERROR;
  if (starts_with(s->name, "connect.")) {
    struct connect_reply r;
    rc = proto_connect(false, &dest, 0, -1, &r);
    got = r.kind;
  } else if (starts_with(s->name, "resolve.")) {
    struct resolve_reply *r = malloc(sizeof *r);
    rc = proto_resolve("x", AF_UNSPEC, r);
    got = r->kind;
    if (rc == 0 && got == REPLY_REMOTE && r->naddrs == 0) rc = -1;
    free(r);
  } else if (starts_with(s->name, "reverse.")) {
    struct reverse_reply *r = malloc(sizeof *r);
    rc = proto_reverse(AF_INET, a4, r);
    got = r->kind;
    free(r);
  } else if (starts_with(s->name, "listen.")) {
    struct listen_reply r;
    rc = proto_listen(8080, &dest, &r);
    got = r.kind;
  } else if (starts_with(s->name, "peer.")) {
    struct peer_reply r;
    rc = proto_peer(&dest, 8080, &r);
    got = r.kind;
  } else if (starts_with(s->name, "res.config.")) {
    struct res_config_reply *r = malloc(sizeof *r);
    rc = proto_res_config(r);
    got = r->kind;
    if (rc == 0 && got == REPLY_REMOTE && (r->nnameservers == 0 || r->nsearch == 0)) rc = -1;
    free(r);
  } else if (starts_with(s->name, "res.send.")) {
    unsigned char answer[512];
    struct res_send_reply r = {.buf = answer, .cap = sizeof answer};
    rc = proto_res_send(answer, 12, &r);
    got = r.err ? REPLY_ERROR : REPLY_REMOTE;
    if (rc == 0 && !r.err && r.len < 12) rc = -1;
  } else {
    fprintf(stderr, "seed %s: no parser for its op\n", s->name);
    return 0;
  }
  if (rc != 0 || got != want) {
    fprintf(stderr, "seed %s: the shim rejects a reply the proxy may send (rc %d, kind %d, want %d)\n", s->name, rc, got, want);
    return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 200000;
  struct seed *seeds = NULL;
  size_t nseeds = argc > 2 ? load_seeds(argv[2], network_seed, sizeof input, &seeds) : 0;
  if (argc > 2 && nseeds == 0) {
    fprintf(stderr, "no seeds in %s\n", argv[2]);
    return 2;
  }
  for (size_t k = 0; k < nseeds; k++)
    if (!replay(&seeds[k])) return 1;
  srand(12345);
  struct connect_reply cr;
  struct resolve_reply *rr = malloc(sizeof *rr);
  struct reverse_reply *vr = malloc(sizeof *vr);
  union shim_addr dest = {.in = {.sin_family = AF_INET}};
  unsigned char a4[4] = {1, 2, 3, 4};
  long parsed = 0;
  for (long i = 0; i < iterations; i++) {
    if (i % 3 == 0) {
      input_len = (size_t)(rand() % 64);
      for (size_t k = 0; k < input_len; k++) input[k] = (uint8_t)rand();
    } else {
      if (nseeds > 0 && rand() % 4 != 0) {
        const struct seed *s = &seeds[(size_t)rand() % nseeds];
        memcpy(input, s->data, s->len);
        input_len = s->len;
      } else {
        seed(rand() % 5);
      }
      mutate(input, &input_len);
    }
    parsed += proto_connect(false, &dest, 0, -1, &cr) == 0;
    parsed += proto_resolve("x", AF_UNSPEC, rr) == 0;
    parsed += proto_reverse(AF_INET, a4, vr) == 0;
    struct peer_reply pr;
    struct listen_reply lr;
    parsed += proto_peer(&dest, 8080, &pr) == 0;
    parsed += proto_listen(8080, &dest, &lr) == 0;
    struct res_config_reply *cfg = malloc(sizeof *cfg);
    parsed += proto_res_config(cfg) == 0;
    free(cfg);
    unsigned char answer[64]; /* smaller than most answers: the cut is exercised */
    struct res_send_reply sr = {.buf = answer, .cap = sizeof answer};
    parsed += proto_res_send(answer, 12, &sr) == 0;
    struct mp_reader r;
    mp_reader_init(&r, input, input_len);
    while (mp_skip(&r)) {}
  }
  printf("fuzz: %zu seeds from TypeScript accepted; %ld iterations, %ld responses accepted, no crash\n", nseeds, iterations, parsed);
  for (size_t k = 0; k < nseeds; k++) free(seeds[k].data);
  free(seeds);
  free(rr);
  free(vr);
  return 0;
}
