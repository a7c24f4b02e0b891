/* Pod files under seccomp (files.c): what stat, access and readlink ask of a pod path or
 * descriptor, answered from the pod without opening anything. */
#include "files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

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

/* Writes `st` (as a struct stat, or a statx of `mask`) to the program's `buf`, and answers. */
static void answer_stat(struct sv_call *call, const struct stat *st, uint64_t buf, bool want_statx, unsigned mask) {
  int rc;
  if (want_statx) {
    struct statx x;
    statx_fill(st, mask, &x);
    rc = sv_write(call, buf, &x, sizeof x);
  } else {
    rc = sv_write(call, buf, st, sizeof *st);
  }
  if (rc < 0) sv_fail(call, EFAULT);
  else sv_return(call, 0);
}

/* Answers a stat of descriptor `fd` if it is ours; false: not ours (nothing answered). */
static bool answer_fd_stat(struct sv_call *call, int fd, uint64_t buf, bool want_statx, unsigned mask) {
  struct podfile f;
  struct stat own, st;
  if (!podfile_recognise(call, fd, &f, NULL, 0, &own)) return false;
  if (!sv_valid(call)) {
    sv_continue(call);
    return true;
  }
  podfile_stat(&f, &own, &st);
  answer_stat(call, &st, buf, want_statx, mask);
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
  answer_stat(call, &st, buf, want_statx, mask);
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
