#include "kernels/cpu/fp8.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace troupe::kernels {

namespace {

// The two formats as bit-field widths: S.E…E.M…M with exponent bias `bias`.
struct Layout {
  int mant_bits;
  int bias;
  uint32_t max_code;  // the largest finite magnitude's code (sign bit clear)
};

constexpr Layout layout_of(Fp8Format f) {
  return f == Fp8Format::E4M3 ? Layout{3, 7, 0x7E} : Layout{2, 15, 0x7B};
}

constexpr uint8_t nan_code = 0x7F;  // a NaN in both formats

// |x| as a magnitude code (no sign): RNE on the exact value, saturating. x finite, >= 0,
// below the format's max.
uint32_t encode_magnitude(uint32_t bits, const Layout& L) {
  const int32_t exp_field = static_cast<int32_t>(bits >> 23);
  if (exp_field == 0) return 0;  // float subnormals are far below half of FP8's least quantum
  // x = sig · 2^sig_exp exactly, sig < 2^24.
  const uint32_t sig = (bits & 0x7FFFFFu) | 0x800000u;
  const int32_t sig_exp = exp_field - 150;
  const int32_t e = exp_field - 127;  // x in [2^e, 2^(e+1))
  // The FP8 quantum in x's binade: 2^(e - M) for normals, 2^(1 - bias - M) below them.
  const int32_t min_normal_exp = 1 - L.bias;
  const int32_t quantum_exp = std::max(e, min_normal_exp) - L.mant_bits;
  const int32_t shift = quantum_exp - sig_exp;  // > 0: FP8 has fewer mantissa bits
  if (shift >= 25) return 0;                    // x < 2^24 · 2^sig_exp <= half a quantum
  uint32_t n = sig >> shift;                    // whole quanta
  const uint32_t rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (n & 1u))) ++n;  // ties to even
  // Below the normals the code is n itself; in binade e it is ((e + bias - 1) << M) + n
  // (n counts the implicit leading one). A carry out of the mantissa lands in the exponent.
  const uint32_t binade = static_cast<uint32_t>(std::max(e + L.bias, 1) - 1);
  return std::min((binade << L.mant_bits) + n, L.max_code);
}

// fp8_decode as a table per format: the emulated GEMM decodes every operand element.
struct DecodeTables {
  std::array<float, 256> e4m3{}, e5m2{};
  DecodeTables() {
    for (int c = 0; c < 256; ++c) {
      e4m3[c] = fp8_decode(static_cast<uint8_t>(c), Fp8Format::E4M3);
      e5m2[c] = fp8_decode(static_cast<uint8_t>(c), Fp8Format::E5M2);
    }
  }
  const float* of(Fp8Format f) const { return f == Fp8Format::E4M3 ? e4m3.data() : e5m2.data(); }
};

const float* decode_table(Fp8Format f) {
  static const DecodeTables tables;
  return tables.of(f);
}

int64_t tiles_of(int64_t n) {
  return (n + fp8_tile_len - 1) / fp8_tile_len;
}

// One tile: rows [r0,r1) × cols [c0,c1) of a row-major matrix with `cols` columns.
struct Tile {
  int64_t r0, r1, c0, c1;
};

// A tile's scale from its amax: amax / the format's largest value, or 1 where that is 0.
float scale_of_amax(float amax, Fp8Format f) {
  const float s = amax / fp8_max_value(f);
  return s == 0.0f ? 1.0f : s;
}

float tile_scale(const float* x, int64_t cols, const Tile& t, Fp8Format f) {
  float amax = 0.0f;
  for (int64_t r = t.r0; r < t.r1; ++r)
    for (int64_t c = t.c0; c < t.c1; ++c) {
      const float a = std::fabs(x[r * cols + c]);
      if (a > amax) amax = a;  // NaN never compares greater: it does not poison the tile
    }
  return scale_of_amax(amax, f);
}

// Visits every tile of the tiling with its index in the scale layout of fp8.h.
template <typename Fn>
void for_each_tile(int64_t rows, int64_t cols, Fp8Tiling tiling, Fn&& fn) {
  const int64_t L = fp8_tile_len;
  switch (tiling) {
    case Fp8Tiling::RowTiles:
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t cb = 0; cb < tiles_of(cols); ++cb)
          fn(Tile{r, r + 1, cb * L, std::min(cols, (cb + 1) * L)}, r * tiles_of(cols) + cb);
      return;
    case Fp8Tiling::ColTiles:
      for (int64_t rb = 0; rb < tiles_of(rows); ++rb)
        for (int64_t c = 0; c < cols; ++c)
          fn(Tile{rb * L, std::min(rows, (rb + 1) * L), c, c + 1}, rb * cols + c);
      return;
    case Fp8Tiling::Blocks:
      for (int64_t rb = 0; rb < tiles_of(rows); ++rb)
        for (int64_t cb = 0; cb < tiles_of(cols); ++cb)
          fn(Tile{rb * L, std::min(rows, (rb + 1) * L), cb * L, std::min(cols, (cb + 1) * L)},
             rb * tiles_of(cols) + cb);
      return;
  }
  throw std::invalid_argument("fp8: unknown tiling");
}

}  // namespace

uint8_t fp8_encode(float x, Fp8Format f) {
  const Layout L = layout_of(f);
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  if (std::isnan(x)) return nan_code;
  // Satfinite: beyond the max (including ±inf) is ±max; RNE would give max there anyway
  // up to max + half a quantum, and a code past max does not exist as a finite value.
  if (std::fabs(x) >= fp8_max_value(f)) return static_cast<uint8_t>(sign | L.max_code);
  return static_cast<uint8_t>(sign | encode_magnitude(bits & 0x7FFFFFFFu, L));
}

float fp8_decode(uint8_t code, Fp8Format f) {
  const Layout L = layout_of(f);
  const int exp_bits = 7 - L.mant_bits;
  const uint32_t mant_mask = (1u << L.mant_bits) - 1u, exp_all_ones = (1u << exp_bits) - 1u;
  const uint32_t e = (code >> L.mant_bits) & exp_all_ones, m = code & mant_mask;
  const float sign = (code & 0x80u) ? -1.0f : 1.0f;
  if (f == Fp8Format::E4M3 && e == exp_all_ones && m == mant_mask)
    return std::numeric_limits<float>::quiet_NaN();
  if (f == Fp8Format::E5M2 && e == exp_all_ones)
    return m == 0 ? sign * std::numeric_limits<float>::infinity()
                  : std::numeric_limits<float>::quiet_NaN();
  // Subnormal: m · 2^(1 - bias - M); normal: (2^M + m) · 2^(e - bias - M). Exact in float.
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), 1 - L.bias - L.mant_bits);
  return sign * std::ldexp(static_cast<float>((1u << L.mant_bits) + m),
                           static_cast<int>(e) - L.bias - L.mant_bits);
}

int64_t fp8_scale_count(int64_t rows, int64_t cols, Fp8Tiling tiling) {
  switch (tiling) {
    case Fp8Tiling::RowTiles:
      return rows * tiles_of(cols);
    case Fp8Tiling::ColTiles:
      return tiles_of(rows) * cols;
    case Fp8Tiling::Blocks:
      return tiles_of(rows) * tiles_of(cols);
  }
  throw std::invalid_argument("fp8: unknown tiling");
}

void fp8_quantize(const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling, Fp8Format f,
                  uint8_t* q, float* scale) {
  for_each_tile(rows, cols, tiling, [&](const Tile& t, int64_t idx) {
    const float s = tile_scale(x, cols, t, f);
    scale[idx] = s;
    for (int64_t r = t.r0; r < t.r1; ++r)
      for (int64_t c = t.c0; c < t.c1; ++c) q[r * cols + c] = fp8_encode(x[r * cols + c] / s, f);
  });
}

void fp8_dequantize(const uint8_t* q, const float* scale, int64_t rows, int64_t cols,
                    Fp8Tiling tiling, Fp8Format f, float* x) {
  const float* dec = decode_table(f);
  for_each_tile(rows, cols, tiling, [&](const Tile& t, int64_t idx) {
    const float s = scale[idx];
    for (int64_t r = t.r0; r < t.r1; ++r)
      for (int64_t c = t.c0; c < t.c1; ++c) x[r * cols + c] = dec[q[r * cols + c]] * s;
  });
}

namespace {

// decode(encode(v, E4M3)) without the code, branch-free so that a row vectorises: the same
// value by construction (RNE to 3 mantissa bits on the exact value; below the normals
// (2^-6) multiples of 2^-9, by an addition whose own rounding is exactly that RNE; ±448
// beyond; NaN the decoder's NaN). fp8_test checks it against the codes at every boundary.
inline float e4m3_round(float v) {
  const float a = std::fabs(v);
  const uint32_t b = std::bit_cast<uint32_t>(a);
  const float normal = std::bit_cast<float>((b + 0x7FFFFu + ((b >> 20) & 1u)) & 0xFFF00000u);
  const float subnormal = (a + 16384.0f) - 16384.0f;  // ulp(2^14) = 2^-9
  float r = a < 0x1p-6f ? subnormal : normal;
  r = a >= fp8_e4m3_max_value ? fp8_e4m3_max_value : r;
  r = std::copysign(r, v);
  return a != a ? std::numeric_limits<float>::quiet_NaN() : r;
}

// fp8_quantize_dequantize for E4M3, a block of up to 128 rows at a time: the tiles' scales
// first (max is order-free, so the bits are those of tile_scale), then row by row.
void e4m3_quantize_dequantize(const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                              float* out) {
  const int64_t L = fp8_tile_len;
  std::vector<float> col_scale(static_cast<size_t>(cols)), amax(static_cast<size_t>(cols));
  const auto finish = [](float m) { return scale_of_amax(m, Fp8Format::E4M3); };
  for (int64_t r0 = 0; r0 < rows; r0 += L) {
    const int64_t r1 = std::min(rows, r0 + L);
    if (tiling != Fp8Tiling::RowTiles) {  // one scale per column (ColTiles) or per block
      std::fill(amax.begin(), amax.end(), 0.0f);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const float a = std::fabs(x[r * cols + c]);
          amax[size_t(c)] = a > amax[size_t(c)] ? a : amax[size_t(c)];
        }
      for (int64_t cb = 0; cb < cols; cb += L) {
        const int64_t c1 = std::min(cols, cb + L);
        float block = 0.0f;
        if (tiling == Fp8Tiling::Blocks)
          for (int64_t c = cb; c < c1; ++c)
            block = amax[size_t(c)] > block ? amax[size_t(c)] : block;
        for (int64_t c = cb; c < c1; ++c)
          col_scale[size_t(c)] = finish(tiling == Fp8Tiling::Blocks ? block : amax[size_t(c)]);
      }
    }
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* yr = out + r * cols;
      if (tiling == Fp8Tiling::RowTiles)
        for (int64_t cb = 0; cb < cols; cb += L) {
          const int64_t c1 = std::min(cols, cb + L);
          float m = 0.0f;
          for (int64_t c = cb; c < c1; ++c) {
            const float a = std::fabs(xr[c]);
            m = a > m ? a : m;
          }
          std::fill(col_scale.begin() + cb, col_scale.begin() + c1, finish(m));
        }
      for (int64_t c = 0; c < cols; ++c) {
        const float s = col_scale[size_t(c)];
        yr[c] = e4m3_round(xr[c] / s) * s;
      }
    }
  }
}

}  // namespace

void fp8_quantize_dequantize(const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling,
                             Fp8Format f, float* out) {
  if (f == Fp8Format::E4M3) return e4m3_quantize_dequantize(x, rows, cols, tiling, out);
  const float* dec = decode_table(f);
  for_each_tile(rows, cols, tiling, [&](const Tile& t, int64_t) {
    const float s = tile_scale(x, cols, t, f);  // read before out (maybe x) is written
    for (int64_t r = t.r0; r < t.r1; ++r)
      for (int64_t c = t.c0; c < t.c1; ++c)
        out[r * cols + c] = dec[fp8_encode(x[r * cols + c] / s, f)] * s;
  });
}

namespace {

// The operands of one emulated GEMM, quantised and back (scratch per call: the layers
// call this from several threads at once, one micro-batch each).
std::vector<float> fake_quantized(const float* x, int64_t rows, int64_t cols, Fp8Tiling tiling) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  fp8_quantize_dequantize(x, rows, cols, tiling, Fp8Format::E4M3, out.data());
  return out;
}

// W (O,I) fake-quantised in 128×128 blocks, kept per thread by address: each compute
// thread quantises a weight once per step, not at every call (forward, Dgrad, every
// micro-batch, a recomputed forward). An entry is served only while the weight's bytes hash
// (XXH3, 64 bits) to what they did when it was made: a changed weight is quantised again.
// The entry is exactly what fake_quantized would return: the same bits.
const std::vector<float>& quantized_weight(const float* W, int64_t O, int64_t I) {
  struct Entry {
    int64_t O = 0, I = 0;
    uint64_t hash = 0;
    std::vector<float> q;
  };
  thread_local std::unordered_map<const float*, Entry> cache;
  if (cache.size() > 4096) cache.clear();  // weights of many models: start again
  const uint64_t hash = XXH3_64bits(W, size_t(O * I) * sizeof(float));
  Entry& e = cache[W];
  if (e.q.empty() || e.O != O || e.I != I || e.hash != hash) {
    e.O = O, e.I = I, e.hash = hash;
    e.q.resize(size_t(O * I));
    fp8_quantize_dequantize(W, O, I, Fp8Tiling::Blocks, Fp8Format::E4M3, e.q.data());
  }
  return e.q;
}

}  // namespace

void fp8_linear_forward(const float* x, const float* W, float* y, int64_t R, int64_t I, int64_t O,
                        float beta) {
  const std::vector<float> xq = fake_quantized(x, R, I, Fp8Tiling::RowTiles);
  const std::vector<float>& wq = quantized_weight(W, O, I);
  linear_forward<float>(xq.data(), wq.data(), y, R, I, O, beta);
}

void fp8_linear_backward(const float* dy, const float* x, const float* W, float* dx, float* dW,
                         int64_t R, int64_t I, int64_t O) {
  if (dx) {  // dx (R,I) += dy (R,O) · W (O,I), reduced over O
    const std::vector<float> dyq = fake_quantized(dy, R, O, Fp8Tiling::RowTiles);
    const std::vector<float>& wq = quantized_weight(W, O, I);
    gemm<float>(Trans::N, Trans::N, R, I, O, dyq.data(), O, wq.data(), I, 1.0f, dx, I);
  }
  if (dW) {  // dW (O,I) += dyᵀ (O,R) · x (R,I), reduced over R (tokens)
    const std::vector<float> dyq = fake_quantized(dy, R, O, Fp8Tiling::ColTiles);
    const std::vector<float> xq = fake_quantized(x, R, I, Fp8Tiling::ColTiles);
    gemm<float>(Trans::T, Trans::N, O, I, R, dyq.data(), O, xq.data(), I, 1.0f, dW, I);
  }
}

}  // namespace troupe::kernels
