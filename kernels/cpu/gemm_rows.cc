// gemm_rows_nn and gemm_rows_tn_continue (gemm.h): products over a few rows of a fused loop,
// read straight from where they lie, with gemm's chains (one fma per k, k ascending). Floats
// on an AVX-512 build take register tiles of up to 8 rows; elsewhere (and for doubles) AVX2
// tiles of up to 4 rows run the same operations, and columns past the last whole vector go
// one element at a time.
// Every loop over a tile's rows or vectors is unrolled by pragma: g++ 12 otherwise keeps the
// accumulator arrays in memory and stores all of them on every k (16 stores per step of
// tile_nn<8>), which made the mHC projections 2-3x slower than their FLOPs; the operations and
// their order are the same either way.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kernel.h"

namespace troupe::kernels {
namespace {

#ifdef __AVX512F__
constexpr int64_t kRowsTile = 8;

__mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
}

// gemm_rows_nn: rows × (16 columns in a zmm, plus 8 in a ymm when `half`): 24 columns a pass.
template <int64_t rows, bool half>
void tile_nn(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, bool beta,
             __mmask16 m16, __mmask8 m8, float* C, int64_t ldc) {
  __m512 a16[rows];
  __m256 a8[rows];
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r) a16[r] = _mm512_setzero_ps(), a8[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b16 = _mm512_maskz_loadu_ps(m16, B + k * ldb);
    __m256 b8 = _mm256_setzero_ps();
    if constexpr (half) b8 = _mm256_maskz_loadu_ps(m8, B + k * ldb + 16);
#pragma GCC unroll 8
    for (int64_t r = 0; r < rows; ++r) {
      const float a = A[r * lda + k];
      a16[r] = _mm512_fmadd_ps(_mm512_set1_ps(a), b16, a16[r]);
      if constexpr (half) a8[r] = _mm256_fmadd_ps(_mm256_set1_ps(a), b8, a8[r]);
    }
  }
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r) {
    float* c = C + r * ldc;
    if (beta) a16[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m16, c), a16[r]);
    _mm512_mask_storeu_ps(c, m16, a16[r]);
    if constexpr (half) {
      if (beta) a8[r] = _mm256_add_ps(_mm256_maskz_loadu_ps(m8, c + 16), a8[r]);
      _mm256_mask_storeu_ps(c + 16, m8, a8[r]);
    }
  }
}

template <int64_t rows = kRowsTile>
void rows_nn(int64_t left, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, bool beta, float* C, int64_t ldc) {
  if constexpr (rows > 1)
    if (left < rows) return rows_nn<rows - 1>(left, N, K, A, lda, B, ldb, beta, C, ldc);
  for (int64_t j = 0; j < N; j += 24) {
    const int64_t n = N - j;
    if (n > 16)
      tile_nn<rows, true>(K, A, lda, B + j, ldb, beta, mask16(16),
                          __mmask8((1u << std::min<int64_t>(n - 16, 8)) - 1), C + j, ldc);
    else
      tile_nn<rows, false>(K, A, lda, B + j, ldb, beta, mask16(n), 0, C + j, ldc);
  }
}

// gemm_rows_tn_continue: rows × 32 columns of C (two zmm each), loaded, continued, stored.
template <int64_t rows>
void tile_tn(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, __mmask16 m0,
             __mmask16 m1, float* C, int64_t ldc) {
  __m512 c0[rows], c1[rows];
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r)
    c0[r] = _mm512_maskz_loadu_ps(m0, C + r * ldc),
    c1[r] = _mm512_maskz_loadu_ps(m1, C + r * ldc + 16);
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + k * ldb);
    const __m512 b1 = _mm512_maskz_loadu_ps(m1, B + k * ldb + 16);
#pragma GCC unroll 8
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 a = _mm512_set1_ps(A[k * lda + r]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r)
    _mm512_mask_storeu_ps(C + r * ldc, m0, c0[r]),
        _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c1[r]);
}

template <int64_t rows = kRowsTile>
void rows_tn(int64_t left, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc) {
  if constexpr (rows > 1)
    if (left < rows) return rows_tn<rows - 1>(left, N, K, A, lda, B, ldb, C, ldc);
  for (int64_t j = 0; j < N; j += 32)
    tile_tn<rows>(K, A, lda, B + j, ldb, mask16(N - j), mask16(std::max<int64_t>(N - j - 16, 0)),
                  C + j, ldc);
}
#endif

// The portable path (AVX2 registers, floats or doubles): rows (≤ kRowsSimd) × vecs vectors
// of C a tile; the columns past the last whole vector one element at a time.
constexpr int64_t kRowsSimd = 4;

// A tile of rows × vecs vectors. A's element (row r, step k) is A[r·a_r + k·a_k]. `cont`:
// C's chains go on (gemm_rows_tn_continue); else they start from zero and C = s, or C + s
// with beta (gemm_rows_nn).
template <typename T, int64_t rows, int64_t vecs, bool cont>
void tile_simd(int64_t K, const T* A, int64_t a_r, int64_t a_k, const T* B, int64_t ldb, bool beta,
               T* C, int64_t ldc) {
  using V = detail::Simd<T>;
  typename V::Vec acc[rows][vecs];
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 8
    for (int64_t v = 0; v < vecs; ++v)
      acc[r][v] = cont ? V::load(C + r * ldc + v * V::lanes) : V::zero();
  for (int64_t k = 0; k < K; ++k) {
    typename V::Vec b[vecs];
#pragma GCC unroll 8
    for (int64_t v = 0; v < vecs; ++v) b[v] = V::load(B + k * ldb + v * V::lanes);
#pragma GCC unroll 8
    for (int64_t r = 0; r < rows; ++r) {
      const typename V::Vec a = V::broadcast(A + r * a_r + k * a_k);
#pragma GCC unroll 8
      for (int64_t v = 0; v < vecs; ++v) acc[r][v] = V::fma(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 8
    for (int64_t v = 0; v < vecs; ++v) {
      T* c = C + r * ldc + v * V::lanes;
      V::store(c, !cont && beta ? V::add(V::load(c), acc[r][v]) : acc[r][v]);
    }
}

template <typename T, int64_t rows = kRowsSimd>
void rows_nn_simd(int64_t left, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                  int64_t ldb, bool beta, T* C, int64_t ldc) {
  if constexpr (rows > 1)
    if (left < rows) return rows_nn_simd<T, rows - 1>(left, N, K, A, lda, B, ldb, beta, C, ldc);
  constexpr int64_t W = detail::Simd<T>::lanes;
  int64_t j = 0;
  for (; j + 3 * W <= N; j += 3 * W)
    tile_simd<T, rows, 3, false>(K, A, lda, 1, B + j, ldb, beta, C + j, ldc);
  for (; j + W <= N; j += W)
    tile_simd<T, rows, 1, false>(K, A, lda, 1, B + j, ldb, beta, C + j, ldc);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t jj = j; jj < N; ++jj) {
      T s = 0;
      for (int64_t k = 0; k < K; ++k) s = std::fma(A[r * lda + k], B[k * ldb + jj], s);
      C[r * ldc + jj] = beta ? C[r * ldc + jj] + s : s;
    }
}

template <typename T, int64_t rows = kRowsSimd>
void rows_tn_simd(int64_t left, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                  int64_t ldb, T* C, int64_t ldc) {
  if constexpr (rows > 1)
    if (left < rows) return rows_tn_simd<T, rows - 1>(left, N, K, A, lda, B, ldb, C, ldc);
  constexpr int64_t W = detail::Simd<T>::lanes;
  int64_t j = 0;
  for (; j + 2 * W <= N; j += 2 * W)
    tile_simd<T, rows, 2, true>(K, A, 1, lda, B + j, ldb, false, C + j, ldc);
  for (; j + W <= N; j += W)
    tile_simd<T, rows, 1, true>(K, A, 1, lda, B + j, ldb, false, C + j, ldc);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t jj = j; jj < N; ++jj)
      for (int64_t k = 0; k < K; ++k)
        C[r * ldc + jj] = std::fma(A[k * lda + r], B[k * ldb + jj], C[r * ldc + jj]);
}

}  // namespace

template <typename T>
void gemm_rows_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                  T beta, T* C, int64_t ldc) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t i = 0; i < M; i += kRowsTile)
      rows_nn(std::min(kRowsTile, M - i), N, K, A + i * lda, lda, B, ldb, beta != T(0), C + i * ldc,
              ldc);
    return;
  }
#endif
  for (int64_t i = 0; i < M; i += kRowsSimd)
    rows_nn_simd<T>(std::min(kRowsSimd, M - i), N, K, A + i * lda, lda, B, ldb, beta != T(0),
                    C + i * ldc, ldc);
}

template <typename T>
void gemm_rows_tn_continue(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                           int64_t ldb, T* C, int64_t ldc) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t i = 0; i < M; i += kRowsTile)
      rows_tn(std::min(kRowsTile, M - i), N, K, A + i, lda, B, ldb, C + i * ldc, ldc);
    return;
  }
#endif
  for (int64_t i = 0; i < M; i += kRowsSimd)
    rows_tn_simd<T>(std::min(kRowsSimd, M - i), N, K, A + i, lda, B, ldb, C + i * ldc, ldc);
}

#define TROUPE_GEMM_ROWS_INSTANTIATE(T)                                                          \
  template void gemm_rows_nn<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t, \
                                T, T*, int64_t);                                                 \
  template void gemm_rows_tn_continue<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, \
                                         int64_t, T*, int64_t);

TROUPE_GEMM_ROWS_INSTANTIATE(float)
TROUPE_GEMM_ROWS_INSTANTIATE(double)

}  // namespace troupe::kernels
