/* Table-driven reading of the proxy's replies: see replies.h. */
#include "shim.h"
#include "replies.h"

#include <stdlib.h>
#include <string.h>

bool read_int(struct mp_reader *r, int64_t *out) {
  struct mp_value v;
  if (!mp_read(r, &v) || (v.type != MP_INT && v.type != MP_FLOAT) || !v.is_integral) return false;
  *out = v.i;
  return true;
}

int sane_errno(int64_t e, const int *known, size_t n, int fallback) {
  for (size_t i = 0; i < n; i++)
    if (e == known[i]) return (int)e;
  return fallback;
}

int sane_net_errno(int64_t e) {
  static const int known[] = {
    ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET, ECONNABORTED, EACCES,
    EPERM, EADDRNOTAVAIL, EADDRINUSE, ENETDOWN, EHOSTDOWN, EAFNOSUPPORT, EINVAL, EAGAIN,
    EINPROGRESS, EINTR, EIO, ENOBUFS, EMSGSIZE,
  };
  return sane_errno(e, known, sizeof known / sizeof known[0], ECONNREFUSED);
}

int sane_file_errno(int64_t e) {
  static const int known[] = {
    ENOENT, EACCES, EPERM, EISDIR, ENOTDIR, ELOOP, EEXIST, ENOTEMPTY, EROFS, ENAMETOOLONG,
    EINVAL, EBADF, EMFILE, ENFILE, ENOSPC, EXDEV, EBUSY, ENXIO, ENODEV, ETXTBSY, EFBIG,
    EOVERFLOW, ENOMEM, EIO, ENOSYS,
  };
  return sane_errno(e, known, sizeof known / sizeof known[0], EIO);
}

/* A string value, or a list of them, each handed to f->each (others are skipped). */
static bool read_strings(struct mp_reader *r, const struct reply_field *f) {
  struct mp_value v;
  if (!mp_read(r, &v)) return false;
  uint32_t count = 1;
  if (v.type == MP_ARRAY) {
    count = v.len;
  } else if (v.type == MP_MAP) {
    for (uint32_t j = 0; j < 2 * v.len; j++)
      if (!mp_skip(r)) return false;
    return true;
  } else if (v.type != MP_STR) {
    return true;
  }
  char *value = malloc(WIRE_MAX_PATH + 2);
  if (!value) return false;
  bool ok = true;
  for (uint32_t j = 0; j < count && ok; j++) {
    struct mp_value item = v;
    if (v.type == MP_ARRAY && !mp_read(r, &item)) ok = false;
    else if (item.type == MP_STR && mp_str_copy(&item, value, WIRE_MAX_PATH + 2)) f->each(f->key, value, f->dst);
    else if (item.type == MP_ARRAY || item.type == MP_MAP) ok = false; /* no nesting in a rule list */
  }
  free(value);
  return ok;
}

static bool read_field(struct mp_reader *r, const struct reply_field *f) {
  struct mp_value v;
  switch (f->kind) {
    case RF_BOOL:
      if (!mp_read(r, &v) || v.type != MP_BOOL) return false;
      *(bool *)f->dst = v.b;
      return true;
    case RF_INT:
      return read_int(r, f->dst);
    case RF_STR:
      return mp_read(r, &v) && mp_str_copy(&v, f->dst, f->cap);
    case RF_OPT_STR:
    case RF_TEXT: {
      struct mp_reader peek = *r;
      if (!mp_read(&peek, &v)) return false;
      if (v.type != MP_STR) return mp_skip(r);
      *r = peek;
      if (f->kind == RF_OPT_STR) return mp_str_copy(&v, f->dst, f->cap);
      size_t n = v.len < f->cap - 1 ? v.len : f->cap - 1;
      memcpy(f->dst, v.s, n);
      ((char *)f->dst)[n] = 0;
      return true;
    }
    case RF_STRINGS:
      return read_strings(r, f);
    case RF_CUSTOM:
      return f->read(r, f->dst);
  }
  return false;
}

bool reply_read_map(struct mp_reader *r, uint32_t n, const struct reply_field *fields,
                    size_t nfields, uint64_t *seen) {
  *seen = 0;
  if (nfields > REPLY_MAX_FIELDS) return false;
  for (uint32_t i = 0; i < n; i++) {
    struct mp_value key;
    if (!mp_read(r, &key) || key.type != MP_STR) return false;
    size_t k = 0;
    while (k < nfields && !mp_str_eq(&key, fields[k].key)) k++;
    if (k == nfields) {
      if (!mp_skip(r)) return false;
      continue;
    }
    if (!read_field(r, &fields[k])) return false;
    *seen |= (uint64_t)1 << k;
  }
  return true;
}

int reply_call(const struct mp_writer *w, const struct reply_field *fields, size_t nfields,
               uint64_t *seen) {
  uint8_t *body = NULL;
  size_t len;
  if (channel_call(w->buf, w->len, &body, &len) < 0) return -1;
  struct mp_reader r;
  mp_reader_init(&r, body, len);
  struct mp_value v;
  bool ok = mp_read(&r, &v) && v.type == MP_MAP && reply_read_map(&r, v.len, fields, nfields, seen);
  free(body);
  return ok ? 0 : -2;
}
