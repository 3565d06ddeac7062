// gemm_thin_k (gemm.h): C = beta·C + Σ_t A_t·B_t for K_t of a few dozen at most, without
// packing. Register tile: up to kRows rows × up to kVecs vectors of C; per k, one load of B
// per vector and one broadcast of A per row feed rows·vecs independent FMA chains. After
// each term the tile of C (in L1) takes its sum: C = s_0, then C = C + s_t. Floats on an
// AVX-512 build take the 8-row path below instead (its 32 registers hold the running total
// too); the operations, and so the bits, are the same.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kernel.h"

namespace troupe::kernels {
namespace {

using detail::Simd;
constexpr int64_t kRows = 4;
constexpr int64_t kVecs = 3;

// Rows [0, rows) and vecs vectors of columns of C (offsets applied by the caller); both
// constants, so that the loops unroll into registers.
template <typename T, int64_t rows, int64_t vecs>
void tile(const ThinTerm<T>* terms, int n_terms, int64_t lda, int64_t ldb, bool beta, int64_t col,
          T* C, int64_t ldc) {
  using V = Simd<T>;
  constexpr int W = V::lanes;
  for (int t = 0; t < n_terms; ++t) {
    const T* A = terms[t].A;
    const T* B = terms[t].B + col;
    typename V::Vec acc[rows][vecs];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vecs; ++v) acc[r][v] = V::zero();
    for (int64_t k = 0; k < terms[t].K; ++k) {
      typename V::Vec b[vecs];
      for (int64_t v = 0; v < vecs; ++v) b[v] = V::load(B + k * ldb + v * W);
      for (int64_t r = 0; r < rows; ++r) {
        const typename V::Vec a = V::broadcast(A + r * lda + k);
        for (int64_t v = 0; v < vecs; ++v) acc[r][v] = V::fma(a, b[v], acc[r][v]);
      }
    }
    const bool add = t > 0 || beta;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t v = 0; v < vecs; ++v) {
        T* c = C + r * ldc + v * W;
        V::store(c, add ? V::add(V::load(c), acc[r][v]) : acc[r][v]);
      }
  }
}

// Rows [0, rows) (a constant) of C across all N columns: tiles of kVecs vectors, then the
// leftover vectors one tile, then the columns past the last whole vector one by one.
template <typename T, int64_t rows>
void row_block(const ThinTerm<T>* terms, int n_terms, int64_t N, int64_t lda, int64_t ldb,
               bool beta, T* C, int64_t ldc) {
  constexpr int64_t W = Simd<T>::lanes;
  int64_t j = 0;
  for (; j + kVecs * W <= N; j += kVecs * W)
    tile<T, rows, kVecs>(terms, n_terms, lda, ldb, beta, j, C + j, ldc);
  for (; j + W <= N; j += W) tile<T, rows, 1>(terms, n_terms, lda, ldb, beta, j, C + j, ldc);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t jj = j; jj < N; ++jj) {
      T total = 0;
      for (int t = 0; t < n_terms; ++t) {
        T s = 0;
        for (int64_t k = 0; k < terms[t].K; ++k)
          s = std::fma(terms[t].A[r * lda + k], terms[t].B[k * ldb + jj], s);
        total = t > 0 ? total + s : beta ? C[r * ldc + jj] + s : s;
      }
      C[r * ldc + jj] = total;
    }
}

#ifdef __AVX512F__
// float with AVX-512: rows (≤ kRows512) × vecs (1 or 2) 16-float vectors of C, masked at the
// right edge.
// Each term's sum runs in its own registers and is added to the running total there, in
// the order above (C + s_0, then + s_1, …), so C is read at most once and written once and
// B streams once per kRows512 rows.
constexpr int64_t kRows512 = 8;

template <int64_t rows, int64_t vecs>
void tile512(const ThinTerm<float>* terms, int n_terms, int64_t lda, int64_t ldb, bool beta,
             const __mmask16* mask, float* C, int64_t ldc) {
  __m512 total[rows][vecs] = {};  // (set by term 0; zeros only quiet g++)
  for (int t = 0; t < n_terms; ++t) {
    const float* A = terms[t].A;
    const float* B = terms[t].B;
    __m512 acc[rows][vecs];
#pragma GCC unroll 8
    for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 2
      for (int64_t v = 0; v < vecs; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < terms[t].K; ++k) {
      __m512 b[vecs];
#pragma GCC unroll 2
      for (int64_t v = 0; v < vecs; ++v)
        b[v] = _mm512_maskz_loadu_ps(mask[v], B + k * ldb + 16 * v);
#pragma GCC unroll 8
      for (int64_t r = 0; r < rows; ++r) {
        const __m512 a = _mm512_set1_ps(A[r * lda + k]);
#pragma GCC unroll 2
        for (int64_t v = 0; v < vecs; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
      }
    }
#pragma GCC unroll 8
    for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 2
      for (int64_t v = 0; v < vecs; ++v)
        total[r][v] =
            t > 0  ? _mm512_add_ps(total[r][v], acc[r][v])
            : beta ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], C + r * ldc + 16 * v), acc[r][v])
                   : acc[r][v];
  }
#pragma GCC unroll 8
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 2
    for (int64_t v = 0; v < vecs; ++v)
      _mm512_mask_storeu_ps(C + r * ldc + 16 * v, mask[v], total[r][v]);
}

// Rows [0, rows) of C across all N columns.
template <int64_t rows>
void row_block512(const ThinTerm<float>* terms, int n_terms, int64_t N, int64_t lda, int64_t ldb,
                  bool beta, float* C, int64_t ldc) {
  ThinTerm<float> at[kThinTermsMax];
  auto mask = [&](int64_t j) {
    return N - j >= 16 ? __mmask16(0xffff) : N <= j ? __mmask16(0) : __mmask16((1u << (N - j)) - 1);
  };
  for (int64_t j = 0; j < N; j += 32) {  // two vectors of C a tile, the last one masked
    const __mmask16 m[2] = {mask(j), mask(j + 16)};
    for (int t = 0; t < n_terms; ++t) at[t] = {terms[t].A, terms[t].B + j, terms[t].K};
    if (m[1])
      tile512<rows, 2>(at, n_terms, lda, ldb, beta, m, C + j, ldc);
    else
      tile512<rows, 1>(at, n_terms, lda, ldb, beta, m, C + j, ldc);
  }
}

template <int64_t rows = kRows512>
void rows512(int64_t left, const ThinTerm<float>* terms, int n_terms, int64_t N, int64_t lda,
             int64_t ldb, bool beta, float* C, int64_t ldc) {
  if constexpr (rows > 1)
    if (left < rows) return rows512<rows - 1>(left, terms, n_terms, N, lda, ldb, beta, C, ldc);
  row_block512<rows>(terms, n_terms, N, lda, ldb, beta, C, ldc);
}
#endif

// The portable path: kRows rows at a time.
template <typename T>
void thin_rows(int64_t rows, const ThinTerm<T>* at, int n_terms, int64_t N, int64_t lda,
               int64_t ldb, bool accumulate, T* c, int64_t ldc) {
  switch (rows) {
    case 4:
      return row_block<T, 4>(at, n_terms, N, lda, ldb, accumulate, c, ldc);
    case 3:
      return row_block<T, 3>(at, n_terms, N, lda, ldb, accumulate, c, ldc);
    case 2:
      return row_block<T, 2>(at, n_terms, N, lda, ldb, accumulate, c, ldc);
    default:
      return row_block<T, 1>(at, n_terms, N, lda, ldb, accumulate, c, ldc);
  }
}

}  // namespace

template <typename T>
void gemm_thin_k(int64_t M, int64_t N, const ThinTerm<T>* terms, int n_terms, int64_t lda,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  if (n_terms < 1 || n_terms > kThinTermsMax)
    throw std::invalid_argument("gemm_thin_k: takes 1 to kThinTermsMax (4) terms");
  const bool accumulate = beta != T(0);
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t i = 0; i < M; i += kRows512) {
      ThinTerm<float> at[kThinTermsMax];
      for (int t = 0; t < n_terms; ++t) at[t] = {terms[t].A + i * lda, terms[t].B, terms[t].K};
      rows512(std::min(kRows512, M - i), at, n_terms, N, lda, ldb, accumulate, C + i * ldc, ldc);
    }
    return;
  }
#endif
  for (int64_t i = 0; i < M; i += kRows) {
    ThinTerm<T> at[kThinTermsMax];
    for (int t = 0; t < n_terms; ++t) at[t] = {terms[t].A + i * lda, terms[t].B, terms[t].K};
    thin_rows<T>(std::min(kRows, M - i), at, n_terms, N, lda, ldb, accumulate, C + i * ldc, ldc);
  }
}

template void gemm_thin_k<float>(int64_t, int64_t, const ThinTerm<float>*, int, int64_t, int64_t,
                                 float, float*, int64_t);
template void gemm_thin_k<double>(int64_t, int64_t, const ThinTerm<double>*, int, int64_t, int64_t,
                                  double, double*, int64_t);

}  // namespace troupe::kernels
