// The data ledger's check (launch/ledger.h) on hand-written journals: clean runs, resumes
// and rollbacks that undo commits, and each way a micro-batch can go missing or repeat.
#include "launch/ledger.h"

#include <gtest/gtest.h>

namespace troupe::launch {
namespace {

using nlohmann::json;

json commit(int64_t step, json pieces) {
  return {{"kind", "commit"},
          {"step", step},
          {"epoch", 1},
          {"workers", 2},
          {"micro_batches", std::move(pieces)}};
}
json event(const char* kind, int64_t step) {
  return {{"kind", kind}, {"step", step}};
}

TEST(Ledger, CleanRunInTreePiecesChecks) {
  std::vector<json> recs = {{{"kind", "view"}, {"epoch", 1}, {"nodes", {1, 2}}}};
  for (int64_t s = 0; s < 4; ++s) recs.push_back(commit(s, {{0, 4}, {4, 6}, {6, 8}}));
  recs.push_back({{"kind", "checkpoint"}, {"step", 4}});
  const LedgerReport r = check_ledger(recs, 8);
  EXPECT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.last_step, 3);
  EXPECT_EQ(r.summary(),
            "ledger: steps 0..3 committed, 32 micro-batches (4 x 8), each consumed once; "
            "0 resumes, 0 rollbacks, 0 undone commits");
}

TEST(Ledger, ResumeUndoesTheCommitsAfterItsCheckpoint) {
  // Steps 0..6 committed, killed; resumed from checkpoint 5: steps 5 and 6 redone.
  std::vector<json> recs;
  for (int64_t s = 0; s < 7; ++s) recs.push_back(commit(s, {{0, 4}}));
  recs.push_back(event("resume", 5));
  for (int64_t s = 5; s < 9; ++s) recs.push_back(commit(s, {{0, 4}}));
  recs.push_back(event("rollback", 8));
  recs.push_back(commit(8, {{0, 2}, {2, 4}}));
  const LedgerReport r = check_ledger(recs, 4);
  EXPECT_TRUE(r.ok()) << r.summary();
  EXPECT_EQ(r.last_step, 8);
  EXPECT_EQ(r.resumes, 1);
  EXPECT_EQ(r.rollbacks, 1);
  EXPECT_EQ(r.undone_commits, 3);
  EXPECT_NE(r.summary().find("1 resume, 1 rollback, 3 undone commits"), std::string::npos)
      << r.summary();
}

TEST(Ledger, NamesMissingStepsAndMicroBatches) {
  // Step 1 lost micro-batches 2..3; step 2 never committed; a resume from 0 at the start.
  const std::vector<json> recs = {event("resume", 0), commit(0, {{0, 4}}), commit(1, {{0, 2}}),
                                  commit(3, {{0, 4}})};
  const LedgerReport r = check_ledger(recs, 4);
  ASSERT_EQ(r.problems.size(), 2u) << r.summary();
  EXPECT_EQ(r.problems[0], "step 1 micro-batches 2..3 (global 6..7): missing");
  EXPECT_EQ(r.problems[1], "step 2 micro-batches 0..3 (global 8..11): missing");
  EXPECT_NE(r.summary().find("2 problems"), std::string::npos) << r.summary();
}

TEST(Ledger, NamesRepeatsAndADoubleCommit) {
  const std::vector<json> recs = {commit(0, {{0, 3}, {2, 4}}), commit(1, {{0, 4}}),
                                  commit(1, {{0, 4}})};
  const LedgerReport r = check_ledger(recs, 4);
  ASSERT_EQ(r.problems.size(), 3u) << r.summary();
  EXPECT_EQ(r.problems[0],
            "step 1 committed again by record 2 after record 1 with no resume or rollback "
            "between");
  EXPECT_EQ(r.problems[1], "step 0 micro-batch 2 (global 2): consumed 2 times");
  EXPECT_EQ(r.problems[2], "step 1 micro-batches 0..3 (global 4..7): consumed 2 times");
}

TEST(Ledger, AnUndoneStepMayBeCommittedAgain) {
  const std::vector<json> recs = {commit(0, {{0, 2}}), commit(1, {{0, 2}}), event("rollback", 1),
                                  commit(1, {{0, 2}})};
  EXPECT_TRUE(check_ledger(recs, 2).ok());
}

TEST(Ledger, MalformedRecordsAreNamed) {
  const std::vector<json> recs = {commit(0, {{0, 5}}), {{"kind", "commit"}}};
  const LedgerReport r = check_ledger(recs, 4);
  ASSERT_GE(r.problems.size(), 2u);
  EXPECT_NE(r.problems[0].find("record 0"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[0].find("0 <= lo < hi <= 4"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[1].find("record 1"), std::string::npos) << r.problems[1];
  EXPECT_NE(r.problems[1].find("\"step\""), std::string::npos) << r.problems[1];
}

TEST(Ledger, ProblemsBeyondTheCapAreCounted) {
  std::vector<json> recs;
  for (int64_t s = 0; s < 200; s += 2) recs.push_back(commit(s, {{0, 1}}));
  const LedgerReport r = check_ledger(recs, 1);
  EXPECT_EQ(r.problems.size(), ledger_problems_max);
  EXPECT_EQ(r.problems_left_off, 99 - int64_t(ledger_problems_max));
}

TEST(Ledger, EmptyJournalHasNothingCommitted) {
  const LedgerReport r = check_ledger({}, 8);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.last_step, -1);
  EXPECT_EQ(r.summary(), "ledger: no step committed yet; 0 resumes, 0 rollbacks, 0 undone commits");
}

}  // namespace
}  // namespace troupe::launch
