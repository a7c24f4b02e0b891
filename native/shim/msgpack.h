/*
 * A small bounded msgpack encoder and decoder: just what docs/shim-ipc.md needs
 * (maps with string keys; str, bin, int, bool, nil, float as integer, arrays of maps).
 * The decoder treats its input as untrusted: every read is bounds-checked, nesting is
 * limited, and any error sticks (later reads return MP_ERROR).
 */
#ifndef TSMIRROR_MSGPACK_H
#define TSMIRROR_MSGPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mp_writer {
  uint8_t *buf;
  size_t cap, len;
  bool overflow;
};

void mp_write_map(struct mp_writer *w, uint32_t n);
void mp_write_array(struct mp_writer *w, uint32_t n);
void mp_write_str(struct mp_writer *w, const char *s, size_t n);
void mp_write_cstr(struct mp_writer *w, const char *s);
void mp_write_bin(struct mp_writer *w, const void *p, size_t n);
void mp_write_int(struct mp_writer *w, int64_t v);
void mp_write_bool(struct mp_writer *w, bool v);
void mp_write_nil(struct mp_writer *w);
/* One entry of a map: a string key and its value. */
void mp_write_kv_str(struct mp_writer *w, const char *key, const char *value);
void mp_write_kv_int(struct mp_writer *w, const char *key, int64_t value);
void mp_write_kv_bool(struct mp_writer *w, const char *key, bool value);

enum mp_type { MP_ERROR, MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };

struct mp_value {
  enum mp_type type;
  bool b;
  int64_t i;          /* MP_INT; MP_FLOAT when integral (flagged by is_integral) */
  bool is_integral;   /* MP_INT always; MP_FLOAT if it holds a whole number */
  const char *s;      /* MP_STR/MP_BIN: bytes (not NUL-terminated) */
  uint32_t len;       /* MP_STR/MP_BIN length; MP_ARRAY/MP_MAP element count */
};

struct mp_reader {
  const uint8_t *p, *end;
  bool error;
};

void mp_reader_init(struct mp_reader *r, const uint8_t *buf, size_t len);
/* Reads one value header. Strings and binaries are consumed whole; for arrays and maps
 * only the header is consumed (the caller reads `len` elements, or 2*len for maps). */
bool mp_read(struct mp_reader *r, struct mp_value *v);
/* Skips one complete value, nested up to a fixed depth. */
bool mp_skip(struct mp_reader *r);
/* True if the value is a string equal to s. */
bool mp_str_eq(const struct mp_value *v, const char *s);
/* Copies a MP_STR into dst as a C string; false if it does not fit or has a NUL. */
bool mp_str_copy(const struct mp_value *v, char *dst, size_t cap);

#endif
