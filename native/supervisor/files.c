/*
 * The pod's files for programs under seccomp (docs/ARCHITECTURE.md, "Static and Go
 * programs: seccomp", "Files"): the same path rules as the preload shim (pathrules.c,
 * linked unchanged) and the same fs.* requests to the session proxy (fsproto.c).
 *
 * A remote open is answered with a memfd made here, filled by the proxy through
 * /proc/<supervisor>/fd/<memfd> exactly as for the shim, and installed in the program
 * with SECCOMP_IOCTL_NOTIF_ADDFD + SEND, so the program then reads, seeks, mmaps and
 * sendfiles a real kernel file without any further notification. A pod directory is a
 * memfd too, holding its listing (". ", "..", then the pod's entries in the proxy's
 * format: d_type, 16-bit little-endian name length, name); getdents64 on it is answered
 * from the listing at the descriptor's own file position, so rewinddir/seekdir (lseek),
 * dup and fork behave as on a real directory with no state kept here.
 *
 * Descriptors are recognised by the memfd's identity (st_dev, st_ino of
 * /proc/<tid>/fd/<fd>), not by (process, fd number): a dup, a fork or an exec keeps the
 * same file and so the same answer, and a closed number reused for another file is not
 * mistaken for ours. What is kept per memfd (its pod path and the pod's stat) is bounded
 * (SV_FILES_MAX); the oldest is forgotten first, after which fstat of that descriptor
 * reports the memfd's own metadata (right size, not the pod's mode and times).
 *
 * A big file opened read-only is filled as it is read (lazy.c: placed in a reserved
 * window of descriptor numbers, whose reads alone are notified); every other pod file is
 * filled whole at open. Limits accepted (and documented): a
 * pod directory's descriptor reads as its listing instead of failing with EISDIR, and
 * fchdir to it fails (ENOTDIR); relative paths are local unless relative to a pod
 * directory's descriptor (the program's working directory is always a local one).
 */
#include "sv.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/openat2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* What is kept about memfds handed out (bounded; the oldest is forgotten first). */
#define SV_FILES_MAX 65536
#define SV_FILES_BUCKETS 4096
/* The largest getdents64 answer built at once (the program may ask for more). */
#define SV_DENTS_MAX (64 * 1024)

struct podfile {
  dev_t dev;                /* the memfd's identity */
  ino_t ino;
  bool dir;                 /* a listing */
  bool copy;                /* a writable private copy: its size is the memfd's */
  int64_t handle;           /* write mode: the proxy's handle, written back on close/fsync */
  struct rstat st;          /* the pod's stat at open */
  char *path;               /* the pod path (absolute, as sent) */
  struct podfile *next;     /* hash chain */
  struct podfile *newer;    /* FIFO of everything kept */
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct podfile *buckets[SV_FILES_BUCKETS];
static struct podfile *oldest, *newest;
static size_t kept;
static _Atomic size_t ever_kept; /* 0: nothing to recognise, answer fd calls at once */

static size_t bucket_of(dev_t dev, ino_t ino) {
  uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev;
  return (size_t)(h >> 52) % SV_FILES_BUCKETS;
}

static void unlink_bucket(struct podfile *f) {
  for (struct podfile **p = &buckets[bucket_of(f->dev, f->ino)]; *p; p = &(*p)->next) {
    if (*p == f) {
      *p = f->next;
      return;
    }
  }
}

static void remember(const struct podfile *proto) {
  struct podfile *f = malloc(sizeof *f);
  char *path = strdup(proto->path);
  if (!f || !path) {
    free(f);
    free(path);
    return;
  }
  *f = *proto;
  f->path = path;
  f->newer = NULL;
  pthread_mutex_lock(&table_lock);
  size_t b = bucket_of(f->dev, f->ino);
  f->next = buckets[b];
  buckets[b] = f;
  if (newest) newest->newer = f;
  else oldest = f;
  newest = f;
  kept++;
  while (kept > SV_FILES_MAX && oldest) {
    struct podfile *gone = oldest;
    oldest = gone->newer;
    if (!oldest) newest = NULL;
    unlink_bucket(gone);
    kept--;
    free(gone->path);
    free(gone);
  }
  pthread_mutex_unlock(&table_lock);
  atomic_fetch_add(&ever_kept, 1);
}

/* Copies what is kept about (dev, ino) into *out (path into path[cap]); false if none. */
static bool lookup(dev_t dev, ino_t ino, struct podfile *out, char *path, size_t cap) {
  bool found = false;
  pthread_mutex_lock(&table_lock);
  for (struct podfile *f = buckets[bucket_of(dev, ino)]; f; f = f->next) {
    if (f->dev == dev && f->ino == ino) {
      *out = *f;
      out->path = NULL;
      if (path && cap) snprintf(path, cap, "%s", f->path);
      found = true;
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
  return found;
}

/* The program's descriptor `fd` (of the calling thread) is one of our memfds: what is
 * kept about it, and the memfd's own stat (current size). */
static bool recognise(struct sv_call *call, int fd, struct podfile *out, char *path, size_t cap,
                      struct stat *own) {
  if (fd < 0 || atomic_load(&ever_kept) == 0) return false;
  char link[64];
  snprintf(link, sizeof link, "/proc/%u/fd/%d", call->req->pid, fd);
  struct stat st;
  if (stat(link, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (!lookup(st.st_dev, st.st_ino, out, path, cap)) return false;
  if (own) *own = st;
  return true;
}

/* ---- the path rules need: which descriptor stands for a pod directory ---- */

/* The call being handled on this worker thread: pathrules.c asks rfile_info about a
 * dirfd of the program, which only means something for that call's process. */
static __thread struct sv_call *current;

SHIM_HIDDEN bool rfile_info(int fd, char *path, size_t cap, struct rstat *st, bool *is_dir,
                            bool *writable_copy) {
  if (!current) return false;
  struct podfile f;
  char buf[4096];
  if (!recognise(current, fd, &f, buf, sizeof buf, NULL)) return false;
  if (path && cap) snprintf(path, cap, "%s", buf);
  if (st) *st = f.st;
  if (is_dir) *is_dir = f.dir;
  if (writable_copy) *writable_copy = f.copy;
  return true;
}

/* Where the program's (dirfd, path) goes; abs receives the pod path when remote. */
static enum fs_route route(struct sv_call *call, int dirfd, const char *path, char *abs, size_t cap) {
  current = call;
  SHIM_ENTER();
  enum fs_route r = fs_route_at(dirfd, path, abs, cap);
  SHIM_LEAVE();
  current = NULL;
  return r;
}

/* Write mode: the program's last closes handled before a pod request (below). */
static void drain_closes(void);

/* ---- reading the call's arguments ---- */

static int arg_fd(struct sv_call *call, int i) { return (int)(uint32_t)call->req->data.args[i]; }

/* Reads the path argument i. false: the call was answered or must run as it is (a bad
 * pointer or an overlong path: the kernel gives the program its own EFAULT/ENAMETOOLONG). */
static bool arg_path(struct sv_call *call, int i, char *buf, size_t cap) {
  uint64_t addr = call->req->data.args[i];
  if (addr == 0 || sv_read_string(call, addr, buf, cap) < 0) {
    sv_continue(call);
    return false;
  }
  return true;
}

/* The route of the path argument `pi` relative to the dirfd argument `di` (-1: AT_FDCWD).
 * FS_LOCAL has been answered (CONTINUE); FS_NOT_FOUND has been answered (ENOENT);
 * FS_REMOTE leaves the call to the caller, checked still valid. */
static enum fs_route path_arg_route(struct sv_call *call, int di, int pi, char *abs, size_t cap) {
  char path[4096];
  if (!arg_path(call, pi, path, sizeof path)) return FS_LOCAL;
  int dirfd = di < 0 ? AT_FDCWD : arg_fd(call, di);
  enum fs_route r = route(call, dirfd, path, abs, cap);
  if (r == FS_LOCAL) {
    sv_continue(call);
  } else if (!sv_valid(call)) {
    sv_continue(call); /* the thread is gone: nothing to answer for */
    r = FS_LOCAL;
  } else if (r == FS_NOT_FOUND) {
    sv_fail(call, ENOENT);
  } else {
    drain_closes();
  }
  return r;
}

/* A request the channel could not carry: EIO, as the shim answers. */
static int reply_err(int rc, const struct fs_reply *rep) { return rc < 0 ? EIO : rep->err; }

/* ---- stat ---- */


static void statx_fill(const struct stat *s, unsigned mask, struct statx *x) {
  (void)mask;
  memset(x, 0, sizeof *x);
  x->stx_mask = STATX_BASIC_STATS;
  x->stx_blksize = (uint32_t)s->st_blksize;
  x->stx_nlink = (uint32_t)s->st_nlink;
  x->stx_uid = s->st_uid;
  x->stx_gid = s->st_gid;
  x->stx_mode = (uint16_t)s->st_mode;
  x->stx_ino = s->st_ino;
  x->stx_size = (uint64_t)s->st_size;
  x->stx_blocks = (uint64_t)s->st_blocks;
  x->stx_atime.tv_sec = s->st_atim.tv_sec;
  x->stx_atime.tv_nsec = (uint32_t)s->st_atim.tv_nsec;
  x->stx_mtime.tv_sec = s->st_mtim.tv_sec;
  x->stx_mtime.tv_nsec = (uint32_t)s->st_mtim.tv_nsec;
  x->stx_ctime.tv_sec = s->st_ctim.tv_sec;
  x->stx_ctime.tv_nsec = (uint32_t)s->st_ctim.tv_nsec;
  x->stx_rdev_major = major(s->st_rdev);
  x->stx_rdev_minor = minor(s->st_rdev);
  x->stx_dev_major = major(s->st_dev);
  x->stx_dev_minor = minor(s->st_dev);
}

/* The stat the program sees for one of our descriptors: the pod's, with the memfd's size
 * for a file (what the program reads; a private copy may have grown). */
static void podfile_stat(const struct podfile *f, const struct stat *own, struct stat *out) {
  rstat_to_stat(&f->st, out);
  if (!f->dir) {
    out->st_size = own->st_size;
    out->st_blocks = own->st_blocks;
  }
}

/* Answers a stat of descriptor `fd` if it is ours; false: not ours (nothing answered). */
static bool answer_fd_stat(struct sv_call *call, int fd, uint64_t buf, bool want_statx, unsigned mask) {
  struct podfile f;
  struct stat own, st;
  if (!recognise(call, fd, &f, NULL, 0, &own)) return false;
  if (!sv_valid(call)) {
    sv_continue(call);
    return true;
  }
  podfile_stat(&f, &own, &st);
  int rc;
  if (want_statx) {
    struct statx x;
    statx_fill(&st, mask, &x);
    rc = sv_write(call, buf, &x, sizeof x);
  } else {
    rc = sv_write(call, buf, &st, sizeof st);
  }
  if (rc < 0) sv_fail(call, EFAULT);
  else sv_return(call, 0);
  return true;
}

/* stat of a pod path; follow: a final symlink is followed. */
static void answer_path_stat(struct sv_call *call, const char *abs, bool follow, uint64_t buf,
                             bool want_statx, unsigned mask) {
  struct fs_reply rep;
  int err = reply_err(fsproto_stat(abs, follow, &rep), &rep);
  if (err) {
    sv_fail(call, err);
    return;
  }
  struct stat st;
  rstat_to_stat(&rep.st, &st);
  int rc;
  if (want_statx) {
    struct statx x;
    statx_fill(&st, mask, &x);
    rc = sv_write(call, buf, &x, sizeof x);
  } else {
    rc = sv_write(call, buf, &st, sizeof st);
  }
  if (rc < 0) sv_fail(call, EFAULT);
  else sv_return(call, 0);
}

void sv_fstat(struct sv_call *call) {
  if (!answer_fd_stat(call, arg_fd(call, 0), call->req->data.args[1], false, 0)) sv_continue(call);
}

/* newfstatat(dirfd, path, statbuf, flags): by descriptor with AT_EMPTY_PATH and "". */
void sv_newfstatat(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int flags = (int)a[3];
  char first = 0;
  if ((flags & AT_EMPTY_PATH) && (a[1] == 0 || (sv_read(call, a[1], &first, 1) == 0 && first == 0))) {
    if (!answer_fd_stat(call, arg_fd(call, 0), a[2], false, 0)) sv_continue(call);
    return;
  }
  char abs[4096];
  if (path_arg_route(call, 0, 1, abs, sizeof abs) != FS_REMOTE) return;
  answer_path_stat(call, abs, !(flags & AT_SYMLINK_NOFOLLOW), a[2], false, 0);
}

/* statx(dirfd, path, flags, mask, statxbuf) */
void sv_statx(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int flags = (int)a[2];
  unsigned mask = (unsigned)a[3];
  char first = 0;
  if ((flags & AT_EMPTY_PATH) && (a[1] == 0 || (sv_read(call, a[1], &first, 1) == 0 && first == 0))) {
    if (!answer_fd_stat(call, arg_fd(call, 0), a[4], true, mask)) sv_continue(call);
    return;
  }
  char abs[4096];
  if (path_arg_route(call, 0, 1, abs, sizeof abs) != FS_REMOTE) return;
  answer_path_stat(call, abs, !(flags & AT_SYMLINK_NOFOLLOW), a[4], true, mask);
}

#if defined(__x86_64__)
void sv_stat(struct sv_call *call) {
  char abs[4096];
  if (path_arg_route(call, -1, 0, abs, sizeof abs) != FS_REMOTE) return;
  answer_path_stat(call, abs, true, call->req->data.args[1], false, 0);
}

void sv_lstat(struct sv_call *call) {
  char abs[4096];
  if (path_arg_route(call, -1, 0, abs, sizeof abs) != FS_REMOTE) return;
  answer_path_stat(call, abs, false, call->req->data.args[1], false, 0);
}
#endif

/* ---- open ---- */

/* Creates the listing memfd of a pod directory: ".", "..", then the pod's entries.
 * Returns the fd or -errno. */
static int list_dir(const char *abs) {
  int scratch = memfd_create("tsmirror-pod-listing", MFD_CLOEXEC);
  if (scratch < 0) return -errno;
  struct fs_reply rep;
  int err = reply_err(fsproto_readdir(abs, scratch, &rep), &rep);
  if (err) {
    close(scratch);
    return -err;
  }
  off_t size = lseek(scratch, 0, SEEK_END);
  if (size < 0) size = 0;
  static const char dots[] = {DT_DIR, 1, 0, '.', DT_DIR, 2, 0, '.', '.'};
  char *buf = malloc(sizeof dots + (size_t)size);
  if (!buf) {
    close(scratch);
    return -ENOMEM;
  }
  memcpy(buf, dots, sizeof dots);
  size_t got = 0;
  while (got < (size_t)size) {
    ssize_t n = pread(scratch, buf + sizeof dots + got, (size_t)size - got, (off_t)got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(scratch);
  int fd = memfd_create("tsmirror-pod-dir", MFD_CLOEXEC);
  if (fd < 0) {
    free(buf);
    return -errno;
  }
  size_t len = sizeof dots + got, done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, (off_t)done);
    if (n <= 0) {
      free(buf);
      close(fd);
      return -EIO;
    }
    done += (size_t)n;
  }
  free(buf);
  return fd;
}

/* A second open file of the memfd with the program's access mode (a read-only open must
 * not be writable) and O_APPEND; the original is closed unless `keep`. A write-mode file
 * always gets one: its last close is seen by inotify (below), which the memfd's own open
 * file does not report. Returns the fd or -errno. */
static int reopen_as(int memfd, int flags, bool keep) {
  int acc = flags & O_ACCMODE;
  if (acc == O_RDWR && !(flags & O_APPEND) && !keep) return memfd;
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", memfd);
  int fd = open(self, (acc == O_ACCMODE ? O_RDWR : acc) | (flags & O_APPEND) | O_CLOEXEC);
  int err = errno;
  if (!keep) close(memfd);
  return fd < 0 ? -err : fd;
}

/* ---- write mode: the last close of a pod file (inotify IN_CLOSE_WRITE) ----
 *
 * A write-mode pod file keeps a handle in the proxy (its copy of the memfd and the file
 * open in the pod) until the program is done with it. The program's open file is watched
 * with inotify: IN_CLOSE_WRITE comes when its last descriptor goes, in whatever process
 * (dup, fork, exit, even SIGKILL), and the content is then written back if it changed
 * since the last write-back, and the handle released. Close and its kin are also notified
 * in write mode (sv.h) and write back before they run, so a program that closes a file
 * and opens it again, or a shell that redirects and then runs `cat`, reads what it wrote;
 * events not yet handled are handled before any other pod request (drain_closes). */

struct watch {
  int wd;                 /* inotify watch of the memfd */
  int64_t handle;         /* the proxy's */
  bool lazy;              /* a lazily filled read-only file (lazy.c): nothing to write back */
  int held;               /* the supervisor's descriptor of the memfd: its size and time */
  struct timespec mtime;  /* as last written back (or as opened) */
  off_t size;
  struct watch *next;
};

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct watch *watches;
static int inotify_fd = -1;
static _Atomic int nwatches;

static bool same_content(const struct watch *w, const struct stat *st) {
  return st->st_size == w->size && st->st_mtim.tv_sec == w->mtime.tv_sec && st->st_mtim.tv_nsec == w->mtime.tv_nsec;
}

/* Handles the queued last-close events; watch_lock held. */
static void drain_locked(void) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(inotify_fd, buf, sizeof buf);
    if (n <= 0) return;
    for (char *p = buf; p < buf + n;) {
      const struct inotify_event *e = (const struct inotify_event *)p;
      p += sizeof *e + e->len;
      for (struct watch **wp = &watches; *wp; wp = &(*wp)->next) {
        struct watch *w = *wp;
        if (w->wd != e->wd) continue;
        struct stat st;
        if (!w->lazy && (e->mask & IN_CLOSE_WRITE) && fstat(w->held, &st) == 0 && !same_content(w, &st)) {
          struct fs_reply rep;
          int err = reply_err(fsproto_writeback(w->handle, &rep), &rep);
          if (err) shim_log("seccomp: write-back after the last close failed: errno %d", err);
        }
        if (w->lazy) sv_lazy_forget(w->handle);
        *wp = w->next;
        inotify_rm_watch(inotify_fd, w->wd);
        close(w->held);
        fsproto_release(w->handle);
        free(w);
        atomic_fetch_sub(&nwatches, 1);
        break;
      }
    }
  }
}

/* Before a pod request: files the program has closed are in the pod first. */
static void drain_closes(void) {
  if (atomic_load(&nwatches) == 0) return;
  pthread_mutex_lock(&watch_lock);
  drain_locked();
  pthread_mutex_unlock(&watch_lock);
}

/* Handles last closes as they come, when no request comes to do it. */
static void *close_watcher(void *arg) {
  (void)arg;
  struct pollfd pfd = {.fd = inotify_fd, .events = POLLIN};
  for (;;) {
    if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return NULL;
    pthread_mutex_lock(&watch_lock);
    drain_locked();
    pthread_mutex_unlock(&watch_lock);
  }
}

static pthread_once_t watcher_once = PTHREAD_ONCE_INIT;
static void start_watcher(void) {
  inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_fd < 0) return;
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  if (pthread_create(&t, &attr, close_watcher, NULL) != 0) {
    close(inotify_fd);
    inotify_fd = -1;
  }
  pthread_attr_destroy(&attr);
}

/* Watches the program's open file `fd` (the supervisor's, before ADDFD) of a write-mode
 * pod file, or of a lazily filled one (`lazy`: read-only, so its last close is
 * IN_CLOSE_NOWRITE); takes `held` (the memfd's own descriptor). false: not watched (the
 * handle is then kept until the session ends, as before). */
static bool watch_last_close(int fd, int held, int64_t handle, bool lazy) {
  pthread_once(&watcher_once, start_watcher);
  if (inotify_fd < 0) return false;
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  struct watch *w = calloc(1, sizeof *w);
  struct stat st;
  if (!w || fstat(held, &st) != 0) {
    free(w);
    return false;
  }
  w->wd = inotify_add_watch(inotify_fd, self, lazy ? IN_CLOSE_NOWRITE : IN_CLOSE_WRITE);
  if (w->wd < 0) {
    free(w);
    return false;
  }
  w->handle = handle;
  w->lazy = lazy;
  w->held = held;
  w->mtime = st.st_mtim;
  w->size = st.st_size;
  pthread_mutex_lock(&watch_lock);
  w->next = watches;
  watches = w;
  atomic_fetch_add(&nwatches, 1);
  pthread_mutex_unlock(&watch_lock);
  return true;
}

/* A write-back done at close or fsync: `st` (taken before it) is now the pod's. */
static void written_back(int64_t handle, const struct stat *st) {
  pthread_mutex_lock(&watch_lock);
  for (struct watch *w = watches; w; w = w->next) {
    if (w->handle == handle) {
      w->mtime = st->st_mtim;
      w->size = st->st_size;
      break;
    }
  }
  pthread_mutex_unlock(&watch_lock);
}

void sv_files_finish(void) { drain_closes(); }

/* Opens the pod path for the call and answers it with the new descriptor. */
static void open_remote(struct sv_call *call, const char *abs, int flags, mode_t mode) {
  int memfd = memfd_create("tsmirror-pod-file", MFD_CLOEXEC);
  if (memfd < 0) {
    sv_fail(call, errno == EMFILE ? ENFILE : errno);
    return;
  }
  int wire_flags = flags & ~(O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_PATH);
  if (flags & O_PATH) wire_flags &= ~O_ACCMODE;
  struct fs_reply *rep = malloc(sizeof *rep);
  if (!rep) {
    close(memfd);
    sv_fail(call, ENOMEM);
    return;
  }
  /* A read-only open may be answered `lazy` (a big file): it is then placed in the lazy
   * window, where its reads are notified (lazy.c). Any other is filled whole now. */
  unsigned lazy_lo, lazy_hi;
  bool may_be_lazy = (flags & O_ACCMODE) == O_RDONLY && !(flags & O_PATH) && sv_lazy_window(&lazy_lo, &lazy_hi);
  int err = reply_err(fsproto_open(abs, wire_flags, (int)(mode & 07777), memfd, !may_be_lazy, rep), rep);
  int fd = -1;
  struct podfile f = {0};
  if (!err && rep->dir) {
    close(memfd);
    memfd = -1;
    fd = list_dir(abs);
    if (fd < 0) err = -fd;
    else if ((fd = reopen_as(fd, O_RDONLY, false)) < 0) err = -fd;
    f.dir = true;
  } else if (!err) {
    bool keep = (rep->writeback || rep->lazy) && rep->handle > 0;
    if (rep->lazy && !keep) err = EIO;
    else if (rep->lazy && !may_be_lazy) err = EIO; /* never asked for: eager */
    else if ((fd = reopen_as(memfd, flags, keep)) < 0) err = -fd;
    if (!keep || err) {
      if (keep) close(memfd);
      memfd = -1;
    }
    f.copy = (flags & O_ACCMODE) != O_RDONLY && !rep->writeback;
    f.handle = rep->writeback ? rep->handle : 0;
  }
  if (err) {
    if (memfd >= 0) close(memfd);
    if (!rep->dir && rep->handle > 0 && (rep->writeback || rep->lazy)) fsproto_release(rep->handle);
    free(rep);
    sv_fail(call, err);
    return;
  }
  struct stat own;
  if (fstat(fd, &own) == 0) {
    f.dev = own.st_dev;
    f.ino = own.st_ino;
    f.st = rep->st;
    f.path = (char *)abs;
    remember(&f);
  }
  bool lazy = rep->lazy;
  int64_t handle = lazy ? rep->handle : f.handle, size = rep->st.size;
  free(rep);
  /* memfd >= 0: a write-mode or lazily filled file, released at its last close */
  bool watched = memfd >= 0 && watch_last_close(fd, memfd, handle, lazy);
  if (memfd >= 0 && !watched) close(memfd);
  bool cloexec = (flags & O_CLOEXEC) != 0;
  if (lazy) {
    int at = sv_lazy_track(fd, handle, size) ? sv_lazy_install(call, fd, cloexec) : -ENOSPC;
    if (at >= 0) {
      close(fd); /* the program's is now the only one */
      sv_return(call, at);
      shim_log("seccomp: open %s flags 0x%x -> pod file filled lazily, fd %d", abs, flags, at);
      return;
    }
    /* No number free in the window (or the process lowered its limit below it): an
     * ordinary descriptor, whose reads are not seen, so the whole file now. */
    int fill_err = at == -ENOENT ? ENOENT : sv_lazy_fill_all(fd, handle, size);
    if (fill_err) {
      close(fd);
      if (watched) drain_closes();
      else fsproto_release(handle);
      sv_fail(call, fill_err);
      return;
    }
  }
  int got = sv_addfd_send(call, fd, cloexec);
  close(fd); /* a watched file's last close is now the program's */
  if (got < 0) {
    /* Not installed (EMFILE, or the program is gone): the file is not the program's. */
    if (watched) drain_closes(); /* the close above was the last: released there */
    else if (handle > 0) fsproto_release(handle);
    sv_fail(call, -got);
    return;
  }
  shim_log("seccomp: open %s flags 0x%x -> pod %s, fd %d", abs, flags, f.dir ? "dir" : "file", got);
}

static void open_common(struct sv_call *call, int di, int pi, int flags, mode_t mode) {
  char abs[4096];
  if (path_arg_route(call, di, pi, abs, sizeof abs) != FS_REMOTE) return;
  if ((flags & O_TMPFILE) == O_TMPFILE) { /* an unnamed file in a pod directory: a private one here */
    sv_fail(call, EOPNOTSUPP);
    return;
  }
  open_remote(call, abs, flags, mode);
}

/* openat(dirfd, path, flags, mode) */
void sv_openat(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  open_common(call, 0, 1, (int)a[2], (mode_t)a[3]);
}

/* openat2(dirfd, path, how, size): RESOLVE_* flags restrict the local resolution; a pod
 * path is resolved by the agent, always confined to the pod's root. */
void sv_openat2(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  struct open_how how;
  if (a[3] < sizeof how || a[2] == 0 || sv_read(call, a[2], &how, sizeof how) < 0) {
    sv_continue(call); /* the kernel answers E2BIG/EINVAL/EFAULT itself */
    return;
  }
  if (how.flags > 0xffffffffULL) {
    sv_continue(call);
    return;
  }
  open_common(call, 0, 1, (int)how.flags, (mode_t)how.mode);
}

#if defined(__x86_64__)
void sv_open(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  open_common(call, -1, 0, (int)a[1], (mode_t)a[2]);
}

void sv_creat(struct sv_call *call) {
  open_common(call, -1, 0, O_CREAT | O_WRONLY | O_TRUNC, (mode_t)call->req->data.args[1]);
}
#endif

/* ---- directories ---- */

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

/* getdents64(fd, dirp, count) on a pod directory's descriptor: entries from the listing
 * at the descriptor's file position, which then moves past them. */
void sv_getdents64(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  int fd = arg_fd(call, 0);
  struct podfile f;
  if (!recognise(call, fd, &f, NULL, 0, NULL) || !f.dir) {
    sv_continue(call);
    return;
  }
  size_t count = (size_t)(uint32_t)a[2];
  if (count == 0) { /* the kernel's answer to a buffer too small for any entry */
    sv_fail(call, EINVAL);
    return;
  }
  if (count > SV_DENTS_MAX) count = SV_DENTS_MAX;
  int dup = sv_getfd(call, fd);
  if (dup < 0) {
    sv_continue(call);
    return;
  }
  char *raw = malloc(count), *out = malloc(count);
  off_t pos = lseek(dup, 0, SEEK_CUR);
  ssize_t n = raw && out && pos >= 0 ? pread(dup, raw, count, pos) : -1;
  if (n < 0) {
    free(raw);
    free(out);
    close(dup);
    sv_fail(call, n < 0 && !raw ? ENOMEM : EIO);
    return;
  }
  size_t at = 0, used = 0;
  while (at + 3 <= (size_t)n) {
    size_t len = (unsigned char)raw[at + 1] | (size_t)(unsigned char)raw[at + 2] << 8;
    if (at + 3 + len > (size_t)n) break; /* cut: next time */
    size_t reclen = (offsetof(struct linux_dirent64, d_name) + len + 1 + 7) & ~(size_t)7;
    if (used + reclen > count) break;
    struct linux_dirent64 *d = (struct linux_dirent64 *)(out + used);
    memset(d, 0, reclen);
    /* Some programs (Go's os.ReadDir) skip entries whose inode is 0. */
    d->d_ino = (uint64_t)pos + at + 1;
    d->d_off = (int64_t)(pos + (off_t)(at + 3 + len));
    d->d_reclen = (unsigned short)reclen;
    d->d_type = (unsigned char)raw[at];
    memcpy(d->d_name, raw + at + 3, len);
    used += reclen;
    at += 3 + len;
  }
  free(raw);
  if (used == 0 && at + 3 <= (size_t)n) { /* not even one entry fits */
    free(out);
    close(dup);
    sv_fail(call, EINVAL);
    return;
  }
  if (!sv_valid(call)) {
    free(out);
    close(dup);
    sv_continue(call);
    return;
  }
  if (used > 0 && sv_write(call, a[1], out, used) < 0) {
    free(out);
    close(dup);
    sv_fail(call, EFAULT);
    return;
  }
  free(out);
  lseek(dup, pos + (off_t)at, SEEK_SET);
  close(dup);
  sv_return(call, (int64_t)used);
}

/* ---- questions that open nothing ---- */

static void access_common(struct sv_call *call, int di, int pi, int mode) {
  char abs[4096];
  if (path_arg_route(call, di, pi, abs, sizeof abs) != FS_REMOTE) return;
  struct fs_reply rep;
  int err = reply_err(fsproto_access(abs, mode, &rep), &rep);
  /* Read mode: writes go to a private copy, so W_OK holds wherever the file exists. */
  if (err) sv_fail(call, err);
  else sv_return(call, 0);
}

void sv_faccessat(struct sv_call *call) { access_common(call, 0, 1, (int)call->req->data.args[2]); }
void sv_faccessat2(struct sv_call *call) { access_common(call, 0, 1, (int)call->req->data.args[2]); }

static void readlink_common(struct sv_call *call, int di, int pi, uint64_t buf, int64_t size) {
  char abs[4096];
  if (size <= 0) { /* EINVAL from the kernel, whatever the path */
    sv_continue(call);
    return;
  }
  if (path_arg_route(call, di, pi, abs, sizeof abs) != FS_REMOTE) return;
  struct fs_reply *rep = malloc(sizeof *rep);
  int err = rep ? reply_err(fsproto_readlink(abs, rep), rep) : ENOMEM;
  if (err) {
    free(rep);
    sv_fail(call, err);
    return;
  }
  size_t n = strlen(rep->target);
  if (n > (size_t)size) n = (size_t)size;
  int rc = sv_write(call, buf, rep->target, n);
  free(rep);
  if (rc < 0) sv_fail(call, EFAULT);
  else sv_return(call, (int64_t)n);
}

void sv_readlinkat(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  readlink_common(call, 0, 1, a[2], (int64_t)(int32_t)a[3]);
}

#if defined(__x86_64__)
void sv_access(struct sv_call *call) { access_common(call, -1, 0, (int)call->req->data.args[1]); }

void sv_readlink(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  readlink_common(call, -1, 0, a[1], (int64_t)(int32_t)a[2]);
}
#endif

/* ---- changes (write mode; the proxy answers EROFS in read mode) ---- */

static void change_common(struct sv_call *call, int di, int pi, const char *what, int64_t mode) {
  char abs[4096];
  if (path_arg_route(call, di, pi, abs, sizeof abs) != FS_REMOTE) return;
  struct fs_reply rep;
  int err = reply_err(fsproto_change(what, abs, mode, NULL, &rep), &rep);
  if (err) sv_fail(call, err);
  else sv_return(call, 0);
}

void sv_mkdirat(struct sv_call *call) {
  change_common(call, 0, 1, WIRE_CHANGE_MKDIR, (int64_t)(call->req->data.args[2] & 07777));
}

void sv_unlinkat(struct sv_call *call) {
  int flags = (int)call->req->data.args[2];
  change_common(call, 0, 1, (flags & AT_REMOVEDIR) ? WIRE_CHANGE_RMDIR : WIRE_CHANGE_UNLINK, 0);
}

/* rename between (di1, p1) and (di2, p2): both in the pod, or EXDEV across the boundary. */
static void rename_common(struct sv_call *call, int di1, int p1, int di2, int p2, unsigned flags) {
  char from[4096], to[4096], abs_from[4096], abs_to[4096];
  if (!arg_path(call, p1, from, sizeof from) || !arg_path(call, p2, to, sizeof to)) return;
  enum fs_route r1 = route(call, di1 < 0 ? AT_FDCWD : arg_fd(call, di1), from, abs_from, sizeof abs_from);
  enum fs_route r2 = route(call, di2 < 0 ? AT_FDCWD : arg_fd(call, di2), to, abs_to, sizeof abs_to);
  if (r1 == FS_LOCAL && r2 == FS_LOCAL) {
    sv_continue(call);
    return;
  }
  if (!sv_valid(call)) {
    sv_continue(call);
    return;
  }
  if (r1 == FS_NOT_FOUND || r2 == FS_NOT_FOUND) {
    sv_fail(call, ENOENT);
    return;
  }
  if (r1 != r2) { /* one local, one in the pod: the program copies instead (mv does) */
    sv_fail(call, EXDEV);
    return;
  }
  if (flags != 0) { /* RENAME_NOREPLACE/EXCHANGE/WHITEOUT: the agent renames plainly */
    sv_fail(call, EINVAL);
    return;
  }
  drain_closes();
  struct fs_reply rep;
  int err = reply_err(fsproto_change(WIRE_CHANGE_RENAME, abs_from, 0, abs_to, &rep), &rep);
  if (err) sv_fail(call, err);
  else sv_return(call, 0);
}

void sv_renameat2(struct sv_call *call) { rename_common(call, 0, 1, 2, 3, (unsigned)call->req->data.args[4]); }

void sv_truncate(struct sv_call *call) {
  char abs[4096];
  int64_t size = (int64_t)call->req->data.args[1];
  if (size < 0) {
    sv_continue(call);
    return;
  }
  if (path_arg_route(call, -1, 0, abs, sizeof abs) != FS_REMOTE) return;
  struct fs_reply rep;
  int err = reply_err(fsproto_change(SHIM_CHANGE_TRUNCATE, abs, size, NULL, &rep), &rep);
  if (err) sv_fail(call, err);
  else sv_return(call, 0);
}

/* ftruncate changes the program's memfd, its copy of the pod file: nothing to do here
 * (in write mode the new size goes to the pod with the content, on close or fsync). */
void sv_ftruncate(struct sv_call *call) { sv_continue(call); }

#if defined(__x86_64__)
void sv_mkdir(struct sv_call *call) {
  change_common(call, -1, 0, WIRE_CHANGE_MKDIR, (int64_t)(call->req->data.args[1] & 07777));
}
void sv_unlink(struct sv_call *call) { change_common(call, -1, 0, WIRE_CHANGE_UNLINK, 0); }
void sv_rmdir(struct sv_call *call) { change_common(call, -1, 0, WIRE_CHANGE_RMDIR, 0); }
void sv_rename(struct sv_call *call) { rename_common(call, -1, 0, -1, 1, 0); }
void sv_renameat(struct sv_call *call) { rename_common(call, 0, 1, 2, 3, 0); }
#endif

/* ---- write mode: the content goes back to the pod on close and fsync ---- */

/* Writes back descriptor `fd` of the calling process if it is a write-mode pod file
 * (the whole content and size, as the shim does on close). 0 or an errno. */
static int writeback_fd(struct sv_call *call, int fd) {
  struct podfile f;
  struct stat own;
  if (!recognise(call, fd, &f, NULL, 0, &own) || f.handle <= 0) return 0;
  struct fs_reply rep;
  int err = reply_err(fsproto_writeback(f.handle, &rep), &rep);
  if (err) shim_log("seccomp: write-back of fd %d failed: errno %d", fd, err);
  else written_back(f.handle, &own);
  return err;
}

/* Every write-mode pod file among the calling process's descriptors in [first, last]. */
static void writeback_range(struct sv_call *call, unsigned first, unsigned last) {
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%u/fd", call->req->pid);
  DIR *d = opendir(dir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));) {
    char *end;
    unsigned long fd = strtoul(e->d_name, &end, 10);
    if (*end || e->d_name[0] == '.' || fd < first || fd > last) continue;
    writeback_fd(call, (int)fd);
  }
  closedir(d);
}

/* close(fd), fsync(fd), fdatasync(fd): a write-mode pod file is written back before the
 * call runs; a failed write-back fails fsync (close closes anyway, as on NFS). */
void sv_writeback_fd(struct sv_call *call) {
  if (atomic_load(&ever_kept) != 0 && sv_valid(call)) {
    int err = writeback_fd(call, arg_fd(call, 0));
    if (err && call->req->data.nr != __NR_close) {
      sv_fail(call, err);
      return;
    }
  }
  sv_continue(call);
}

/* dup2(old, new), dup3(old, new, flags): `new` is closed first, without a close call. */
void sv_writeback_dup(struct sv_call *call) {
  if (atomic_load(&ever_kept) != 0 && arg_fd(call, 0) != arg_fd(call, 1) && sv_valid(call))
    writeback_fd(call, arg_fd(call, 1));
  sv_continue(call);
}

/* close_range(first, last, flags) */
void sv_writeback_range(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  if (atomic_load(&ever_kept) != 0 && !((unsigned)a[2] & CLOSE_RANGE_CLOEXEC) && sv_valid(call))
    writeback_range(call, (unsigned)a[0], (unsigned)a[1]);
  sv_continue(call);
}

/* exit_group: the process's descriptors close with it (a program that writes and exits). */
void sv_writeback_exit(struct sv_call *call) {
  if (atomic_load(&ever_kept) != 0 && sv_valid(call)) writeback_range(call, 0, ~0u);
  sv_continue(call);
}

/* close, fsync, fdatasync, dup2, dup3, close_range and exit_group are notified only in
 * write mode (sv.h): every program closes descriptors all the time, and only a write-mode
 * pod file has anything to do then. The
 * mode comes from fs.config, asked once before the filter is made (sv_files_prepare). */
static bool notify_writes;

void sv_files_prepare(void) {
  SHIM_ENTER();
  notify_writes = fs_write_mode();
  SHIM_LEAVE();
}

bool sv_files_notify_writes(void) { return notify_writes; }
