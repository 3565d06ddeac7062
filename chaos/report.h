#pragma once
// A chaos run's result: the table printed for people and the JSON written to the run
// directory (chaos-report.json), both from one Report.
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chaos/check.h"

namespace troupe::chaos {

struct Report {
  std::string scenario, run_dir, replay;  // replay: the command that runs it again
  uint64_t seed = 0;
  int64_t wall_ms = 0;
  std::vector<FaultOutcome> faults;
  std::vector<Verdict> checks;
  std::map<std::string, int64_t> drops;  // the job's drops by reason
  int64_t steps_redone = 0;
  bool ok() const;
};

// The table (fault, detected after, recovered after, steps redone, drops seen), then one
// line per check: "ok  name: detail" or "BAD name: detail".
std::string report_text(const Report& r);
nlohmann::json report_json(const Report& r);

}  // namespace troupe::chaos
