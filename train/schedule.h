#pragma once
// The step's schedule and clipping math (SPEC §5): the learning rate at a step, the global
// gradient norm summed in a canonical order (whole or split by owner), and the clip factor.
// Pure functions: `troupe train`, the workers and the coordinator all call these.
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "train/train_config.h"

namespace troupe::model {

// Linear warm-up to lr over warmup_steps, then cosine to lr·min_lr_ratio at `steps`.
double lr_at(const TrainConfig& t, int64_t step);

// sqrt(Σ g²) over the gradient-trained parameters, accumulated in double over fixed
// chunks in index order, so the bits depend on the gradients alone.
double global_grad_norm(const ParamTable& table, const float* grads);
// The same sum split for data parallelism: the partial sums (one per fixed chunk) of the
// gradient-trained tensors inside `owned`, in table order. Concatenating every owner's
// parts in table order and passing them to grad_norm_from_parts gives global_grad_norm's bits.
// grads holds the table's floats from offset `base` on (an owner's slice: Optimizer::update).
std::vector<double> grad_norm_parts(const ParamTable& table, const float* grads, FlatRange owned,
                                    int64_t base = 0);
double grad_norm_from_parts(const std::vector<double>& parts);
// The same sum from runs of tensors held by different owners (the workers' ranges, the
// routed experts' owners): each run's parts (grad_norm_parts of its tensors) keyed by the
// table offset where it starts. The runs are concatenated in offset order, so any split of
// the table gives global_grad_norm's bits. Two runs at one offset: std::invalid_argument.
struct NormRun {
  int64_t offset = 0;
  std::vector<double> parts;
};
double grad_norm_from_runs(std::vector<NormRun> runs);

// The step's global gradient norm from the dense norm and the Engram tables' Σ g²:
// sqrt(dense² + engram_sumsq) when the model has Engram layers, the dense norm otherwise.
double global_norm_with_engram(const ModelConfig& cfg, double dense_norm, double engram_sumsq);

// The clipping factor for a global gradient norm (1 when no clipping applies).
double clip_scale(double grad_clip, double grad_norm);

}  // namespace troupe::model
