#pragma once
// Muon (SPEC §5) for the OptGroup::Muon tensors: the 2-D matrices inside blocks. Nesterov
// momentum, then the update direction is orthogonalised by five Newton–Schulz iterations
// (NS5), then scaled as Moonlight does so that Muon shares AdamW's lr and weight decay:
//   B ← μB + G;   O = NS5(G + μB);   W ← W − lr·(0.2·sqrt(max(rows, cols))·O + wd·W).
// FP32, a fixed iteration count and kernels::gemm: the bits depend on the inputs alone.
#include <cstdint>
#include <vector>

#include "model/params.h"
#include "optim/state_buffer.h"

namespace troupe::model {

// The constants of SPEC §5. Not config keys: the SPEC fixes them.
struct MuonSettings {
  double momentum = 0.95;  // μ
  int ns_steps = 5;        // Newton–Schulz iterations
};

// out (rows, cols) = NS5(m (rows, cols)): m / (‖m‖_F + 1e-7), transposed when rows > cols,
// then ns_steps of A = X Xᵀ; X ← aX + (bA + cA²)X with (a,b,c) = (3.4445, −4.7750, 2.0315),
// transposed back. Its singular values land in roughly [0.7, 1.2], not exactly 1: the
// coefficients trade exactness for speed. scratch is resized as needed; out may not alias m.
void newton_schulz5(const float* m, int64_t rows, int64_t cols, float* out, int ns_steps,
                    std::vector<float>& scratch);

class Muon {
 public:
  // threads: tensors are updated in parallel, one tensor per work item; never changes bits.
  // state: the tensors whose momentum this one keeps (see StateSlots in params.h).
  // offload: the momentum lives in a file (optim/state_buffer.h); never changes a bit.
  Muon(const ParamTable& table, MuonSettings settings, int threads, FlatRange state = {},
       bool offload = false);
  // Updates every OptGroup::Muon tensor of params (others untouched). grads are multiplied
  // by grad_scale (clipping) first; weight_decay is decoupled, applied as lr·wd·W.
  // Only the tensors inside `owned` are touched (a data-parallel owner's share); each must
  // lie inside the state range (std::logic_error otherwise).
  // params and grads hold the table's floats from offset `base` on (Optimizer::update).
  void update(float* params, const float* grads, double lr, double grad_scale, double weight_decay,
              FlatRange owned = {}, int64_t base = 0);
  // Throws std::logic_error naming a tensor inside `owned` whose state is not kept here.
  void check_state(FlatRange owned) const;
  int64_t state_floats() const { return slots_.floats(); }
  // Tensor t's momentum B (numel floats). Throws where it is not kept here.
  void read_state(size_t t, float* out) const;
  void write_state(size_t t, const float* in);

 private:
  void update_tensor(size_t t, const ParamInfo& p, float* w, const float* g, float scale, double lr,
                     double weight_decay, int worker);

  const ParamTable& table_;
  MuonSettings settings_;
  int threads_;
  std::vector<size_t> tensors_;  // the Muon tensors' indices in the table, in table order
  StateSlots slots_;             // where each tensor's momentum is kept, if here
  StateBuffer b_;                // the momentum B of the tensors kept here
  // Per worker: the Nesterov direction, NS5's output and NS5's scratch.
  std::vector<std::vector<float>> dir_, ortho_, scratch_;
  std::vector<std::vector<float>> window_;  // per worker: one tensor's B, when offloaded
};

}  // namespace troupe::model
