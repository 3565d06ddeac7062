// Validation: the range of each key and the rules across keys, on a parsed JobConfig.
// Messages name where each key was set (cfg.origins) and what to do.
#include <fmt/format.h>

#include <cmath>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config_fields.h"
#include "config/config_parse.h"
#include "train/grpo.h"

namespace troupe::model {
using namespace config_detail;
namespace {

class Checker {
 public:
  explicit Checker(const JobConfig& cfg) : cfg_(cfg), view_(cfg) {}

  int64_t i(const std::string& key) { return *std::get<int64_t*>(ref(key)); }
  double d(const std::string& key) { return *std::get<double*>(ref(key)); }

  // One key's value breaks a rule: "file:line: key = value: what".
  [[noreturn]] void fail(const std::string& key, const std::string& what) {
    auto it = cfg_.origins.find(key);
    const std::string text = value_text(ref(key));
    if (it == cfg_.origins.end()) {  // a default, or set by code rather than config
      JobConfig defaults;
      const bool is_default = value_text(ref(key, defaults)) == text;
      throw ConfigError(fmt::format("{}{} = {}{}: {}", prefix(), key, text,
                                    is_default ? " (default)" : "", what));
    }
    if (it->second.starts_with("--set "))
      throw ConfigError(fmt::format("{}: {}", it->second, what));
    throw ConfigError(fmt::format("{}: {} = {}: {}", it->second, key, text, what));
  }

  // A rule across keys: "where: what", where = the first of `keys` set explicitly.
  [[noreturn]] void fail_across(const std::vector<std::string>& keys, const std::string& what) {
    for (const std::string& k : keys) {
      auto it = cfg_.origins.find(k);
      if (it != cfg_.origins.end()) throw ConfigError(fmt::format("{}: {}", it->second, what));
    }
    throw ConfigError(prefix() + what);
  }

  void positive(const std::string& key) {
    if (i(key) <= 0) fail(key, "must be a positive integer");
  }
  void non_negative(const std::string& key) {
    if (i(key) < 0) fail(key, "must be a non-negative integer");
  }
  void positive_real(const std::string& key) {
    if (!(d(key) > 0)) fail(key, "must be a positive number");
  }
  void non_negative_real(const std::string& key) {
    if (!(d(key) >= 0)) fail(key, "must be a non-negative number");
  }
  void fraction(const std::string& key, bool one_allowed) {
    const double v = d(key);
    if (!(v >= 0) || v > 1 || (!one_allowed && v == 1))
      fail(key, one_allowed ? "must be in [0, 1]" : "must be in [0, 1)");
  }
  // Every float key is finite (TOML allows inf and nan).
  void all_reals_finite() {
    for (const Section& s : sections())
      for (const Field& f : s.fields)
        if (const FieldRef r = f.ref(view_);
            std::holds_alternative<double*>(r) && !std::isfinite(*std::get<double*>(r)))
          fail(s.name + "." + f.name, "must be a finite number");
  }

 private:
  FieldRef ref(const std::string& key) { return ref(key, view_); }
  static FieldRef ref(const std::string& key, JobConfig& cfg) {
    const size_t dot = key.find('.');
    const Section* s = find_section(key.substr(0, dot));
    const Field* f = s ? find_field(*s, key.substr(dot + 1)) : nullptr;
    if (!f) throw std::logic_error("validate: no config key " + key);
    return f->ref(cfg);
  }
  std::string prefix() const { return cfg_.source.empty() ? "" : cfg_.source + ": "; }

  const JobConfig& cfg_;
  JobConfig view_;  // a copy, so that the registry's (mutable) field refs can read it
};

// The routed experts and their groups (SPEC §3.3): each token can reach top_k experts.
void validate_routing(Checker& c, const ModelConfig& m) {
  const std::vector<std::string> moe = {"model.top_k", "model.topk_group", "model.n_group",
                                        "model.n_routed_experts"};
  if (m.n_routed_experts % m.n_group != 0)
    c.fail_across({"model.n_routed_experts", "model.n_group"},
                  fmt::format("model.n_routed_experts = {} must be a multiple of model.n_group "
                              "= {}",
                              m.n_routed_experts, m.n_group));
  if (m.n_routed_experts / m.n_group < 2)
    c.fail_across({"model.n_group", "model.n_routed_experts"},
                  fmt::format("model.n_group = {} leaves {} expert(s) per group; a group needs "
                              "at least 2 (its score is the sum of its top 2)",
                              m.n_group, m.n_routed_experts / m.n_group));
  if (m.topk_group > m.n_group)
    c.fail_across({"model.topk_group", "model.n_group"},
                  fmt::format("model.topk_group = {} must be at most model.n_group = {}",
                              m.topk_group, m.n_group));
  const int64_t reachable = m.topk_group * (m.n_routed_experts / m.n_group);
  if (m.top_k > reachable)
    c.fail_across(moe,
                  fmt::format("model.top_k = {} must be at most topk_group·(n_routed_experts"
                              "/n_group) = {}·({}/{}) = {}; lower top_k or raise topk_group",
                              m.top_k, m.topk_group, m.n_routed_experts, m.n_group, reachable));
  if (!m.gate_bias_init.empty() && int64_t(m.gate_bias_init.size()) != m.n_routed_experts)
    c.fail_across({"model.gate_bias_init", "model.n_routed_experts"},
                  fmt::format("model.gate_bias_init has {} values; it needs one per routed expert "
                              "({}), or [] for zeros",
                              m.gate_bias_init.size(), m.n_routed_experts));
  for (double b : m.gate_bias_init)
    if (!std::isfinite(b) || std::abs(b) > 1e3)
      c.fail("model.gate_bias_init",
             fmt::format("{} is not a bias a router can use: every value must be finite and "
                         "within [-1000, 1000]",
                         b));
}

// Engram's layers and n-gram orders (SPEC §4): in range and distinct.
// [engram] (issue 16): shards hold whole tables, so there are at most as many as tables.
void validate_engram_placement(Checker& c, const JobConfig& cfg) {
  c.positive("engram.shards");
  c.non_negative("engram.host_cache_bytes");
  if (cfg.engram.placement != EngramAt::shards && cfg.engram.host_cache_bytes > 0)
    c.fail_across({"engram.host_cache_bytes", "engram.placement"},
                  "engram.host_cache_bytes bounds the rows an engram_shard keeps in memory; it "
                  "needs engram.placement = \"shards\" (or set it to 0)");
  if (cfg.engram.placement != EngramAt::shards) return;
  const int64_t tables = int64_t(cfg.model.engram_layers.size() * cfg.model.engram_orders.size()) *
                         cfg.model.engram_heads;
  if (tables == 0)
    c.fail_across({"engram.placement", "model.engram_layers"},
                  "engram.placement = \"shards\" needs Engram tables: set model.engram_layers "
                  "(or engram.placement = \"replicated\")");
  else if (cfg.engram.shards > tables)
    c.fail_across({"engram.shards", "model.engram_layers"},
                  fmt::format("engram.shards = {} is more than the model's {} Engram tables "
                              "(layers × orders × heads): a shard holds whole tables",
                              cfg.engram.shards, tables));
}

void validate_engram(Checker& c, const ModelConfig& m) {
  std::set<int64_t> seen;
  for (int64_t l : m.engram_layers) {
    if (l < 0 || l >= m.n_layers)
      c.fail("model.engram_layers",
             fmt::format("layer {} is outside 0..n_layers-1 = 0..{}", l, m.n_layers - 1));
    if (!seen.insert(l).second)
      c.fail("model.engram_layers", fmt::format("layer {} is listed twice", l));
  }
  seen.clear();
  for (int64_t n : m.engram_orders) {
    if (n < 1) c.fail("model.engram_orders", "every order must be a positive integer");
    if (!seen.insert(n).second)
      c.fail("model.engram_orders", fmt::format("order {} is listed twice", n));
  }
  if (!m.engram_layers.empty() && m.engram_orders.empty())
    c.fail("model.engram_orders", "must not be empty when model.engram_layers is set");
}

void validate_model(Checker& c, const ModelConfig& m) {
  for (const char* k : {"seq_len",
                        "d_model",
                        "n_layers",
                        "n_heads",
                        "q_lora_rank",
                        "kv_lora_rank",
                        "qk_nope_head_dim",
                        "qk_rope_head_dim",
                        "v_head_dim",
                        "hc_mult",
                        "sinkhorn_iters",
                        "dense_inter",
                        "n_routed_experts",
                        "moe_inter",
                        "top_k",
                        "n_group",
                        "topk_group",
                        "engram_heads",
                        "engram_head_dim",
                        "engram_table_rows",
                        "engram_conv_kernel",
                        "engram_conv_dilation"})
    c.positive(std::string("model.") + k);
  for (const char* k : {"first_k_dense", "n_shared_experts", "mtp_depth"})
    c.non_negative(std::string("model.") + k);
  for (const char* k : {"rope_theta", "rms_norm_eps", "routed_scaling"})
    c.positive_real(std::string("model.") + k);
  for (const char* k : {"bias_update_speed", "seq_aux_alpha", "mtp_lambda"})
    c.non_negative_real(std::string("model.") + k);

  if (m.vocab_size < 258)
    c.fail("model.vocab_size", "must be at least 258 (256 bytes + BOS + EOS)");
  if (m.qk_rope_head_dim % 2 != 0)
    c.fail("model.qk_rope_head_dim", "must be even (RoPE rotates pairs of dimensions)");
  if (m.first_k_dense > m.n_layers)
    c.fail_across({"model.first_k_dense", "model.n_layers"},
                  fmt::format("model.first_k_dense = {} must be at most model.n_layers = {}",
                              m.first_k_dense, m.n_layers));
  if (m.mtp_depth > 1) c.fail("model.mtp_depth", "must be 0 or 1 (SPEC §3.4 defines depth 1)");

  validate_routing(c, m);
  validate_engram(c, m);
}

// data.mode = "mixed" (data/mixed_batch.h): a document must fit one micro-batch.
void validate_mixed(Checker& c, const JobConfig& cfg) {
  c.non_negative("data.max_doc_tokens");
  c.non_negative("train.tokens_per_microbatch");
  if (cfg.data.mode != DataMode::mixed) return;
  const int64_t doc = mixed_max_doc_tokens(cfg), budget = mixed_tokens_per_microbatch(cfg);
  if (doc < 2)
    c.fail("data.max_doc_tokens",
           fmt::format("a cap of {} tokens leaves a document no target (BOS and one more token "
                       "at least): set it to 2 or more, or 0 for model.seq_len",
                       doc));
  if (doc > budget)
    c.fail_across({"data.max_doc_tokens", "train.tokens_per_microbatch"},
                  fmt::format("data.max_doc_tokens = {} exceeds train.tokens_per_microbatch = {} "
                              "(0 means micro_batch_rows · seq_len): a document must fit one "
                              "micro-batch; raise the budget or lower the cap",
                              doc, budget));
}

// data.arith_*: the generated problems (data/arithmetic.h), checked whatever the source, so a
// bad value fails when written, not when the source is switched later.
void validate_arithmetic(Checker& c, const DataConfig& d) {
  if (d.arith_max_operand < 0 || d.arith_max_operand > kArithOperandMax)
    c.fail("data.arith_max_operand",
           fmt::format("must be in [0, {}] (a product must fit 13 digits)", kArithOperandMax));
  if (d.arith_ops.empty() || d.arith_ops.find_first_not_of("+*") != std::string::npos)
    c.fail("data.arith_ops", "must hold operators only, at least one; known: '+', '*'");
  c.positive("data.arith_documents");
}

// [memory]: "block" and "full" recompute re-run a MoE block's forward, which expert shards
// refuse.
void validate_memory(Checker& c, const JobConfig& cfg) {
  const Recompute r = cfg.memory.recompute;
  if (cfg.parallel.experts == ExpertsAt::shards && (r == Recompute::block || r == Recompute::full))
    c.fail_across({"memory.recompute", "parallel.experts"},
                  "memory.recompute = \"block\" or \"full\" re-runs each MoE block in its "
                  "backward, and expert shards compute a micro-batch's experts once; use "
                  "recompute = \"attention\" or \"none\" with parallel.experts = \"shards\"");
}

// A key that means something only with expert shards: refused at another value than `off`
// without them, saying what it `does`.
void only_with_shards(Checker& c, const JobConfig& cfg, const std::string& key, int64_t value,
                      int64_t off, const std::string& does) {
  if (value == off || cfg.parallel.experts == ExpertsAt::shards) return;
  c.fail_across({key, "parallel.experts"},
                fmt::format("{} = {} {}; it needs parallel.experts = \"shards\" (or set it to {})",
                            key, value, does, off));
}

// [parallel] and [eplb]: the expert shards and what places them.
void validate_parallel(Checker& c, const JobConfig& cfg) {
  if (cfg.parallel.experts == ExpertsAt::shards &&
      (cfg.model.ffn != Ffn::moe || cfg.model.n_layers <= cfg.model.first_k_dense))
    c.fail_across({"parallel.experts", "model.ffn"},
                  "parallel.experts = \"shards\" needs routed experts: model.ffn = \"moe\" and "
                  "n_layers > first_k_dense (or set parallel.experts = \"worker\")");

  c.positive("parallel.pull_pieces_per_worker");
  c.positive("parallel.node_groups");
  only_with_shards(c, cfg, "parallel.node_groups", cfg.parallel.node_groups, 1,
                   "groups the expert shards");

  c.positive("eplb.window_steps");
  c.non_negative("eplb.rebalance_every_steps");
  only_with_shards(c, cfg, "eplb.rebalance_every_steps", cfg.eplb.rebalance_every_steps, 0,
                   "places expert slots on shards");
}

void validate_rest(Checker& c, const JobConfig& cfg) {
  if (cfg.data.corpus_dir.empty()) c.fail("data.corpus_dir", "must name a directory");
  validate_arithmetic(c, cfg.data);
  if (cfg.data.val_modulus < 2)
    c.fail("data.val_modulus",
           "must be an integer >= 2 (1 would put every document in "
           "validation)");
  c.non_negative("data.val_rows_max");

  for (const char* k : {"steps", "batch_size", "micro_batch_rows"})
    c.positive(std::string("train.") + k);
  for (const char* k : {"warmup_steps", "eval_every", "threads"})
    c.non_negative(std::string("train.") + k);
  c.positive_real("train.lr");
  c.positive_real("train.grad_clip");
  c.non_negative_real("train.weight_decay");
  c.fraction("train.min_lr_ratio", true);
  if (cfg.train.batch_size % cfg.train.micro_batch_rows != 0)
    c.fail_across({"train.batch_size", "train.micro_batch_rows"},
                  fmt::format("train.batch_size = {} must be a multiple of "
                              "train.micro_batch_rows = {}",
                              cfg.train.batch_size, cfg.train.micro_batch_rows));

  validate_mixed(c, cfg);

  for (const char* k :
       {"heartbeat_interval_ms", "heartbeat_timeout_ms", "start_timeout_ms", "recovery_timeout_ms",
        "step_timeout_ms", "coordinator_timeout_ms", "buddy_copies"})
    c.positive(std::string("fault_tolerance.") + k);
  const auto& ft = cfg.fault_tolerance;
  if (ft.heartbeat_timeout_ms < 2 * ft.heartbeat_interval_ms)
    c.fail_across({"fault_tolerance.heartbeat_timeout_ms", "fault_tolerance.heartbeat_interval_ms"},
                  fmt::format("fault_tolerance.heartbeat_timeout_ms = {} must be at least twice "
                              "heartbeat_interval_ms = {} (one late heartbeat is not a death)",
                              ft.heartbeat_timeout_ms, ft.heartbeat_interval_ms));
  if (ft.coordinator_timeout_ms < 2 * ft.heartbeat_interval_ms)
    c.fail_across(
        {"fault_tolerance.coordinator_timeout_ms", "fault_tolerance.heartbeat_interval_ms"},
        fmt::format("fault_tolerance.coordinator_timeout_ms = {} must be at least twice "
                    "heartbeat_interval_ms = {} (one late heartbeat is not a hang)",
                    ft.coordinator_timeout_ms, ft.heartbeat_interval_ms));

  validate_parallel(c, cfg);
  validate_engram_placement(c, cfg);
  validate_memory(c, cfg);

  c.non_negative("checkpoint.every_steps");
  c.positive("checkpoint.keep");

  c.fraction("optimizer.beta1", false);
  c.fraction("optimizer.beta2", false);
  c.positive_real("optimizer.eps");
}

// [grpo]: each key's range always (a bad value fails when written, not when GRPO is switched
// on later); the rules across sections (the longest sequence within seq_len, no Engram) only
// for a job that runs GRPO.
void validate_grpo(Checker& c, const JobConfig& cfg) {
  c.positive("grpo.prompts_per_step");
  if (cfg.grpo.group_size < 2)
    c.fail("grpo.group_size", "must be 2 or more (an advantage compares a group's rewards)");
  c.positive("grpo.max_new_tokens");
  c.positive_real("grpo.temperature");
  if (!(cfg.grpo.clip_eps > 0 && cfg.grpo.clip_eps < 1))
    c.fail("grpo.clip_eps", "must be in (0, 1): the ratio is clipped to [1 - eps, 1 + eps]");
  c.non_negative_real("grpo.kl_beta");
  if (!cfg.grpo.enabled) return;
  if (const std::string bad = check_grpo(grpo_runner_config(cfg), cfg); !bad.empty())
    c.fail_across({"grpo.enabled", "grpo.max_new_tokens", "model.seq_len", "data.arith_max_operand",
                   "model.engram_layers"},
                  bad);
}

// Features the config can name but the code cannot run yet. One place, so that the issue
// implementing a feature deletes its line here.
// Nothing is pending at the moment (the parameters are unnamed until something is).
}  // namespace

void validate(const JobConfig& cfg) {
  Checker c(cfg);
  c.all_reals_finite();
  validate_model(c, cfg.model);
  validate_rest(c, cfg);
  validate_grpo(c, cfg);
}

GrpoConfig grpo_runner_config(const JobConfig& cfg) {
  GrpoConfig g;
  g.prompts_per_step = cfg.grpo.prompts_per_step;
  g.group_size = cfg.grpo.group_size;
  g.max_new_tokens = cfg.grpo.max_new_tokens;
  g.temperature = cfg.grpo.temperature;
  g.loss.clip_eps = cfg.grpo.clip_eps;
  g.loss.kl_beta = cfg.grpo.kl_beta;
  return g;
}

}  // namespace troupe::model
