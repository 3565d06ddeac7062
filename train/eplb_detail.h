#pragma once
// Inside train/eplb: the two per-layer algorithms that rebalance_experts chooses between.
// Not for callers outside train/eplb*.cc and tests.
#include <cstdint>
#include <vector>

namespace troupe::model::eplb_detail {

// The shape one layer is placed under: the problem's, or G = N = 1 for the global policy.
struct Shape {
  int64_t experts = 0, replicas = 0, groups = 1, nodes = 1, gpus = 1;
  int64_t group_size() const { return experts / groups; }
  int64_t groups_per_node() const { return groups / nodes; }
  int64_t experts_per_node() const { return experts / nodes; }
  int64_t slots_per_node() const { return replicas / nodes; }
  int64_t gpus_per_node() const { return gpus / nodes; }
  int64_t slots_per_gpu() const { return replicas / gpus; }
};

// One layer's placement as eplb.py's hierarchical function returns it.
struct LayerPlacement {
  std::vector<int64_t> phy2log;  // (R) logical expert of each slot
  std::vector<int64_t> phyrank;  // (R) which replica of its expert a slot holds, 0-based
  std::vector<int64_t> logcnt;   // (E) replicas of each expert
};

// eplb.py's rebalance_experts_hierarchical for one layer, in its float32 arithmetic, with
// its tie rules where they are defined (Python's min and torch's max take the first) and
// the lower index first where torch's unstable sort leaves ties open.  load (E)
LayerPlacement published_layer(const std::vector<double>& load, const Shape& shape);

// The improvement: groups to nodes and replicas to GPUs by longest-processing-time greedy
// plus swaps off the heaviest pack, replica counts moved to or from the heaviest GPU's expert
// while that lowers the node's peak. Same constraints as the published.  load (E)
LayerPlacement improved_layer(const std::vector<double>& load, const Shape& shape);

// Items into packs of exactly items/packs each (packs divides items), heaviest pack as
// light as the search finds: LPT, then swaps between the heaviest pack and another while
// one lowers the heaviest. Returns the pack of each item.  weight (n) -> pack (n)
std::vector<int64_t> pack_evenly(const std::vector<double>& weight, int64_t packs);

// The largest GPU load of one layer's placement (the numerator of its balance).
double peak_gpu_load(const std::vector<double>& load, const LayerPlacement& p, int64_t gpus);

}  // namespace troupe::model::eplb_detail
