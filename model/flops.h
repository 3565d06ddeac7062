#pragma once
// Matmul FLOPs of one training token (forward + backward = 3× forward), for the
// achieved-GFLOP/s figure that benchmarks print next to the machine's sgemm peak; and every
// arithmetic operation of mHC, for its share of a step's FLOPs (make bench).
#include <cstdint>

#include "model/config.h"

namespace troupe::model {

inline double mla_flops_fwd(const ModelConfig& c, double keys) {
  const double C = double(c.d_model), H = double(c.n_heads);
  double f = c.q_lora_rank * C + H * c.qk_head_dim() * c.q_lora_rank +
             (c.kv_lora_rank + c.qk_rope_head_dim) * C +
             H * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank + C * H * c.v_head_dim;
  f += H * keys * (c.qk_head_dim() + c.v_head_dim);  // scores and P·V (causal: ~T/2 keys)
  return 2.0 * f;
}

inline double train_flops_per_token(const ModelConfig& c) {
  const double C = double(c.d_model), keys = double(c.seq_len) / 2.0;
  const double n = c.residual == Residual::mhc ? double(c.hc_mult) : 0.0;
  double fwd = 0;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    fwd += mla_flops_fwd(c, keys);
    if (c.is_moe_layer(l))
      fwd +=
          2.0 * (c.n_routed_experts * C + 3.0 * C * c.moe_inter * (c.top_k + c.n_shared_experts));
    else
      fwd += 2.0 * 3.0 * C * c.dense_inter;
    fwd += 2.0 * 2.0 * (2 * n + n * n) * n * C;  // two mHC coefficient projections
  }
  fwd += 2.0 * C * c.vocab_size;  // head
  if (c.mtp_depth > 0)
    fwd += 2.0 * 2 * C * C + mla_flops_fwd(c, keys) + 2.0 * 3.0 * C * c.dense_inter +
           2.0 * C * c.vocab_size;
  return 3.0 * fwd;
}

// Every floating-point operation of one mHC instance (model/mhc.h) on one training token,
// forward and backward, counting a multiply, add, divide, exp or square root as one (a
// sigmoid as four); 0 under residual = "plain". With n streams, C width, D = n·C, P = 2n + n²
// coefficient rows and t Sinkhorn rounds:
//   forward : RMSNorm 3D, projections 2PD, H_pre/H_post 12n, H̃ 2n², exp n², Sinkhorn 4tn²,
//             u 2nC, X' 2n²C + 2nC
//   backward: df and dX through H_res 2nC + 2n²C, dH_post and dH_res dots 2nC + 2n²C,
//             coefficient terms 12n + 3n², Sinkhorn 8tn² + n², dφ and dx̂ 4PD, u 4nC, RMSNorm 5D
inline double mhc_instance_flops(const ModelConfig& c) {
  if (c.residual != Residual::mhc) return 0;
  const double n = double(c.hc_mult), C = double(c.d_model), D = n * C, P = 2 * n + n * n;
  const double t = double(c.sinkhorn_iters);
  const double fwd = 3 * D + 2 * P * D + 12 * n + 3 * n * n + 4 * t * n * n + 2 * n * C +
                     2 * n * n * C + 2 * n * C;
  const double bwd = 2 * n * C + 2 * n * n * C + 2 * n * C + 2 * n * n * C + 12 * n + 3 * n * n +
                     8 * t * n * n + n * n + 4 * P * D + 4 * n * C + 5 * D;
  return fwd + bwd;
}

// mHC's FLOPs per training token: two instances per block.
inline double mhc_flops_per_token(const ModelConfig& c) {
  return 2.0 * double(c.n_layers) * mhc_instance_flops(c);
}

}  // namespace troupe::model
