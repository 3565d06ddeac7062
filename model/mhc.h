#pragma once
// mHC: manifold-constrained hyper-connections (SPEC-model.md §3.1, layouts §11).
// Dimension letters: kernels/README.md (N tokens, S streams = hc_mult, C width).
//
// Per token, X (S,C) holds S residual streams; vec(X) is stream-major (m·C + c).
//   x̂      = vec(X) / sqrt(mean(vec(X)²) + rms_norm_eps)                  (S·C)
//   H_pre  = σ(α_pre · φ_pre x̂ + b_pre)                                    (S)
//   H_post = 2σ(α_post · φ_post x̂ + b_post)                                (S)
//   H̃_res  = α_res · mat(φ_res x̂) + b_res   (row r of φ_res → entry [r/S, r%S])
//   H_res  = SinkhornKnopp(exp(H̃_res)), sinkhorn_iters rounds of (rows, then columns)
//   u      = Σ_j H_pre[j] X_j                           → the wrapped sublayer f = F(u)
//   X'_k   = Σ_j H_res[k,j] X_j + H_post[k] · f
// The backward differentiates through every Sinkhorn round; no implicit-function shortcut.
// It re-runs the rounds of 8 tokens at a time from the exp(H̃ − max H̃) the forward kept
// (the same operations, so the same matrices) rather than keeping every round's matrices from the
// forward: 2·iters + 1 matrices per token would outweigh the streams, and reading them back costs
// more than recomputing them.
//
// Call protocol, per layer and per micro-batch, with one MhcCache per mHC instance:
//   forward : mhc_pre_forward → (caller: f = F(u)) → mhc_post_forward
//   backward: mhc_post_backward → (caller: df → du through F) → mhc_pre_backward
// Each call exactly once, in this order. The two backward calls share one RMSNorm: the
// coefficient gradients of mhc_post_backward wait in the cache until mhc_pre_backward
// forms the x̂-gradient from all three and pushes it through the RMSNorm into dX; it must
// come last. A call out of order throws
// std::logic_error naming the expected call (the cache is then unusable until the next
// mhc_pre_forward). mhc_pre_forward may be called at any time and starts over (a
// forward without backward, as in evaluation, simply never runs the backward calls).
//
// Gradients: mhc_post_backward completes the gradients of α_post, α_res, b_post, b_res;
// mhc_pre_backward those of α_pre, b_pre and all three φ (each element one chain over the
// tokens, as one GEMM would). All accumulate (+=) into `grads` (laid out like `params`), and
// dX is accumulated, never overwritten.
//
// Determinism: single-threaded; every sum runs in an order fixed by (S, C,
// sinkhorn_iters) alone, so a token's outputs (u, X', dX, df) have the same bits however
// many tokens share the call. Parameter gradients sum over tokens in index order.
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

namespace troupe::model {

// The most streams an mHC instance may have: the Sinkhorn work arrays (S² per token)
// live on the stack. The mHC paper and the tiny/small configs use 4.
constexpr int64_t kStreamsMax = 16;
// Tokens whose Sinkhorn iterations run side by side, one per SIMD lane (16 floats fill an
// AVX-512 register, two AVX2 ones). Each lane does exactly the scalar operations of its own
// token, so a token's bits do not depend on its neighbours, nor on this number. The rounds are
// bound by their exact divisions; on a core with whole 512-bit dividers (AMD Zen 5) a 16-wide
// division costs what an 8-wide one does (0.8 against 0.7 ns a division in a loop here).
constexpr int64_t kMhcLanes = 16;

// Offsets into the parameter buffer of one mHC instance's tensors.
struct MhcLayout {
  int64_t phi_pre, phi_post, phi_res, alpha_pre, alpha_post, alpha_res, b_pre, b_post, b_res;
  // prefix e.g. "model.layers.0.attn_hc."; throws std::out_of_range naming a missing
  // tensor and std::invalid_argument naming a tensor whose shape disagrees with the n and
  // n·C of phi_pre.
  static MhcLayout from(const ParamTable& table, const std::string& prefix);
};

// What the backward needs, for one mHC instance and one call of N tokens. Owns its
// buffers (they grow to the largest N seen and are reused without reallocation), except
// two it borrows: the streams X given to mhc_pre_forward and the f given to
// mhc_post_forward, which the caller keeps, unchanged, until mhc_pre_backward returns.
template <typename T>
struct MhcCache {
  enum class Stage { Empty, PreForward, PostForward, PostBackward };
  Stage stage = Stage::Empty;
  int64_t N = 0, S = 0, C = 0, iters = 0;

  const T* x = nullptr;   // (N,S,C) the input streams (borrowed)
  std::vector<T> rstd;    // (N) x̂ = vec(X)·rstd, formed again where needed, never kept
  std::vector<T> xrows;   // (8,S·C) x̂ of the few tokens a fused pass holds (scratch)
  std::vector<T> phi_t;   // (S·C,P) [φ_pre; φ_post; φ_res]ᵀ for the forward's projection
  std::vector<T> proj;    // (N,P) φ x̂, P = 2S + S²: [pre (S) | post (S) | res (S²)]
  std::vector<T> h_pre;   // (N,S)
  std::vector<T> h_post;  // (N,S)
  std::vector<T> h_res_;  // (N,S,S) H_res, the last matrix of each token's Sinkhorn rounds
  // One block of kMhcLanes tokens' Sinkhorn rounds (token n is lane n % kMhcLanes of block
  // n / kMhcLanes; lanes past N are padding), scratch for the forward and the backward:
  std::vector<T> sk_exp;  // (blocks, S, S, lanes) exp(H̃ − max H̃), where the rounds start
  std::vector<T> sk_mat;  // (2·iters+1, S, S, lanes): exp(H̃−max), then per round the
                          //   matrix after the row step and after the column step
  std::vector<T> sk_sum;  // (iters, 2, S, lanes): per round the row sums, then the column
                          //   sums
  const T* f = nullptr;   // (N,C) the sublayer output given to mhc_post_forward (borrowed)
  std::vector<T> dproj;   // (N,P) gradient w.r.t. φ x̂ (filled by the backward calls)
  std::vector<T> dxhat;   // (8,S·C) gradient w.r.t. x̂ of a few tokens at a time
  std::vector<T> dphi;    // (P,S·C) dφ's sums over the tokens so far, added to grads at the end

  int64_t P() const { return 2 * S + S * S; }
  int64_t blocks() const { return (N + kMhcLanes - 1) / kMhcLanes; }
  // H_res[k,j] of token n: the last matrix of its Sinkhorn sequence.
  T h_res(int64_t n, int64_t k, int64_t j) const { return h_res_[(n * S + k) * S + j]; }
};

// X (N,S,C) -> u (N,C) overwritten; computes and caches x̂, H_pre, H_post, H_res, and
// keeps X's address (see MhcCache).
// Throws std::invalid_argument unless 1 <= hc_mult <= kStreamsMax and sinkhorn_iters >= 1.
template <typename T>
void mhc_pre_forward(const ModelConfig& cfg, const MhcLayout& L, const T* params, const T* X,
                     int64_t N, T* u, MhcCache<T>& cache);

// X (N,S,C), f (N,C) -> Xout (N,S,C) overwritten. X is the tensor given to
// mhc_pre_forward; Xout never aliases X. The cache keeps f's address (see MhcCache).
template <typename T>
void mhc_post_forward(const ModelConfig& cfg, const MhcLayout& L, const T* params, const T* X,
                      const T* f, T* Xout, MhcCache<T>& cache);

// dXout (N,S,C) -> dX (N,S,C) += (= where !accumulate_dx: dX may then hold anything, and gets
// the bits of += onto zeros) through Σ_j H_res[k,j] X_j (the x̂ part of H_post's and
// H_res's dependence on X is completed by mhc_pre_backward); df (N,C) OVERWRITTEN with
// Σ_k H_post[k] dXout_k; grads += for φ_post, φ_res, α_post, α_res, b_post, b_res.
template <typename T>
void mhc_post_backward(const ModelConfig& cfg, const MhcLayout& L, const T* params, T* grads,
                       const T* dXout, T* dX, T* df, MhcCache<T>& cache, bool accumulate_dx = true);

// du (N,C) -> dX (N,S,C) += through u = Σ_j H_pre[j] X_j and, via the shared RMSNorm,
// through H_pre's, H_post's and H_res's dependence on X; grads += for φ_pre, α_pre, b_pre.
template <typename T>
void mhc_pre_backward(const ModelConfig& cfg, const MhcLayout& L, const T* params, T* grads,
                      const T* du, T* dX, MhcCache<T>& cache);

}  // namespace troupe::model
