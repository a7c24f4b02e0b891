/*
 * Internal interface of libtsmirror.so. Every .c file of the shim includes this
 * header first, so the feature macros below apply before any system header.
 */
#ifndef TSMIRROR_SHIM_H
#define TSMIRROR_SHIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
/* node-gyp defines _FILE_OFFSET_BITS=64, which makes glibc's headers rename fcntl to
 * fcntl64: our `fcntl` hook would then be emitted under the wrong symbol name. */
#undef _FILE_OFFSET_BITS

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <pthread.h>
#include <resolv.h>
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "hooks.h"
#include "wire.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
#define SHIM_HIDDEN __attribute__((visibility("hidden")))

/* Exported prototypes, checked against libc's declarations. */
#define SHIM_DECLARE_HOOK(ret, name, params) SHIM_EXPORT ret name params;
SHIM_HOOKS(SHIM_DECLARE_HOOK)
#undef SHIM_DECLARE_HOOK

/* Pointers to the next definition (normally glibc's). */
#define SHIM_DECLARE_REAL(ret, name, params) extern SHIM_HIDDEN ret(*real_##name) params;
SHIM_HOOKS(SHIM_DECLARE_REAL)
#undef SHIM_DECLARE_REAL

/* The next definition of a hooked function. Normally resolved once by init; a call
 * that arrives while init itself is running resolves just that one lazily. */
SHIM_HIDDEN void shim_resolve_lazy(void **slot, const char *name);
#define REAL(name) \
  (real_##name ? real_##name : (shim_resolve_lazy((void **)&real_##name, #name), real_##name))

/* Unwrap glibc's transparent-union sockaddr arguments. */
#define SHIM_SA(arg) ((arg).__sockaddr__)
#define SHIM_CSA(arg) ((arg).__sockaddr__)

/* ---- init.c: configuration, bypass guard ---- */

struct shim_config {
  bool active;            /* TSMIRROR_SOCK is set: intercept */
  char sock_path[108];    /* TSMIRROR_SOCK (fits sun_path) */
  char shim_path[4096];   /* TSMIRROR_SHIM, else our own path from dladdr */
  char log_path[4096];    /* TSMIRROR_SHIM_LOG, "" when unset */
  char supervisor_path[4096]; /* TSMIRROR_SUPERVISOR: static and Go programs exec'd run under it ("": never) */
  char cli_pid[16];       /* TSMIRROR_CLI_PID (with TSMIRROR_SUPERVISOR): whose signals it does not relay */
  int fd_floor;           /* the shim's own fds live at or above this */
  pid_t fixed_pid;        /* the seccomp supervisor once it serves: its pid, which no fork
                           * changes, in a process no program shares descriptors with (the
                           * channel skips its fork and closed-behind-its-back checks); 0 in
                           * the shim */
};

extern SHIM_HIDDEN struct shim_config shim_cfg;
/* Our pid (the supervisor's, cached; the shim asks each time: a raw clone changes it). */
static inline pid_t shim_pid(void) { return shim_cfg.fixed_pid ? shim_cfg.fixed_pid : getpid(); }

/* Depth of "inside the shim" on this thread: hooks called while it is non-zero pass
 * straight through, so the shim's own libc calls never re-enter its logic. */
extern SHIM_HIDDEN __thread int shim_depth __attribute__((tls_model("initial-exec")));

SHIM_HIDDEN void shim_init(void);

/* True when a hook should apply its logic: initialised, active, not re-entered. */
static inline bool shim_intercepting(void) {
  if (shim_depth) return false;
  shim_init();
  return shim_cfg.active;
}

/* For hooks whose logic does not depend on being active (descriptor bookkeeping): make
 * sure init ran, unless this call comes from inside the shim (or from init itself). */
static inline void shim_hook_init(void) {
  if (!shim_depth) shim_init();
}

#define SHIM_ENTER() (shim_depth++)
#define SHIM_LEAVE() (shim_depth--)

/* ---- program.c: what kind of program a file is (also linked into the supervisor) ---- */

struct shim_program {
  enum { SHIM_PROG_OTHER, SHIM_PROG_DYNAMIC, SHIM_PROG_STATIC, SHIM_PROG_SCRIPT } kind;
  bool go;                /* a Go program (build id note or build information) */
  bool setid;             /* setuid/setgid to another user or group */
  bool elf32;             /* a 32-bit ELF program */
  char interpreter[256];  /* SHIM_PROG_SCRIPT: the `#!` interpreter */
};
/* Reads `path` (bounded, hostile-safe); 0, or -errno when it cannot be read (then kind is OTHER). */
SHIM_HIDDEN int shim_program_inspect(const char *path, struct shim_program *out);
/* Whether running `path` needs the seccomp supervisor: a static or Go 64-bit ELF program,
 * or a script whose interpreter is one; false for what cannot be read or parsed, setuid
 * and setgid programs (they would lose their privileges) and 32-bit ones. */
SHIM_HIDDEN bool shim_program_wants_seccomp(const char *path);

/* ---- exec_supervisor.c ---- */
/* syscall(SYS_execve/SYS_execveat, a1…a5) from the program: execs the seccomp supervisor
 * instead when the target is a static or Go program; returns when it did not. */
SHIM_HIDDEN void shim_exec_syscall(long number, long a1, long a2, long a3, long a4, long a5);

/* ---- log.c ---- */
SHIM_HIDDEN void shim_log_open(void);
SHIM_HIDDEN void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
SHIM_HIDDEN int shim_log_fd(void);
SHIM_HIDDEN void shim_log_set_fd(int fd);

/* ---- fdtable.c: per-fd state ---- */

union shim_addr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
};

#define SHIM_UDP_FLOWS 16

struct udp_flow {
  union shim_addr dest;   /* what the program sends to */
  socklen_t dest_len;
  union shim_addr relay;  /* the proxy's relay for that destination (in the socket's family) */
  socklen_t relay_len;
  bool local;             /* the proxy said: send there directly */
};

struct sock_state {
  int type;                 /* SOCK_STREAM or SOCK_DGRAM, 0 = unknown */
  bool has_peer;            /* connect() was redirected */
  union shim_addr peer;     /* what the program asked for (getpeername) */
  socklen_t peer_len;
  union shim_addr relay_peer; /* where the fd is really connected (the proxy) */
  socklen_t relay_peer_len;
  bool has_local;           /* pod-side address (getsockname) */
  union shim_addr local;
  socklen_t local_len;
  unsigned nflows, next_victim;
  struct udp_flow flows[SHIM_UDP_FLOWS];
};

SHIM_HIDDEN void fdtable_clear(int fd);
/* The program closes fd: true if it is the shim's (refuse), else forget its state. */
SHIM_HIDDEN bool fdtable_before_close(int fd);
SHIM_HIDDEN void fdtable_clear_range(unsigned first, unsigned last);
SHIM_HIDDEN void fdtable_copy(int from, int to);
SHIM_HIDDEN void fdtable_set_sock(int fd, const struct sock_state *st);
SHIM_HIDDEN bool fdtable_get_sock(int fd, struct sock_state *out);
SHIM_HIDDEN bool fdtable_has_sock(int fd);
/* UDP flows: look up the route for a destination; add one. */
SHIM_HIDDEN bool fdtable_udp_lookup(int fd, const union shim_addr *dest, struct udp_flow *out);
SHIM_HIDDEN void fdtable_udp_add(int fd, const struct udp_flow *flow);
/* Rewrite a datagram's source address from a relay back to its destination. */
SHIM_HIDDEN void fdtable_udp_unrelay(int fd, void *addr, socklen_t cap, socklen_t *len);
SHIM_HIDDEN void fdtable_forget_peer(int fd);
/* The shim's own fds. Marking one records its identity (st_dev/st_ino); fdtable_is_shim
 * checks it, and drops the mark of an fd closed behind the shim's back (a raw close_range
 * syscall, a closefrom without our hook) whose number now holds another file. */
SHIM_HIDDEN void fdtable_mark_shim(int fd, bool owned);
SHIM_HIDDEN bool fdtable_is_shim(int fd);
/* Shim fds in [first, last], ascending, at most max; returns the count. */
SHIM_HIDDEN int fdtable_shim_fds_in(unsigned first, unsigned last, int *out, int max);
SHIM_HIDDEN void fdtable_lock(void);
SHIM_HIDDEN void fdtable_unlock(void);

/* Moves fd above the shim's floor with FD_CLOEXEC, marks it as the shim's, and returns
 * the new fd (closing the old one); -1 on failure (fd closed). */
SHIM_HIDDEN int shim_fd_adopt(int fd);
/* Gives up a shim fd: unmark and close. */
SHIM_HIDDEN void shim_fd_release(int fd);
/* The program wants to use `fd`, which the shim owns: move the shim's fd elsewhere.
 * Returns 0, or -1 with errno. */
SHIM_HIDDEN int shim_fd_evict(int fd);

/* ---- channel.c: per-thread connection to the session proxy ---- */
SHIM_HIDDEN void channel_global_init(void);
/* Sends one framed request and reads the response body into a malloc'd buffer. */
SHIM_HIDDEN int channel_call(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len);
SHIM_HIDDEN int channel_notify(const uint8_t *req, size_t len);
/* Called with the channel's fd after a request is sent, before its answer is read: the
 * seccomp supervisor's worker watches for notifications meanwhile (notify.c); the shim
 * sets none. */
SHIM_HIDDEN extern void (*channel_wait_hook)(int fd);
/* Whether this thread's next waits for an answer end on a signal (EINTR) instead of
 * waiting on; channel_interrupted() says whether the last one did (its channel is then
 * closed). Only for waits that can last and whose call may fail with EINTR: a blocking
 * connect, not a name lookup (getaddrinfo has no EINTR). */
SHIM_HIDDEN void channel_interruptible(bool on);
SHIM_HIDDEN bool channel_interrupted(void);
/* A shim fd changed number (evicted); update whoever owns it. */
SHIM_HIDDEN bool channel_renumber(int old_fd, int new_fd);
SHIM_HIDDEN void channel_atfork_prepare(void);
SHIM_HIDDEN void channel_atfork_parent(void);
SHIM_HIDDEN void channel_atfork_child(void);
/* Per-thread scratch buffer for the non-reentrant gethostby* results. */
SHIM_HIDDEN void *channel_thread_scratch(size_t size);

/* ---- proto.c: the wire contract (docs/shim-ipc.md) ---- */

enum reply_kind { REPLY_LOCAL, REPLY_REMOTE, REPLY_ERROR };

struct connect_reply {
  enum reply_kind kind;
  int err;                       /* REPLY_ERROR: errno */
  union shim_addr proxy;         /* REPLY_REMOTE: proxyAddr:proxyPort (family as sent) */
  int64_t stream;
  bool has_local;
  union shim_addr local;         /* localAddr:localPort */
};

#define SHIM_MAX_ADDRS WIRE_MAX_ADDRS

struct resolved_addr {
  int family;                    /* AF_INET or AF_INET6 */
  unsigned char bytes[16];
};

struct resolve_reply {
  enum reply_kind kind;
  int eai;                       /* REPLY_ERROR: EAI_* (negative) */
  char canonname[WIRE_MAX_NAME + 1];
  int naddrs;
  struct resolved_addr addrs[SHIM_MAX_ADDRS];
};

struct reverse_reply {
  enum reply_kind kind;
  int eai;
  char name[WIRE_MAX_NAME + 1];
};

/* Each returns 0 when the proxy answered (the reply says what), -1 when the channel
 * could not be used (connect -> ENETUNREACH, resolve -> EAI_AGAIN). proto_connect's
 * timeout_ms: the pod-side limit of a blocking connect (0: none), or -1 for a
 * non-blocking socket (the proxy may then answer before the pod's connect is done). */
/* sock_uid: the UDP socket's owner (fstat st_uid), or -1; a destination whose relay the
 * proxy shares with that owner's sockets is answered from memory after the first time. */
SHIM_HIDDEN int proto_connect(bool udp, const union shim_addr *dest, int timeout_ms, int64_t sock_uid,
                              struct connect_reply *out);
SHIM_HIDDEN int proto_attach(bool udp, int64_t stream, int port, uint64_t inode, uint32_t uid);
SHIM_HIDDEN int proto_resolve(const char *name, int family, struct resolve_reply *out);
SHIM_HIDDEN int proto_reverse(int family, const void *addr, struct reverse_reply *out);

/* ---- glibc's resolver (res.c, docs/shim-ipc.md: res.config, res.send) ---- */

struct res_config_reply {
  enum reply_kind kind;          /* LOCAL: leave res_* to glibc; REMOTE: the pod's settings */
  int err;                       /* REPLY_ERROR: errno */
  int nnameservers, nsearch;
  char nameservers[WIRE_MAX_NAMESERVERS][WIRE_MAX_ADDRESS_TEXT + 1];
  char search[WIRE_MAX_SEARCH][WIRE_MAX_DOMAIN + 1];
  int64_t ndots, timeout_ms, attempts;
};

struct res_send_reply {
  int err;                       /* 0: answered; else the errno (ETIMEDOUT: no nameserver answered) */
  unsigned char *buf;            /* the caller's buffer: the answer's first cap bytes */
  size_t cap;
  size_t len;                    /* the answer's whole length */
};

/* 0 when the proxy answered (out says what), -1 when the channel could not be used. */
SHIM_HIDDEN int proto_res_config(struct res_config_reply *out);
SHIM_HIDDEN int proto_res_send(const unsigned char *query, size_t len, struct res_send_reply *out);

/* ---- incoming traffic (listen.c, docs/shim-ipc.md: listen, unlisten, peer) ---- */

struct listen_reply {
  enum reply_kind kind;          /* LOCAL: not subscribed; REMOTE: the pod's port comes here */
  int err;                       /* REPLY_ERROR: errno (EADDRINUSE: another session steals it) */
};

struct peer_reply {
  enum reply_kind kind;          /* LOCAL: a plain local connection */
  union shim_addr remote;        /* the real client (the pod's peer) */
  bool has_local;
  union shim_addr local;         /* the pod address the client connected to */
};

SHIM_HIDDEN int proto_listen(int asked_port, const union shim_addr *bound, struct listen_reply *out);
SHIM_HIDDEN int proto_unlisten(int asked_port);
/* from: the accepted connection's peer (loopback); local_port: the connection's own port. */
SHIM_HIDDEN int proto_peer(const union shim_addr *from, int local_port, struct peer_reply *out);

/* ---- what the preload cannot see (unseen.c, docs/shim-ipc.md: notice) ---- */
/* proto.c: the notice notification; what is a WIRE_WHAT_* value. */
SHIM_HIDDEN int proto_notice(const char *what);
/* syscall(): a call that goes past the hooks (raw connect/open, io_uring) is counted and
 * reported once (not emulated). Outside SHIM_ENTER; a1, a2: the call's first arguments. */
SHIM_HIDDEN void unseen_syscall(long number, long a1, long a2);

/* Called by accept/accept4 (connect.c) and close (fds.c), getsockname (connect.c). */
SHIM_HIDDEN bool listen_is_subscribed(int fd);
/* A bind() deferred because its port was taken here: bind now (any_port: a free port of
 * the asked address, for listen; else the asked port, for connect). 0, or -1 with errno. */
SHIM_HIDDEN int listen_bind_deferred(int fd, bool any_port);
SHIM_HIDDEN void listen_after_accept(int listen_fd, int fd, struct sockaddr *addr, socklen_t cap,
                                     socklen_t *len);
SHIM_HIDDEN void listen_before_close(int fd);
SHIM_HIDDEN void listen_before_close_range(unsigned first, unsigned last); /* inside SHIM_ENTER */
SHIM_HIDDEN bool listen_sockname(int fd, struct sockaddr *addr, socklen_t cap, socklen_t *len);

/* ---- sockaddr helpers (connect.c) ---- */
/* Family-neutral view of an inet sockaddr: v4-mapped v6 counts as v4. */
SHIM_HIDDEN bool shim_addr_from(const struct sockaddr *sa, socklen_t len, union shim_addr *out,
                                socklen_t *out_len);
SHIM_HIDDEN bool shim_addr_equal(const union shim_addr *a, const union shim_addr *b);
/* Re-express `a` for a socket of `domain` (maps v4 into v6); false if impossible. */
SHIM_HIDDEN bool shim_addr_for_domain(const union shim_addr *a, int domain, union shim_addr *out,
                                      socklen_t *out_len);
SHIM_HIDDEN void shim_addr_copy_out(const union shim_addr *a, socklen_t alen, void *addr,
                                    socklen_t cap, socklen_t *len);
SHIM_HIDDEN int shim_sock_type(int fd);
SHIM_HIDDEN int64_t shim_sock_uid(int fd);
/* What proto_connect takes for socket `fd` whose F_GETFL flags are `status_flags` (the
 * caller reads them: the shim through REAL(fcntl)): -1 for a non-blocking socket, else
 * SO_SNDTIMEO in ms (0: none, or unknown). */
SHIM_HIDDEN int shim_connect_timeout_ms(int fd, int status_flags);
/* connect()'s logic for an inet stream/datagram socket, inside SHIM_ENTER. */
SHIM_HIDDEN int shim_connect_inet(int fd, const struct sockaddr *addr, socklen_t len, int type,
                                  int saved_errno);

/* ---- pod files (pathrules.c, fsproto.c, rfile.c, files_*.c, dirs.c; docs/shim-ipc.md "Files") ---- */

/* What a remote_* helper did with a call, so every hook that may pass through reads the
 * same way: `if (remote_x(..., &result) != REMOTE_PASS) return result;` then the real
 * call. A helper leaves errno as the program had it unless it returns REMOTE_FAILED. */
enum remote_result {
  REMOTE_PASS = 0, /* not the pod's: the hook calls the real function */
  REMOTE_DONE,     /* answered for the pod: success */
  REMOTE_FAILED,   /* answered for the pod: failure, errno set */
};

/* The 0 / -1 return of a call that has no other result (access, mkdir, ...). */
static inline int remote_status(enum remote_result r) { return r == REMOTE_DONE ? 0 : -1; }

enum fs_route { FS_LOCAL, FS_REMOTE, FS_NOT_FOUND };

/* Decides where `path` (relative to dirfd when relative) is read from. For FS_REMOTE,
 * `out` receives the absolute pod path to send. Must be called inside SHIM_ENTER. */
SHIM_HIDDEN enum fs_route fs_route_at(int dirfd, const char *path, char *out, size_t cap);
SHIM_HIDDEN bool fs_write_mode(void);
/* Lexical normalisation of an absolute path (no //, /./, /../). */
SHIM_HIDDEN void fs_normalise(const char *in, char *out, size_t cap);
SHIM_HIDDEN const char *fs_empty_dir(void);

/* A file's metadata as the pod sees it. */
struct rstat {
  int64_t dev, ino, mode, nlink, uid, gid, rdev, size, blksize, blocks;
  int64_t atime, atime_ns, mtime, mtime_ns, ctime, ctime_ns;
};

/* What the proxy answered to a file request. */
struct fs_reply {
  int err;               /* 0 on success, else the errno */
  bool dir;              /* fs.open: the path is a directory */
  bool lazy, writeback;  /* fs.open: filled on demand / written back on close */
  int64_t handle;        /* fs.open: the proxy's handle (0: none) */
  int64_t count;         /* fs.readdir: entries; fs.fill: bytes */
  struct rstat st;       /* fs.open, fs.stat */
  char target[WIRE_MAX_PATH + 1]; /* fs.readlink */
};

/* Each returns 0 when the proxy answered (out->err says how), -1 if the channel failed. */
SHIM_HIDDEN int fsproto_open(const char *path, int flags, int mode, int memfd, bool eager, struct fs_reply *out);
SHIM_HIDDEN int fsproto_fill(int64_t handle, int64_t offset, int64_t length, struct fs_reply *out);
SHIM_HIDDEN int fsproto_writeback(int64_t handle, struct fs_reply *out);
/* What a lazily filled file must fetch so that [offset, end) is present (0 <= offset < end
 * <= size): false when it all is (*next_offset moves to end), else [*from, *to), from the
 * first missing chunk with a read-ahead window that doubles while reading is sequential
 * (*next_offset == offset; *window keeps it) and stops at the next present chunk. Used by
 * the shim (rfile.c) and the supervisor (lazy.c) alike. */
SHIM_HIDDEN bool fsproto_fill_plan(const uint8_t *present, int64_t size, int64_t offset, int64_t end,
                                   int64_t *next_offset, int64_t *window, int64_t *from, int64_t *to);
SHIM_HIDDEN bool fsproto_chunk_present(const uint8_t *present, uint64_t c);
SHIM_HIDDEN void fsproto_release(int64_t handle);
SHIM_HIDDEN int fsproto_stat(const char *path, bool follow, struct fs_reply *out);
SHIM_HIDDEN int fsproto_access(const char *path, int mode, struct fs_reply *out);
SHIM_HIDDEN int fsproto_readdir(const char *path, int memfd, struct fs_reply *out);
SHIM_HIDDEN int fsproto_readlink(const char *path, struct fs_reply *out);
/* what: WIRE_CHANGE_* (fs.change), or SHIM_CHANGE_TRUNCATE (sent as fs.truncate, `mode` the size) */
#define SHIM_CHANGE_TRUNCATE "truncate"
SHIM_HIDDEN int fsproto_change(const char *what, const char *path, int64_t mode, const char *to,
                               struct fs_reply *out);
/* Sends fs.config and hands each field to the callback; -1 if the channel failed. */
SHIM_HIDDEN int fsproto_config(void (*field)(const char *key, const char *value, void *arg), void *arg);

/* rfile.c: descriptors that hold a pod file (a memfd) or stand for a pod directory. */
struct rfile;
SHIM_HIDDEN void rfile_register(int fd, const char *path, const struct fs_reply *r, bool is_dir);
/* The pod path and stat of a descriptor that stands for a pod file or directory. */
SHIM_HIDDEN bool rfile_info(int fd, char *path, size_t cap, struct rstat *st, bool *is_dir,
                            bool *writable_copy);
/* Makes [offset, offset+len) of a lazily filled fd present; len < 0: the whole file. */
SHIM_HIDDEN int rfile_ensure(int fd, int64_t offset, int64_t len); /* 0 or an errno */
/* close/dup bookkeeping (fds.c); rfile_forget writes back a write-mode file first. */
SHIM_HIDDEN void rfile_forget(int fd);
SHIM_HIDDEN void rfile_forget_range(unsigned first, unsigned last);
SHIM_HIDDEN void rfile_copy(int from, int to);
SHIM_HIDDEN int rfile_sync(int fd);
SHIM_HIDDEN bool rfile_any(void);
/* Fills every lazily filled fd that survives exec (no FD_CLOEXEC): the new program's
 * shim knows nothing about it. */
SHIM_HIDDEN void rfile_before_exec(void);

SHIM_HIDDEN void rstat_to_stat(const struct rstat *r, void *stat_buf);

#endif
