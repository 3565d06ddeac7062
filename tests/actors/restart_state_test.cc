// What a restarted coordinator rebuilds from the journal (actors/journal_log.h): the last
// view, the committed steps, an unfinished reshape undone, and the base of an unfinished
// recovery — which a coordinator killed during a recovery must recover from again, or the
// survivors, who already took its Recover, refuse the new one (found by troupe chaos:
// chaos/scenarios/coordinator_killed_in_recovery.toml).
#include <gtest/gtest.h>

#include <filesystem>

#include "actors/journal_log.h"
#include "storage/journal.h"

namespace troupe::actors {
namespace {

class RestartState : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("troupe-restart-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto j = storage::Journal::open(dir_.string(), false);
    ASSERT_TRUE(j.ok()) << j.status().to_string();
    journal_ = std::move(j).value();
    view(4, {"n1", "n2", "n3"}, {});
    append({{"kind", "commit"}, {"step", 2}, {"epoch", 4}});
  }
  void TearDown() override {
    journal_.reset();
    std::filesystem::remove_all(dir_);
  }
  void append(const nlohmann::json& r) { ASSERT_TRUE(journal_->append(r).ok()); }
  void view(uint64_t epoch, const std::vector<std::string>& nodes,
            const std::vector<std::string>& base) {
    nlohmann::json members = nlohmann::json::array();
    for (size_t i = 0; i < nodes.size(); ++i)
      members.push_back({{"id", nodes[i]},
                         {"address", "127.0.0.1:1"},
                         {"pid", 1},
                         {"worker", nodes[i] + "/worker." + std::to_string(i)}});
    nlohmann::json r = {{"kind", "view"}, {"epoch", epoch}, {"nodes", nodes}, {"members", members}};
    if (!base.empty()) r["recovery_base"] = base;
    append(r);
  }
  std::filesystem::path dir_;
  std::unique_ptr<storage::Journal> journal_;
};

const std::vector<std::string> three = {"n1/worker.0", "n2/worker.1", "n3/worker.2"};

TEST_F(RestartState, ARecoveryInProgressKeepsItsBase) {
  view(5, {"n1", "n2"}, three);  // n3 lost: the survivors recover from the 3-worker view
  const auto r = restart_state(*journal_);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->epoch, 5u);
  EXPECT_EQ(r->members.size(), 2u);
  EXPECT_EQ(r->committed, 3);
  EXPECT_EQ(r->recovery_base, three);
}

TEST_F(RestartState, ARecoveredRecordEndsTheRecovery) {
  view(5, {"n1", "n2"}, three);
  append({{"kind", "recovered"}, {"epoch", 5}});
  EXPECT_TRUE(restart_state(*journal_)->recovery_base.empty());
}

TEST_F(RestartState, ARecoveredRecordOfAnOlderViewDoesNot) {
  append({{"kind", "recovered"}, {"epoch", 4}});
  view(5, {"n1", "n2"}, three);
  EXPECT_EQ(restart_state(*journal_)->recovery_base, three);
}

TEST_F(RestartState, ACommitAfterTheRecoveryEndsIt) {
  view(5, {"n1", "n2"}, three);
  append({{"kind", "commit"}, {"step", 3}, {"epoch", 5}});
  const auto r = restart_state(*journal_);
  EXPECT_TRUE(r->recovery_base.empty());
  EXPECT_EQ(r->committed, 4);
}

TEST_F(RestartState, AViewWithoutABaseHasNone) {
  EXPECT_TRUE(restart_state(*journal_)->recovery_base.empty());
}

// The Engram shards' holders (issue 16): the last placement, with those still waiting for
// their tables; a job that ended has none to restart into.
TEST_F(RestartState, TheLastEngramHoldersWithThoseAwaitingTheirTables) {
  using Holders = std::vector<std::vector<std::string>>;
  append({{"kind", "engram_holders"},
          {"epoch", 4},
          {"holders", Holders{{"n1", "n2"}, {"n2", "n3"}}},
          {"awaiting", nlohmann::json::array()}});
  view(5, {"n1", "n3"}, three);
  const Holders holders = {{"n1", "n3"}, {"n3", "n1"}};
  append({{"kind", "engram_holders"},
          {"epoch", 5},
          {"holders", holders},
          {"awaiting", nlohmann::json::array(
                           {nlohmann::json::array({0, "n3"}), nlohmann::json::array({1, "n1"})})}});
  const auto r = restart_state(*journal_);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->engram_holders, holders);
  const std::vector<std::pair<int64_t, std::string>> awaiting = {{0, "n3"}, {1, "n1"}};
  EXPECT_EQ(r->engram_awaiting, awaiting);
}

// Memory nodes (troupe node --role engram) are journaled with each view; the last view's,
// and their ids count for the next new node's.
TEST_F(RestartState, TheLastViewsMemoryNodes) {
  EXPECT_TRUE(restart_state(*journal_)->memory.empty());
  append({{"kind", "view"},
          {"epoch", 5},
          {"nodes", {"n1", "n2"}},
          {"members", {{{"id", "n1"}, {"address", "a1"}, {"pid", 1}, {"worker", "n1/worker.0"}}}},
          {"memory", {{{"id", "n7"}, {"address", "a7"}, {"pid", 7}}}}});
  const auto r = restart_state(*journal_);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->memory.size(), 1u);
  EXPECT_EQ(r->memory[0].id, "n7");
  EXPECT_EQ(r->memory[0].address, "a7");
  EXPECT_EQ(r->memory[0].pid, 7u);
  EXPECT_EQ(r->max_node, 7);
}

TEST_F(RestartState, NoEngramHoldersWithoutAPlacement) {
  const auto r = restart_state(*journal_);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->engram_holders.empty());
}

// The table-set stack at a step, from the journaled swaps: below the attached set, the step
// and hash of the version its attach saved (what the detach loads and checks); a resume back
// before a swap forgets it; a record without a valid hash is refused, naming the record.
TEST_F(RestartState, TheEngramStackKeepsWhereEachCoveredSetWasSaved) {
  append(
      {{"kind", "engram_attach"}, {"step", 4}, {"name", "X"}, {"saved_hash", "00000000000000ab"}});
  append(
      {{"kind", "engram_detach"}, {"step", 7}, {"name", "X"}, {"saved_hash", "00000000000000cd"}});
  append(
      {{"kind", "engram_attach"}, {"step", 9}, {"name", "X"}, {"saved_hash", "00000000000000ef"}});
  using S = std::vector<StackedSet>;
  EXPECT_EQ(engram_stack_at(*journal_, 4, false), (S{{"initial"}}));
  EXPECT_EQ(engram_stack_at(*journal_, 6, false), (S{{"initial", 4, 0xab}, {"X"}}));
  EXPECT_EQ(engram_stack_at(*journal_, 8, false), (S{{"initial"}}));
  EXPECT_EQ(engram_stack_at(*journal_, 12, false), (S{{"initial", 9, 0xef}, {"X"}}));
  append({{"kind", "resume"}, {"step", 6}});  // the swaps of 7 and 9 are a future gone
  EXPECT_EQ(engram_stack_at(*journal_, 12, false), (S{{"initial", 4, 0xab}, {"X"}}));
  append({{"kind", "engram_attach"}, {"step", 8}, {"name", "Y"}, {"saved_hash", "zz"}});
  try {
    (void)engram_stack_at(*journal_, 12, false);
    FAIL() << "a swap record with a bad hash was taken";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("engram_attach record of step 8"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace troupe::actors
