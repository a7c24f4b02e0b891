/*
 * The seccomp filter, generated from the tables in sv.h: the notified calls go to the
 * supervisor (SECCOMP_RET_USER_NOTIF), every other call is allowed at once.
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

#define COUNT_NOTIFIED(name, handler, notified) +(notified)
enum { SV_NOTIFIED = 0 SV_SYSCALLS(COUNT_NOTIFIED) };
#undef COUNT_NOTIFIED

static int seccomp(unsigned op, unsigned flags, void *args) {
  return (int)syscall(SYS_seccomp, op, flags, args);
}

int sv_install_filter(bool *killable) {
  /* arch check (3) + x32 check (2) + one jump per notified call + allow + notify + enosys */
  struct sock_filter prog[8 + SV_NOTIFIED];
  size_t n = 0;
  const size_t total = 8 + SV_NOTIFIED - 1; /* index of the last instruction */
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  /* not native: jump to ENOSYS (the last instruction) */
  prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SV_AUDIT_ARCH, 0, (unsigned char)(total - n - 1));
  n++;
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
  prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, (unsigned char)(total - n - 1), 0);
  n++;
#else
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#endif
  const size_t notify_at = total - 1;
#define JUMP_IF(name, handler, notified)                                                              \
  if (notified) {                                                                                  \
    prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_##name, (unsigned char)(notify_at - n - 1), 0); \
    n++;                                                                                           \
  }
  SV_SYSCALLS(JUMP_IF)
#undef JUMP_IF
  /* pad so the three verdicts sit at fixed places */
  while (n < total - 2) prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
  prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
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
