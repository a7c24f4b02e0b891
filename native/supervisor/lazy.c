/*
 * Big pod files filled as the program reads them (docs/ARCHITECTURE.md, "Static and Go
 * programs: seccomp", "Files"), as the shim's rfile.c does for preloaded programs.
 *
 * The program's reads of an ordinary descriptor are never notified: that would cost every
 * read of every program a trip to the supervisor. Instead a lazily filled file is placed
 * at a descriptor number in a reserved window just below the program's RLIMIT_NOFILE
 * soft limit (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SETFD), and the filter
 * notifies the calls that read a descriptor's content (read, readv, pread64, preadv,
 * preadv2, mmap, sendfile, copy_file_range, splice, execveat) or copy it elsewhere (dup,
 * dup2, dup3, fcntl) only when that descriptor argument is in the window. Everything
 * else, and these calls on every other descriptor, runs at full speed.
 *
 * On such a call the file is recognised by the memfd's inode (/proc/<tid>/fd/<fd>, so a
 * forked child's inherited descriptor is recognised too; an unknown inode is continued),
 * the range the call is about to read is filled (fs.fill, the shim's request) with the
 * same read-ahead window that doubles while reading is sequential, and the call is
 * continued: the kernel then reads real content. A dup or fcntl(F_DUPFD*) fills the rest
 * of the file first (the copy lands outside the window, where reads are not seen), and
 * so do the in-kernel copies (sendfile, copy_file_range, splice) and execveat. Once every
 * chunk is present a call costs only the recognition.
 *
 * What is kept per file: its inode, the proxy's handle, its size and a bitmap of present
 * 64 KiB chunks (2 KiB per GiB). It is forgotten at the last close of the program's open
 * file, seen with inotify as for write-mode files (files.c), which also sends fs.release.
 */
#include "files.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#ifndef SECCOMP_ADDFD_FLAG_SETFD
#define SECCOMP_ADDFD_FLAG_SETFD (1UL << 0)
#endif

/* The proxy fills in the same blocks and reads ahead as far (protocol/shim-wire.ts). */
#define CHUNK WIRE_FILE_BLOCK_BYTES
/* How many descriptor numbers are reserved, and the highest number used: a window near a
 * huge limit would make the kernel grow the program's descriptor table to that size. */
#define LAZY_FDS 64
#define LAZY_FD_CEILING 65536
/* Below this soft limit no window is reserved (a program with so few descriptors allowed
 * needs its low numbers): big files are then read whole at open. */
#define LAZY_MIN_LIMIT 256

static unsigned window_lo, window_hi; /* [lo, hi); both 0: no window */

void sv_lazy_prepare(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < LAZY_MIN_LIMIT) return;
  rlim_t top = rl.rlim_cur < LAZY_FD_CEILING ? rl.rlim_cur : LAZY_FD_CEILING;
  window_hi = (unsigned)top;
  window_lo = window_hi - LAZY_FDS;
}

bool sv_lazy_window(unsigned *lo, unsigned *hi) {
  *lo = window_lo;
  *hi = window_hi;
  return window_hi > 0;
}

static bool in_window(int fd) { return fd >= 0 && (unsigned)fd >= window_lo && (unsigned)fd < window_hi; }

struct lazyfile {
  dev_t dev;
  ino_t ino;
  int64_t handle;           /* the proxy's */
  int64_t size;
  uint64_t nchunks;
  _Atomic uint64_t missing; /* chunks not yet present */
  uint8_t *present;         /* bitmap */
  int64_t next_offset;      /* where the last fill ended (sequential detection); racy by design */
  int64_t window;
  int refs;                 /* table's + callers'; under lazy_lock */
  struct lazyfile *next;
};

static pthread_mutex_t lazy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lazyfile *files;
static _Atomic int nfiles;
/* Set once a pod directory's listing was placed in the window (sv_lazy_install_dir). */
static _Atomic bool dirs_placed;
/* One install at a time: two threads of one process must not pick the same free number. */
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;

static void unref(struct lazyfile *f) {
  pthread_mutex_lock(&lazy_lock);
  int left = --f->refs;
  pthread_mutex_unlock(&lazy_lock);
  if (left > 0) return;
  free(f->present);
  free(f);
}

static struct lazyfile *find(dev_t dev, ino_t ino) {
  struct lazyfile *found = NULL;
  pthread_mutex_lock(&lazy_lock);
  for (struct lazyfile *f = files; f; f = f->next) {
    if (f->dev == dev && f->ino == ino) {
      found = f;
      f->refs++;
      break;
    }
  }
  pthread_mutex_unlock(&lazy_lock);
  return found;
}

bool sv_lazy_track(int fd, int64_t handle, int64_t size) {
  struct stat st;
  if (fstat(fd, &st) != 0 || size <= 0) return false;
  struct lazyfile *f = calloc(1, sizeof *f);
  uint64_t nchunks = ((uint64_t)size + CHUNK - 1) / CHUNK;
  uint8_t *present = calloc((nchunks + 7) / 8 + 1, 1);
  if (!f || !present) {
    free(f);
    free(present);
    return false;
  }
  f->dev = st.st_dev;
  f->ino = st.st_ino;
  f->handle = handle;
  f->size = size;
  f->nchunks = nchunks;
  f->missing = nchunks;
  f->present = present;
  f->window = CHUNK;
  f->refs = 1;
  pthread_mutex_lock(&lazy_lock);
  f->next = files;
  files = f;
  pthread_mutex_unlock(&lazy_lock);
  atomic_fetch_add(&nfiles, 1);
  return true;
}

void sv_lazy_forget(int64_t handle) {
  struct lazyfile *gone = NULL;
  pthread_mutex_lock(&lazy_lock);
  for (struct lazyfile **p = &files; *p; p = &(*p)->next) {
    if ((*p)->handle == handle) {
      gone = *p;
      *p = gone->next;
      break;
    }
  }
  pthread_mutex_unlock(&lazy_lock);
  if (!gone) return;
  atomic_fetch_sub(&nfiles, 1);
  unref(gone);
}

static void mark_present(struct lazyfile *f, uint64_t c) {
  uint8_t bit = (uint8_t)(1u << (c % 8));
  if (!(__atomic_fetch_or(&f->present[c / 8], bit, __ATOMIC_ACQ_REL) & bit)) atomic_fetch_sub(&f->missing, 1);
}

/* Makes [offset, offset + len) present (len < 0: from offset to the end); 0 or an errno.
 * The same policy as the shim's rfile_ensure: skip what is present, then fetch from the
 * first missing chunk with a read-ahead window that doubles while reading is sequential. */
static int ensure(struct lazyfile *f, int64_t offset, int64_t len) {
  int64_t size = f->size;
  if (offset < 0) offset = 0;
  if (offset >= size || len == 0) return 0;
  int64_t end = len < 0 || len > size - offset ? size : offset + len;
  int64_t from, to;
  if (!fsproto_fill_plan(f->present, size, offset, end, &f->next_offset, &f->window, &from, &to)) return 0;
  struct fs_reply r;
  if (fsproto_fill(f->handle, from, to - from, &r) != 0 || r.err != 0) {
    /* Never let the program read the sparse memfd's holes as data. */
    shim_log("seccomp: fill %lld+%lld failed", (long long)from, (long long)(to - from));
    return EIO;
  }
  for (uint64_t c = (uint64_t)from / CHUNK; (int64_t)(c * CHUNK) < to; c++) mark_present(f, c);
  f->next_offset = end;
  /* The request may reach past what was fetched when something in between was present. */
  if (to < end) return ensure(f, to, end - to);
  return 0;
}

/* Every chunk still missing, from the first one on. */
static int fill_everything(struct lazyfile *f) {
  int err = 0;
  uint64_t c = 0;
  while (!err && atomic_load(&f->missing) > 0) {
    while (c < f->nchunks && fsproto_chunk_present(f->present, c)) c++;
    if (c >= f->nchunks) break;
    err = ensure(f, (int64_t)(c * CHUNK), -1);
  }
  return err;
}

int sv_lazy_fill_all(int fd, int64_t handle, int64_t size) {
  struct stat st;
  struct lazyfile *f = fstat(fd, &st) == 0 ? find(st.st_dev, st.st_ino) : NULL;
  if (!f) {
    struct fs_reply r;
    return fsproto_fill(handle, 0, size, &r) != 0 || r.err != 0 ? EIO : 0;
  }
  int err = fill_everything(f);
  unref(f);
  return err;
}

/* A free descriptor number in the window of the calling process (highest first), or -1. */
static int free_number(struct sv_call *call) {
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%u/fd", call->req->pid);
  uint8_t used[LAZY_FDS] = {0};
  DIR *d = opendir(dir);
  if (!d) return -1;
  for (struct dirent *e; (e = readdir(d));) {
    char *end;
    unsigned long fd = strtoul(e->d_name, &end, 10);
    if (*end || e->d_name[0] == '.' || fd < window_lo || fd >= window_hi) continue;
    used[fd - window_lo] = 1;
  }
  closedir(d);
  for (int i = LAZY_FDS - 1; i >= 0; i--)
    if (!used[i]) return (int)window_lo + i;
  return -1;
}

int sv_lazy_install(struct sv_call *call, int fd, bool cloexec) {
  if (window_hi == 0) return -ENOSPC;
  pthread_mutex_lock(&install_lock);
  int number = free_number(call);
  int r = -ENOSPC;
  if (number >= 0) {
    struct seccomp_notif_addfd a = {0};
    a.id = call->req->id;
    a.flags = SECCOMP_ADDFD_FLAG_SETFD;
    a.srcfd = (uint32_t)fd;
    a.newfd = (uint32_t)number;
    a.newfd_flags = cloexec ? O_CLOEXEC : 0;
    /* EBADF: the number is at or above the process's own limit (it lowered it). */
    r = ioctl(call->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0 ? -errno : number;
  }
  pthread_mutex_unlock(&install_lock);
  return r;
}

int sv_lazy_install_dir(struct sv_call *call, int fd, bool cloexec) {
  int at = sv_lazy_install(call, fd, cloexec);
  if (at >= 0) atomic_store(&dirs_placed, true);
  return at;
}

/* A call on a descriptor in the window that is no lazily filled file: if it is a pod
 * directory's listing, the kernel's answer for a directory (read: EISDIR; sendfile and
 * splice: EINVAL; copy_file_range: EISDIR; mmap: ENODEV), not the listing's bytes. */
static void before_dir_call(struct sv_call *call, int fd) {
  int err;
  switch (call->req->data.nr) {
    case __NR_read:
    case __NR_readv:
    case __NR_pread64:
    case __NR_preadv:
    case __NR_preadv2:
    case __NR_copy_file_range:
      err = EISDIR;
      break;
    case __NR_sendfile:
    case __NR_splice:
      err = EINVAL;
      break;
    case __NR_mmap:
      err = ENODEV;
      break;
    default:
      return;
  }
  struct podfile pf;
  if (atomic_load(&dirs_placed) && podfile_recognise(call, fd, &pf, NULL, 0, NULL) && pf.dir) sv_fail(call, err);
}

/* Sum of the lengths of the program's iovec array, or -1 (unknown: fill to the end). */
static int64_t iov_total(struct sv_call *call, uint64_t addr, uint64_t count) {
  if (count == 0) return 0;
  if (count > 1024) return -1; /* UIO_MAXIOV: the kernel fails the call itself */
  struct iovec *iov = malloc(count * sizeof *iov);
  if (!iov) return -1;
  int64_t total = -1;
  if (sv_read(call, addr, iov, count * sizeof *iov) == 0) {
    total = 0;
    for (uint64_t i = 0; i < count; i++) {
      if (iov[i].iov_len > (size_t)INT64_MAX - (size_t)total) {
        total = -1;
        break;
      }
      total += (int64_t)iov[i].iov_len;
    }
  }
  free(iov);
  return total;
}

/* The descriptor's current file position in the calling process, or -1. */
static int64_t position(struct sv_call *call, int fd) {
  int dup = sv_getfd(call, fd);
  if (dup < 0) return -1;
  off_t pos = lseek(dup, 0, SEEK_CUR);
  close(dup);
  return pos;
}

void sv_lazy_before(struct sv_call *call, int arg) {
  const __u64 *a = call->req->data.args;
  int fd = (int)(uint32_t)a[arg];
  if (!in_window(fd) || (atomic_load(&nfiles) == 0 && !atomic_load(&dirs_placed))) return;
  int nr = call->req->data.nr;
  if (nr == __NR_fcntl && (int)a[1] != F_DUPFD && (int)a[1] != F_DUPFD_CLOEXEC) return;
  if (nr == __NR_mmap && ((int)a[3] & MAP_ANONYMOUS)) return;
  char link[64];
  snprintf(link, sizeof link, "/proc/%u/fd/%d", call->req->pid, fd);
  struct stat st;
  if (stat(link, &st) != 0 || !S_ISREG(st.st_mode)) return;
  struct lazyfile *f = find(st.st_dev, st.st_ino);
  if (!f) {
    before_dir_call(call, fd);
    return;
  }
  if (atomic_load(&f->missing) == 0) {
    unref(f);
    return;
  }
  int64_t offset = 0, len = -1; /* the rest of the file, unless the call says less */
  bool valid = true;
  switch (nr) {
    case __NR_read:
      offset = position(call, fd);
      len = (int64_t)(size_t)a[2];
      break;
    case __NR_readv:
      offset = position(call, fd);
      len = iov_total(call, a[1], a[2]);
      valid = sv_valid(call);
      break;
    case __NR_pread64:
      offset = (int64_t)a[3];
      len = (int64_t)(size_t)a[2];
      break;
    case __NR_preadv:
    case __NR_preadv2:
      offset = (int64_t)a[3] == -1 && nr == __NR_preadv2 ? position(call, fd) : (int64_t)a[3];
      len = iov_total(call, a[1], a[2]);
      valid = sv_valid(call);
      break;
    case __NR_mmap:
      offset = (int64_t)a[5];
      len = (int64_t)(size_t)a[1];
      break;
    default: /* dup, dup2, dup3, fcntl(F_DUPFD*), sendfile, copy_file_range, splice, execveat */
      break;
  }
  if (offset < 0 && (nr == __NR_pread64 || nr == __NR_preadv || nr == __NR_mmap)) {
    unref(f); /* a negative offset: the kernel fails the call itself */
    return;
  }
  if (offset < 0) { /* no position: fill from the start */
    offset = 0;
    len = -1;
  }
  int err = valid ? ensure(f, offset, len < 0 ? -1 : len) : 0;
  /* A dup's copy and an in-kernel copy read without any call seen here: the whole file. */
  if (!err && len < 0) err = fill_everything(f);
  unref(f);
  if (err) sv_fail(call, err);
}
