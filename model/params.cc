#include "model/params.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "model/rng.h"

namespace troupe::model {

namespace {
constexpr double kInitStd = 0.02;       // Linear weights, embedding, head, mHC φ, gate E
constexpr double kMhcAlphaInit = 0.01;  // mHC paper: α_pre = α_post = α_res = 0.01
}  // namespace

void ParamTable::add(std::string name, std::vector<int64_t> shape, Init init, double value,
                     OptGroup g, std::vector<double> values) {
  ParamInfo info;
  info.numel = 1;
  for (int64_t d : shape) info.numel *= d;
  info.name = std::move(name);
  info.shape = std::move(shape);
  info.offset = total_;
  info.init = values.empty() ? init : Init::Values;
  info.init_value = value;
  info.init_values = std::move(values);
  info.group = g;
  total_ += info.numel;
  if (index_.count(info.name)) throw std::logic_error("duplicate parameter " + info.name);
  index_[info.name] = params_.size();
  params_.push_back(std::move(info));
}

bool ParamTable::has(std::string_view name) const {
  return index_.count(std::string(name));
}

const ParamInfo& ParamTable::at(std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) throw std::out_of_range("no parameter named " + std::string(name));
  return params_[it->second];
}

ParamTable::ParamTable(const ModelConfig& c) {
  const int64_t C = c.d_model, n = c.hc_mult;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    add(name, {rows, cols}, Init::Normal, kInitStd, OptGroup::Muon);
  };
  auto norm = [&](const std::string& name, int64_t d) {
    add(name, {d}, Init::Ones, 0, OptGroup::AdamWNoDecay);
  };
  auto swiglu = [&](const std::string& p, int64_t inter) {
    matrix(p + "gate_proj.weight", inter, C);
    matrix(p + "up_proj.weight", inter, C);
    matrix(p + "down_proj.weight", C, inter);
  };
  auto hc = [&](const std::string& p) {
    add(p + "phi_pre", {n, n * C}, Init::Normal, kInitStd, OptGroup::AdamW);
    add(p + "phi_post", {n, n * C}, Init::Normal, kInitStd, OptGroup::AdamW);
    add(p + "phi_res", {n * n, n * C}, Init::Normal, kInitStd, OptGroup::AdamW);
    for (const char* a : {"alpha_pre", "alpha_post", "alpha_res"})
      add(p + a, {1}, Init::Constant, kMhcAlphaInit, OptGroup::AdamWNoDecay);
    add(p + "b_pre", {n}, Init::Zeros, 0, OptGroup::AdamWNoDecay);
    add(p + "b_post", {n}, Init::Zeros, 0, OptGroup::AdamWNoDecay);
    add(p + "b_res", {n, n}, Init::Zeros, 0, OptGroup::AdamWNoDecay);
  };

  // MLA, SPEC §11 layouts: q_b head-major [q_nope|q_pe]; kv_a [c_kv|k_pe]; kv_b [k_nope|v].
  auto mla = [&](const std::string& p) {
    const int64_t H = c.n_heads;
    matrix(p + "q_a_proj.weight", c.q_lora_rank, C);
    norm(p + "q_a_layernorm.weight", c.q_lora_rank);
    matrix(p + "q_b_proj.weight", H * c.qk_head_dim(), c.q_lora_rank);
    matrix(p + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, C);
    norm(p + "kv_a_layernorm.weight", c.kv_lora_rank);
    matrix(p + "kv_b_proj.weight", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    matrix(p + "o_proj.weight", C, H * c.v_head_dim);
  };

  // Engram's dense part (SPEC §4, §11); its tables live outside this buffer (model/engram.h).
  // The conv starts at zero and is not decayed back there: no-decay AdamW like the norms.
  auto engram = [&](const std::string& p) {
    const int64_t S = c.residual == Residual::mhc ? n : 1, Kc = c.engram_conv_kernel;
    const int64_t d_mem = int64_t(c.engram_orders.size()) * c.engram_heads * c.engram_head_dim;
    for (int64_t m = 0; m < S; ++m) matrix(p + "w_k." + std::to_string(m), C, d_mem);
    matrix(p + "w_v", C, d_mem);
    for (const char* nm : {"norm_q.", "norm_k.", "norm_c."})
      for (int64_t m = 0; m < S; ++m) norm(p + nm + std::to_string(m), C);
    add(p + "conv", {S * C, 1, Kc}, Init::Zeros, 0, OptGroup::AdamWNoDecay);
  };

  add("model.embed_tokens.weight", {c.vocab_size, C}, Init::Normal, kInitStd, OptGroup::AdamW);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    if (std::find(c.engram_layers.begin(), c.engram_layers.end(), l) != c.engram_layers.end())
      engram(p + "engram.");
    if (c.residual == Residual::mhc) hc(p + "attn_hc.");
    norm(p + "input_layernorm.weight", C);
    mla(p + "self_attn.");
    if (c.residual == Residual::mhc) hc(p + "mlp_hc.");
    norm(p + "post_attention_layernorm.weight", C);
    if (c.is_moe_layer(l)) {
      add(p + "mlp.gate.weight", {c.n_routed_experts, C}, Init::Normal, kInitStd, OptGroup::AdamW);
      add(p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts}, Init::Zeros, 0,
          OptGroup::Rule, c.gate_bias_init);
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        swiglu(p + "mlp.experts." + std::to_string(e) + ".", c.moe_inter);
      if (c.n_shared_experts > 0)
        swiglu(p + "mlp.shared_experts.", c.n_shared_experts * c.moe_inter);
    } else {
      swiglu(p + "mlp.", c.dense_inter);
    }
  }
  norm("model.norm.weight", C);
  add("lm_head.weight", {c.vocab_size, C}, Init::Normal, kInitStd, OptGroup::AdamW);
  if (c.mtp_depth > 0) {
    norm("mtp.norm_h.weight", C);
    norm("mtp.norm_e.weight", C);
    matrix("mtp.proj.weight", C, 2 * C);
    norm("mtp.block.input_layernorm.weight", C);
    mla("mtp.block.self_attn.");
    norm("mtp.block.post_attention_layernorm.weight", C);
    swiglu("mtp.block.mlp.", c.dense_inter);
  }
}

template <typename T>
void init_params(const ParamTable& table, uint64_t seed, T* params) {
  for (const ParamInfo& info : table.all()) {
    T* w = params + info.offset;
    CounterRng rng(seed, purpose_of(info.name));
    for (int64_t i = 0; i < info.numel; ++i) {
      switch (info.init) {
        case Init::Normal:
          w[i] = T(info.init_value * rng.normal(i));
          break;
        case Init::Zeros:
          w[i] = T(0);
          break;
        case Init::Ones:
          w[i] = T(1);
          break;
        case Init::Constant:
          w[i] = T(info.init_value);
          break;
        case Init::Values:
          w[i] = T(info.init_values.at(size_t(i)));
          break;
      }
    }
  }
}

template void init_params<float>(const ParamTable&, uint64_t, float*);
template void init_params<double>(const ParamTable&, uint64_t, double*);

const char* opt_group_name(OptGroup g) {
  switch (g) {
    case OptGroup::AdamW:
      return "adamw";
    case OptGroup::AdamWNoDecay:
      return "adamw(no-decay)";
    case OptGroup::Muon:
      return "muon";
    case OptGroup::Rule:
      return "rule";
  }
  return "?";
}

int64_t StateSlots::at(const ParamTable& table, size_t i) const {
  if (offset_[i] < 0)
    throw std::logic_error(fmt::format(
        "optimizer: tensor {} is updated here but its state is not kept here (outside the "
        "state range)",
        table.all()[i].name));
  return offset_[i];
}

}  // namespace troupe::model
