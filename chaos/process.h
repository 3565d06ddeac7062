#pragma once
// The processes a chaos run starts (`troupe train`, `troupe launch`, `troupe ledger`,
// `troupe scale`, ...) and the signals it sends. Children die with the runner
// (PR_SET_PDEATHSIG), so an interrupted run leaves no job behind.
#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace troupe::chaos {

struct Child {
  pid_t pid = 0;
  std::optional<int> status;  // once ended: the exit code, or 128 + the signal
};

// Starts argv (argv[0] a path) with stdin from /dev/null, stdout to out_path and stderr to
// err_path (truncated; empty: inherited), and `env` added to this process's environment.
// Throws std::runtime_error naming argv[0] when it cannot be started.
Child start_child(const std::vector<std::string>& argv, const std::string& out_path,
                  const std::string& err_path, const std::map<std::string, std::string>& env);
// Reaps c without blocking; true once it ended (c.status set).
bool poll_child(Child& c);
// Waits up to `timeout` for c to end; false (still running) when it did not.
bool wait_child(Child& c, std::chrono::milliseconds timeout);
// Ends c: SIGINT (a job stops its nodes), `grace` to end, then SIGKILL; reaps it.
void stop_child(Child& c, std::chrono::milliseconds grace);
// Runs argv to its end (at most `timeout`: then stopped, status 124); its exit status.
int run_child(const std::vector<std::string>& argv, const std::string& out_path,
              const std::string& err_path, std::chrono::milliseconds timeout);
// kill(pid, sig); false when there is no such process (it ended already).
bool send_signal(pid_t pid, int sig);
// This program's own path (/proc/self/exe), to start `troupe` subcommands with.
std::string self_exe();
// Milliseconds since the Unix epoch (the clock of events.jsonl's unix_ms).
int64_t unix_ms_now();

}  // namespace troupe::chaos
