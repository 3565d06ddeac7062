// The child processes of `troupe launch`: started with their output in a log file, never
// outliving the supervisor (PR_SET_PDEATHSIG), reaped without blocking, and stopped with
// SIGTERM then SIGKILL after a grace period. No model or runtime dependency.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace troupe::launch {

// How one child ended. Exactly one of exit_code >= 0 and signal != 0 holds, unless the
// status was lost (someone else reaped the child): then exit_code is -1 and signal 0.
struct ChildExit {
  int index = -1;  // what start() returned for it
  std::string name;
  pid_t pid = 0;
  int exit_code = -1;            // when it exited by itself
  int signal = 0;                // when a signal ended it
  std::string describe() const;  // "exit status 3", "killed by SIGKILL", "exit status unknown"
  // "node 3 (pid 4242) exited (killed by SIGKILL)": what an operator reads in launch's lines.
  std::string exited() const;
};

class Supervisor {
 public:
  // How long the destructor lets children end after SIGTERM before SIGKILL: short, because a
  // destructor runs on an error path, and nodes hold no state that a clean exit would save.
  static constexpr std::chrono::milliseconds destructor_grace_ms{2000};

  Supervisor() = default;
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  ~Supervisor();  // stop_all(destructor_grace_ms)

  // Starts argv (argv[0] a path; no PATH search) with stdin from /dev/null and stdout and
  // stderr appended to log_path (created 0644) when it is not empty, else inherited. The
  // child gets PR_SET_PDEATHSIG(SIGKILL), the default SIGINT/SIGTERM dispositions and an
  // empty signal mask. Returns the child's index (0, 1, ... in start order).
  // Throws std::runtime_error naming argv[0] (or the log) and the OS error when the
  // program cannot be started, e.g. "cannot start /no/such: No such file or directory".
  // Call it from a thread that lives as long as the children should: Linux sends the
  // death signal when the *thread* that forked exits (the main thread, in `troupe launch`).
  int start(const std::vector<std::string>& argv, const std::string& log_path,
            const std::string& name);
  // The children that ended since the last call; never blocks.
  std::vector<ChildExit> reap();
  // Waits up to `timeout` for every child to end by itself; returns those that did.
  std::vector<ChildExit> wait_all(std::chrono::milliseconds timeout);
  // SIGTERM to every live child, up to `grace` for them to end, then SIGKILL to the rest
  // and reap them. Returns how each ended. Idempotent: a second call returns nothing.
  std::vector<ChildExit> stop_all(std::chrono::milliseconds grace);
  // Sends `sig` to `pid` when it is a live child; false when it is not (not ours, or ended).
  bool signal_child(pid_t pid, int sig) const;
  // The process id of the live child `index`; 0 once it has been reported ended.
  pid_t pid_of(int index) const;
  // True once child `index` has ended, reported or not: it looks without reaping, so reap()
  // still says how it ended. (pid_of stays nonzero until reap: a loop waiting on something
  // the child should do must ask this, or it waits its whole deadline for a dead child.)
  bool ended(int index) const;
  // Waits until some child may have ended, one of `fds` is readable, or `deadline` passes.
  void wait_any(std::chrono::steady_clock::time_point deadline,
                const std::vector<int>& fds = {}) const;
  // Children started and not yet reported by reap, wait_all or stop_all.
  size_t live() const { return children_.size(); }

 private:
  struct Child {
    int index;
    std::string name;
    pid_t pid;
    int pidfd;  // readable once the child ends (pidfd_open); -1 where unavailable
  };
  std::vector<Child> children_;
  int started_ = 0;
};

// When to stop restarting a child that keeps dying (the coordinator process): after more
// than `restarts_max` deaths in a row, each within `stable` of its start (a crash loop, as
// systemd's start limit). A child that ran `stable` or longer before it died resets the
// count, so a long job whose coordinator is killed now and then (a soak kills it every few
// minutes) is restarted every time; one that cannot start is given up on. A plain count over
// the whole job ended a soak at its 11th coordinator kill, 20 minutes in.
class RestartBudget {
 public:
  using Clock = std::chrono::steady_clock;
  RestartBudget(int restarts_max, Clock::duration stable)
      : restarts_max_(restarts_max), stable_(stable) {}
  void started(Clock::time_point t) { started_ = t; }
  // The child died at `t`: true when it may be started again (call started() when it is).
  bool allow(Clock::time_point t) {
    if (t - started_ >= stable_) {
      in_a_row_ = 0;
      return true;
    }
    return ++in_a_row_ <= restarts_max_;
  }
  int in_a_row() const { return in_a_row_; }  // quick deaths in a row so far

 private:
  int restarts_max_;
  Clock::duration stable_;
  Clock::time_point started_{};
  int in_a_row_ = 0;
};

// SIGINT and SIGTERM set a flag, and do nothing else, once installed. A second signal after
// the first restores the default action and re-raises it: a stuck shutdown can still be
// interrupted with a second Ctrl-C.
void install_stop_signals();
bool stop_requested();

// The path of the running executable (/proc/self/exe), to start more of ourselves.
std::string self_exe_path();

}  // namespace troupe::launch
