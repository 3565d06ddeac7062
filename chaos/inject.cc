// The live part of a chaos run: `troupe launch` watched through its files, each live fault
// injected when its trigger holds (inject.h).
#include "chaos/inject.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>

#include "chaos/fabric_plan.h"
#include "chaos/process.h"

namespace troupe::chaos {

std::vector<std::string> LineTail::read_new() {
  std::ifstream in(path_, std::ios::binary);
  std::vector<std::string> lines;
  if (!in) return lines;
  in.seekg(offset_);
  std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  offset_ += int64_t(chunk.size());
  partial_ += chunk;
  size_t at = 0, nl = 0;
  while ((nl = partial_.find('\n', at)) != std::string::npos) {
    lines.push_back(partial_.substr(at, nl - at));
    at = nl + 1;
  }
  partial_.erase(0, at);
  return lines;
}

namespace {

using clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

// The loop's poll period: a file-watching loop has nothing to await. 5 ms while a slow
// node's duty cycle runs (its stop/run periods are ≥ 1 ms but usually tens of ms).
constexpr ms poll_ms{20}, poll_slow_ms{2};
// After the job's timeout: SIGINT to launch, then this long before SIGKILL.
constexpr ms stop_grace_ms{10000};
// A control command (troupe scale, drain) must answer within this.
constexpr int64_t control_timeout_s = 30;

enum class State { waiting, armed, active, done };

struct Pending {
  State state = State::waiting;
  clock::time_point fire_at, until, next_toggle;
  bool stopped = false;      // a slow node's phase
  std::optional<Child> cmd;  // scale, drain
};

class Injector {
 public:
  Injector(const Scenario& s, const LaunchPlan& p)
      : s_(s),
        p_(p),
        events_(p.run_dir + "/events.jsonl"),
        metrics_(p.run_dir + "/metrics.jsonl"),
        pending_(s.faults.size()) {
    run_.faults.resize(s.faults.size());
  }

  LiveRun run() {
    const auto t0 = clock::now();
    launch_ = start_child(p_.argv, p_.run_dir + "/chaos-launch.out",
                          p_.run_dir + "/chaos-launch.err", p_.env);
    for (size_t i = 0; i < s_.faults.size(); ++i)
      if (!s_.faults[i].live()) {  // in the job's environment (or plan) from its start
        run_.faults[i].injected = true;
        run_.faults[i].injected_unix_ms = unix_ms_now();
        pending_[i].state = State::done;
      }
    const auto deadline = t0 + std::chrono::seconds(s_.timeout_s);
    while (!poll_child(launch_)) {
      if (clock::now() >= deadline) {
        run_.timed_out = true;
        stop_child(launch_, stop_grace_ms);
        break;
      }
      tick();
      std::this_thread::sleep_for(any_slow() ? poll_slow_ms : poll_ms);
    }
    finish();
    run_.exit_status = run_.timed_out ? 124 : *launch_.status;
    run_.wall_ms = std::chrono::duration_cast<ms>(clock::now() - t0).count();
    return std::move(run_);
  }

 private:
  void tick() {
    read_files();
    const auto now = clock::now();
    for (size_t i = 0; i < s_.faults.size(); ++i) {
      Pending& p = pending_[i];
      if (p.state == State::waiting && triggered(s_.faults[i].when)) {
        p.state = State::armed;
        p.fire_at = now + ms(s_.faults[i].when.delay_ms);
      }
      if (p.state == State::armed && now >= p.fire_at) fire(i, now);
      if (p.state == State::active) keep_up(i, now);
    }
  }

  void read_files() {
    for (const std::string& line : events_.read_new()) {
      nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
      if (!e.is_object()) continue;
      const std::string kind = e.value("kind", "");
      ++event_counts_[kind];
      if (kind == "join" && e.contains("node") && e.contains("pid"))
        pids_[e["node"].get<std::string>()] = e["pid"].get<int>();
      if (kind == "start" && start_unix_ms_ < 0) start_unix_ms_ = e.value("unix_ms", int64_t(0));
      run_.events.push_back(std::move(e));
    }
    steps_logged_ += int64_t(metrics_.read_new().size());
  }

  bool triggered(const Trigger& t) const {
    if (!t.after_event.empty()) {
      auto it = event_counts_.find(t.after_event);
      return it != event_counts_.end() && it->second >= t.event_count;
    }
    if (start_unix_ms_ < 0) return false;  // training has not started
    if (t.at_ms >= 0) return unix_ms_now() - start_unix_ms_ >= t.at_ms;
    return steps_logged_ >= t.at_step;
  }

  // The pid of node `id` from its join event; 0 while it has not joined.
  int node_pid(const std::string& id) const {
    auto it = pids_.find(id);
    return it == pids_.end() ? 0 : it->second;
  }

  int coordinator_pid() const {
    std::ifstream in(p_.run_dir + "/coordinator.json");
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    return j.is_object() ? j.value("pid", 0) : 0;
  }

  void fire(size_t i, clock::time_point now) {
    const Fault& f = s_.faults[i];
    FaultRecord& r = run_.faults[i];
    Pending& p = pending_[i];
    const bool on_node = !f.node.empty() && f.kind != FaultKind::drain;
    if (on_node && node_pid(f.node) == 0) return;  // not joined yet: wait for it
    r.injected_unix_ms = unix_ms_now();
    p.state = State::done;
    switch (f.kind) {
      case FaultKind::kill:
        return signal_once(r, node_pid(f.node), SIGKILL);
      case FaultKind::kill_coordinator:
        return signal_once(r, coordinator_pid(), SIGKILL);
      case FaultKind::hang:
      case FaultKind::slow:
        signal_once(r, node_pid(f.node), SIGSTOP);
        p.state = r.injected ? State::active : State::done;
        p.stopped = true;
        p.until = now + ms(f.for_ms);
        p.next_toggle = now + ms(f.kind == FaultKind::slow ? f.stop_ms : f.for_ms);
        return;
      case FaultKind::scale:
      case FaultKind::drain:
        return start_control(i);
      case FaultKind::fabric: {  // triggered: every process's rule acts while the file exists
        const std::string file = fabric_switch_file(p_.run_dir, i);
        r.injected = bool(std::ofstream(file));
        if (!r.injected) r.error = "cannot create " + file;
        p.state = r.injected ? State::active : State::done;
        p.until = now + ms(f.for_ms);
        return;
      }
      default:
        return;  // configured before the job: nothing happens live
    }
  }

  void signal_once(FaultRecord& r, int pid, int sig) {
    r.pid = pid;
    r.injected = send_signal(pid, sig);
    if (!r.injected)
      r.error = pid == 0 ? "no such process known" : fmt::format("pid {} was gone", pid);
  }

  void start_control(size_t i) {
    const Fault& f = s_.faults[i];
    std::vector<std::string> argv = {
        p_.troupe,     f.kind == FaultKind::scale ? "scale" : "drain",
        p_.run_dir,    f.kind == FaultKind::scale ? std::to_string(f.nodes) : f.node,
        "--timeout-s", std::to_string(control_timeout_s)};
    const std::string log = fmt::format("{}/chaos-control-{}", p_.run_dir, i);
    pending_[i].cmd = start_child(argv, log + ".out", log + ".err", {});
    pending_[i].state = State::active;
  }

  // Hang: SIGCONT at its end. Slow: SIGSTOP/SIGCONT duty cycle until its end. Control: its
  // command's exit status.
  void keep_up(size_t i, clock::time_point now) {
    const Fault& f = s_.faults[i];
    Pending& p = pending_[i];
    FaultRecord& r = run_.faults[i];
    if (p.cmd) return control_done(i);
    if (f.kind == FaultKind::fabric) {
      if (now >= p.until) switch_off(i);
      return;
    }
    if (now >= p.until) {
      send_signal(r.pid, SIGCONT);  // may be gone: the job evicted and ended it
      p.state = State::done;
      return;
    }
    if (now < p.next_toggle) return;
    p.stopped = !p.stopped;
    send_signal(r.pid, p.stopped ? SIGSTOP : SIGCONT);
    p.next_toggle = now + ms(p.stopped ? f.stop_ms : f.run_ms);
  }

  void switch_off(size_t i) {
    std::remove(fabric_switch_file(p_.run_dir, i).c_str());
    pending_[i].state = State::done;
  }

  void control_done(size_t i) {
    Pending& p = pending_[i];
    if (!poll_child(*p.cmd)) return;
    p.state = State::done;
    FaultRecord& r = run_.faults[i];
    r.injected = *p.cmd->status == 0;
    if (r.injected) return;
    std::ifstream err(fmt::format("{}/chaos-control-{}.err", p_.run_dir, i));
    std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
    r.error = fmt::format("the control command exited {}: {}", *p.cmd->status, text);
  }

  bool any_slow() const {
    for (size_t i = 0; i < pending_.size(); ++i)
      if (pending_[i].state == State::active && s_.faults[i].kind == FaultKind::slow) return true;
    return false;
  }

  // Nothing stays stopped, no command outlives the run; the last events are read.
  void finish() {
    for (size_t i = 0; i < pending_.size(); ++i) {
      Pending& p = pending_[i];
      if (p.state == State::active && s_.faults[i].kind == FaultKind::fabric) switch_off(i);
      if (p.state == State::active && !p.cmd) send_signal(run_.faults[i].pid, SIGCONT);
      if (p.cmd) {
        stop_child(*p.cmd, ms(2000));
        control_done(i);
      }
      if (p.state != State::done && run_.faults[i].error.empty() && s_.faults[i].live())
        run_.faults[i].error = p.state == State::waiting
                                   ? "its trigger never held before the job ended"
                                   : "the job ended before it fired (its node never joined?)";
    }
    read_files();
  }

  const Scenario& s_;
  const LaunchPlan& p_;
  LineTail events_, metrics_;
  std::vector<Pending> pending_;
  LiveRun run_;
  Child launch_;
  std::map<std::string, int64_t> event_counts_;
  std::map<std::string, int> pids_;
  int64_t start_unix_ms_ = -1, steps_logged_ = 0;
};

}  // namespace

LiveRun run_live(const Scenario& s, const LaunchPlan& plan) {
  return Injector(s, plan).run();
}

}  // namespace troupe::chaos
