#pragma once
// The model's configuration: [model] (SPEC-model.md §2) and [fp8]. Each layer defines the
// section it reads (data/, optim/, train/, runtime/); config/ parses the file into them
// (precedence --set > file > defaults). Every key has a one-line doc in configs/README.md.
#include <cstdint>
#include <string>
#include <vector>

namespace troupe::model {

struct ModelConfig {  // [model]: SPEC-model.md §2
  int64_t vocab_size = 258;
  int64_t seq_len = 128;
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t q_lora_rank = 64;
  int64_t kv_lora_rank = 32;
  int64_t qk_nope_head_dim = 32;
  int64_t qk_rope_head_dim = 16;
  int64_t v_head_dim = 32;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  int64_t hc_mult = 4;
  int64_t sinkhorn_iters = 20;
  int64_t first_k_dense = 1;
  int64_t dense_inter = 384;
  int64_t n_routed_experts = 8;
  int64_t n_shared_experts = 1;
  int64_t moe_inter = 96;
  int64_t top_k = 2;
  int64_t n_group = 4;
  int64_t topk_group = 2;
  double routed_scaling = 1.0;
  double bias_update_speed = 0.001;
  double seq_aux_alpha = 0.0001;
  int64_t mtp_depth = 1;
  double mtp_lambda = 0.3;
  std::vector<int64_t> engram_layers = {1};
  std::vector<int64_t> engram_orders = {2, 3};
  int64_t engram_heads = 4;
  int64_t engram_head_dim = 16;
  int64_t engram_table_rows = 10007;
  int64_t engram_conv_kernel = 4;
  int64_t engram_conv_dilation = 3;
  std::string residual = "mhc";  // registry: mhc | plain
  std::string ffn = "moe";       // registry: moe | dense
  // Set from [fp8] enabled by the config loader; not a [model] key (not in the [model]
  // section's JSON/TOML: a checkpoint's weights are FP32 masters, however they were trained).
  bool fp8 = false;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t l) const { return ffn == "moe" && l >= first_k_dense; }
  bool operator==(const ModelConfig&) const = default;
};

struct Fp8Config {  // [fp8]
  bool enabled = false;
  bool operator==(const Fp8Config&) const = default;
};

}  // namespace troupe::model
