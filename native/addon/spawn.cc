// spawnCapture: short commands (the agent's nft) run without forking the agent. Split from addon.cc.
#include <napi.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "addon.h"

extern char** environ;

namespace {

// spawnCapture(argv, input): runs a short command (the agent's nft) with `input` on its
// stdin and resolves with { code, signal, stdout, stderr } (outputs cut at 1 MiB each).
// Node's child_process forks the whole agent: the fork copies the page tables of every
// mapping on the JavaScript thread, 10-50 ms for an agent of 50-250 MiB on these
// machines, and the redirect refreshes its rules every second. posix_spawn (glibc:
// clone with CLONE_VM | CLONE_VFORK, no copy) and the whole wait run on a thread-pool
// thread, so the event loop never stops for it. The child gets default signal
// dispositions and an empty mask (Node ignores SIGPIPE); fds other than 0-2 are not
// inherited (every fd of the agent is CLOEXEC). libuv reaps only its own children, by
// pid, so this one is waited for here.
class SpawnWorker : public Napi::AsyncWorker {
 public:
  SpawnWorker(Napi::Env env, std::vector<std::string> argv, std::string input, int timeout_ms)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), argv_(std::move(argv)),
        input_(std::move(input)), timeout_ms_(timeout_ms) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    static constexpr size_t kMaxOutput = 1 << 20;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      spawn_errno_ = errno;
      CloseAll({in[0], in[1], out[0], out[1], err[0], err[1]});
      return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> args;
    for (auto& a : argv_) args.push_back(a.data());
    args.push_back(nullptr);
    pid_t pid = -1;
    int r = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    CloseAll({in[0], out[1], err[1]});
    if (r != 0) {
      spawn_errno_ = r;
      CloseAll({in[1], out[0], err[0]});
      return;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t written = 0;
    if (input_.empty()) {
      close(in[1]);
      in[1] = -1;
    }
    const long long deadline = NowMs() + timeout_ms_;
    std::string* sinks[2] = {&stdout_, &stderr_};
    int fds[2] = {out[0], err[0]};
    while (fds[0] >= 0 || fds[1] >= 0 || in[1] >= 0) {
      pollfd p[3];
      int n = 0;
      for (int i = 0; i < 2; i++) p[n++] = {fds[i], POLLIN, 0};
      p[n++] = {in[1], POLLOUT, 0};
      long long left = deadline - NowMs();
      if (left <= 0 || poll(p, n, static_cast<int>(left)) == 0) {
        kill(pid, SIGKILL);
        timed_out_ = true;
        break;
      }
      for (int i = 0; i < 2; i++) {
        if (fds[i] < 0 || p[i].revents == 0) continue;
        char buf[16384];
        ssize_t got = read(fds[i], buf, sizeof buf);
        if (got > 0) {
          if (sinks[i]->size() < kMaxOutput) sinks[i]->append(buf, std::min<size_t>(got, kMaxOutput - sinks[i]->size()));
        } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
          close(fds[i]);
          fds[i] = -1;
        }
      }
      if (in[1] >= 0 && p[2].revents != 0) {
        ssize_t put = (p[2].revents & (POLLERR | POLLHUP)) ? -1 : write(in[1], input_.data() + written, input_.size() - written);
        if (put > 0) written += put;
        if (put < 0 ? (errno != EINTR && errno != EAGAIN) || (p[2].revents & (POLLERR | POLLHUP)) : written == input_.size()) {
          close(in[1]);
          in[1] = -1;
        }
      }
    }
    CloseAll({in[1], fds[0], fds[1]});
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) code_ = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) signal_ = WTERMSIG(status);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    if (spawn_errno_ != 0) {
      o.Set("code", Napi::Number::New(env, 127));
      o.Set("signal", env.Null());
      o.Set("stdout", Napi::String::New(env, ""));
      o.Set("stderr", Napi::String::New(env, argv_[0] + ": " + std::strerror(spawn_errno_)));
    } else {
      o.Set("code", code_ >= 0 ? Napi::Number::New(env, code_) : env.Null());
      o.Set("signal", signal_ > 0 ? Napi::Value(Napi::String::New(env, std::string("SIG") + (sigabbrev_np(signal_) ? sigabbrev_np(signal_) : "?"))) : env.Null());
      o.Set("stdout", Napi::String::New(env, stdout_));
      o.Set("stderr", Napi::String::New(env, timed_out_ ? stderr_ + "(killed: no answer within the time limit)" : stderr_));
    }
    deferred_.Resolve(o);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  static long long NowMs() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
  }
  static void CloseAll(std::initializer_list<int> fds) {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }

  Napi::Promise::Deferred deferred_;
  std::vector<std::string> argv_;
  std::string input_;
  int timeout_ms_;
  int spawn_errno_ = 0;
  int code_ = -1;
  int signal_ = 0;
  bool timed_out_ = false;
  std::string stdout_, stderr_;
};

}  // namespace

namespace tsm {

Napi::Value SpawnCapture(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage =
      "usage: spawnCapture(argv: string[], input: string, timeoutMs: number) -> Promise<{ code, signal, stdout, stderr }>";
  if (info.Length() != 3 || !info[0].IsArray() || !info[1].IsString() || !info[2].IsNumber())
    throw Napi::TypeError::New(env, usage);
  Napi::Array a = info[0].As<Napi::Array>();
  if (a.Length() == 0 || a.Length() > 256) throw Napi::TypeError::New(env, usage);
  std::vector<std::string> argv;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, usage);
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos) throw Napi::TypeError::New(env, usage);
    argv.push_back(std::move(s));
  }
  int timeout_ms = info[2].As<Napi::Number>().Int32Value();
  if (timeout_ms <= 0) throw Napi::TypeError::New(env, usage);
  auto* w = new SpawnWorker(env, std::move(argv), info[1].As<Napi::String>().Utf8Value(), timeout_ms);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace tsm
