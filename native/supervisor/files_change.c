/* Pod files under seccomp (files.c): changes to pod paths (mkdir, unlink, rmdir, rename,
 * truncate; write mode: the proxy answers EROFS in read mode). */
#include "files.h"

#include <fcntl.h>

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
  enum fs_route r1 = path_route(call, di1 < 0 ? AT_FDCWD : arg_fd(call, di1), from, abs_from, sizeof abs_from);
  enum fs_route r2 = path_route(call, di2 < 0 ? AT_FDCWD : arg_fd(call, di2), to, abs_to, sizeof abs_to);
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
