// The eplb_rebalancer actor: see eplb_rebalancer.h. The placement never changes a bit of the
// result (ExpertShards.SameBitsAsInWorkerForAnyPlacementAndShardCount); only its balance.
#include "actors/eplb_rebalancer.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <exception>

#include "train/eplb.h"
#include "train/eplb_in_place.h"
#include "train/expert_slots.h"

namespace troupe::actors {

namespace {

using Window = std::vector<std::vector<std::vector<int64_t>>>;

// The window's token counts of each MoE layer's experts.
std::vector<std::vector<double>> window_loads(const Window& window, const model::ModelConfig& m) {
  std::vector<std::vector<double>> loads(size_t(model::moe_layer_count(m)),
                                         std::vector<double>(size_t(m.n_routed_experts), 0.0));
  for (const auto& step : window)
    for (size_t l = 0; l < loads.size() && size_t(m.first_k_dense) + l < step.size(); ++l) {
      const auto& c = step[size_t(m.first_k_dense) + l];
      for (size_t e = 0; e < c.size() && e < loads[l].size(); ++e) loads[l][e] += double(c[e]);
    }
  return loads;
}

struct RebalancerState {
  model::ModelConfig model;
  int64_t window_steps = 1;
  std::deque<std::vector<std::vector<int64_t>>> window;
  static inline const char* name = "eplb_rebalancer";
};

caf::behavior rebalancer(caf::stateful_actor<RebalancerState>* self, model::ModelConfig cfg,
                         int64_t window_steps) {
  self->state.model = std::move(cfg);
  self->state.window_steps = std::max<int64_t>(1, window_steps);
  return {
      [=](eplb_counts_atom, EplbCounts& c) {
        auto& s = self->state;
        if (c.counts.empty()) return;
        s.window.push_back(std::move(c.counts));
        while (int64_t(s.window.size()) > s.window_steps) s.window.pop_front();
      },
      [=](const EplbAsk& ask) -> EplbAnswer {
        const auto& s = self->state;
        return place_expert_slots(s.model, Window(s.window.begin(), s.window.end()), ask);
      },
  };
}

}  // namespace

EplbAnswer place_expert_slots(const model::ModelConfig& m, const Window& window,
                              const EplbAsk& ask) {
  EplbAnswer a;
  a.step = ask.step, a.epoch = ask.epoch, a.shards = ask.shards;
  a.window_steps = int64_t(window.size());
  if (ask.shards < 1) {
    a.error =
        "placing the expert slots failed: a view of " + std::to_string(ask.shards) + " shards";
    return a;
  }
  try {
    const model::EplbProblem problem =
        model::shard_problem(m, ask.shards, window_loads(window, m), ask.node_groups);
    const model::EplbPlacement uniform =
        model::rebalance_experts(model::shard_problem(m, ask.shards));
    model::EplbPlacement now = uniform;
    if (const std::string why = ask.phy2log.empty() ? ""
                                                    : model::placement_from_phy2log(
                                                          ask.phy2log, model::moe_layer_count(m),
                                                          m.n_routed_experts, &now);
        !why.empty()) {
      a.error = "the expert placement in use is invalid: " + why;
      return a;
    }
    a.before = model::placement_balance(problem, now);
    a.uniform = model::placement_balance(problem, uniform);
    const auto t0 = std::chrono::steady_clock::now();
    // The new balance, moving as few slots as that allows (train/eplb_in_place.h).
    const model::EplbPlacement next =
        model::keep_in_place(model::rebalance_experts(problem), now, ask.shards, problem.nodes);
    a.compute_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    a.after = model::placement_balance(problem, next);
    a.moved_slots = model::moved_slots(next, now);
    a.moved_bytes = a.moved_slots * 3 * m.moe_inter * m.d_model * int64_t(sizeof(float));
    for (const auto& row : next.phy2log) a.phy2log.insert(a.phy2log.end(), row.begin(), row.end());
    a.slots = problem.replicas, a.node_groups = problem.nodes, a.expert_groups = problem.groups;
    a.loads = problem.loads;
  } catch (const std::exception& e) {
    a.error = std::string("placing the expert slots failed: ") + e.what();
  }
  return a;
}

caf::actor spawn_eplb_rebalancer(caf::actor_system& system, const model::ModelConfig& cfg,
                                 int64_t window_steps, bool own_thread) {
  if (own_thread) return system.spawn<caf::detached>(rebalancer, cfg, window_steps);
  return system.spawn(rebalancer, cfg, window_steps);
}

}  // namespace troupe::actors
