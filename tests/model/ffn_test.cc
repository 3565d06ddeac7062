// Dense SwiGLU and DeepSeekMoE (model/ffn.h): FP64 finite differences for every tensor,
// routing on hand-written scores, the bias rule, and batch invariance in FP32.
#include "model/ffn.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "model/rng.h"

namespace troupe::model {
namespace {

// The small config of the brief: C=8, 8 experts in 4 groups, keep 2 groups, top-2,
// moe_inter 4, one shared expert. Layer 0 is dense (width 12), layer 1 is MoE.
ModelConfig small_config() {
  ModelConfig c;
  c.engram_layers = {};  // the FFN tests' table: no Engram parameters between the layers
  c.d_model = 8;
  c.n_layers = 2;
  c.first_k_dense = 1;
  c.dense_inter = 12;
  c.n_routed_experts = 8;
  c.n_group = 4;
  c.topk_group = 2;
  c.top_k = 2;
  c.moe_inter = 4;
  c.n_shared_experts = 1;
  c.routed_scaling = 1.5;  // ≠ 1 so the scaling is exercised
  c.n_heads = 2;
  c.q_lora_rank = 4;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 2;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 2;
  c.hc_mult = 2;
  c.mtp_depth = 0;
  return c;
}

template <typename T>
void fill_normal(std::vector<T>& v, uint64_t purpose, double stddev) {
  CounterRng rng(7, purpose);
  for (size_t i = 0; i < v.size(); ++i) v[i] = T(stddev * rng.normal(i));
}

// Parameters at O(1) scale so that outputs and gradients are O(1) and routing margins
// are large compared with ε; a random nonzero balancing bias.
template <typename T>
std::vector<T> make_params(const ParamTable& t, const std::string& moe_prefix) {
  std::vector<T> p(t.total());
  fill_normal(p, 1, 0.5);
  if (t.has(moe_prefix + "gate.e_score_correction_bias")) {
    const ParamInfo& b = t.at(moe_prefix + "gate.e_score_correction_bias");
    CounterRng rng(7, 2);
    for (int64_t i = 0; i < b.numel; ++i) p[b.offset + i] = T(0.4 * rng.uniform(i) - 0.2);
  }
  return p;
}

// Central differences of loss() against analytic gradients at the elements idx of a
// tensor at base[offset…]; returns the worst relative error (absolute floor `floor`).
double worst_fd_error(double* base, int64_t offset, const std::vector<int64_t>& idx,
                      const double* analytic, const std::function<double()>& loss, double eps,
                      double floor) {
  double worst = 0;
  for (int64_t i : idx) {
    double& w = base[offset + i];
    const double saved = w;
    w = saved + eps;
    const double lp = loss();
    w = saved - eps;
    const double lm = loss();
    w = saved;
    const double numeric = (lp - lm) / (2 * eps);
    const double a = analytic[offset + i];
    const double err = std::abs(a - numeric) / std::max({std::abs(a), std::abs(numeric), floor});
    worst = std::max(worst, err);
  }
  return worst;
}

// All elements of a small tensor, else a deterministic sample of 128.
std::vector<int64_t> sample_indices(int64_t numel, uint64_t purpose) {
  std::vector<int64_t> idx;
  if (numel <= 256) {
    for (int64_t i = 0; i < numel; ++i) idx.push_back(i);
    return idx;
  }
  CounterRng rng(11, purpose);
  for (int64_t i = 0; i < 128; ++i) idx.push_back(static_cast<int64_t>(rng.bits(i) % numel));
  return idx;
}

constexpr double kFdEps = 1e-5;
constexpr double kFdTol = 1e-6;
constexpr double kFdFloor = 1e-6;

// ------------------------------------------------------------------------------------
// SwiGLU

TEST(Swiglu, FiniteDifferencesFp64) {
  const ModelConfig cfg = small_config();
  const ParamTable table(cfg);
  const std::string prefix = "model.layers.0.mlp.";
  const SwigluLayout L = SwigluLayout::from(table, prefix);
  ASSERT_EQ(L.inter, 12);
  const int64_t N = 5, C = cfg.d_model;
  std::vector<double> p = make_params<double>(table, "");
  std::vector<double> x(N * C), w(N * C), out(N * C);
  fill_normal(x, 3, 1.0);
  fill_normal(w, 4, 1.0);
  SwigluCache<double> cache;
  auto loss = [&] {
    swiglu_forward(ModelConfig{}, L, p.data(), x.data(), N, C, out.data(), cache);
    double s = 0;
    for (int64_t i = 0; i < N * C; ++i) s += out[i] * w[i];
    return s;
  };
  loss();
  std::vector<double> g(table.total(), 0.0), dx(N * C, 0.0);
  swiglu_backward(ModelConfig{}, L, p.data(), g.data(), w.data(), dx.data(), cache);
  for (const char* name : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) {
    const ParamInfo& info = table.at(prefix + name);
    const double err = worst_fd_error(p.data(), info.offset, sample_indices(info.numel, 5),
                                      g.data(), loss, kFdEps, kFdFloor);
    EXPECT_LE(err, kFdTol) << info.name;
    std::printf("  swiglu %-18s worst rel err %.2e\n", name, err);
  }
  const double err =
      worst_fd_error(x.data(), 0, sample_indices(N * C, 6), dx.data(), loss, kFdEps, kFdFloor);
  EXPECT_LE(err, kFdTol) << "x";
  std::printf("  swiglu %-18s worst rel err %.2e\n", "x", err);
}

TEST(Swiglu, BetaOneAccumulates) {
  const ModelConfig cfg = small_config();
  const ParamTable table(cfg);
  const SwigluLayout L = SwigluLayout::from(table, "model.layers.0.mlp.");
  const int64_t N = 3, C = cfg.d_model;
  std::vector<float> p = make_params<float>(table, "");
  std::vector<float> x(N * C), base(N * C), acc(N * C), plain(N * C);
  fill_normal(x, 3, 1.0);
  fill_normal(base, 4, 1.0);
  SwigluCache<float> cache;
  swiglu_forward(ModelConfig{}, L, p.data(), x.data(), N, C, plain.data(), cache);
  acc = base;
  swiglu_forward(ModelConfig{}, L, p.data(), x.data(), N, C, acc.data(), cache, 1.0f);
  for (int64_t i = 0; i < N * C; ++i) EXPECT_FLOAT_EQ(acc[i], base[i] + plain[i]);
}

TEST(Swiglu, RejectsWrongShape) {
  const ModelConfig cfg = small_config();
  const ParamTable table(cfg);
  EXPECT_THROW(SwigluLayout::from(table, "model.layers.9.mlp."), std::out_of_range);
}

// ------------------------------------------------------------------------------------
// MoE

struct MoeFixture {
  ModelConfig cfg = small_config();
  ParamTable table{cfg};
  std::string prefix = "model.layers.1.mlp.";
  MoeLayout L = MoeLayout::from(table, cfg, prefix);
};

TEST(Moe, FiniteDifferencesFp64) {
  MoeFixture f;
  const int64_t R = 2, Tlen = 6, N = R * Tlen, C = f.cfg.d_model;
  const double bal_weight = 0.1;
  std::vector<double> p = make_params<double>(f.table, f.prefix);
  std::vector<double> x(N * C), w(N * C), out(N * C);
  fill_normal(x, 3, 1.0);
  fill_normal(w, 4, 1.0);
  MoeCache<double> cache;
  auto loss = [&] {
    double s = moe_forward(f.cfg, f.L, p.data(), x.data(), R, Tlen, bal_weight, out.data(), cache);
    for (int64_t i = 0; i < N * C; ++i) s += out[i] * w[i];
    return s;
  };
  const double l0 = loss();
  ASSERT_TRUE(std::isfinite(l0));
  const std::vector<int32_t> routing = cache.top;
  // The bias must matter somewhere: routing with it differs from routing without it.
  {
    std::vector<double> q = p;
    const ParamInfo& b = f.table.at(f.prefix + "gate.e_score_correction_bias");
    std::fill(q.begin() + b.offset, q.begin() + b.offset + b.numel, 0.0);
    MoeCache<double> c2;
    moe_forward(f.cfg, f.L, q.data(), x.data(), R, Tlen, bal_weight, out.data(), c2);
    EXPECT_NE(c2.top, routing) << "pick a seed where the bias changes some routing";
  }
  loss();
  std::vector<double> g(f.table.total(), 0.0), dx(N * C, 0.0);
  moe_backward(f.cfg, f.L, p.data(), g.data(), w.data(), dx.data(), cache);
  // Every evaluation under ε must route exactly as the unperturbed one.
  auto checked_loss = [&] {
    const double l = loss();
    EXPECT_EQ(cache.top, routing) << "routing flipped under the ε perturbation";
    return l;
  };
  int tensors = 0;
  for (const ParamInfo& info : f.table.all()) {
    if (info.name.rfind(f.prefix, 0) != 0) continue;
    if (info.name.find("e_score_correction_bias") != std::string::npos) {
      for (int64_t i = 0; i < info.numel; ++i) EXPECT_EQ(g[info.offset + i], 0.0);
      continue;
    }
    const double err = worst_fd_error(p.data(), info.offset, sample_indices(info.numel, tensors),
                                      g.data(), checked_loss, kFdEps, kFdFloor);
    EXPECT_LE(err, kFdTol) << info.name;
    std::printf("  moe %-40s worst rel err %.2e\n", info.name.c_str() + f.prefix.size(), err);
    ++tensors;
  }
  EXPECT_EQ(tensors, 1 + 3 * 8 + 3);  // gate, 8 experts, shared
  const double err = worst_fd_error(x.data(), 0, sample_indices(N * C, 99), dx.data(), checked_loss,
                                    kFdEps, kFdFloor);
  EXPECT_LE(err, kFdTol) << "x";
  std::printf("  moe %-40s worst rel err %.2e\n", "x", err);
}

TEST(Moe, BalanceLossGradientAlone) {
  // dout = 0: the only gradient is the balance loss's, through s into E and x.
  MoeFixture f;
  const int64_t R = 2, Tlen = 6, N = R * Tlen, C = f.cfg.d_model;
  const double bal_weight = 0.7;
  std::vector<double> p = make_params<double>(f.table, f.prefix);
  std::vector<double> x(N * C), out(N * C), zero(N * C, 0.0);
  fill_normal(x, 3, 1.0);
  MoeCache<double> cache;
  auto loss = [&] {
    return moe_forward(f.cfg, f.L, p.data(), x.data(), R, Tlen, bal_weight, out.data(), cache);
  };
  const double l0 = loss();
  EXPECT_GT(l0, 0.0);
  std::vector<double> g(f.table.total(), 0.0), dx(N * C, 0.0);
  moe_backward(f.cfg, f.L, p.data(), g.data(), zero.data(), dx.data(), cache);
  const ParamInfo& gate = f.table.at(f.prefix + "gate.weight");
  EXPECT_LE(worst_fd_error(p.data(), gate.offset, sample_indices(gate.numel, 1), g.data(), loss,
                           kFdEps, kFdFloor),
            kFdTol);
  EXPECT_LE(
      worst_fd_error(x.data(), 0, sample_indices(N * C, 2), dx.data(), loss, kFdEps, kFdFloor),
      kFdTol);
  // Balanced routing with uniform affinities gives L_row = 1 per row: check the scale.
  ModelConfig c1 = f.cfg;
  c1.n_group = 1, c1.topk_group = 1, c1.top_k = 1, c1.n_routed_experts = 2, c1.d_model = 2;
  c1.n_layers = 2;
  const ParamTable t1(c1);
  const MoeLayout L1 = MoeLayout::from(t1, c1, f.prefix);
  std::vector<double> p1(t1.total(), 0.0);  // zero bias
  // x = 0 gives s = 0.5 for both experts; the tie sends every token to expert 0:
  // f = (2, 0), P = (0.5, 0.5), L_row = 1.
  std::vector<double> x1(2 * 4, 0.0), o1(2 * 4);
  MoeCache<double> c1cache;
  EXPECT_DOUBLE_EQ(moe_forward(c1, L1, p1.data(), x1.data(), 1, 4, 1.0, o1.data(), c1cache), 1.0);
}

TEST(Moe, CountsAndSortedRowsAreConsistent) {
  MoeFixture f;
  const int64_t R = 2, Tlen = 6, N = R * Tlen, C = f.cfg.d_model, K = f.cfg.top_k;
  std::vector<float> p = make_params<float>(f.table, f.prefix);
  std::vector<float> x(N * C), out(N * C);
  fill_normal(x, 3, 1.0);
  MoeCache<float> c;
  moe_forward(f.cfg, f.L, p.data(), x.data(), R, Tlen, 0.0f, out.data(), c);
  int64_t total = 0;
  for (int64_t e = 0; e < f.cfg.n_routed_experts; ++e) {
    total += c.counts[e];
    EXPECT_EQ(c.expert_begin[e + 1] - c.expert_begin[e], c.counts[e]);
    for (int64_t r = c.expert_begin[e] + 1; r < c.expert_begin[e + 1]; ++r)
      EXPECT_LT(c.token_of[r - 1], c.token_of[r]) << "tokens of an expert are ascending";
  }
  EXPECT_EQ(total, N * K);
  for (int64_t t = 0; t < N; ++t) {
    EXPECT_LT(c.top[t * K], c.top[t * K + 1]);
    for (int64_t r = 0; r < K; ++r) EXPECT_EQ(c.token_of[c.slot[t * K + r]], t);
  }
}

// ------------------------------------------------------------------------------------
// Routing on hand-written scores

ModelConfig routing_config(int64_t E, int64_t G, int64_t topk_group, int64_t top_k) {
  ModelConfig c;
  c.n_routed_experts = E, c.n_group = G, c.topk_group = topk_group, c.top_k = top_k;
  c.routed_scaling = 1.0;
  return c;
}

struct Routed {
  std::vector<int32_t> top;
  std::vector<double> weight;
};

Routed route(const ModelConfig& cfg, const std::vector<double>& s, std::vector<double> bias = {}) {
  if (bias.empty()) bias.assign(s.size(), 0.0);
  Routed r{std::vector<int32_t>(cfg.top_k), std::vector<double>(cfg.top_k)};
  moe_route_token(cfg, s.data(), bias.data(), r.top.data(), r.weight.data());
  return r;
}

TEST(MoeRouting, GroupLimitExcludesAStrongExpertInAWeakGroup) {
  // groups {0,1} {2,3} {4,5} {6,7}: scores 1.0, 1.5, 0.9, 0.6 -> keep groups 1 and 0.
  // Expert 4 (0.85) beats expert 2 (0.8) globally but its group is dropped.
  const ModelConfig cfg = routing_config(8, 4, 2, 2);
  const Routed r = route(cfg, {0.9, 0.1, 0.8, 0.7, 0.85, 0.05, 0.3, 0.3});
  EXPECT_EQ(r.top, (std::vector<int32_t>{0, 2}));
  EXPECT_DOUBLE_EQ(r.weight[0], 0.9 / (0.9 + 0.8));
  EXPECT_DOUBLE_EQ(r.weight[1], 0.8 / (0.9 + 0.8));
  // Without the group limit (one group) the global top-2 wins.
  EXPECT_EQ(route(routing_config(8, 1, 1, 2), {0.9, 0.1, 0.8, 0.7, 0.85, 0.05, 0.3, 0.3}).top,
            (std::vector<int32_t>{0, 4}));
}

TEST(MoeRouting, GroupScoreIsTopTwoSumNotMax) {
  // Group 0 has the single best expert (0.95 + 0.0); group 1 sums to 1.2 (0.6 + 0.6).
  const ModelConfig cfg = routing_config(6, 3, 1, 2);
  EXPECT_EQ(route(cfg, {0.95, 0.0, 0.6, 0.6, 0.1, 0.2}).top, (std::vector<int32_t>{2, 3}));
}

TEST(MoeRouting, TiesGoToTheLowerIndex) {
  // All equal: groups 0 and 1 kept, experts 0 and 1 chosen.
  EXPECT_EQ(route(routing_config(8, 4, 2, 2), std::vector<double>(8, 0.5)).top,
            (std::vector<int32_t>{0, 1}));
  // Group tie: g0 = 1.0 best; g1 and g2 tie at 0.7 -> g1 kept. Expert tie inside the
  // kept groups (0.5 at experts 0 and 3, top_k 1) -> expert 0.
  const std::vector<double> s = {0.5, 0.5, 0.2, 0.5, 0.6, 0.1, 0.1, 0.1};
  EXPECT_EQ(route(routing_config(8, 4, 2, 1), s).top, (std::vector<int32_t>{0}));
  EXPECT_EQ(route(routing_config(8, 4, 2, 3), s).top, (std::vector<int32_t>{0, 1, 3}));
  // One expert per group: the group score is that one score; ties to the lower group.
  EXPECT_EQ(route(routing_config(4, 4, 2, 2), {0.3, 0.7, 0.3, 0.7}).top,
            (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(route(routing_config(4, 4, 3, 2), {0.3, 0.7, 0.3, 0.2}).top,
            (std::vector<int32_t>{0, 1}));
}

TEST(MoeRouting, BiasSelectsButDoesNotWeigh) {
  const ModelConfig cfg = routing_config(4, 1, 1, 2);
  const std::vector<double> s = {0.6, 0.5, 0.55, 0.1};
  EXPECT_EQ(route(cfg, s).top, (std::vector<int32_t>{0, 2}));
  const Routed r = route(cfg, s, {0.0, 0.2, 0.0, 0.0});  // expert 1 now 0.7 > 0.55
  EXPECT_EQ(r.top, (std::vector<int32_t>{0, 1}));
  EXPECT_DOUBLE_EQ(r.weight[0], 0.6 / (0.6 + 0.5));
  EXPECT_DOUBLE_EQ(r.weight[1], 0.5 / (0.6 + 0.5));
  // The bias also enters the group scores: raising expert 3 (1.08 -> 1.11 > 1.1) keeps
  // group {2,3}, whose best is then expert 2 — the raised expert itself is not chosen.
  const ModelConfig grouped = routing_config(4, 2, 1, 1);
  const std::vector<double> s2 = {0.6, 0.5, 0.58, 0.5};
  EXPECT_EQ(route(grouped, s2).top, (std::vector<int32_t>{0}));
  const Routed moved = route(grouped, s2, {0, 0, 0, 0.03});
  EXPECT_EQ(moved.top, (std::vector<int32_t>{2}));
  EXPECT_DOUBLE_EQ(moved.weight[0], 1.0);
  // routed_scaling multiplies g.
  ModelConfig scaled = cfg;
  scaled.routed_scaling = 2.5;
  EXPECT_DOUBLE_EQ(route(scaled, s).weight[0], 0.6 / (0.6 + 0.55) * 2.5);
}

TEST(MoeRouting, RejectsBadConfig) {
  const ModelConfig base = small_config();
  const ParamTable t(base);
  for (auto mutate : std::vector<std::function<void(ModelConfig&)>>{
           [](ModelConfig& c) { c.n_group = 3; },     // 8 % 3 != 0
           [](ModelConfig& c) { c.topk_group = 5; },  // > n_group
           [](ModelConfig& c) { c.top_k = 5; },       // > topk_group · E/G = 4
           [](ModelConfig& c) { c.top_k = 0; }}) {
    ModelConfig c = base;
    mutate(c);
    EXPECT_THROW(MoeLayout::from(t, c, "model.layers.1.mlp."), std::invalid_argument);
  }
}

// ------------------------------------------------------------------------------------
// Bias update rule

TEST(MoeBiasUpdate, SignRuleWithExactMean) {
  ModelConfig cfg = routing_config(4, 1, 1, 1);
  cfg.bias_update_speed = 0.25;
  const std::vector<int64_t> counts = {3, 5, 4, 4};  // mean exactly 4
  std::vector<float> bias = {1.0f, 1.0f, 1.0f, -1.0f};
  moe_bias_update(cfg, counts.data(), bias.data());
  EXPECT_EQ(bias, (std::vector<float>{1.25f, 0.75f, 1.0f, -1.0f}));
  // A fractional mean (1.5): both move.
  ModelConfig two = routing_config(2, 1, 1, 1);
  two.bias_update_speed = 0.5;
  const std::vector<int64_t> c2 = {1, 2};
  std::vector<double> b2 = {0.0, 0.0};
  moe_bias_update(two, c2.data(), b2.data());
  EXPECT_EQ(b2, (std::vector<double>{0.5, -0.5}));
  // All equal (also all zero): nothing moves.
  const std::vector<int64_t> zeros = {0, 0};
  moe_bias_update(two, zeros.data(), b2.data());
  EXPECT_EQ(b2, (std::vector<double>{0.5, -0.5}));
  // Large counts whose float mean would round: 2^40+1 vs 2^40 (mean 2^40 + 0.5).
  const std::vector<int64_t> big = {(int64_t(1) << 40) + 1, int64_t(1) << 40};
  std::vector<float> b3 = {0.0f, 0.0f};
  moe_bias_update(two, big.data(), b3.data());
  EXPECT_EQ(b3, (std::vector<float>{-0.5f, 0.5f}));
}

// model.gate_bias_init: every MoE layer's bias starts at it (zeros without it); the other
// tensors are initialised as before.
TEST(MoeBiasUpdate, GateBiasInitSetsEveryMoeLayersBias) {
  ModelConfig plain;
  ModelConfig skewed = plain;
  skewed.gate_bias_init = {0.5, -0.25, 0, 0, 0.125, 0, 0, 1};
  const ParamTable a(plain), b(skewed);
  ASSERT_EQ(a.total(), b.total());
  std::vector<float> wa(size_t(a.total())), wb(size_t(b.total()));
  init_params(a, 3, wa.data());
  init_params(b, 3, wb.data());
  int biases = 0;
  for (const ParamInfo& p : b.all()) {
    const bool bias = p.name.find("e_score_correction_bias") != std::string::npos;
    for (int64_t i = 0; i < p.numel; ++i) {
      const float want = bias ? float(skewed.gate_bias_init[size_t(i)]) : wa[size_t(p.offset + i)];
      ASSERT_EQ(wb[size_t(p.offset + i)], want) << p.name << "[" << i << "]";
      if (bias) {
        ASSERT_EQ(wa[size_t(p.offset + i)], 0.0f);
      }
    }
    biases += bias;
  }
  EXPECT_EQ(biases, plain.n_layers - plain.first_k_dense);
}

// ------------------------------------------------------------------------------------
// Batch invariance in FP32: row 0 alone == row 0 among others, bit for bit.

TEST(Moe, Row0IsBatchInvariantFp32) {
  ModelConfig cfg;  // tiny defaults: C=128, 8 experts, moe_inter 96, top-2
  cfg.d_model = 32, cfg.moe_inter = 16, cfg.n_layers = 2, cfg.mtp_depth = 0;
  cfg.n_heads = 2, cfg.q_lora_rank = 8, cfg.kv_lora_rank = 8, cfg.dense_inter = 24;
  const ParamTable table(cfg);
  const std::string prefix = "model.layers.1.mlp.";
  const MoeLayout L = MoeLayout::from(table, cfg, prefix);
  const int64_t R = 3, Tlen = 16, C = cfg.d_model, N = R * Tlen, N0 = Tlen;
  std::vector<float> p = make_params<float>(table, prefix);
  std::vector<float> x(N * C), dout(N * C);
  fill_normal(x, 3, 1.0);
  fill_normal(dout, 4, 1.0);
  auto run = [&](int64_t rows, std::vector<float>& out, std::vector<float>& dx) {
    MoeCache<float> c;
    out.assign(rows * Tlen * C, 0.0f), dx.assign(rows * Tlen * C, 0.0f);
    std::vector<float> g(table.total(), 0.0f);
    moe_forward(cfg, L, p.data(), x.data(), rows, Tlen, 0.01f, out.data(), c);
    moe_backward(cfg, L, p.data(), g.data(), dout.data(), dx.data(), c);
  };
  std::vector<float> out_all, dx_all, out_one, dx_one;
  run(R, out_all, dx_all);
  run(1, out_one, dx_one);
  EXPECT_EQ(0, std::memcmp(out_all.data(), out_one.data(), sizeof(float) * N0 * C));
  EXPECT_EQ(0, std::memcmp(dx_all.data(), dx_one.data(), sizeof(float) * N0 * C));
  // Dense SwiGLU likewise.
  const SwigluLayout D = SwigluLayout::from(table, "model.layers.0.mlp.");
  SwigluCache<float> sc;
  std::vector<float> g(table.total(), 0.0f);
  out_all.assign(N * C, 0.0f), dx_all.assign(N * C, 0.0f);
  swiglu_forward(ModelConfig{}, D, p.data(), x.data(), N, C, out_all.data(), sc);
  swiglu_backward(ModelConfig{}, D, p.data(), g.data(), dout.data(), dx_all.data(), sc);
  out_one.assign(N0 * C, 0.0f), dx_one.assign(N0 * C, 0.0f);
  swiglu_forward(ModelConfig{}, D, p.data(), x.data(), N0, C, out_one.data(), sc);
  swiglu_backward(ModelConfig{}, D, p.data(), g.data(), dout.data(), dx_one.data(), sc);
  EXPECT_EQ(0, std::memcmp(out_all.data(), out_one.data(), sizeof(float) * N0 * C));
  EXPECT_EQ(0, std::memcmp(dx_all.data(), dx_one.data(), sizeof(float) * N0 * C));
}

TEST(Moe, ReusedCacheGivesSameBits) {
  MoeFixture f;
  const int64_t R = 2, Tlen = 6, N = R * Tlen, C = f.cfg.d_model;
  std::vector<float> p = make_params<float>(f.table, f.prefix);
  std::vector<float> x(N * C), o1(N * C), o2(N * C), xbig(4 * N * C), obig(4 * N * C);
  fill_normal(x, 3, 1.0);
  fill_normal(xbig, 5, 1.0);
  MoeCache<float> fresh, reused;
  const float l1 = moe_forward(f.cfg, f.L, p.data(), x.data(), R, Tlen, 0.1f, o1.data(), fresh);
  moe_forward(f.cfg, f.L, p.data(), xbig.data(), 4 * R, Tlen, 0.1f, obig.data(), reused);
  const float l2 = moe_forward(f.cfg, f.L, p.data(), x.data(), R, Tlen, 0.1f, o2.data(), reused);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(fresh.counts, reused.counts);
}

}  // namespace
}  // namespace troupe::model
