#pragma once
// Expert-parallel load balancing (EPLB, issue 15): where the physical replicas of each
// layer's logical experts go, from each expert's measured load. Pure functions: the
// `troupe eplb` command calls them offline, the eplb_rebalancer actor between steps.
//
// Dimension letters: L layers, E logical experts, R physical expert slots (replicas, all
// layers alike), G expert groups (E/G consecutive experts each), N nodes, P GPUs (P/N per
// node, R/P slots per GPU). Physical slot s lies on GPU s / (R/P), node s / (R/N).
//
// The algorithm is DeepSeek's published one (deepseek-ai/EPLB, eplb.py: the hierarchical
// policy when G % N == 0, else the global policy with one node and one group), followed by
// an improvement pass that keeps the same constraints; per layer the more balanced of the
// two is kept, so a placement is never less balanced than the published algorithm's.
#include <cstdint>
#include <string>
#include <vector>

namespace troupe::model {

// What to place. Loads are token counts (integers or not), one row per layer.
struct EplbProblem {
  std::vector<std::vector<double>> loads;  // (L,E), each >= 0 and finite
  int64_t replicas = 0;                    // R: physical slots per layer, R >= E, R % P == 0
  int64_t groups = 1;                      // G: divides E
  int64_t nodes = 1;                       // N: divides P
  int64_t gpus = 1;                        // P
};

enum class EplbPolicy {
  improved,   // the published algorithm, then the improvement pass; the better per layer
  published,  // the published algorithm alone, step for step (eplb.py's float32 arithmetic)
};

struct EplbPlacement {
  bool hierarchical = false;                               // G % N == 0
  std::vector<std::vector<int64_t>> phy2log;               // (L,R) logical expert of a slot
  std::vector<std::vector<std::vector<int64_t>>> log2phy;  // (L,E,X) slots of an expert, -1 pad
  std::vector<std::vector<int64_t>> logcnt;                // (L,E) replicas of each expert
};

// Throws std::invalid_argument naming what is wrong with the problem and how to fix it:
// no layers or no experts, rows of different lengths, a negative or non-finite load, a
// count below 1, G not dividing E, R < E, R not a multiple of P, N not dividing P.
// G % N != 0 is no error: it selects the global policy, as eplb.py does.
void check_eplb_problem(const EplbProblem& problem);

// The placement of every layer. Deterministic: ties go to the lower index, no randomness.
// Throws as check_eplb_problem does.
EplbPlacement rebalance_experts(const EplbProblem& problem,
                                EplbPolicy policy = EplbPolicy::improved);

// The load of each of the P GPUs of one layer: the sum over its R/P slots of the slot's
// logical load divided by that expert's replica count.  load (E), phy2log (R), logcnt (E)
std::vector<double> gpu_loads(const std::vector<double>& load, const std::vector<int64_t>& phy2log,
                              const std::vector<int64_t>& logcnt, int64_t gpus);

// max/mean of gpu_loads for one layer; 1 when the layer has no load at all.
double layer_balance(const std::vector<double>& load, const std::vector<int64_t>& phy2log,
                     const std::vector<int64_t>& logcnt, int64_t gpus);

// The mean over layers of layer_balance: 1 is perfect, P is everything on one GPU.
double placement_balance(const EplbProblem& problem, const EplbPlacement& placement);

// The balance before any rebalancing: every expert once, in index order, in contiguous
// blocks over the GPUs (expert e on GPU floor(e·P/E); e / (E/P) when P divides E).
double static_balance(const EplbProblem& problem);

// "" if `placement` is a valid placement of `problem`, else the first thing wrong: shapes,
// an expert without a replica, logcnt not matching phy2log, log2phy not its inverse, and
// (hierarchical) an expert group split over nodes or a node without G/N groups.
std::string check_placement(const EplbProblem& problem, const EplbPlacement& placement);

}  // namespace troupe::model
