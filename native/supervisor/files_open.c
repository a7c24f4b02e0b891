/* Pod files under seccomp (files.c): opens of pod paths, answered with a memfd (a file's
 * content, or a directory's listing) installed in the program. */
#include "files.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

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
static int own_fds = -1; /* /proc/self/fd, kept: a reopen then walks one name, not four */
static pthread_once_t own_fds_once = PTHREAD_ONCE_INIT;
static void open_own_fds(void) { own_fds = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC); }

static int reopen_as(int memfd, int flags, bool keep) {
  int acc = flags & O_ACCMODE;
  if (acc == O_RDWR && !(flags & O_APPEND) && !keep) return memfd;
  pthread_once(&own_fds_once, open_own_fds);
  char self[64];
  snprintf(self, sizeof self, own_fds >= 0 ? "%d" : "/proc/self/fd/%d", memfd);
  int fd = openat(own_fds >= 0 ? own_fds : AT_FDCWD, self, (acc == O_ACCMODE ? O_RDWR : acc) | (flags & O_APPEND) | O_CLOEXEC);
  int err = errno;
  if (!keep) close(memfd);
  return fd < 0 ? -err : fd;
}

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
    podfile_remember(&f);
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
  if (f.dir) {
    /* In the window, where its reads are seen: EISDIR, not the listing's bytes. When no
     * number is free it goes where the kernel puts it (then read() gives those bytes). */
    int at = sv_lazy_install_dir(call, fd, cloexec);
    if (at >= 0) {
      close(fd);
      sv_return(call, at);
      shim_log("seccomp: open %s flags 0x%x -> pod dir, fd %d", abs, flags, at);
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
