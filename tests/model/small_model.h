#pragma once
// A whole model small enough for finite differences over every parameter, shared by the
// whole-model gradient tests (doc_mask_test.cc, grpo_model_test.cc).
#include <cmath>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "model/params.h"
#include "model/rng.h"

namespace troupe::model::small_model {

// Small sizes with every part on: mHC, Engram (tiny prime tables), MTP; dense FFN unless
// `moe` (routing is not differentiable at its switch points).
inline ModelConfig small_config(bool moe) {
  return config_from_sets({"model.n_layers=2",
                           "model.d_model=8",
                           "model.hc_mult=3",
                           "model.n_heads=2",
                           "model.q_lora_rank=8",
                           "model.kv_lora_rank=6",
                           "model.qk_nope_head_dim=4",
                           "model.qk_rope_head_dim=4",
                           "model.v_head_dim=6",
                           "model.dense_inter=16",
                           "model.moe_inter=8",
                           "model.engram_layers=[1]",
                           "model.engram_orders=[2, 3]",
                           "model.engram_heads=2",
                           "model.engram_head_dim=3",
                           "model.engram_table_rows=5",
                           "model.engram_conv_kernel=3",
                           "model.engram_conv_dilation=2",
                           "model.rms_norm_eps=0.01",
                           moe ? "model.ffn=moe" : "model.ffn=dense"})
      .model;
}

// Weights away from the init point (norms ≠ 1, conv ≠ 0) so every path carries signal, drawn
// with the counter RNG under `purpose` (each test its own).
template <typename T>
std::vector<T> random_params(const ParamTable& table, uint64_t seed, const char* purpose) {
  CounterRng rng(seed, purpose_of(purpose));
  std::vector<T> p(size_t(table.total()));
  for (const ParamInfo& info : table.all()) {
    const bool norm = info.name.find("norm") != std::string::npos;
    const double scale = info.shape.size() >= 2 ? 1.0 / std::sqrt(double(info.shape.back())) : 0.3;
    for (int64_t i = 0; i < info.numel; ++i)
      p[size_t(info.offset + i)] =
          T((norm ? 1.0 : 0.0) + scale * rng.normal(uint64_t(info.offset + i)));
  }
  return p;
}

}  // namespace troupe::model::small_model
