#include "launch/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
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
std::atomic<bool> g_stop{false};
void on_stop_signal(int) {
  g_stop.store(true);
}

ChildExit exit_of(const std::string& name, pid_t pid, int status) {
  ChildExit e;
  e.name = name;
  e.pid = pid;
  if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
  return e;
}
}  // namespace

std::string ChildExit::describe() const {
  if (signal != 0)
    return std::string("killed by ") + (sigabbrev_np(signal) ? "SIG" : "signal ") +
           (sigabbrev_np(signal) ? sigabbrev_np(signal) : std::to_string(signal));
  return "exit status " + std::to_string(exit_code);
}

void Supervisor::start(const std::vector<std::string>& argv, const std::string& log_path,
                       const std::string& name) {
  if (argv.empty()) throw std::runtime_error("supervisor: empty command");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0)
      throw std::runtime_error("supervisor: cannot open log " + log_path + ": " +
                               std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    if (log_fd >= 0) ::close(log_fd);
    throw std::runtime_error("supervisor: fork for " + argv[0] + ": " + std::strerror(errno));
  }
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the supervisor died before prctl
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    ::execv(args[0], args.data());
    const char msg[] = "supervisor: exec failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  if (log_fd >= 0) ::close(log_fd);
  children_.push_back({name, pid});
}

std::vector<ChildExit> Supervisor::reap() {
  std::vector<ChildExit> out;
  for (size_t i = 0; i < children_.size();) {
    int status = 0;
    const pid_t r = ::waitpid(children_[i].pid, &status, WNOHANG);
    if (r == children_[i].pid || (r < 0 && errno == ECHILD)) {
      out.push_back(exit_of(children_[i].name, children_[i].pid, r < 0 ? 0 : status));
      children_.erase(children_.begin() + int64_t(i));
    } else {
      ++i;
    }
  }
  return out;
}

std::vector<ChildExit> Supervisor::wait_all(std::chrono::milliseconds timeout) {
  std::vector<ChildExit> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (ChildExit& e : reap()) out.push_back(std::move(e));
    if (children_.empty() || std::chrono::steady_clock::now() >= deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // waitpid has no timeout
  }
}

std::vector<ChildExit> Supervisor::stop_all(std::chrono::milliseconds grace) {
  for (const Child& c : children_) ::kill(c.pid, SIGTERM);
  std::vector<ChildExit> out = wait_all(grace);
  for (const Child& c : children_) ::kill(c.pid, SIGKILL);
  for (const Child& c : children_) {
    int status = 0;
    if (::waitpid(c.pid, &status, 0) == c.pid) out.push_back(exit_of(c.name, c.pid, status));
  }
  children_.clear();
  return out;
}

Supervisor::~Supervisor() {
  stop_all(std::chrono::milliseconds(2000));
}

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() {
  return g_stop.load();
}

std::string self_exe_path() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

}  // namespace troupe::launch
