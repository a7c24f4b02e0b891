/*
 * The one table of hooked libc functions (fakeroot style).
 *
 * Each row is X(return type, name, parameter list). The table is expanded into:
 *   - exported prototypes, so the compiler checks every hook against libc's own
 *     declaration (a wrong signature is a "conflicting types" error);
 *   - one `real_<name>` pointer per hook;
 *   - the dlsym(RTLD_NEXT) resolver loop in init.c.
 * Adding a hook is one row here plus its body.
 *
 * Sockaddr parameters use glibc's __SOCKADDR_ARG/__CONST_SOCKADDR_ARG because under
 * _GNU_SOURCE they are transparent unions; SHIM_SA() / SHIM_CSA() unwrap them.
 */
#ifndef TSMIRROR_HOOKS_H
#define TSMIRROR_HOOKS_H

#define SHIM_HOOKS(X)                                                                    \
  /* sockets (connect.c) */                                                              \
  X(int, socket, (int domain, int type, int protocol))                                   \
  X(int, socketpair, (int domain, int type, int protocol, int fds[2]))                  \
  X(int, accept, (int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len))               \
  X(int, accept4, (int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len, int flags))   \
  X(int, connect, (int fd, __CONST_SOCKADDR_ARG addr, socklen_t len))                    \
  X(int, getpeername, (int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len))          \
  X(int, getsockname, (int fd, __SOCKADDR_ARG addr, socklen_t *__restrict len))          \
  /* descriptors (fds.c) */                                                              \
  X(int, close, (int fd))                                                                \
  X(int, close_range, (unsigned int first, unsigned int last, int flags))                \
  X(int, dup, (int fd))                                                                  \
  X(int, dup2, (int fd, int fd2))                                                        \
  X(int, dup3, (int fd, int fd2, int flags))                                             \
  X(int, fcntl, (int fd, int cmd, ...))                                                  \
  X(int, fcntl64, (int fd, int cmd, ...))                                                \
  /* datagrams (udp.c) */                                                                \
  X(ssize_t, sendto, (int fd, const void *buf, size_t n, int flags,                      \
                      __CONST_SOCKADDR_ARG addr, socklen_t addr_len))                    \
  X(ssize_t, sendmsg, (int fd, const struct msghdr *msg, int flags))                     \
  X(int, sendmmsg, (int fd, struct mmsghdr *vec, unsigned int vlen, int flags))          \
  X(ssize_t, recvfrom, (int fd, void *__restrict buf, size_t n, int flags,               \
                        __SOCKADDR_ARG addr, socklen_t *__restrict addr_len))            \
  X(ssize_t, recvmsg, (int fd, struct msghdr *msg, int flags))                           \
  X(int, recvmmsg, (int fd, struct mmsghdr *vec, unsigned int vlen, int flags,           \
                    struct timespec *timeout))                                           \
  /* name resolution (getaddrinfo.c, hostent.c) */                                      \
  X(int, getaddrinfo, (const char *__restrict node, const char *__restrict service,      \
                       const struct addrinfo *__restrict hints,                          \
                       struct addrinfo **__restrict res))                                \
  X(void, freeaddrinfo, (struct addrinfo *ai))                                           \
  X(int, getnameinfo, (const struct sockaddr *__restrict sa, socklen_t salen,            \
                       char *__restrict host, socklen_t hostlen,                         \
                       char *__restrict serv, socklen_t servlen, int flags))             \
  X(struct hostent *, gethostbyname, (const char *name))                                 \
  X(struct hostent *, gethostbyname2, (const char *name, int af))                        \
  X(int, gethostbyname_r, (const char *__restrict name, struct hostent *__restrict ret,  \
                           char *__restrict buf, size_t buflen,                          \
                           struct hostent **__restrict result, int *__restrict h_errnop)) \
  X(int, gethostbyname2_r, (const char *__restrict name, int af,                         \
                            struct hostent *__restrict ret, char *__restrict buf,        \
                            size_t buflen, struct hostent **__restrict result,           \
                            int *__restrict h_errnop))                                   \
  X(struct hostent *, gethostbyaddr, (const void *addr, socklen_t len, int type))        \
  X(int, gethostbyaddr_r, (const void *__restrict addr, socklen_t len, int type,         \
                           struct hostent *__restrict ret, char *__restrict buf,         \
                           size_t buflen, struct hostent **__restrict result,            \
                           int *__restrict h_errnop))                                    \
  /* processes (exec.c) */                                                               \
  X(pid_t, fork, (void))                                                                 \
  X(pid_t, vfork, (void))                                                                \
  X(int, execve, (const char *path, char *const argv[], char *const envp[]))             \
  X(int, execv, (const char *path, char *const argv[]))                                  \
  X(int, execvp, (const char *file, char *const argv[]))                                 \
  X(int, execvpe, (const char *file, char *const argv[], char *const envp[]))            \
  X(int, execl, (const char *path, const char *arg, ...))                                \
  X(int, execlp, (const char *file, const char *arg, ...))                               \
  X(int, execle, (const char *path, const char *arg, ...))                               \
  X(int, fexecve, (int fd, char *const argv[], char *const envp[]))                      \
  X(int, posix_spawn, (pid_t *__restrict pid, const char *__restrict path,               \
                       const posix_spawn_file_actions_t *file_actions,                   \
                       const posix_spawnattr_t *__restrict attrp,                        \
                       char *const argv[], char *const envp[]))                          \
  X(int, posix_spawnp, (pid_t *__restrict pid, const char *__restrict file,              \
                        const posix_spawn_file_actions_t *file_actions,                  \
                        const posix_spawnattr_t *__restrict attrp,                       \
                        char *const argv[], char *const envp[]))                         \
  /* incoming traffic (listen.c) */                                                      \
  X(int, bind, (int fd, __CONST_SOCKADDR_ARG addr, socklen_t len))                       \
  X(int, listen, (int fd, int backlog))

#endif
