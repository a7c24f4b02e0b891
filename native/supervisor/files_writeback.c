/* Pod files under seccomp (files.c): write mode's write-backs (before close, fsync, dup2,
 * close_range, exit_group) and the last-close watch of write-mode and lazily filled files. */
#include "files.h"

#include <dirent.h>
#include <linux/close_range.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>

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

void drain_closes(void) {
  if (atomic_load(&nwatches) == 0) return;
  if (pthread_mutex_trylock(&watch_lock) != 0) {
    sv_stop_receiving(); /* the watcher thread is writing back: that may take a while */
    pthread_mutex_lock(&watch_lock);
  }
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
bool watch_last_close(int fd, int held, int64_t handle, bool lazy) {
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

/* ---- write mode: the content goes back to the pod on close and fsync ---- */

/* Writes back descriptor `fd` of the calling process if it is a write-mode pod file
 * (the whole content and size, as the shim does on close). 0 or an errno. */
static int writeback_fd(struct sv_call *call, int fd) {
  struct podfile f;
  struct stat own;
  if (!podfile_recognise(call, fd, &f, NULL, 0, &own) || f.handle <= 0) return 0;
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
  if (podfiles_handed_out() && sv_valid(call)) {
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
  if (podfiles_handed_out() && arg_fd(call, 0) != arg_fd(call, 1) && sv_valid(call))
    writeback_fd(call, arg_fd(call, 1));
  sv_continue(call);
}

/* close_range(first, last, flags) */
void sv_writeback_range(struct sv_call *call) {
  const __u64 *a = call->req->data.args;
  if (podfiles_handed_out() && !((unsigned)a[2] & CLOSE_RANGE_CLOEXEC) && sv_valid(call))
    writeback_range(call, (unsigned)a[0], (unsigned)a[1]);
  sv_continue(call);
}

/* exit_group: the process's descriptors close with it (a program that writes and exits). */
void sv_writeback_exit(struct sv_call *call) {
  if (podfiles_handed_out() && sv_valid(call)) writeback_range(call, 0, ~0u);
  sv_continue(call);
}
