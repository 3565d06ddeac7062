#pragma once
// Running a scenario's job and injecting its live faults (chaos/inject.cc): `troupe launch`
// in a fresh run directory, watched through its files (events.jsonl, metrics.jsonl,
// coordinator.json); each fault fires when its trigger holds, on the process the job names:
// node nK's pid from its join event, the coordinator's from coordinator.json.
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chaos/scenario.h"

namespace troupe::chaos {

// What happened to one fault of the scenario.
struct FaultRecord {
  bool injected = false;
  int64_t injected_unix_ms = -1;  // when the signal was sent / the command started
  int pid = 0;                    // the process signalled (kill, hang, slow, coordinator)
  std::string error;              // why it could not be injected
};

struct LiveRun {
  int exit_status = -1;  // troupe launch's; 124 when it ran past the scenario's timeout
  bool timed_out = false;
  int64_t wall_ms = 0;
  std::vector<FaultRecord> faults;     // one per Scenario::faults, same order
  std::vector<nlohmann::json> events;  // events.jsonl as the run ended
};

struct LaunchPlan {
  std::string troupe;  // the binary
  std::string run_dir;
  std::vector<std::string> argv;           // the whole `troupe launch ...` command
  std::map<std::string, std::string> env;  // TROUPE_STORAGE_FAULT, ... for the job
};

// Runs plan.argv to its end (or s.timeout_s), injecting s's live faults; never throws for
// a fault that could not be injected (it is recorded), only when launch cannot start.
LiveRun run_live(const Scenario& s, const LaunchPlan& plan);

// Reads a file that grows by whole lines (events.jsonl, metrics.jsonl) from where it left.
class LineTail {
 public:
  explicit LineTail(std::string path) : path_(std::move(path)) {}
  // The complete lines appended since the last call.
  std::vector<std::string> read_new();

 private:
  std::string path_, partial_;
  int64_t offset_ = 0;
};

}  // namespace troupe::chaos
