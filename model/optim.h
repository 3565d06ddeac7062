#pragma once
// Optimizers over the flat parameter buffer (SPEC §5): AdamW by parameter group, the
// learning-rate schedule, and global-norm clipping summed in a canonical order.
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace troupe::model {

// Linear warm-up to lr over warmup_steps, then cosine to lr·min_lr_ratio at `steps`.
double lr_at(const TrainConfig& t, int64_t step);

// sqrt(Σ g²) over the gradient-trained parameters, accumulated in double over fixed
// chunks in index order, so the bits depend on the gradients alone.
double global_grad_norm(const ParamTable& table, const float* grads);

class AdamW {
 public:
  AdamW(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay);
  // One update: grads are multiplied by grad_scale (clipping) first. step is 0-based.
  void update(float* params, const float* grads, double lr, double grad_scale, int64_t step);
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }

 private:
  const ParamTable& table_;
  OptimizerConfig cfg_;
  double weight_decay_;
  std::vector<float> m_, v_;
};

}  // namespace troupe::model
