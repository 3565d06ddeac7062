// ops.h: every backward against central finite differences of its forward in FP64, and
// the properties the forward promises (masking, inversion, skipped rows, accumulation).
#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tests/kernels/test_util.h"

namespace troupe::kernels {
namespace {

using test::random_values;
using Vec = std::vector<double>;

// Central differences: error O(h²·f''') ≈ 1e-10 and rounding O(ε·|L|/h) ≈ 1e-11 for the
// O(1) losses below, both far inside the tolerance.
constexpr double fd_step = 1e-5;
constexpr double grad_rel_tol = 1e-6;
// Below this magnitude a gradient is compared absolutely (relative error of a value that
// is ~0 measures the rounding of the finite difference, not the kernel).
constexpr double grad_abs_floor = 1e-4;

// dL/dv[i] by central differences, restoring v afterwards.
Vec finite_difference(Vec& v, const std::function<double()>& loss) {
  Vec g(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + fd_step;
    const double up = loss();
    v[i] = keep - fd_step;
    const double down = loss();
    v[i] = keep;
    g[i] = (up - down) / (2 * fd_step);
  }
  return g;
}

void expect_gradients_close(const Vec& analytic, const Vec& numeric, const std::string& what) {
  ASSERT_EQ(analytic.size(), numeric.size());
  double worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    const double scale = std::max({std::fabs(analytic[i]), std::fabs(numeric[i]), grad_abs_floor});
    const double rel = std::fabs(analytic[i] - numeric[i]) / scale;
    if (rel > worst) worst = rel, worst_at = i;
  }
  EXPECT_LE(worst, grad_rel_tol) << what << ": worst relative error at [" << worst_at
                                 << "]: analytic " << analytic[worst_at] << ", numeric "
                                 << numeric[worst_at];
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Backward kernels accumulate: run them on a buffer preset to `base`, return the increment.
constexpr double accumulate_base = 0.375;
Vec increment(const Vec& after) {
  Vec d(after);
  for (double& x : d) x -= accumulate_base;
  return d;
}

TEST(OpsGrad, RmsNorm) {
  const int64_t N = 3, D = 7;
  const double eps = 1e-5;
  Vec x = random_values<double>(N * D, 1), w = random_values<double>(D, 2);
  const Vec G = random_values<double>(N * D, 3);
  Vec out(N * D), rstd(N);
  for (bool weighted : {true, false}) {
    SCOPED_TRACE(weighted ? "with weight" : "no weight");
    const double* wp = weighted ? w.data() : nullptr;
    auto loss = [&] {
      rmsnorm_forward<double>(x.data(), wp, eps, out.data(), rstd.data(), N, D);
      return dot(G, out);
    };
    loss();
    Vec dx(N * D, accumulate_base), dw(D, accumulate_base);
    rmsnorm_backward<double>(G.data(), x.data(), wp, rstd.data(), dx.data(),
                             weighted ? dw.data() : nullptr, N, D);
    expect_gradients_close(increment(dx), finite_difference(x, loss), "rmsnorm dx");
    if (weighted) expect_gradients_close(increment(dw), finite_difference(w, loss), "rmsnorm dw");
  }
}

// Rows run in interleaved groups (ops.cc): a row's bits must be those of the same row
// computed alone, forward and backward, for the rows of a full group and the tail.
TEST(Ops, RmsNormRowGroupsMatchRowsAloneBitwise) {
  const int64_t N = 11, D = 37;
  const std::vector<float> x = random_values<float>(N * D, 5), w = random_values<float>(D, 6);
  const std::vector<float> G = random_values<float>(N * D, 7);
  for (bool weighted : {true, false}) {
    SCOPED_TRACE(weighted ? "with weight" : "no weight");
    const float* wp = weighted ? w.data() : nullptr;
    std::vector<float> out(N * D), rstd(N), dx(N * D, 0.25f), dw(D, 0.5f);
    rmsnorm_forward<float>(x.data(), wp, 1e-6f, out.data(), rstd.data(), N, D);
    rmsnorm_backward<float>(G.data(), x.data(), wp, rstd.data(), dx.data(), dw.data(), N, D);
    std::vector<float> out1(N * D), rstd1(N), dx1(N * D, 0.25f), dw1(D, 0.5f);
    for (int64_t n = 0; n < N; ++n) {
      rmsnorm_forward<float>(x.data() + n * D, wp, 1e-6f, out1.data() + n * D, &rstd1[n], 1, D);
      rmsnorm_backward<float>(G.data() + n * D, x.data() + n * D, wp, &rstd1[n], dx1.data() + n * D,
                              dw1.data(), 1, D);
    }
    EXPECT_EQ(0, std::memcmp(out.data(), out1.data(), out.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(rstd.data(), rstd1.data(), rstd.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(dx.data(), dx1.data(), dx.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(dw.data(), dw1.data(), dw.size() * sizeof(float)));
  }
}

TEST(OpsGrad, SoftmaxRows) {
  const int64_t N = 3, D = 6;
  const double ninf = -std::numeric_limits<double>::infinity();
  Vec x = random_values<double>(N * D, 4);
  for (double& v : x) v *= 3;
  x[1 * D + 2] = ninf;  // masked entries get probability 0
  x[2 * D + 0] = ninf;
  const Vec G = random_values<double>(N * D, 5);
  Vec p(N * D);
  auto loss = [&] {
    p = x;
    softmax_rows<double>(p.data(), N, D);
    return dot(G, p);
  };
  loss();
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += p[n * D + d];
    EXPECT_NEAR(s, 1.0, 1e-15) << "row " << n;
  }
  EXPECT_EQ(p[1 * D + 2], 0.0);
  EXPECT_EQ(p[2 * D + 0], 0.0);
  Vec dx(N * D, accumulate_base);
  softmax_rows_backward<double>(p.data(), G.data(), dx.data(), N, D);
  Vec numeric = finite_difference(x, loss);
  expect_gradients_close(increment(dx), numeric, "softmax dx");
}

TEST(OpsGrad, RopeBackwardIsTheAdjointAndTheInverse) {
  const int64_t N = 3, D = 8, stride = 11;  // stride > D: the gap must be left alone
  const int32_t pos[N] = {0, 5, 1000};
  const double theta = 10000.0;
  Vec x = random_values<double>(N * stride, 6);
  const Vec G = random_values<double>(N * stride, 7);
  Vec y(x.size());
  auto loss = [&] {
    y = x;
    rope_forward<double>(y.data(), N, D, stride, pos, theta);
    return dot(G, y);
  };
  loss();
  Vec g = G;  // rope_backward rotates in place: dL/dx = R(−θ)·G on the rotated lanes
  rope_backward<double>(g.data(), N, D, stride, pos, theta);
  Vec numeric = finite_difference(x, loss);
  expect_gradients_close(g, numeric, "rope dx");  // gap lanes: g keeps G, slope is G too
  // Position 0 is the identity; backward undoes forward.
  loss();  // y for the unperturbed x
  for (int64_t d = 0; d < stride; ++d) EXPECT_EQ(y[d], x[d]);
  Vec back = y;
  rope_backward<double>(back.data(), N, D, stride, pos, theta);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(back[i], x[i], 1e-14) << i;
  // Float too, at float precision.
  std::vector<float> xf(x.begin(), x.end()), yf = xf;
  rope_forward<float>(yf.data(), N, D, stride, pos, 10000.0f);
  rope_backward<float>(yf.data(), N, D, stride, pos, 10000.0f);
  for (size_t i = 0; i < xf.size(); ++i) EXPECT_NEAR(yf[i], xf[i], 1e-6) << i;
}

TEST(OpsGrad, RopeMatchesItsFormula) {
  // Dim i pairs with i + D/2 at angle pos·theta^(−2i/D).
  const int64_t D = 6;
  const int32_t pos[1] = {7};
  Vec x = random_values<double>(D, 8), y = x;
  rope_forward<double>(y.data(), 1, D, D, pos, 100.0);
  for (int64_t i = 0; i < D / 2; ++i) {
    const double ang = 7 * std::pow(100.0, -2.0 * double(i) / double(D));
    EXPECT_NEAR(y[i], x[i] * std::cos(ang) - x[i + D / 2] * std::sin(ang), 1e-14);
    EXPECT_NEAR(y[i + D / 2], x[i + D / 2] * std::cos(ang) + x[i] * std::sin(ang), 1e-14);
  }
}

TEST(OpsGrad, CrossEntropy) {
  const int64_t N = 4, V = 11;
  const int32_t target[N] = {3, -1, 0, 10};  // row 1 is skipped
  const double scale = 0.25;
  Vec logits = random_values<double>(N * V, 9);
  for (double& v : logits) v *= 4;
  auto loss = [&] {
    return scale * cross_entropy<double>(logits.data(), target, N, V, scale, nullptr);
  };
  // The loss itself, by log-sum-exp in long double.
  long double want = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (target[n] < 0) continue;
    long double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp((long double)logits[n * V + v]);
    want += std::log(s) - logits[n * V + target[n]];
  }
  EXPECT_NEAR(loss(), scale * double(want), 1e-13);
  Vec dl(N * V, accumulate_base);
  const double total = cross_entropy<double>(logits.data(), target, N, V, scale, dl.data());
  EXPECT_NEAR(total * scale, loss(), 1e-15);
  Vec d = increment(dl);
  for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d[1 * V + v], 0.0) << "skipped row was touched";
  expect_gradients_close(d, finite_difference(logits, loss), "cross_entropy dlogits");
}

TEST(OpsGrad, SiluAndSigmoid) {
  Vec xs = {-30.0, -6.0, -1.5, -0.3, 0.0, 0.2, 1.0, 4.5, 25.0};
  Vec analytic, numeric;
  for (double x : xs) {
    analytic.push_back(silu_grad<double>(x));
    numeric.push_back((silu<double>(x + fd_step) - silu<double>(x - fd_step)) / (2 * fd_step));
    EXPECT_NEAR(silu<double>(x), x / (1 + std::exp(-x)), 1e-15 * std::max(1.0, std::fabs(x)));
    EXPECT_NEAR(sigmoid<double>(x), 1 / (1 + std::exp(-x)), 1e-16);
  }
  expect_gradients_close(analytic, numeric, "silu_grad");
  // Far tails must stay finite in float (exp overflow gives σ = 0, not NaN).
  EXPECT_EQ(silu<float>(-200.0f), -0.0f);
  EXPECT_FALSE(std::isnan(silu_grad<float>(-200.0f)));
  EXPECT_FLOAT_EQ(silu_grad<float>(200.0f), 1.0f);
}

TEST(Ops, SumIsInIndexOrder) {
  const float x[4] = {1e8f, 1.0f, -1e8f, 1.0f};  // in order: (1e8 + 1) − 1e8 + 1 = 1
  EXPECT_EQ(sum<float>(x, 4), 1.0f);
  EXPECT_EQ(sum<float>(x, 0), 0.0f);
}

}  // namespace
}  // namespace troupe::kernels
