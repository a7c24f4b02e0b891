/*
 * The channel to the session proxy: one unix stream connection per thread, opened
 * lazily, so requests from different threads never wait for each other. Frames are a
 * 4-byte big-endian length and a msgpack body (docs/shim-ipc.md).
 *
 * Every channel is also in a registry so that a forked child can drop all of its
 * parent's connections (only the forking thread survives, the others' TLS is gone) and
 * so that an evicted fd can be renumbered.
 */
#include "shim.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define MAX_FRAME ((uint32_t)WIRE_MAX_FRAME_BYTES)

struct channel {
  int fd;              /* -1 when not connected */
  pid_t pid;           /* the process that opened fd */
  dev_t dev;           /* fd's socket, to notice that fd was closed where no hook sees it */
  ino_t ino;           /* (a raw close_range syscall) and its number reused */
  void *scratch;       /* gethostby* result buffer of this thread */
  size_t scratch_size;
  struct channel *next;
};

static __thread struct channel *my_channel __attribute__((tls_model("initial-exec")));
/* The wait for this thread's next answer may end with a signal (channel_interruptible). */
static __thread bool wait_interruptible __attribute__((tls_model("initial-exec")));
static __thread bool wait_interrupted __attribute__((tls_model("initial-exec")));
static pthread_key_t exit_key;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct channel *registry;

static void unregister_locked(struct channel *ch) {
  for (struct channel **p = &registry; *p; p = &(*p)->next) {
    if (*p == ch) {
      *p = ch->next;
      return;
    }
  }
}

/* Whether ch->fd is still the socket this channel opened. A microsecond of fstat against
 * a round trip of ~100 us; without it, frames would be written into whatever file the
 * program opened at that number. */
static bool intact(const struct channel *ch) {
  struct stat st;
  int saved = errno;
  bool same = REAL(fstat)(ch->fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == ch->dev &&
              st.st_ino == ch->ino;
  errno = saved;
  return same;
}

/* Lets go of ch->fd: closes it if it is still ours, else only forgets it (the number is
 * the program's now; fdtable_is_shim drops its mark unless another shim fd took it). */
static void let_go(struct channel *ch) {
  if (intact(ch)) shim_fd_release(ch->fd);
  else (void)fdtable_is_shim(ch->fd);
  ch->fd = -1;
}

/* pthread key destructor: the thread is exiting. */
static void channel_thread_exit(void *arg) {
  struct channel *ch = arg;
  SHIM_ENTER();
  pthread_mutex_lock(&registry_lock);
  unregister_locked(ch);
  pthread_mutex_unlock(&registry_lock);
  if (ch->fd >= 0 && ch->pid == getpid()) let_go(ch);
  free(ch->scratch);
  free(ch);
  my_channel = NULL;
  SHIM_LEAVE();
}

SHIM_HIDDEN void channel_global_init(void) { pthread_key_create(&exit_key, channel_thread_exit); }

static struct channel *this_thread(void) {
  if (my_channel) return my_channel;
  struct channel *ch = calloc(1, sizeof *ch);
  if (!ch) return NULL;
  ch->fd = -1;
  pthread_mutex_lock(&registry_lock);
  ch->next = registry;
  registry = ch;
  pthread_mutex_unlock(&registry_lock);
  my_channel = ch;
  pthread_setspecific(exit_key, ch);
  return ch;
}

SHIM_HIDDEN void *channel_thread_scratch(size_t size) {
  struct channel *ch = this_thread();
  if (!ch) return NULL;
  if (ch->scratch_size < size) {
    void *p = realloc(ch->scratch, size);
    if (!p) return NULL;
    ch->scratch = p;
    ch->scratch_size = size;
  }
  return ch->scratch;
}

static void drop(struct channel *ch) {
  if (ch->fd >= 0) {
    if (ch->pid == getpid()) let_go(ch);
    ch->fd = -1;
  }
}

static int open_channel(struct channel *ch) {
  int s = REAL(socket)(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, shim_cfg.sock_path, strlen(shim_cfg.sock_path));
  int r;
  do {
    r = REAL(connect)(s, (struct sockaddr *)&sun, sizeof sun);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    shim_log("cannot reach the session proxy at %s: %s", shim_cfg.sock_path, strerror(errno));
    REAL(close)(s);
    return -1;
  }
  s = shim_fd_adopt(s);
  if (s < 0) return -1;
  struct stat st;
  if (REAL(fstat)(s, &st) < 0) {
    shim_fd_release(s);
    return -1;
  }
  ch->fd = s;
  ch->pid = shim_pid();
  ch->dev = st.st_dev;
  ch->ino = st.st_ino;
  return 0;
}

static struct channel *ready_channel(void) {
  struct channel *ch = this_thread();
  if (!ch) return NULL;
  if (ch->fd >= 0 && shim_cfg.fixed_pid) return ch; /* the supervisor's own, intact */
  if (ch->fd >= 0 && ch->pid != getpid()) {
    /* Inherited through a fork that skipped the atfork handlers (clone, _Fork): the
     * connection is the parent's; drop our reference to it. */
    let_go(ch);
  }
  if (ch->fd >= 0 && !intact(ch)) {
    shim_log("the channel's fd %d was closed behind the shim's back; opening a new channel", ch->fd);
    let_go(ch);
  }
  if (ch->fd < 0 && open_channel(ch) < 0) return NULL;
  return ch;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The channel has no receive timeout, so the kernel restarts recv() by itself after a
 * handler installed with SA_RESTART: EINTR here means the program's handler wants its
 * blocking call interrupted. */
static int read_all(int fd, uint8_t *p, size_t n) {
  while (n) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) {
      if (!wait_interruptible) continue;
      wait_interrupted = true;
      return -1;
    }
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int send_frame(int fd, const uint8_t *req, size_t len) {
  uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
  uint8_t stackbuf[4096];
  if (len + 4 <= sizeof stackbuf) {
    memcpy(stackbuf, hdr, 4);
    memcpy(stackbuf + 4, req, len);
    return write_all(fd, stackbuf, len + 4);
  }
  if (write_all(fd, hdr, 4) < 0) return -1;
  return write_all(fd, req, len);
}

SHIM_HIDDEN void (*channel_wait_hook)(int fd);

/* Reads the answer: one receive for a small one (header and body arrive in one write). The
 * proxy answers each request once, in order, so nothing may follow it: more is a protocol
 * error, and the channel is dropped rather than misread. */
static int recv_frame(int fd, uint8_t **resp, size_t *resp_len) {
  uint8_t first[1024];
  if (channel_wait_hook) channel_wait_hook(fd);
  size_t got = 0;
  while (got < 4) {
    ssize_t r = recv(fd, first + got, sizeof first - got, 0);
    if (r < 0 && errno == EINTR) {
      if (!wait_interruptible) continue;
      wait_interrupted = true;
      return -1;
    }
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  uint32_t len = (uint32_t)first[0] << 24 | (uint32_t)first[1] << 16 | (uint32_t)first[2] << 8 | first[3];
  if (len == 0 || len > MAX_FRAME || got > 4 + (size_t)len) {
    shim_log("bad frame (length %u, %zu bytes received) from the session proxy; dropping the channel", len, got);
    return -1;
  }
  uint8_t *body = malloc(len);
  if (!body) return -1;
  memcpy(body, first + 4, got - 4);
  if (read_all(fd, body + (got - 4), len - (got - 4)) < 0) {
    free(body);
    return -1;
  }
  *resp = body;
  *resp_len = len;
  return 0;
}

SHIM_HIDDEN int channel_call(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len) {
  for (int attempt = 0; attempt < 2; attempt++) {
    struct channel *ch = ready_channel();
    if (!ch) return -1;
    if (send_frame(ch->fd, req, len) < 0) {
      /* The proxy may have closed an idle connection: one fresh try. */
      shim_log("channel send failed: %s", strerror(errno));
      drop(ch);
      continue;
    }
    if (recv_frame(ch->fd, resp, resp_len) < 0) {
      /* Interrupted or not, the answer is still owed on this connection: closing it keeps
       * the next request from reading this one's answer (the proxy drops what it owes). */
      shim_log(wait_interrupted ? "channel wait interrupted by a signal; dropping the channel"
                                : "channel receive failed");
      drop(ch);
      return -1;
    }
    return 0;
  }
  return -1;
}

SHIM_HIDDEN void channel_interruptible(bool on) {
  wait_interruptible = on;
  wait_interrupted = false;
}

SHIM_HIDDEN bool channel_interrupted(void) { return wait_interrupted; }

SHIM_HIDDEN int channel_notify(const uint8_t *req, size_t len) {
  struct channel *ch = ready_channel();
  if (!ch) return -1;
  if (send_frame(ch->fd, req, len) < 0) {
    drop(ch);
    return -1;
  }
  return 0;
}

SHIM_HIDDEN bool channel_renumber(int old_fd, int new_fd) {
  bool found = false;
  pthread_mutex_lock(&registry_lock);
  for (struct channel *ch = registry; ch; ch = ch->next) {
    if (ch->fd == old_fd) {
      ch->fd = new_fd;
      found = true;
      break;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  return found;
}

/* Locks are taken in one order (registry, then table) so the child inherits neither
 * half-held nor a torn table. */
SHIM_HIDDEN void channel_atfork_prepare(void) {
  pthread_mutex_lock(&registry_lock);
  fdtable_lock();
}

SHIM_HIDDEN void channel_atfork_parent(void) {
  fdtable_unlock();
  pthread_mutex_unlock(&registry_lock);
}

SHIM_HIDDEN void channel_atfork_child(void) {
  fdtable_unlock();
  /* Every connection belongs to the parent: close our references; threads other than
   * this one do not exist here, so their channel records go too. */
  struct channel *keep = my_channel;
  struct channel *ch = registry;
  registry = NULL;
  while (ch) {
    struct channel *next = ch->next;
    if (ch->fd >= 0) {
      if (intact(ch)) {
        fdtable_mark_shim(ch->fd, false);
        REAL(close)(ch->fd);
      } else {
        (void)fdtable_is_shim(ch->fd);
      }
      ch->fd = -1;
    }
    if (ch == keep) {
      ch->next = NULL;
      registry = ch;
    } else {
      free(ch->scratch);
      free(ch);
    }
    ch = next;
  }
  pthread_mutex_unlock(&registry_lock);
}
