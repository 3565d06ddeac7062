// Optimizers (SPEC §5): NS5's known behaviour, one Muon step against an independent FP64
// restatement of the SPEC formula, AdamW bitwise unchanged, and the Muon/AdamW split.
#include "optim/optim.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "model/params.h"
#include "model/rng.h"
#include "optim/muon.h"
#include "train/dp_plan.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

std::vector<float> random_matrix(int64_t n, uint64_t purpose, double std = 1.0) {
  CounterRng rng(7, purpose);
  std::vector<float> m(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) m[i] = float(std * rng.normal(i));
  return m;
}

// Eigenvalues of the symmetric s (n, n) by cyclic Jacobi rotations, in double.
std::vector<double> symmetric_eigenvalues(std::vector<double> s, int64_t n) {
  auto at = [&](int64_t i, int64_t j) -> double& { return s[i * n + j]; };
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) off += at(i, j) * at(i, j);
    if (off < 1e-26) break;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        if (at(p, q) == 0) continue;
        const double theta = (at(q, q) - at(p, p)) / (2 * at(p, q));
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), sn = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q
          const double kp = at(k, p), kq = at(k, q);
          at(k, p) = c * kp - sn * kq, at(k, q) = sn * kp + c * kq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q
          const double pk = at(p, k), qk = at(q, k);
          at(p, k) = c * pk - sn * qk, at(q, k) = sn * pk + c * qk;
        }
      }
  }
  std::vector<double> ev(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ev[i] = at(i, i);
  return ev;
}

// Singular values of o (rows, cols): sqrt of the eigenvalues of the smaller Gram matrix.
std::vector<double> singular_values(const std::vector<float>& o, int64_t rows, int64_t cols) {
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows, c = tall ? rows : cols;
  auto x = [&](int64_t i, int64_t k) { return double(tall ? o[k * cols + i] : o[i * cols + k]); };
  std::vector<double> gram(static_cast<size_t>(r * r));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < r; ++j) {
      double s = 0;
      for (int64_t k = 0; k < c; ++k) s += x(i, k) * x(j, k);
      gram[i * r + j] = s;
    }
  std::vector<double> sv = symmetric_eigenvalues(gram, r);
  for (double& v : sv) v = std::sqrt(std::max(0.0, v));
  return sv;
}

// ---- NS5 ------------------------------------------------------------------------------------

struct Shape {
  int64_t rows, cols;
};

// NS5 maps each singular value σ of M/‖M‖_F through its quintic five times; the cycle it
// settles in is about [0.68, 1.16], not 1. Directions with σ < 1.4e-3 cannot get there in
// five steps (the slope at 0 is a⁵ ≈ 485): square Gaussian matrices have one such.
constexpr double kNs5Lo = 0.67, kNs5Hi = 1.2, kNs5LiftMin = 0.67 / 485.0;

TEST(NewtonSchulz5, SingularValuesNearOneForWideTallAndSquare) {
  for (Shape s : {Shape{32, 96}, Shape{96, 32}, Shape{48, 48}, Shape{1, 17}, Shape{128, 384}}) {
    const std::vector<float> m = random_matrix(s.rows * s.cols, 11 + uint64_t(s.rows));
    std::vector<float> o(m.size()), scratch;
    newton_schulz5(m.data(), s.rows, s.cols, o.data(), 5, scratch);
    std::vector<double> in = singular_values(m, s.rows, s.cols);
    double frob = 0;
    for (double v : in) frob += v * v;
    const auto too_small = std::count_if(
        in.begin(), in.end(), [&](double v) { return v / std::sqrt(frob) < kNs5LiftMin; });
    std::vector<double> out = singular_values(o, s.rows, s.cols);
    std::sort(out.begin(), out.end());
    EXPECT_LE(too_small, 1) << s.rows << "x" << s.cols;
    for (size_t i = size_t(too_small); i < out.size(); ++i) {
      EXPECT_GE(out[i], kNs5Lo) << s.rows << "x" << s.cols << " σ #" << i;
      EXPECT_LE(out[i], kNs5Hi) << s.rows << "x" << s.cols << " σ #" << i;
    }
  }
}

TEST(NewtonSchulz5, TallIsTheTransposeOfWideBitwise) {
  const int64_t rows = 80, cols = 24;
  const std::vector<float> m = random_matrix(rows * cols, 3);
  std::vector<float> mt(m.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) mt[j * rows + i] = m[i * cols + j];
  std::vector<float> o(m.size()), ot(m.size()), scratch;
  newton_schulz5(m.data(), rows, cols, o.data(), 5, scratch);
  newton_schulz5(mt.data(), cols, rows, ot.data(), 5, scratch);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(o[i * cols + j], ot[j * rows + i]);
}

TEST(NewtonSchulz5, ZeroInZeroOut) {
  std::vector<float> m(12, 0.0f), o(12, 1.0f), scratch;
  newton_schulz5(m.data(), 3, 4, o.data(), 5, scratch);
  for (float v : o) EXPECT_EQ(v, 0.0f);
}

// ---- One Muon step against FP64 ---------------------------------------------------------------

// SPEC §5 in double, written from the formula: NS5 of d (rows, cols).
std::vector<double> ns5_reference(std::vector<double> d, int64_t rows, int64_t cols) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  double norm = 0;
  for (double v : d) norm += v * v;
  norm = std::sqrt(norm) + 1e-7;
  const bool tall = rows > cols;
  const int64_t R = tall ? cols : rows, C = tall ? rows : cols;
  std::vector<double> X(static_cast<size_t>(R * C));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      (tall ? X[j * rows + i] : X[i * cols + j]) = d[i * cols + j] / norm;
  for (int it = 0; it < 5; ++it) {
    std::vector<double> A(static_cast<size_t>(R * R), 0.0), B(A.size(), 0.0), Xn(X.size(), 0.0);
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < R; ++j)
        for (int64_t k = 0; k < C; ++k) A[i * R + j] += X[i * C + k] * X[j * C + k];
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < R; ++j) {
        double a2 = 0;
        for (int64_t k = 0; k < R; ++k) a2 += A[i * R + k] * A[k * R + j];
        B[i * R + j] = b * A[i * R + j] + c * a2;
      }
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) {
        double s = 0;
        for (int64_t k = 0; k < R; ++k) s += B[i * R + k] * X[k * C + j];
        Xn[i * C + j] = a * X[i * C + j] + s;
      }
    X = std::move(Xn);
  }
  std::vector<double> o(d.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) o[i * cols + j] = tall ? X[j * rows + i] : X[i * cols + j];
  return o;
}

ModelConfig small_model() {
  return config_from_sets({"model.n_layers=2", "model.d_model=32", "model.dense_inter=48",
                           "model.moe_inter=16", "model.q_lora_rank=16", "model.kv_lora_rank=16",
                           "model.qk_nope_head_dim=8", "model.qk_rope_head_dim=8",
                           "model.v_head_dim=8", "model.n_routed_experts=4", "model.n_group=2",
                           "model.topk_group=1"})
      .model;
}

// Two Muon steps (the second sees momentum) of every Muon tensor match FP64 to 1e-5 of the
// update's scale; the other tensors match an AdamW-only run bitwise; the bias is untouched.
TEST(Muon, TwoStepsMatchFp64Reference) {
  const ModelConfig mc = small_model();
  const ParamTable table(mc);
  OptimizerConfig muon_cfg;
  muon_cfg.name = "muon";
  const double wd = 0.1, mu = 0.95;
  const std::vector<double> lrs = {3e-3, 2e-3}, scales = {1.0, 0.5};
  std::vector<float> w(static_cast<size_t>(table.total()));
  init_params(table, 5, w.data());
  for (float& v : w) v += 0.01f;  // the bias too, so "untouched" means something
  std::vector<float> w_adamw = w, w0 = w;
  Optimizer muon(table, muon_cfg, wd, 2);
  AdamW adamw(table, muon_cfg, wd);  // under "muon" it skips the Muon group
  std::vector<double> ref(w.begin(), w.end()), buf(w.size(), 0.0);
  for (int step = 0; step < 2; ++step) {
    const std::vector<float> g = random_matrix(table.total(), 100 + step, 0.05);
    muon.update(w.data(), g.data(), lrs[step], scales[step], step);
    adamw.update(w_adamw.data(), g.data(), lrs[step], scales[step], step);
    for (const ParamInfo& p : table.all()) {
      if (p.group != OptGroup::Muon) continue;
      const int64_t rows = p.shape[0], cols = p.shape[1];
      std::vector<double> d(static_cast<size_t>(p.numel));
      for (int64_t i = 0; i < p.numel; ++i) {
        const double gi = double(g[p.offset + i]) * scales[step];
        double& bi = buf[p.offset + i];
        bi = mu * bi + gi;
        d[i] = gi + mu * bi;
      }
      const std::vector<double> o = ns5_reference(d, rows, cols);
      const double f = 0.2 * std::sqrt(double(std::max(rows, cols)));
      for (int64_t i = 0; i < p.numel; ++i) {
        double& wi = ref[p.offset + i];
        wi -= lrs[step] * (f * o[i] + wd * wi);
      }
    }
  }
  int64_t checked = 0;
  for (const ParamInfo& p : table.all()) {
    if (p.group != OptGroup::Muon) {
      for (int64_t i = 0; i < p.numel; ++i)
        ASSERT_EQ(w[p.offset + i], w_adamw[p.offset + i]) << p.name << "[" << i << "]";
      if (p.group == OptGroup::Rule) {
        for (int64_t i = 0; i < p.numel; ++i) ASSERT_EQ(w[p.offset + i], w0[p.offset + i]);
      }
      continue;
    }
    double diff = 0, scale = 0;  // relative to the size of the two steps' update
    for (int64_t i = 0; i < p.numel; ++i) {
      const double di = ref[p.offset + i] - double(w0[p.offset + i]);
      scale = std::max(scale, std::abs(di));
      diff = std::max(diff, std::abs(double(w[p.offset + i]) - ref[p.offset + i]));
    }
    EXPECT_LE(diff, 1e-5 * scale) << p.name << ": worst " << diff << " of update " << scale;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

// ---- AdamW unchanged ----------------------------------------------------------------------

// AdamW as it was before Muon, verbatim: every gradient-trained tensor, decay but for
// AdamWNoDecay. The "adamw" optimizer must reproduce it bit for bit.
void adamw_before_muon(const ParamTable& table, const OptimizerConfig& cfg, double wd,
                       std::vector<float>& m_, std::vector<float>& v_, float* params,
                       const float* grads, double lr, double grad_scale, int64_t step) {
  const double b1 = cfg.beta1, b2 = cfg.beta2;
  const double c1 = 1.0 - std::pow(b1, double(step + 1));
  const double c2 = 1.0 - std::pow(b2, double(step + 1));
  const float fb1 = float(b1), fb2 = float(b2), fscale = float(grad_scale);
  const float step_size = float(lr / c1), inv_c2 = float(1.0 / c2), eps = float(cfg.eps);
  for (const ParamInfo& p : table.all()) {
    if (p.group == OptGroup::Rule) continue;
    const float decay = p.group == OptGroup::AdamWNoDecay ? 0.0f : float(lr * wd);
    float* w = params + p.offset;
    float* m = m_.data() + p.offset;
    float* v = v_.data() + p.offset;
    const float* g = grads + p.offset;
    for (int64_t i = 0; i < p.numel; ++i) {
      const float gi = g[i] * fscale;
      m[i] = fb1 * m[i] + (1.0f - fb1) * gi;
      v[i] = fb2 * v[i] + (1.0f - fb2) * gi * gi;
      const float denom = std::sqrt(v[i] * inv_c2) + eps;
      w[i] -= step_size * m[i] / denom + decay * w[i];
    }
  }
}

TEST(AdamW, OptimizerAdamwIsBitwiseTheAdamwOfBefore) {
  const ParamTable table(small_model());
  const OptimizerConfig cfg;  // "adamw"
  ASSERT_EQ(cfg.name, "adamw");
  std::vector<float> w(static_cast<size_t>(table.total()));
  init_params(table, 9, w.data());
  std::vector<float> w_before = w, m(w.size(), 0.0f), v(w.size(), 0.0f);
  Optimizer opt(table, cfg, 0.1, 2);
  EXPECT_EQ(opt.muon(), nullptr);
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> g = random_matrix(table.total(), 200 + step, 0.05);
    opt.update(w.data(), g.data(), 1e-3 * (step + 1), step == 1 ? 0.7 : 1.0, step);
    adamw_before_muon(table, cfg, 0.1, m, v, w_before.data(), g.data(), 1e-3 * (step + 1),
                      step == 1 ? 0.7 : 1.0, step);
  }
  EXPECT_EQ(w, w_before);
  for (size_t t = 0; t < table.all().size(); ++t) {
    const ParamInfo& p = table.all()[t];
    const auto at = [&](const std::vector<float>& full) {
      return std::vector<float>(full.begin() + p.offset, full.begin() + p.offset + p.numel);
    };
    const auto span_vec = [](std::span<const float> s) {
      return std::vector<float>(s.begin(), s.end());
    };
    if (p.group == OptGroup::Rule) {
      EXPECT_TRUE(opt.adamw().m(t).empty()) << p.name << ": a Rule tensor keeps no moments";
      continue;
    }
    EXPECT_EQ(span_vec(opt.adamw().m(t)), at(m)) << p.name;
    EXPECT_EQ(span_vec(opt.adamw().v(t)), at(v)) << p.name;
  }
}

// ---- ZeRO-1: an owner keeps the optimizer state of its share alone -----------------------

// One optimizer with all the state (`one`, on `whole`) and two owners with dp_plan's
// halves (`a`, `b`, on `split`), from the same weights.
struct SplitOptimizers {
  const ParamTable table{small_model()};
  const std::vector<FlatRange> owners = plan_owners(table, 2);
  OptimizerConfig cfg;
  std::vector<float> whole, split;
  std::optional<Optimizer> one, a, b;
  SplitOptimizers(const std::string& name, uint64_t seed, int threads) {
    cfg.name = name;
    whole.resize(static_cast<size_t>(table.total()));
    init_params(table, seed, whole.data());
    split = whole;
    one.emplace(table, cfg, 0.1, threads);
    a.emplace(table, cfg, 0.1, threads, owners[0]);
    b.emplace(table, cfg, 0.1, 1, owners[1]);
  }
  void step(const std::vector<float>& g, double clip, int step) {
    one->update(whole.data(), g.data(), 1e-3, clip, step);
    a->update(split.data(), g.data(), 1e-3, clip, step, owners[0]);
    b->update(split.data(), g.data(), 1e-3, clip, step, owners[1]);
  }
};

// Two owners, each with the state of its half, give the bits of one optimizer with all the
// state, under AdamW and under Muon, and keep no more state together.
TEST(ShardedState, OwnersGiveTheBitsOfOneOptimizer) {
  for (const std::string name : {"adamw", "muon"}) {
    SplitOptimizers o(name, 5, 2);
    for (int step = 0; step < 3; ++step)
      o.step(random_matrix(o.table.total(), 300 + step, 0.05), 0.9, step);
    EXPECT_EQ(o.split, o.whole) << name;
    EXPECT_EQ(o.a->state_floats() + o.b->state_floats(), o.one->state_floats()) << name;
    EXPECT_GT(o.a->state_floats(), 0) << name;
    EXPECT_GT(o.b->state_floats(), 0) << name;
    // State only where an update needs it: two AdamW moments, or one Muon momentum.
    int64_t needed = 0;
    for (const ParamInfo& p : o.table.all()) {
      const OptGroup grp = effective_group(p.group, o.cfg);
      needed += grp == OptGroup::Rule ? 0 : grp == OptGroup::Muon ? p.numel : 2 * p.numel;
    }
    EXPECT_EQ(o.one->state_floats(), needed) << name;
  }
}

// Recovery moves state between owners: two owners' shares, read out tensor by tensor and
// written into one optimizer of the whole table, carry on with the bits of one optimizer
// that never was split.
TEST(ShardedState, StateMovedBetweenOwnersCarriesOnBitwise) {
  for (const std::string name : {"adamw", "muon"}) {
    SplitOptimizers o(name, 6, 1);
    std::vector<std::vector<float>> g;
    for (int step = 0; step < 4; ++step)
      g.push_back(random_matrix(o.table.total(), 400 + step, 0.05));
    for (int step = 0; step < 2; ++step) o.step(g[step], 1.0, step);
    Optimizer merged(o.table, o.cfg, 0.1, 1);
    std::vector<float> buf;
    for (size_t t = 0; t < o.table.all().size(); ++t) {
      buf.assign(size_t(merged.state_floats_of(t)), 0.0f);
      if (buf.empty()) continue;
      const Optimizer& from = o.owners[0].covers(o.table.all()[t]) ? *o.a : *o.b;
      from.read_state(t, buf.data());
      merged.write_state(t, buf.data());
    }
    for (int step = 2; step < 4; ++step) {
      o.one->update(o.whole.data(), g[step].data(), 1e-3, 1.0, step);
      merged.update(o.split.data(), g[step].data(), 1e-3, 1.0, step);
    }
    EXPECT_EQ(o.split, o.whole) << name;
  }
}

TEST(ShardedState, UpdatingATensorWhoseStateIsElsewhereThrowsNamingIt) {
  const ParamTable table(small_model());
  const std::vector<FlatRange> owners = plan_owners(table, 2);
  for (const std::string name : {"adamw", "muon"}) {
    OptimizerConfig cfg;
    cfg.name = name;
    std::vector<float> w(static_cast<size_t>(table.total())), g(w.size(), 0.01f);
    Optimizer a(table, cfg, 0.1, 1, owners[0]);
    try {
      a.update(w.data(), g.data(), 1e-3, 1.0, 0);  // every tensor, half of them not kept here
      ADD_FAILURE() << name << ": no error";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("outside the state range"), std::string::npos)
          << e.what();
    }
  }
}

// ---- The split --------------------------------------------------------------------------

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

TEST(OptimizerSplit, TinyTableMuonIsTheBlockMatrices) {
  const ModelConfig tiny;  // the defaults are tiny (configs/tiny.toml)
  const ParamTable table(tiny);
  OptimizerConfig muon_cfg, adamw_cfg;
  muon_cfg.name = "muon";
  int64_t muon = 0;
  for (const ParamInfo& p : table.all()) {
    const bool in_block = starts_with(p.name, "model.layers.") || starts_with(p.name, "mtp.");
    const bool is_mhc = p.name.find("_hc.") != std::string::npos;
    const bool is_gate = p.name.find(".mlp.gate.") != std::string::npos;
    EXPECT_NE(effective_group(p.group, adamw_cfg), OptGroup::Muon) << p.name;
    if (p.group != OptGroup::Muon) {
      // Every 2-D matrix in a block is Muon's but mHC φ and the MoE gate E (SPEC §5).
      if (in_block && p.shape.size() == 2) {
        EXPECT_TRUE(is_mhc || is_gate) << p.name;
      }
      continue;
    }
    ++muon;
    EXPECT_EQ(p.shape.size(), 2u) << p.name;
    EXPECT_TRUE(in_block) << p.name;
    EXPECT_FALSE(is_mhc || is_gate) << p.name;
    EXPECT_EQ(effective_group(p.group, muon_cfg), OptGroup::Muon) << p.name;
    EXPECT_EQ(effective_group(p.group, adamw_cfg), OptGroup::AdamW) << p.name;
  }
  // 4 layers × 5 attention + 1 dense FFN × 3 + 3 MoE layers × 9 experts × 3, + MTP (proj,
  // 5 attention, 3 FFN), + Engram at layer 1 (W_K per mHC stream, W_V): each expert's
  // matrix its own tensor.
  EXPECT_EQ(muon, 4 * 5 + 3 + 3 * 9 * 3 + 1 + 5 + 3 + 4 + 1);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight",
                           "model.layers.1.mlp.gate.weight", "model.layers.0.attn_hc.phi_pre"})
    EXPECT_EQ(effective_group(table.at(name).group, muon_cfg), OptGroup::AdamW) << name;
  EXPECT_EQ(effective_group(table.at("model.norm.weight").group, muon_cfg), OptGroup::AdamWNoDecay);
  EXPECT_EQ(
      effective_group(table.at("model.layers.1.mlp.gate.e_score_correction_bias").group, muon_cfg),
      OptGroup::Rule);
}

// ---- In the trainer ------------------------------------------------------------------------

JobConfig muon_job(int threads) {
  JobConfig cfg = config_from_sets(
      {"model.n_layers=2", "model.seq_len=32", "model.d_model=32", "model.dense_inter=64",
       "model.moe_inter=16", "model.q_lora_rank=16", "model.kv_lora_rank=16",
       "model.qk_nope_head_dim=8", "model.qk_rope_head_dim=8", "model.v_head_dim=8",
       "train.batch_size=8", "train.micro_batch_rows=2", "train.steps=4", "train.warmup_steps=1",
       "train.eval_every=0", "optimizer.name=muon"});
  cfg.train.threads = threads;
  return cfg;
}

TEST(Muon, TrainerStepsAreFiniteAndThreadCountFree) {
  Trainer one(muon_job(1)), two(muon_job(2));
  StepStats first{}, last{};
  for (int64_t s = 0; s < 4; ++s) {
    StepStats a = one.train_step(s), b = two.train_step(s);
    ASSERT_EQ(a.loss, b.loss) << "step " << s;
    if (s == 0) first = a;
    last = a;
  }
  EXPECT_TRUE(std::isfinite(last.loss));
  EXPECT_LT(last.loss, first.loss);
  EXPECT_EQ(one.weights_hash(), two.weights_hash());
}

}  // namespace
}  // namespace troupe::model
