// The GRPO loss op (model/grpo_loss.h): its backward against FP64 central differences with
// the clip active and inactive, A > 0 and A < 0; the clipped branch's zero gradient; the
// group advantages; the bad-input errors. Whole-model tests are in grpo_model_test.cc.
#include "model/grpo_loss.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "model/rng.h"

namespace troupe::model {
namespace {

constexpr int64_t kV = 7;

// Tokens of three completions (4, 3 and 5 tokens) with logits N(0, 1.5²), advantages A and
// π_old set so that each token's ratio ρ is exactly one of `rhos` (cycled), π_ref another
// nearby policy. Returns the logits; `in` receives the rest.
std::vector<double> make_case(const std::vector<double>& A, const std::vector<double>& rhos,
                              GrpoTokens<double>& in) {
  const std::vector<int32_t> comp = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2};
  const int64_t N = int64_t(comp.size());
  CounterRng rng(11, purpose_of("grpo_loss_test"));
  std::vector<double> logits(size_t(N * kV));
  for (int64_t i = 0; i < N * kV; ++i) logits[size_t(i)] = 1.5 * rng.normal(uint64_t(i));
  in = {};
  in.completion = comp;
  in.completions = int64_t(A.size());
  in.advantage = A;
  for (int64_t t = 0; t < N; ++t) in.token.push_back(int32_t(rng.bits(1000 + t) % kV));
  std::vector<double> lp(static_cast<size_t>(N));
  token_logprobs(logits.data(), in.token.data(), N, kV, lp.data());
  for (int64_t t = 0; t < N; ++t) {
    in.logp_old.push_back(lp[size_t(t)] - std::log(rhos[size_t(t) % rhos.size()]));
    in.logp_ref.push_back(lp[size_t(t)] + 0.3 * rng.normal(uint64_t(2000 + t)));
  }
  return logits;
}

// Worst relative error of the backward against 4th-order central differences over every
// logit; also returns the clipped fraction the forward saw.
double fd_worst(const GrpoLossConfig& cfg, std::vector<double> logits, const GrpoTokens<double>& in,
                double* clipped) {
  const int64_t N = int64_t(in.token.size());
  GrpoCache<double> cache;
  grpo_loss_forward(cfg, logits.data(), N, kV, in, cache);
  *clipped = cache.clipped_fraction;
  std::vector<double> grad(logits.size(), 0.0);
  grpo_loss_backward(cfg, N, kV, in, cache, 1.0, grad.data());
  const double h = 1e-3;  // ρ moves by ~1e-3: far from the 0.05 margin to a clip boundary
  double worst = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double keep = logits[i];
    auto at = [&](double d) {
      logits[i] = keep + d;
      GrpoCache<double> c;
      return grpo_loss_forward(cfg, logits.data(), N, kV, in, c);
    };
    const double fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    logits[i] = keep;
    const double e = std::abs(fd - grad[i]) / std::max({std::abs(fd), std::abs(grad[i]), 1e-6});
    EXPECT_LE(e, 1e-6) << "logit " << i << ": backward " << grad[i] << " fd " << fd;
    worst = std::max(worst, e);
  }
  return worst;
}

struct Case {
  const char* name;
  std::vector<double> A, rhos;
  bool expect_clipped;
};

TEST(GrpoLoss, BackwardMatchesFiniteDifferences) {
  // ρ away from 1 ± 0.2 by ≥ 0.05, so no difference step crosses a clip boundary.
  const std::vector<Case> cases = {
      {"inactive, A>0 and A<0", {1.3, -0.7, 0.4}, {0.9, 1.1, 1.0, 0.85}, false},
      {"active, A>0", {1.1, 0.6, 2.0}, {1.5, 0.6, 1.3, 0.7}, true},
      {"active, A<0", {-1.1, -0.6, -2.0}, {1.5, 0.6, 1.3, 0.7}, true},
      {"active, mixed signs", {0.8, -1.4, 0.2}, {1.45, 0.55, 1.0, 1.3}, true},
  };
  for (const Case& c : cases) {
    GrpoTokens<double> in;
    const std::vector<double> logits = make_case(c.A, c.rhos, in);
    double clipped = 0;
    const double worst = fd_worst(GrpoLossConfig{}, logits, in, &clipped);
    std::printf("  %-22s clipped fraction %.2f, worst relative error %.2e\n", c.name, clipped,
                worst);
    EXPECT_EQ(clipped > 0, c.expect_clipped) << c.name;
  }
}

// A > 0 with ρ > 1+ε (or A < 0 with ρ < 1−ε): the surrogate is the constant clip value, so
// with β = 0 no gradient flows at all; with β > 0 only the KL's.
TEST(GrpoLoss, ClippedTokensCarryNoSurrogateGradient) {
  GrpoTokens<double> in;
  const std::vector<double> logits = make_case({1.0, 0.5, 2.0}, {1.5, 1.3}, in);
  const int64_t N = int64_t(in.token.size());
  GrpoCache<double> cache;
  GrpoLossConfig no_kl{0.2, 0.0};
  const double loss = grpo_loss_forward(no_kl, logits.data(), N, kV, in, cache);
  EXPECT_EQ(cache.clipped_fraction, 1.0);
  EXPECT_NEAR(loss, -1.2 * (1.0 + 0.5 + 2.0) / 3, 1e-12);  // every token at (1+ε)·A
  std::vector<double> grad(logits.size(), 0.0);
  grpo_loss_backward(no_kl, N, kV, in, cache, 1.0, grad.data());
  for (double g : grad) EXPECT_EQ(g, 0.0);
  grpo_loss_forward(GrpoLossConfig{}, logits.data(), N, kV, in, cache);
  grpo_loss_backward(GrpoLossConfig{}, N, kV, in, cache, 1.0, grad.data());
  EXPECT_GT(*std::max_element(grad.begin(), grad.end()), 0.0);
}

// π_θ = π_old = π_ref: ρ = 1, KL = 0, the loss is −mean_g A_g, and the gradient is the
// policy gradient −Σ_t weight_t A_g (onehot − prob).
TEST(GrpoLoss, OnPolicyIsThePolicyGradient) {
  GrpoTokens<double> in;
  const std::vector<double> logits = make_case({1.5, -0.5, -1.0}, {1.0}, in);
  in.logp_ref = in.logp_old;
  const int64_t N = int64_t(in.token.size());
  GrpoCache<double> cache;
  EXPECT_NEAR(grpo_loss_forward(GrpoLossConfig{}, logits.data(), N, kV, in, cache), 0.0, 1e-15);
  EXPECT_NEAR(cache.kl_mean, 0.0, 1e-15);
  std::vector<double> grad(logits.size(), 0.0);
  grpo_loss_backward(GrpoLossConfig{}, N, kV, in, cache, 1.0, grad.data());
  const double n_g[] = {4, 3, 5};
  for (int64_t t = 0; t < N; ++t) {
    const int g = in.completion[size_t(t)];
    const double w = in.advantage[size_t(g)] / (3 * n_g[g]);
    for (int64_t v = 0; v < kV; ++v) {
      const double p = cache.prob[size_t(t * kV + v)];
      const double expect = -w * ((v == in.token[size_t(t)] ? 1.0 : 0.0) - p);
      EXPECT_NEAR(grad[size_t(t * kV + v)], expect, 1e-15);
    }
  }
}

TEST(GrpoLoss, GroupAdvantagesUsePopulationStd) {
  const std::vector<double> A = group_advantages({1, 0, 0, 0});
  const double sd = std::sqrt(0.1875);  // population: Σ(r − 0.25)² / 4
  EXPECT_NEAR(A[0], 0.75 / (sd + 1e-4), 1e-12);
  EXPECT_NEAR(A[1], -0.25 / (sd + 1e-4), 1e-12);
  for (double a : group_advantages({1, 1, 1})) EXPECT_EQ(a, 0.0);
  EXPECT_THROW(group_advantages({}), std::invalid_argument);
}

TEST(GrpoLoss, BadInputIsNamed) {
  GrpoTokens<double> in;
  const std::vector<double> logits = make_case({1.0, 0.5, 2.0}, {1.0}, in);
  const int64_t N = int64_t(in.token.size());
  GrpoCache<double> cache;
  auto fails_with = [&](GrpoTokens<double> bad, const std::string& what) {
    try {
      grpo_loss_forward(GrpoLossConfig{}, logits.data(), N, kV, bad, cache);
      ADD_FAILURE() << "no error for " << what;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  GrpoTokens<double> bad = in;
  bad.logp_old.pop_back();
  fails_with(bad, "logp_old");
  bad = in, bad.token[3] = int32_t(kV);
  fails_with(bad, "token 7");
  bad = in, bad.completion[2] = 3;
  fails_with(bad, "completion id 3");
  bad = in, bad.advantage.pop_back();
  fails_with(bad, "advantages");
}

}  // namespace
}  // namespace troupe::model
