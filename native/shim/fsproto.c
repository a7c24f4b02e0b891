/*
 * The shim's side of the file requests of docs/shim-ipc.md ("Files"). File content never
 * passes through the channel: the shim names a memfd of its own (pid + fd) and the
 * session proxy writes into it through /proc/<pid>/fd/<fd>.
 */
#include "shim.h"
#include "msgpack.h"
#include "replies.h"

#include <stdlib.h>
#include <string.h>

#define FIELDS(t) t, sizeof t / sizeof t[0]

/* Sends the request in w and reads the answer (any file reply) into out. */
static int call(struct mp_writer *w, const char *op, struct fs_reply *out) {
  memset(out, 0, sizeof *out);
  if (w->overflow) {
    out->err = ENAMETOOLONG;
    return 0;
  }
  bool ok = false;
  int64_t err = EIO;
  char kind[16] = "";
#define STAT_FIELD(field, key) {key, RF_INT, &out->st.field, 0, NULL, NULL},
  const struct reply_field fields[] = {
    {WIRE_KEY_OK, RF_BOOL, &ok, 0, NULL, NULL}, /* first: RF_SEEN(seen, 0) below */
    {WIRE_KEY_ERRNO, RF_INT, &err, 0, NULL, NULL},
    {WIRE_KEY_KIND, RF_STR, kind, sizeof kind, NULL, NULL},
    {WIRE_KEY_LAZY, RF_BOOL, &out->lazy, 0, NULL, NULL},
    {WIRE_KEY_WRITEBACK, RF_BOOL, &out->writeback, 0, NULL, NULL},
    {WIRE_KEY_HANDLE, RF_INT, &out->handle, 0, NULL, NULL},
    {WIRE_KEY_COUNT, RF_INT, &out->count, 0, NULL, NULL},
    {WIRE_KEY_FILLED, RF_INT, &out->count, 0, NULL, NULL},
    {WIRE_KEY_TARGET, RF_STR, out->target, sizeof out->target, NULL, NULL},
    WIRE_STAT_FIELDS(STAT_FIELD)
  };
#undef STAT_FIELD
  uint64_t seen;
  int rc = reply_call(w, FIELDS(fields), &seen);
  if (rc == -1) return -1;
  if (rc == -2 || !RF_SEEN(seen, 0)) { /* no ok */
    shim_log("protocol error: malformed %s response", op);
    return -1;
  }
  out->dir = strcmp(kind, WIRE_KIND_DIR) == 0;
  out->err = ok ? 0 : sane_file_errno(err);
  return 0;
}

static void request(struct mp_writer *w, uint32_t fields, const char *op) {
  mp_write_map(w, fields);
  mp_write_kv_str(w, WIRE_KEY_OP, op);
}

#define WRITER(name, size) \
  uint8_t name##_buf[size]; \
  struct mp_writer name = {name##_buf, sizeof name##_buf, 0, false}

SHIM_HIDDEN int fsproto_open(const char *path, int flags, int mode, int memfd, bool eager,
                             struct fs_reply *out) {
  WRITER(w, 4400);
  request(&w, 7, WIRE_OP_FS_OPEN);
  mp_write_kv_str(&w, WIRE_KEY_PATH, path);
  mp_write_kv_int(&w, WIRE_KEY_FLAGS, flags);
  mp_write_kv_int(&w, WIRE_KEY_MODE, mode);
  mp_write_kv_int(&w, WIRE_KEY_PID, shim_pid());
  mp_write_kv_int(&w, WIRE_KEY_FD, memfd);
  mp_write_kv_bool(&w, WIRE_KEY_EAGER, eager);
  return call(&w, WIRE_OP_FS_OPEN, out);
}

SHIM_HIDDEN int fsproto_fill(int64_t handle, int64_t offset, int64_t length, struct fs_reply *out) {
  WRITER(w, 128);
  request(&w, 4, WIRE_OP_FS_FILL);
  mp_write_kv_int(&w, WIRE_KEY_HANDLE, handle);
  mp_write_kv_int(&w, WIRE_KEY_OFFSET, offset);
  mp_write_kv_int(&w, WIRE_KEY_LENGTH, length);
  return call(&w, WIRE_OP_FS_FILL, out);
}

/* A lazily filled file's chunk c is present (its bitmap of WIRE_FILE_BLOCK_BYTES chunks). */
SHIM_HIDDEN bool fsproto_chunk_present(const uint8_t *present, uint64_t c) {
  return __atomic_load_n(&present[c / 8], __ATOMIC_ACQUIRE) & (1u << (c % 8));
}

SHIM_HIDDEN bool fsproto_fill_plan(const uint8_t *present, int64_t size, int64_t offset, int64_t end,
                                   int64_t *next_offset, int64_t *window, int64_t *from, int64_t *to) {
  const int64_t chunk = WIRE_FILE_BLOCK_BYTES;
  uint64_t first = (uint64_t)offset / chunk, last = (uint64_t)(end - 1) / chunk;
  /* Skip what is present; fetch from the first missing chunk on. */
  while (first <= last && fsproto_chunk_present(present, first)) first++;
  if (first > last) {
    *next_offset = end;
    return false;
  }
  /* Sequential reading doubles the read-ahead window; a jump resets it. */
  int64_t w = *next_offset == offset ? *window * 2 : chunk;
  if (w > WIRE_READ_AHEAD_MAX_BYTES) w = WIRE_READ_AHEAD_MAX_BYTES;
  *window = w;
  *from = (int64_t)first * chunk;
  *to = end - *from < w ? *from + w : end;
  *to = (*to + chunk - 1) / chunk * chunk;
  if (*to > size) *to = size;
  /* Stop at the next present chunk past the request: no need to fetch it again. */
  for (uint64_t c = last + 1; (int64_t)(c * chunk) < *to; c++) {
    if (fsproto_chunk_present(present, c)) {
      *to = (int64_t)(c * chunk);
      break;
    }
  }
  return true;
}

SHIM_HIDDEN int fsproto_writeback(int64_t handle, struct fs_reply *out) {
  WRITER(w, 64);
  request(&w, 2, WIRE_OP_FS_WRITEBACK);
  mp_write_kv_int(&w, WIRE_KEY_HANDLE, handle);
  return call(&w, WIRE_OP_FS_WRITEBACK, out);
}

SHIM_HIDDEN void fsproto_release(int64_t handle) {
  WRITER(w, 64);
  request(&w, 2, WIRE_OP_FS_RELEASE);
  mp_write_kv_int(&w, WIRE_KEY_HANDLE, handle);
  if (!w.overflow) channel_notify(w.buf, w.len);
}

SHIM_HIDDEN int fsproto_stat(const char *path, bool follow, struct fs_reply *out) {
  WRITER(w, 4200);
  request(&w, 3, WIRE_OP_FS_STAT);
  mp_write_kv_str(&w, WIRE_KEY_PATH, path);
  mp_write_kv_bool(&w, WIRE_KEY_FOLLOW, follow);
  return call(&w, WIRE_OP_FS_STAT, out);
}

SHIM_HIDDEN int fsproto_access(const char *path, int mode, struct fs_reply *out) {
  WRITER(w, 4200);
  request(&w, 3, WIRE_OP_FS_ACCESS);
  mp_write_kv_str(&w, WIRE_KEY_PATH, path);
  mp_write_kv_int(&w, WIRE_KEY_MODE, mode);
  return call(&w, WIRE_OP_FS_ACCESS, out);
}

SHIM_HIDDEN int fsproto_readdir(const char *path, int memfd, struct fs_reply *out) {
  WRITER(w, 4200);
  request(&w, 4, WIRE_OP_FS_READDIR);
  mp_write_kv_str(&w, WIRE_KEY_PATH, path);
  mp_write_kv_int(&w, WIRE_KEY_PID, shim_pid());
  mp_write_kv_int(&w, WIRE_KEY_FD, memfd);
  return call(&w, WIRE_OP_FS_READDIR, out);
}

SHIM_HIDDEN int fsproto_readlink(const char *path, struct fs_reply *out) {
  WRITER(w, 4200);
  request(&w, 2, WIRE_OP_FS_READLINK);
  mp_write_kv_str(&w, WIRE_KEY_PATH, path);
  return call(&w, WIRE_OP_FS_READLINK, out);
}

SHIM_HIDDEN int fsproto_change(const char *what, const char *path, int64_t mode, const char *to,
                               struct fs_reply *out) {
  WRITER(w, 8500);
  if (strcmp(what, SHIM_CHANGE_TRUNCATE) == 0) {
    request(&w, 3, WIRE_OP_FS_TRUNCATE);
    mp_write_kv_str(&w, WIRE_KEY_PATH, path);
    mp_write_kv_int(&w, WIRE_KEY_SIZE, mode);
    return call(&w, WIRE_OP_FS_TRUNCATE, out);
  }
  request(&w, to ? 5 : 4, WIRE_OP_FS_CHANGE);
  mp_write_kv_str(&w, WIRE_KEY_CHANGE, what);
  mp_write_kv_str(&w, WIRE_KEY_PATH, path);
  mp_write_kv_int(&w, WIRE_KEY_MODE, mode);
  if (to) mp_write_kv_str(&w, WIRE_KEY_TO, to);
  return call(&w, WIRE_OP_FS_CHANGE, out);
}

SHIM_HIDDEN int fsproto_config(void (*field)(const char *key, const char *value, void *arg), void *arg) {
  WRITER(w, 64);
  request(&w, 1, WIRE_OP_FS_CONFIG);
  /* Every rule goes to the callback as it is read (arg is the callback's own). */
  const struct reply_field fields[] = {
    {WIRE_KEY_MODE, RF_STRINGS, arg, 0, NULL, field},
    {WIRE_KEY_LOCAL, RF_STRINGS, arg, 0, NULL, field},
    {WIRE_KEY_REMOTE, RF_STRINGS, arg, 0, NULL, field},
    {WIRE_KEY_NOT_FOUND, RF_STRINGS, arg, 0, NULL, field},
    {WIRE_KEY_KEEP, RF_STRINGS, arg, 0, NULL, field},
    {WIRE_KEY_EMPTY_DIR, RF_STRINGS, arg, 0, NULL, field},
  };
  uint64_t seen;
  int rc = reply_call(&w, FIELDS(fields), &seen);
  if (rc == -2) shim_log("protocol error: malformed fs.config response");
  return rc < 0 ? -1 : 0;
}

/* A pod file's stat, as the kernel's struct stat (the shim's stat hooks and the supervisor's). */
SHIM_HIDDEN void rstat_to_stat(const struct rstat *r, void *stat_buf) {
  struct stat *st = stat_buf;
  memset(st, 0, sizeof *st);
  st->st_dev = (dev_t)r->dev;
  st->st_ino = (ino_t)r->ino;
  st->st_mode = (mode_t)r->mode;
  st->st_nlink = (nlink_t)r->nlink;
  st->st_uid = (uid_t)r->uid;
  st->st_gid = (gid_t)r->gid;
  st->st_rdev = (dev_t)r->rdev;
  st->st_size = (off_t)r->size;
  st->st_blksize = (blksize_t)r->blksize;
  st->st_blocks = (blkcnt_t)r->blocks;
  st->st_atim.tv_sec = r->atime;
  st->st_atim.tv_nsec = r->atime_ns;
  st->st_mtim.tv_sec = r->mtime;
  st->st_mtim.tv_nsec = r->mtime_ns;
  st->st_ctim.tv_sec = r->ctime;
  st->st_ctim.tv_nsec = r->ctime_ns;
}
