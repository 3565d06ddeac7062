#pragma once
// Optimizers over the flat parameter buffer (SPEC §5): AdamW and Muon by parameter group,
// chosen by [optimizer] name, the learning-rate schedule, and global-norm clipping summed
// in a canonical order.
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/muon.h"
#include "model/params.h"

namespace troupe::model {

// Linear warm-up to lr over warmup_steps, then cosine to lr·min_lr_ratio at `steps`.
double lr_at(const TrainConfig& t, int64_t step);

// sqrt(Σ g²) over the gradient-trained parameters, accumulated in double over fixed
// chunks in index order, so the bits depend on the gradients alone.
double global_grad_norm(const ParamTable& table, const float* grads);
// The same sum split for data parallelism: the partial sums (one per fixed chunk) of the
// gradient-trained tensors inside `owned`, in table order. Concatenating every owner's
// parts in table order and passing them to grad_norm_from_parts gives global_grad_norm's bits.
std::vector<double> grad_norm_parts(const ParamTable& table, const float* grads, FlatRange owned);
double grad_norm_from_parts(const std::vector<double>& parts);

// The update a tensor of group g gets under cfg: under "muon" each group is its own;
// under "adamw" the Muon group is updated by AdamW (with decay). What --print-params shows.
OptGroup effective_group(OptGroup g, const OptimizerConfig& cfg);

class AdamW {
 public:
  AdamW(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay,
        FlatRange state = {});
  // One update of the tensors whose effective group is AdamW or AdamWNoDecay (others are
  // untouched): grads are multiplied by grad_scale (clipping) first. step is 0-based.
  // Only the tensors inside `owned` are touched (a data-parallel owner's share); each must
  // lie inside the state range (std::logic_error otherwise).
  void update(float* params, const float* grads, double lr, double grad_scale, int64_t step,
              FlatRange owned = {});
  // Throws std::logic_error naming a tensor inside `owned` whose state is not kept here.
  void check_state(FlatRange owned) const;
  // The moments of table tensor i (empty where it keeps none).
  std::span<const float> m(size_t i) const { return state(m_, i); }
  std::span<const float> v(size_t i) const { return state(v_, i); }
  int64_t state_floats() const { return 2 * slots_.floats(); }
  // Tensor i's state as one run: m, then v (2·numel floats). Throws where it is not kept.
  void read_state(size_t i, float* out) const;
  void write_state(size_t i, const float* in);

 private:
  std::span<const float> state(const std::vector<float>& s, size_t i) const;

  const ParamTable& table_;
  OptimizerConfig cfg_;
  double weight_decay_;
  StateSlots slots_;
  std::vector<float> m_, v_;
};

// The optimizer of a job: AdamW for every gradient-trained tensor under "adamw"; under
// "muon", Muon for the Muon group and AdamW for the rest. The balancing bias (Rule) is
// never touched here. The trainer constructs one and calls update once per step.
class Optimizer {
 public:
  // threads: Muon's parallelism over tensors; never changes results.
  // state: the tensors whose optimizer state this one keeps (a data-parallel owner's share).
  Optimizer(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay, int threads,
            FlatRange state = {});
  // One step (0-based) at learning rate lr; grads are multiplied by grad_scale first.
  // Only the tensors inside `owned` are touched; the bits of each tensor's update do not
  // depend on which others are updated with it.
  void update(float* params, const float* grads, double lr, double grad_scale, int64_t step,
              FlatRange owned = {});
  const AdamW& adamw() const { return adamw_; }
  const Muon* muon() const { return muon_ ? &*muon_ : nullptr; }  // null under "adamw"
  int64_t state_floats() const {
    return adamw_.state_floats() + (muon_ ? muon_->state_floats() : 0);
  }
  // Table tensor t's optimizer state as one run of floats (AdamW: m then v; Muon: B), for
  // moving a share between owners. Its size depends on the tensor's group alone (0 for
  // Rule), so every worker agrees on it; read/write throw where the state is not kept here.
  int64_t state_floats_of(size_t t) const;
  void read_state(size_t t, float* out) const;
  void write_state(size_t t, const float* in);

 private:
  const ParamTable& table_;
  OptimizerConfig cfg_;
  double weight_decay_;
  AdamW adamw_;
  std::optional<Muon> muon_;
};

}  // namespace troupe::model
