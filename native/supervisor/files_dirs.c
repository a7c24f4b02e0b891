/* Pod files under seccomp (files.c): listing a pod directory's descriptor (getdents64). */
#include "files.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The largest getdents64 answer built at once (the program may ask for more). */
#define SV_DENTS_MAX (64 * 1024)

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
  if (!podfile_recognise(call, fd, &f, NULL, 0, NULL) || !f.dir) {
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
