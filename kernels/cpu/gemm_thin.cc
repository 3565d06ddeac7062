// gemm_thin_k (gemm.h): C = beta·C + Σ_t A_t·B_t for K_t of a few dozen at most, without
// packing. Register tile: kRows rows × 2 vectors of C; per k, two loads of B's row and one
// broadcast of A per row feed 2·kRows independent FMA chains; the terms' sums are added in
// registers, so C is written once.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kernel.h"

namespace troupe::kernels {
namespace {

using detail::Simd;
constexpr int64_t kRows = 4;
constexpr int kTermsMax = 4;

// Rows [0, rows) (rows <= kRows, a constant so that the loops unroll into registers) and columns
// [0, 2·lanes) of C, offsets applied by the caller.
template <typename T, int64_t rows>
void tile(const ThinTerm<T>* terms, int n_terms, int64_t lda, int64_t ldb, bool beta, int64_t col,
          T* C, int64_t ldc) {
  using V = Simd<T>;
  constexpr int W = V::lanes;
  typename V::Vec total[rows][2], acc[rows][2];
  for (int64_t r = 0; r < rows; ++r) total[r][0] = total[r][1] = V::zero();
  for (int t = 0; t < n_terms; ++t) {
    const T* A = terms[t].A;
    const T* B = terms[t].B + col;
    for (int64_t r = 0; r < rows; ++r) acc[r][0] = acc[r][1] = V::zero();
    for (int64_t k = 0; k < terms[t].K; ++k) {
      const typename V::Vec b0 = V::load(B + k * ldb), b1 = V::load(B + k * ldb + W);
      for (int64_t r = 0; r < rows; ++r) {
        const typename V::Vec a = V::broadcast(A + r * lda + k);
        acc[r][0] = V::fma(a, b0, acc[r][0]);
        acc[r][1] = V::fma(a, b1, acc[r][1]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      if (t > 0) {
        total[r][0] = V::add(total[r][0], acc[r][0]);
        total[r][1] = V::add(total[r][1], acc[r][1]);
      } else if (beta) {
        total[r][0] = V::add(V::load(C + r * ldc), acc[r][0]);
        total[r][1] = V::add(V::load(C + r * ldc + W), acc[r][1]);
      } else {
        total[r][0] = acc[r][0], total[r][1] = acc[r][1];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    V::store(C + r * ldc, total[r][0]);
    V::store(C + r * ldc + W, total[r][1]);
  }
}

}  // namespace

template <typename T>
void gemm_thin_k(int64_t M, int64_t N, const ThinTerm<T>* terms, int n_terms, int64_t lda,
                 int64_t ldb, T beta, T* C, int64_t ldc) {
  constexpr int64_t kCols = 2 * Simd<T>::lanes;
  if (n_terms > kTermsMax) throw std::invalid_argument("gemm_thin_k: more than 4 terms");
  const bool accumulate = beta != T(0);
  const int64_t n_tiled = N - N % kCols;
  for (int64_t i = 0; i < M; i += kRows) {
    const int64_t rows = std::min(kRows, M - i);
    ThinTerm<T> at[kTermsMax];
    for (int t = 0; t < n_terms; ++t) at[t] = {terms[t].A + i * lda, terms[t].B, terms[t].K};
    for (int64_t j = 0; j < n_tiled; j += kCols) {
      T* c = C + i * ldc + j;
      switch (rows) {
        case 4:
          tile<T, 4>(at, n_terms, lda, ldb, accumulate, j, c, ldc);
          break;
        case 3:
          tile<T, 3>(at, n_terms, lda, ldb, accumulate, j, c, ldc);
          break;
        case 2:
          tile<T, 2>(at, n_terms, lda, ldb, accumulate, j, c, ldc);
          break;
        default:
          tile<T, 1>(at, n_terms, lda, ldb, accumulate, j, c, ldc);
          break;
      }
    }
    for (int64_t r = i; r < i + rows; ++r)  // the columns past the last whole tile
      for (int64_t j = n_tiled; j < N; ++j) {
        T total = 0;
        for (int t = 0; t < n_terms; ++t) {
          T s = 0;
          for (int64_t k = 0; k < terms[t].K; ++k)
            s = std::fma(terms[t].A[r * lda + k], terms[t].B[k * ldb + j], s);
          total = t > 0 ? total + s : accumulate ? C[r * ldc + j] + s : s;
        }
        C[r * ldc + j] = total;
      }
  }
}

template void gemm_thin_k<float>(int64_t, int64_t, const ThinTerm<float>*, int, int64_t, int64_t,
                                 float, float*, int64_t);
template void gemm_thin_k<double>(int64_t, int64_t, const ThinTerm<double>*, int, int64_t, int64_t,
                                  double, double*, int64_t);

}  // namespace troupe::kernels
