/*
 * tsmirror-supervise: the seccomp user-notification supervisor (docs/ARCHITECTURE.md,
 * "Static and Go programs: seccomp"). Internal interface shared by its files:
 *
 *   main.c      launch: fork, filter, listener to the parent, exec; signals, exit status
 *   detached.c  launch in place: the exec'd process becomes the program, the supervisor
 *               beside it (launch.h: what it shares with main.c)
 *   filter.c    the BPF filter, generated from the tables below
 *   notify.c    worker threads, dispatch, and the helpers every handler uses
 *   compat.c    what the shim's wire code (msgpack/replies/proto/fsproto/channel.c) needs
 *   sockets.c   per-socket state of outgoing sockets (sockets.h: what the next three share)
 *   connect.c   connect, getpeername/getsockname
 *   udp.c       sendto/sendmsg/sendmmsg of datagrams with a destination
 *   udprecv.c   recvfrom/recvmsg/recvmmsg: the sources of relayed datagrams
 *   udpwindow.c socket() of UDP: sockets at numbers the filter tests; their dups
 *   files.c     pod files: what is kept per memfd, recognising fds, path routing (files.h);
 *               files_open.c, files_stat.c, files_dirs.c, files_change.c and
 *               files_writeback.c answer open, stat, getdents64, changes and write mode
 *   listen.c    incoming traffic: the known sockets (listen.h), bind/listen;
 *               accept.c (accept/accept4, getpeername/getsockname of relayed
 *               connections) and listen_sweep.c (closed listeners) share its table
 *   lazy.c      big pod files filled as the program reads them
 *
 * It includes the shim's header so that the shim's wire code (proto_*, fsproto_*,
 * channel_call: one channel to the session proxy per worker thread) links unchanged.
 */
#ifndef TSMIRROR_SV_H
#define TSMIRROR_SV_H

#include "../shim/shim.h"

#include <linux/seccomp.h>
#include <stdatomic.h>
#include <sys/syscall.h>

/*
 * The notified system calls: X(name, handler, notified). One line per call; the BPF
 * filter notifies exactly the calls whose `notified` is true when it is made (every
 * other call runs at full speed, never seeing the supervisor), and the dispatcher calls `handler` for them. A
 * handler must answer its call (sv_continue, sv_return, sv_fail, sv_addfd_send); one that
 * does not is answered CONTINUE by the dispatcher, so no notification is ever left
 * unanswered. Each list belongs to one file; the pre-x86_64 names (open, stat, ...) exist
 * only on x86_64.
 */

/* connect.c, udp.c, udprecv.c, udpwindow.c. The lines with 0 are notified as filter.c's
 * UDP block decides: socket() of an inet datagram socket; recvfrom (with a source
 * buffer), recvmsg and recvmmsg, and dup and fcntl(F_DUPFD*), on a descriptor of the UDP
 * window (udpwindow.c); recvfrom with a source buffer on any descriptor when there is no
 * window. sendto is notified only with a destination. */
#define SV_NET_SYSCALLS(X)            \
  X(connect, sv_connect, 1)           \
  X(sendto, sv_sendto, 1)             \
  X(sendmsg, sv_sendmsg, 1)           \
  X(sendmmsg, sv_sendmmsg, 1)         \
  X(recvfrom, sv_recvfrom, 1)         \
  X(getpeername, sv_getpeername, 1)   \
  X(getsockname, sv_getsockname, 1)   \
  X(socket, sv_socket, 0)             \
  X(recvmsg, sv_recvmsg, 0)           \
  X(recvmmsg, sv_recvmmsg, 0)         \
  X(dup, sv_udp_dup, 0)               \
  X(fcntl, sv_udp_dup, 0)

/* files*.c; close and the calls that close descriptors are notified only in write mode
 * (sv_files_notify_writes: a write-mode pod file is written back first) */
#define SV_FILE_SYSCALLS(X)                                   \
  X(openat, sv_openat, 1)                                     \
  X(openat2, sv_openat2, 1)                                   \
  X(newfstatat, sv_newfstatat, 1)                             \
  X(statx, sv_statx, 1)                                       \
  X(fstat, sv_fstat, 1)                                       \
  X(faccessat, sv_faccessat, 1)                               \
  X(faccessat2, sv_faccessat2, 1)                             \
  X(readlinkat, sv_readlinkat, 1)                             \
  X(getdents64, sv_getdents64, 1)                             \
  X(mkdirat, sv_mkdirat, 1)                                   \
  X(unlinkat, sv_unlinkat, 1)                                 \
  X(renameat2, sv_renameat2, 1)                               \
  X(truncate, sv_truncate, 1)                                 \
  X(ftruncate, sv_ftruncate, 0)                               \
  X(close, sv_writeback_fd, sv_files_notify_writes())         \
  X(fsync, sv_writeback_fd, sv_files_notify_writes())         \
  X(fdatasync, sv_writeback_fd, sv_files_notify_writes())     \
  X(dup3, sv_writeback_dup, sv_files_notify_writes())         \
  X(close_range, sv_writeback_range, sv_files_notify_writes()) \
  X(exit_group, sv_writeback_exit, sv_files_notify_writes())
#if defined(__x86_64__)
#define SV_FILE_SYSCALLS_LEGACY(X)                            \
  X(open, sv_open, 1)                                         \
  X(creat, sv_creat, 1)                                       \
  X(stat, sv_stat, 1)                                         \
  X(lstat, sv_lstat, 1)                                       \
  X(access, sv_access, 1)                                     \
  X(readlink, sv_readlink, 1)                                 \
  X(mkdir, sv_mkdir, 1)                                       \
  X(unlink, sv_unlink, 1)                                     \
  X(rmdir, sv_rmdir, 1)                                       \
  X(rename, sv_rename, 1)                                     \
  X(renameat, sv_renameat, 1)                                 \
  X(dup2, sv_writeback_dup, sv_files_notify_writes())
#else
#define SV_FILE_SYSCALLS_LEGACY(X)
#endif

/* listen.c, accept.c */
#define SV_LISTEN_SYSCALLS(X)         \
  X(bind, sv_bind, 1)                 \
  X(listen, sv_listen, 1)             \
  X(accept, sv_accept, 1)             \
  X(accept4, sv_accept4, 1)

/* lazy.c: the calls that read a descriptor's content or copy the descriptor, notified
 * only when their descriptor argument (`fd_arg`) is in the window where lazily filled pod
 * files are placed: X(name, fd_arg). The dispatcher fills what the call is about to read
 * (sv_lazy_before) before the call's handler in the list above, if it has one, runs. */
#define SV_LAZY_SYSCALLS_COMMON(X) \
  X(read, 0)                       \
  X(readv, 0)                      \
  X(pread64, 0)                    \
  X(preadv, 0)                     \
  X(preadv2, 0)                    \
  X(mmap, 4)                       \
  X(sendfile, 1)                   \
  X(copy_file_range, 0)            \
  X(splice, 0)                     \
  X(dup, 0)                        \
  X(dup3, 0)                       \
  X(fcntl, 0)                      \
  X(execveat, 0)
#if defined(__x86_64__)
#define SV_LAZY_SYSCALLS(X) SV_LAZY_SYSCALLS_COMMON(X) X(dup2, 0)
#else
#define SV_LAZY_SYSCALLS(X) SV_LAZY_SYSCALLS_COMMON(X)
#endif

#define SV_SYSCALLS(X)       \
  SV_NET_SYSCALLS(X)         \
  SV_FILE_SYSCALLS(X)        \
  SV_FILE_SYSCALLS_LEGACY(X) \
  SV_LISTEN_SYSCALLS(X)

/* One notification being handled, by one worker thread. */
struct sv_call {
  struct seccomp_notif *req;   /* id, pid (the calling thread's tid), data.nr, data.args[] */
  int listener;
  bool answered;
  int pidfd;                   /* of the calling thread, on first use (-1) */
  bool pidfd_temporary;        /* not the worker's cached one: the dispatcher closes it */
};

typedef void (*sv_handler)(struct sv_call *call);

/* files.c: fetches the path rules (fs.config) before the filter is made, which says
 * whether close and friends are notified (write mode). */
void sv_files_prepare(void);
bool sv_files_notify_writes(void);
/* files.c: after the program ended: what it wrote to pod files it never closed (a crash,
 * SIGKILL) goes to the pod before the supervisor ends. */
void sv_files_finish(void);

/* lazy.c: the window of descriptor numbers reserved for lazily filled pod files, chosen
 * before the filter is made from RLIMIT_NOFILE (the program inherits the supervisor's);
 * false: none (big pod files are then read whole at open). */
void sv_lazy_prepare(void);
bool sv_lazy_window(unsigned *lo, unsigned *hi);
/* Remembers the program's open file `fd` (the supervisor's copy, before it is installed)
 * of a lazily filled pod file: the proxy's handle and the file's size. */
bool sv_lazy_track(int fd, int64_t handle, int64_t size);
/* Installs `fd` in the calling process at a free number of the window (ADDFD with SETFD),
 * without answering; the number, or -errno (no window, none free, over the process's limit). */
int sv_lazy_install(struct sv_call *call, int fd, bool cloexec);
/* A pod directory's listing placed the same way, so that a read() of it is seen and
 * answered EISDIR (a getdents64 is answered wherever it sits). */
int sv_lazy_install_dir(struct sv_call *call, int fd, bool cloexec);
/* Fills the whole of the lazily filled file `fd` (the supervisor's descriptor; `handle`
 * and `size` from the open, for one not tracked); 0 or an errno. */
int sv_lazy_fill_all(int fd, int64_t handle, int64_t size);
/* The program's last close of the file with this handle: forget it. */
void sv_lazy_forget(int64_t handle);
/* A call of SV_LAZY_SYSCALLS on descriptor argument `arg`: fills what it will read; on a
 * failed fill, fails the call with EIO. */
void sv_lazy_before(struct sv_call *call, int arg);

/* udpwindow.c: the window of descriptor numbers where UDP sockets are placed, just below
 * the lazy window; false: none (RLIMIT_NOFILE too low). */
bool sv_udp_window(unsigned *lo, unsigned *hi);

#define SV_DECLARE_HANDLER(name, handler, notified) void handler(struct sv_call *call);
SV_SYSCALLS(SV_DECLARE_HANDLER)
#undef SV_DECLARE_HANDLER

/* ---- answers (notify.c): each answers the call once; later ones are ignored ---- */

/* The kernel runs the call as the program made it (SECCOMP_USER_NOTIF_FLAG_CONTINUE). */
void sv_continue(struct sv_call *call);
/* The call returns `value` (>= 0). */
void sv_return(struct sv_call *call, int64_t value);
/* The call fails with `err` (a positive errno). */
void sv_fail(struct sv_call *call, int err);
/* Installs `fd` (the supervisor's) in the calling process and makes the call return its
 * number there (SECCOMP_ADDFD_FLAG_SEND); `cloexec`: O_CLOEXEC on the new fd. Returns
 * the new fd, or -errno (the call is then still unanswered). */
int sv_addfd_send(struct sv_call *call, int fd, bool cloexec);
/* Installs `fd` in the calling process without answering; returns the new fd or -errno. */
int sv_addfd(struct sv_call *call, int fd, bool cloexec);

/* ---- the program's memory and descriptors ---- */

/* Whether the notification is still pending: its thread has not died or been reused.
 * Check it after reading the program's memory and before acting on what was read. */
bool sv_valid(struct sv_call *call);
/* Reads len bytes at the program's address; 0, or -EFAULT (unmapped, partial). */
int sv_read(struct sv_call *call, uint64_t addr, void *buf, size_t len);
/* Writes len bytes at the program's address; 0, or -EFAULT. */
int sv_write(struct sv_call *call, uint64_t addr, const void *buf, size_t len);
/* Reads a NUL-terminated string of at most cap-1 bytes: its length, -EFAULT, or
 * -ENAMETOOLONG when no NUL comes within cap-1 bytes. */
ssize_t sv_read_string(struct sv_call *call, uint64_t addr, char *buf, size_t cap);
/* A duplicate of the program's descriptor `fd` in the supervisor (pidfd_getfd): the same
 * open file (socket, flags and offset shared). The caller closes it. -errno on failure
 * (EBADF: no such fd). */
int sv_getfd(struct sv_call *call, int fd);
/* The calling thread's pidfd (the worker keeps the last one for the thread's next call); -errno. */
int sv_pidfd(struct sv_call *call);

/* Before a handler (all run by the receiving worker: notify.c) waits for anything but the
 * proxy's answer or the program's thread: another worker receives the next calls. */
void sv_stop_receiving(void);

/* Kernel features found at start (notify.c). */
extern bool sv_have_addfd_send;

/* ---- incoming traffic (listen.c, accept.c), for connect.c ---- */

/* accept.c: getpeername (peer) / getsockname of a socket listen.c or accept.c answered
 * for: a relayed connection reports the pod client / the pod address it reached, a
 * listener bound elsewhere the address it asked for. Answers the call and returns true when the socket
 * is one of those; else returns false and leaves the call to the caller. dup: the
 * caller's duplicate of the program's socket (args[0]), or -1 to make one. */
bool sv_incoming_name(struct sv_call *call, int dup, bool peer);
/* listen.c: connect() on a socket whose bind was deferred (its port was taken here):
 * binds the asked port now, as the shim does. dup: the supervisor's duplicate of the program's
 * socket. 0, or -errno (fail the connect with it). */
int sv_incoming_bind_deferred(int dup);

/* Workers and dispatch (notify.c): runs until the process exits. */
int sv_serve(int listener);

/* The filter (filter.c): installs it in the calling process (after PR_SET_NO_NEW_PRIVS);
 * returns the listener fd, or -errno. *killable says whether WAIT_KILLABLE_RECV was used. */
int sv_install_filter(bool *killable);

/* Supervisor's own diagnostics to stderr: "tsmirror: ..." (only for failures the user
 * must see; the debug log is shim_log, TSMIRROR_SHIM_LOG). */
void sv_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
