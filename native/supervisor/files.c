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
 *
 * Here: what is kept per memfd, recognising descriptors, routing paths, reading path
 * arguments, the rules. The handlers, by concern: files_open.c (open, a pod directory's
 * listing), files_stat.c (stat family, access, readlink), files_dirs.c (getdents64),
 * files_change.c (mkdir, unlink, rename, truncate), files_writeback.c (write mode's
 * write-backs and the last-close watch).
 */
#include "files.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What is kept about memfds handed out (bounded; the oldest is forgotten first). */
#define SV_FILES_MAX 65536
#define SV_FILES_BUCKETS 4096

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

void podfile_remember(const struct podfile *proto) {
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

bool podfiles_handed_out(void) { return atomic_load(&ever_kept) != 0; }

/* The program's descriptor `fd` (of the calling thread) is one of our memfds: what is
 * kept about it, and the memfd's own stat (current size). */
bool podfile_recognise(struct sv_call *call, int fd, struct podfile *out, char *path, size_t cap,
                       struct stat *own) {
  if (fd < 0 || !podfiles_handed_out()) return false;
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
  if (!podfile_recognise(current, fd, &f, buf, sizeof buf, NULL)) return false;
  if (path && cap) snprintf(path, cap, "%s", buf);
  if (st) *st = f.st;
  if (is_dir) *is_dir = f.dir;
  if (writable_copy) *writable_copy = f.copy;
  return true;
}

/* Where the program's (dirfd, path) goes; abs receives the pod path when remote. */
enum fs_route path_route(struct sv_call *call, int dirfd, const char *path, char *abs, size_t cap) {
  current = call;
  SHIM_ENTER();
  enum fs_route r = fs_route_at(dirfd, path, abs, cap);
  SHIM_LEAVE();
  current = NULL;
  return r;
}


/* ---- reading the call's arguments ---- */

/* Reads the path argument i. false: the call was answered or must run as it is (a bad
 * pointer or an overlong path: the kernel gives the program its own EFAULT/ENAMETOOLONG). */
bool arg_path(struct sv_call *call, int i, char *buf, size_t cap) {
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
enum fs_route path_arg_route(struct sv_call *call, int di, int pi, char *abs, size_t cap) {
  char path[4096];
  if (!arg_path(call, pi, path, sizeof path)) return FS_LOCAL;
  int dirfd = di < 0 ? AT_FDCWD : arg_fd(call, di);
  enum fs_route r = path_route(call, dirfd, path, abs, cap);
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

/* close, fsync, fdatasync, dup2, dup3, close_range and exit_group are notified only in
 * write mode (sv.h): every program closes descriptors all the time, and only a write-mode
 * pod file has anything to do then (files_writeback.c). The
 * mode comes from fs.config, asked once before the filter is made (sv_files_prepare). */
static bool notify_writes;

void sv_files_prepare(void) {
  SHIM_ENTER();
  notify_writes = fs_write_mode();
  SHIM_LEAVE();
}

bool sv_files_notify_writes(void) { return notify_writes; }
