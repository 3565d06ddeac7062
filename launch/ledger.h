#pragma once
// The data ledger's check (`troupe ledger DIR --check`, issue 12): from the journal's records
// in order, which micro-batches the surviving commits consumed, and whether every
// micro-batch of the planned data order up to the last committed step was consumed exactly
// once. Pure: no journal, no files, so tests feed it records.
//
// Records read (storage/journal.h; others are passed over):
//   {"kind":"commit","step":s,"micro_batches":[[lo,hi],...]}  step s consumed [lo,hi) of
//       its micro-batches 0..M-1 (global index s·M + i)
//   {"kind":"resume"|"rollback","step":S}  the job continues from checkpoint S: commits of
//       steps >= S recorded before it are undone (their micro-batches were not consumed)
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace troupe::launch {

// At most this many problem lines are kept (the rest counted): a ledger that lost a whole
// run would otherwise print a line per micro-batch.
constexpr size_t ledger_problems_max = 50;

struct LedgerReport {
  int64_t micro_batches = 0;  // M, per step
  int64_t last_step = -1;     // the last step a surviving commit covers (-1: none)
  int64_t resumes = 0, rollbacks = 0;
  int64_t undone_commits = 0;  // commits a resume or rollback undid
  // What is wrong, one line each: "step 7 micro-batches 0..7 (global 56..63): missing",
  // "... consumed 2 times", or a malformed record. Empty when the ledger checks.
  std::vector<std::string> problems;
  int64_t problems_left_off = 0;  // problems beyond ledger_problems_max, counted only

  bool ok() const { return problems.empty(); }
  // "ledger: steps 0..N committed, K micro-batches (N+1 × M), each consumed once; 3 resumes,
  // 1 rollback, 2 undone commits" (the ok case), or the count of problems.
  std::string summary() const;
};

// Replays `records` (in journal order) for a job of `micro_batches` per step (>= 1).
LedgerReport check_ledger(const std::vector<nlohmann::json>& records, int64_t micro_batches);

// One record as `troupe ledger DIR` prints it: its JSON on one line.
std::string ledger_line(const nlohmann::json& record);

}  // namespace troupe::launch
