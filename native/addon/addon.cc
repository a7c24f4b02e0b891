// tsmirror's native addon: the few things Node cannot do itself.
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
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <string>

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

// ---- incoming traffic (agent/incoming.ts) ----

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
  int port = v6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port) : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  g_home_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  exports.Set("netnsSocket", Napi::Function::New(env, NetnsSocket, "netnsSocket"));
  exports.Set("netnsListen", Napi::Function::New(env, NetnsListen, "netnsListen"));
  exports.Set("setMark", Napi::Function::New(env, SetMark, "setMark"));
  return exports;
}

}  // namespace

NODE_API_MODULE(tsmirror_addon, Init)
