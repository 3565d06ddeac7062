#pragma once
// Deterministic GEMM. Row-major. Dimension letters: see kernels/README.md.
//
// Contract (the determinism contract of DESIGN.md §5): every output element is
//   C[i,j] = beta * C[i,j] + s,   s = Σ_k A'[i,k] B'[k,j]
// where s is accumulated over k in one fixed order that depends on K alone — never on
// M, N, the position (i, j), the thread count, or what else is in the batch. So a row
// of a micro-batch gets the same bits whether it is computed alone or with others.
#include <cstdint>

namespace troupe::kernels {

enum class Trans { N, T };

// C (M,N) = beta*C + op(A) (M,K) · op(B) (K,N). beta is 0 or 1 in practice.
// op(A)[i,k] = A[i*lda + k] (N) or A[k*lda + i] (T); likewise B.
template <typename T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// The most terms gemm_thin_k takes.
inline constexpr int kThinTermsMax = 4;

// One term of gemm_thin_k: A (M,K) with row stride lda, B (K,N) with row stride ldb.
template <typename T>
struct ThinTerm {
  const T* A;
  const T* B;
  int64_t K;
};

// C (M,N) = beta·C + s_0 + s_1 + … (added left to right), s_t = A_t · B_t untransposed, beta
// 0 or 1, for thin K_t (a few dozen at most) and 1 to kThinTermsMax terms (else it throws
// std::invalid_argument). Each s_t has gemm's bits (one fma
// chain over k ascending from zero), and the sum those of calling gemm once per term with beta = 1
// after the first; without gemm's packing, which costs more than such a product, and writing C
// once.
template <typename T>
void gemm_thin_k(int64_t M, int64_t N, const ThinTerm<T>* terms, int n_terms, int64_t lda,
                 int64_t ldb, T beta, T* C, int64_t ldc);

// C (M,N) = beta·C + A·B for A (M,K) and B (K,N) untransposed (row strides lda, ldb), any K:
// the bits of gemm(Trans::N, Trans::N, …) without packing, for a few rows of a fused loop
// (8 at a time; 24 columns a pass) where packing them would cost more than the product.
template <typename T>
void gemm_rows_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                  T beta, T* C, int64_t ldc);

// C (M,N): every element's chain goes on over K more terms, C[i,j] = fma(A[k,i], B[k,j],
// C[i,j]) for k ascending, A (K,M) and B (K,N) untransposed. Started from C = 0 and fed the
// rows of K in pieces, in order, C ends as the s of gemm(Trans::T, Trans::N, …) over all of
// them; adding it to a matrix then gives that gemm's bits with beta = 1.
template <typename T>
void gemm_rows_tn_continue(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                           int64_t ldb, T* C, int64_t ldc);

// y (R,O) = x (R,I) · Wᵀ, W (O,I): a bias-free Linear layer. beta=1 accumulates.
template <typename T>
void linear_forward(const T* x, const T* W, T* y, int64_t R, int64_t I, int64_t O, T beta = T(0)) {
  gemm<T>(Trans::N, Trans::T, R, O, I, x, I, W, I, beta, y, O);
}

// dx (R,I) += dy (R,O) · W (O,I);  dW (O,I) += dyᵀ (O,R) · x (R,I). Either may be null.
template <typename T>
void linear_backward(const T* dy, const T* x, const T* W, T* dx, T* dW, int64_t R, int64_t I,
                     int64_t O) {
  if (dx) gemm<T>(Trans::N, Trans::N, R, I, O, dy, O, W, I, T(1), dx, I);
  if (dW) gemm<T>(Trans::T, Trans::N, O, I, R, dy, O, x, I, T(1), dW, I);
}

// OpenBLAS sgemm with the same signature, for benchmarks only: its bits may depend on M.
void blas_sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// OpenBLAS's thread count, for benchmarks only (our gemm is single-threaded).
void blas_set_num_threads(int n);

}  // namespace troupe::kernels
