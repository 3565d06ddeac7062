// Routed experts on expert shards, in one process (train/expert_slots.h): the loss and every
// bit of the reduced gradient are the in-worker ones, for any placement (replicas included)
// and any number of shards. The expert_shard actors carry exactly this over the fabric.
#include "train/expert_slots.h"

#include <gtest/gtest.h>

#include "model/model.h"
#include "optim/optim.h"
#include "tests/tiny_test_job.h"
#include "tests/train/expert_test_data.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

using tests::random_batch;
using tests::Result;
using tests::run;
using tests::same_bits;
using tests::skewed_placement;

TEST(ExpertShards, SameBitsAsInWorkerForAnyPlacementAndShardCount) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]", "model.n_layers=3"});
  const ModelConfig& m = job.model;
  ASSERT_EQ(moe_layer_count(m), 2);
  const ParamTable table(m);
  std::vector<float> params(size_t(table.total()));
  init_params(table, 7, params.data());
  const Batch batch = random_batch(m, 12, 3);  // 6 micro-batches of 2 rows
  const Result want = run(m, table, params, batch, 2, nullptr);
  ASSERT_NE(want.parts.ce, 0.f);

  for (auto [replicas, gpus, shards] :
       {std::tuple{8, 1, 1}, {8, 2, 2}, {12, 3, 3}, {12, 3, 1}, {16, 4, 2}}) {
    const EplbPlacement placement = skewed_placement(m, replicas, gpus);
    LocalExpertShards<float> sh(m, table, placement, shards, params.data());
    const Result got = run(m, table, params, batch, 2, &sh);
    EXPECT_EQ(got.parts.ce, want.parts.ce) << replicas << " slots on " << shards << " shards";
    EXPECT_EQ(got.parts.mtp, want.parts.mtp);
    EXPECT_EQ(got.parts.bal, want.parts.bal);
    EXPECT_TRUE(same_bits(got.grad, want.grad)) << replicas << " slots on " << shards << " shards";
  }
}

// Issue 15's plan (docs/eplb.md, "The plan for the shards' own experts") in one process:
// each routed expert's owner keeps its weights and optimizer state, updates them from the
// shards' reduced gradient and sends the result to every replica; the worker's optimizer
// skips the routed experts. Three steps of Muon (momentum carried) train with the in-worker
// bits: the same losses every step, the same weights at the end.
TEST(ExpertShards, OwnersUpdatingTheirExpertsTrainWithTheInWorkerBits) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]", "model.n_layers=3"});
  const ModelConfig& m = job.model;
  const ParamTable table(m);
  OptimizerConfig cfg;
  cfg.name = OptimizerKind::muon;
  std::vector<float> ref(size_t(table.total()));
  init_params(table, 11, ref.data());
  std::vector<float> worker = ref;  // its routed experts go stale: the owners hold them
  // The routed experts' slices, and the runs of the table between them (the worker's).
  const int64_t part = m.moe_inter * m.d_model;
  const std::vector<MoeLayout> layouts = moe_layouts(m, table);
  struct Owned {
    int64_t layer, expert;
    FlatRange range;
    std::vector<float> w;
    std::optional<Optimizer> opt;
  };
  std::vector<Owned> owners;
  for (int64_t l = 0; l < int64_t(layouts.size()); ++l)
    for (int64_t e = 0; e < m.n_routed_experts; ++e) {
      const SwigluLayout& L = layouts[size_t(l)].experts[size_t(e)];
      ASSERT_EQ(L.up, L.gate + part);  // gate, up, down together: a slot's order
      ASSERT_EQ(L.down, L.up + part);
      owners.push_back({l, e, {L.gate, L.gate + 3 * part}, {}, {}});
    }
  std::vector<FlatRange> rest;
  int64_t at = 0;
  for (const Owned& o : owners) {
    if (o.range.lo > at) rest.push_back({at, o.range.lo});
    at = o.range.hi;
  }
  rest.push_back({at, table.total()});
  for (Owned& o : owners) {
    o.w.assign(ref.begin() + o.range.lo, ref.begin() + o.range.hi);
    o.opt.emplace(table, cfg, 0.1, 1, o.range);
  }
  Optimizer whole(table, cfg, 0.1, 1), worker_opt(table, cfg, 0.1, 1);
  const EplbPlacement placement = skewed_placement(m, 12, 3);
  LocalExpertShards<float> sh(m, table, placement, 3, worker.data());
  for (int step = 0; step < 3; ++step) {
    const Batch batch = random_batch(m, 12, 20 + uint64_t(step));
    const Result want = run(m, table, ref, batch, 2, nullptr);
    sh.clear_step();
    const Result got = run(m, table, worker, batch, 2, &sh);
    EXPECT_EQ(got.parts.ce, want.parts.ce) << "step " << step;
    EXPECT_EQ(got.parts.bal, want.parts.bal) << "step " << step;
    whole.update(ref.data(), want.grad.data(), 1e-3, 0.9, step);
    for (const FlatRange& r : rest)
      worker_opt.update(worker.data(), got.grad.data(), 1e-3, 0.9, step, r);
    for (Owned& o : owners) {
      o.opt->update(o.w.data(), got.grad.data() + o.range.lo, 1e-3, 0.9, step, o.range, o.range.lo);
      sh.set_expert_weights(o.layer, o.expert, o.w);
    }
  }
  for (const FlatRange& r : rest)
    EXPECT_TRUE(same_bits({worker.begin() + r.lo, worker.begin() + r.hi},
                          {ref.begin() + r.lo, ref.begin() + r.hi}))
        << "the worker's tensors in [" << r.lo << ", " << r.hi << ")";
  for (const Owned& o : owners)
    EXPECT_TRUE(same_bits(o.w, {ref.begin() + o.range.lo, ref.begin() + o.range.hi}))
        << "expert " << o.expert << " of MoE layer " << o.layer;
}

TEST(ExpertShards, ReplicasTakeTurnsByMicroBatch) {
  EplbPlacement p;
  p.log2phy = {{{0, -1}, {1, 3}}};
  p.logcnt = {{1, 2}};
  EXPECT_EQ(replica_of(p, 0, 0, 5), 0);
  EXPECT_EQ(replica_of(p, 0, 1, 0), 1);
  EXPECT_EQ(replica_of(p, 0, 1, 1), 3);
  EXPECT_EQ(replica_of(p, 0, 1, 4), 1);
  EXPECT_THROW(replica_of(p, 0, 1, -1), std::invalid_argument);
}

// A job's placement: one redundant slot per shard; a StepBegin's phy2log read back into the
// placement it came from (the same replicas, in slot order), and bad ones named.
TEST(ExpertShards, AJobsPlacementAndItsPhy2log) {
  EXPECT_EQ(shard_slot_count(8, 3), 12);
  EXPECT_EQ(shard_slot_count(8, 1), 9);
  EXPECT_EQ(shard_slot_count(8, 16), 32);
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  const EplbProblem uniform = shard_problem(job.model, 3);
  EXPECT_EQ(uniform.replicas, 12);
  const EplbPlacement p = rebalance_experts(uniform);
  EXPECT_EQ(check_placement(uniform, p), "");
  std::vector<int64_t> flat;
  for (const auto& row : p.phy2log) flat.insert(flat.end(), row.begin(), row.end());
  EplbPlacement back;
  ASSERT_EQ(
      placement_from_phy2log(flat, int64_t(p.phy2log.size()), job.model.n_routed_experts, &back),
      "");
  EXPECT_EQ(back.phy2log, p.phy2log);
  EXPECT_EQ(back.logcnt, p.logcnt);
  back.hierarchical = p.hierarchical;  // the policy that made it: not in a phy2log
  EXPECT_EQ(check_placement(uniform, back), "");
  std::vector<int64_t> lost(12, 0);  // every slot expert 0: the others have none
  EXPECT_NE(placement_from_phy2log(lost, 1, 8, &back).find("has no slot"), std::string::npos);
  lost[3] = 9;
  EXPECT_NE(placement_from_phy2log(lost, 1, 8, &back).find("holds expert 9"), std::string::npos);
  EXPECT_NE(placement_from_phy2log(lost, 5, 8, &back).find("for 5 MoE layers"), std::string::npos);
}

// parallel.node_groups: the shards form node groups where the count divides them, and a
// rebalance keeps each expert group's replicas inside one of them (tiny's 4 groups on 4
// shards in 2 node groups); one group otherwise.
TEST(ExpertShards, NodeGroupsHoldTheirExpertGroupsReplicas) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  std::vector<std::vector<double>> skew(3, {90, 50, 3, 2, 30, 1, 4, 5});
  const EplbProblem grouped = shard_problem(job.model, 4, skew, 2);
  EXPECT_EQ(grouped.nodes, 2);
  EXPECT_EQ(shard_problem(job.model, 3, skew, 2).nodes, 1);  // 2 does not divide 3 shards
  EXPECT_EQ(shard_problem(job.model, 4, skew).nodes, 1);
  const EplbPlacement p = rebalance_experts(grouped);
  EXPECT_TRUE(p.hierarchical);
  EXPECT_EQ(check_placement(grouped, p), "");  // names an expert group on two node groups
  const int64_t per_node = grouped.replicas / grouped.nodes, group_size = 8 / 4;
  for (const auto& row : p.phy2log)
    for (int64_t r = 0; r < grouped.replicas; ++r)
      for (int64_t q = 0; q < grouped.replicas; ++q)
        if (row[size_t(r)] / group_size == row[size_t(q)] / group_size) {
          EXPECT_EQ(r / per_node, q / per_node) << "slots " << r << " and " << q;
        }
}

TEST(ExpertShards, ASlotRefusesWhatItDoesNotHoldOrTwice) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  ExpertSlots<float> s(job.model);
  std::vector<float> w(size_t(s.expert_size()), 0.01f), x(size_t(job.model.d_model), 1.f), y(x);
  EXPECT_THROW(s.forward(0, 0, 3, x.data(), 1, y.data()), std::logic_error);
  EXPECT_THROW(s.set_weights(0, 3, std::span<const float>(w).first(5)), std::invalid_argument);
  s.set_weights(0, 3, w);
  s.forward(0, 0, 3, x.data(), 1, y.data());
  EXPECT_THROW(s.forward(0, 0, 3, x.data(), 1, y.data()), std::logic_error);
  EXPECT_EQ(s.grad(0, 0, 3), nullptr);
  s.backward(0, 0, 3, y.data(), x.data());
  ASSERT_NE(s.grad(0, 0, 3), nullptr);
  EXPECT_THROW(s.backward(0, 0, 3, y.data(), x.data()), std::logic_error);
  s.clear_step();
  EXPECT_EQ(s.grad(0, 0, 3), nullptr);
}

}  // namespace
}  // namespace troupe::model
