// The line protocol between `troupe launch --coordinator-process` (the supervisor: it starts
// and restarts the coordinator process and the local node processes) and its coordinator
// process, over a Unix socket in the abstract namespace (no file to clean up):
//   coordinator → launcher   "start K"                 start K more local node processes
//   coordinator → launcher   "kill PID"                SIGKILL to that node process (hung),
//                                                      when it is the launcher's child
//   coordinator → launcher   "ended CODE"              the job's verdict, its exit status:
//                                                      what the process does after it is
//                                                      teardown, and a death there (a signal)
//                                                      is not restarted
//   launcher → coordinator   "exit PID CODE SIGNAL LOG DESCRIPTION"   a node process ended
// Non-blocking: poll() hands over the complete lines that arrived; send() writes one line.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace troupe::launch {

class LauncherLink {
 public:
  LauncherLink() = default;
  ~LauncherLink();
  LauncherLink(const LauncherLink&) = delete;
  LauncherLink& operator=(const LauncherLink&) = delete;

  // The launcher: listens on a fresh abstract name (name()); throws std::runtime_error.
  void listen();
  // The coordinator: connects to the launcher's name; throws std::runtime_error.
  void connect(const std::string& name);
  const std::string& name() const { return name_; }
  // What to poll() for: readable when a line or a (re)connecting coordinator arrives.
  std::vector<int> fds() const { return {listen_fd_, fd_}; }
  // Accepts a (re)connected coordinator, reads what arrived; calls on_line per line.
  void poll(const std::function<void(const std::string&)>& on_line);
  // One line ("\n" added); false when no peer is connected or the write failed.
  bool send(const std::string& line);

 private:
  int listen_fd_ = -1, fd_ = -1;
  std::string name_, buffer_;
};

}  // namespace troupe::launch
