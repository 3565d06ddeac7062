#pragma once
// Job configuration: the structs every layer reads. Parsing (TOML file, then
// --set overrides; precedence --set > file > defaults) lives in model/config_parse.*.
// Every key has a default here and a one-line doc in configs/README.md.
#include <cstdint>
#include <map>
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

struct DataConfig {  // [data]
  std::string corpus_dir = "/usr/share/games/fortunes";
  int64_t val_modulus = 20;   // a document is validation when xxh64(text,0) % val_modulus == 0
  int64_t val_rows_max = 64;  // rows of T evaluated at each validation (0 = all)
  bool shuffle = true;        // shuffle training documents, a new order each epoch
  bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {  // [train]
  int64_t steps = 600;
  int64_t batch_size = 16;       // global rows of T per step
  int64_t micro_batch_rows = 2;  // rows per logical micro-batch (the unit of determinism)
  double lr = 3e-3;
  int64_t warmup_steps = 50;
  double min_lr_ratio = 0.1;  // cosine decays to lr·min_lr_ratio
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  uint64_t seed = 1234;
  // Steps between validations; 0 = none but the last (the last step always runs one).
  int64_t eval_every = 100;
  int64_t threads = 0;  // compute threads; 0 = all cores. Never changes results.
  bool operator==(const TrainConfig&) const = default;
};

struct OptimizerConfig {       // [optimizer]
  std::string name = "adamw";  // registry: adamw | muon (Muon for the block matrices)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  bool operator==(const OptimizerConfig&) const = default;
};

struct Fp8Config {  // [fp8]
  bool enabled = false;
  bool operator==(const Fp8Config&) const = default;
};

// [fault_tolerance]: how failures are noticed (DESIGN §4). Never changes a job's result.
struct FaultToleranceConfig {
  int64_t heartbeat_interval_ms = 100;  // each node process heartbeats the coordinator
  int64_t heartbeat_timeout_ms = 1000;  // silent this long: declared dead (a hang, SIGSTOP)
  int64_t start_timeout_ms = 120000;    // every node joined and every worker ready, or stop
  // A lost node (crash, hang) mid-run: the survivors return to the last committed step,
  // take over its share (optimizer state from the lost owner's buddy) and go on, with the
  // same bits as a run that lost nothing. false: the job stops instead.
  bool recover = true;
  int64_t recovery_timeout_ms = 30000;  // survivors not recovered within this: the job stops
  // A node that hears nothing from the coordinator this long (a hung coordinator; it sends
  // every node a heartbeat each heartbeat_interval_ms) leaves with an error: never a hang.
  int64_t coordinator_timeout_ms = 60000;
  // How many following workers keep a copy of each owner's optimizer state: up to this many
  // neighbouring workers lost together are recovered from (more memory and traffic per step).
  int64_t buddy_copies = 1;
  bool operator==(const FaultToleranceConfig&) const = default;
};

struct JobConfig {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimizerConfig optimizer;
  Fp8Config fp8;
  FaultToleranceConfig fault_tolerance;
  std::string source;  // the file it was read from, for messages
  // Where each explicitly set key came from, for messages: "section.key" ->
  // "configs/x.toml:12" or "--set section.key=value". Keys absent here hold defaults.
  std::map<std::string, std::string> origins;

  // The settings alone (not source/origins): what determines the job's result.
  bool same_settings(const JobConfig& o) const {
    return model == o.model && data == o.data && train == o.train && optimizer == o.optimizer &&
           fp8 == o.fp8 && fault_tolerance == o.fault_tolerance;
  }
};

}  // namespace troupe::model
