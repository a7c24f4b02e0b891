/*
 * Feeds random and mutated responses to the shim's file-request parsers (fsproto.c over
 * msgpack.c), built with ASan/UBSan by run.sh. The channel is stubbed: channel_call
 * returns the current input. Checks only that nothing crashes or reads out of bounds.
 * usage: fuzz_fsproto [iterations] [seed-dir]   (seeds: see seeds.h)
 */
#include "../shim.h"
#include "../msgpack.h"
#include "seeds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t input[8192];
static size_t input_len;

int channel_call(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len) {
  (void)req, (void)len;
  if (!input_len) return -1;
  *resp = malloc(input_len);
  memcpy(*resp, input, input_len); /* exact size: ASan catches any overread */
  *resp_len = input_len;
  return 0;
}
struct shim_config shim_cfg; /* fsproto.c reads fixed_pid (0: getpid, as in the shim) */
int channel_notify(const uint8_t *req, size_t len) { (void)req, (void)len; return 0; }
void shim_log(const char *fmt, ...) { (void)fmt; }

static void seed(int which) {
  struct mp_writer w = {input, sizeof input, 0, false};
  if (which == 0) {
    mp_write_map(&w, 8);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, true);
    mp_write_cstr(&w, "kind"); mp_write_cstr(&w, "file");
    mp_write_cstr(&w, "handle"); mp_write_int(&w, 3);
    mp_write_cstr(&w, "lazy"); mp_write_bool(&w, true);
    mp_write_cstr(&w, "size"); mp_write_int(&w, 1LL << 31);
    mp_write_cstr(&w, "mode"); mp_write_int(&w, 0100644);
    mp_write_cstr(&w, "mtimeNs"); mp_write_int(&w, 999999999);
    mp_write_cstr(&w, "target"); mp_write_cstr(&w, "../x");
  } else if (which == 1) {
    mp_write_map(&w, 7);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, true);
    mp_write_cstr(&w, "mode"); mp_write_cstr(&w, "read");
    mp_write_cstr(&w, "local"); mp_write_array(&w, 2); mp_write_cstr(&w, "^/srv/"); mp_write_cstr(&w, "(");
    mp_write_cstr(&w, "remote"); mp_write_array(&w, 0);
    mp_write_cstr(&w, "notFound"); mp_write_array(&w, 1); mp_write_cstr(&w, "x$");
    mp_write_cstr(&w, "keep"); mp_write_array(&w, 1); mp_write_cstr(&w, "/home/dev");
    mp_write_cstr(&w, "emptyDir"); mp_write_cstr(&w, "/tmp/e");
  } else {
    mp_write_map(&w, 3);
    mp_write_cstr(&w, "ok"); mp_write_bool(&w, false);
    mp_write_cstr(&w, "errno"); mp_write_int(&w, 2);
    mp_write_cstr(&w, "message"); mp_write_cstr(&w, "nope");
  }
  input_len = w.len;
}

static long fields;
static void field(const char *key, const char *value, void *arg) {
  (void)arg;
  fields += (long)(strlen(key) + strlen(value) > 0);
}

static int file_seed(const char *name) { return starts_with(name, "fs."); }

/* A sample reply from the TypeScript side must parse, as a success or a failure as named. */
static int replay(const struct seed *s, struct fs_reply *r) {
  memcpy(input, s->data, s->len);
  input_len = s->len;
  int rc;
  long before = fields;
  if (starts_with(s->name, "fs.config.")) {
    rc = fsproto_config(field, NULL);
    if (rc == 0 && !shape_is(s->name, "error") && fields == before) rc = -1;
    r->err = 0;
  } else if (starts_with(s->name, "fs.open.")) rc = fsproto_open("/data/x", 0, 0, 3, false, r);
  else if (starts_with(s->name, "fs.fill.")) rc = fsproto_fill(3, 0, 65536, r);
  else if (starts_with(s->name, "fs.writeback.")) rc = fsproto_writeback(3, r);
  else if (starts_with(s->name, "fs.stat.")) rc = fsproto_stat("/data/x", true, r);
  else if (starts_with(s->name, "fs.access.")) rc = fsproto_access("/data/x", 4, r);
  else if (starts_with(s->name, "fs.readlink.")) rc = fsproto_readlink("/data/x", r);
  else if (starts_with(s->name, "fs.readdir.")) rc = fsproto_readdir("/data", 3, r);
  else if (starts_with(s->name, "fs.change.")) rc = fsproto_change("rename", "/data/a", 0, "/data/b", r);
  else if (starts_with(s->name, "fs.truncate.")) rc = fsproto_change(SHIM_CHANGE_TRUNCATE, "/data/a", 0, NULL, r);
  else {
    fprintf(stderr, "seed %s: no parser for its op\n", s->name);
    return 0;
  }
  int want_error = shape_is(s->name, "error") && !starts_with(s->name, "fs.config.");
  if (rc != 0 || (r->err != 0) != want_error) {
    fprintf(stderr, "seed %s: the shim rejects a reply the proxy may send (rc %d, errno %d)\n", s->name, rc, r->err);
    return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 200000;
  struct seed *seeds = NULL;
  size_t nseeds = argc > 2 ? load_seeds(argv[2], file_seed, sizeof input, &seeds) : 0;
  if (argc > 2 && nseeds == 0) {
    fprintf(stderr, "no seeds in %s\n", argv[2]);
    return 2;
  }
  struct fs_reply *r = malloc(sizeof *r);
  for (size_t k = 0; k < nseeds; k++)
    if (!replay(&seeds[k], r)) return 1;
  srand(54321);
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
        seed(rand() % 3);
      }
      mutate(input, &input_len);
    }
    parsed += fsproto_open("/data/x", 0, 0, 3, false, r) == 0;
    parsed += fsproto_stat("/data/x", true, r) == 0;
    parsed += fsproto_readlink("/data/x", r) == 0;
    parsed += fsproto_change("rename", "/data/a", 0, "/data/b", r) == 0;
    parsed += fsproto_change(SHIM_CHANGE_TRUNCATE, "/data/a", 0, NULL, r) == 0;
    parsed += fsproto_config(field, NULL) == 0;
  }
  printf("fuzz: %zu seeds from TypeScript accepted; %ld iterations, %ld file responses accepted, %ld config fields, no crash\n", nseeds, iterations, parsed, fields);
  for (size_t k = 0; k < nseeds; k++) free(seeds[k].data);
  free(seeds);
  free(r);
  return 0;
}
