// Optimizers (SPEC §5): NS5's known behaviour, one Muon step against an independent FP64
// restatement of the SPEC formula, AdamW against its closed forms, and the Muon/AdamW split.
#include "optim/optim.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "model/params.h"
#include "model/rng.h"
#include "optim/muon.h"
#include "tests/tiny_test_job.h"
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

// The tests' tiny model with fewer and narrower experts: the same table as before the shared
// config (seq_len, now 32 rather than 128, does not enter the table).
ModelConfig small_model() {
  return tests::tiny_test_job({"model.dense_inter=48", "model.n_routed_experts=4",
                               "model.n_group=2", "model.topk_group=1"})
      .model;
}

// Two Muon steps (the second sees momentum) of every Muon tensor match FP64 to 1e-5 of the
// update's scale; the other tensors match an AdamW-only run bitwise; the bias is untouched.
TEST(Muon, TwoStepsMatchFp64Reference) {
  const ModelConfig mc = small_model();
  const ParamTable table(mc);
  OptimizerConfig muon_cfg;
  muon_cfg.name = OptimizerKind::muon;
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

// ---- AdamW against its closed form ---------------------------------------------------------

// What AdamW is (decoupled weight decay, bias-corrected moments; β1 0.9, β2 0.95, ε 1e-8),
// as closed forms in double that any correct implementation meets to a few roundings.

// Gradients of both signs over ten decades, and zeros: at |g| = ε a first step is lr/2, at
// |g| ≫ ε it is lr·sign(g)·(1 − ε/|g|).
float spread_gradient(int64_t i) {
  static constexpr float kMagnitudes[] = {0.0f, 1e-9f, 1e-8f, 3e-7f, 1e-4f, 0.05f, 2.5f};
  return (i % 2 ? -1.0f : 1.0f) * kMagnitudes[(i / 2) % 7];
}

struct AdamWCase {  // the "adamw" optimizer on the small table, from init_params(seed 9)
  const ParamTable table{small_model()};
  const OptimizerConfig cfg;
  std::vector<float> w0, w, g;
  Optimizer opt;
  explicit AdamWCase(double wd) : opt(table, cfg, wd, 1) {
    w0.resize(static_cast<size_t>(table.total()));
    init_params(table, 9, w0.data());
    w = w0;
    g.resize(w0.size());
    for (int64_t i = 0; i < table.total(); ++i) g[i] = spread_gradient(i);
  }
};

// Every weight against want(group, g, w0) within `ulps` float roundings of the weight and of
// its move; the balancing bias (Rule) untouched, bit for bit. Names the worst element of
// each tensor that is off.
template <class Want>
void expect_weights(const AdamWCase& c, double ulps, Want want) {
  for (const ParamInfo& p : c.table.all()) {
    double worst = 0, want_worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      const size_t k = static_cast<size_t>(p.offset + i);
      if (p.group == OptGroup::Rule) {
        ASSERT_EQ(c.w[k], c.w0[k]) << p.name;
        continue;
      }
      const double w0 = c.w0[k], ref = want(p.group, double(c.g[k]), w0);
      const double tol = ulps * FLT_EPSILON * (std::abs(w0) + std::abs(ref - w0)) + 1e-30;
      const double off = std::abs(double(c.w[k]) - ref) / tol;
      if (off > worst) worst = off, want_worst = ref, at = i;
    }
    EXPECT_LE(worst, 1.0) << p.name << "[" << at << "] = " << c.w[p.offset + at] << ", want "
                          << want_worst << " (w0 " << c.w0[p.offset + at] << ", g "
                          << c.g[p.offset + at] << ")";
  }
}

// The first step: m̂ = g and v̂ = g², so Adam moves each weight by lr·g/(|g| + ε), and the
// decay takes lr·wd·w off beside it (decoupled: not through the moments, not bias-corrected).
TEST(AdamW, FirstStepMovesByLrTimesGOverAbsGPlusEpsAndDecaysApart) {
  const double lr = 1e-3, wd = 0.1;
  AdamWCase c(wd);
  EXPECT_EQ(c.opt.muon(), nullptr);
  c.opt.update(c.w.data(), c.g.data(), lr, 1.0, 0);
  const double eps = c.cfg.eps;
  expect_weights(c, 8, [&](OptGroup group, double g, double w0) {
    const double decay = group == OptGroup::AdamWNoDecay ? 0.0 : lr * wd * w0;
    return w0 - lr * g / (std::abs(g) + eps) - decay;
  });
  // The moments themselves: m = (1 − β1)·g, v = (1 − β2)·g².
  for (size_t t = 0; t < c.table.all().size(); ++t) {
    const ParamInfo& p = c.table.all()[t];
    const std::vector<float> m = c.opt.adamw().m(t), v = c.opt.adamw().v(t);
    if (p.group == OptGroup::Rule) {
      EXPECT_TRUE(m.empty() && v.empty()) << p.name << ": a Rule tensor keeps no moments";
      continue;
    }
    ASSERT_EQ(m.size(), size_t(p.numel)) << p.name;
    for (int64_t i = 0; i < p.numel; ++i) {
      const double g = c.g[p.offset + i];
      ASSERT_NEAR(m[i], (1 - c.cfg.beta1) * g, 2 * FLT_EPSILON * std::abs(g)) << p.name;
      ASSERT_NEAR(v[i], (1 - c.cfg.beta2) * g * g, 4 * FLT_EPSILON * g * g) << p.name;
    }
  }
}

// Bias correction: under a constant gradient m̂ = g and v̂ = g² at every step, so every
// step moves by lr_k·g/(|g| + ε), whatever the step's lr.
TEST(AdamW, BiasCorrectionMakesEveryStepOfAConstantGradientAlike) {
  AdamWCase c(0.0);
  const std::vector<double> lrs = {1e-3, 3e-3, 5e-4, 2e-3, 1e-3};
  double lr_sum = 0;
  for (size_t s = 0; s < lrs.size(); ++s) {
    c.opt.update(c.w.data(), c.g.data(), lrs[s], 1.0, int64_t(s));
    lr_sum += lrs[s];
  }
  const double eps = c.cfg.eps;
  expect_weights(
      c, 32, [&](OptGroup, double g, double w0) { return w0 - lr_sum * g / (std::abs(g) + eps); });
}

// A gradient, then none: step 2 has m̂ = β1·g/(1 + β1) and v̂ = β2·g²/(1 + β2), a move of
// lr·(β1/(1 + β1))·g / (√(β2/(1 + β2))·|g| + ε): 0.679·lr·sign(g) where |g| ≫ ε.
TEST(AdamW, BiasCorrectionAfterAGradientAndThenNone) {
  AdamWCase c(0.0);
  const double lr0 = 1e-3, lr1 = 2e-3, b1 = c.cfg.beta1, b2 = c.cfg.beta2, eps = c.cfg.eps;
  const std::vector<float> zero(c.g.size(), 0.0f);
  c.opt.update(c.w.data(), c.g.data(), lr0, 1.0, 0);
  c.opt.update(c.w.data(), zero.data(), lr1, 1.0, 1);
  expect_weights(c, 8, [&](OptGroup, double g, double w0) {
    const double second =
        lr1 * (b1 / (1 + b1)) * g / (std::sqrt(b2 / (1 + b2)) * std::abs(g) + eps);
    return w0 - lr0 * g / (std::abs(g) + eps) - second;
  });
}

// No gradient, no moments: only the decay acts, w·(1 − lr·wd) per step, and not at all on
// the tensors without decay (norms).
TEST(AdamW, ZeroGradientOnlyDecays) {
  const double wd = 0.1;
  AdamWCase c(wd);
  std::fill(c.g.begin(), c.g.end(), 0.0f);
  const std::vector<double> lrs = {1e-3, 2e-3, 4e-3};
  double keep = 1;
  for (size_t s = 0; s < lrs.size(); ++s) {
    c.opt.update(c.w.data(), c.g.data(), lrs[s], 1.0, int64_t(s));
    keep *= 1 - lrs[s] * wd;
  }
  expect_weights(c, 8, [&](OptGroup group, double, double w0) {
    return group == OptGroup::AdamWNoDecay ? w0 : w0 * keep;
  });
}

// Clipping scales the gradient before it enters the moments: a step with grad_scale s is
// the step of the gradient s·g, bit for bit, moments included.
TEST(AdamW, GradScaleScalesTheGradientBeforeTheMoments) {
  AdamWCase scaled(0.1), prescaled(0.1);
  std::vector<float> g_half(scaled.g.size());
  for (size_t i = 0; i < g_half.size(); ++i) g_half[i] = scaled.g[i] * 0.5f;
  for (int64_t s = 0; s < 2; ++s) {
    scaled.opt.update(scaled.w.data(), scaled.g.data(), 1e-3, 0.5, s);
    prescaled.opt.update(prescaled.w.data(), g_half.data(), 1e-3, 1.0, s);
  }
  EXPECT_EQ(scaled.w, prescaled.w);
  for (size_t t = 0; t < scaled.table.all().size(); ++t) {
    const auto m = scaled.opt.adamw().m(t), m_pre = prescaled.opt.adamw().m(t);
    const auto v = scaled.opt.adamw().v(t), v_pre = prescaled.opt.adamw().v(t);
    EXPECT_TRUE(std::equal(m.begin(), m.end(), m_pre.begin(), m_pre.end()));
    EXPECT_TRUE(std::equal(v.begin(), v.end(), v_pre.begin(), v_pre.end()));
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
  SplitOptimizers(OptimizerKind name, uint64_t seed, int threads) {
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
  for (const auto& [kind, name] : kOptimizerNames) {
    SplitOptimizers o(kind, 5, 2);
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
  for (const auto& [kind, name] : kOptimizerNames) {
    SplitOptimizers o(kind, 6, 1);
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

// What an expert's owner on an expert shard would run (docs/eplb.md, "The plan for the
// shards' own experts"): an optimizer with the state of one routed expert alone, updating
// that expert's weights as a slice of their own (gate, up and down lie together in the
// table, as a shard's slot holds them) from that slice's gradient, gives the bits of one
// optimizer of the whole table, step after step.
TEST(ShardedState, AnExpertsOwnerUpdatesItsSliceAloneWithTheBitsOfTheWholeTable) {
  for (const auto& [kind, name] : kOptimizerNames) {
    SplitOptimizers o(kind, 7, 1);
    std::vector<FlatRange> experts;
    for (const ParamInfo& p : o.table.all()) {
      const std::string_view n = p.name;
      if (n.find(".mlp.experts.") == std::string_view::npos || !n.ends_with("gate_proj.weight"))
        continue;
      const std::string prefix(n.substr(0, n.size() - std::string_view("gate_proj.weight").size()));
      const ParamInfo& down = o.table.at(prefix + "down_proj.weight");
      experts.push_back({p.offset, down.offset + down.numel});
    }
    const ModelConfig mc = small_model();
    ASSERT_EQ(int64_t(experts.size()), mc.n_routed_experts * (mc.n_layers - mc.first_k_dense));
    std::vector<std::optional<Optimizer>> owner(experts.size());
    std::vector<std::vector<float>> slice(experts.size());
    for (size_t k = 0; k < experts.size(); ++k) {
      owner[k].emplace(o.table, o.cfg, 0.1, 1, experts[k]);
      slice[k].assign(o.whole.begin() + experts[k].lo, o.whole.begin() + experts[k].hi);
    }
    for (int step = 0; step < 3; ++step) {
      const std::vector<float> g = random_matrix(o.table.total(), 500 + step, 0.05);
      o.one->update(o.whole.data(), g.data(), 1e-3, 0.9, step);
      for (size_t k = 0; k < experts.size(); ++k) {
        const std::vector<float> gk(g.begin() + experts[k].lo, g.begin() + experts[k].hi);
        owner[k]->update(slice[k].data(), gk.data(), 1e-3, 0.9, step, experts[k], experts[k].lo);
      }
    }
    for (size_t k = 0; k < experts.size(); ++k) {
      const std::vector<float> want(o.whole.begin() + experts[k].lo,
                                    o.whole.begin() + experts[k].hi);
      EXPECT_EQ(slice[k], want) << name << ", expert slice " << k;
      EXPECT_EQ(owner[k]->state_floats(), kind == OptimizerKind::muon
                                              ? experts[k].hi - experts[k].lo
                                              : 2 * (experts[k].hi - experts[k].lo))
          << name;
    }
    EXPECT_THROW(owner[0]->update(slice[0].data(), slice[0].data(), 1e-3, 1.0, 3, experts[0],
                                  experts[0].lo + 1),
                 std::invalid_argument);
  }
}

TEST(ShardedState, UpdatingATensorWhoseStateIsElsewhereThrowsNamingIt) {
  const ParamTable table(small_model());
  const std::vector<FlatRange> owners = plan_owners(table, 2);
  for (const auto& [kind, name] : kOptimizerNames) {
    OptimizerConfig cfg;
    cfg.name = kind;
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
  muon_cfg.name = OptimizerKind::muon;
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
  JobConfig cfg = tests::tiny_test_job({"train.steps=4", "optimizer.name=muon"});
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
