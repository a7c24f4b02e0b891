#include "msgpack.h"

#include <string.h>

#define MP_MAX_DEPTH 16

static void put(struct mp_writer *w, const void *p, size_t n) {
  if (w->overflow || n > w->cap - w->len) {
    w->overflow = true;
    return;
  }
  memcpy(w->buf + w->len, p, n);
  w->len += n;
}

static void put_u8(struct mp_writer *w, uint8_t b) { put(w, &b, 1); }

static void put_be(struct mp_writer *w, uint8_t tag, uint64_t v, int bytes) {
  uint8_t b[9];
  b[0] = tag;
  for (int i = 0; i < bytes; i++) b[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  put(w, b, (size_t)bytes + 1);
}

static void put_len(struct mp_writer *w, uint32_t n, uint8_t fix, uint32_t fixmax, uint8_t t8,
                    uint8_t t16, uint8_t t32) {
  if (n <= fixmax) put_u8(w, (uint8_t)(fix | n));
  else if (t8 && n <= 0xff) put_be(w, t8, n, 1);
  else if (n <= 0xffff) put_be(w, t16, n, 2);
  else put_be(w, t32, n, 4);
}

void mp_write_map(struct mp_writer *w, uint32_t n) { put_len(w, n, 0x80, 15, 0, 0xde, 0xdf); }
void mp_write_array(struct mp_writer *w, uint32_t n) { put_len(w, n, 0x90, 15, 0, 0xdc, 0xdd); }

void mp_write_str(struct mp_writer *w, const char *s, size_t n) {
  if (n > UINT32_MAX) {
    w->overflow = true;
    return;
  }
  put_len(w, (uint32_t)n, 0xa0, 31, 0xd9, 0xda, 0xdb);
  put(w, s, n);
}

void mp_write_bin(struct mp_writer *w, const void *p, size_t n) {
  if (n > UINT32_MAX) {
    w->overflow = true;
    return;
  }
  if (n <= 0xff) put_be(w, 0xc4, n, 1);
  else if (n <= 0xffff) put_be(w, 0xc5, n, 2);
  else put_be(w, 0xc6, n, 4);
  put(w, p, n);
}

void mp_write_cstr(struct mp_writer *w, const char *s) { mp_write_str(w, s, strlen(s)); }

void mp_write_int(struct mp_writer *w, int64_t v) {
  if (v >= 0) {
    if (v <= 0x7f) put_u8(w, (uint8_t)v);
    else if (v <= 0xff) put_be(w, 0xcc, (uint64_t)v, 1);
    else if (v <= 0xffff) put_be(w, 0xcd, (uint64_t)v, 2);
    else if (v <= 0xffffffffLL) put_be(w, 0xce, (uint64_t)v, 4);
    else put_be(w, 0xcf, (uint64_t)v, 8);
  } else {
    if (v >= -32) put_u8(w, (uint8_t)(int8_t)v);
    else if (v >= INT8_MIN) put_be(w, 0xd0, (uint64_t)v & 0xff, 1);
    else if (v >= INT16_MIN) put_be(w, 0xd1, (uint64_t)v & 0xffff, 2);
    else if (v >= INT32_MIN) put_be(w, 0xd2, (uint64_t)v & 0xffffffff, 4);
    else put_be(w, 0xd3, (uint64_t)v, 8);
  }
}

void mp_write_bool(struct mp_writer *w, bool v) { put_u8(w, v ? 0xc3 : 0xc2); }
void mp_write_nil(struct mp_writer *w) { put_u8(w, 0xc0); }

void mp_reader_init(struct mp_reader *r, const uint8_t *buf, size_t len) {
  r->p = buf;
  r->end = buf + len;
  r->error = false;
}

static bool fail(struct mp_reader *r, struct mp_value *v) {
  r->error = true;
  v->type = MP_ERROR;
  return false;
}

static bool get_be(struct mp_reader *r, int bytes, uint64_t *out) {
  if ((size_t)(r->end - r->p) < (size_t)bytes) return false;
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v = v << 8 | r->p[i];
  r->p += bytes;
  *out = v;
  return true;
}

static bool take_bytes(struct mp_reader *r, struct mp_value *v, enum mp_type t, uint64_t n) {
  if (n > (uint64_t)(r->end - r->p)) return fail(r, v);
  v->type = t;
  v->s = (const char *)r->p;
  v->len = (uint32_t)n;
  r->p += n;
  return true;
}

/* Containers announce their count up front: each element needs at least one byte, so a
 * count larger than what is left is a lie and is refused before anyone loops on it. */
static bool container(struct mp_reader *r, struct mp_value *v, enum mp_type t, uint64_t n) {
  uint64_t min_bytes = t == MP_MAP ? n * 2 : n;
  if (min_bytes > (uint64_t)(r->end - r->p)) return fail(r, v);
  v->type = t;
  v->len = (uint32_t)n;
  return true;
}

static bool set_float(struct mp_value *v, double d) {
  v->type = MP_FLOAT;
  v->is_integral = d >= -9.2e18 && d <= 9.2e18 && (double)(int64_t)d == d;
  v->i = v->is_integral ? (int64_t)d : 0;
  return true;
}

bool mp_read(struct mp_reader *r, struct mp_value *v) {
  memset(v, 0, sizeof *v);
  if (r->error || r->p >= r->end) return fail(r, v);
  uint8_t t = *r->p++;
  uint64_t u;
  if (t <= 0x7f) {
    v->type = MP_INT;
    v->i = t;
    v->is_integral = true;
    return true;
  }
  if (t >= 0xe0) {
    v->type = MP_INT;
    v->i = (int8_t)t;
    v->is_integral = true;
    return true;
  }
  if ((t & 0xf0) == 0x80) return container(r, v, MP_MAP, t & 0x0f);
  if ((t & 0xf0) == 0x90) return container(r, v, MP_ARRAY, t & 0x0f);
  if ((t & 0xe0) == 0xa0) return take_bytes(r, v, MP_STR, t & 0x1f);
  switch (t) {
    case 0xc0: v->type = MP_NIL; return true;
    case 0xc2: v->type = MP_BOOL; v->b = false; return true;
    case 0xc3: v->type = MP_BOOL; v->b = true; return true;
    case 0xc4: case 0xc5: case 0xc6:
      if (!get_be(r, 1 << (t - 0xc4), &u)) return fail(r, v);
      return take_bytes(r, v, MP_BIN, u);
    case 0xd9: case 0xda: case 0xdb:
      if (!get_be(r, 1 << (t - 0xd9), &u)) return fail(r, v);
      return take_bytes(r, v, MP_STR, u);
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
      if (!get_be(r, 1 << (t - 0xcc), &u)) return fail(r, v);
      if (u > (uint64_t)INT64_MAX) return fail(r, v); /* no value we use is that large */
      v->type = MP_INT;
      v->i = (int64_t)u;
      v->is_integral = true;
      return true;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      int bytes = 1 << (t - 0xd0);
      if (!get_be(r, bytes, &u)) return fail(r, v);
      v->type = MP_INT;
      if (bytes == 1) v->i = (int8_t)u;
      else if (bytes == 2) v->i = (int16_t)u;
      else if (bytes == 4) v->i = (int32_t)u;
      else v->i = (int64_t)u;
      v->is_integral = true;
      return true;
    }
    case 0xca: {
      if (!get_be(r, 4, &u)) return fail(r, v);
      uint32_t bits = (uint32_t)u;
      float f;
      memcpy(&f, &bits, sizeof f);
      return set_float(v, f);
    }
    case 0xcb: {
      if (!get_be(r, 8, &u)) return fail(r, v);
      double d;
      memcpy(&d, &u, sizeof d);
      return set_float(v, d);
    }
    case 0xdc: case 0xdd:
      if (!get_be(r, t == 0xdc ? 2 : 4, &u)) return fail(r, v);
      return container(r, v, MP_ARRAY, u);
    case 0xde: case 0xdf:
      if (!get_be(r, t == 0xde ? 2 : 4, &u)) return fail(r, v);
      return container(r, v, MP_MAP, u);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext: type + 1..16 bytes */
      return take_bytes(r, v, MP_EXT, 1 + (1u << (t - 0xd4)));
    case 0xc7: case 0xc8: case 0xc9:
      if (!get_be(r, 1 << (t - 0xc7), &u)) return fail(r, v);
      return take_bytes(r, v, MP_EXT, u + 1);
    default: /* 0xc1 is never used */
      return fail(r, v);
  }
}

static bool skip_depth(struct mp_reader *r, int depth) {
  struct mp_value v;
  if (depth > MP_MAX_DEPTH) {
    r->error = true;
    return false;
  }
  if (!mp_read(r, &v)) return false;
  uint64_t n = v.type == MP_ARRAY ? v.len : v.type == MP_MAP ? (uint64_t)v.len * 2 : 0;
  for (uint64_t i = 0; i < n; i++)
    if (!skip_depth(r, depth + 1)) return false;
  return true;
}

bool mp_skip(struct mp_reader *r) { return skip_depth(r, 0); }

bool mp_str_eq(const struct mp_value *v, const char *s) {
  size_t n = strlen(s);
  return v->type == MP_STR && v->len == n && memcmp(v->s, s, n) == 0;
}

bool mp_str_copy(const struct mp_value *v, char *dst, size_t cap) {
  if (v->type != MP_STR || v->len >= cap || memchr(v->s, 0, v->len)) return false;
  memcpy(dst, v->s, v->len);
  dst[v->len] = 0;
  return true;
}

void mp_write_kv_str(struct mp_writer *w, const char *key, const char *value) {
  mp_write_cstr(w, key);
  mp_write_cstr(w, value);
}

void mp_write_kv_int(struct mp_writer *w, const char *key, int64_t value) {
  mp_write_cstr(w, key);
  mp_write_int(w, value);
}

void mp_write_kv_bool(struct mp_writer *w, const char *key, bool value) {
  mp_write_cstr(w, key);
  mp_write_bool(w, value);
}
