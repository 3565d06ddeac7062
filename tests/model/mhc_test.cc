// mHC (SPEC-model.md §3.1): backward against central finite differences in FP64 for
// every parameter tensor and the input, Sinkhorn's sums, float/double agreement, and
// token independence (bitwise).
#include "model/mhc.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/mhc_rows.h"
#include "model/params.h"
#include "model/rng.h"

namespace troupe::model {
namespace {

const char* const kPrefix = "model.layers.0.attn_hc.";
const char* const kTensors[] = {"phi_pre",   "phi_post", "phi_res", "alpha_pre", "alpha_post",
                                "alpha_res", "b_pre",    "b_post",  "b_res"};

ModelConfig mhc_config(int64_t S, int64_t C, int64_t iters) {
  ModelConfig cfg;
  cfg.hc_mult = S;
  cfg.d_model = C;
  cfg.sinkhorn_iters = iters;
  cfg.n_layers = 1;
  cfg.ffn = Ffn::dense;
  cfg.mtp_depth = 0;
  return cfg;
}

// One mHC instance wrapped around the test sublayer F(u) = tanh(A u), with the loss
// L = Σ W ⊙ X'. All values are drawn in double and rounded to float, so that the float
// and double runs see the same inputs.
struct Problem {
  ModelConfig cfg;
  ParamTable table;
  MhcLayout layout;
  int64_t N, S, C, D;
  std::vector<double> params, x, a, w;

  Problem(const ModelConfig& c, int64_t n_tokens, uint64_t seed)
      : cfg(c),
        table(c),
        layout(MhcLayout::from(table, kPrefix)),
        N(n_tokens),
        S(c.hc_mult),
        C(c.d_model),
        D(c.hc_mult * c.d_model),
        params(table.total(), 0.0),
        x(N * D),
        a(C * C),
        w(N * D) {
    auto fill = [&](std::vector<double>::iterator out, int64_t n, uint64_t purpose, double scale,
                    double shift, bool uniform) {
      CounterRng rng(seed, purpose);
      for (int64_t i = 0; i < n; ++i) {
        const double v = uniform ? rng.uniform(i) : rng.normal(i);
        out[i] = static_cast<float>(shift + scale * v);
      }
    };
    // φ ~ N(0, 1/D) so that φ x̂ ~ N(0, 1); α ∈ [0.5, 1); b ~ N(0, 1): H_res far from
    // uniform, H_pre and H_post far from their init values.
    for (const char* name : kTensors) {
      const ParamInfo& info = table.at(std::string(kPrefix) + name);
      auto out = params.begin() + info.offset;
      const uint64_t purpose = purpose_of(info.name);
      if (name[0] == 'p') fill(out, info.numel, purpose, 1.0 / std::sqrt(double(D)), 0, false);
      if (name[0] == 'a') fill(out, info.numel, purpose, 0.5, 0.5, true);
      if (name[0] == 'b') fill(out, info.numel, purpose, 1.0, 0, false);
    }
    fill(x.begin(), N * D, 1, 1.0, 0, false);
    fill(a.begin(), C * C, 2, 1.0 / std::sqrt(double(C)), 0, false);
    fill(w.begin(), N * D, 3, 1.0, 0, false);
  }
};

template <typename T>
struct Outputs {
  std::vector<T> u, f, xout, df, du, dx, grads;
  double loss = 0;
};

template <typename T>
std::vector<T> cast(const std::vector<double>& v, int64_t begin = 0, int64_t count = -1) {
  if (count < 0) count = static_cast<int64_t>(v.size()) - begin;
  return std::vector<T>(v.begin() + begin, v.begin() + begin + count);
}

// Forward (and backward when asked) over tokens [t0, t0 + n) of the problem; dX and the
// gradients start at `init` (the backward accumulates into them).
template <typename T>
Outputs<T> run(const Problem& p, bool backward, int64_t t0 = 0, int64_t n = -1, T init = 0,
               bool overwrite_dx = false) {
  if (n < 0) n = p.N;
  const int64_t C = p.C, D = p.D;
  const std::vector<T> params = cast<T>(p.params), X = cast<T>(p.x, t0 * D, n * D);
  const std::vector<T> A = cast<T>(p.a), W = cast<T>(p.w, t0 * D, n * D);
  Outputs<T> o;
  o.u.resize(n * C), o.f.resize(n * C), o.xout.resize(n * D);
  MhcCache<T> cache;
  mhc_pre_forward<T>(p.cfg, p.layout, params.data(), X.data(), n, o.u.data(), cache);
  for (int64_t t = 0; t < n; ++t)  // f = tanh(A u)
    for (int64_t i = 0; i < C; ++i) {
      T s = 0;
      for (int64_t c = 0; c < C; ++c) s += A[i * C + c] * o.u[t * C + c];
      o.f[t * C + i] = std::tanh(s);
    }
  mhc_post_forward<T>(p.cfg, p.layout, params.data(), X.data(), o.f.data(), o.xout.data(), cache);
  for (int64_t i = 0; i < n * D; ++i) o.loss += double(W[i]) * double(o.xout[i]);
  if (!backward) return o;
  o.df.assign(n * C, T(7));  // must be overwritten
  o.dx.assign(n * D, overwrite_dx ? std::numeric_limits<T>::quiet_NaN() : init);
  o.du.assign(n * C, T(0));
  o.grads.assign(params.size(), init);
  mhc_post_backward<T>(p.cfg, p.layout, params.data(), o.grads.data(), W.data(), o.dx.data(),
                       o.df.data(), cache, !overwrite_dx);
  for (int64_t t = 0; t < n; ++t)  // du = Aᵀ (df ⊙ (1 − f²))
    for (int64_t i = 0; i < C; ++i) {
      const T g = o.df[t * C + i] * (T(1) - o.f[t * C + i] * o.f[t * C + i]);
      for (int64_t c = 0; c < C; ++c) o.du[t * C + c] += A[i * C + c] * g;
    }
  mhc_pre_backward<T>(p.cfg, p.layout, params.data(), o.grads.data(), o.du.data(), o.dx.data(),
                      cache);
  return o;
}

// Fourth-order central differences of the loss in each element of v (a parameter tensor
// or X), in FP64: (8(L(+h) − L(−h)) − (L(+2h) − L(−2h))) / 12h. Its O(h⁴) truncation error
// lets h be large enough that rounding in L (|L| ~ 10) stays near 1e-12; the plain 2-point
// form cannot reach 1e-6 on the smallest φ_res gradients (~1e-5). Returns the worst
// |fd − g| / (max(|fd|, |g|) + floor) and the largest |g|.
struct FdReport {
  double worst = 0, gmax = 0;
};
FdReport finite_difference(Problem& p, std::vector<double>& v, int64_t off, int64_t n,
                           const double* g) {
  const double h = 1e-3, floor = 1e-8;
  FdReport r;
  for (int64_t i = 0; i < n; ++i) {
    double& e = v[off + i];
    const double keep = e;
    auto loss_at = [&](double step) {
      e = keep + step;
      return run<double>(p, false).loss;
    };
    const double near = loss_at(h) - loss_at(-h), far = loss_at(2 * h) - loss_at(-2 * h);
    e = keep;
    const double fd = (8 * near - far) / (12 * h);
    const double err = std::abs(fd - g[i]) / (std::max(std::abs(fd), std::abs(g[i])) + floor);
    r.worst = std::max(r.worst, err);
    r.gmax = std::max(r.gmax, std::abs(g[i]));
  }
  return r;
}

void check_gradients(int64_t S, int64_t C, int64_t iters) {
  Problem p(mhc_config(S, C, iters), 3, 11 + iters);
  const Outputs<double> o = run<double>(p, true);
  for (const char* name : kTensors) {
    const ParamInfo& info = p.table.at(std::string(kPrefix) + name);
    const FdReport r =
        finite_difference(p, p.params, info.offset, info.numel, o.grads.data() + info.offset);
    std::printf("  S=%lld iters=%-2lld %-10s worst rel err %.2e  max|g| %.3e\n",
                static_cast<long long>(S), static_cast<long long>(iters), name, r.worst, r.gmax);
    EXPECT_LE(r.worst, 1e-6) << name << " iters=" << iters;
    EXPECT_GT(r.gmax, 1e-3) << name << ": gradient too small for a meaningful check";
  }
  const FdReport r = finite_difference(p, p.x, 0, p.N * p.D, o.dx.data());
  std::printf("  S=%lld iters=%-2lld %-10s worst rel err %.2e  max|g| %.3e\n",
              static_cast<long long>(S), static_cast<long long>(iters), "X", r.worst, r.gmax);
  EXPECT_LE(r.worst, 1e-6) << "X iters=" << iters;
}

TEST(Mhc, GradientsMatchFiniteDifferences20Rounds) {
  check_gradients(4, 8, 20);
}
TEST(Mhc, GradientsMatchFiniteDifferences1Round) {
  check_gradients(4, 8, 1);
}
TEST(Mhc, GradientsMatchFiniteDifferences3Rounds) {
  check_gradients(4, 8, 3);
}
// S = 3 takes the run-time-S Sinkhorn path (S = 4 has its own instantiation); C = 7
// the tail of the 8-lane dot product.
TEST(Mhc, GradientsMatchFiniteDifferencesThreeStreams) {
  check_gradients(3, 7, 5);
}

TEST(Mhc, SinkhornIsNearlyDoublyStochastic) {
  // φ_res ~ N(0, 1/D), α_res = 1, b_res = 0: H̃ = φ_res x̂ ~ N(0, 1) entrywise.
  Problem p(mhc_config(4, 16, 20), 250, 5);  // 250: the last Sinkhorn block is partial
  const std::string pre = kPrefix;
  p.params[p.table.offset(pre + "alpha_res")] = 1.0;
  const ParamInfo& b = p.table.at(pre + "b_res");
  std::fill_n(p.params.begin() + b.offset, b.numel, 0.0);
  const std::vector<double> params = cast<double>(p.params);
  std::vector<double> u(p.N * p.C);
  MhcCache<double> cache;
  mhc_pre_forward<double>(p.cfg, p.layout, params.data(), p.x.data(), p.N, u.data(), cache);
  double worst_row = 0, worst_col = 0;
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t i = 0; i < p.S; ++i) {
      double rs = 0, cs = 0;
      for (int64_t j = 0; j < p.S; ++j) {
        EXPECT_GT(cache.h_res(n, i, j), 0.0);
        rs += cache.h_res(n, i, j);
        cs += cache.h_res(n, j, i);
      }
      worst_row = std::max(worst_row, std::abs(rs - 1));
      worst_col = std::max(worst_col, std::abs(cs - 1));
    }
  }
  std::printf("  after 20 rounds: max |row sum − 1| %.2e, max |column sum − 1| %.2e\n", worst_row,
              worst_col);
  EXPECT_LE(worst_row, 1e-3);
  EXPECT_LE(worst_col, 1e-14);
}

// max |a − b| / scale over [off, off + n); scale = max |b| unless given.
double worst_rel(const std::vector<float>& a, const std::vector<double>& b, int64_t off = 0,
                 int64_t n = -1, double scale = 0) {
  if (n < 0) n = static_cast<int64_t>(b.size());
  double worst = 0, top = 0;
  for (int64_t i = off; i < off + n; ++i) {
    top = std::max(top, std::abs(b[i]));
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst / (scale > 0 ? scale : top);
}

TEST(Mhc, FloatMatchesDouble) {
  Problem p(mhc_config(4, 128, 20), 16, 21);
  const Outputs<float> f = run<float>(p, true);
  const Outputs<double> d = run<double>(p, true);
  const double tol = 1e-5;
  const double eu = worst_rel(f.u, d.u), ex = worst_rel(f.xout, d.xout);
  const double edf = worst_rel(f.df, d.df), edx = worst_rel(f.dx, d.dx);
  std::printf("  float vs double: u %.1e  X' %.1e  df %.1e  dX %.1e\n", eu, ex, edf, edx);
  EXPECT_LE(eu, tol);
  EXPECT_LE(ex, tol);
  EXPECT_LE(edf, tol);
  EXPECT_LE(edx, tol);
  // A parameter gradient sums over tokens, and its terms can cancel (dα_post here: the
  // total is ~1/500 of Σ_t |per-token gradient|), so it is measured against the scale
  // of its terms: max_i Σ_t |g_t[i]| with g_t the gradient of token t alone, in double.
  std::vector<double> term_scale(d.grads.size(), 0.0);
  for (int64_t t = 0; t < p.N; ++t) {
    const Outputs<double> one = run<double>(p, true, t, 1);
    for (size_t i = 0; i < term_scale.size(); ++i) term_scale[i] += std::abs(one.grads[i]);
  }
  for (const char* name : kTensors) {
    const ParamInfo& info = p.table.at(std::string(kPrefix) + name);
    const double scale = *std::max_element(term_scale.begin() + info.offset,
                                           term_scale.begin() + info.offset + info.numel);
    const double e = worst_rel(f.grads, d.grads, info.offset, info.numel, scale);
    std::printf("  float vs double: d%-10s %.1e\n", name, e);
    EXPECT_LE(e, tol) << name;
  }
}

TEST(Mhc, TokensAreIndependentBitwise) {
  Problem p(mhc_config(4, 128, 20), 9, 31);
  const Outputs<float> all = run<float>(p, true);
  for (int64_t t = 0; t < p.N; ++t) {
    const Outputs<float> one = run<float>(p, true, t, 1);
    auto same = [&](const std::vector<float>& whole, const std::vector<float>& part) {
      return std::memcmp(whole.data() + t * part.size(), part.data(),
                         part.size() * sizeof(float)) == 0;
    };
    EXPECT_TRUE(same(all.u, one.u)) << "u, token " << t;
    EXPECT_TRUE(same(all.xout, one.xout)) << "X', token " << t;
    EXPECT_TRUE(same(all.df, one.df)) << "df, token " << t;
    EXPECT_TRUE(same(all.dx, one.dx)) << "dX, token " << t;
  }
}

// The table stacks φ_pre, φ_post, φ_res, and mhc.cc then runs one GEMM over all three; a
// layout where φ_res lies elsewhere takes the per-tensor path. Both give the same bits.
TEST(Mhc, StackedAndSeparatePhiGiveTheSameBits) {
  const Problem p(mhc_config(4, 16, 5), 10, 41);
  Problem q = p;
  const ParamInfo& res = p.table.at(std::string(kPrefix) + "phi_res");
  q.layout.phi_res = static_cast<int64_t>(q.params.size());
  q.params.insert(q.params.end(), p.params.begin() + res.offset,
                  p.params.begin() + res.offset + res.numel);
  const Outputs<float> a = run<float>(p, true), b = run<float>(q, true);
  auto same = [](const std::vector<float>& x, const std::vector<float>& y, int64_t n) {
    return std::memcmp(x.data(), y.data(), size_t(n) * sizeof(float)) == 0;
  };
  EXPECT_TRUE(same(a.u, b.u, int64_t(a.u.size())));
  EXPECT_TRUE(same(a.xout, b.xout, int64_t(a.xout.size())));
  EXPECT_TRUE(same(a.dx, b.dx, int64_t(a.dx.size())));
  for (const char* name : kTensors) {
    const ParamInfo& info = p.table.at(std::string(kPrefix) + name);
    const int64_t at = std::string(name) == "phi_res" ? q.layout.phi_res : info.offset;
    EXPECT_EQ(0, std::memcmp(a.grads.data() + info.offset, b.grads.data() + at,
                             size_t(info.numel) * sizeof(float)))
        << name;
  }
}

TEST(Mhc, BackwardAccumulatesIntoDxAndGrads) {
  Problem p(mhc_config(4, 8, 3), 5, 51);
  const Outputs<double> zero = run<double>(p, true), one = run<double>(p, true, 0, -1, 1.0);
  for (size_t i = 0; i < zero.dx.size(); ++i) EXPECT_NEAR(one.dx[i], zero.dx[i] + 1, 1e-12);
  for (const char* name : kTensors) {
    const ParamInfo& info = p.table.at(std::string(kPrefix) + name);
    for (int64_t i = info.offset; i < info.offset + info.numel; ++i)
      EXPECT_NEAR(one.grads[i], zero.grads[i] + 1, 1e-12) << name;
  }
  EXPECT_EQ(one.grads[0], 1.0);  // the embedding: not an mHC tensor, untouched
}

// The model's call: mhc_post_backward writes dX (here over NaN) with the bits of += onto zeros.
TEST(Mhc, PostBackwardOverwritingDxGivesTheBitsOfAccumulatingOntoZeros) {
  const Problem p(mhc_config(4, 32, 5), 11, 61);
  const Outputs<float> acc = run<float>(p, true), over = run<float>(p, true, 0, -1, 0.0f, true);
  EXPECT_EQ(0, std::memcmp(acc.dx.data(), over.dx.data(), acc.dx.size() * sizeof(float)));
}

TEST(Mhc, LayoutFollowsTheTable) {
  const ModelConfig cfg = mhc_config(4, 8, 20);
  const ParamTable table(cfg);
  const MhcLayout L = MhcLayout::from(table, "model.layers.0.mlp_hc.");
  EXPECT_EQ(L.phi_res, table.offset("model.layers.0.mlp_hc.phi_res"));
  EXPECT_EQ(L.b_res, table.offset("model.layers.0.mlp_hc.b_res"));
  EXPECT_THROW(MhcLayout::from(table, "model.layers.9.attn_hc."), std::out_of_range);
}

TEST(Mhc, CallsOutOfOrderThrow) {
  Problem p(mhc_config(4, 8, 3), 2, 41);
  const std::vector<float> params = cast<float>(p.params), X = cast<float>(p.x);
  std::vector<float> u(p.N * p.C), f(p.N * p.C, 0.5f), xout(p.N * p.D), dx(p.N * p.D);
  std::vector<float> grads(params.size());
  MhcCache<float> cache;
  mhc_pre_forward<float>(p.cfg, p.layout, params.data(), X.data(), p.N, u.data(), cache);
  EXPECT_THROW(mhc_pre_backward<float>(p.cfg, p.layout, params.data(), grads.data(), u.data(),
                                       dx.data(), cache),
               std::logic_error);
  EXPECT_THROW(mhc_post_forward<float>(p.cfg, p.layout, params.data(), X.data(), f.data(),
                                       xout.data(), cache),
               std::logic_error);  // the failed call above left the cache unusable
}

// The one-pass stream mix of four streams (post forward) has the bits of combine() per output
// stream, at widths with and without a tail past its whole vectors, floats and doubles.
template <typename T>
void check_mix4(int64_t n) {
  std::vector<T> X(4 * n), f(n), H(16), ho(4), want(4 * n), got(4 * n);
  uint64_t i = 0;
  for (std::vector<T>* v : {&X, &f, &H, &ho})
    for (T& e : *v) e = T(std::sin(double(++i) * 0.7));  // negative and positive, no pattern
  const T* rows[5] = {X.data(), X.data() + n, X.data() + 2 * n, X.data() + 3 * n, f.data()};
  for (int64_t k = 0; k < 4; ++k) {
    const T coef[5] = {H[k * 4], H[k * 4 + 1], H[k * 4 + 2], H[k * 4 + 3], ho[k]};
    mhc_rows::combine(coef, 1, rows, 5, n, want.data() + k * n, false);
  }
  mhc_rows::mix4(X.data(), f.data(), H.data(), ho.data(), n, got.data());
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(T))) << "n " << n;
}

TEST(Mhc, MixOfFourStreamsHasTheBitsOfCombine) {
  for (int64_t n : {1, 7, 32, 45, 128, 256}) {
    check_mix4<float>(n);
    check_mix4<double>(n);
  }
}

// α_res's gradient sums its tokens' terms g·proj_res in order, in groups of 8 tokens (a sum per
// group, then the groups' sums): a definition of its own, whatever the Sinkhorn lane count.
// 16 lanes once regrouped it (the demo's weights changed after 19 steps). Each token's g is
// db_res of a loss that weighs that token alone.
TEST(Mhc, AlphaResGradientSumsGroupsOfEightTokens) {
  const Problem p(mhc_config(4, 32, 5), 44, 71);
  const ParamInfo& b_res = p.table.at(std::string(kPrefix) + "b_res");
  const int64_t alpha_res = p.table.at(std::string(kPrefix) + "alpha_res").offset, SS = 16;
  MhcCache<float> cache;
  const std::vector<float> params = cast<float>(p.params), X = cast<float>(p.x);
  std::vector<float> u(p.N * p.C);
  mhc_pre_forward<float>(p.cfg, p.layout, params.data(), X.data(), p.N, u.data(), cache);
  std::vector<float> terms(p.N * SS);  // g_e · proj_res[e] of each token
  for (int64_t n = 0; n < p.N; ++n) {
    Problem one = p;
    for (int64_t i = 0; i < p.N * p.D; ++i) one.w[i] = i / p.D == n ? p.w[i] : 0.0;
    const Outputs<float> o = run<float>(one, true);
    for (int64_t e = 0; e < SS; ++e)
      terms[n * SS + e] = o.grads[b_res.offset + e] * cache.proj[n * cache.P() + 8 + e];
  }
  auto term_sum = [&](int64_t group) {
    float total = 0, part = 0;
    for (int64_t n = 0; n < p.N; ++n) {
      for (int64_t e = 0; e < SS; ++e) part += terms[n * SS + e];
      if ((n + 1) % group == 0 || n + 1 == p.N) total += part, part = 0;
    }
    return total;
  };
  const float got = run<float>(p, true).grads[alpha_res], want = term_sum(8);
  EXPECT_EQ(0, std::memcmp(&got, &want, sizeof(float))) << got << " vs " << want;
  const float by16 = term_sum(16), flat = term_sum(p.N);  // the test can tell them apart
  EXPECT_TRUE(by16 != want || flat != want) << "inputs too tame to test the grouping";
}

}  // namespace
}  // namespace troupe::model
