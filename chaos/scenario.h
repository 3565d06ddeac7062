#pragma once
// A chaos scenario (chaos/scenarios/*.toml, docs/chaos.md): the job to run, the faults to
// inject at steps, times or events, and the bounds that must hold. parse_scenario checks
// everything before anything starts: an unknown key or fault kind, a value of the wrong
// type or range, an impossible target (node n7 of a 4-node job) is a ScenarioError naming
// the file, the line and what is wrong.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace troupe::chaos {

struct ScenarioError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class FaultKind {
  kill,              // SIGKILL one node process
  hang,              // SIGSTOP one node process for for_ms, then SIGCONT
  slow,              // SIGSTOP/SIGCONT duty cycle on one node for for_ms
  kill_coordinator,  // SIGKILL the coordinator process (the launcher restarts it)
  scale,             // `troupe scale RUN_DIR nodes`
  drain,             // `troupe drain RUN_DIR node`
  storage,           // TROUPE_STORAGE_FAULT=spec for the whole job
  transfer,          // TROUPE_TRANSFER_FAULT=spec for the whole job
  fabric,            // a rule of the TROUPE_FABRIC_FAULTS plan (fabric_plan.h)
};
const char* fault_kind_name(FaultKind k);
// Whether a fault of this kind is injected while the job runs (a signal or a command) rather
// than configured before it starts (an environment variable).
bool injected_live(FaultKind k);

// When a live fault fires: after at_step steps were logged, or at_ms after the job started
// training, or when the event_count-th event of kind after_event was written; then delay_ms.
struct Trigger {
  int64_t at_step = -1, at_ms = -1;
  std::string after_event;
  int64_t event_count = 1;
  int64_t delay_ms = 0;
};

// One rule of the fabric-fault plan (the format of docs/chaos.md, "Fabric faults").
struct FabricRule {
  std::string action;  // drop | delay | duplicate | reorder | corrupt | partition | slow
  std::vector<std::string> from, to, types;
  std::optional<std::pair<int64_t, int64_t>> steps;  // inclusive window
  std::optional<int64_t> after_ms, for_ms, delay_ms, lasts_ms;
  std::optional<double> probability;
  std::vector<std::vector<std::string>> groups;  // partition only
  std::string target;                            // corrupt only: "header" or "payload"
  std::string switch_file;  // a triggered fault's: the runner's file that turns it on
};

struct Fault {
  FaultKind kind = FaultKind::kill;
  uint32_t line = 0;  // of its [[fault]] table in the file
  Trigger when;
  std::string node;     // kill, hang, slow, drain: "nK"
  int64_t for_ms = 0;   // hang, slow, a triggered fabric fault: how long
  int64_t stop_ms = 0;  // slow: stopped this long per period
  int64_t run_ms = 0;   // slow: then running this long
  int64_t nodes = 0;    // scale: the target node count
  std::string spec;     // storage, transfer: the environment variable's value
  FabricRule rule;      // fabric
  // A recovery (recover … recovered; scaled or drained for scale, drain) must follow it.
  // Default: true for kill, kill_coordinator, scale, drain and a hang of at least
  // hang_recovers_ms; `recovers = false` overrides (a reshape a later kill aborts).
  bool recovers = false;
  // A fabric fault with a trigger (at_step, at_ms or after_event): its rule acts from when
  // the trigger holds for for_ms, in every process at once (FabricRule::switch_file).
  bool triggered = false;
  // Injected while the job runs (a signal, a command, a triggered fabric fault), rather than
  // configured before it starts.
  bool live() const;
  std::string describe() const;  // one line for the table: "kill n2 at step 4"
};

// Bounds every fault's recovery must keep (absent: not checked).
struct Bounds {
  std::optional<int64_t> detection_ms_max, recovery_ms_max, steps_redone_max;
};

struct Scenario {
  std::string path, name, description;
  std::string config;             // absolute path of the job's TOML
  std::vector<std::string> sets;  // --set overrides
  int64_t steps = 0, nodes = 0;
  std::vector<std::string> launch_args;  // more `troupe launch` flags (e.g. --max-nodes 5)
  int64_t timeout_s = 0;                 // the job must end within this
  bool fast = false;                     // runs in CI (ctest chaos.scenarios_fast)
  // events.jsonl kinds that must each appear (e.g. "recover" where a reshape must be aborted):
  // what the scenario is about happened, not only that the job ended well.
  std::vector<std::string> expect_events;
  uint64_t seed = 1;  // --seed overrides it
  std::vector<Fault> faults;
  Bounds bounds;
};

// The limits a scenario may ask for, so a typo cannot start an hour-long job.
constexpr int64_t scenario_nodes_max = 16;
constexpr int64_t scenario_steps_max = 10000;
constexpr int64_t scenario_timeout_s_max = 3600;
// A hang this long outlasts the default heartbeat timeout (1000 ms) with margin: the node
// is declared lost, so a recovery is expected by default.
constexpr int64_t hang_recovers_ms = 3000;
constexpr int64_t scenario_fault_ms_max = 600000;  // any for_ms/delay_ms/at_ms: 10 min

// Parses and validates the file (ScenarioError: "FILE:LINE: what is wrong; what to do").
Scenario parse_scenario(const std::string& path);
// The same from text (tests, and soak's drawn scenarios); `path` names it in errors and
// relative config paths resolve against its folder.
Scenario parse_scenario_text(const std::string& text, const std::string& path);

// `s` with its time bounds (detection, recovery) times `scale` (≥ 1), for a build that runs
// every process slower (sanitizers: `troupe chaos run --time-bounds-scale`); the bound on
// steps redone stays.
Scenario with_scaled_time_bounds(Scenario s, double scale);

}  // namespace troupe::chaos
