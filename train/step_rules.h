#pragma once
// The rules of one training step that every driver shares (`troupe train`, the data-parallel
// coordinator, the DP test): when to validate, and what a step's collected pieces make of
// the loss line, the clip scale and the expert counts. Pure: no network, no clock. The
// coordinator decides *when* to call these; they decide *what*.
#include <cstdint>
#include <string>
#include <vector>

#include "train/train_config.h"
#include "train/trainer.h"
#include "train/tree.h"

namespace troupe::model {

// Whether step `step` (0-based) of a `steps`-step job ends with a validation: every
// eval_every steps (0: never) and after the last.
bool validate_after(int64_t eval_every, int64_t step, int64_t steps);

// Whether `nodes` cover [0, n) exactly once (every micro-batch, none twice, none outside):
// "" if so, else what is wrong, naming the micro-batch.
std::string check_cover(std::vector<TreeNode> nodes, int64_t n);

// What a data-parallel step's workers and owners reported, as the coordinator holds it.
struct StepReports {
  int64_t step = 0;
  int64_t micro_batches = 0;
  std::vector<Piece<float>> pieces;             // every worker's loss pieces, any order
  std::vector<std::vector<double>> norm_parts;  // by owner (owner order = table order)
  std::vector<double> engram_sumsq;             // by worker: each reduced all the tables
};

// The step's decision: its loss line and what Apply carries.
struct StepDecision {
  StepStats stats;
  double clip_scale = 1;
  std::vector<std::vector<int64_t>> counts;  // tokens per expert per layer, whole batch
  std::string error;                         // non-empty: no Apply (the replicas diverged)
};

// Combines the step's pieces in canonical tree order (combine_pieces), the owners' norm
// parts in table order (grad_norm_from_parts) with the Engram Σ g², and the schedule:
// train_step's bits for any number of workers. The pieces must cover the batch exactly
// once (combine_pieces throws naming a missing piece).
StepDecision decide_step(const TrainJobConfig& cfg, const StepReports& in);

// The workers' idle share of a step (StepStats::idle_fraction): 1 − Σ busy_ms / (workers ·
// wall), clamped to [0, 1]; -1 without workers or wall time.
double idle_fraction(const std::vector<double>& busy_ms, double wall_seconds);

// The validation loss (nats per byte) of the validation pieces, combined in tree order.
double validation_loss(const std::vector<Piece<float>>& pieces);

}  // namespace troupe::model
