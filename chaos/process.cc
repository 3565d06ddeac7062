// Child processes and signals of a chaos run (process.h).
#include "chaos/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace troupe::chaos {

namespace {

int open_out(const std::string& path) {
  if (path.empty()) return -1;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  return fd;
}

std::vector<std::string> environment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e) {
    const std::string kv(*e);
    if (!extra.count(kv.substr(0, kv.find('=')))) out.push_back(kv);
  }
  for (const auto& [k, v] : extra) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& v) {
  std::vector<char*> p;
  for (std::string& s : v) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

// In the forked child: async-signal-safe calls only, until exec.
[[noreturn]] void exec_child(char* const* argv, char* const* envp, int out, int err) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  const int null = ::open("/dev/null", O_RDONLY);
  if (null >= 0) ::dup2(null, 0);
  if (out >= 0) ::dup2(out, 1);
  if (err >= 0) ::dup2(err, 2);
  ::execve(argv[0], argv, envp);
  ::_exit(127);
}

}  // namespace

Child start_child(const std::vector<std::string>& argv, const std::string& out_path,
                  const std::string& err_path, const std::map<std::string, std::string>& env) {
  if (!std::filesystem::exists(argv.at(0)))
    throw std::runtime_error("cannot start " + argv[0] + ": no such file");
  std::vector<std::string> args = argv, envs = environment(env);
  std::vector<char*> a = pointers(args), e = pointers(envs);
  const int out = open_out(out_path), err = open_out(err_path);
  const pid_t pid = ::fork();
  if (pid == 0) exec_child(a.data(), e.data(), out, err);
  const int fork_errno = errno;
  if (out >= 0) ::close(out);
  if (err >= 0) ::close(err);
  if (pid < 0)
    throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(fork_errno));
  return Child{pid, std::nullopt};
}

bool poll_child(Child& c) {
  if (c.status) return true;
  int st = 0;
  const pid_t r = ::waitpid(c.pid, &st, WNOHANG);
  if (r == 0) return false;
  if (r < 0) {
    c.status = -1;  // not ours any more: lost
    return true;
  }
  c.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return true;
}

bool wait_child(Child& c, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!poll_child(c)) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // no pidfd wait here: poll
  }
  return true;
}

void stop_child(Child& c, std::chrono::milliseconds grace) {
  if (poll_child(c)) return;
  send_signal(c.pid, SIGINT);
  if (wait_child(c, grace)) return;
  send_signal(c.pid, SIGKILL);
  wait_child(c, std::chrono::milliseconds(5000));
}

int run_child(const std::vector<std::string>& argv, const std::string& out_path,
              const std::string& err_path, std::chrono::milliseconds timeout) {
  Child c = start_child(argv, out_path, err_path, {});
  if (wait_child(c, timeout)) return *c.status;
  stop_child(c, std::chrono::milliseconds(2000));
  return 124;
}

bool send_signal(pid_t pid, int sig) {
  return pid > 0 && ::kill(pid, sig) == 0;
}

std::string self_exe() {
  return std::filesystem::read_symlink("/proc/self/exe").string();
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace troupe::chaos
