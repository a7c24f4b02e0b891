/*
 * Checks of libtsmirror.so against the fake session proxy (test/shim/fake-proxy.ts). Run
 * through run.sh, which sets LD_PRELOAD and TSMIRROR_SOCK. Prints one machine-readable
 * line per check (see check() below); exits 1 if any failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <resolv.h>
#include <arpa/nameser.h>
#include <stdarg.h>
#include <stdbool.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
static const char *section; /* the test_* function running, named on every line */

/* "ok<TAB>SECTION / NAME" or "FAIL<TAB>SECTION / NAME<TAB>detail [shimtest.c:LINE]". NAME
 * is a fixed string (test/shim/shim.test.ts lists every one, so a check that silently
 * stops running fails there); what was seen goes into the detail. A check repeated in a
 * loop prints its name once per round. */
static void __attribute__((format(printf, 4, 5))) check(int ok, const char *name, int line, const char *fmt, ...) {
  if (ok) {
    printf("ok\t%s / %s\n", section, name);
    return;
  }
  failures++;
  printf("FAIL\t%s / %s\t", section, name);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf(" [%s:%d]\n", __FILE__, line);
}
/* CHECK(condition, name) or CHECK(condition, name, detail format, ...); without a detail
 * the format is "", which is what -Wformat-zero-length would complain about. */
#pragma GCC diagnostic ignored "-Wformat-zero-length"
#define CHECK(cond, name, ...) check(!!(cond), name, __LINE__, "" __VA_ARGS__)

static struct sockaddr_in in4(const char *ip, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

/* Connects to the echo server at 10.250.0.1:7 and checks a round trip. */
static int echo_roundtrip(const char *msg) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = in4("10.250.0.1", 7);
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    close(s);
    return -1;
  }
  char buf[64] = {0};
  size_t n = strlen(msg);
  if (write(s, msg, n) != (ssize_t)n || recv(s, buf, n, MSG_WAITALL) < (ssize_t)n ||
      strncmp(buf, msg, n) != 0) {
    close(s);
    return -1;
  }
  close(s);
  return 0;
}

static void test_tcp(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = in4("10.250.0.1", 7);
  errno = 4242;
  int r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r == 0 && errno == 4242, "blocking connect succeeds, errno preserved", "r=%d errno=%d", r, errno);
  struct sockaddr_in peer, me;
  socklen_t len = sizeof peer;
  getpeername(s, (struct sockaddr *)&peer, &len);
  CHECK(len == sizeof peer && peer.sin_addr.s_addr == a.sin_addr.s_addr && peer.sin_port == htons(7),
        "getpeername reports the requested address");
  len = sizeof me;
  getsockname(s, (struct sockaddr *)&me, &len);
  char ip[64];
  inet_ntop(AF_INET, &me.sin_addr, ip, sizeof ip);
  CHECK(strcmp(ip, "10.244.1.5") == 0, "getsockname reports the pod-side address", "%s", ip);
  /* short buffer: truncated copy, full length reported */
  char tiny[4];
  len = sizeof tiny;
  getpeername(s, (struct sockaddr *)tiny, &len);
  CHECK(len == sizeof(struct sockaddr_in), "getpeername with a short buffer reports the full length");
  close(s);
  /* connect() given a sockaddr_storage-sized length: getpeername still reports 16 */
  s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_storage big;
  memset(&big, 0, sizeof big);
  memcpy(&big, &a, sizeof a);
  connect(s, (struct sockaddr *)&big, sizeof big);
  len = sizeof big;
  getpeername(s, (struct sockaddr *)&big, &len);
  CHECK(len == sizeof(struct sockaddr_in), "peer length follows the family", "%u", (unsigned)len);

  int d = dup(s);
  len = sizeof peer;
  memset(&peer, 0, sizeof peer);
  getpeername(d, (struct sockaddr *)&peer, &len);
  CHECK(peer.sin_addr.s_addr == a.sin_addr.s_addr, "dup copies the peer");
  int d2 = fcntl(s, F_DUPFD_CLOEXEC, 100);
  memset(&peer, 0, sizeof peer);
  len = sizeof peer;
  getpeername(d2, (struct sockaddr *)&peer, &len);
  CHECK(d2 >= 100 && peer.sin_addr.s_addr == a.sin_addr.s_addr, "F_DUPFD_CLOEXEC copies the peer");
  close(d2);
  close(d);
  close(s);

  s = socket(AF_INET, SOCK_STREAM, 0);
  a = in4("10.250.0.1", 81);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r < 0 && errno == ECONNREFUSED, "remote refusal is ECONNREFUSED", "errno=%d", errno);
  close(s);

  s = socket(AF_INET, SOCK_STREAM, 0);
  a = in4("10.250.9.9", 80);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r < 0 && errno == ENETUNREACH, "proxy's errno passes through", "ENETUNREACH, errno=%d", errno);
  close(s);

  /* v6 socket to a v4-mapped address */
  s = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(7)};
  inet_pton(AF_INET6, "::ffff:10.250.0.1", &a6.sin6_addr);
  r = connect(s, (struct sockaddr *)&a6, sizeof a6);
  struct sockaddr_in6 p6;
  len = sizeof p6;
  getpeername(s, (struct sockaddr *)&p6, &len);
  CHECK(r == 0 && memcmp(&p6.sin6_addr, &a6.sin6_addr, 16) == 0, "AF_INET6 socket to a v4-mapped address");
  char buf[8] = {0};
  r = (int)write(s, "v6", 2);
  recv(s, buf, 2, MSG_WAITALL);
  CHECK(strcmp(buf, "v6") == 0, "data flows on the v6 socket");
  close(s);
}

static void test_nonblocking(void) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in a = in4("10.250.0.1", 7);
  int r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r < 0 && errno == EINPROGRESS, "non-blocking connect gives EINPROGRESS", "r=%d errno=%d", r, errno);
  CHECK(fcntl(s, F_GETFL) & O_NONBLOCK, "socket stays non-blocking");
  struct pollfd p = {.fd = s, .events = POLLOUT};
  poll(&p, 1, 5000);
  int err = -1;
  socklen_t len = sizeof err;
  getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
  CHECK(err == 0, "connection completes", "SO_ERROR=%d", err);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK((r == 0 || errno == EISCONN), "second connect does not open a new remote connection", "r=%d errno=%d", r, errno);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r < 0 && errno == EISCONN, "third connect: EISCONN", "errno=%d", errno);
  close(s);
}

static void test_udp(void) {
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  struct timeval tv = {5, 0};
  setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = in4("10.250.0.1", 7), from;
  socklen_t len = sizeof from;
  char buf[64] = {0};
  ssize_t n = sendto(u, "one", 3, 0, (struct sockaddr *)&a, sizeof a);
  n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
  CHECK(n == 3 && from.sin_addr.s_addr == a.sin_addr.s_addr && from.sin_port == a.sin_port,
        "sendto/recvfrom through the relay, source rewritten");

  struct iovec iov = {(void *)"two", 3};
  struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iov, .msg_iovlen = 1};
  sendmsg(u, &m, 0);
  struct iovec riov = {buf, sizeof buf};
  struct msghdr rm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov, .msg_iovlen = 1};
  memset(&from, 0, sizeof from);
  n = recvmsg(u, &rm, 0);
  CHECK(n == 3 && from.sin_addr.s_addr == a.sin_addr.s_addr, "sendmsg/recvmsg");

  struct mmsghdr mm[2];
  struct iovec iv[2] = {{(void *)"m1", 2}, {(void *)"m2", 2}};
  for (int i = 0; i < 2; i++)
    mm[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &iv[i], .msg_iovlen = 1}};
  int sent = sendmmsg(u, mm, 2, 0);
  CHECK(sent == 2 && mm[0].msg_len == 2, "sendmmsg sends both", "%d", sent);
  struct sockaddr_in froms[2];
  char b2[2][16];
  struct iovec riv[2] = {{b2[0], 16}, {b2[1], 16}};
  for (int i = 0; i < 2; i++)
    mm[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &froms[i], .msg_namelen = sizeof froms[i], .msg_iov = &riv[i], .msg_iovlen = 1}};
  int got = 0;
  while (got < 2) {
    int r = recvmmsg(u, mm + got, 2 - got, 0, NULL);
    if (r <= 0) break;
    got += r;
  }
  CHECK(got == 2 && froms[0].sin_addr.s_addr == a.sin_addr.s_addr && froms[1].sin_port == htons(7),
        "recvmmsg rewrites every source");

  /* connected UDP (what c-ares does): connect, write, recvfrom */
  int c = socket(AF_INET, SOCK_DGRAM, 0);
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  connect(c, (struct sockaddr *)&a, sizeof a);
  n = write(c, "cw", 2);
  len = sizeof from;
  memset(&from, 0, sizeof from);
  n = recvfrom(c, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
  socklen_t plen = sizeof(struct sockaddr_in);
  struct sockaddr_in peer;
  getpeername(c, (struct sockaddr *)&peer, &plen);
  CHECK(n == 2 && from.sin_addr.s_addr == a.sin_addr.s_addr && peer.sin_port == htons(7),
        "connected UDP socket: write + recvfrom, getpeername");
  struct sockaddr unspec = {.sa_family = AF_UNSPEC};
  connect(c, &unspec, sizeof unspec);
  plen = sizeof peer;
  CHECK(getpeername(c, (struct sockaddr *)&peer, &plen) < 0 && errno == ENOTCONN,
        "AF_UNSPEC connect dissolves the association");
  close(c);
  close(u);

  int lu = socket(AF_INET, SOCK_DGRAM, 0), ls = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in la = in4("127.0.0.1", 0);
  bind(ls, (struct sockaddr *)&la, sizeof la);
  len = sizeof la;
  getsockname(ls, (struct sockaddr *)&la, &len);
  sendto(lu, "lo", 2, 0, (struct sockaddr *)&la, sizeof la);
  n = recv(ls, buf, sizeof buf, 0);
  CHECK(n == 2, "UDP to loopback stays local");
  close(lu);
  close(ls);
}

static void addrinfo_shape(const struct addrinfo *ai, char *out, size_t cap) {
  out[0] = 0;
  for (; ai; ai = ai->ai_next) {
    char ip[64] = "";
    int port = 0;
    if (ai->ai_family == AF_INET) {
      inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)ai->ai_addr)->sin_port);
    } else {
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)ai->ai_addr)->sin6_port);
    }
    size_t l = strlen(out);
    snprintf(out + l, cap - l, "[%d %d %d %s %d %u]", ai->ai_family, ai->ai_socktype,
             ai->ai_protocol, ip, port, (unsigned)ai->ai_addrlen);
  }
}

/* The shim's list for "db" must have exactly the shape glibc gives for "10.250.0.1". */
static void compare_with_glibc(const char *service, int family, int socktype, int protocol, int flags) {
  struct addrinfo h = {.ai_family = family, .ai_socktype = socktype, .ai_protocol = protocol, .ai_flags = flags};
  struct addrinfo *ours = NULL, *theirs = NULL;
  int r1 = getaddrinfo("db", service, &h, &ours);
  int r2 = getaddrinfo("10.250.0.1", service, &h, &theirs);
  char s1[1024] = "", s2[1024] = "";
  if (!r1) addrinfo_shape(ours, s1, sizeof s1);
  if (!r2) addrinfo_shape(theirs, s2, sizeof s2);
  CHECK(r1 == r2 && strcmp(s1, s2) == 0, "getaddrinfo(db) has glibc's shape for 10.250.0.1, every hint",
        "service %s, fam %d type %d proto %d flags %#x: %d %s | %d %s",
        service ? service : "NULL", family, socktype, protocol, flags, r1, s1, r2, s2);
  if (!r1) freeaddrinfo(ours);
  if (!r2) freeaddrinfo(theirs);
}

static void test_getaddrinfo(void) {
  const char *services[] = {NULL, "80", "http", "domain", "nonexistent", "99999", "-1", " 80"};
  int types[][2] = {{0, 0}, {SOCK_STREAM, 0}, {SOCK_DGRAM, 0}, {SOCK_RAW, 0}, {0, IPPROTO_TCP},
                    {0, IPPROTO_UDP}, {SOCK_STREAM, IPPROTO_UDP}, {0, 99}, {SOCK_SEQPACKET, 0}, {0, IPPROTO_SCTP}};
  for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
      compare_with_glibc(services[i], AF_UNSPEC, types[t][0], types[t][1], 0);
  compare_with_glibc("80", AF_INET, SOCK_STREAM, 0, 0);
  compare_with_glibc("http", AF_INET, SOCK_STREAM, 0, AI_NUMERICSERV);
  compare_with_glibc("80", AF_INET, SOCK_STREAM, 0, AI_NUMERICSERV | AI_PASSIVE | AI_ADDRCONFIG);

  struct addrinfo h = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_CANONNAME}, *res = NULL;
  int r = getaddrinfo("db", "80", &h, &res);
  CHECK(r == 0 && res->ai_canonname && strcmp(res->ai_canonname, "db.default.svc.cluster.local") == 0,
        "AI_CANONNAME gives the pod's canonical name");
  if (!r) freeaddrinfo(res);
  h = (struct addrinfo){.ai_family = AF_INET6, .ai_socktype = SOCK_STREAM, .ai_flags = AI_V4MAPPED};
  r = getaddrinfo("db", "80", &h, &res);
  char s[512] = "";
  if (!r) addrinfo_shape(res, s, sizeof s), freeaddrinfo(res);
  CHECK(r == 0 && strstr(s, "::ffff:10.250.0.1"), "AI_V4MAPPED maps v4 answers", "%s", s);
  r = getaddrinfo("nx.test", "80", NULL, &res);
  CHECK(r == EAI_NONAME, "missing name: EAI_NONAME", "%d", r);
  r = getaddrinfo("again.test", NULL, NULL, &res);
  CHECK(r == EAI_AGAIN, "EAI_AGAIN passes through", "%d", r);
  h = (struct addrinfo){.ai_flags = AI_NUMERICHOST};
  r = getaddrinfo("db", NULL, &h, &res);
  CHECK(r == EAI_NONAME, "AI_NUMERICHOST goes to the real resolver", "%d", r);
  h = (struct addrinfo){.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM};
  r = getaddrinfo(NULL, "8080", &h, &res);
  CHECK(r == 0 && res->ai_family == AF_INET, "NULL node + AI_PASSIVE: glibc's answer");
  if (!r) freeaddrinfo(res);
  errno = 777;
  r = getaddrinfo("localhost", "80", NULL, &res);
  CHECK(r == 0 && errno == 777, "local names use the real resolver, errno preserved");
  if (!r) freeaddrinfo(res);
}

static void test_hostent(void) {
  struct hostent *he = gethostbyname("db");
  CHECK(he && he->h_addrtype == AF_INET && he->h_addr_list[0] && !he->h_addr_list[1] &&
            strcmp(he->h_name, "db.default.svc.cluster.local") == 0,
        "gethostbyname");
  he = gethostbyname2("v6.test", AF_INET6);
  CHECK(he && he->h_length == 16, "gethostbyname2 AF_INET6");
  he = gethostbyname("nx.test");
  CHECK(!he && h_errno == HOST_NOT_FOUND, "gethostbyname miss: HOST_NOT_FOUND", "%d", h_errno);
  he = gethostbyname("again.test");
  CHECK(!he && h_errno == TRY_AGAIN, "gethostbyname: TRY_AGAIN", "%d", h_errno);

  struct hostent ret, *result;
  char buf[1024];
  int herr = 0;
  int r = gethostbyname_r("web", &ret, buf, sizeof buf, &result, &herr);
  CHECK(r == 0 && result == &ret && ret.h_addr_list[0], "gethostbyname_r");
  r = gethostbyname_r("web", &ret, buf, 8, &result, &herr);
  CHECK(r == ERANGE && result == NULL, "gethostbyname_r small buffer: ERANGE", "%d", r);
  r = gethostbyname_r("nx.test", &ret, buf, sizeof buf, &result, &herr);
  CHECK(r == 0 && result == NULL && herr == HOST_NOT_FOUND, "gethostbyname_r miss", "%d %d", r, herr);
  r = gethostbyname2_r("db", AF_INET6, &ret, buf, sizeof buf, &result, &herr);
  CHECK(result == NULL && herr == NO_DATA, "gethostbyname2_r wrong family: NO_DATA", "%d", herr);

  struct in_addr a;
  inet_pton(AF_INET, "10.250.0.1", &a);
  he = gethostbyaddr(&a, 4, AF_INET);
  CHECK(he && strcmp(he->h_name, "db.default.svc.cluster.local") == 0, "gethostbyaddr");
  r = gethostbyaddr_r(&a, 4, AF_INET, &ret, buf, sizeof buf, &result, &herr);
  CHECK(r == 0 && result && strcmp(ret.h_name, "db.default.svc.cluster.local") == 0, "gethostbyaddr_r");

  struct sockaddr_in sa = in4("10.250.0.1", 80);
  char host[256], serv[32];
  r = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, serv, sizeof serv, 0);
  CHECK(r == 0 && strcmp(host, "db.default.svc.cluster.local") == 0 && strcmp(serv, "http") == 0,
        "getnameinfo remote", "%s %s", host, serv);
  r = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, 5, NULL, 0, 0);
  CHECK(r == EAI_OVERFLOW, "getnameinfo small host buffer: EAI_OVERFLOW");
  sa = in4("10.250.0.9", 80);
  r = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, NULL, 0, 0);
  CHECK(r == 0 && strcmp(host, "10.250.0.9") == 0, "getnameinfo no PTR: numeric fallback");
  r = getnameinfo((struct sockaddr *)&sa, sizeof sa, host, sizeof host, NULL, 0, NI_NAMEREQD);
  CHECK(r == EAI_NONAME, "getnameinfo NI_NAMEREQD: EAI_NONAME");
}

static void test_fds(void) {
  int before = count_fds();
  CHECK(echo_roundtrip("a") == 0, "round trip before");
  /* The shim's fds are the high ones (log and this thread's channel). */
  int mine[8], n = 0;
  for (int fd = 1000; fd < 70000 && n < 8; fd++)
    if (fcntl(fd, F_GETFD) >= 0) mine[n++] = fd;
  CHECK(n >= 1 && mine[0] > 2, "found the shim's fds, above 2", "%d fd(s), first %d", n, n ? mine[0] : -1);
  for (int i = 0; i < n; i++) {
    CHECK(fcntl(mine[i], F_GETFD) & FD_CLOEXEC, "shim fd is close-on-exec", "fd %d", mine[i]);
    CHECK(close(mine[i]) < 0 && errno == EBADF, "close(shim fd) pretends EBADF", "fd %d", mine[i]);
    CHECK(dup(mine[i]) < 0 && errno == EBADF, "dup(shim fd) pretends EBADF", "fd %d", mine[i]);
    CHECK(fcntl(mine[i], F_DUPFD, 0) < 0 && errno == EBADF, "F_DUPFD(shim fd) pretends EBADF", "fd %d", mine[i]);
  }
  int p[2];
  pipe(p);
  for (int i = 0; i < n; i++) {
    CHECK(dup2(p[0], mine[i]) == mine[i], "dup2 onto a shim fd succeeds", "fd %d", mine[i]);
    CHECK(echo_roundtrip("b") == 0, "channel still works after dup2 onto a shim fd", "fd %d", mine[i]);
    close(mine[i]);
  }
  for (int i = 0; i < n; i++) {
    CHECK(dup3(p[1], mine[i], O_CLOEXEC) == mine[i], "dup3 onto a shim fd succeeds", "fd %d", mine[i]);
    CHECK(echo_roundtrip("b") == 0, "channel still works after dup3 onto a shim fd", "fd %d", mine[i]);
    close(mine[i]);
  }
  close(p[0]);
  close(p[1]);
  CHECK(close_range(3, ~0U, 0) == 0, "close_range(3, ~0U)");
  CHECK(echo_roundtrip("c") == 0, "channel survives close_range");
  CHECK(count_fds() <= before, "no fd leak", "before %d, after %d", before, count_fds());
}

static void test_listen(void) {
  int a = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in me = in4("127.0.0.1", 0);
  errno = 4242;
  CHECK(bind(a, (struct sockaddr *)&me, sizeof me) == 0 && listen(a, 8) == 0 && errno == 4242,
        "listen subscribes (proxy: remote), errno preserved");
  socklen_t len = sizeof me;
  getsockname(a, (struct sockaddr *)&me, &len);
  int port = ntohs(me.sin_port);

  int b = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in want = in4("127.0.0.1", port), got;
  errno = 4242;
  int r = bind(b, (struct sockaddr *)&want, sizeof want);
  CHECK(r == 0 && errno == 4242, "bind to a port taken here succeeds elsewhere", "r=%d errno=%d", r, errno);
  len = sizeof got;
  getsockname(b, (struct sockaddr *)&got, &len);
  CHECK(ntohs(got.sin_port) == port, "getsockname shows the port asked for", "%d", ntohs(got.sin_port));
  r = listen(b, 8);
  CHECK(r < 0 && errno == EADDRINUSE, "listen refused by the proxy fails with its errno", "r=%d errno=%d", r, errno);
  close(b);

  int c = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in from = in4("127.0.0.1", 31999), peer;
  bind(c, (struct sockaddr *)&from, sizeof from);
  CHECK(connect(c, (struct sockaddr *)&me, sizeof me) == 0, "connect to the listener");
  len = sizeof peer;
  int s = accept(a, (struct sockaddr *)&peer, &len);
  char ip[64] = "";
  inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
  CHECK(s >= 0 && len == sizeof peer && strcmp(ip, "10.250.0.9") == 0 && ntohs(peer.sin_port) == 5555,
        "accept reports the pod client", "%s:%d", ip, ntohs(peer.sin_port));
  len = sizeof peer;
  getpeername(s, (struct sockaddr *)&peer, &len);
  inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
  CHECK(strcmp(ip, "10.250.0.9") == 0, "getpeername agrees", "%s", ip);
  len = sizeof peer;
  getsockname(s, (struct sockaddr *)&peer, &len);
  inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
  CHECK(strcmp(ip, "10.244.1.5") == 0 && ntohs(peer.sin_port) == 8080, "getsockname is the pod side", "%s:%d", ip, ntohs(peer.sin_port));

  int d = socket(AF_INET, SOCK_STREAM, 0);
  connect(d, (struct sockaddr *)&me, sizeof me);
  len = sizeof peer;
  int s2 = accept4(a, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
  inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
  CHECK(s2 >= 0 && strcmp(ip, "127.0.0.1") == 0, "a plain local connection is reported as it is", "%s", ip);
  close(s2); close(d); close(s); close(c);

  /* A client binding a source port that is taken gets EADDRINUSE from connect(). */
  int f = socket(AF_INET, SOCK_STREAM, 0);
  errno = 4242;
  r = bind(f, (struct sockaddr *)&want, sizeof want);
  CHECK(r == 0 && errno == 4242, "bind to a taken port (deferred)");
  r = connect(f, (struct sockaddr *)&me, sizeof me);
  CHECK(r < 0 && errno == EADDRINUSE, "connect of a socket whose port is still taken: EADDRINUSE", "r=%d errno=%d", r, errno);
  close(f);

  close(a);
  int e = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(e, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bind(e, (struct sockaddr *)&want, sizeof want);
  CHECK(listen(e, 8) == 0, "close() unsubscribed: the port can be subscribed again", "errno %d", errno);
  close(e);
}

/* What the TypeScript codec writes at the edges of what the shim keeps. */
static void test_codec(void) {
  struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_CANONNAME}, *res = NULL;
  int r = getaddrinfo("many.test", "80", &h, &res), n = 0;
  for (struct addrinfo *ai = r ? NULL : res; ai; ai = ai->ai_next) n++;
  CHECK(r == 0 && n == 64 && strcmp(res->ai_canonname, "many.default.svc.cluster.local") == 0,
        "100 addresses: the first 64 are kept", "r=%d entries=%d", r, n);
  if (!r) freeaddrinfo(res);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = in4("10.250.0.1", 82);
  r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r < 0 && errno == ECONNREFUSED, "a refusal with a 320-character message", "r=%d errno=%d", r, errno);
  close(s);
  a = in4("10.250.0.2", 80);
  char host[1025] = "";
  r = getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0, NI_NAMEREQD);
  CHECK(r == 0 && strlen(host) == 214, "a 214-character reverse name", "r=%d length=%zu", r, strlen(host));
}

/* The shim's fds: the high ones (log, channels), ascending. */
static int shim_fds(int *out, int max) {
  int n = 0;
  for (int fd = 1000; fd < 70000 && n < max; fd++)
    if (fcntl(fd, F_GETFD) >= 0) out[n++] = fd;
  return n;
}

static int remote_lookup(void) {
  struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int r = getaddrinfo("db", "80", &h, &res);
  int ok = r == 0 && ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr == in4("10.250.0.1", 0).sin_addr.s_addr;
  if (!r) freeaddrinfo(res);
  return ok ? 0 : -1;
}

/* Descriptors closed where the close/close_range hooks do not see it: glibc's closefrom
 * (the close_range system call, inside libc) and a raw close_range syscall. */
static void test_closed_unseen(void) {
  CHECK(echo_roundtrip("u") == 0 && remote_lookup() == 0, "round trip before");
  int before[8], after[8];
  int n = shim_fds(before, 8);
  closefrom(3);
  int m = shim_fds(after, 8);
  CHECK(n >= 1 && m == n && memcmp(before, after, sizeof(int) * (size_t)n) == 0,
        "closefrom(3) leaves the shim's fds open", "%d fd(s) before, %d after", n, m);
  CHECK(echo_roundtrip("v") == 0, "after closefrom(3) a remote connect reaches the proxy");
  CHECK(remote_lookup() == 0, "after closefrom(3) a remote getaddrinfo reaches the proxy");

  n = shim_fds(before, 8);
  syscall(SYS_close_range, 3, ~0U, 0);
  /* The program opens files that get the shim's old numbers. */
  char path[8][64];
  int placed = 0;
  for (int i = 0; i < n; i++) {
    snprintf(path[i], sizeof path[i], "/tmp/tsmirror-shimtest-%d-%d", (int)getpid(), i);
    int f = open(path[i], O_RDWR | O_CREAT | O_TRUNC, 0600);
    (void)!write(f, "program data", 12);
    int g = fcntl(f, F_DUPFD, before[i]);
    close(f);
    placed += g == before[i];
  }
  CHECK(n >= 1 && placed == n, "the program's files get the shim's old numbers", "%d of %d", placed, n);
  CHECK(echo_roundtrip("w") == 0, "after a raw close_range a remote connect still works");
  CHECK(remote_lookup() == 0, "after a raw close_range a remote getaddrinfo still works");
  int fresh = 0;
  m = shim_fds(after, 8);
  for (int i = 0; i < m; i++) {
    bool old = false;
    for (int j = 0; j < n; j++) old |= after[i] == before[j];
    fresh += !old;
  }
  CHECK(fresh >= 1, "a new channel was opened", "fds now: %d", m);
  for (int i = 0; i < n; i++) {
    char buf[64] = "";
    ssize_t got = pread(before[i], buf, sizeof buf - 1, 0);
    struct stat st;
    fstat(before[i], &st);
    CHECK(got == 12 && strcmp(buf, "program data") == 0 && st.st_size == 12,
          "the program's file at a shim's old number holds only what it wrote", "fd %d: %zd bytes, \"%s\"", before[i], got, buf);
    CHECK(close(before[i]) == 0, "the program can close its file at a shim's old number", "fd %d errno %d", before[i], errno);
    unlink(path[i]);
  }
}

/* glibc's resolver (res.c) against the fake proxy's res.config / res.send. */

/* The first answer record of type `type` in a message: its rdata, or NULL. */
static const unsigned char *first_rdata(const unsigned char *msg, int len, int type, int *rdlen) {
  ns_msg m;
  ns_rr rr;
  if (len <= 0 || ns_initparse(msg, len, &m) < 0) return NULL;
  for (int i = 0; i < ns_msg_count(m, ns_s_an); i++) {
    if (ns_parserr(&m, ns_s_an, i, &rr) == 0 && (int)ns_rr_type(rr) == type) {
      *rdlen = ns_rr_rdlen(rr);
      return ns_rr_rdata(rr);
    }
  }
  return NULL;
}

static bool answer_is_a(const unsigned char *msg, int len, const char *ip) {
  int rdlen = 0;
  const unsigned char *rd = first_rdata(msg, len, ns_t_a, &rdlen);
  struct in_addr want;
  inet_pton(AF_INET, ip, &want);
  return rd && rdlen == 4 && memcmp(rd, &want, 4) == 0;
}

static void *res_thread_body(void *arg) {
  (void)arg;
  long bad = 0;
  unsigned char ans[1024];
  for (int i = 0; i < 50; i++) {
    int n = res_search("web", C_IN, ns_t_a, ans, sizeof ans);
    bad += !answer_is_a(ans, n, "10.250.0.1");
  }
  return (void *)bad;
}

/* A thread whose _res glibc set up itself (its getaddrinfo of a local name does) before the
 * program's first res_* call: 1 if that call still has the pod's settings and answer. */
static void *res_after_glibc_body(void *arg) {
  (void)arg;
  struct addrinfo *ai = NULL;
  if (getaddrinfo("localhost", "80", NULL, &ai) == 0) freeaddrinfo(ai);
  long glibc_set_up = (_res.options & RES_INIT) != 0;
  unsigned char ans[1024];
  int n = res_search("db", C_IN, ns_t_a, ans, sizeof ans);
  return (void *)(long)(answer_is_a(ans, n, "10.250.0.1") && _res.ndots == 5 ? 1 + glibc_set_up : 0);
}

static void test_res(void) {
  unsigned char ans[4096];
  errno = 1234;
  CHECK(res_init() == 0 && errno == 1234, "res_init succeeds, errno preserved");
  char ns0[INET_ADDRSTRLEN] = "", ns1[INET6_ADDRSTRLEN] = "";
  inet_ntop(AF_INET, &_res.nsaddr_list[0].sin_addr, ns0, sizeof ns0);
  if (_res._u._ext.nsaddrs[1]) inet_ntop(AF_INET6, &_res._u._ext.nsaddrs[1]->sin6_addr, ns1, sizeof ns1);
  CHECK(_res.nscount == 2 && !strcmp(ns0, "10.250.0.53") && !strcmp(ns1, "fd00::53"),
        "_res holds the pod's nameservers (IPv6 where glibc keeps them)", "%d %s %s", _res.nscount, ns0, ns1);
  CHECK(_res.ndots == 5 && _res.dnsrch[0] && !strcmp(_res.dnsrch[0], "default.svc.cluster.local") &&
        _res.dnsrch[2] && !strcmp(_res.dnsrch[2], "cluster.local") && !_res.dnsrch[3],
        "_res holds the pod's search list and ndots", "ndots %d", _res.ndots);

  errno = 4321;
  int n = res_search("db", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(answer_is_a(ans, n, "10.250.0.1") && errno == 4321, "res_search(db, A) applies the search list, errno preserved",
        "n %d h_errno %d errno %d", n, h_errno, errno);
  n = res_query("db", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(n == -1 && h_errno == HOST_NOT_FOUND, "res_query(db) asks the name as is: HOST_NOT_FOUND", "n %d h_errno %d", n, h_errno);
  n = res_query("db.default.svc.cluster.local", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(answer_is_a(ans, n, "10.250.0.1"), "res_query of the full name", "n %d h_errno %d", n, h_errno);
  n = res_querydomain("web", "default.svc.cluster.local", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(answer_is_a(ans, n, "10.250.0.1"), "res_querydomain", "n %d h_errno %d", n, h_errno);
  n = res_search("nothing-here", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(n == -1 && h_errno == HOST_NOT_FOUND, "res_search of an unknown name: HOST_NOT_FOUND", "n %d h_errno %d", n, h_errno);
  n = res_search("db", C_IN, ns_t_aaaa, ans, sizeof ans);
  CHECK(n == -1 && h_errno == NO_DATA, "res_search of a type the name lacks: NO_DATA", "n %d h_errno %d", n, h_errno);
  n = res_query("servfail.test", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(n == -1 && h_errno == TRY_AGAIN, "SERVFAIL: TRY_AGAIN", "n %d h_errno %d", n, h_errno);
  n = res_query("timeout.test", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(n == -1 && h_errno == TRY_AGAIN && errno == ETIMEDOUT, "no nameserver answers: TRY_AGAIN, errno ETIMEDOUT",
        "n %d h_errno %d errno %d", n, h_errno, errno);

  /* A state of the program's own, as PHP's dns_get_record uses one. */
  struct __res_state st;
  memset(&st, 0, sizeof st);
  CHECK(res_ninit(&st) == 0 && st.ndots == 5, "res_ninit of the program's own state gets the pod's settings");
  n = res_nsearch(&st, "db", C_IN, ns_t_srv, ans, sizeof ans);
  int rdlen = 0;
  const unsigned char *srv = first_rdata(ans, n, ns_t_srv, &rdlen);
  char target[NS_MAXDNAME] = "";
  if (srv && rdlen > 6) dn_expand(ans, ans + n, srv + 6, target, sizeof target);
  CHECK(srv && ns_get16(srv + 4) == 8080 && !strcmp(target, "db.default.svc.cluster.local"),
        "res_nsearch(db, SRV): port and target", "n %d h_errno %d target %s", n, st.res_h_errno, target);
  st.options &= ~(unsigned long)(RES_DNSRCH | RES_DEFNAMES);
  n = res_nsearch(&st, "db", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(n == -1 && st.res_h_errno == HOST_NOT_FOUND, "the program's options are honoured (no RES_DEFNAMES: no search)",
        "n %d h_errno %d", n, st.res_h_errno);
  res_nclose(&st);
  struct __res_state fresh;
  memset(&fresh, 0, sizeof fresh);
  n = res_nsearch(&fresh, "web", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(answer_is_a(ans, n, "10.250.0.1"), "a state never initialised is set up on first use", "n %d", n);
  res_nclose(&fresh);

  unsigned char q[512];
  int qlen = res_mkquery(ns_o_query, "db.default.svc.cluster.local", C_IN, ns_t_a, NULL, 0, NULL, q, sizeof q);
  n = res_send(q, qlen, ans, sizeof ans);
  CHECK(qlen > 0 && answer_is_a(ans, n, "10.250.0.1") && memcmp(ans, q, 2) == 0, "res_send of res_mkquery's message: the answer with its id",
        "n %d", n);
  n = res_query("big.default.svc.cluster.local", C_IN, ns_t_txt, ans, 512);
  CHECK(n == 512 && ((HEADER *)ans)->tc, "an answer larger than the buffer is cut to it with TC set", "n %d", n);

  int before = count_fds();
  pthread_t t[8];
  for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, res_thread_body, NULL);
  long bad = 0;
  for (int i = 0; i < 8; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += (long)r;
  }
  CHECK(bad == 0 && count_fds() == before, "8 threads x 50 res_search, each with its own _res; no fd leak", "%ld failed", bad);

  pthread_t th;
  void *got = NULL;
  pthread_create(&th, NULL, res_after_glibc_body, NULL);
  pthread_join(th, &got);
  CHECK((long)got > 0, "a thread's _res that glibc set up itself gets the pod's settings on first use",
        "result %ld (2: glibc had set it up)", (long)got);

  _res.options |= RES_USE_EDNS0;
  CHECK(res_init() == 0 && (_res.options & RES_USE_EDNS0) && _res.ndots == 5,
        "res_init keeps the options of a state already set up", "options %lx", (unsigned long)_res.options);
  n = res_search("db", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(answer_is_a(ans, n, "10.250.0.2"), "RES_USE_EDNS0: the query carries an OPT record", "n %d", n);
}

/* Run with TSMIRROR_SOCK pointing nowhere. */
static void test_unreachable(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = in4("10.250.0.1", 7);
  int r = connect(s, (struct sockaddr *)&a, sizeof a);
  CHECK(r < 0 && errno == ENETUNREACH, "connect fails with ENETUNREACH", "%d", errno);
  close(s);
  struct addrinfo *res;
  r = getaddrinfo("db", "80", NULL, &res);
  CHECK(r == EAI_AGAIN, "getaddrinfo gives EAI_AGAIN", "%d", r);
  struct hostent *he = gethostbyname("db");
  CHECK(!he && h_errno == TRY_AGAIN, "gethostbyname gives TRY_AGAIN");
  unsigned char ans[512];
  r = res_search("db", C_IN, ns_t_a, ans, sizeof ans);
  CHECK(r == -1 && h_errno == TRY_AGAIN, "res_search gives TRY_AGAIN (this machine's nameserver is not asked)", "%d %d", r, h_errno);
}

/* Run without TSMIRROR_SOCK: nothing is asked, loopback works, numeric lookups work. */
static void test_inert(void) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = in4("127.0.0.1", 0);
  bind(l, (struct sockaddr *)&a, sizeof a);
  listen(l, 1);
  socklen_t len = sizeof a;
  getsockname(l, (struct sockaddr *)&a, &len);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(connect(s, (struct sockaddr *)&a, sizeof a) == 0, "loopback connect works");
  close(s);
  close(l);
  struct addrinfo *res;
  CHECK(getaddrinfo("127.0.0.1", "80", NULL, &res) == 0, "numeric getaddrinfo works");
  freeaddrinfo(res);
  int hi = 0;
  for (int fd = 1000; fd < 70000; fd++) hi += fcntl(fd, F_GETFD) >= 0;
  CHECK(hi == 0, "the shim opened no fds");
  CHECK(res_init() == 0 && _res.nscount >= 1, "res_init is glibc's");
}

static void *thread_body(void *arg) {
  (void)arg;
  long bad = 0;
  for (int i = 0; i < 100; i++) bad += echo_roundtrip("t") != 0;
  return (void *)bad;
}

static void test_threads(void) {
  int before = count_fds();
  pthread_t t[32];
  for (int i = 0; i < 32; i++) pthread_create(&t[i], NULL, thread_body, NULL);
  long bad = 0;
  for (int i = 0; i < 32; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += (long)r;
  }
  int after = count_fds();
  CHECK(bad == 0, "32 threads x 100 connects", "%ld failed", bad);
  CHECK(after == before, "no fd leak after threads exit", "before %d, after %d", before, after);
}

static int wait_ok(pid_t pid) {
  int st;
  return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void test_processes(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(echo_roundtrip("child") == 0 && echo_roundtrip("c2") == 0 ? 0 : 1);
  CHECK(wait_ok(pid), "forked child gets its own channel");
  CHECK(echo_roundtrip("parent") == 0, "parent's channel still fine after fork");

  pid = vfork();
  if (pid == 0) {
    char *empty[] = {NULL};
    execle("/usr/bin/curl", "curl", "-sSf", "-o", "/dev/null", "http://db/vfork", (char *)NULL, empty);
    _exit(127);
  }
  CHECK(wait_ok(pid), "vfork + execle with an empty environment");

  char *argv[] = {"curl", "-sSf", "-o", "/dev/null", "http://db/spawn", NULL};
  char *empty[] = {NULL};
  int r = posix_spawnp(&pid, "curl", NULL, NULL, argv, empty);
  CHECK(r == 0 && wait_ok(pid), "posix_spawnp with an empty environment");
  char *other[] = {"LD_PRELOAD=/lib/x86_64-linux-gnu/libm.so.6", "TSMIRROR_SOCK=/wrong", NULL};
  r = posix_spawn(&pid, "/usr/bin/curl", NULL, NULL, argv, other);
  CHECK(r == 0 && wait_ok(pid), "posix_spawn with a foreign LD_PRELOAD and a wrong TSMIRROR_SOCK");

  pid = fork();
  if (pid == 0) {
    clearenv();
    execlp("sh", "sh", "-c", "curl -sSf -o /dev/null http://db/execlp", (char *)NULL);
    _exit(127);
  }
  CHECK(wait_ok(pid), "clearenv + execlp sh -c curl");
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *only = argc > 1 ? argv[1] : "";
#define RUN(name, by_default)                                          \
  if ((by_default && !*only) || !strcmp(only, #name)) {                \
    section = #name;                                                   \
    test_##name();                                                     \
  }
  RUN(tcp, true)
  RUN(nonblocking, true)
  RUN(udp, true)
  RUN(getaddrinfo, true)
  RUN(hostent, true)
  RUN(threads, true)
  RUN(processes, true)
  RUN(fds, true)
  RUN(listen, true)
  RUN(codec, true)
  RUN(closed_unseen, true)
  RUN(res, true)
  RUN(unreachable, false)
  RUN(inert, false)
  printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures != 0;
}
