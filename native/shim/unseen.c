/*
 * What the preload cannot see: system calls made through syscall() instead of the libc
 * functions the shim hooks (connect, open, openat), and io_uring, whose connects and
 * opens are submitted to a ring the kernel runs without any libc call. The shim does not
 * emulate them: it counts them (in the debug log) and tells the session proxy once per
 * kind and process (`notice`), which warns the user once per session.
 */
#include "shim.h"

#include <string.h>
#include <sys/syscall.h>

enum unseen_kind { UNSEEN_IO_URING, UNSEEN_RAW_CONNECT, UNSEEN_RAW_OPEN, UNSEEN_KINDS };

static const char *const wire_what[UNSEEN_KINDS] = {WIRE_WHAT_IO_URING, WIRE_WHAT_RAW_CONNECT,
                                                    WIRE_WHAT_RAW_OPEN};
static unsigned long counts[UNSEEN_KINDS];
static bool reported[UNSEEN_KINDS];

static void notice(enum unseen_kind kind) {
  int saved = errno;
  SHIM_ENTER();
  unsigned long n = __atomic_add_fetch(&counts[kind], 1, __ATOMIC_RELAXED);
  if (!__atomic_exchange_n(&reported[kind], true, __ATOMIC_ACQ_REL)) {
    shim_log("the program uses %s, which the shim cannot follow (call %lu); telling the proxy",
             wire_what[kind], n);
    proto_notice(wire_what[kind]);
  }
  SHIM_LEAVE();
  errno = saved;
}

/* A path the rules send to the pod (or report missing there): opening it raw reads this
 * machine's file instead. Local paths (libraries, /proc, ...) are not worth a word. */
static bool pod_path(int dirfd, const char *path) {
  if (!path) return false;
  int saved = errno;
  SHIM_ENTER();
  char abs[4096];
  enum fs_route route = fs_route_at(dirfd, path, abs, sizeof abs);
  SHIM_LEAVE();
  errno = saved;
  return route != FS_LOCAL;
}

SHIM_HIDDEN void unseen_syscall(long number, long a1, long a2) {
  if (!shim_intercepting()) return;
  switch (number) {
#ifdef SYS_io_uring_setup
    case SYS_io_uring_setup:
      notice(UNSEEN_IO_URING);
      return;
#endif
    case SYS_connect: {
      const struct sockaddr *sa = (const struct sockaddr *)a2;
      if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) notice(UNSEEN_RAW_CONNECT);
      return;
    }
#ifdef SYS_open
    case SYS_open:
      if (pod_path(AT_FDCWD, (const char *)a1)) notice(UNSEEN_RAW_OPEN);
      return;
#endif
    case SYS_openat:
#ifdef SYS_openat2
    case SYS_openat2:
#endif
      if (pod_path((int)a1, (const char *)a2)) notice(UNSEEN_RAW_OPEN);
      return;
    default:
      return;
  }
}

/* liburing exports io_uring_setup (its own system call wrapper); a program calling it
 * through the PLT comes here first. liburing's queue_init makes the system call itself. */
SHIM_EXPORT int io_uring_setup(unsigned int entries, void *params) {
  if (shim_intercepting()) notice(UNSEEN_IO_URING);
  if (REAL(io_uring_setup)) return REAL(io_uring_setup)(entries, params);
#ifdef SYS_io_uring_setup
  return (int)REAL(syscall)(SYS_io_uring_setup, entries, params);
#else
  errno = ENOSYS;
  return -1;
#endif
}
