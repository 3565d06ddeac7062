// expf_exact against std::exp: every bit, over a stride through all floats, glibc's edges
// and the values mHC feeds it.
#include "kernels/cpu/expf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using troupe::kernels::expf_exact;

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// Compares expf_exact on xs (in one call, so the vector path sees them side by side) with
// std::exp, value by value; returns the number of mismatches and names the first ones.
int64_t mismatches(const std::vector<float>& xs) {
  std::vector<float> got(xs.size());
  expf_exact(xs.data(), got.data(), int64_t(xs.size()));
  int64_t bad = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const float want = std::exp(xs[i]);
    if (bits(want) == bits(got[i])) continue;
    if (++bad <= 5)
      ADD_FAILURE() << "expf_exact(" << xs[i] << " = 0x" << std::hex << bits(xs[i]) << ") = 0x"
                    << bits(got[i]) << ", std::exp gives 0x" << bits(want);
  }
  return bad;
}

TEST(ExpfExact, EqualsStdExpOnAStrideThroughEveryFloat) {
  // Every 251st bit pattern (prime, so every mantissa residue and exponent is visited):
  // about 17 M values, NaNs and infinities included.
  std::vector<float> xs;
  xs.reserve(size_t(1) << 24);
  for (uint64_t b = 0; b <= 0xffffffffull; b += 251) xs.push_back(from_bits(uint32_t(b)));
  EXPECT_EQ(mismatches(xs), 0);
}

TEST(ExpfExact, EqualsStdExpAtGlibcsEdgesAndOnMhcsArguments) {
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           88.0f,
                           -88.0f,
                           88.72283f,
                           88.72284f,
                           -103.97207f,
                           -103.97208f,
                           -103.27892f,
                           -87.33655f,
                           -87.33654f,
                           1e-30f,
                           -1e-30f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::denorm_min()};
  // Around each edge, every neighbouring float.
  for (float edge : {88.0f, -88.0f, 88.72283f, -103.97207f, -103.27892f, -87.33655f, 0.0f}) {
    const uint32_t b = bits(edge);
    for (uint32_t d = 0; d < 64; ++d)
      xs.push_back(from_bits(b + d)), xs.push_back(from_bits(b - d));
  }
  // Sinkhorn's arguments, H̃ − max H̃ <= 0, and sigmoid's −z: dense in [−30, 30].
  for (int i = 0; i <= 600000; ++i) xs.push_back(-30.0f + 60.0f * float(i) / 600000.0f);
  // Odd lengths: the scalar tail after the last whole vector.
  EXPECT_EQ(mismatches(xs), 0);
  xs.resize(xs.size() - 3);
  EXPECT_EQ(mismatches(xs), 0);
}

TEST(ExpfExact, TakesTheVectorPathWhereTheBuildHasOne) {
#if defined(__AVX2__) && defined(__FMA__)
  // Built with AVX2 and FMA, glibc's expf is __expf_fma, which the vector path copies: its
  // start-up check must have passed, or every call silently pays for the scalar loop.
  EXPECT_TRUE(troupe::kernels::expf_exact_vectorised());
#else
  EXPECT_FALSE(troupe::kernels::expf_exact_vectorised());
#endif
}

}  // namespace
