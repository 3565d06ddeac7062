#pragma once
// Matmul FLOPs of one training token (forward + backward = 3× forward), for the
// achieved-GFLOP/s figure that benchmarks print next to the machine's sgemm peak.
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

}  // namespace troupe::model
