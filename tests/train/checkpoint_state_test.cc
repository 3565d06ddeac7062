// Checkpoint state (issue 12): a trainer loaded from another's snapshot after k steps goes
// on to the bits of a run that never stopped, whoever owned which tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <utility>

#include "tests/tiny_test_job.h"
#include "train/dp_plan.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

JobConfig job(const std::string& optimizer, bool engram) {
  JobConfig cfg = tests::tiny_test_job({"optimizer.name=" + optimizer});
  cfg.train.threads = 1;
  if (engram) {
    cfg.model.engram_layers = {1};
    cfg.model.engram_table_rows = 211;
  }
  return cfg;
}

using Shards = std::map<std::string, std::vector<float>>;

void add(Shards* into, const std::vector<StateTensor>& snap) {
  for (const StateTensor& t : snap) {
    ASSERT_EQ(into->count(t.name), 0u) << t.name << " written twice";
    (*into)[t.name] = t.data;
  }
}

auto reader(const Shards& shards) {
  return [&shards](const std::string& name, std::vector<float>* out) {
    auto it = shards.find(name);
    if (it == shards.end()) throw std::runtime_error("no shard " + name);
    *out = it->second;
  };
}

// 2 steps, a snapshot written by `writers` owners, loaded into a fresh trainer that owns
// everything, 2 more steps: the weights of 4 steps without a stop.
void resume_matches(const std::string& optimizer, bool engram, int64_t writers) {
  const JobConfig cfg = job(optimizer, engram);
  Trainer straight(cfg);
  for (int64_t s = 0; s < 4; ++s) straight.train_step(s);

  Trainer first(cfg);
  for (int64_t s = 0; s < 2; ++s) first.train_step(s);
  Shards shards;
  const std::vector<FlatRange> owners = plan_owners(first.table, writers);
  for (int64_t w = 0; w < writers; ++w) {
    const std::vector<StateTensor> snap = first.snapshot_state(owners[size_t(w)], w == 0);
    std::vector<std::string> names;
    for (const StateTensor& t : snap) names.push_back(t.name);
    EXPECT_EQ(names, first.state_names(owners[size_t(w)], w == 0));
    add(&shards, snap);
  }
  first.train_step(2);  // the state goes on changing: the snapshot is a copy

  Trainer second(cfg);
  second.load_state(FlatRange{}, reader(shards));
  for (int64_t s = 2; s < 4; ++s) second.train_step(s);
  EXPECT_EQ(second.weights_hash(), straight.weights_hash());
  EXPECT_EQ(second.params, straight.params);
}

TEST(CheckpointState, AdamWResumesBitwise) {
  resume_matches("adamw", false, 1);
}
TEST(CheckpointState, MuonResumesBitwiseFromThreeOwners) {
  resume_matches("muon", false, 3);
}
TEST(CheckpointState, EngramTablesAndMomentsResumeBitwise) {
  resume_matches("adamw", true, 2);
}

// A worker refills one snapshot at every checkpoint (snapshot_state_into) while its share
// changes with the view. The buffers must follow the share, not keep the largest tensor that
// ever sat at each position: that ratchet grew the anchor node's heap through a soak.
TEST(CheckpointState, SnapshotBuffersFollowTheShare) {
  const JobConfig cfg = job("muon", true);
  Trainer t(cfg);
  std::vector<StateTensor> snap;
  size_t worst = 0;
  for (const auto& [workers, me] : std::vector<std::pair<int64_t, int64_t>>{
           {3, 1}, {1, 0}, {2, 1}, {5, 4}, {4, 2}, {2, 0}, {3, 2}, {5, 0}, {3, 1}}) {
    const FlatRange share = plan_owners(t.table, workers)[size_t(me)];
    t.snapshot_state_into(share, me == 0, &snap);
    const std::vector<StateTensor> fresh = t.snapshot_state(share, me == 0);
    ASSERT_EQ(snap.size(), fresh.size());
    size_t held = 0, needed = 0;
    for (size_t i = 0; i < snap.size(); ++i) {
      EXPECT_EQ(snap[i].name, fresh[i].name);
      EXPECT_EQ(snap[i].data, fresh[i].data) << snap[i].name;
      held += snap[i].data.capacity(), needed += fresh[i].data.size();
    }
    worst = std::max(worst, held - needed);
    EXPECT_EQ(held, needed) << "share " << me << " of " << workers << ": " << held - needed
                            << " floats held beyond the share";
  }
  EXPECT_EQ(worst, 0u);
}

TEST(CheckpointState, WrongSizeShardIsNamed) {
  const JobConfig cfg = job("adamw", false);
  Trainer t(cfg);
  Shards shards;
  add(&shards, t.snapshot_state(FlatRange{}, true));
  const std::string victim = "param/" + t.table.all()[1].name;
  shards[victim].pop_back();
  try {
    t.load_state(FlatRange{}, reader(shards));
    FAIL() << "a short shard loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(victim), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace troupe::model
