// tsmirror's native addon: the few things Node cannot do itself.
// (Also, for the CLI: holdListen/holdRelease, below, for non-blocking connects, and
// loopbackPeerOwner, which says whose socket the other end of a loopback connection is.)
// spawnCapture, for the agent's nft runs, is in spawn.cc.
//
// netnsSocket(nsFd, family, kind) creates a socket inside another network namespace.
// setns(CLONE_NEWNET) only affects the calling thread, and a socket keeps the namespace
// it was created in, so the calling thread enters the target namespace, creates the
// socket, and returns to the agent's own namespace before anything else runs on it.
// This is done synchronously on the JavaScript thread: the three system calls take a
// few microseconds, where a thread-pool round trip costs tens (and connect latency is
// what developers feel). If the thread cannot get back home the process aborts: a
// thread left in a pod's namespace would silently put later sockets there.
#include <napi.h>

#include <cerrno>
#include <poll.h>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <string>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <vector>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>

#include "addon.h"

namespace {

int g_home_netns = -1;  // the agent's own network namespace, opened once at load

Napi::Error ErrnoError(Napi::Env env, const char* what, int err) {
  auto e = Napi::Error::New(env, std::string(what) + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}

int CreateIn(int ns_fd, int family, int type, const char** what) {
  if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) != 0) {
    *what = "setns";
    return -errno;
  }
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (ns_fd >= 0 && setns(g_home_netns, CLONE_NEWNET) != 0) std::abort();
  if (fd < 0) {
    *what = "socket";
    return -err;
  }
  return fd;
}

Napi::Value NetnsSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsString()) {
    throw Napi::TypeError::New(env, "usage: netnsSocket(nsFd: number (-1 for own namespace), family: 4 | 6, kind: 'tcp' | 'udp')");
  }
  int ns_fd = info[0].As<Napi::Number>().Int32Value();
  int fam = info[1].As<Napi::Number>().Int32Value();
  std::string kind = info[2].As<Napi::String>().Utf8Value();
  if (fam != 4 && fam != 6) throw Napi::TypeError::New(env, "netnsSocket: family must be 4 or 6");
  if (kind != "tcp" && kind != "udp") throw Napi::TypeError::New(env, "netnsSocket: kind must be 'tcp' or 'udp'");
  if (ns_fd >= 0 && g_home_netns < 0) throw Napi::Error::New(env, "netnsSocket: the agent's own network namespace could not be opened at load");
  const char* what = "";
  int fd = CreateIn(ns_fd, fam == 4 ? AF_INET : AF_INET6, kind == "tcp" ? SOCK_STREAM : SOCK_DGRAM, &what);
  if (fd < 0) throw ErrnoError(env, what, -fd);
  return Napi::Number::New(env, fd);
}


// ---- Files confined to a pod's root (agent/files.ts) ----
//
// Every path is resolved by openat2(rootFd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
// where rootFd is /proc/<pid>/root opened O_PATH: "/" and ".." stop at the pod's root,
// absolute symlinks are resolved inside it, and /proc magic links (which could jump to
// the node's files) fail with ELOOP. Nothing here ever walks a path any other way.
// These calls are synchronous on the JavaScript thread: resolving a path on a local
// filesystem costs microseconds, less than a thread-pool round trip.

constexpr unsigned long long kConfined = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;

int OpenInRoot(int root_fd, const std::string& path, int flags, int mode) {
  struct open_how how {};
  how.flags = static_cast<unsigned long long>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? static_cast<unsigned long long>(mode & 07777) : 0;
  how.resolve = kConfined;
  long fd;
  do {
    fd = syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how);
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  return fd < 0 ? -errno : static_cast<int>(fd);
}

// Splits "a/b/c" into the parent ("a/b", or "/" for "/c") and the last name; the last
// name must be a real name (not "", "." or "..") for *at() calls on it to be safe.
bool SplitParent(std::string path, std::string* parent, std::string* name) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  auto slash = path.rfind('/');
  if (slash == std::string::npos) {
    *parent = ".";
    *name = path;
  } else {
    *parent = slash == 0 ? "/" : path.substr(0, slash);
    *name = path.substr(slash + 1);
  }
  return !name->empty() && *name != "." && *name != ".." && name->find('/') == std::string::npos;
}

void CheckArgs(const Napi::CallbackInfo& info, size_t n, const char* usage) {
  if (info.Length() != n || !info[0].IsNumber() || !info[1].IsString()) throw Napi::TypeError::New(info.Env(), usage);
  for (size_t i = 2; i < n; i++) {
    if (!info[i].IsNumber() && !info[i].IsString() && !info[i].IsBoolean()) throw Napi::TypeError::New(info.Env(), usage);
  }
}

Napi::Value OpenInRootJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "usage: openInRoot(rootFd: number, path: string, flags: number, mode: number)";
  CheckArgs(info, 4, usage);
  if (!info[2].IsNumber() || !info[3].IsNumber()) throw Napi::TypeError::New(env, usage);
  int fd = OpenInRoot(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::String>().Utf8Value(),
                      info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value());
  if (fd < 0) throw ErrnoError(env, "openat2", -fd);
  return Napi::Number::New(env, fd);
}

Napi::Value ReadlinkInRootJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckArgs(info, 2, "usage: readlinkInRoot(rootFd: number, path: string)");
  int fd = OpenInRoot(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::String>().Utf8Value(), O_PATH | O_NOFOLLOW, 0);
  if (fd < 0) throw ErrnoError(env, "openat2", -fd);
  std::vector<char> buf(4096);
  ssize_t n = readlinkat(fd, "", buf.data(), buf.size());
  int err = errno;
  close(fd);
  if (n < 0) throw ErrnoError(env, "readlinkat", err == ENOENT ? EINVAL : err);
  return Napi::String::New(env, buf.data(), static_cast<size_t>(n));
}

// mkdir, unlink/rmdir and rename act on the last name inside a confined parent.
Napi::Value PathOpJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "usage: pathOpInRoot(rootFd: number, op: 'mkdir' | 'unlink' | 'rmdir' | 'rename', path: string, arg: number | string)";
  if (info.Length() != 4 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsString()) throw Napi::TypeError::New(env, usage);
  int root = info[0].As<Napi::Number>().Int32Value();
  std::string op = info[1].As<Napi::String>().Utf8Value();
  std::string parent, name;
  if (!SplitParent(info[2].As<Napi::String>().Utf8Value(), &parent, &name)) throw ErrnoError(env, op.c_str(), EINVAL);
  int dir = OpenInRoot(root, parent, O_PATH | O_DIRECTORY, 0);
  if (dir < 0) throw ErrnoError(env, "openat2", -dir);
  int r = -1, err = 0;
  if (op == "mkdir" && info[3].IsNumber()) {
    r = mkdirat(dir, name.c_str(), static_cast<mode_t>(info[3].As<Napi::Number>().Int32Value() & 07777));
  } else if (op == "unlink" || op == "rmdir") {
    r = unlinkat(dir, name.c_str(), op == "rmdir" ? AT_REMOVEDIR : 0);
  } else if (op == "rename" && info[3].IsString()) {
    std::string to_parent, to_name;
    if (!SplitParent(info[3].As<Napi::String>().Utf8Value(), &to_parent, &to_name)) {
      close(dir);
      throw ErrnoError(env, "rename", EINVAL);
    }
    int to_dir = OpenInRoot(root, to_parent, O_PATH | O_DIRECTORY, 0);
    if (to_dir < 0) {
      close(dir);
      throw ErrnoError(env, "openat2", -to_dir);
    }
    r = renameat(dir, name.c_str(), to_dir, to_name.c_str());
    err = errno;
    close(to_dir);
    errno = err;
  } else {
    close(dir);
    throw Napi::TypeError::New(env, usage);
  }
  err = errno;
  close(dir);
  if (r < 0) throw ErrnoError(env, op.c_str(), err);
  return env.Undefined();
}

// ---- incoming traffic (agent/incoming.ts) ----

int PortOf(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port)
                                   : ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
}

// A listening TCP socket in the namespace at ns_fd on an ephemeral port of the wildcard
// address: dual-stack [::] when the namespace has IPv6, else 0.0.0.0. The redirect rules
// send the pod's incoming connections here.
Napi::Value NetnsListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    throw Napi::TypeError::New(env, "usage: netnsListen(nsFd: number) -> { fd, port }");
  }
  int ns_fd = info[0].As<Napi::Number>().Int32Value();
  if (ns_fd >= 0 && g_home_netns < 0) throw Napi::Error::New(env, "netnsListen: the agent's own network namespace could not be opened at load");
  const char* what = "";
  int fd = CreateIn(ns_fd, AF_INET6, SOCK_STREAM, &what);
  bool v6 = fd >= 0;
  if (!v6) fd = CreateIn(ns_fd, AF_INET, SOCK_STREAM, &what);
  if (fd < 0) throw ErrnoError(env, what, -fd);
  int zero = 0;
  if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    len = sizeof *a;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 1024) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "bind/listen", err);
  }
  int port = PortOf(ss);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("port", Napi::Number::New(env, port));
  return out;
}

// Sets SO_MARK on a socket: the agent's own connections to the pod's app carry a mark
// that the redirect rules skip, so they are not sent back to the agent.
Napi::Value SetMark(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "usage: setMark(fd: number, mark: number)");
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  uint32_t mark = info[1].As<Napi::Number>().Uint32Value();
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) throw ErrnoError(env, "setsockopt(SO_MARK)", errno);
  return env.Undefined();
}

// ---- non-blocking connects held until the pod answers (cli/session-proxy.ts) ----
//
// A program's non-blocking connect must return at once, yet it may only see "connected"
// once the pod's connection exists, and "refused" when the pod's was refused. Its socket
// is therefore connected to a loopback listener whose accept queue is already full (a
// backlog of 1 and two connections nobody accepts): the kernel drops its SYN, so the
// socket stays in SYN-SENT and poll/epoll report nothing, with no hook on them. When the
// pod's connection is made, the proxy connects to the program's socket from the
// listener's port (SO_REUSEPORT lets it bind there): the two SYNs cross, a TCP
// simultaneous open, and both ends are connected at once. When the pod's connection
// fails, the listener is closed and the program's next SYN retransmission gets a reset:
// ECONNREFUSED.

sockaddr_storage Loopback(int family, int port, socklen_t* len) {
  sockaddr_storage ss{};
  if (family == 6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof *a;
  }
  return ss;
}

// A non-blocking socket bound to loopback `port` (0: any) with SO_REUSEPORT; -errno on failure.
int ReusePortSocket(int family, int port) {
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int one = 1;
  socklen_t len;
  sockaddr_storage ss = Loopback(family, port, &len);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

int FamilyArg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  int family = info[i].As<Napi::Number>().Int32Value();
  if (family != 4 && family != 6) throw Napi::TypeError::New(info.Env(), usage);
  return family;
}

Napi::Value HoldListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "usage: holdListen(family: 4 | 6) -> { fd, port, fillers: [fd, fd] }";
  if (info.Length() != 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, usage);
  int family = FamilyArg(info, 0, usage);
  int fd = ReusePortSocket(family, 0);
  if (fd < 0) throw ErrnoError(env, "socket/bind", -fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (listen(fd, 1) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    int err = errno;
    close(fd);
    throw ErrnoError(env, "listen", err);
  }
  int port = PortOf(ss);
  // A backlog of 1 queues two connections (the queue is full when it holds more than the
  // backlog); these two fill it. Loopback handshakes complete inside connect().
  int fillers[2] = {-1, -1};
  for (int& f : fillers) {
    f = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage to = Loopback(family, port, &len);
    if (f < 0 || connect(f, reinterpret_cast<sockaddr*>(&to), len) != 0) {
      int err = errno;
      for (int g : fillers) if (g >= 0) close(g);
      close(fd);
      throw ErrnoError(env, "connect (filler)", err);
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("port", Napi::Number::New(env, port));
  Napi::Array list = Napi::Array::New(env, 2);
  list.Set(0u, Napi::Number::New(env, fillers[0]));
  list.Set(1u, Napi::Number::New(env, fillers[1]));
  out.Set("fillers", list);
  return out;
}

Napi::Value HoldRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "usage: holdRelease(family: 4 | 6, port: number, clientPort: number) -> fd";
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) throw Napi::TypeError::New(env, usage);
  int family = FamilyArg(info, 0, usage);
  int port = info[1].As<Napi::Number>().Int32Value();
  int client_port = info[2].As<Napi::Number>().Int32Value();
  if (port <= 0 || port > 65535 || client_port <= 0 || client_port > 65535) throw Napi::TypeError::New(env, usage);
  int fd = ReusePortSocket(family, port);
  if (fd < 0) throw ErrnoError(env, "socket/bind", -fd);
  socklen_t len;
  sockaddr_storage to = Loopback(family, client_port, &len);
  int err = 0;
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), len) != 0) err = errno;
  if (err == EINPROGRESS) {
    // On loopback the crossed handshake completes within microseconds.
    pollfd p{fd, POLLOUT, 0};
    int n = poll(&p, 1, 1000);
    socklen_t el = sizeof err;
    if (n <= 0) err = n == 0 ? ETIMEDOUT : errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
  }
  if (err != 0) {
    close(fd);
    throw ErrnoError(env, "connect (release)", err);
  }
  return Napi::Number::New(env, fd);
}

bool ParseDiagAddr(const std::string& text, int family, __be32 out[4]) {
  std::memset(out, 0, 4 * sizeof(__be32));
  return inet_pton(family == 6 ? AF_INET6 : AF_INET, text.c_str(), out) == 1;
}

// The netlink socket of the lookups below, kept open (one per thread that asks: the
// JavaScript thread): the proxy asks once per connect, and a socket made and closed for
// each lookup was two more system calls per connect (issue 13). Dropped after any
// failure, so a reply left behind by a failed exchange is never read as the next one's.
thread_local int t_diag_fd = -1;
thread_local uint32_t t_diag_seq = 0;

void DiagDrop() {
  if (t_diag_fd >= 0) close(t_diag_fd);
  t_diag_fd = -1;
}

// One sock_diag exact lookup (no dump: the kernel finds the socket by its four-tuple).
// TCP: the socket at local (addr, port) connected to remote (addr, port). UDP: the socket
// that would receive a datagram sent from remote to local (one connected to remote, or one
// merely bound there). Returns 1 and fills inode and uid, 0 when there is none (for TCP,
// or only a listener there), or -errno.
int DiagLookup(int protocol, int family, const __be32 local[4], int local_port, const __be32 remote[4], int remote_port,
               uint32_t* inode, uint32_t* uid) {
  if (t_diag_fd < 0) t_diag_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (t_diag_fd < 0) return -errno;
  int fd = t_diag_fd;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } request{};
  request.nlh.nlmsg_len = sizeof request;
  request.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  request.nlh.nlmsg_flags = NLM_F_REQUEST;
  request.nlh.nlmsg_seq = ++t_diag_seq;
  request.req.sdiag_family = family == 6 ? AF_INET6 : AF_INET;
  request.req.sdiag_protocol = static_cast<__u8>(protocol);
  request.req.idiag_states = ~0u;
  // The kernel's UDP lookup takes the four-tuple the other way round from its TCP lookup
  // (a datagram's source, then its destination: "swapped for historical reasons", udp_diag.c).
  bool udp = protocol == IPPROTO_UDP;
  request.req.id.idiag_sport = htons(static_cast<uint16_t>(udp ? remote_port : local_port));
  request.req.id.idiag_dport = htons(static_cast<uint16_t>(udp ? local_port : remote_port));
  std::memcpy(request.req.id.idiag_src, udp ? remote : local, sizeof request.req.id.idiag_src);
  std::memcpy(request.req.id.idiag_dst, udp ? local : remote, sizeof request.req.id.idiag_dst);
  request.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  request.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, &request, sizeof request, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    int err = errno;
    DiagDrop();
    return -err;
  }
  alignas(nlmsghdr) char buf[8192];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  if (n < 0) {
    int err = errno;
    DiagDrop();
    return -err;
  }
  auto* h = reinterpret_cast<nlmsghdr*>(buf);
  if (!NLMSG_OK(h, static_cast<unsigned>(n)) || h->nlmsg_seq != request.nlh.nlmsg_seq) {
    DiagDrop();
    return -EPROTO;
  }
  if (h->nlmsg_type == NLMSG_ERROR) {
    auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
    return e->error == -ENOENT ? 0 : e->error;
  }
  if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) return -EPROTO;
  auto* m = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
  // With no connection there, the kernel's TCP lookup falls back to a listener on that port.
  if (!udp && m->idiag_state == TCP_LISTEN) return 0;
  *inode = m->idiag_inode;
  *uid = m->idiag_uid;
  return 1;
}

Napi::Value LoopbackPeerOwner(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage =
      "usage: loopbackPeerOwner(family: 4 | 6, localAddr: string, localPort: number, peerAddr: string, peerPort: number) -> { inode, uid } | null";
  if (info.Length() != 5 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsString() ||
      !info[4].IsNumber())
    throw Napi::TypeError::New(env, usage);
  int family = FamilyArg(info, 0, usage);
  int local_port = info[2].As<Napi::Number>().Int32Value();
  int peer_port = info[4].As<Napi::Number>().Int32Value();
  __be32 local[4], peer[4];
  if (local_port <= 0 || local_port > 65535 || peer_port <= 0 || peer_port > 65535 ||
      !ParseDiagAddr(info[1].As<Napi::String>().Utf8Value(), family, local) ||
      !ParseDiagAddr(info[3].As<Napi::String>().Utf8Value(), family, peer))
    throw Napi::TypeError::New(env, usage);
  uint32_t inode = 0, uid = 0;
  // The peer's socket: its local end is our peer, its remote end is us.
  int r = DiagLookup(IPPROTO_TCP, family, peer, peer_port, local, local_port, &inode, &uid);
  if (r < 0) throw ErrnoError(env, "sock_diag", -r);
  if (r == 0) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  out.Set("inode", Napi::Number::New(env, inode));
  out.Set("uid", Napi::Number::New(env, uid));
  return out;
}

Napi::Value UdpReceiverOwner(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage =
      "usage: udpReceiverOwner(family: 4 | 6, addr: string, port: number, fromAddr: string, fromPort: number) -> { inode, uid } | null";
  if (info.Length() != 5 || !info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber() || !info[3].IsString() ||
      !info[4].IsNumber())
    throw Napi::TypeError::New(env, usage);
  int family = FamilyArg(info, 0, usage);
  int port = info[2].As<Napi::Number>().Int32Value();
  int from_port = info[4].As<Napi::Number>().Int32Value();
  __be32 addr[4], from[4];
  if (port <= 0 || port > 65535 || from_port <= 0 || from_port > 65535 ||
      !ParseDiagAddr(info[1].As<Napi::String>().Utf8Value(), family, addr) ||
      !ParseDiagAddr(info[3].As<Napi::String>().Utf8Value(), family, from))
    throw Napi::TypeError::New(env, usage);
  uint32_t inode = 0, uid = 0;
  int r = DiagLookup(IPPROTO_UDP, family, addr, port, from, from_port, &inode, &uid);
  if (r < 0) throw ErrnoError(env, "sock_diag", -r);
  if (r == 0) return env.Null();
  Napi::Object out = Napi::Object::New(env);
  out.Set("inode", Napi::Number::New(env, inode));
  out.Set("uid", Napi::Number::New(env, uid));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  g_home_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  exports.Set("netnsSocket", Napi::Function::New(env, NetnsSocket, "netnsSocket"));
  exports.Set("openInRoot", Napi::Function::New(env, OpenInRootJs, "openInRoot"));
  exports.Set("readlinkInRoot", Napi::Function::New(env, ReadlinkInRootJs, "readlinkInRoot"));
  exports.Set("pathOpInRoot", Napi::Function::New(env, PathOpJs, "pathOpInRoot"));
  exports.Set("netnsListen", Napi::Function::New(env, NetnsListen, "netnsListen"));
  exports.Set("setMark", Napi::Function::New(env, SetMark, "setMark"));
  exports.Set("holdListen", Napi::Function::New(env, HoldListen, "holdListen"));
  exports.Set("holdRelease", Napi::Function::New(env, HoldRelease, "holdRelease"));
  exports.Set("spawnCapture", Napi::Function::New(env, tsm::SpawnCapture, "spawnCapture"));
  exports.Set("loopbackPeerOwner", Napi::Function::New(env, LoopbackPeerOwner, "loopbackPeerOwner"));
  exports.Set("udpReceiverOwner", Napi::Function::New(env, UdpReceiverOwner, "udpReceiverOwner"));
  return exports;
}

}  // namespace

NODE_API_MODULE(tsmirror_addon, Init)
