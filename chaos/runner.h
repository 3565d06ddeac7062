#pragma once
// `troupe chaos run` and `troupe chaos soak` (launch/cmd_chaos.cc): a scenario's undisturbed
// reference (`troupe train`, cached by the job's hash), then the scenario under `troupe
// launch` with its faults, then the invariants (check.h), as a Report (report.h).
#include <cstdint>
#include <optional>
#include <string>

#include "chaos/report.h"
#include "chaos/scenario.h"

namespace troupe::chaos {

struct RunOptions {
  std::string troupe;                          // the troupe binary the jobs run
  std::string work_dir = "runs/chaos";         // each run gets a fresh folder below it
  std::string cache_dir = "runs/chaos-cache";  // the references, by the job's hash
  std::optional<uint64_t> seed;                // overrides the scenario's
  std::string replay;                          // the command that replays this run
};

// Runs s (the reference first, when not cached) and checks it. Throws std::runtime_error
// only when a job cannot be started or the reference itself fails.
Report run_scenario(const Scenario& s, const RunOptions& o);

// Soak: job `job` of seed `seed` as scenario text: 3 or 4 nodes of `config` and a fault
// (kill, hang, slow, kill_coordinator, scale, drain, a node partitioned at a step, or step
// messages duplicated and reordered all job long) drawn from the seed alone, so the same
// (seed, job) gives the same scenario.
std::string drawn_scenario_text(uint64_t seed, int64_t job, const std::string& config);

}  // namespace troupe::chaos
