/*
 * Feeds random and mutated responses to the shim's file-request parsers (fsproto.c over
 * msgpack.c), built with ASan/UBSan by run.sh. The channel is stubbed: channel_call
 * returns the current input. Checks only that nothing crashes or reads out of bounds.
 * usage: fuzz_fsproto [iterations]
 */
#include "../shim.h"
#include "../msgpack.h"

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

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 200000;
  srand(54321);
  struct fs_reply *r = malloc(sizeof *r);
  long parsed = 0;
  for (long i = 0; i < iterations; i++) {
    if (i % 3 == 0) {
      input_len = (size_t)(rand() % 64);
      for (size_t k = 0; k < input_len; k++) input[k] = (uint8_t)rand();
    } else {
      seed(rand() % 3);
      int flips = 1 + rand() % 4;
      for (int f = 0; f < flips; f++) {
        size_t at = (size_t)rand() % input_len;
        switch (rand() % 3) {
          case 0: input[at] = (uint8_t)rand(); break;
          case 1: input_len = at + 1; break; /* truncate */
          case 2: input[at] ^= (uint8_t)(1u << (rand() % 8)); break;
        }
      }
    }
    parsed += fsproto_open("/data/x", 0, 0, 3, false, r) == 0;
    parsed += fsproto_stat("/data/x", true, r) == 0;
    parsed += fsproto_readlink("/data/x", r) == 0;
    parsed += fsproto_change("rename", "/data/a", 0, "/data/b", r) == 0;
    parsed += fsproto_config(field, NULL) == 0;
  }
  printf("fuzz: %ld iterations, %ld file responses accepted, %ld config fields, no crash\n", iterations, parsed, fields);
  free(r);
  return 0;
}
