#pragma once
// The invariants of a chaos run and what each fault cost (chaos/check.cc, docs/chaos.md).
// The pure parts (over events and journal records) are what tests/chaos checks directly.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "chaos/inject.h"
#include "chaos/scenario.h"

namespace troupe::chaos {

// One row of the table: a fault and what it cost, from events.jsonl.
struct FaultOutcome {
  std::string fault;  // Fault::describe()
  bool injected = false;
  std::string error;
  std::optional<int64_t> detected_ms;  // fault → the coordinator knew (recover's detected_unix_ms,
                                       // or coordinator_restarted)
  std::optional<int64_t> recovered_ms;  // fault → training again (recovered, scaled, drained)
  int64_t steps_redone = 0;  // committed steps thrown away (a rollback's from_step − step)
  int64_t drops_seen = 0;    // `dropped` events (first drop of a kind) while it lasted
};

struct Verdict {
  std::string name;
  bool ok = false;
  std::string detail;
};

// Each fault's row, from the run's events and when the runner injected it.
std::vector<FaultOutcome> fault_outcomes(const Scenario& s, const LiveRun& run);
// Every fault injected, every expected recovery seen, each within the scenario's bounds.
std::vector<Verdict> check_faults(const Scenario& s, const std::vector<FaultOutcome>& rows);
// The faults configured before the job (storage, transfer) took effect, from its events:
// full@S and sync@S each skipped the checkpoint of step S (checkpoint_skipped); a transfer
// corrupt@K was caught (the job's drops count `malformed`). corrupt@S shows only when the
// checkpoint is read (checkpoint_corrupt, on a rollback or resume): checked when it was.
// Each of the scenario's expect_events appears.
std::vector<Verdict> check_configured(const Scenario& s, const std::vector<nlohmann::json>& events);
// Each fabric fault acted at least once (a rule that matched no message tested nothing):
// some process of the job logged its rule's first action, "fabric faults: rule at
// PLAN:LINE (action) first acts on ...", where PLAN is the plan file the job read (its
// rules in the order of s's fabric faults) and LINE the [[rule]]'s line there. `logs`: the text of
// the run's logs (node-K.log, the launch's stderr, where the coordinator's go).
std::vector<Verdict> check_fabric_rules_acted(const Scenario& s, const std::string& plan_path,
                                              const std::string& logs);
// Nothing from an old epoch was applied: in the journal, every commit carries the epoch of
// the newest view journaled before it (a commit of an older epoch is a step of an aborted
// view applied after the change), and commit epochs never decrease.
Verdict check_epochs(const std::vector<nlohmann::json>& journal);
// Commits of a step that was committed before (a rollback or resume redid it).
int64_t steps_redone(const std::vector<nlohmann::json>& journal);
// The job's message drops by reason, from its end-of-job `dropped` summary event.
std::map<std::string, int64_t> job_drops(const std::vector<nlohmann::json>& events);
// Whether two files hold the same bytes; detail says the sizes or the first difference.
Verdict same_bytes(const std::string& name, const std::string& a, const std::string& b);

}  // namespace troupe::chaos
