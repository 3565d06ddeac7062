#pragma once
// Elementwise and row-wise kernels, forward and backward side by side.
// Shapes in comments use the legend of kernels/README.md. Backward functions
// accumulate (+=) into their gradient outputs.
#include <cstdint>

namespace troupe::kernels {

// Rows whose sums the RMSNorms form side by side (each row's bits are its own): a caller
// that hands them this many rows at a time gets whole groups.
inline constexpr int64_t kRmsNormRowGroup = 8;

// out (N,D) = x / sqrt(mean(x²) + eps) ⊙ w.  w may be null (no weight).
// rstd (N) receives 1/sqrt(mean(x²)+eps) for the backward.
template <typename T>
void rmsnorm_forward(const T* x, const T* w, T eps, T* out, T* rstd, int64_t N, int64_t D);
// dx (N,D) += ..., dw (D) += ... (dw may be null; must be null when w is).
template <typename T>
void rmsnorm_backward(const T* dout, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t N,
                      int64_t D);

// y = x·σ(x), elementwise over n values.
template <typename T>
T silu(T x);
template <typename T>
T silu_grad(T x);  // d silu / dx
template <typename T>
T sigmoid(T x);

// In-place row softmax of x (N,D) over D; entries equal to -inf get probability 0.
template <typename T>
void softmax_rows(T* x, int64_t N, int64_t D);
// dx (N,D) += p ⊙ (dp − Σ dp⊙p) for rows of probabilities p.
template <typename T>
void softmax_rows_backward(const T* p, const T* dp, T* dx, int64_t N, int64_t D);

// RoPE, "rotate half" (SPEC §11): for each of the N vectors of width D (D even) at stride
// `stride` starting at x, with position pos[n]: dim i pairs with i + D/2,
// θ_i = theta^(−2i/D).  (a, b) → (a cos − b sin, b cos + a sin).
template <typename T>
void rope_forward(T* x, int64_t N, int64_t D, int64_t stride, const int32_t* pos, T theta);
// Backward: rotates the gradient by the negative angle (in place on dx).
template <typename T>
void rope_backward(T* dx, int64_t N, int64_t D, int64_t stride, const int32_t* pos, T theta);

// Cross-entropy over rows of logits (N,V). Rows with target < 0 are skipped.
// Returns Σ over valid rows of −log softmax(logits)[target]; if dlogits is non-null,
// accumulates scale·(softmax − onehot) into it for the valid rows.
template <typename T>
T cross_entropy(const T* logits, const int32_t* target, int64_t N, int64_t V, T scale, T* dlogits);

// Σ x over n values, in index order.
template <typename T>
T sum(const T* x, int64_t n);

}  // namespace troupe::kernels
