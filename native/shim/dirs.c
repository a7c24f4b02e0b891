/*
 * Listing pod directories: opendir, fdopendir, readdir(64)(_r), closedir/dirfd/rewinddir/telldir/
 * seekdir and scandir (node's fs.readdir calls scandir64, which glibc implements with
 * internal calls no other hook sees). A pod directory's DIR is the shim's own object,
 * holding the whole listing (the proxy writes it into a memfd in one go); every DIR
 * function checks its registry first, so glibc never sees one.
 */
#include "shim.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

_Static_assert(sizeof(struct dirent) == sizeof(struct dirent64), "struct dirent and dirent64 differ on this ABI");

#define RDIR_MAGIC 0x7473726469724d31ULL

struct rdir {
  uint64_t magic;
  char *buf;          /* entries: type (1 byte), name length (2 bytes LE), name */
  size_t len, pos;
  long index;
  int fd;             /* -1 until fdopendir/dirfd gives it one */
  char *path;
  struct dirent64 ent;
  struct rdir *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rdir *registry;
static int nopen;

static struct rdir *ours(void *d) {
  if (!d || !__atomic_load_n(&nopen, __ATOMIC_ACQUIRE)) return NULL;
  struct rdir *found = NULL;
  pthread_mutex_lock(&registry_lock);
  for (struct rdir *r = registry; r; r = r->next) {
    if ((void *)r == d) {
      found = r;
      break;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  return found;
}

static void append(char **buf, size_t *len, unsigned type, const char *name, size_t n) {
  (*buf)[(*len)++] = (char)type;
  (*buf)[(*len)++] = (char)(n & 0xff);
  (*buf)[(*len)++] = (char)(n >> 8);
  memcpy(*buf + *len, name, n);
  *len += n;
}

/* Lists a pod directory (inside SHIM_ENTER). NULL with *err on failure. */
static struct rdir *load(const char *abs, int *err) {
  int memfd = memfd_create("tsmirror-pod-dir", MFD_CLOEXEC);
  if (memfd < 0) {
    *err = errno;
    return NULL;
  }
  struct fs_reply rep;
  if (fsproto_readdir(abs, memfd, &rep) < 0) {
    REAL(close)(memfd);
    *err = EIO;
    return NULL;
  }
  if (rep.err) {
    REAL(close)(memfd);
    *err = rep.err;
    return NULL;
  }
  off_t size = lseek(memfd, 0, SEEK_END);
  struct rdir *rd = calloc(1, sizeof *rd);
  char *buf = size >= 0 ? malloc((size_t)size + 16) : NULL;
  if (!rd || !buf) {
    free(rd);
    free(buf);
    REAL(close)(memfd);
    *err = ENOMEM;
    return NULL;
  }
  size_t len = 0;
  append(&buf, &len, DT_DIR, ".", 1);
  append(&buf, &len, DT_DIR, "..", 2);
  size_t got = 0;
  while (got < (size_t)size) {
    ssize_t n = REAL(pread)(memfd, buf + len + got, (size_t)size - got, (off_t)got);
    if (n <= 0) break;
    got += (size_t)n;
  }
  REAL(close)(memfd);
  rd->magic = RDIR_MAGIC;
  rd->buf = buf;
  rd->len = len + got;
  rd->fd = -1;
  rd->path = strdup(abs);
  pthread_mutex_lock(&registry_lock);
  rd->next = registry;
  registry = rd;
  __atomic_add_fetch(&nopen, 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&registry_lock);
  shim_log("opendir %s -> pod, %lld entries", abs, (long long)rep.count);
  return rd;
}

static void unload(struct rdir *rd) {
  pthread_mutex_lock(&registry_lock);
  for (struct rdir **p = &registry; *p; p = &(*p)->next) {
    if (*p == rd) {
      *p = rd->next;
      __atomic_sub_fetch(&nopen, 1, __ATOMIC_RELEASE);
      break;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  rd->magic = 0;
  free(rd->buf);
  free(rd->path);
  free(rd);
}

/* The next entry, or NULL at the end. */
static struct dirent64 *next_entry(struct rdir *rd) {
  if (rd->pos + 3 > rd->len) return NULL;
  unsigned char *p = (unsigned char *)rd->buf + rd->pos;
  size_t n = (size_t)p[1] | (size_t)p[2] << 8;
  if (rd->pos + 3 + n > rd->len) return NULL;
  struct dirent64 *e = &rd->ent;
  size_t copy = n < sizeof e->d_name - 1 ? n : sizeof e->d_name - 1;
  memcpy(e->d_name, p + 3, copy);
  e->d_name[copy] = 0;
  e->d_type = p[0];
  e->d_ino = (ino64_t)rd->index + 2; /* some programs skip entries whose inode is 0 */
  e->d_off = rd->index + 1;
  e->d_reclen = sizeof *e;
  rd->pos += 3 + n;
  rd->index++;
  return e;
}

/* REMOTE_DONE: *dir lists the pod directory; REMOTE_FAILED: *dir is NULL, errno set. */
static enum remote_result remote_opendir(int dirfd, const char *path, struct rdir **dir) {
  *dir = NULL;
  if (!shim_intercepting() || !path) return REMOTE_PASS;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  struct rdir *rd = NULL;
  int err = 0;
  enum remote_result result = REMOTE_PASS;
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  if (route == FS_NOT_FOUND) {
    err = ENOENT;
  } else if (route == FS_REMOTE) {
    rd = load(abs, &err);
  }
  if (route != FS_LOCAL) result = rd ? REMOTE_DONE : REMOTE_FAILED;
  SHIM_LEAVE();
  errno = result == REMOTE_FAILED ? err : saved;
  *dir = rd;
  return result;
}

SHIM_EXPORT DIR *opendir(const char *path) {
  struct rdir *rd;
  if (remote_opendir(AT_FDCWD, path, &rd) != REMOTE_PASS) return (DIR *)rd;
  return REAL(opendir)(path);
}

SHIM_EXPORT DIR *fdopendir(int fd) {
  if (!shim_depth && rfile_any()) {
    char path[4096];
    bool is_dir = false;
    if (rfile_info(fd, path, sizeof path, NULL, &is_dir, NULL) && is_dir) {
      int saved = errno, err = 0;
      SHIM_ENTER();
      struct rdir *rd = load(path, &err);
      SHIM_LEAVE();
      if (!rd) {
        errno = err;
        return NULL;
      }
      rd->fd = fd; /* closedir closes it, as glibc's does */
      errno = saved;
      return (DIR *)rd;
    }
  }
  return REAL(fdopendir)(fd);
}

SHIM_EXPORT struct dirent *readdir(DIR *d) {
  struct rdir *rd = ours(d);
  if (!rd) return REAL(readdir)(d);
  return (struct dirent *)next_entry(rd);
}

SHIM_EXPORT struct dirent64 *readdir64(DIR *d) {
  struct rdir *rd = ours(d);
  if (!rd) return REAL(readdir64)(d);
  return next_entry(rd);
}

SHIM_EXPORT int readdir_r(DIR *__restrict d, struct dirent *__restrict entry,
                          struct dirent **__restrict result) {
  struct rdir *rd = ours(d);
  if (!rd) return REAL(readdir_r)(d, entry, result);
  struct dirent64 *e = next_entry(rd);
  if (e) memcpy(entry, e, sizeof *entry);
  *result = e ? entry : NULL;
  return 0;
}

SHIM_EXPORT int readdir64_r(DIR *__restrict d, struct dirent64 *__restrict entry,
                            struct dirent64 **__restrict result) {
  struct rdir *rd = ours(d);
  if (!rd) return REAL(readdir64_r)(d, entry, result);
  struct dirent64 *e = next_entry(rd);
  if (e) memcpy(entry, e, sizeof *entry);
  *result = e ? entry : NULL;
  return 0;
}

SHIM_EXPORT int closedir(DIR *d) {
  struct rdir *rd = ours(d);
  if (!rd) return REAL(closedir)(d);
  int fd = rd->fd;
  unload(rd);
  if (fd >= 0) close(fd);
  return 0;
}

SHIM_EXPORT int dirfd(DIR *d) {
  struct rdir *rd = ours(d);
  if (!rd) return REAL(dirfd)(d);
  if (rd->fd < 0) {
    int saved = errno;
    SHIM_ENTER();
    int fd = REAL(open)(fs_empty_dir(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      struct fs_reply rep;
      if (fsproto_stat(rd->path, true, &rep) < 0 || rep.err) {
        memset(&rep, 0, sizeof rep);
        rep.st.mode = S_IFDIR | 0755;
        rep.st.nlink = 2;
      }
      rep.err = 0;
      rep.handle = 0;
      rfile_register(fd, rd->path, &rep, true);
      rd->fd = fd;
    }
    SHIM_LEAVE();
    errno = saved;
  }
  return rd->fd;
}

SHIM_EXPORT void rewinddir(DIR *d) {
  struct rdir *rd = ours(d);
  if (!rd) {
    REAL(rewinddir)(d);
    return;
  }
  rd->pos = 0;
  rd->index = 0;
}

SHIM_EXPORT long telldir(DIR *d) {
  struct rdir *rd = ours(d);
  return rd ? rd->index : REAL(telldir)(d);
}

SHIM_EXPORT void seekdir(DIR *d, long loc) {
  struct rdir *rd = ours(d);
  if (!rd) {
    REAL(seekdir)(d, loc);
    return;
  }
  rd->pos = 0;
  rd->index = 0;
  while (rd->index < loc && next_entry(rd)) {
  }
}

typedef int (*filter64_t)(const struct dirent64 *);
typedef int (*compar64_t)(const struct dirent64 **, const struct dirent64 **);

/* scandir for a pod directory: every entry is its own malloc'd dirent, as callers free them. */
static int remote_scandir(struct rdir *rd, struct dirent64 ***namelist, filter64_t filter,
                          compar64_t compar) {
  size_t cap = 64, n = 0;
  struct dirent64 **list = malloc(cap * sizeof *list);
  struct dirent64 *e;
  int err = 0;
  while (list && (e = next_entry(rd))) {
    if (filter && !filter(e)) continue;
    if (n == cap) {
      struct dirent64 **grown = realloc(list, cap * 2 * sizeof *list);
      if (!grown) {
        err = ENOMEM;
        break;
      }
      list = grown;
      cap *= 2;
    }
    struct dirent64 *copy = malloc(sizeof *copy);
    if (!copy) {
      err = ENOMEM;
      break;
    }
    memcpy(copy, e, sizeof *copy);
    list[n++] = copy;
  }
  unload(rd);
  if (!list || err) {
    for (size_t i = 0; list && i < n; i++) free(list[i]);
    free(list);
    errno = err ? err : ENOMEM;
    return -1;
  }
  if (compar) qsort(list, n, sizeof *list, (int (*)(const void *, const void *))compar);
  *namelist = list;
  return (int)n;
}

SHIM_EXPORT int scandir(const char *__restrict path, struct dirent ***__restrict namelist,
                        int (*filter)(const struct dirent *),
                        int (*compar)(const struct dirent **, const struct dirent **)) {
  struct rdir *rd;
  switch (remote_opendir(AT_FDCWD, path, &rd)) {
    case REMOTE_FAILED: return -1;
    case REMOTE_PASS: return REAL(scandir)(path, namelist, filter, compar);
    case REMOTE_DONE: break;
  }
  return remote_scandir(rd, (struct dirent64 ***)namelist, (filter64_t)filter, (compar64_t)compar);
}

SHIM_EXPORT int scandir64(const char *__restrict path, struct dirent64 ***__restrict namelist,
                          int (*filter)(const struct dirent64 *),
                          int (*compar)(const struct dirent64 **, const struct dirent64 **)) {
  struct rdir *rd;
  switch (remote_opendir(AT_FDCWD, path, &rd)) {
    case REMOTE_FAILED: return -1;
    case REMOTE_PASS: return REAL(scandir64)(path, namelist, filter, compar);
    case REMOTE_DONE: break;
  }
  return remote_scandir(rd, namelist, filter, compar);
}
