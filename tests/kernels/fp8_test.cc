// FP8 (kernels/cpu/fp8.h): the OCP formats exhaustively, rounding at every boundary,
// tile-scaled quantisation, and the emulated FP8 Linear against FP32.
#include "kernels/cpu/fp8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "tests/kernels/test_util.h"

namespace troupe::kernels {
namespace {

using test::random_values;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr Fp8Format kFormats[] = {Fp8Format::E4M3, Fp8Format::E5M2};

struct Spec {  // the OCP definition, written out independently of fp8.cc
  int exp_bits, mant_bits, bias;
  uint8_t max_code;
};
Spec spec_of(Fp8Format f) {
  return f == Fp8Format::E4M3 ? Spec{4, 3, 7, 0x7E} : Spec{5, 2, 15, 0x7B};
}
const char* name_of(Fp8Format f) {
  return f == Fp8Format::E4M3 ? "E4M3" : "E5M2";
}

// The value of a code from the OCP tables: NaN / ±inf / subnormal / normal.
double ocp_value(uint8_t c, Fp8Format f) {
  const Spec s = spec_of(f);
  const int e = (c >> s.mant_bits) & ((1 << s.exp_bits) - 1), m = c & ((1 << s.mant_bits) - 1);
  const double sign = (c & 0x80) ? -1.0 : 1.0;
  const int e_max = (1 << s.exp_bits) - 1;
  if (f == Fp8Format::E4M3 && e == e_max && m == 7) return std::nan("");
  if (f == Fp8Format::E5M2 && e == e_max) return m == 0 ? sign * HUGE_VAL : std::nan("");
  const double frac = double(m) / double(1 << s.mant_bits);
  if (e == 0) return sign * frac * std::pow(2.0, 1 - s.bias);
  return sign * (1.0 + frac) * std::pow(2.0, e - s.bias);
}

bool is_nan_code(uint8_t c, Fp8Format f) {
  return std::isnan(ocp_value(c, f));
}

TEST(Fp8Format, EveryCodeDecodesToItsOcpValue) {
  for (Fp8Format f : kFormats)
    for (int c = 0; c < 256; ++c) {
      const double want = ocp_value(uint8_t(c), f);
      const float got = fp8_decode(uint8_t(c), f);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << name_of(f) << " code " << c;
      } else {
        EXPECT_EQ(double(got), want) << name_of(f) << " code " << c;
        EXPECT_EQ(std::signbit(got), (c & 0x80) != 0) << name_of(f) << " code " << c;
      }
    }
  // Anchors from the OCP FP8 spec.
  EXPECT_EQ(fp8_decode(0x7E, Fp8Format::E4M3), 448.0f);
  EXPECT_EQ(fp8_decode(0x38, Fp8Format::E4M3), 1.0f);
  EXPECT_EQ(fp8_decode(0x01, Fp8Format::E4M3), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_decode(0x08, Fp8Format::E4M3), std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(fp8_decode(0x7F, Fp8Format::E4M3)));
  EXPECT_TRUE(std::isnan(fp8_decode(0xFF, Fp8Format::E4M3)));
  EXPECT_EQ(fp8_decode(0x78, Fp8Format::E4M3), 256.0f);  // S.1111.000 is a number in E4M3
  EXPECT_EQ(fp8_decode(0x7B, Fp8Format::E5M2), 57344.0f);
  EXPECT_EQ(fp8_decode(0x3C, Fp8Format::E5M2), 1.0f);
  EXPECT_EQ(fp8_decode(0x01, Fp8Format::E5M2), std::ldexp(1.0f, -16));
  EXPECT_EQ(fp8_decode(0x7C, Fp8Format::E5M2), kInf);
  EXPECT_EQ(fp8_decode(0xFC, Fp8Format::E5M2), -kInf);
  for (uint8_t c : {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF})
    EXPECT_TRUE(std::isnan(fp8_decode(c, Fp8Format::E5M2))) << int(c);
  int nans_e4m3 = 0, nans_e5m2 = 0;
  for (int c = 0; c < 256; ++c) {
    nans_e4m3 += is_nan_code(uint8_t(c), Fp8Format::E4M3);
    nans_e5m2 += is_nan_code(uint8_t(c), Fp8Format::E5M2);
  }
  EXPECT_EQ(nans_e4m3, 2);
  EXPECT_EQ(nans_e5m2, 6);
}

TEST(Fp8Format, EveryCodeRoundTrips) {
  for (Fp8Format f : kFormats)
    for (int c = 0; c < 256; ++c) {
      const float v = fp8_decode(uint8_t(c), f);
      const uint8_t back = fp8_encode(v, f);
      if (std::isnan(v))
        EXPECT_TRUE(is_nan_code(back, f)) << name_of(f) << " code " << c;
      else if (std::isinf(v))  // satfinite: ±inf saturate to ±max (E5M2 only has infinities)
        EXPECT_EQ(back, (c & 0x80) | spec_of(f).max_code) << name_of(f) << " code " << c;
      else
        EXPECT_EQ(back, c) << name_of(f) << " code " << c;
    }
  EXPECT_EQ(fp8_encode(0.0f, Fp8Format::E4M3), 0x00);
  EXPECT_EQ(fp8_encode(-0.0f, Fp8Format::E4M3), 0x80);
  EXPECT_EQ(fp8_encode(-0.0f, Fp8Format::E5M2), 0x80);
}

// Every pair of adjacent finite codes (c, c+1) of one sign, subnormals and the step into
// the normals included: the exact midpoint goes to the even code, one float ulp either
// side to the nearer one, and both ends to themselves.
TEST(Fp8Encode, RoundsToNearestEvenAtEveryBoundary) {
  for (Fp8Format f : kFormats) {
    const uint8_t top = spec_of(f).max_code;
    for (uint8_t sign : {uint8_t(0x00), uint8_t(0x80)}) {
      for (int c = 0; c < top; ++c) {
        const uint8_t lo_code = uint8_t(sign | c), hi_code = uint8_t(sign | (c + 1));
        const float lo = fp8_decode(lo_code, f), hi = fp8_decode(hi_code, f);
        const float mid = (lo + hi) / 2;  // exact: FP8 values have few significant bits
        ASSERT_EQ(double(mid), (double(lo) + double(hi)) / 2);
        const float toward_lo = std::nextafter(mid, lo), toward_hi = std::nextafter(mid, hi);
        const uint8_t even = (c % 2 == 0) ? lo_code : hi_code;
        EXPECT_EQ(fp8_encode(mid, f), even) << name_of(f) << " mid of " << int(lo_code);
        EXPECT_EQ(fp8_encode(toward_lo, f), lo_code) << name_of(f) << " below " << mid;
        EXPECT_EQ(fp8_encode(toward_hi, f), hi_code) << name_of(f) << " above " << mid;
        EXPECT_EQ(fp8_encode(lo, f), lo_code) << name_of(f);
        EXPECT_EQ(fp8_encode(hi, f), hi_code) << name_of(f);
      }
    }
  }
}

TEST(Fp8Encode, SaturatesPastMaxAndMapsSpecials) {
  for (Fp8Format f : kFormats) {
    const float max = fp8_max_value(f);
    const uint8_t top = spec_of(f).max_code;
    // Past max: just past, the would-be midpoint to the next binade step, far past.
    const float step = fp8_decode(top, f) - fp8_decode(uint8_t(top - 1), f);
    for (float x : {std::nextafter(max, kInf), max + step / 2, max + step, 2 * max, 1e30f,
                    std::numeric_limits<float>::max(), kInf}) {
      EXPECT_EQ(fp8_encode(x, f), top) << name_of(f) << " " << x;
      EXPECT_EQ(fp8_encode(-x, f), 0x80 | top) << name_of(f) << " " << -x;
    }
    EXPECT_TRUE(is_nan_code(fp8_encode(std::numeric_limits<float>::quiet_NaN(), f), f));
    EXPECT_TRUE(is_nan_code(fp8_encode(-std::numeric_limits<float>::quiet_NaN(), f), f));
    // Below half the least subnormal: ±0; float subnormals too.
    const float least = fp8_decode(0x01, f);
    EXPECT_EQ(fp8_encode(least / 2, f), 0x00);  // the tie between 0 and least goes to 0
    EXPECT_EQ(fp8_encode(std::nextafter(least / 2, kInf), f), 0x01);
    EXPECT_EQ(fp8_encode(-least / 4, f), 0x80);
    EXPECT_EQ(fp8_encode(std::numeric_limits<float>::denorm_min(), f), 0x00);
    EXPECT_EQ(fp8_encode(-std::numeric_limits<float>::min(), f), 0x80);
  }
}

// A second, independent encoder: the nearest finite code by search over all codes, ties to
// the even code, beyond max saturated. The real one must agree on values from every binade.
uint8_t brute_force_encode(float x, Fp8Format f) {
  const uint8_t top = spec_of(f).max_code;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(double(x));
  if (a >= fp8_max_value(f)) return sign | top;
  int best = 0;
  for (int c = 1; c <= top; ++c) {
    const double d = std::fabs(ocp_value(uint8_t(c), f) - a);
    const double bd = std::fabs(ocp_value(uint8_t(best), f) - a);
    if (d < bd || (d == bd && c % 2 == 0)) best = c;
  }
  return uint8_t(sign | best);
}

TEST(Fp8Encode, AgreesWithBruteForceNearestOnRandomFloats) {
  const int64_t n = 60000;
  const std::vector<float> u = random_values<float>(n, 3), e = random_values<float>(n, 4);
  for (Fp8Format f : kFormats) {
    const int lo_exp = f == Fp8Format::E4M3 ? -12 : -19, hi_exp = f == Fp8Format::E4M3 ? 10 : 17;
    for (int64_t i = 0; i < n; ++i) {
      const int ex = lo_exp + int(std::floor((e[i] + 1) / 2 * float(hi_exp - lo_exp)));
      const float x = std::ldexp(u[i], ex);
      ASSERT_EQ(fp8_encode(x, f), brute_force_encode(x, f)) << name_of(f) << " x=" << x;
    }
  }
}

// ---- scaled quantisation ----

std::vector<float> spread_values(int64_t n, uint64_t seed) {
  // Uniform values times 2^[-12, 4): many binades per tile, so subnormals occur too.
  std::vector<float> v = random_values<float>(n, seed);
  const std::vector<float> e = random_values<float>(n, seed + 1);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::ldexp(v[i], int(std::floor(8 * e[i])) - 4);
  return v;
}

// The tile (scale index) of element (r, c) under each tiling, as fp8.h documents it.
int64_t tile_of(int64_t r, int64_t c, int64_t rows, int64_t cols, Fp8Tiling t) {
  const int64_t tc = (cols + 127) / 128;
  (void)rows;
  switch (t) {
    case Fp8Tiling::RowTiles:
      return r * tc + c / 128;
    case Fp8Tiling::ColTiles:
      return r / 128 * cols + c;
    case Fp8Tiling::Blocks:
      return r / 128 * tc + c / 128;
  }
  return -1;
}

constexpr Fp8Tiling kTilings[] = {Fp8Tiling::RowTiles, Fp8Tiling::ColTiles, Fp8Tiling::Blocks};

TEST(Fp8Quantize, ScaleIsTileAmaxOver448AndErrorIsBounded) {
  const int64_t rows = 200, cols = 300;  // ragged last tiles in both directions
  const std::vector<float> x = spread_values(rows * cols, 7);
  for (Fp8Tiling t : kTilings) {
    const int64_t ns = fp8_scale_count(rows, cols, t);
    std::vector<uint8_t> q(x.size());
    std::vector<float> scale(size_t(ns), -1.0f), back(x.size()), fused(x.size());
    fp8_quantize(x.data(), rows, cols, t, Fp8Format::E4M3, q.data(), scale.data());
    fp8_dequantize(q.data(), scale.data(), rows, cols, t, Fp8Format::E4M3, back.data());
    fp8_quantize_dequantize(x.data(), rows, cols, t, Fp8Format::E4M3, fused.data());
    EXPECT_EQ(back, fused) << "fused path differs";
    std::vector<float> amax(size_t(ns), 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        float& a = amax[size_t(tile_of(r, c, rows, cols, t))];
        a = std::max(a, std::fabs(x[r * cols + c]));
      }
    for (int64_t i = 0; i < ns; ++i) ASSERT_EQ(scale[i], amax[i] / 448.0f) << "tile " << i;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double s = scale[size_t(tile_of(r, c, rows, cols, t))];
        const double v = x[r * cols + c], err = std::fabs(double(back[r * cols + c]) - v);
        // Half an E4M3 ulp: 2^-4 relative in the normals, 2^-10 · s among the subnormals;
        // plus the two float roundings of v/s and q·s.
        const double bound = (std::ldexp(1.0, -4) * std::fabs(v) + std::ldexp(1.0, -10) * s) *
                             (1 + std::ldexp(1.0, -20));
        ASSERT_LE(err, bound) << "(" << r << "," << c << ") x=" << v << " s=" << s;
      }
  }
}

// The fused path rounds without codes (a branch-free E4M3 rounding): it must give the
// codes' bits on every rounding boundary of E4M3, both signs, and on the specials. Each row
// is one 1×128 tile whose amax is 448, so the scale is 1 and x/s is x exactly.
TEST(Fp8Quantize, FusedE4M3MatchesTheCodesAtEveryBoundary) {
  std::vector<float> values;
  for (float sign : {1.0f, -1.0f})
    for (int c = 0; c < 0x7E; ++c) {
      const float lo = fp8_decode(uint8_t(c), Fp8Format::E4M3);
      const float hi = fp8_decode(uint8_t(c + 1), Fp8Format::E4M3);
      const float mid = (lo + hi) / 2;
      for (float v : {lo, mid, std::nextafter(mid, lo), std::nextafter(mid, hi)})
        values.push_back(sign * v);
    }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float v : {0.0f, -0.0f, 448.0f, -448.0f, std::nextafter(448.0f, 0.0f), 1e-30f, -1e-30f,
                  std::numeric_limits<float>::denorm_min(), std::ldexp(1.0f, -10),
                  std::nextafter(std::ldexp(1.0f, -10), 1.0f), nan, -nan})
    values.push_back(v);
  const int64_t cols = 128, per_row = cols - 1;
  const int64_t rows = (int64_t(values.size()) + per_row - 1) / per_row + 1;
  std::vector<float> x(size_t(rows * cols), 0.0f);
  for (int64_t r = 0; r + 1 < rows; ++r) x[size_t(r * cols)] = (r % 2 ? -448.0f : 448.0f);
  for (size_t i = 0; i < values.size(); ++i)
    x[size_t(int64_t(i) / per_row * cols + 1 + int64_t(i) % per_row)] = values[i];
  // The last row: an infinite amax (scale ∞: finite values go to ±0, ∞/∞ to NaN).
  x[size_t((rows - 1) * cols)] = std::numeric_limits<float>::infinity();
  x[size_t((rows - 1) * cols + 1)] = -std::numeric_limits<float>::infinity();
  x[size_t((rows - 1) * cols + 2)] = -3.0f;
  for (Fp8Tiling t : kTilings) {
    std::vector<uint8_t> q(x.size());
    std::vector<float> scale(size_t(fp8_scale_count(rows, cols, t))), back(x.size()),
        fused(x.size());
    fp8_quantize(x.data(), rows, cols, t, Fp8Format::E4M3, q.data(), scale.data());
    fp8_dequantize(q.data(), scale.data(), rows, cols, t, Fp8Format::E4M3, back.data());
    fp8_quantize_dequantize(x.data(), rows, cols, t, Fp8Format::E4M3, fused.data());
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(fused[i]), std::bit_cast<uint32_t>(back[i]))
          << "tiling " << int(t) << " x=" << x[i] << ": " << fused[i] << " vs " << back[i];
    std::vector<float> in_place = x;  // out may equal x
    fp8_quantize_dequantize(in_place.data(), rows, cols, t, Fp8Format::E4M3, in_place.data());
    ASSERT_EQ(0, std::memcmp(in_place.data(), fused.data(), x.size() * sizeof(float)));
  }
}

TEST(Fp8Quantize, TilesAreIndependentAndZeroTileHasScaleOne) {
  const int64_t rows = 256, cols = 256;
  std::vector<float> x = spread_values(rows * cols, 11);
  for (Fp8Tiling t : kTilings) {
    std::vector<uint8_t> q0(x.size()), q1(x.size());
    const int64_t ns = fp8_scale_count(rows, cols, t);
    std::vector<float> s0(static_cast<size_t>(ns)), s1(static_cast<size_t>(ns));
    fp8_quantize(x.data(), rows, cols, t, Fp8Format::E4M3, q0.data(), s0.data());
    // Scale up one element (its tile's amax changes) and zero tile 0: every other tile
    // keeps its codes and scale bit for bit.
    std::vector<float> y = x;
    y[130 * cols + 131] = 1000.0f;
    const int64_t bumped = tile_of(130, 131, rows, cols, t);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        if (tile_of(r, c, rows, cols, t) == 0) y[r * cols + c] = (r + c) % 2 ? 0.0f : -0.0f;
    fp8_quantize(y.data(), rows, cols, t, Fp8Format::E4M3, q1.data(), s1.data());
    EXPECT_EQ(s1[0], 1.0f);
    EXPECT_EQ(s1[size_t(bumped)], 1000.0f / 448.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = tile_of(r, c, rows, cols, t), k = r * cols + c;
        if (i == 0) {
          ASSERT_EQ(q1[k], (r + c) % 2 ? 0x00 : 0x80);
        } else if (i != bumped) {
          ASSERT_EQ(q1[k], q0[k]) << "(" << r << "," << c << ")";
        }
      }
    for (int64_t i = 1; i < ns; ++i) {
      if (i == bumped) continue;
      ASSERT_EQ(s1[i], s0[i]) << "tile " << i;
    }
    EXPECT_EQ(q1[130 * cols + 131], 0x7E);  // the tile's amax quantises to 448
  }
}

TEST(Fp8Quantize, TileScaleBelowFloatRangeFallsBackToOne) {
  // amax/448 underflows to 0 for amax under about 448·2^-150: the tile gets scale 1, no NaN.
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> x = {tiny, -tiny, 0.0f};
  std::vector<uint8_t> q(3);
  float s = 0;
  fp8_quantize(x.data(), 1, 3, Fp8Tiling::RowTiles, Fp8Format::E4M3, q.data(), &s);
  EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(q, (std::vector<uint8_t>{0x00, 0x80, 0x00}));
}

// ---- the emulated Linear ----

struct LinearData {
  int64_t R, I, O;
  std::vector<float> x, W, dy;
};
LinearData linear_data(int64_t R, int64_t I, int64_t O) {
  return {R,
          I,
          O,
          random_values<float>(R * I, 21),
          random_values<float>(O * I, 22),
          random_values<float>(R * O, 23)};
}

// ‖a − b‖ / ‖b‖
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

TEST(Fp8Linear, CloseToFp32AtE4M3Precision) {
  const LinearData d = linear_data(37, 300, 150);  // ragged tiles on every side
  const int64_t R = d.R, I = d.I, O = d.O;
  std::vector<float> y8(R * O), y32(R * O), dx8(R * I, 0.0f), dx32(R * I, 0.0f);
  std::vector<float> dW8(O * I, 0.0f), dW32(O * I, 0.0f);
  fp8_linear_forward(d.x.data(), d.W.data(), y8.data(), R, I, O);
  linear_forward<float>(d.x.data(), d.W.data(), y32.data(), R, I, O);
  fp8_linear_backward(d.dy.data(), d.x.data(), d.W.data(), dx8.data(), dW8.data(), R, I, O);
  linear_backward<float>(d.dy.data(), d.x.data(), d.W.data(), dx32.data(), dW32.data(), R, I, O);
  // Each operand carries a relative rounding error of at most 2^-4 (about 2^-5.6 r.m.s.
  // for values spread over a binade); the products' errors are independent, so the norm-wise
  // error of a GEMM sits near √2 · that: a few percent, never below ~1 %.
  for (const auto& [got, want, what] :
       {std::tuple{&y8, &y32, "Fprop"}, std::tuple{&dx8, &dx32, "Dgrad"},
        std::tuple{&dW8, &dW32, "Wgrad"}}) {
    const double e = rel_error(*got, *want);
    EXPECT_GT(e, 0.005) << what << ": not quantised?";
    EXPECT_LT(e, 0.06) << what;
  }
}

TEST(Fp8Linear, IsQuantiseDequantiseThenGemmWithTheV3Tilings) {
  const LinearData d = linear_data(150, 200, 130);
  const int64_t R = d.R, I = d.I, O = d.O;
  auto qd = [](const std::vector<float>& v, int64_t rows, int64_t cols, Fp8Tiling t) {
    std::vector<uint8_t> q(v.size());
    std::vector<float> s(size_t(fp8_scale_count(rows, cols, t))), out(v.size());
    fp8_quantize(v.data(), rows, cols, t, Fp8Format::E4M3, q.data(), s.data());
    fp8_dequantize(q.data(), s.data(), rows, cols, t, Fp8Format::E4M3, out.data());
    return out;
  };
  const std::vector<float> W = qd(d.W, O, I, Fp8Tiling::Blocks);
  std::vector<float> y(R * O, 0.5f), want_y(R * O, 0.5f);
  fp8_linear_forward(d.x.data(), d.W.data(), y.data(), R, I, O, 1.0f);
  gemm<float>(Trans::N, Trans::T, R, O, I, qd(d.x, R, I, Fp8Tiling::RowTiles).data(), I, W.data(),
              I, 1.0f, want_y.data(), O);
  EXPECT_EQ(y, want_y);

  std::vector<float> dx(R * I, 0.25f), dW(O * I, 0.25f), want_dx = dx, want_dW = dW;
  fp8_linear_backward(d.dy.data(), d.x.data(), d.W.data(), dx.data(), dW.data(), R, I, O);
  gemm<float>(Trans::N, Trans::N, R, I, O, qd(d.dy, R, O, Fp8Tiling::RowTiles).data(), O, W.data(),
              I, 1.0f, want_dx.data(), I);
  gemm<float>(Trans::T, Trans::N, O, I, R, qd(d.dy, R, O, Fp8Tiling::ColTiles).data(), O,
              qd(d.x, R, I, Fp8Tiling::ColTiles).data(), I, 1.0f, want_dW.data(), I);
  EXPECT_EQ(dx, want_dx);
  EXPECT_EQ(dW, want_dW);
}

// A weight's quantisation is kept per thread by address (once per step, not per call): a
// weight changed in place, or another shape at the same address, is quantised again, and a
// kept one gives the bits of a fresh one.
TEST(Fp8Linear, AKeptWeightQuantisationIsNeverStale) {
  LinearData d = linear_data(20, 256, 128);
  const int64_t R = d.R, I = d.I, O = d.O;
  auto fresh_y = [&](const std::vector<float>& W, int64_t o, int64_t i) {
    std::vector<float> wq(size_t(o * i)), xq(size_t(R * i)), y(size_t(R * o));
    fp8_quantize_dequantize(W.data(), o, i, Fp8Tiling::Blocks, Fp8Format::E4M3, wq.data());
    fp8_quantize_dequantize(d.x.data(), R, i, Fp8Tiling::RowTiles, Fp8Format::E4M3, xq.data());
    linear_forward<float>(xq.data(), wq.data(), y.data(), R, i, o);
    return y;
  };
  std::vector<float> y(size_t(R * O));
  for (int call = 0; call < 2; ++call) {  // the second call is served from the kept entry
    fp8_linear_forward(d.x.data(), d.W.data(), y.data(), R, I, O);
    EXPECT_EQ(y, fresh_y(d.W, O, I)) << "call " << call;
  }
  d.W[5] *= 3.0f;  // an update in place: the kept entry must not be served
  fp8_linear_forward(d.x.data(), d.W.data(), y.data(), R, I, O);
  EXPECT_EQ(y, fresh_y(d.W, O, I));
  // The same address read as (O/2, 2I): another shape, quantised afresh.
  std::vector<float> y2(size_t(R * O / 2));
  std::vector<float> x2(size_t(R * 2 * I), 0.5f);
  std::swap(d.x, x2);
  fp8_linear_forward(d.x.data(), d.W.data(), y2.data(), R, 2 * I, O / 2);
  EXPECT_EQ(y2, fresh_y(d.W, O / 2, 2 * I));
}

TEST(Fp8Linear, FpropAndDgradRowsAreBitwiseIndependentOfTheOtherRows) {
  const LinearData d = linear_data(9, 260, 140);
  const int64_t R = d.R, I = d.I, O = d.O;
  std::vector<float> y(R * O), dx(R * I, 0.0f);
  fp8_linear_forward(d.x.data(), d.W.data(), y.data(), R, I, O);
  fp8_linear_backward(d.dy.data(), d.x.data(), d.W.data(), dx.data(), nullptr, R, I, O);
  for (int64_t r = 0; r < R; ++r) {
    std::vector<float> y1(O), dx1(I, 0.0f);
    fp8_linear_forward(d.x.data() + r * I, d.W.data(), y1.data(), 1, I, O);
    fp8_linear_backward(d.dy.data() + r * O, d.x.data() + r * I, d.W.data(), dx1.data(), nullptr, 1,
                        I, O);
    EXPECT_EQ(0, std::memcmp(y1.data(), y.data() + r * O, sizeof(float) * O)) << "row " << r;
    EXPECT_EQ(0, std::memcmp(dx1.data(), dx.data() + r * I, sizeof(float) * I)) << "row " << r;
  }
}

}  // namespace
}  // namespace troupe::kernels
