/*
 * The seccomp filter, generated from the tables in sv.h: the notified calls go to the
 * supervisor (SECCOMP_RET_USER_NOTIF), every other call is allowed at once. The calls of
 * SV_LAZY_SYSCALLS are notified only on a descriptor in the lazy window (lazy.c).
 *
 * Architecture: the filter only knows the native calling convention. A call made through
 * another one (i386 `int 0x80` from a 64-bit program, a 32-bit program exec'd by the
 * program, x32's numbers with __X32_SYSCALL_BIT) would use other numbers and pass
 * unseen; those fail with ENOSYS instead, so that nothing reaches this machine's network
 * or files silently. tsmirror refuses to start a 32-bit program in seccomp mode.
 */
#include "sv.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>

#if defined(__x86_64__)
#define SV_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SV_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "tsmirror-supervise: unsupported architecture"
#endif

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

/* An upper bound of the notified calls (the array's size): some lines' `notified` is
 * decided at run time (sv.h). */
#define COUNT_NOTIFIED(name, handler, notified) +1
enum { SV_NOTIFIED = 0 SV_SYSCALLS(COUNT_NOTIFIED) };
#undef COUNT_NOTIFIED

static int seccomp(unsigned op, unsigned flags, void *args) {
  return (int)syscall(SYS_seccomp, op, flags, args);
}

#define COUNT_LAZY(name, fd_arg) +1
enum { SV_LAZY = 0 SV_LAZY_SYSCALLS(COUNT_LAZY) };
#undef COUNT_LAZY

/* Instruction indexes are fixed: the three verdicts come last. */
int sv_install_filter(bool *killable) {
  enum { HEAD = 4, SENDTO = 6, LAZY_EACH = 4, TAIL = 3 };
  /* `notified` may be decided at run time (files.c: close and friends in write mode only). */
  size_t notified = 0;
#define COUNT_IF(name, handler, on) \
  if (on) notified++;
  SV_SYSCALLS(COUNT_IF)
#undef COUNT_IF
  if (notified > SV_NOTIFIED) return -EINVAL;
  unsigned lazy_lo, lazy_hi;
  bool lazy = sv_lazy_window(&lazy_lo, &lazy_hi);
  struct sock_filter prog[HEAD + SENDTO + SV_NOTIFIED + LAZY_EACH * SV_LAZY + TAIL];
  const size_t allow_at = HEAD + SENDTO + notified + (lazy ? LAZY_EACH * SV_LAZY : 0), notify_at = allow_at + 1,
               enosys_at = allow_at + 2;
  size_t n = 0;
  bool too_far = false; /* a jump longer than BPF's 8-bit offsets */
#define STMT(code, k) (prog[n] = (struct sock_filter)BPF_STMT(code, k), n++)
#define JUMP(code, k, to_true, to_false)                                                                          \
  (too_far |= (to_true) - n - 1 > 255 || (to_false) - n - 1 > 255,                                                \
   prog[n] = (struct sock_filter)BPF_JUMP(code, k, (unsigned char)((to_true) - n - 1), (unsigned char)((to_false) - n - 1)), \
   n++)
  STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, SV_AUDIT_ARCH, n + 1, enosys_at);
  STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
  JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, enosys_at, n + 1);
#else
  STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#endif
  /* sendto without a destination (a TCP or connected UDP write) and recvfrom without a
   * source buffer (a TCP read) run at full speed: only the address argument (args[4] of
   * both) makes them the supervisor's business. (The SENDTO instructions.) */
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendto, n + 2, n + 1);
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_recvfrom, n + 1, n + 5);
  STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4]));
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, n + 1, notify_at);
  STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4]) + 4);
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, allow_at, notify_at);
#define JUMP_IF(name, handler, notified) \
  if (notified) JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, notify_at, n + 1);
  SV_SYSCALLS(JUMP_IF)
#undef JUMP_IF
  /* Content reads and dups of a descriptor in the lazy window (lazy.c); the same calls on
   * any other descriptor are allowed. A call already notified above never gets here. */
#define JUMP_IF_IN_WINDOW(name, fd_arg)                                            \
  if (lazy) {                                                                       \
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, n + 1, n + LAZY_EACH);            \
    STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[fd_arg]));   \
    JUMP(BPF_JMP | BPF_JGE | BPF_K, lazy_lo, n + 1, allow_at);                     \
    JUMP(BPF_JMP | BPF_JGE | BPF_K, lazy_hi, allow_at, notify_at);                 \
  }
  SV_LAZY_SYSCALLS(JUMP_IF_IN_WINDOW)
#undef JUMP_IF_IN_WINDOW
  STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
  STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
#undef STMT
#undef JUMP
  if (n != enosys_at + 1 || too_far) return -EINVAL; /* the layout above is wrong */
  struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};

  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
  /* WAIT_KILLABLE_RECV (5.19+): once the supervisor has received a call, only a fatal
   * signal interrupts the program's wait. Without it, any signal (Go preempts goroutines
   * with SIGURG every few ms) interrupts a call the supervisor is working on, and the
   * kernel restarts it: a slow connect could be asked again and again. */
  int fd = seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &fprog);
  *killable = fd >= 0;
  if (fd < 0 && errno == EINVAL) fd = seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
  return fd < 0 ? -errno : fd;
}
