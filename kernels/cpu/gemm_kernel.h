#pragma once
// Internal to gemm.cc: the AVX2/FMA register-tile microkernel and its SIMD traits.
//
// A tile is kMr rows × kNr columns of C held in 2·kMr vector registers; each SIMD lane
// owns one output element and accumulates s = fma(a[k], b[k], s) for k ascending. The
// order of that chain depends on K alone, so an element gets the same bits whatever tile,
// block or edge it falls in (the determinism contract of gemm.h).
#include <immintrin.h>

#include <cstdint>

namespace troupe::kernels::detail {

template <typename T>
struct Simd;

template <>
struct Simd<float> {
  using Vec = __m256;
  static constexpr int lanes = 8;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec set1(float x) { return _mm256_set1_ps(x); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
};

template <>
struct Simd<double> {
  using Vec = __m256d;
  static constexpr int lanes = 4;
  static Vec zero() { return _mm256_setzero_pd(); }
  static Vec set1(double x) { return _mm256_set1_pd(x); }
  static Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, Vec v) { _mm256_storeu_pd(p, v); }
  static Vec broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_pd(a, b); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_pd(a, b); }
};

// Register tile: 6 rows × 2 vectors = 12 accumulators + 2 B vectors + 1 broadcast = 15 of
// the 16 ymm registers. 12 independent FMA chains cover Zen 3's 2 FMA pipes × 4 cycles.
inline constexpr int kMr = 6;
template <typename T>
inline constexpr int kNr = 2 * Simd<T>::lanes;

// Where a finished tile goes: rows × cols of C (rows ≤ kMr, cols ≤ kNr) at c with row
// stride ldc, as C = beta*C + s. For beta == 0, C is not read (it may hold NaN).
template <typename T>
struct TileOut {
  T* c;
  int64_t ldc;
  T beta;
  int rows;
  int cols;
};

template <typename T>
inline void write_full_tile(const typename Simd<T>::Vec (&acc)[kMr][2], const TileOut<T>& out) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  const bool keep = out.beta != T(0);
  const typename S::Vec beta = S::set1(out.beta);
#pragma GCC unroll 6
  for (int r = 0; r < kMr; ++r) {
    T* c = out.c + r * out.ldc;
    if (keep) {
      S::store(c, S::add(S::mul(beta, S::load(c)), acc[r][0]));
      S::store(c + L, S::add(S::mul(beta, S::load(c + L)), acc[r][1]));
    } else {
      S::store(c, acc[r][0]);
      S::store(c + L, acc[r][1]);
    }
  }
}

// Edge tile: spill to a local tile, then write the valid part with the same formula.
template <typename T>
inline void write_edge_tile(const typename Simd<T>::Vec (&acc)[kMr][2], const TileOut<T>& out) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  alignas(32) T tile[kMr * kNr<T>];
  for (int r = 0; r < kMr; ++r) {
    S::store(tile + r * kNr<T>, acc[r][0]);
    S::store(tile + r * kNr<T> + L, acc[r][1]);
  }
  for (int r = 0; r < out.rows; ++r) {
    T* c = out.c + r * out.ldc;
    const T* s = tile + r * kNr<T>;
    if (out.beta == T(0)) {
      for (int j = 0; j < out.cols; ++j) c[j] = s[j];
    } else {
      for (int j = 0; j < out.cols; ++j) c[j] = out.beta * c[j] + s[j];
    }
  }
}

// One tile over kc steps of k. a: packed A micro-panel (kc × kMr, k-major), b: packed B
// micro-panel (kc × kNr, k-major). carry_in (nullable): partial sums of the earlier K
// blocks (kMr × kNr, row-major) to continue from; carry_out (nullable): where to leave the
// partial sums when more K blocks follow; otherwise the tile is written to out.
template <typename T>
inline void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b,
                         const T* carry_in, T* carry_out, const TileOut<T>& out) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  constexpr int nr = kNr<T>;
  typename S::Vec acc[kMr][2];
#pragma GCC unroll 6
  for (int r = 0; r < kMr; ++r) {
    acc[r][0] = carry_in ? S::load(carry_in + r * nr) : S::zero();
    acc[r][1] = carry_in ? S::load(carry_in + r * nr + L) : S::zero();
  }
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const typename S::Vec b0 = S::load(b);
    const typename S::Vec b1 = S::load(b + L);
#pragma GCC unroll 6
    for (int r = 0; r < kMr; ++r) {
      const typename S::Vec ar = S::broadcast(a + r);
      acc[r][0] = S::fma(ar, b0, acc[r][0]);
      acc[r][1] = S::fma(ar, b1, acc[r][1]);
    }
    a += kMr;
    b += nr;
  }
  if (carry_out) {
#pragma GCC unroll 6
    for (int r = 0; r < kMr; ++r) {
      S::store(carry_out + r * nr, acc[r][0]);
      S::store(carry_out + r * nr + L, acc[r][1]);
    }
  } else if (out.rows == kMr && out.cols == nr) {
    write_full_tile<T>(acc, out);
  } else {
    write_edge_tile<T>(acc, out);
  }
}

}  // namespace troupe::kernels::detail
