/*
 * What the supervisor's pod-file handlers share (files.c): what is kept per memfd handed
 * out, recognising the program's descriptors by it, routing a path by the rules, reading
 * path arguments; and from files_writeback.c, the last-close watch of write-mode and
 * lazily filled files.
 */
#ifndef TSMIRROR_SV_FILES_H
#define TSMIRROR_SV_FILES_H

#include "sv.h"

#include <sys/stat.h>

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

/* Keeps what is known of a memfd handed out (proto->path is copied). */
void podfile_remember(const struct podfile *proto);
/* The program's descriptor `fd` (of the calling thread) is one of our memfds: what is
 * kept about it (its pod path into path[cap]), and the memfd's own stat (current size). */
bool podfile_recognise(struct sv_call *call, int fd, struct podfile *out, char *path, size_t cap,
                       struct stat *own);
/* false until a pod file was handed out: fd calls are then answered at once. */
bool podfiles_handed_out(void);

/* Where the program's (dirfd, path) goes; abs receives the pod path when remote. */
enum fs_route path_route(struct sv_call *call, int dirfd, const char *path, char *abs, size_t cap);

static inline int arg_fd(struct sv_call *call, int i) { return (int)(uint32_t)call->req->data.args[i]; }
/* Reads the path argument i. false: the call was answered or must run as it is (a bad
 * pointer or an overlong path: the kernel gives the program its own EFAULT/ENAMETOOLONG). */
bool arg_path(struct sv_call *call, int i, char *buf, size_t cap);
/* The route of the path argument `pi` relative to the dirfd argument `di` (-1: AT_FDCWD).
 * FS_LOCAL has been answered (CONTINUE); FS_NOT_FOUND has been answered (ENOENT);
 * FS_REMOTE leaves the call to the caller, checked still valid. */
enum fs_route path_arg_route(struct sv_call *call, int di, int pi, char *abs, size_t cap);

/* A request the channel could not carry: EIO, as the shim answers. */
static inline int reply_err(int rc, const struct fs_reply *rep) { return rc < 0 ? EIO : rep->err; }

/* files_writeback.c: write mode and lazily filled files. */
/* Before a pod request: files the program has closed are in the pod first. */
void drain_closes(void);
/* Watches the program's open file `fd` (the supervisor's, before ADDFD) of a write-mode
 * pod file, or of a lazily filled one (`lazy`: read-only, so its last close is
 * IN_CLOSE_NOWRITE); takes `held` (the memfd's own descriptor). false: not watched (the
 * handle is then kept until the session ends, as before). */
bool watch_last_close(int fd, int held, int64_t handle, bool lazy);

#endif
