/*
 * The seccomp filter, generated from the tables in sv.h: the notified calls go to the
 * supervisor (SECCOMP_RET_USER_NOTIF), every other call is allowed at once. The calls of
 * SV_LAZY_SYSCALLS are notified only on a descriptor in the lazy window (lazy.c); the
 * UDP block's (socket of UDP; recvfrom, recvmsg, recvmmsg, dup, fcntl on a descriptor of
 * the UDP window) as udpwindow.c says.
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

/* The instructions of the UDP block below: without a window, sendto and recvfrom (6);
 * with one, sendto (5), recvfrom (8), recvmsg and recvmmsg (4 each), socket (10), dup (5)
 * and fcntl (8). */
enum { UDP_NO_WINDOW = 6, UDP_WINDOW = 5 + 8 + 4 + 4 + 10 + 5 + 8 };

/* Instruction indexes are fixed: the three verdicts come last. */
int sv_install_filter(bool *killable) {
  enum { HEAD = 4, LAZY_EACH = 4, TAIL = 3 };
  /* `notified` may be decided at run time (files.c: close and friends in write mode only). */
  size_t notified = 0;
#define COUNT_IF(name, handler, on) \
  if (on) notified++;
  SV_SYSCALLS(COUNT_IF)
#undef COUNT_IF
  if (notified > SV_NOTIFIED) return -EINVAL;
  unsigned lazy_lo, lazy_hi, udp_lo, udp_hi;
  bool lazy = sv_lazy_window(&lazy_lo, &lazy_hi);
  bool window = sv_udp_window(&udp_lo, &udp_hi);
  const size_t udp_block = window ? UDP_WINDOW : UDP_NO_WINDOW;
  struct sock_filter prog[HEAD + UDP_WINDOW + SV_NOTIFIED + LAZY_EACH * SV_LAZY + TAIL];
  const size_t allow_at = HEAD + udp_block + notified + (lazy ? LAZY_EACH * SV_LAZY : 0), notify_at = allow_at + 1,
               enosys_at = allow_at + 2;
  size_t n = 0;
  bool too_far = false; /* a jump longer than BPF's 8-bit offsets */
#define STMT(code, k) (prog[n] = (struct sock_filter)BPF_STMT(code, k), n++)
#define JUMP(code, k, to_true, to_false)                                                                          \
  (too_far |= (to_true) - n - 1 > 255 || (to_false) - n - 1 > 255,                                                \
   prog[n] = (struct sock_filter)BPF_JUMP(code, k, (unsigned char)((to_true) - n - 1), (unsigned char)((to_false) - n - 1)), \
   n++)
#define LOAD_NR() STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LOAD_ARG(i) STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]))
#define LOAD_ARG_HIGH(i) STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]) + 4)
  STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, SV_AUDIT_ARCH, n + 1, enosys_at);
  LOAD_NR();
#if defined(__x86_64__)
  JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, enosys_at, n + 1);
#else
  LOAD_NR();
#endif
  if (!window) {
    /* sendto without a destination (a TCP or connected UDP write) and recvfrom without a
     * source buffer (a TCP read) run at full speed: only the address argument (args[4] of
     * both) makes them the supervisor's business. */
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendto, n + 2, n + 1);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_recvfrom, n + 1, n + 5);
    LOAD_ARG(4);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, n + 1, notify_at);
    LOAD_ARG_HIGH(4);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, allow_at, notify_at);
  } else {
    /* sendto: only with a destination (args[4]). */
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sendto, n + 1, n + 5);
    LOAD_ARG(4);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, n + 1, notify_at);
    LOAD_ARG_HIGH(4);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, allow_at, notify_at);
    /* recvfrom: only with a source buffer, and on a descriptor of the UDP window. */
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_recvfrom, n + 1, n + 8);
    LOAD_ARG(4);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, n + 1, n + 3);
    LOAD_ARG_HIGH(4);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, allow_at, n + 1);
    LOAD_ARG(0);
    JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_lo, n + 1, allow_at);
    JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_hi, allow_at, notify_at);
    /* recvmsg, recvmmsg: on a descriptor of the UDP window (their source buffer is in a
     * msghdr the filter cannot read). */
#define IN_UDP_WINDOW(nr)                                         \
  JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, n + 1, n + 4);              \
  LOAD_ARG(0);                                                    \
  JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_lo, n + 1, allow_at);       \
  JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_hi, allow_at, notify_at);
    IN_UDP_WINDOW(__NR_recvmsg)
    IN_UDP_WINDOW(__NR_recvmmsg)
#undef IN_UDP_WINDOW
    /* socket(AF_INET or AF_INET6, SOCK_DGRAM | flags, 0 or IPPROTO_UDP). */
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, n + 1, n + 10);
    LOAD_ARG(0);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, n + 2, n + 1);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, n + 1, allow_at);
    LOAD_ARG(1);
    STMT(BPF_ALU | BPF_AND | BPF_K, 0xf); /* the type without SOCK_NONBLOCK/SOCK_CLOEXEC */
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, SOCK_DGRAM, n + 1, allow_at);
    LOAD_ARG(2);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, notify_at, n + 1);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, notify_at, allow_at);
    /* dup and fcntl(F_DUPFD, F_DUPFD_CLOEXEC) of a descriptor of the UDP window; anything
     * else goes on to the lists below (the lazy window's tests), with nr loaded again. */
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_dup, n + 1, n + 4);
    LOAD_ARG(0);
    JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_lo, n + 1, n + 2);
    JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_hi, n + 1, notify_at);
    LOAD_NR();
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fcntl, n + 1, n + 7);
    LOAD_ARG(0);
    JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_lo, n + 1, n + 5);
    JUMP(BPF_JMP | BPF_JGE | BPF_K, udp_hi, n + 4, n + 1);
    LOAD_ARG(1);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD, notify_at, n + 1);
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD_CLOEXEC, notify_at, n + 1);
    LOAD_NR();
  }
  if (n != HEAD + udp_block) return -EINVAL; /* the UDP block's size above is wrong */
#define JUMP_IF(name, handler, notified) \
  if (notified) JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, notify_at, n + 1);
  SV_SYSCALLS(JUMP_IF)
#undef JUMP_IF
  /* Content reads and dups of a descriptor in the lazy window (lazy.c); the same calls on
   * any other descriptor are allowed. A call already notified above never gets here. */
#define JUMP_IF_IN_WINDOW(name, fd_arg)                                            \
  if (lazy) {                                                                       \
    JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, n + 1, n + LAZY_EACH);            \
    LOAD_ARG(fd_arg);                                                               \
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
#undef LOAD_NR
#undef LOAD_ARG
#undef LOAD_ARG_HIGH
  if (n != enosys_at + 1 || too_far) return -EINVAL; /* the layout above is wrong */
  struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};

  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
  /* WAIT_KILLABLE_RECV (5.19+): once the supervisor has received a call, only a fatal
   * signal interrupts the program's wait. Without it, any signal (Go preempts goroutines
   * with SIGURG every few ms) interrupts a call the supervisor is working on, and the
   * kernel restarts it: a slow connect could be asked again and again. */
  /* SPEC_ALLOW (4.17+): the filter is not a sandbox, so it leaves the program's speculation
   * mitigations as they would be without tsmirror. Without it, kernels before 5.16 (and any
   * booted with spec_store_bypass_disable=seccomp or spectre_v2_user=seccomp) turn on SSBD
   * and STIBP for every filtered process, which slows all of its code, not only its
   * system calls. */
  const unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW;
  int fd = seccomp(SECCOMP_SET_MODE_FILTER, flags | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &fprog);
  *killable = fd >= 0;
  if (fd < 0 && errno == EINVAL) fd = seccomp(SECCOMP_SET_MODE_FILTER, flags, &fprog);
  return fd < 0 ? -errno : fd;
}
