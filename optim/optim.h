#pragma once
// Optimizers over the flat parameter buffer (SPEC §5): AdamW and Muon by parameter group,
// chosen by [optimizer] name. The schedule and clipping math are train/schedule.h.
#include <cstdint>
#include <optional>
#include <vector>

#include "model/params.h"
#include "optim/muon.h"
#include "optim/optim_config.h"
#include "optim/state_buffer.h"

namespace troupe::model {

// The update a tensor of group g gets under cfg: under "muon" each group is its own;
// under "adamw" the Muon group is updated by AdamW (with decay). What --print-params shows.
OptGroup effective_group(OptGroup g, const OptimizerConfig& cfg);

class AdamW {
 public:
  // offload: the moments live in a file (optim/state_buffer.h); never changes a bit.
  AdamW(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay,
        FlatRange state = {}, bool offload = false);
  // One update of the tensors whose effective group is AdamW or AdamWNoDecay (others are
  // untouched): grads are multiplied by grad_scale (clipping) first. step is 0-based.
  // Only the tensors inside `owned` are touched (a data-parallel owner's share); each must
  // lie inside the state range (std::logic_error otherwise). params and grads hold the
  // table's floats from offset `base` on (Optimizer::update).
  void update(float* params, const float* grads, double lr, double grad_scale, int64_t step,
              FlatRange owned = {}, int64_t base = 0);
  // Throws std::logic_error naming a tensor inside `owned` whose state is not kept here.
  void check_state(FlatRange owned) const;
  // The moments of table tensor i (empty where it keeps none).
  std::vector<float> m(size_t i) const { return state(m_, i); }
  std::vector<float> v(size_t i) const { return state(v_, i); }
  int64_t state_floats() const { return 2 * slots_.floats(); }
  // Tensor i's state as one run: m, then v (2·numel floats). Throws where it is not kept.
  void read_state(size_t i, float* out) const;
  void write_state(size_t i, const float* in);

 private:
  std::vector<float> state(const StateBuffer& s, size_t i) const;

  const ParamTable& table_;
  OptimizerConfig cfg_;
  double weight_decay_;
  StateSlots slots_;
  StateBuffer m_, v_;
  std::vector<float> m_window_, v_window_;  // one tensor's moments, when offloaded
};

// The optimizer of a job: AdamW for every gradient-trained tensor under "adamw"; under
// "muon", Muon for the Muon group and AdamW for the rest. The balancing bias (Rule) is
// never touched here. The trainer constructs one and calls update once per step.
class Optimizer {
 public:
  // threads: Muon's parallelism over tensors; never changes results.
  // state: the tensors whose optimizer state this one keeps (a data-parallel owner's share).
  // offload: that state lives in a file (memory.offload_optimizer; never changes a bit).
  Optimizer(const ParamTable& table, const OptimizerConfig& cfg, double weight_decay, int threads,
            FlatRange state = {}, bool offload = false);
  // One step (0-based) at learning rate lr; grads are multiplied by grad_scale first.
  // Only the tensors inside `owned` are touched; the bits of each tensor's update do not
  // depend on which others are updated with it. params and grads hold the table's floats
  // from offset `base` on (0: the whole table), so an owner of a slice [base, owned.hi)
  // passes that slice alone (an expert's owner: OptimizerTest.AnExpertsOwnerUpdatesItsSlice
  // AloneWithTheBitsOfTheWholeTable); owned.lo < base is std::invalid_argument.
  void update(float* params, const float* grads, double lr, double grad_scale, int64_t step,
              FlatRange owned = {}, int64_t base = 0);
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
