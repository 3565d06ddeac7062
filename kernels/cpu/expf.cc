#include "kernels/cpu/expf.h"

#include <cmath>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace troupe::kernels {

namespace {

#if defined(__AVX2__) && defined(__FMA__)
// glibc's __exp2f_data (sysdeps/ieee754/flt-32/e_exp2f_data.c): tab[i] = bits(2^(i/32)) −
// (i << 47), and the scaled constants of expf (e_expf.c, N = 32).
alignas(64) constexpr uint64_t kTab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540};
constexpr double kInvLn2N = 0x1.71547652b82fep+5;
constexpr double kShift = 0x1.8p+52;
constexpr double kC0 = 0x1.c6af84b912394p-20, kC1 = 0x1.ebfce50fac4f3p-13;
constexpr double kC2 = 0x1.62e42ff0c52d6p-6;
// glibc's fast range: the top 12 bits of |x| at most this (|x| < 88).
constexpr int kTopMax = 0x42a;

// Four floats, all in the fast range: glibc's operations, in its order, with its fusions
// (z·InvLn2N + shift and z·InvLn2N − kd are FMAs in __expf_fma, as are the polynomial's).
inline __m128 exp4(__m128 xf) {
  const __m256d xd = _mm256_cvtps_pd(xf);
  const __m256d inv = _mm256_set1_pd(kInvLn2N), shift = _mm256_set1_pd(kShift);
  __m256d kd = _mm256_fmadd_pd(inv, xd, shift);
  const __m256i ki = _mm256_castpd_si256(kd);
  kd = _mm256_sub_pd(kd, shift);
  const __m256d r = _mm256_fmsub_pd(inv, xd, kd);
  const __m256i idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
  __m256i t = _mm256_i64gather_epi64(reinterpret_cast<const long long*>(kTab), idx, 8);
  t = _mm256_add_epi64(t, _mm256_slli_epi64(ki, 47));
  const __m256d z = _mm256_fmadd_pd(r, _mm256_set1_pd(kC0), _mm256_set1_pd(kC1));
  const __m256d r2 = _mm256_mul_pd(r, r);
  __m256d y = _mm256_fmadd_pd(r, _mm256_set1_pd(kC2), _mm256_set1_pd(1.0));
  y = _mm256_fmadd_pd(z, r2, y);
  y = _mm256_mul_pd(y, _mm256_castsi256_pd(t));
  return _mm256_cvtpd_ps(y);
}

// Whether all four lanes are in the fast range.
inline bool fast4(__m128 xf) {
  const __m128i top =
      _mm_and_si128(_mm_srli_epi32(_mm_castps_si128(xf), 20), _mm_set1_epi32(0x7ff));
  return _mm_movemask_epi8(_mm_cmpgt_epi32(top, _mm_set1_epi32(kTopMax))) == 0;
}

void expf_vector(const float* x, float* y, int64_t n) {
  const int64_t whole = n - n % 4;
  for (int64_t i = 0; i < whole; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    if (fast4(v)) {
      _mm_storeu_ps(y + i, exp4(v));
    } else {
      for (int j = 0; j < 4; ++j) y[i + j] = std::exp(x[i + j]);
    }
  }
  for (int64_t i = whole; i < n; ++i) y[i] = std::exp(x[i]);
}

// The start-up check: values across glibc's range, its edges and both of its paths.
bool vector_matches_libm() {
  constexpr int kProbes = 4096;
  float x[kProbes], mine[kProbes];
  uint32_t state = 0x9e3779b9u;
  for (int i = 0; i < kProbes; ++i) {
    state = state * 1664525u + 1013904223u;
    const float u = float(state >> 8) * 0x1p-24f;  // [0, 1)
    x[i] = i % 4 == 0 ? -104.0f + 193.0f * u : (i % 4 == 1 ? -1.0f + 2.0f * u : -20.0f * u);
  }
  const float edges[] = {0.0f, -0.0f, 88.0f, -88.0f, 87.99999f, -87.99999f, 1e-30f, -1e-30f};
  std::memcpy(x, edges, sizeof edges);
  expf_vector(x, mine, kProbes);
  for (int i = 0; i < kProbes; ++i) {
    const float want = std::exp(x[i]);
    if (std::memcmp(&want, &mine[i], sizeof want) != 0) return false;
  }
  return true;
}
#endif

}  // namespace

bool expf_exact_vectorised() {
#if defined(__AVX2__) && defined(__FMA__)
  static const bool ok = vector_matches_libm();
  return ok;
#else
  return false;
#endif
}

void expf_exact(const float* x, float* y, int64_t n) {
#if defined(__AVX2__) && defined(__FMA__)
  if (expf_exact_vectorised()) return expf_vector(x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

}  // namespace troupe::kernels
