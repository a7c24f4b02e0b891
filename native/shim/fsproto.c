/*
 * The shim's side of the file requests of docs/shim-ipc.md ("Files"). File content never
 * passes through the channel: the shim names a memfd of its own (pid + fd) and the
 * session proxy writes into it through /proc/<pid>/fd/<fd>.
 */
#include "shim.h"
#include "msgpack.h"

#include <stdlib.h>
#include <string.h>

static bool read_int(struct mp_reader *r, int64_t *out) {
  struct mp_value v;
  if (!mp_read(r, &v) || (v.type != MP_INT && v.type != MP_FLOAT) || !v.is_integral) return false;
  *out = v.i;
  return true;
}

/* errno values a file call can return; anything else becomes EIO. */
static int sane_errno(int64_t e) {
  static const int known[] = {ENOENT, EACCES, EPERM, EISDIR, ENOTDIR, ELOOP, EEXIST, ENOTEMPTY,
                              EROFS, ENAMETOOLONG, EINVAL, EBADF, EMFILE, ENFILE, ENOSPC, EXDEV,
                              EBUSY, ENXIO, ENODEV, ETXTBSY, EFBIG, EOVERFLOW, ENOMEM, EIO, ENOSYS};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (e == known[i]) return (int)e;
  return EIO;
}

struct stat_key {
  const char *name;
  size_t offset;
};

#define K(f, n) {n, offsetof(struct rstat, f)}
static const struct stat_key stat_keys[] = {
  K(dev, "dev"), K(ino, "ino"), K(mode, "mode"), K(nlink, "nlink"), K(uid, "uid"), K(gid, "gid"),
  K(rdev, "rdev"), K(size, "size"), K(blksize, "blksize"), K(blocks, "blocks"), K(atime, "atime"),
  K(atime_ns, "atimeNs"), K(mtime, "mtime"), K(mtime_ns, "mtimeNs"), K(ctime, "ctime"),
  K(ctime_ns, "ctimeNs"),
};
#undef K

/* Sends the request in w and parses the answer into out. */
static int call(struct mp_writer *w, const char *op, struct fs_reply *out) {
  memset(out, 0, sizeof *out);
  if (w->overflow) {
    out->err = ENAMETOOLONG;
    return 0;
  }
  uint8_t *body = NULL;
  size_t len;
  if (channel_call(w->buf, w->len, &body, &len) < 0) return -1;
  struct mp_reader r;
  mp_reader_init(&r, body, len);
  struct mp_value v;
  bool bad = !mp_read(&r, &v) || v.type != MP_MAP;
  int ok = -1;
  int64_t err = EIO;
  uint32_t n = bad ? 0 : v.len;
  for (uint32_t i = 0; i < n && !bad; i++) {
    struct mp_value key, val;
    if (!mp_read(&r, &key) || key.type != MP_STR) {
      bad = true;
      break;
    }
    bool matched = false;
    for (size_t k = 0; k < sizeof stat_keys / sizeof stat_keys[0]; k++) {
      if (mp_str_eq(&key, stat_keys[k].name)) {
        if (!read_int(&r, (int64_t *)((char *)&out->st + stat_keys[k].offset))) bad = true;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (mp_str_eq(&key, "ok")) {
      if (!mp_read(&r, &val) || val.type != MP_BOOL) bad = true;
      else ok = val.b;
    } else if (mp_str_eq(&key, "errno")) {
      if (!read_int(&r, &err)) bad = true;
    } else if (mp_str_eq(&key, "kind")) {
      if (!mp_read(&r, &val) || val.type != MP_STR) bad = true;
      else out->dir = mp_str_eq(&val, "dir");
    } else if (mp_str_eq(&key, "lazy") || mp_str_eq(&key, "writeback")) {
      bool lazy = mp_str_eq(&key, "lazy");
      if (!mp_read(&r, &val) || val.type != MP_BOOL) bad = true;
      else if (lazy) out->lazy = val.b;
      else out->writeback = val.b;
    } else if (mp_str_eq(&key, "handle")) {
      if (!read_int(&r, &out->handle)) bad = true;
    } else if (mp_str_eq(&key, "count") || mp_str_eq(&key, "filled")) {
      if (!read_int(&r, &out->count)) bad = true;
    } else if (mp_str_eq(&key, "target")) {
      if (!mp_read(&r, &val) || !mp_str_copy(&val, out->target, sizeof out->target)) bad = true;
    } else if (!mp_skip(&r)) {
      bad = true;
    }
  }
  free(body);
  if (bad || ok < 0) {
    shim_log("protocol error: malformed %s response", op);
    return -1;
  }
  out->err = ok ? 0 : sane_errno(err);
  return 0;
}

static void header(struct mp_writer *w, uint32_t fields, const char *op) {
  mp_write_map(w, fields);
  mp_write_cstr(w, "op");
  mp_write_cstr(w, op);
}

static void kv_str(struct mp_writer *w, const char *k, const char *v) {
  mp_write_cstr(w, k);
  mp_write_cstr(w, v);
}

static void kv_int(struct mp_writer *w, const char *k, int64_t v) {
  mp_write_cstr(w, k);
  mp_write_int(w, v);
}

#define WRITER(name, size) \
  uint8_t name##_buf[size]; \
  struct mp_writer name = {name##_buf, sizeof name##_buf, 0, false}

SHIM_HIDDEN int fsproto_open(const char *path, int flags, int mode, int memfd, bool eager,
                             struct fs_reply *out) {
  WRITER(w, 4400);
  header(&w, 7, "fs.open");
  kv_str(&w, "path", path);
  kv_int(&w, "flags", flags);
  kv_int(&w, "mode", mode);
  kv_int(&w, "pid", getpid());
  kv_int(&w, "fd", memfd);
  mp_write_cstr(&w, "eager");
  mp_write_bool(&w, eager);
  return call(&w, "fs.open", out);
}

SHIM_HIDDEN int fsproto_fill(int64_t handle, int64_t offset, int64_t length, struct fs_reply *out) {
  WRITER(w, 128);
  header(&w, 4, "fs.fill");
  kv_int(&w, "handle", handle);
  kv_int(&w, "offset", offset);
  kv_int(&w, "length", length);
  return call(&w, "fs.fill", out);
}

SHIM_HIDDEN int fsproto_writeback(int64_t handle, struct fs_reply *out) {
  WRITER(w, 64);
  header(&w, 2, "fs.writeback");
  kv_int(&w, "handle", handle);
  return call(&w, "fs.writeback", out);
}

SHIM_HIDDEN void fsproto_release(int64_t handle) {
  WRITER(w, 64);
  header(&w, 2, "fs.release");
  kv_int(&w, "handle", handle);
  if (!w.overflow) channel_notify(w.buf, w.len);
}

SHIM_HIDDEN int fsproto_stat(const char *path, bool follow, struct fs_reply *out) {
  WRITER(w, 4200);
  header(&w, 3, "fs.stat");
  kv_str(&w, "path", path);
  mp_write_cstr(&w, "follow");
  mp_write_bool(&w, follow);
  return call(&w, "fs.stat", out);
}

SHIM_HIDDEN int fsproto_access(const char *path, int mode, struct fs_reply *out) {
  WRITER(w, 4200);
  header(&w, 3, "fs.access");
  kv_str(&w, "path", path);
  kv_int(&w, "mode", mode);
  return call(&w, "fs.access", out);
}

SHIM_HIDDEN int fsproto_readdir(const char *path, int memfd, struct fs_reply *out) {
  WRITER(w, 4200);
  header(&w, 4, "fs.readdir");
  kv_str(&w, "path", path);
  kv_int(&w, "pid", getpid());
  kv_int(&w, "fd", memfd);
  return call(&w, "fs.readdir", out);
}

SHIM_HIDDEN int fsproto_readlink(const char *path, struct fs_reply *out) {
  WRITER(w, 4200);
  header(&w, 2, "fs.readlink");
  kv_str(&w, "path", path);
  return call(&w, "fs.readlink", out);
}

SHIM_HIDDEN int fsproto_change(const char *what, const char *path, int64_t mode, const char *to,
                               struct fs_reply *out) {
  WRITER(w, 8500);
  header(&w, to ? 5 : 4, "fs.change");
  kv_str(&w, "what", what);
  kv_str(&w, "path", path);
  kv_int(&w, strcmp(what, "truncate") == 0 ? "size" : "mode", mode);
  if (to) kv_str(&w, "to", to);
  return call(&w, "fs.change", out);
}

SHIM_HIDDEN int fsproto_config(void (*field)(const char *key, const char *value, void *arg), void *arg) {
  WRITER(w, 64);
  header(&w, 1, "fs.config");
  uint8_t *body = NULL;
  size_t len;
  if (channel_call(w.buf, w.len, &body, &len) < 0) return -1;
  struct mp_reader r;
  mp_reader_init(&r, body, len);
  struct mp_value v;
  bool bad = !mp_read(&r, &v) || v.type != MP_MAP;
  uint32_t n = bad ? 0 : v.len;
  char key[32], *value = malloc(4097);
  if (!value) bad = true;
  for (uint32_t i = 0; i < n && !bad; i++) {
    struct mp_value k, val;
    if (!mp_read(&r, &k) || !mp_str_copy(&k, key, sizeof key) || !mp_read(&r, &val)) {
      bad = true;
      break;
    }
    if (val.type == MP_STR) {
      if (mp_str_copy(&val, value, 4097)) field(key, value, arg);
    } else if (val.type == MP_ARRAY) {
      for (uint32_t j = 0; j < val.len && !bad; j++) {
        struct mp_value item;
        if (!mp_read(&r, &item)) bad = true;
        else if (item.type == MP_STR && mp_str_copy(&item, value, 4097)) field(key, value, arg);
      }
    } else if (val.type == MP_MAP) {
      for (uint32_t j = 0; j < 2 * val.len && !bad; j++) bad = !mp_skip(&r);
    }
  }
  free(value);
  free(body);
  if (bad) shim_log("protocol error: malformed fs.config response");
  return bad ? -1 : 0;
}
