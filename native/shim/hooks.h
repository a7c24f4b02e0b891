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
  X(void, closefrom, (int lowfd))                                                        \
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
  /* glibc's resolver (res.c); the __res_* names are what binaries built before glibc  \
   * 2.34 import (libresolv's then, compat symbols of libc's now) */                     \
  X(int, __res_init, (void))                                                             \
  X(int, __res_ninit, (res_state statp))                                                 \
  X(int, res_query, (const char *name, int class, int type, unsigned char *answer,       \
                     int anslen))                                                        \
  X(int, res_search, (const char *name, int class, int type, unsigned char *answer,      \
                      int anslen))                                                       \
  X(int, res_querydomain, (const char *name, const char *domain, int class, int type,    \
                           unsigned char *answer, int anslen))                           \
  X(int, res_send, (const unsigned char *msg, int msglen, unsigned char *answer,         \
                    int anslen))                                                         \
  X(int, res_nquery, (res_state statp, const char *name, int class, int type,            \
                      unsigned char *answer, int anslen))                                \
  X(int, res_nsearch, (res_state statp, const char *name, int class, int type,           \
                       unsigned char *answer, int anslen))                               \
  X(int, res_nquerydomain, (res_state statp, const char *name, const char *domain,       \
                            int class, int type, unsigned char *answer, int anslen))     \
  X(int, res_nsend, (res_state statp, const unsigned char *msg, int msglen,              \
                     unsigned char *answer, int anslen))                                 \
  X(int, __res_query, (const char *name, int class, int type, unsigned char *answer,     \
                       int anslen))                                                      \
  X(int, __res_search, (const char *name, int class, int type, unsigned char *answer,    \
                        int anslen))                                                     \
  X(int, __res_querydomain, (const char *name, const char *domain, int class, int type,  \
                             unsigned char *answer, int anslen))                         \
  X(int, __res_send, (const unsigned char *msg, int msglen, unsigned char *answer,       \
                      int anslen))                                                       \
  X(int, __res_nquery, (res_state statp, const char *name, int class, int type,          \
                        unsigned char *answer, int anslen))                              \
  X(int, __res_nsearch, (res_state statp, const char *name, int class, int type,         \
                         unsigned char *answer, int anslen))                             \
  X(int, __res_nquerydomain, (res_state statp, const char *name, const char *domain,     \
                              int class, int type, unsigned char *answer, int anslen))   \
  X(int, __res_nsend, (res_state statp, const unsigned char *msg, int msglen,            \
                       unsigned char *answer, int anslen))                               \
  /* pod files: opens (files_open.c, files_stdio.c, files_temp.c) */                     \
  X(int, open, (const char *path, int flags, ...))                                       \
  X(int, open64, (const char *path, int flags, ...))                                     \
  X(int, openat, (int dirfd, const char *path, int flags, ...))                          \
  X(int, openat64, (int dirfd, const char *path, int flags, ...))                        \
  X(int, __open_2, (const char *path, int flags))                                        \
  X(int, __open64_2, (const char *path, int flags))                                      \
  X(int, __openat_2, (int dirfd, const char *path, int flags))                           \
  X(int, __openat64_2, (int dirfd, const char *path, int flags))                         \
  X(int, creat, (const char *path, mode_t mode))                                         \
  X(int, creat64, (const char *path, mode_t mode))                                       \
  X(FILE *, fopen, (const char *__restrict path, const char *__restrict mode))           \
  X(FILE *, fopen64, (const char *__restrict path, const char *__restrict mode))         \
  X(FILE *, freopen, (const char *__restrict path, const char *__restrict mode,          \
                      FILE *__restrict stream))                                          \
  X(FILE *, freopen64, (const char *__restrict path, const char *__restrict mode,        \
                        FILE *__restrict stream))                                        \
  X(int, fclose, (FILE *stream))                                                         \
  X(int, mkstemp, (char *tmpl))                                                          \
  X(int, mkstemp64, (char *tmpl))                                                        \
  X(int, mkostemp, (char *tmpl, int flags))                                              \
  X(int, mkostemp64, (char *tmpl, int flags))                                            \
  X(int, mkstemps, (char *tmpl, int suffixlen))                                          \
  X(int, mkstemps64, (char *tmpl, int suffixlen))                                        \
  X(int, mkostemps, (char *tmpl, int suffixlen, int flags))                              \
  X(int, mkostemps64, (char *tmpl, int suffixlen, int flags))                            \
  /* pod files: metadata (files_stat.c, files_paths.c) */                                \
  X(int, stat, (const char *__restrict path, struct stat *__restrict buf))               \
  X(int, stat64, (const char *__restrict path, struct stat64 *__restrict buf))           \
  X(int, lstat, (const char *__restrict path, struct stat *__restrict buf))              \
  X(int, lstat64, (const char *__restrict path, struct stat64 *__restrict buf))          \
  X(int, fstat, (int fd, struct stat *buf))                                              \
  X(int, fstat64, (int fd, struct stat64 *buf))                                          \
  X(int, fstatat, (int dirfd, const char *__restrict path, struct stat *__restrict buf,  \
                   int flags))                                                           \
  X(int, fstatat64, (int dirfd, const char *__restrict path,                             \
                     struct stat64 *__restrict buf, int flags))                          \
  X(int, __xstat, (int ver, const char *path, struct stat *buf))                         \
  X(int, __xstat64, (int ver, const char *path, struct stat64 *buf))                     \
  X(int, __lxstat, (int ver, const char *path, struct stat *buf))                        \
  X(int, __lxstat64, (int ver, const char *path, struct stat64 *buf))                    \
  X(int, __fxstat, (int ver, int fd, struct stat *buf))                                  \
  X(int, __fxstat64, (int ver, int fd, struct stat64 *buf))                              \
  X(int, __fxstatat, (int ver, int dirfd, const char *path, struct stat *buf, int flags)) \
  X(int, __fxstatat64, (int ver, int dirfd, const char *path, struct stat64 *buf,        \
                        int flags))                                                      \
  X(int, statx, (int dirfd, const char *__restrict path, int flags, unsigned int mask,   \
                 struct statx *__restrict buf))                                          \
  X(long, syscall, (long number, ...))                                                   \
  X(int, io_uring_setup, (unsigned int entries, void *params)) /* liburing's (unseen.c) */ \
  X(int, access, (const char *path, int mode))                                           \
  X(int, faccessat, (int dirfd, const char *path, int mode, int flags))                  \
  X(int, euidaccess, (const char *path, int mode))                                       \
  X(int, eaccess, (const char *path, int mode))                                          \
  X(ssize_t, readlink, (const char *__restrict path, char *__restrict buf, size_t size)) \
  X(ssize_t, readlinkat, (int dirfd, const char *__restrict path, char *__restrict buf,  \
                          size_t size))                                                  \
  X(char *, realpath, (const char *__restrict path, char *__restrict resolved))          \
  X(char *, canonicalize_file_name, (const char *path))                                  \
  X(ssize_t, getxattr, (const char *path, const char *name, void *value, size_t size))   \
  X(ssize_t, lgetxattr, (const char *path, const char *name, void *value, size_t size))  \
  X(ssize_t, listxattr, (const char *path, char *list, size_t size))                     \
  X(ssize_t, llistxattr, (const char *path, char *list, size_t size))                    \
  /* pod files: changes, write mode (files_change.c) */                                  \
  X(int, mkdir, (const char *path, mode_t mode))                                         \
  X(int, mkdirat, (int dirfd, const char *path, mode_t mode))                            \
  X(int, unlink, (const char *path))                                                     \
  X(int, unlinkat, (int dirfd, const char *path, int flags))                             \
  X(int, rmdir, (const char *path))                                                      \
  X(int, rename, (const char *from, const char *to))                                     \
  X(int, renameat, (int fromfd, const char *from, int tofd, const char *to))             \
  X(int, renameat2, (int fromfd, const char *from, int tofd, const char *to,             \
                     unsigned int flags))                                                \
  X(int, truncate, (const char *path, off_t size))                                       \
  X(int, truncate64, (const char *path, off64_t size))                                   \
  /* pod files: content of lazily filled descriptors (rfile.c) */                        \
  X(ssize_t, read, (int fd, void *buf, size_t n))                                        \
  X(ssize_t, pread, (int fd, void *buf, size_t n, off_t off))                            \
  X(ssize_t, pread64, (int fd, void *buf, size_t n, off64_t off))                        \
  X(ssize_t, readv, (int fd, const struct iovec *iov, int n))                            \
  X(ssize_t, preadv, (int fd, const struct iovec *iov, int n, off_t off))                \
  X(ssize_t, preadv64, (int fd, const struct iovec *iov, int n, off64_t off))            \
  X(ssize_t, preadv2, (int fd, const struct iovec *iov, int n, off_t off, int flags))    \
  X(ssize_t, preadv64v2, (int fd, const struct iovec *iov, int n, off64_t off,           \
                          int flags))                                                    \
  X(void *, mmap, (void *addr, size_t len, int prot, int flags, int fd, off_t off))      \
  X(void *, mmap64, (void *addr, size_t len, int prot, int flags, int fd, off64_t off))  \
  X(ssize_t, sendfile, (int out, int in, off_t *off, size_t n))                          \
  X(ssize_t, sendfile64, (int out, int in, off64_t *off, size_t n))                      \
  X(ssize_t, copy_file_range, (int in, off64_t *in_off, int out, off64_t *out_off,       \
                               size_t n, unsigned int flags))                            \
  X(ssize_t, splice, (int in, off64_t *in_off, int out, off64_t *out_off, size_t n,      \
                      unsigned int flags))                                               \
  X(int, fsync, (int fd))                                                                \
  X(int, fdatasync, (int fd))                                                            \
  /* pod files: directories (dirs.c) */                                                  \
  X(DIR *, opendir, (const char *path))                                                  \
  X(DIR *, fdopendir, (int fd))                                                          \
  X(struct dirent *, readdir, (DIR *d))                                                  \
  X(struct dirent64 *, readdir64, (DIR *d))                                              \
  X(int, readdir_r, (DIR *__restrict d, struct dirent *__restrict entry,                 \
                     struct dirent **__restrict result))                                 \
  X(int, readdir64_r, (DIR *__restrict d, struct dirent64 *__restrict entry,             \
                       struct dirent64 **__restrict result))                             \
  X(int, closedir, (DIR *d))                                                             \
  X(int, dirfd, (DIR *d))                                                                \
  X(void, rewinddir, (DIR *d))                                                           \
  X(long, telldir, (DIR *d))                                                             \
  X(void, seekdir, (DIR *d, long loc))                                                   \
  X(int, scandir, (const char *__restrict path, struct dirent ***__restrict namelist,    \
                   int (*filter)(const struct dirent *),                                 \
                   int (*compar)(const struct dirent **, const struct dirent **)))       \
  X(int, scandir64, (const char *__restrict path, struct dirent64 ***__restrict namelist, \
                     int (*filter)(const struct dirent64 *),                             \
                     int (*compar)(const struct dirent64 **, const struct dirent64 **))) \
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
  X(int, execveat, (int fd, const char *path, char *const argv[], char *const envp[],    \
                    int flags))                                                          \
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
