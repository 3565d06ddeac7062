// gemm_thin_k (gemm.h): C = beta·C + A·B for a K of a few dozen at most, without packing.
// Register tile: kRows rows × 2 vectors of C; per k, two loads of B's row and one
// broadcast of A per row feed 2·kRows independent FMA chains.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_kernel.h"

namespace troupe::kernels {
namespace {

using detail::Simd;
constexpr int64_t kRows = 4;

// Rows [i0, i0+rows) (rows <= kRows) and columns [j, j + 2·lanes) of C.
template <typename T>
void tile(int64_t rows, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, bool beta,
          T* C, int64_t ldc) {
  using V = Simd<T>;
  constexpr int W = V::lanes;
  typename V::Vec acc[kRows][2];
  for (int64_t r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = V::zero();
  for (int64_t k = 0; k < K; ++k) {
    const typename V::Vec b0 = V::load(B + k * ldb), b1 = V::load(B + k * ldb + W);
    for (int64_t r = 0; r < kRows; ++r) {
      if (r >= rows) break;
      const typename V::Vec a = V::broadcast(A + r * lda + k);
      acc[r][0] = V::fma(a, b0, acc[r][0]);
      acc[r][1] = V::fma(a, b1, acc[r][1]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    T* c = C + r * ldc;
    if (beta) {
      V::store(c, V::add(V::load(c), acc[r][0]));
      V::store(c + W, V::add(V::load(c + W), acc[r][1]));
    } else {
      V::store(c, acc[r][0]);
      V::store(c + W, acc[r][1]);
    }
  }
}

}  // namespace

template <typename T>
void gemm_thin_k(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                 T beta, T* C, int64_t ldc) {
  constexpr int64_t kCols = 2 * Simd<T>::lanes;
  const bool accumulate = beta != T(0);
  const int64_t n_tiled = N - N % kCols;
  for (int64_t i = 0; i < M; i += kRows) {
    const int64_t rows = std::min(kRows, M - i);
    for (int64_t j = 0; j < n_tiled; j += kCols)
      tile<T>(rows, K, A + i * lda, lda, B + j, ldb, accumulate, C + i * ldc + j, ldc);
    for (int64_t r = i; r < i + rows; ++r)  // the columns past the last whole tile
      for (int64_t j = n_tiled; j < N; ++j) {
        T s = 0;
        for (int64_t k = 0; k < K; ++k) s = std::fma(A[r * lda + k], B[k * ldb + j], s);
        C[r * ldc + j] = accumulate ? C[r * ldc + j] + s : s;
      }
  }
}

template void gemm_thin_k<float>(int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                                 int64_t, float, float*, int64_t);
template void gemm_thin_k<double>(int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                                  int64_t, double, double*, int64_t);

}  // namespace troupe::kernels
