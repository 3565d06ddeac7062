#include "launch/supervisor.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace troupe::launch {

namespace {

// Where pidfd_open is refused (old kernel, seccomp), wait_any polls at this period instead.
constexpr std::chrono::milliseconds reap_poll_period_ms{5};

std::atomic<int> g_stop_signals{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

void on_stop_signal(int sig) {
  if (g_stop_signals.fetch_add(1) > 0) {  // the second one: let it act as if not handled
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
}

ChildExit exit_of(int index, const std::string& name, pid_t pid, int status) {
  ChildExit e;
  e.index = index;
  e.name = name;
  e.pid = pid;
  if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
  return e;
}

std::string os_error(int err) {
  return std::strerror(err);
}

// In the forked child: only async-signal-safe calls until exec. On failure the errno goes
// up the close-on-exec pipe, so that start() can throw it.
[[noreturn]] void exec_child(char* const* args, pid_t parent, int log_fd, int null_fd,
                             int error_fd) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the supervisor died before prctl took hold
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the forking thread's mask is inherited
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGPIPE, SIG_DFL);
  // Our other descriptors (the coordinator's listener, UCX sockets) stay with us.
  ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
  bool ok = ::dup2(null_fd, STDIN_FILENO) >= 0;
  if (log_fd >= 0)
    ok = ok && ::dup2(log_fd, STDOUT_FILENO) >= 0 && ::dup2(log_fd, STDERR_FILENO) >= 0;
  if (ok) ::execv(args[0], args);
  const int err = errno;
  (void)!::write(error_fd, &err, sizeof err);
  ::_exit(127);
}

// Closes the descriptor it holds when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string ChildExit::describe() const {
  if (signal != 0) {
    const char* abbrev = sigabbrev_np(signal);
    return abbrev ? std::string("killed by SIG") + abbrev
                  : "killed by signal " + std::to_string(signal);
  }
  if (exit_code < 0) return "exit status unknown";
  return "exit status " + std::to_string(exit_code);
}

std::string ChildExit::exited() const {
  return name + " (pid " + std::to_string(pid) + ") exited (" + describe() + ")";
}

int Supervisor::start(const std::vector<std::string>& argv, const std::string& log_path,
                      const std::string& name) {
  if (argv.empty() || argv[0].empty())
    throw std::runtime_error("cannot start '" + name + "': empty command");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Fd log, null, pipe_read, pipe_write;
  if (!log_path.empty()) {
    log.fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log.fd < 0)
      throw std::runtime_error("cannot start " + argv[0] + ": cannot open its log " + log_path +
                               ": " + os_error(errno));
  }
  null.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int pipe_fds[2];
  if (null.fd < 0 || ::pipe2(pipe_fds, O_CLOEXEC) != 0)
    throw std::runtime_error("cannot start " + argv[0] + ": " + os_error(errno));
  pipe_read.fd = pipe_fds[0];
  pipe_write.fd = pipe_fds[1];

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("cannot start " + argv[0] + ": fork: " + os_error(errno));
  if (pid == 0) exec_child(args.data(), parent, log.fd, null.fd, pipe_write.fd);

  ::close(pipe_write.fd);
  pipe_write.fd = -1;
  int child_errno = 0;
  ssize_t n;
  do {  // EOF (0 bytes) once exec succeeded and closed the pipe; an errno if it failed
    n = ::read(pipe_read.fd, &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw std::runtime_error("cannot start " + argv[0] + ": " + os_error(child_errno));
  }
  const int pidfd = int(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);  // pidfd_open sets it; make it explicit
  children_.push_back({started_, name, pid, pidfd});
  return started_++;
}

bool Supervisor::signal_child(pid_t pid, int sig) const {
  for (const Child& c : children_)  // not reaped: the pid cannot have been reused
    if (c.pid == pid) return ::kill(pid, sig) == 0;
  return false;
}

pid_t Supervisor::pid_of(int index) const {
  for (const Child& c : children_)
    if (c.index == index) return c.pid;
  return 0;
}

bool Supervisor::ended(int index) const {
  for (const Child& c : children_) {
    if (c.index != index) continue;
    siginfo_t info{};
    if (::waitid(P_PID, id_t(c.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
      return errno == ECHILD;     // reaped by someone else: ended; EINTR: ask again later
    return info.si_pid == c.pid;  // si_pid stays 0 while it runs (WNOHANG)
  }
  return true;  // reported ended already
}

std::vector<ChildExit> Supervisor::reap() {
  std::vector<ChildExit> out;
  for (size_t i = 0; i < children_.size();) {
    const Child& c = children_[i];
    int status = 0;
    const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) {
      ++i;
      continue;
    }
    // r < 0 (ECHILD): someone else reaped it, e.g. SIGCHLD set to SIG_IGN; its status is lost.
    out.push_back(r == c.pid ? exit_of(c.index, c.name, c.pid, status)
                             : ChildExit{c.index, c.name, c.pid, -1, 0});
    if (c.pidfd >= 0) ::close(c.pidfd);
    children_.erase(children_.begin() + std::ptrdiff_t(i));
  }
  return out;
}

void Supervisor::wait_any(std::chrono::steady_clock::time_point deadline,
                          const std::vector<int>& extra) const {
  using namespace std::chrono;
  const auto left = duration_cast<milliseconds>(deadline - steady_clock::now());
  if (left.count() <= 0) return;
  std::vector<pollfd> fds;
  for (const Child& c : children_)
    if (c.pidfd >= 0) fds.push_back({c.pidfd, POLLIN, 0});
  if (fds.size() == children_.size()) {
    for (int fd : extra)
      if (fd >= 0) fds.push_back({fd, POLLIN, 0});
    ::poll(fds.data(), fds.size(), int(left.count()) + 1);  // +1: never wake just before
    return;
  }
  std::this_thread::sleep_for(std::min(left, reap_poll_period_ms));  // waitpid has no timeout
}

std::vector<ChildExit> Supervisor::wait_all(std::chrono::milliseconds timeout) {
  std::vector<ChildExit> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (ChildExit& e : reap()) out.push_back(std::move(e));
    if (children_.empty() || std::chrono::steady_clock::now() >= deadline) return out;
    wait_any(deadline);
  }
}

std::vector<ChildExit> Supervisor::stop_all(std::chrono::milliseconds grace) {
  // A child not yet reaped is at least a zombie, so its pid cannot have been reused.
  for (const Child& c : children_) ::kill(c.pid, SIGTERM);
  std::vector<ChildExit> out = wait_all(grace);
  for (const Child& c : children_) ::kill(c.pid, SIGKILL);
  for (const Child& c : children_) {
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(c.pid, &status, 0)) < 0 && errno == EINTR) {
    }
    out.push_back(r == c.pid ? exit_of(c.index, c.name, c.pid, status)
                             : ChildExit{c.index, c.name, c.pid, -1, 0});
    if (c.pidfd >= 0) ::close(c.pidfd);
  }
  children_.clear();
  return out;
}

Supervisor::~Supervisor() {
  stop_all(destructor_grace_ms);
}

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // the flag is polled; interrupted system calls just go on
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() {
  return g_stop_signals.load() > 0;
}

std::string self_exe_path() {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot read /proc/self/exe: " + ec.message());
  return p.string();
}

}  // namespace troupe::launch
