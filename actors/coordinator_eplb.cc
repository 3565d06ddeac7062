// The expert slots' placement follows the routing load (issue 15, item 3; [eplb], with
// parallel.experts = "shards"). The coordinator already has every committed step's
// per-expert token counts (the Apply's); it keeps the last eplb.window_steps of them, and
// before every eplb.rebalance_every_steps-th step places the slots anew with the EPLB
// algorithm (train/eplb.h: groups on one node group, hot experts replicated into the
// redundant slots, replicas packed onto the shards). Every StepBegin carries the placement
// its step computes with, so the workers agree on it through any recovery or coordinator
// restart; a view of another size starts from the uniform placement again. The weights
// follow by themselves: each worker sends its shard its slots' weights at every step.
// No placement changes a bit of the result (ExpertShards.SameBitsAsInWorkerFor...).
#include <fmt/format.h>

#include "actors/coordinator_state.h"
#include "train/eplb.h"
#include "train/expert_slots.h"

namespace troupe::actors::coordinator_impl {

namespace {

bool on_shards(Self* self) {
  return self->state.opt.config.parallel.experts == model::ExpertsAt::shards;
}

// The window's token counts of each MoE layer's experts.
std::vector<std::vector<double>> window_loads(const ExpertBalance& b, const model::ModelConfig& m) {
  std::vector<std::vector<double>> loads(size_t(model::moe_layer_count(m)),
                                         std::vector<double>(size_t(m.n_routed_experts), 0.0));
  for (const auto& step : b.window)
    for (size_t l = 0; l < loads.size(); ++l) {
      const auto& c = step.at(size_t(m.first_k_dense) + l);
      for (size_t e = 0; e < c.size() && e < loads[l].size(); ++e) loads[l][e] += double(c[e]);
    }
  return loads;
}

void rebalance(Self* self, int64_t step, int64_t W) {
  auto& b = self->state.balance;
  const model::ModelConfig& m = self->state.opt.config.model;
  const model::EplbProblem problem = model::shard_problem(m, W, window_loads(b, m));
  model::EplbPlacement now;
  if (b.phy2log.empty()) {
    now = model::rebalance_experts(model::shard_problem(m, W));
  } else if (const std::string why = model::placement_from_phy2log(
                 b.phy2log, model::moe_layer_count(m), m.n_routed_experts, &now);
             !why.empty()) {
    return fail(self, "the expert placement in use is invalid: " + why);
  }
  const double before = model::placement_balance(problem, now);
  const model::EplbPlacement next = model::rebalance_experts(problem);
  const double after = model::placement_balance(problem, next);
  b.phy2log.clear();
  for (const auto& row : next.phy2log) b.phy2log.insert(b.phy2log.end(), row.begin(), row.end());
  b.placed_at = step;
  event(self, "rebalance",
        fmt::format("before step {}: expert slot imbalance {:.3f} -> {:.3f} (max/mean load per "
                    "shard, mean over layers, on {} steps' counts; {} slots on {} shards)",
                    step, before, after, b.window.size(), problem.replicas, W),
        {{"imbalance_before", before},
         {"imbalance_after", after},
         {"window_steps", b.window.size()},
         {"slots", problem.replicas}});
}

}  // namespace

void record_expert_counts(Self* self, const std::vector<std::vector<int64_t>>& counts) {
  auto& b = self->state.balance;
  if (!on_shards(self) || counts.empty()) return;
  b.window.push_back(counts);
  while (int64_t(b.window.size()) > self->state.opt.config.eplb.window_steps) b.window.pop_front();
}

void place_experts(Self* self, train::StepBegin* begin) {
  auto& b = self->state.balance;
  if (!on_shards(self)) return;
  const auto W = int64_t(self->state.core.workers.size());
  if (b.workers != W) {  // placed for another view size: uniform until the next rebalance
    b.phy2log.clear();
    b.placed_at = -1;
    b.workers = W;
  }
  const int64_t every = self->state.opt.config.eplb.rebalance_every_steps;
  if (begin->kind() == train::TRAIN && every > 0 && begin->step() > 0 &&
      begin->step() % every == 0 && b.placed_at != begin->step() && !b.window.empty())
    rebalance(self, begin->step(), W);
  for (int64_t v : b.phy2log) begin->add_phy2log(v);
}

}  // namespace troupe::actors::coordinator_impl
