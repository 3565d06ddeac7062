#include "kernels/cpu/gemm.h"

#include <cblas.h>

namespace troupe::kernels {

// Reference kernel: plain loops, k ascending. Replaced by a blocked kernel with the
// same accumulation order.
template <typename T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T s = 0;
      for (int64_t k = 0; k < K; ++k) {
        T a = ta == Trans::N ? A[i * lda + k] : A[k * lda + i];
        T b = tb == Trans::N ? B[k * ldb + j] : B[j * ldb + k];
        s += a * b;
      }
      C[i * ldc + j] = (beta == T(0) ? T(0) : beta * C[i * ldc + j]) + s;
    }
  }
}

template void gemm<float>(Trans, Trans, int64_t, int64_t, int64_t, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(Trans, Trans, int64_t, int64_t, int64_t, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

void blas_sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta == Trans::N ? CblasNoTrans : CblasTrans,
              tb == Trans::N ? CblasNoTrans : CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C,
              ldc);
}

}  // namespace troupe::kernels
