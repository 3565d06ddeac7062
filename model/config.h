#pragma once
// The model's configuration: [model] (SPEC-model.md §2) and [fp8]. Each layer defines the
// section it reads (data/, optim/, train/, runtime/); config/ parses the file into them
// (precedence --set > file > defaults). Every key is documented beside its field (unit,
// meaning; the default is the initialiser) and in configs/README.md.
#include <array>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::model {

// model.residual: how a block's sublayers join the residual stream.
enum class Residual {
  mhc,    // hc_mult streams mixed by manifold-constrained hyper-connections (SPEC §3.2)
  plain,  // one stream, x + f(x)
};
// model.ffn: the feed-forward network of blocks first_k_dense and up.
enum class Ffn {
  moe,    // routed + shared experts (SPEC §3.3)
  dense,  // a dense SwiGLU of dense_inter, like the first first_k_dense blocks
};

// The registries' names in the config (TOML, --set, the troupe_config JSON), in the order
// an "unknown name" message lists them. config/ reads and writes them only through these.
inline constexpr std::array<std::pair<Residual, std::string_view>, 2> kResidualNames = {
    {{Residual::mhc, "mhc"}, {Residual::plain, "plain"}}};
inline constexpr std::array<std::pair<Ffn, std::string_view>, 2> kFfnNames = {
    {{Ffn::moe, "moe"}, {Ffn::dense, "dense"}}};

// memory.recompute: which activations a training step drops in forward and recomputes in
// backward. Never changes a bit (the recomputation is the same forward on the same inputs).
enum class Recompute {
  none,       // every activation is kept for the backward
  attention,  // each MLA sublayer's internals (q, kv, softmax probabilities) are recomputed
  // The streams between blocks are kept, and each attention sublayer's internals and output
  // (attention is the costly part of a block to recompute); the rest of a block (mHC's
  // expanded streams and Sinkhorn, the norms, the FFN or MoE) is re-run in its backward.
  block,
  full,  // only the streams between blocks are kept; a whole block is re-run in its backward
};
inline constexpr std::array<std::pair<Recompute, std::string_view>, 4> kRecomputeNames = {
    {{Recompute::none, "none"},
     {Recompute::attention, "attention"},
     {Recompute::block, "block"},
     {Recompute::full, "full"}}};

struct ModelConfig {                 // [model]: SPEC-model.md §2
  int64_t vocab_size = 258;          // tokens, V: 256 bytes + BOS + EOS; at least 258
  int64_t seq_len = 128;             // tokens, T: tokens per row
  int64_t d_model = 128;             // channels, C: the model width
  int64_t n_layers = 4;              // blocks, L: transformer blocks
  int64_t n_heads = 4;               // heads: attention heads
  int64_t q_lora_rank = 64;          // channels: MLA query latent width
  int64_t kv_lora_rank = 32;         // channels: MLA key/value latent width
  int64_t qk_nope_head_dim = 32;     // channels: per-head query/key part without RoPE
  int64_t qk_rope_head_dim = 16;     // channels: per-head RoPE part (shared k_pe); even
  int64_t v_head_dim = 32;           // channels: per-head value width
  double rope_theta = 10000.0;       // RoPE base θ
  double rms_norm_eps = 1e-6;        // ε of every RMSNorm (and the mHC norm)
  int64_t hc_mult = 4;               // streams, n: mHC residual streams
  int64_t sinkhorn_iters = 20;       // rounds: Sinkhorn–Knopp rounds for H_res
  int64_t first_k_dense = 1;         // blocks: 0..first_k_dense-1 use a dense SwiGLU, not ffn
  int64_t dense_inter = 384;         // channels: dense SwiGLU (and MTP block) hidden width
  int64_t n_routed_experts = 8;      // experts: routed experts per MoE layer
  int64_t n_shared_experts = 1;      // experts: shared experts per MoE layer
  int64_t moe_inter = 96;            // channels: hidden width of each expert
  int64_t top_k = 2;                 // experts: routed experts per token
  int64_t n_group = 4;               // groups: expert groups (contiguous, ≥ 2 experts each)
  int64_t topk_group = 2;            // groups: groups kept per token
  double routed_scaling = 1.0;       // factor on the normalised routed weights g_i
  double bias_update_speed = 0.001;  // per step, γ: the auxiliary-loss-free bias update
  // The balancing bias every MoE layer starts from (E values; empty: zeros). A skewed one
  // (with bias_update_speed = 0, say) makes the routing favour a few experts: EPLB's tests.
  std::vector<double> gate_bias_init = {};
  double seq_aux_alpha = 0.0001;                // α: weight of the sequence-wise balance loss
  int64_t mtp_depth = 1;                        // modules: multi-token-prediction depth, 0 or 1
  double mtp_lambda = 0.3;                      // weight of the MTP loss
  std::vector<int64_t> engram_layers = {1};     // block ids with an Engram module; [] = none
  std::vector<int64_t> engram_orders = {2, 3};  // n-gram orders n of the hashed n-grams
  int64_t engram_heads = 4;                     // heads, K: hash heads per order
  int64_t engram_head_dim = 16;                 // channels: width of each table row
  int64_t engram_table_rows = 10007;            // rows: tables are the distinct primes ≥ this
  int64_t engram_conv_kernel = 4;               // taps: Engram's depthwise causal conv
  int64_t engram_conv_dilation = 3;             // tokens: that conv's dilation
  Residual residual = Residual::mhc;            // registry (kResidualNames): mhc | plain
  Ffn ffn = Ffn::moe;                           // registry (kFfnNames): moe | dense
  // Set from [fp8] enabled by the config loader; not a [model] key (not in the [model]
  // section's JSON/TOML: a checkpoint's weights are FP32 masters, however they were trained).
  bool fp8 = false;
  // Set from [memory] recompute by the config loader, likewise not a [model] key.
  Recompute recompute = Recompute::none;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t l) const { return ffn == Ffn::moe && l >= first_k_dense; }
  bool operator==(const ModelConfig&) const = default;
};

struct Fp8Config {       // [fp8]: SPEC-model.md §6
  bool enabled = false;  // FP8 (E4M3) GEMMs in every block Linear (1×128 / 128×128 tiles)
  bool operator==(const Fp8Config&) const = default;
};

struct MemoryConfig {  // [memory]: what a step keeps in memory (docs/memory.md)
  Recompute recompute =
      Recompute::none;  // registry (kRecomputeNames): none | attention | block | full
  // The optimizer state (AdamW moments, Muon momentum) in a file in $TMPDIR (default
  // /var/tmp), mapped in for each update and let go after it (optim/state_buffer.h).
  bool offload_optimizer = false;
  bool operator==(const MemoryConfig&) const = default;
};

}  // namespace troupe::model
