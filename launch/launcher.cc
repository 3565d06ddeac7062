// `troupe launch` (unless --coordinator-in-process): the supervisor of a job whose
// coordinator runs in a process of its own (DESIGN §2, §8). It holds the run directory's
// lock, starts the coordinator process (the same `troupe launch` with --as-coordinator: it
// prints the job's progress and summary) and the local node processes, starts more when the
// coordinator asks (scale up, replace_lost: launcher_link.h), tells it which node processes
// ended, and, when the coordinator process dies, starts a new one with --restart on the same
// port: it rebuilds the view and the committed step from the journal, the nodes (which keep
// their roles and state) rejoin it, and the job goes on. When none comes back (they died
// with it), the job goes on from its newest checkpoint on fresh nodes. `--resume
// --local-nodes 0` is the same restart for a site's launcher whose nodes run elsewhere
// (rejoinable below).
#include <fmt/format.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "actors/journal_log.h"
#include "launch/commands.h"
#include "launch/launch_args.h"
#include "launch/launcher_link.h"
#include "launch/supervisor.h"
#include "runtime/auth.h"
#include "runtime/log.h"
#include "storage/journal.h"
#include "storage/run_lock.h"

namespace troupe::launch {

namespace {

// A coordinator that died this often in a row, each time within coordinator_stable_ms of
// its start, is not going to get better by restarting (RestartBudget).
constexpr int coordinator_restarts_max = 10;
constexpr std::chrono::milliseconds coordinator_stable_ms{60000};
constexpr std::chrono::milliseconds coordinator_start_ms{30000};

class Launcher {
 public:
  explicit Launcher(const LaunchArgs& a) : a_(a) {}

  int run() {
    const model::JobConfig cfg = checked_launch(a_);  // before anything starts
    open_run_dir();
    link_.listen();
    install_stop_signals();
    local_ = checked_local_nodes(a_);
    spare_oversubscribed_cores(a_, local_);
    threads_ = a_.threads_per_node;
    if (threads_ <= 0 && cfg.train.threads <= 0)  // share the cores among the nodes
      threads_ = std::max<int>(
          1, int(std::thread::hardware_concurrency()) / int(std::max<int64_t>(local_, 1)));
    restarting_ = a_.resume && local_ == 0 && rejoinable();
    start_coordinator(restarting_);
    if (!restarting_ && !address_.empty()) {
      for (int64_t i = 0; i < local_; ++i) start_node();
      for (int64_t i = 0; i < a_.engram_nodes; ++i) start_node("engram");
      for (int64_t i = 0; i < a_.rollout_nodes; ++i) start_node("rollout");
    }
    const int code = supervise();
    supervisor_.wait_all(std::chrono::milliseconds(2000));
    supervisor_.stop_all(std::chrono::milliseconds(1000));
    return code;
  }

 private:
  // The port of the "address" in a run directory's JSON file (coordinator.json,
  // control.json); 0 when there is none.
  static uint16_t port_in(const std::string& file) { return port_of(address_in(file)); }
  static std::string address_in(const std::string& file) {
    std::ifstream in(file);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() ? j.value("address", "") : "";
  }
  static uint16_t port_of(const std::string& address) {  // "host:port"; 0 without one
    const size_t colon = address.rfind(':');
    return colon == std::string::npos ? 0 : uint16_t(std::atoi(address.c_str() + colon + 1));
  }

  // `--resume --local-nodes 0` (a site's launcher restarting the coordinator of a job whose
  // nodes run elsewhere): when the journal holds a view of a job that did not end, its nodes
  // may be waiting to rejoin, on the port it listened on (--port, else coordinator.json).
  bool rejoinable() {
    {
      auto j = storage::Journal::open(a_.run_dir, true);
      if (!j.ok() || !actors::restart_state(*j.value())) return false;
    }  // closed: the coordinator process opens it
    port_ = a_.port != 0 ? a_.port : port_in(a_.run_dir + "/coordinator.json");
    return port_ != 0;
  }

  void open_run_dir() {
    lock_ = claim_run_dir(a_);
    secret_file_ = job_secret_file(a_);
    job_secret(secret_file_, a_.secret_file.empty());  // created here, read by the children
  }

  // The coordinator process; waits until it says where it listens (coordinator.json).
  void start_coordinator(bool restart) {
    ended_.reset();
    const std::string file = a_.run_dir + "/coordinator.json";
    std::error_code ec;
    std::filesystem::remove(file, ec);
    LaunchArgs child = a_;
    child.secret_file = secret_file_;
    child.resume = a_.resume || resume_;
    child.local_nodes = local_;
    // A restarted coordinator serves the control endpoint where the last one did: the
    // operator's URL, token and open pages stay good.
    if (const uint16_t p = port_in(a_.run_dir + "/control.json"); restart && p != 0)
      child.control.port = p;
    coordinator_ =
        supervisor_.start(coordinator_argv(child, link_.name(), restart, port_), "", "coordinator");
    restarts_.started(std::chrono::steady_clock::now());
    const auto deadline = std::chrono::steady_clock::now() + coordinator_start_ms;
    while (!std::filesystem::exists(file)) {
      // It ended (supervise reaps it and says how) or hangs. pid_of would not see the end:
      // a restarted coordinator that refused to start held launch here for 30 s.
      if (std::chrono::steady_clock::now() > deadline || supervisor_.ended(coordinator_)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // another process's file
    }
    address_ = address_in(file);
    port_ = port_of(address_);
  }

  void start_node(const std::string& role = "worker") {
    std::vector<std::string> argv = {self_exe_path(),
                                     "node",
                                     "--join",
                                     address_,
                                     "--secret-file",
                                     secret_file_,
                                     "--supervised",
                                     "--log-level",
                                     a_.log_level,
                                     "--role",
                                     role};
    if (threads_ > 0) argv.insert(argv.end(), {"--threads", std::to_string(threads_)});
    const std::string k = std::to_string(++started_);
    node_index_[supervisor_.start(argv, a_.run_dir + "/node-" + k + ".log", "node " + k)] = k;
  }

  // Until the coordinator process ends by itself: its exit status is the job's.
  int supervise() {
    bool interrupted = false;
    for (;;) {
      if (stop_requested() && !interrupted) {
        interrupted = true;
        if (const pid_t pid = supervisor_.pid_of(coordinator_); pid > 0) ::kill(pid, SIGINT);
      }
      link_.poll([&](const std::string& line) { on_line(line); });
      for (ChildExit e : supervisor_.reap()) {
        if (e.index == coordinator_) link_.poll([&](const std::string& line) { on_line(line); });
        if (e.index == coordinator_ && e.signal != 0 && ended_) {
          // Its verdict came before it died: what crashed was the teardown after the job's
          // end, which a restart would only refuse ("no placed view") or repeat.
          std::fprintf(stderr,
                       "troupe launch: the coordinator process (pid %d) %s after the job ended "
                       "with exit status %d: not restarted\n",
                       int(e.pid), e.describe().c_str(), *ended_);
          e.exit_code = *ended_, e.signal = 0;
        }
        if (e.index != coordinator_) {
          link_.send("exit " + std::to_string(e.pid) + " " + std::to_string(e.exit_code) + " " +
                     std::to_string(e.signal) + " " + node_index_[e.index] + " " + e.describe());
          continue;
        }
        if (e.exit_code == nothing_rejoined_exit && !interrupted) {
          // Every node of the view is gone with the coordinator: from the newest checkpoint,
          // on fresh nodes (those started here; elsewhere, the site starts them).
          std::fprintf(stderr,
                       "troupe launch: no node rejoined the restarted coordinator: the job "
                       "goes on from its newest checkpoint\n");
          resume_ = true;
          start_coordinator(false);
          for (int64_t i = 0; i < local_ && !address_.empty(); ++i) start_node();
          continue;
        }
        if (e.signal == 0 || interrupted) return e.exit_code >= 0 ? e.exit_code : 1;
        if (!restarts_.allow(std::chrono::steady_clock::now()) || port_ == 0) {
          const std::string why =
              port_ == 0 ? "it never listened"
                         : fmt::format("it died {} times in a row, each within {} s of its start",
                                       restarts_.in_a_row(), coordinator_stable_ms.count() / 1000);
          std::fprintf(stderr, "troupe launch: the coordinator process %s; not restarted (%s)\n",
                       e.describe().c_str(), why.c_str());
          return 1;
        }
        std::fprintf(stderr,
                     "troupe launch: the coordinator process (pid %d) %s: restarting it from "
                     "the journal on %s\n",
                     int(e.pid), e.describe().c_str(), address_.c_str());
        start_coordinator(true);
      }
      // Woken at once by a child's end (pidfd) or a line from the coordinator.
      supervisor_.wait_any(std::chrono::steady_clock::now() + std::chrono::milliseconds(50),
                           link_.fds());
    }
  }

  // A line of the coordinator process (launcher_link.h).
  void on_line(const std::string& line) {
    if (line.rfind("start ", 0) == 0)
      for (int k = std::stoi(line.substr(6)); k > 0; --k) start_node();
    if (line.rfind("kill ", 0) == 0)  // a hung node to replace, if it is ours
      supervisor_.signal_child(pid_t(std::stol(line.substr(5))), SIGKILL);
    if (line.rfind("ended ", 0) == 0) ended_ = std::stoi(line.substr(6));
  }

  const LaunchArgs& a_;
  storage::RunLock lock_;
  LauncherLink link_;
  Supervisor supervisor_;
  std::string secret_file_, address_;
  uint16_t port_ = 0;
  int coordinator_ = -1, started_ = 0, threads_ = 1;
  RestartBudget restarts_{coordinator_restarts_max, coordinator_stable_ms};
  int64_t local_ = 0;         // node processes started here
  bool restarting_ = false;   // the first coordinator process is a --restart (rejoinable)
  bool resume_ = false;       // from a checkpoint: no node rejoined a restarted coordinator
  std::optional<int> ended_;  // the running coordinator's verdict ("ended CODE"), once sent
  std::map<int, std::string> node_index_;  // supervisor index → K of node-K.log
};

}  // namespace

std::vector<std::string> coordinator_argv(const LaunchArgs& a, const std::string& link,
                                          bool restart, uint16_t port) {
  std::vector<std::string> v = {self_exe_path(),
                                "launch",
                                "--config",
                                a.config,
                                "--run-dir",
                                a.run_dir,
                                "--nodes",
                                std::to_string(a.nodes),
                                "--secret-file",
                                a.secret_file,
                                "--listen-host",
                                a.listen_host,
                                "--min-nodes",
                                std::to_string(a.min_nodes),
                                "--max-nodes",
                                std::to_string(a.max_nodes),
                                "--local-nodes",
                                std::to_string(a.local_nodes < 0 ? a.nodes : a.local_nodes),
                                "--control-host",
                                a.control.host,
                                "--control-port",
                                std::to_string(a.control.port),
                                "--log-level",
                                a.log_level,
                                "--as-coordinator",
                                "--launcher-link",
                                link};
  for (const std::string& s : a.sets) v.insert(v.end(), {"--set", s});
  for (const std::string& s : a.scale_at) v.insert(v.end(), {"--scale-at", s});
  for (const std::string& s : a.engram_at) v.insert(v.end(), {"--engram-at", s});
  if (a.steps >= 0) v.insert(v.end(), {"--steps", std::to_string(a.steps)});
  if (a.engram_nodes > 0) v.insert(v.end(), {"--engram-nodes", std::to_string(a.engram_nodes)});
  if (a.rollout_nodes > 0) v.insert(v.end(), {"--rollout-nodes", std::to_string(a.rollout_nodes)});
  if (a.threads_per_node > 0)
    v.insert(v.end(), {"--threads-per-node", std::to_string(a.threads_per_node)});
  const uint16_t p = port != 0 ? port : a.port;
  if (p != 0) v.insert(v.end(), {"--port", std::to_string(p)});
  if (restart) {
    v.push_back("--restart");
  } else {
    if (a.resume) v.push_back("--resume");
    if (a.kill_node_at >= 0) v.insert(v.end(), {"--kill-node-at", std::to_string(a.kill_node_at)});
    if (a.kill_rollout_at >= 0)
      v.insert(v.end(), {"--kill-rollout-at", std::to_string(a.kill_rollout_at)});
  }
  return v;
}

int run_coordinator_process(const LaunchArgs& a) {
  Launcher l(a);
  return l.run();
}

}  // namespace troupe::launch
