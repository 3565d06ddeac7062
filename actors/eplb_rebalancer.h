#pragma once
// The eplb_rebalancer actor (issue 15, item 3; docs/eplb.md). It gathers every committed
// step's per-expert token counts (the coordinator forwards the Apply's, which are the
// workers' integer counts summed over the step) over the last eplb.window_steps, and when
// asked, places the expert slots by those loads with the EPLB algorithm (train/eplb.h) on a
// thread of its own: a big model's placement (61 layers × 256 experts, ~17 ms) never delays
// the coordinator's heartbeats. The coordinator holds the step's StepBegin until the answer
// comes (that wait is the rebalance's pause), and drops an answer asked in a view it no
// longer has: a rebalance in flight when a node dies is asked again on the new view.
#include <caf/all.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace troupe::actors {

using eplb_counts_atom = caf::atom_constant<caf::atom("eplbcount")>;  // (EplbCounts)

struct EplbCounts {  // one committed step's token counts, (layer, expert), every layer
  std::vector<std::vector<int64_t>> counts;
};

struct EplbAsk {  // place the slots of `shards` shards before `step`, asked in `epoch`
  int64_t step = 0;
  uint64_t epoch = 0;
  int64_t shards = 0, node_groups = 1;
  std::vector<int64_t> phy2log;  // the placement in use (MoE layers × slots); empty: uniform
};

struct EplbAnswer {
  int64_t step = 0;  // the ask's step, epoch and shards
  uint64_t epoch = 0;
  int64_t shards = 0;
  std::vector<int64_t> phy2log;  // the new placement, MoE layers × slots
  // The window's max/mean slot load per shard (mean over MoE layers) under the placement in
  // use, the new one, and the uniform one (what the job would have without rebalancing).
  double before = 0, after = 0, uniform = 0;
  double compute_ms = 0;  // the placement's own time
  // The slots the new placement gives another logical expert than the one in use, and the
  // weights they must be sent (3·moe_inter·d_model floats each): what the rebalance moves.
  // With the weights sent to every shard at every step they travel anyway (docs/eplb.md).
  int64_t moved_slots = 0, moved_bytes = 0;
  int64_t slots = 0, node_groups = 1, expert_groups = 1, window_steps = 0;
  std::vector<std::vector<double>> loads;  // the window's, (MoE layer, expert)
  std::string error;                       // set: no placement (what went wrong)
};

// The actor, for the model of `cfg` and a window of `window_steps` steps; `own_thread`
// detaches it (a real job), else it runs on the caller's scheduler (the simulation).
caf::actor spawn_eplb_rebalancer(caf::actor_system& system, const model::ModelConfig& cfg,
                                 int64_t window_steps, bool own_thread);

// What the actor computes for `ask` from `window` (oldest first): a pure function.
EplbAnswer place_expert_slots(const model::ModelConfig& cfg,
                              const std::vector<std::vector<std::vector<int64_t>>>& window,
                              const EplbAsk& ask);

}  // namespace troupe::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::EplbCounts)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::EplbAsk)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::actors::EplbAnswer)
