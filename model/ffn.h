#pragma once
// Feed-forward layers (SPEC-model.md §3, §3.3, §11): dense SwiGLU and DeepSeekMoE with
// auxiliary-loss-free balancing. Each op is a forward/backward pair; the backward
// accumulates (+=) into dx and into the gradient buffer (zeroing is the caller's step).
// Dimension letters: kernels/README.md; here also I = a SwiGLU's hidden width,
// K = top_k, G = n_group.
//
// Determinism: single-threaded, and every output row depends on its own token alone
// (kernels::gemm's bits do not depend on M), so a row gets the same bits whether it is
// computed alone or with others. Per-token results are combined in a fixed order: the
// shared expert first, then the routed experts by ascending id.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace troupe::model {

// Routing keeps its per-token scratch on the stack; DeepSeek-V3 routes over 256 experts.
constexpr int64_t moe_routed_experts_max = 256;

// ---------------------------------------------------------------------------------------
// SwiGLU: out = down_proj (silu(gate_proj x) ⊙ up_proj x)

struct SwigluLayout {
  int64_t gate = 0;   // offset of gate_proj.weight (I,C)  (W1, inside the silu)
  int64_t up = 0;     // offset of up_proj.weight   (I,C)  (W3)
  int64_t down = 0;   // offset of down_proj.weight (C,I)  (W2)
  int64_t inter = 0;  // I
  // prefix e.g. "model.layers.0.mlp."; throws std::out_of_range / std::invalid_argument
  // naming the tensor when one is missing or has the wrong shape.
  static SwigluLayout from(const ParamTable& t, const std::string& prefix);
};

template <typename T>
struct SwigluCache {
  int64_t N = 0, C = 0, I = 0;
  std::vector<T> x;               // (N,C) the input (kept by swiglu_forward for the backward)
  std::vector<T> a;               // (N,I) gate_proj x (pre-activation)
  std::vector<T> b;               // (N,I) up_proj x
  std::vector<T> sig;             // (N,I) σ(a)
  std::vector<T> h;               // (N,I) silu(a) ⊙ b
  mutable std::vector<T> da, db;  // (N,I) backward scratch
};

// x (N,C) -> out (N,C) = beta·out + SwiGLU(x); beta is 0 (overwrite) or 1 (accumulate).
template <typename T>
void swiglu_forward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, const T* x,
                    int64_t N, int64_t C, T* out, SwigluCache<T>& cache, T beta = T(0));
// dout (N,C) -> dx (N,C) +=, grads (gate, up, down) +=.
template <typename T>
void swiglu_backward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, T* grads,
                     const T* dout, T* dx, const SwigluCache<T>& cache);

// One routed expert on the rows it was given, as moe_forward and moe_backward compute it:
// what an expert_shard runs on its own copy of the weights (RoutedExperts below). The
// backward restates the forward from x and the cache; dx +=, grads +=.
template <typename T>
void expert_forward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, const T* x,
                    int64_t N, int64_t C, T* out, SwigluCache<T>& cache);
template <typename T>
void expert_backward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, T* grads,
                     const T* x, const T* dout, T* dx, const SwigluCache<T>& cache);

// The layout of one expert alone in a buffer of 3·I·C values: gate, up, down.
SwigluLayout compact_swiglu_layout(int64_t C, int64_t I);

// ---------------------------------------------------------------------------------------
// MoE: out = SharedSwiGLU(u) + Σ_{i∈top(u)} g_i SwiGLU_i(u), s_i = σ(u·e_i),
// top(u) group-limited by s + b, g_i = s_i / Σ_{j∈top} s_j · routed_scaling.

struct MoeLayout {
  int64_t gate = 0;  // offset of gate.weight (E,C)
  int64_t bias = 0;  // offset of gate.e_score_correction_bias (E): selection only, no grad
  std::vector<SwigluLayout> experts;  // E routed experts, width moe_inter
  bool has_shared = false;
  SwigluLayout shared;  // width n_shared_experts·moe_inter, when has_shared
  // prefix e.g. "model.layers.1.mlp.". Also checks the routing config (E divisible by G,
  // 1 ≤ topk_group ≤ G, 1 ≤ top_k ≤ topk_group·E/G, E ≤ moe_routed_experts_max) and
  // throws std::invalid_argument naming the key otherwise.
  static MoeLayout from(const ParamTable& t, const ModelConfig& cfg, const std::string& prefix);
};

// Where the routed experts of the MoE layers are computed when not here: the expert_shard
// actors (issue 15). An implementation must give the bits that moe_forward and moe_backward
// compute here: expert_forward of expert e on its rows, and expert_backward with dxs rows
// starting at zero and expert e's weight gradient starting at zero for each call (it keeps
// that gradient; moe_backward then neither reads nor writes the experts' weights or grads).
template <typename T>
class RoutedExperts {
 public:
  virtual ~RoutedExperts() = default;
  // MoE block `layer` of micro-batch `mb` (the logical id: which replica computes it may
  // depend on it): rows [begin[e], begin[e+1]) of xs (rows, C) are expert e's tokens, in
  // the order moe_forward gathered them. Fills the same rows of ys (rows, C). Called from
  // several threads at once for different micro-batches.
  virtual void forward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C,
                       const T* xs, T* ys) = 0;
  // dys (rows, C) -> dxs (rows, C), overwritten. `grads` is the micro-batch's gradient (the
  // table's layout): the experts' weight gradients may be added there, where moe_backward
  // would have, or kept where the experts live.
  virtual void backward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C,
                        const T* dys, T* dxs, T* grads) = 0;
};

template <typename T>
struct MoeCache {
  int64_t R = 0, Tlen = 0, N = 0, C = 0, E = 0, K = 0;
  T bal_weight = T(0);
  std::vector<T> x;                   // (N,C) the input
  std::vector<T> s;                   // (N,E) affinities σ(u·e_i)
  std::vector<int32_t> top;           // (N,K) routed experts of each token, ascending id
  std::vector<T> weight;              // (N,K) g of each routed expert
  std::vector<int64_t> slot;          // (N,K) the token's row in the expert-sorted batch
  std::vector<int64_t> expert_begin;  // (E+1) expert e owns sorted rows [begin[e], begin[e+1])
  std::vector<int64_t> token_of;      // (N·K) token of each sorted row (ascending per expert)
  std::vector<T> xs;                  // (N·K,C) inputs gathered in sorted-row order
  std::vector<T> ys;                  // (N·K,C) routed expert outputs, sorted-row order
  std::vector<T> f;                   // (R,E) balance-loss load f_i of each row
  std::vector<int64_t> counts;        // (E) tokens routed to each expert in this call
  SwigluCache<T> shared;              // shared expert (its x stays empty: it reads x above)
  SwigluCache<T> experts;           // routed experts, all N·K sorted rows (x empty: they read xs)
  mutable std::vector<T> dys, dxs;  // (N·K,C) backward scratch
  mutable std::vector<T> dweight;   // (N,K) backward scratch: dL/dg
  mutable std::vector<T> ds;        // (N,E) backward scratch: dL/ds, then dL/d(u·e)
  RoutedExperts<T>* routed = nullptr;  // set by moe_forward: who computed the experts
  int64_t layer = 0, mb = 0;           // the block and the micro-batch, for `routed`
};

// x (R·Tlen, C) -> out (R·Tlen, C) overwritten; rows of Tlen tokens are sequences.
// Returns bal_weight · Σ_rows L_row, the sequence-wise balance loss (SPEC §3.3); the
// backward adds its gradient as if the returned value were a term of the loss.
// With `routed`, the routed experts are computed by it (as block `layer` of micro-batch
// `mb`), else here.
template <typename T>
T moe_forward(const ModelConfig& cfg, const MoeLayout& L, const T* params, const T* x, int64_t R,
              int64_t Tlen, T bal_weight, T* out, MoeCache<T>& cache,
              RoutedExperts<T>* routed = nullptr, int64_t layer = 0, int64_t mb = 0);
// dout (R·Tlen, C) -> dx +=, grads += (gate E and every expert; never the bias).
template <typename T>
void moe_backward(const ModelConfig& cfg, const MoeLayout& L, const T* params, T* grads,
                  const T* dout, T* dx, const MoeCache<T>& cache);

// One token's routing (the discrete part of moe_forward). s (E) affinities, bias (E) ->
// top (K) expert ids ascending, weight (K) g = s / Σ_top s · routed_scaling (no bias).
// Groups are contiguous; a group scores the sum of its top-2 selection scores (its one
// score if it has one expert); every tie goes to the lower index. Precondition: cfg
// passed MoeLayout::from's routing checks.
template <typename T>
void moe_route_token(const ModelConfig& cfg, const T* s, const T* bias, int32_t* top, T* weight);

// The auxiliary-loss-free balancing rule, called by the trainer after each optimizer step
// with counts (E) summed over the whole global batch: b_i += γ·sign(mean(c) − c_i),
// γ = bias_update_speed. The sign is taken exactly (c_i·E against Σc as integers), so
// an expert exactly at the mean is left unchanged.
template <typename T>
void moe_bias_update(const ModelConfig& cfg, const int64_t* counts, T* bias);

}  // namespace troupe::model
