/*
 * Writes the request frame of every op the shim sends (proto.c, fsproto.c), one file per
 * frame, so that check-requests.mjs can decode each with the TypeScript definition of the
 * wire (decodeShimRequest): the requests' side of the contract, as the fuzzers' seeds are
 * the replies'. The channel is stubbed; every call gets a failure reply.
 * usage: dump_requests DIR
 */
#include "../shim.h"
#include "../msgpack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;
static int count;

static int dump(const uint8_t *req, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%02d.mp", dir, count++);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(req, 1, len, f) != len) exit(2);
  fclose(f);
  return 0;
}

int channel_call(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len) {
  dump(req, len);
  static uint8_t reply[64];
  struct mp_writer w = {reply, sizeof reply, 0, false};
  mp_write_map(&w, 2);
  mp_write_kv_bool(&w, WIRE_KEY_OK, false);
  mp_write_kv_int(&w, WIRE_KEY_ERRNO, ENOENT);
  *resp = malloc(w.len);
  memcpy(*resp, reply, w.len);
  *resp_len = w.len;
  return 0;
}
struct shim_config shim_cfg; /* fsproto.c reads fixed_pid (0: getpid, as in the shim) */
int channel_notify(const uint8_t *req, size_t len) { return dump(req, len); }
void shim_log(const char *fmt, ...) { (void)fmt; }
static void field(const char *key, const char *value, void *arg) { (void)key, (void)value, (void)arg; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  dir = argv[1];
  union shim_addr v4 = {.in = {.sin_family = AF_INET, .sin_port = htons(8080), .sin_addr = {htonl(0x0a000001)}}};
  union shim_addr v6 = {.in6 = {.sin6_family = AF_INET6, .sin6_port = htons(443), .sin6_addr = IN6ADDR_LOOPBACK_INIT}};
  unsigned char a4[4] = {10, 0, 0, 1};
  struct connect_reply cr;
  struct resolve_reply *rr = malloc(sizeof *rr);
  struct reverse_reply *vr = malloc(sizeof *vr);
  struct listen_reply lr;
  struct peer_reply pr;
  struct fs_reply *fr = malloc(sizeof *fr);
  proto_connect(false, &v4, 0, -1, &cr);
  proto_connect(false, &v6, 1500, -1, &cr);
  proto_connect(false, &v4, -1, -1, &cr); /* non-blocking */
  proto_connect(true, &v4, 0, -1, &cr);
  proto_connect(true, &v4, 0, 1000, &cr); /* a UDP socket of uid 1000 */
  proto_attach(false, 7, 40312, 995270, 1000);
  proto_attach(true, 8, 40313, 995271, 1000);
  proto_resolve("db.default.svc.cluster.local", AF_UNSPEC, rr);
  proto_resolve("db", AF_INET6, rr);
  proto_reverse(AF_INET, a4, vr);
  proto_listen(8080, &v4, &lr);
  proto_unlisten(8080);
  union shim_addr relay = {.in = {.sin_family = AF_INET, .sin_port = htons(51234), .sin_addr = {htonl(0x7f000001)}}};
  proto_peer(&relay, 8080, &pr);
  proto_notice(WIRE_WHAT_IO_URING);
  proto_notice(WIRE_WHAT_RAW_CONNECT);
  struct res_config_reply *rc = malloc(sizeof *rc);
  proto_res_config(rc);
  free(rc);
  static const unsigned char query[] = {0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, 'd', 'b', 0, 0, 1, 0, 1};
  unsigned char answer[512];
  struct res_send_reply sr = {.buf = answer, .cap = sizeof answer};
  proto_res_send(query, sizeof query, &sr);
  fsproto_config(field, NULL);
  fsproto_open("/data/config.json", O_RDWR | O_CREAT, 0644, 57, true, fr);
  fsproto_fill(3, 65536, 131072, fr);
  fsproto_writeback(3, fr);
  fsproto_release(3);
  fsproto_stat("/data", false, fr);
  fsproto_access("/data/run.sh", X_OK, fr);
  fsproto_readlink("/data/link", fr);
  fsproto_readdir("/data", 58, fr);
  fsproto_change("mkdir", "/data/new", 0755, NULL, fr);
  fsproto_change("rename", "/data/a", 0, "/data/b", fr);
  fsproto_change("unlink", "/data/b", 0, NULL, fr);
  fsproto_change(SHIM_CHANGE_TRUNCATE, "/data/c", 4096, NULL, fr);
  printf("%d request frames\n", count);
  free(rr);
  free(vr);
  free(fr);
  return 0;
}
