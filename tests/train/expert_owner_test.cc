// The owners of the routed experts (train/expert_owner.h): fed their gradients leaf by leaf
// in any order, as replicas and workers would send them, they reduce, clip and update with
// the in-worker bits, across a migration of experts between owners; and what is wrong is
// refused without changing anything.
#include "train/expert_owner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <random>

#include "optim/optim.h"
#include "tests/tiny_test_job.h"
#include "tests/train/expert_test_data.h"
#include "train/schedule.h"

namespace troupe::model {
namespace {

using tests::Result;
using tests::run;
using tests::same_bits;

// The runs of the table between the routed experts: what the workers keep owning.
std::vector<FlatRange> runs_between(const ModelConfig& m, const ParamTable& table) {
  std::vector<FlatRange> rest;
  int64_t at = 0;
  const int64_t size = 3 * m.moe_inter * m.d_model;
  for (const MoeLayout& layer : moe_layouts(m, table))
    for (const SwigluLayout& L : layer.experts) {
      if (L.gate > at) rest.push_back({at, L.gate});
      at = L.gate + size;
    }
  rest.push_back({at, table.total()});
  return rest;
}

// Each expert to the owner on the shard of its first replica, with its weights in params.
std::map<ExpertId, int64_t> own_by_first_replica(
    const ModelConfig& m, const ParamTable& table, const EplbPlacement& placement,
    const std::vector<float>& params, std::vector<std::unique_ptr<ExpertOwner>>& owners) {
  const int64_t part = m.moe_inter * m.d_model;
  const auto per_shard = int64_t(placement.phy2log[0].size() / owners.size());
  const std::vector<MoeLayout> layouts = moe_layouts(m, table);
  std::map<ExpertId, int64_t> owner_of;
  for (int64_t l = 0; l < moe_layer_count(m); ++l)
    for (int64_t e = 0; e < m.n_routed_experts; ++e) {
      const int64_t first = placement.log2phy[size_t(l)][size_t(e)][0];
      const ExpertId id{l, e};
      std::vector<float> w(size_t(3 * part));
      copy_expert_weights(layouts[size_t(l)].experts[size_t(e)], part, params.data(), w.data());
      owners[size_t(first / per_shard)]->own(id, w);
      owner_of[id] = first / per_shard;
    }
  return owner_of;
}

// What the replicas (each computed pair's gradient) and the workers (each micro-batch's note
// of its rows, one per owner) send the owners in a step of n micro-batches.
std::vector<std::function<std::string()>> sends_of(
    const ModelConfig& m, const EplbPlacement& placement, const LocalExpertShards<float>& sh,
    int64_t n, std::vector<std::unique_ptr<ExpertOwner>>& owners,
    const std::map<ExpertId, int64_t>& owner_of) {
  const auto per_shard = int64_t(placement.phy2log[0].size() / owners.size());
  std::vector<std::function<std::string()>> sends;
  for (int64_t mb = 0; mb < n; ++mb) {
    std::vector<std::vector<ExpertId>> routed(owners.size());
    for (int64_t l = 0; l < moe_layer_count(m); ++l)
      for (int64_t e = 0; e < m.n_routed_experts; ++e) {
        const int64_t slot = replica_of(placement, l, e, mb);
        const ExpertSlots<float>& replica = sh.shard(slot / per_shard);
        if (replica.rows(mb, l, slot) <= 0) continue;  // no row: nothing is sent
        const ExpertId id{l, e};
        ExpertOwner* to = owners[size_t(owner_of.at(id))].get();
        routed[size_t(owner_of.at(id))].push_back(id);
        const std::vector<float> g = *replica.grad(mb, l, slot);
        sends.push_back([to, mb, id, g] { return to->add_grad(mb, id, g); });
      }
    for (size_t o = 0; o < owners.size(); ++o)
      sends.push_back(
          [to = owners[o].get(), mb, ids = routed[o]] { return to->note_rows(mb, ids); });
  }
  return sends;
}

// Muon for 4 steps with clipping on, the experts' gradients reaching 3 owners one leaf at a
// time in a shuffled order (notes of the micro-batches' rows among them), half of owner 0's
// experts migrating to owner 2 after step 1: the same global norm every step, the same
// weights at the end as one process's.
TEST(ExpertOwner, OwnersFedLeafByLeafTrainWithTheInWorkerBits) {
  JobConfig job = tests::tiny_test_job({"model.engram_layers=[]", "model.n_layers=3"});
  job.optimizer.name = OptimizerKind::muon;
  const ModelConfig& m = job.model;
  const ParamTable table(m);
  std::vector<float> ref(size_t(table.total()));
  init_params(table, 13, ref.data());
  std::vector<float> worker = ref;  // its routed experts go stale: the owners hold them
  const EplbPlacement placement = tests::skewed_placement(m, 12, 3);
  const int64_t part = m.moe_inter * m.d_model;
  LocalExpertShards<float> sh(m, table, placement, 3, worker.data());
  std::vector<std::unique_ptr<ExpertOwner>> owners;
  for (int i = 0; i < 3; ++i) owners.push_back(std::make_unique<ExpertOwner>(job));
  std::map<ExpertId, int64_t> owner_of = own_by_first_replica(m, table, placement, ref, owners);
  const std::vector<MoeLayout> layouts = moe_layouts(m, table);
  EXPECT_EQ(owners[0]->state_floats(), 6 * part);  // Muon: the weights and their momentum
  const std::vector<FlatRange> rest = runs_between(m, table);
  Optimizer whole(table, job.optimizer, job.train.weight_decay, 1);
  Optimizer worker_opt(table, job.optimizer, job.train.weight_decay, 1);
  const int64_t n = 6;  // micro-batches of 2 rows
  std::mt19937_64 rng(5);
  for (int64_t step = 0; step < 4; ++step) {
    const Batch batch = tests::random_batch(m, 2 * n, 40 + uint64_t(step));
    const Result want = run(m, table, ref, batch, 2, nullptr);
    sh.clear_step();
    const Result got = run(m, table, worker, batch, 2, &sh);
    ASSERT_EQ(got.parts.ce, want.parts.ce) << "step " << step;
    auto sends = sends_of(m, placement, sh, n, owners, owner_of);
    std::shuffle(sends.begin(), sends.end(), rng);
    for (auto& o : owners) o->begin_step(step, n);
    for (const auto& send : sends) ASSERT_EQ(send(), "");
    std::vector<NormRun> runs;
    for (const FlatRange& r : rest)
      runs.push_back({r.lo, grad_norm_parts(table, got.grad.data(), r)});
    for (auto& o : owners) {
      ASSERT_TRUE(o->complete()) << o->missing();
      for (NormRun& r : o->norm_runs()) runs.push_back(std::move(r));
    }
    const double norm = global_grad_norm(table, want.grad.data());
    ASSERT_EQ(grad_norm_from_runs(runs), norm) << "step " << step;
    const double scale = clip_scale(norm / 2, norm), lr = 2e-3;  // clipping on
    whole.update(ref.data(), want.grad.data(), lr, scale, step);
    for (const FlatRange& r : rest)
      worker_opt.update(worker.data(), got.grad.data(), lr, scale, step, r);
    for (auto& o : owners) {
      o->apply(lr, scale);  // and the new weights to every replica
      for (const ExpertId id : o->owned())
        sh.set_expert_weights(id.moe_layer, id.expert, o->weights(id));
    }
    if (step == 1) {  // a rebalance: half of owner 0's experts go to owner 2
      const std::vector<ExpertId> mine = owners[0]->owned();
      for (size_t k = 0; k < mine.size(); k += 2) {
        owners[2]->own_state(mine[k], owners[0]->state_run(mine[k]));
        owners[0]->release(mine[k]);
        owner_of[mine[k]] = 2;
      }
    }
  }
  for (const FlatRange& r : rest)
    EXPECT_TRUE(same_bits({worker.begin() + r.lo, worker.begin() + r.hi},
                          {ref.begin() + r.lo, ref.begin() + r.hi}))
        << "the worker's tensors in [" << r.lo << ", " << r.hi << ")";
  std::vector<float> want(size_t(3 * part));
  for (const auto& [id, o] : owner_of) {
    copy_expert_weights(layouts[size_t(id.moe_layer)].experts[size_t(id.expert)], part, ref.data(),
                        want.data());
    const std::span<const float> w = owners[size_t(o)]->weights(id);
    EXPECT_TRUE(same_bits({w.begin(), w.end()}, want)) << to_string(id);
  }
}

TEST(ExpertOwner, RefusesWhatIsWrongAndChangesNothing) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]", "model.n_layers=3"});
  ExpertOwner owner(job);
  const auto size = size_t(owner.weight_floats());
  const ExpertId a{0, 1}, b{1, 3}, stranger{0, 2};
  owner.own(a, std::vector<float>(size, 1.f));
  owner.own(b, std::vector<float>(size, 2.f));
  EXPECT_EQ(owner.state_floats(), 3 * int64_t(size));  // AdamW: the weights, m and v
  EXPECT_THROW(owner.own(a, std::vector<float>(size)), std::invalid_argument);
  EXPECT_THROW(owner.own(stranger, std::vector<float>(size - 1)), std::invalid_argument);
  EXPECT_THROW(owner.own({2, 0}, std::vector<float>(size)), std::invalid_argument);  // 2 MoE layers
  EXPECT_THROW(owner.own_state(stranger, std::vector<float>(size)), std::invalid_argument);
  EXPECT_THROW(owner.state_run(stranger), std::invalid_argument);

  owner.begin_step(0, 4);
  EXPECT_THROW(owner.own(stranger, std::vector<float>(size)), std::logic_error);
  EXPECT_THROW(owner.release(a), std::logic_error);
  EXPECT_NE(owner.add_grad(4, a, std::vector<float>(size)).find("outside step 0's 4"),
            std::string::npos);
  EXPECT_NE(owner.add_grad(0, stranger, std::vector<float>(size)).find("not owned"),
            std::string::npos);
  EXPECT_NE(owner.add_grad(0, a, std::vector<float>(size + 1)).find("not"), std::string::npos);
  EXPECT_EQ(owner.add_grad(0, a, std::vector<float>(size, 0.5f)), "");
  EXPECT_NE(owner.add_grad(0, a, std::vector<float>(size)).find("twice"), std::string::npos);
  const std::vector<ExpertId> none, both{a, b}, twice{b, b}, foreign{stranger};
  EXPECT_NE(owner.note_rows(0, none).find("routed it no row"), std::string::npos);
  EXPECT_NE(owner.note_rows(1, twice).find("named twice"), std::string::npos);
  EXPECT_NE(owner.note_rows(1, foreign).find("not owned"), std::string::npos);
  EXPECT_EQ(owner.missing(), "micro-batch 0's note of its rows");
  EXPECT_THROW(owner.norm_runs(), std::logic_error);
  EXPECT_THROW(owner.apply(1e-3, 1), std::logic_error);
  EXPECT_EQ(owner.note_rows(0, both), "");
  EXPECT_NE(owner.note_rows(0, both).find("noted already"), std::string::npos);
  for (int64_t mb = 1; mb < 4; ++mb) EXPECT_EQ(owner.note_rows(mb, none), "");
  EXPECT_EQ(owner.missing(), "micro-batch 0's expert 3 of MoE layer 1");
  EXPECT_NE(owner.add_grad(2, b, std::vector<float>(size)).find("no row"), std::string::npos);
  EXPECT_EQ(owner.add_grad(0, b, std::vector<float>(size, 0.25f)), "");
  ASSERT_TRUE(owner.complete());
  const std::vector<float> before = owner.state_run(a);
  owner.apply(1e-3, 1);
  EXPECT_FALSE(same_bits(owner.state_run(a), before));  // it moved
  owner.release(a);
  EXPECT_FALSE(owner.owns(a));
  EXPECT_THROW(owner.release(a), std::invalid_argument);
  // An aborted step leaves nothing behind: the experts move, the next step starts clean.
  owner.begin_step(1, 2);
  EXPECT_EQ(owner.add_grad(1, b, std::vector<float>(size, 1.f)), "");
  owner.abandon_step();
  owner.own_state(a, before);
  owner.begin_step(1, 2);
  EXPECT_EQ(owner.add_grad(1, b, std::vector<float>(size, 1.f)), "");
}

TEST(ExpertOwner, RunsOfTheTableSumInOffsetOrder) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  const ParamTable table(job.model);
  std::vector<float> g(size_t(table.total()));
  std::mt19937_64 rng(3);
  std::normal_distribution<float> dist;
  for (float& x : g) x = dist(rng);
  std::vector<NormRun> runs;
  for (const FlatRange& r : runs_between(job.model, table))
    runs.push_back({r.lo, grad_norm_parts(table, g.data(), r)});
  const int64_t size = 3 * job.model.moe_inter * job.model.d_model;
  for (const MoeLayout& layer : moe_layouts(job.model, table))
    for (const SwigluLayout& L : layer.experts)
      runs.push_back(
          {L.gate, grad_norm_parts(table, g.data() + L.gate, {L.gate, L.gate + size}, L.gate)});
  std::shuffle(runs.begin(), runs.end(), rng);
  EXPECT_EQ(grad_norm_from_runs(runs), global_grad_norm(table, g.data()));
  runs.push_back(runs.front());
  EXPECT_THROW(grad_norm_from_runs(runs), std::invalid_argument);
}

}  // namespace
}  // namespace troupe::model
