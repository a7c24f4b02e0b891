/*
 * Descriptors that hold a pod file (a memfd the session proxy filled) or stand for a pod
 * directory (an fd of an empty private directory, so read() fails with EISDIR and fstat
 * says "directory" natively). Per fd: the pod path, the pod's stat, and for a big file
 * opened read-only, which 64 KiB chunks are present: read/pread/readv/preadv (and mmap,
 * sendfile, copy_file_range, splice) first fill what they are about to read, with a
 * read-ahead window that doubles while the program reads sequentially.
 *
 * A write-mode file is written back to the pod on close (and fsync), by the proxy, which
 * reads the memfd itself.
 *
 * An entry is validated against the descriptor's inode before use, so an fd closed
 * behind the shim's back (inside libc) and reused for a local file is never mistaken
 * for a pod file.
 */
#include "shim.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

/* The proxy fills in the same blocks and reads ahead as far (protocol/shim-wire.ts). */
#define CHUNK WIRE_FILE_BLOCK_BYTES
#define SLOTS_BITS 10
#define SLOTS (1u << SLOTS_BITS)
#define MAX_SLOTS 1024u

struct rfile {
  int refs;
  bool dir, lazy, writeback, copy;
  int64_t handle;
  dev_t dev;                /* identity of the descriptor's file (memfd or empty dir) */
  ino_t ino;
  struct rstat st;
  char *path;
  uint64_t nchunks;
  uint8_t *present;         /* bitmap, lazy files only */
  int64_t next_offset;      /* where the last fill ended (sequential detection) */
  int64_t window;
};

static struct rfile **slots[MAX_SLOTS];
/* Per fd: 1 when its entry is lazily filled, read without the lock by the read hooks so
 * that reads of other descriptors (and of complete pod files) cost no system call. */
static uint8_t *lazy_flags[MAX_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int live; /* number of registered fds, for the fast path */

SHIM_HIDDEN bool rfile_any(void) { return __atomic_load_n(&live, __ATOMIC_RELAXED) > 0; }

/* Caller holds the lock. */
static struct rfile **slot(int fd, bool create) {
  if (fd < 0 || (unsigned)fd >= SLOTS * MAX_SLOTS) return NULL;
  unsigned c = (unsigned)fd >> SLOTS_BITS;
  if (!slots[c]) {
    if (!create) return NULL;
    uint8_t *flags = calloc(SLOTS, 1);
    struct rfile **chunk = calloc(SLOTS, sizeof(struct rfile *));
    if (!flags || !chunk) {
      free(flags);
      free(chunk);
      return NULL;
    }
    __atomic_store_n(&lazy_flags[c], flags, __ATOMIC_RELEASE);
    __atomic_store_n(&slots[c], chunk, __ATOMIC_RELEASE);
  }
  return &slots[c][(unsigned)fd & (SLOTS - 1)];
}

static void unref(struct rfile *rf, bool last_close_actions) {
  if (!rf) return;
  int left = __atomic_sub_fetch(&rf->refs, 1, __ATOMIC_ACQ_REL);
  if (left > 0) return;
  if (last_close_actions && rf->handle > 0 && shim_cfg.active) {
    int saved = errno;
    SHIM_ENTER();
    if (rf->writeback) {
      struct fs_reply r;
      fsproto_writeback(rf->handle, &r);
    }
    fsproto_release(rf->handle);
    SHIM_LEAVE();
    errno = saved;
  }
  free(rf->present);
  free(rf->path);
  free(rf);
}

/* Caller holds the lock; the slot exists. */
static void set_lazy(int fd, bool lazy) {
  __atomic_store_n(&lazy_flags[(unsigned)fd >> SLOTS_BITS][(unsigned)fd & (SLOTS - 1)], lazy, __ATOMIC_RELEASE);
}

/* Lock-free hint: fd may be a lazily filled pod file. */
static bool maybe_lazy(int fd) {
  if (!rfile_any() || fd < 0 || (unsigned)fd >= SLOTS * MAX_SLOTS) return false;
  uint8_t *flags = __atomic_load_n(&lazy_flags[(unsigned)fd >> SLOTS_BITS], __ATOMIC_ACQUIRE);
  return flags && __atomic_load_n(&flags[(unsigned)fd & (SLOTS - 1)], __ATOMIC_RELAXED);
}

/* Lock-free hint: fd may have an entry. */
static bool maybe(int fd) {
  if (!rfile_any() || fd < 0 || (unsigned)fd >= SLOTS * MAX_SLOTS) return false;
  struct rfile **chunk = __atomic_load_n(&slots[(unsigned)fd >> SLOTS_BITS], __ATOMIC_ACQUIRE);
  return chunk && __atomic_load_n(&chunk[(unsigned)fd & (SLOTS - 1)], __ATOMIC_RELAXED) != NULL;
}

/* Takes a reference to fd's entry if it still describes fd. */
static struct rfile *get(int fd) {
  if (!maybe(fd)) return NULL;
  pthread_mutex_lock(&lock);
  struct rfile **s = slot(fd, false);
  struct rfile *rf = s ? *s : NULL;
  if (rf) __atomic_add_fetch(&rf->refs, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_unlock(&lock);
  if (!rf) return NULL;
  struct stat sb;
  if (REAL(fstat)(fd, &sb) != 0 || sb.st_ino != rf->ino || sb.st_dev != rf->dev) {
    /* Closed behind our back and reused: forget it (without write-back). */
    pthread_mutex_lock(&lock);
    s = slot(fd, false);
    struct rfile *stale = NULL;
    if (s && *s == rf) {
      stale = rf;
      *s = NULL;
      set_lazy(fd, false);
      live--;
    }
    pthread_mutex_unlock(&lock);
    if (stale) unref(stale, false);
    unref(rf, false);
    return NULL;
  }
  return rf;
}

SHIM_HIDDEN void rfile_register(int fd, const char *path, const struct fs_reply *r, bool is_dir) {
  struct rfile *rf = calloc(1, sizeof *rf);
  if (!rf) return;
  rf->refs = 1;
  rf->dir = is_dir;
  rf->lazy = r->lazy && !is_dir;
  rf->writeback = r->writeback;
  rf->handle = r->handle;
  rf->st = r->st;
  rf->path = strdup(path);
  rf->window = CHUNK;
  struct stat sb;
  if (REAL(fstat)(fd, &sb) == 0) {
    rf->dev = sb.st_dev;
    rf->ino = sb.st_ino;
  }
  if (rf->lazy) {
    rf->nchunks = ((uint64_t)r->st.size + CHUNK - 1) / CHUNK;
    rf->present = calloc((rf->nchunks + 7) / 8 + 1, 1);
    if (!rf->present) rf->lazy = false;
  }
  struct rfile *old = NULL;
  pthread_mutex_lock(&lock);
  struct rfile **s = slot(fd, true);
  if (s) {
    old = *s;
    *s = rf;
    set_lazy(fd, rf->lazy);
    if (!old) live++;
  }
  pthread_mutex_unlock(&lock);
  if (!s) unref(rf, true);
  unref(old, false);
}

SHIM_HIDDEN bool rfile_info(int fd, char *path, size_t cap, struct rstat *st, bool *is_dir,
                            bool *writable_copy) {
  struct rfile *rf = get(fd);
  if (!rf) return false;
  if (path) {
    if (!rf->path || strlen(rf->path) + 1 > cap) {
      unref(rf, false);
      return false;
    }
    strcpy(path, rf->path);
  }
  if (st) st = memcpy(st, &rf->st, sizeof *st);
  if (is_dir) *is_dir = rf->dir;
  if (writable_copy) *writable_copy = !rf->lazy && !rf->dir;
  unref(rf, false);
  return true;
}


SHIM_HIDDEN int rfile_ensure(int fd, int64_t offset, int64_t len) {
  if (!rfile_any()) return 0;
  struct rfile *rf = get(fd);
  if (!rf) return 0;
  if (!rf->lazy) {
    unref(rf, false);
    return 0;
  }
  int64_t size = rf->st.size;
  if (len < 0) {
    offset = 0;
    len = size;
  }
  if (offset < 0) offset = 0;
  if (offset >= size || len == 0) {
    unref(rf, false);
    return 0;
  }
  int64_t end = offset + len > size ? size : offset + len;
  int64_t from, to;
  if (!fsproto_fill_plan(rf->present, size, offset, end, &rf->next_offset, &rf->window, &from, &to)) {
    unref(rf, false);
    return 0;
  }
  struct fs_reply r;
  int err = 0;
  SHIM_ENTER();
  int saved = errno;
  if (fsproto_fill(rf->handle, from, to - from, &r) == 0 && r.err == 0) {
    for (uint64_t c = (uint64_t)from / CHUNK; (int64_t)(c * CHUNK) < to; c++)
      __atomic_or_fetch(&rf->present[c / 8], (uint8_t)(1u << (c % 8)), __ATOMIC_RELEASE);
  } else {
    /* Never hand the program the holes of the sparse copy as data. */
    err = EIO;
    shim_log("fill %lld+%lld of %s failed", (long long)from, (long long)(to - from), rf->path);
  }
  errno = saved;
  SHIM_LEAVE();
  rf->next_offset = end;
  unref(rf, false);
  return err;
}

SHIM_HIDDEN void rfile_forget(int fd) {
  if (!rfile_any()) return;
  pthread_mutex_lock(&lock);
  struct rfile **s = slot(fd, false);
  struct rfile *rf = s ? *s : NULL;
  if (rf) {
    *s = NULL;
    set_lazy(fd, false);
    live--;
  }
  pthread_mutex_unlock(&lock);
  if (rf) unref(rf, true);
}

SHIM_HIDDEN void rfile_before_exec(void) {
  if (!rfile_any()) return;
  for (unsigned c = 0; c < MAX_SLOTS; c++) {
    uint8_t *flags = __atomic_load_n(&lazy_flags[c], __ATOMIC_ACQUIRE);
    if (!flags) continue;
    for (unsigned i = 0; i < SLOTS; i++) {
      if (!__atomic_load_n(&flags[i], __ATOMIC_RELAXED)) continue;
      int fd = (int)(c << SLOTS_BITS | i);
      int fdflags = REAL(fcntl)(fd, F_GETFD);
      if (fdflags >= 0 && !(fdflags & FD_CLOEXEC)) (void)rfile_ensure(fd, 0, -1);
    }
  }
}

SHIM_HIDDEN void rfile_forget_range(unsigned first, unsigned last) {
  if (!rfile_any()) return;
  if (last >= SLOTS * MAX_SLOTS) last = SLOTS * MAX_SLOTS - 1;
  for (unsigned fd = first; fd <= last && rfile_any(); fd++) {
    if (!slots[fd >> SLOTS_BITS]) {
      fd |= SLOTS - 1;
      continue;
    }
    rfile_forget((int)fd);
  }
}

SHIM_HIDDEN void rfile_copy(int from, int to) {
  if (!rfile_any() || from == to) return;
  struct rfile *old = NULL;
  pthread_mutex_lock(&lock);
  struct rfile **s = slot(from, false);
  struct rfile *rf = s ? *s : NULL;
  struct rfile **d = slot(to, rf != NULL);
  if (d) {
    old = *d;
    *d = rf;
    set_lazy(to, rf && rf->lazy);
    if (rf) __atomic_add_fetch(&rf->refs, 1, __ATOMIC_ACQ_REL);
    live += (rf != NULL) - (old != NULL);
  }
  pthread_mutex_unlock(&lock);
  if (old) unref(old, true);
}

SHIM_HIDDEN int rfile_sync(int fd) {
  struct rfile *rf = get(fd);
  if (!rf) return 0;
  int err = 0;
  if (rf->writeback && rf->handle > 0) {
    struct fs_reply r;
    SHIM_ENTER();
    if (fsproto_writeback(rf->handle, &r) < 0) err = EIO;
    else err = r.err;
    SHIM_LEAVE();
  }
  unref(rf, false);
  return err;
}

/* ---- hooks on the content of lazily filled descriptors ---- */

static int64_t current_offset(int fd) {
  return (int64_t)lseek(fd, 0, SEEK_CUR);
}

static size_t iov_total(const struct iovec *iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n && iov; i++) t += iov[i].iov_len;
  return t;
}

/* Fills what a call is about to read; on failure the call fails with EIO. */
#define ENSURE(fd, off, len, fail)                             \
  do {                                                         \
    if (!shim_depth && maybe_lazy(fd)) {                       \
      int saved_ = errno;                                      \
      int err_ = rfile_ensure((fd), (off), (int64_t)(len));    \
      if (err_) {                                              \
        errno = err_;                                          \
        return fail;                                           \
      }                                                        \
      errno = saved_;                                          \
    }                                                          \
  } while (0)

SHIM_EXPORT ssize_t read(int fd, void *buf, size_t n) {
  ENSURE(fd, current_offset(fd), n, -1);
  return REAL(read)(fd, buf, n);
}

SHIM_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off) {
  ENSURE(fd, off, n, -1);
  return REAL(pread)(fd, buf, n, off);
}

SHIM_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off64_t off) {
  ENSURE(fd, off, n, -1);
  return REAL(pread64)(fd, buf, n, off);
}

SHIM_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n) {
  ENSURE(fd, current_offset(fd), iov_total(iov, n), -1);
  return REAL(readv)(fd, iov, n);
}

SHIM_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int n, off_t off) {
  ENSURE(fd, off, iov_total(iov, n), -1);
  return REAL(preadv)(fd, iov, n, off);
}

SHIM_EXPORT ssize_t preadv64(int fd, const struct iovec *iov, int n, off64_t off) {
  ENSURE(fd, off, iov_total(iov, n), -1);
  return REAL(preadv64)(fd, iov, n, off);
}

SHIM_EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags) {
  ENSURE(fd, off < 0 ? current_offset(fd) : off, iov_total(iov, n), -1);
  return REAL(preadv2)(fd, iov, n, off, flags);
}

SHIM_EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int n, off64_t off, int flags) {
  ENSURE(fd, off < 0 ? current_offset(fd) : off, iov_total(iov, n), -1);
  return REAL(preadv64v2)(fd, iov, n, off, flags);
}

/* A mapping is read without any call the shim sees: fill the mapped range first. */
SHIM_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (fd >= 0 && !(flags & MAP_ANONYMOUS)) ENSURE(fd, off, len, MAP_FAILED);
  return REAL(mmap)(addr, len, prot, flags, fd, off);
}

SHIM_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) {
  if (fd >= 0 && !(flags & MAP_ANONYMOUS)) ENSURE(fd, off, len, MAP_FAILED);
  return REAL(mmap64)(addr, len, prot, flags, fd, off);
}

/* In-kernel copies: fill the whole file (they are rare on big pod files). */
SHIM_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n) {
  ENSURE(in, 0, -1, -1);
  return REAL(sendfile)(out, in, off, n);
}

SHIM_EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t n) {
  ENSURE(in, 0, -1, -1);
  return REAL(sendfile64)(out, in, off, n);
}

SHIM_EXPORT ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                                    unsigned int flags) {
  ENSURE(in, 0, -1, -1);
  return REAL(copy_file_range)(in, in_off, out, out_off, n, flags);
}

SHIM_EXPORT ssize_t splice(int in, off64_t *in_off, int out, off64_t *out_off, size_t n,
                           unsigned int flags) {
  ENSURE(in, 0, -1, -1);
  return REAL(splice)(in, in_off, out, out_off, n, flags);
}

SHIM_EXPORT int fsync(int fd) {
  if (!shim_depth && rfile_any()) {
    int err = rfile_sync(fd);
    if (err) {
      errno = err;
      return -1;
    }
  }
  return REAL(fsync)(fd);
}

SHIM_EXPORT int fdatasync(int fd) {
  if (!shim_depth && rfile_any()) {
    int err = rfile_sync(fd);
    if (err) {
      errno = err;
      return -1;
    }
  }
  return REAL(fdatasync)(fd);
}
