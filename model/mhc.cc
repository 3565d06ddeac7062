#include "model/mhc.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "kernels/cpu/expf.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/mhc_rows.h"

namespace troupe::model {

namespace {

// Tokens whose dx̂ the backward forms at a time: whole RMSNorm row groups.
constexpr int64_t kXhatRows = kernels::kRmsNormRowGroup;
// Tokens whose x̂ the backward gathers before dφ's chains go on through them: dφ (P, D) is
// loaded and stored once per gathering.
constexpr int64_t kPhiGradRows = 4 * kXhatRows;
// Tokens whose α_res terms are summed apart before their sum joins α_res's gradient: the
// Sinkhorn block of the days of 8 lanes. A constant of its own, so the bits do not depend
// on kMhcLanes (16 lanes once summed in blocks of 16, which changed trained weights).
constexpr int64_t kAlphaResGroup = 8;
static_assert(kMhcLanes % kAlphaResGroup == 0, "α_res groups must tile a Sinkhorn block");

using mhc_rows::combine;
using mhc_rows::dot;

// y = std::exp(x) elementwise, bit for bit: floats a vector at a time (kernels/cpu/expf.h).
inline void exp_exact(const float* x, float* y, int64_t n) {
  kernels::expf_exact(x, y, n);
}
inline void exp_exact(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

// out[j] = dot(a, rows[j], n) for j < m (m <= kStreamsMax + 1): one pass for tiny's and
// small's 4 streams (5 rows with f), else one dot at a time; the same bits either way.
template <typename T>
void dots(const T* a, const T* const* rows, int64_t m, int64_t n, T* out) {
  if (m == 4) return mhc_rows::dots<T, 4>(a, rows, n, out);
  if (m == 5) return mhc_rows::dots<T, 5>(a, rows, n, out);
  for (int64_t j = 0; j < m; ++j) out[j] = dot(a, rows[j], n);
}

// Pointers to the S rows of C floats at x (a token's streams).
template <typename T>
void stream_rows(const T* x, int64_t S, int64_t C, const T** rows) {
  for (int64_t j = 0; j < S; ++j) rows[j] = x + j * C;
}

template <typename T>
void check_stage(MhcCache<T>& cache, typename MhcCache<T>::Stage expected, const char* what) {
  if (cache.stage == expected) return;
  cache.stage = MhcCache<T>::Stage::Empty;
  throw std::logic_error(what);
}

template <typename T>
void check_dims(const ModelConfig& cfg, const MhcCache<T>& cache, const char* where) {
  if (cfg.hc_mult == cache.S && cfg.d_model == cache.C && cfg.sinkhorn_iters == cache.iters) return;
  throw std::logic_error(std::string(where) +
                         ": config (hc_mult, d_model, sinkhorn_iters) differs from the one "
                         "given to mhc_pre_forward");
}

// Sizes every buffer for N tokens; grows capacity only, so a reused cache never allocates.
template <typename T>
void prepare(MhcCache<T>& c, const ModelConfig& cfg, int64_t N) {
  if (cfg.hc_mult < 1 || cfg.hc_mult > kStreamsMax || cfg.d_model < 1 || cfg.sinkhorn_iters < 1 ||
      N < 0)
    throw std::invalid_argument(
        "mhc_pre_forward: need 1 <= hc_mult <= " + std::to_string(kStreamsMax) +
        ", d_model >= 1, sinkhorn_iters >= 1, N >= 0; got hc_mult " + std::to_string(cfg.hc_mult) +
        ", sinkhorn_iters " + std::to_string(cfg.sinkhorn_iters));
  c.N = N, c.S = cfg.hc_mult, c.C = cfg.d_model, c.iters = cfg.sinkhorn_iters;
  const int64_t S = c.S, D = c.S * c.C, P = c.P();
  c.rstd.resize(N);
  c.xrows.resize(std::min(N, kPhiGradRows) * D);
  c.phi_t.resize(D * P);
  c.proj.resize(N * P);
  c.h_pre.resize(N * S);
  c.h_post.resize(N * S);
  c.h_res_.resize(N * S * S);
  c.sk_exp.resize(c.blocks() * S * S * kMhcLanes);
  c.sk_mat.resize(kMhcLanes * (2 * c.iters + 1) * S * S);
  c.sk_sum.resize(kMhcLanes * c.iters * 2 * S);
  c.dproj.resize(N * P);
  c.dxhat.resize(std::min(N, kXhatRows) * D);
  c.dphi.resize(P * D);
}

constexpr int64_t kL = kMhcLanes;

// One block of kL tokens, token-minor (element [..., l] belongs to lane l):
// mats[0] (S,S,kL) = exp(H̃ − max H̃) per token, given -> mats (2·iters+1, S,S,kL), sums
// (iters, 2, S,kL). Round t writes its row-normalised matrix to mats[2t+1] (row
// sums to sums[t][0]) and its column-normalised one to mats[2t+2] (column sums to
// sums[t][1]). Every lane runs the scalar algorithm of its own token; the lane loops
// are what the compiler vectorises.
// kS: the stream count as a constant (its loops then unroll into registers), or 0 to read
// it from S at run time; the same operations either way. kKeep = false (the forward's first
// run, which needs only the last matrix): only mats[2·iters] is written, sums not at all.
template <typename T, int64_t kS = 0, bool kKeep = true>
void sinkhorn_forward(int64_t S_run, int64_t iters, T* mats, T* sums) {
  const int64_t S = kS ? kS : S_run, SS = S * S;
  T w[kStreamsMax * kStreamsMax * kL], cs[kStreamsMax * kL], r[kL];
  std::copy(mats, mats + SS * kL, w);
  for (int64_t t = 0; t < iters; ++t) {
    T* rs = sums + 2 * t * S * kL;
    for (int64_t i = 0; i < S; ++i) {  // w ← diag(1/rs) w,  rs = w 1
      T* row = w + i * S * kL;
      for (int64_t l = 0; l < kL; ++l) r[l] = 0;
      for (int64_t j = 0; j < S; ++j)
        for (int64_t l = 0; l < kL; ++l) r[l] += row[j * kL + l];
      for (int64_t j = 0; j < S; ++j)
        for (int64_t l = 0; l < kL; ++l) row[j * kL + l] /= r[l];
      if constexpr (kKeep) std::copy(r, r + kL, rs + i * kL);
    }
    if constexpr (kKeep) std::copy(w, w + SS * kL, mats + (2 * t + 1) * SS * kL);
    std::fill(cs, cs + S * kL, T(0));  // w ← w diag(1/cs),  cs = 1ᵀ w
    for (int64_t i = 0; i < S; ++i)
      for (int64_t jl = 0; jl < S * kL; ++jl) cs[jl] += w[i * S * kL + jl];
    for (int64_t i = 0; i < S; ++i)
      for (int64_t jl = 0; jl < S * kL; ++jl) w[i * S * kL + jl] /= cs[jl];
    if constexpr (kKeep) std::copy(cs, cs + S * kL, rs + S * kL);
    if (kKeep || t == iters - 1) std::copy(w, w + SS * kL, mats + (2 * t + 2) * SS * kL);
  }
}

// One block, as sinkhorn_forward: d (S,S,kL), in dH_res, out dH̃ (overwritten). Undoes
// the rounds in reverse from what the forward stored. It multiplies by reciprocals
// (S divisions a step instead of S²), a choice of the backward alone.
template <typename T, int64_t kS = 0>
void sinkhorn_backward(const T* mats, const T* sums, int64_t S_run, int64_t iters, T* d) {
  const int64_t S = kS ? kS : S_run, SS = S * S;
  T acc[kStreamsMax * kL], inv[kStreamsMax * kL];
  for (int64_t t = iters - 1; t >= 0; --t) {
    const T* a = mats + (2 * t + 1) * SS * kL;
    const T* b = a + SS * kL;
    const T* rs = sums + 2 * t * S * kL;
    const T* cs = rs + S * kL;
    // b_ij = a_ij / cs_j  =>  da_ij = (db_ij − Σ_k db_kj b_kj) / cs_j
    for (int64_t jl = 0; jl < S * kL; ++jl) acc[jl] = 0, inv[jl] = T(1) / cs[jl];
    for (int64_t i = 0; i < S; ++i)
      for (int64_t jl = 0; jl < S * kL; ++jl) acc[jl] += d[i * S * kL + jl] * b[i * S * kL + jl];
    for (int64_t i = 0; i < S; ++i)
      for (int64_t jl = 0; jl < S * kL; ++jl)
        d[i * S * kL + jl] = (d[i * S * kL + jl] - acc[jl]) * inv[jl];
    // a_ij = m_ij / rs_i  =>  dm_ij = (da_ij − Σ_k da_ik a_ik) / rs_i
    for (int64_t i = 0; i < S; ++i) {
      T* drow = d + i * S * kL;
      const T* arow = a + i * S * kL;
      for (int64_t l = 0; l < kL; ++l) acc[l] = 0, inv[l] = T(1) / rs[i * kL + l];
      for (int64_t j = 0; j < S; ++j)
        for (int64_t l = 0; l < kL; ++l) acc[l] += drow[j * kL + l] * arow[j * kL + l];
      for (int64_t j = 0; j < S; ++j)
        for (int64_t l = 0; l < kL; ++l) drow[j * kL + l] = (drow[j * kL + l] - acc[l]) * inv[l];
    }
  }
  // mats[0] = exp(H̃ − max H̃): dH̃ = dm ⊙ mats[0]. The max is held constant: the result
  // is invariant to a scale of mats[0], so its gradient through the max is zero.
  for (int64_t e = 0; e < SS * kL; ++e) d[e] *= mats[e];
}

// Block `block`'s Sinkhorn rounds into the cache's scratch (sk_mat, sk_sum). The forward
// (`fresh`) starts them from H̃ = α_res · proj_res + b_res (padding lanes: H̃ = 0) and keeps
// the block's exp(H̃ − max H̃) in sk_exp; the backward starts again from what it kept.
template <typename T>
void sinkhorn_block(const MhcLayout& L, const T* params, int64_t block, bool fresh,
                    MhcCache<T>& c) {
  const int64_t S = c.S, SS = S * S, P = c.P();
  T* m0 = c.sk_mat.data();
  T* kept = c.sk_exp.data() + block * SS * kL;
  if (fresh) {
    const T a_res = params[L.alpha_res];
    T htilde[kStreamsMax * kStreamsMax * kL], mx[kL];
    for (int64_t l = 0; l < kL; ++l) {
      const int64_t n = block * kL + l;
      for (int64_t e = 0; e < SS; ++e)
        htilde[e * kL + l] =
            n < c.N ? a_res * c.proj[n * P + 2 * S + e] + params[L.b_res + e] : T(0);
    }
    for (int64_t l = 0; l < kL; ++l) mx[l] = htilde[l];
    for (int64_t e = 1; e < SS; ++e)
      for (int64_t l = 0; l < kL; ++l) mx[l] = std::max(mx[l], htilde[e * kL + l]);
    for (int64_t e = 0; e < SS; ++e)
      for (int64_t l = 0; l < kL; ++l) htilde[e * kL + l] -= mx[l];
    exp_exact(htilde, m0, SS * kL);  // std::exp's bits, a vector at a time
    std::copy(m0, m0 + SS * kL, kept);
  } else {
    std::copy(kept, kept + SS * kL, m0);
  }
  T* mats = c.sk_mat.data();
  T* sums = c.sk_sum.data();
  if (S == 4 && fresh)  // tiny's and small's streams
    sinkhorn_forward<T, 4, false>(S, c.iters, mats, sums);
  else if (S == 4)
    sinkhorn_forward<T, 4>(S, c.iters, mats, sums);
  else if (fresh)
    sinkhorn_forward<T, 0, false>(S, c.iters, mats, sums);
  else
    sinkhorn_forward<T>(S, c.iters, mats, sums);
}

// Block `block`'s coefficients from its projections: H_pre, H_post, and H_res (the last
// matrix of its Sinkhorn rounds).
template <typename T>
void coefficients_forward(const MhcLayout& L, const T* params, int64_t block, MhcCache<T>& c) {
  const int64_t S = c.S, SS = S * S, P = c.P();
  const T a_pre = params[L.alpha_pre], a_post = params[L.alpha_post];
  const int64_t n0 = block * kL, count = std::min(kL, c.N - n0);
  // σ(z) = 1 / (1 + exp(−z)), kernels::sigmoid's operations, with the block's exps at once:
  // e holds −z of H_pre's and then H_post's arguments, token after token.
  T e[2 * kL * kStreamsMax] = {};
  for (int64_t n = n0; n < n0 + count; ++n) {
    const T* pr = c.proj.data() + n * P;
    T* en = e + (n - n0) * 2 * S;
    for (int64_t i = 0; i < S; ++i) {
      en[i] = -(a_pre * pr[i] + params[L.b_pre + i]);
      en[S + i] = -(a_post * pr[S + i] + params[L.b_post + i]);
    }
  }
  exp_exact(e, e, count * 2 * S);
  for (int64_t n = n0; n < n0 + count; ++n) {
    const T* en = e + (n - n0) * 2 * S;
    T* hp = c.h_pre.data() + n * S;
    T* ho = c.h_post.data() + n * S;
    for (int64_t i = 0; i < S; ++i) {
      hp[i] = T(1) / (T(1) + en[i]);
      ho[i] = T(2) * (T(1) / (T(1) + en[S + i]));
    }
  }
  sinkhorn_block(L, params, block, true, c);
  const T* last = c.sk_mat.data() + 2 * c.iters * SS * kL;
  for (int64_t l = 0; l < count; ++l)
    for (int64_t e = 0; e < SS; ++e) c.h_res_[(n0 + l) * SS + e] = last[e * kL + l];
}

// Row p of [φ_pre; φ_post; φ_res] (P,D), wherever the three tensors lie.
template <typename T>
const T* phi_row(const MhcLayout& L, const T* params, int64_t S, int64_t D, int64_t p) {
  if (p < S) return params + L.phi_pre + p * D;
  if (p < 2 * S) return params + L.phi_post + (p - S) * D;
  return params + L.phi_res + (p - 2 * S) * D;
}

// phi_t (D,P) = [φ_pre; φ_post; φ_res]ᵀ, once per call: the forward's projection reads it
// a row of P coefficients per element of x̂.
template <typename T>
void transpose_phi(const MhcLayout& L, const T* params, MhcCache<T>& c) {
  const int64_t S = c.S, D = S * c.C, P = c.P();
  const T* rows[2 * kStreamsMax + kStreamsMax * kStreamsMax];
  for (int64_t p = 0; p < P; ++p) rows[p] = phi_row(L, params, S, D, p);
  T* out = c.phi_t.data();
  for (int64_t d = 0; d < D; ++d, out += P)  // one row of phi_t at a time, written in order
    for (int64_t p = 0; p < P; ++p) out[p] = rows[p][d];
}

// x̂ of tokens [n0, n0 + rows) into xrows from row `at` on: vec(X)·rstd, the RMSNorm
// forward's own product.
template <typename T>
void xhat_rows(int64_t n0, int64_t rows, int64_t at, MhcCache<T>& c) {
  const int64_t D = c.S * c.C;
  for (int64_t l = 0; l < rows; ++l) {
    const T* x = c.x + (n0 + l) * D;
    const T r = c.rstd[n0 + l];
    T* o = c.xrows.data() + (at + l) * D;
    for (int64_t d = 0; d < D; ++d) o[d] = x[d] * r;
  }
}

// Tokens [n0, n0 + rows): dx̂ = (dproj_post φ_post + dproj_res φ_res) + dproj_pre φ_pre
// (thin K: 4, S², 4; gemm.h), then through the RMSNorm: dX += rstd·dx̂ − X·rstd³/D·(dx̂·X).
// Sums in the order the three products were once accumulated into a whole dx̂ buffer.
template <typename T>
void xhat_backward(const MhcLayout& L, const T* params, int64_t n0, int64_t rows, T* dX,
                   MhcCache<T>& c) {
  const int64_t S = c.S, D = S * c.C, P = c.P();
  const T* dp = c.dproj.data() + n0 * P;
  const kernels::ThinTerm<T> terms[3] = {{dp + S, params + L.phi_post, S},
                                         {dp + 2 * S, params + L.phi_res, S * S},
                                         {dp, params + L.phi_pre, S}};
  kernels::gemm_thin_k<T>(rows, D, terms, 3, P, D, T(0), c.dxhat.data(), D);
  kernels::rmsnorm_backward<T>(c.dxhat.data(), c.x + n0 * D, nullptr, c.rstd.data() + n0,
                               dX + n0 * D, nullptr, rows, D);
  // dφ's chains over the tokens go on through these ones (x̂ formed again: the same bits),
  // gathered kPhiGradRows tokens at a time
  const int64_t g0 = n0 / kPhiGradRows * kPhiGradRows;
  xhat_rows(n0, rows, n0 - g0, c);
  if (n0 + rows == std::min(g0 + kPhiGradRows, c.N))
    kernels::gemm_rows_tn_continue<T>(P, D, n0 + rows - g0, c.dproj.data() + g0 * P, P,
                                      c.xrows.data(), D, c.dphi.data(), D);
}

// Token n: df = Σ_k H_post[k] dY_k (overwritten), dX_j += Σ_k H_res[k,j] dY_k; and the
// dot products the coefficients' backward needs: res[k·S + j] = dY_k · X_j, post[k] = dY_k · f.
template <typename T>
void streams_post_backward(const T* dY, T* dx, T* df, int64_t n, const MhcCache<T>& c, T* res,
                           T* post, bool accumulate_dx) {
  const int64_t S = c.S, C = c.C;
  const T* ho = c.h_post.data() + n * S;
  const T* H = c.h_res_.data() + n * S * S;
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>)
    if (S == 4 && C % mhc_rows::kDotLanes == 0)  // tiny's and small's streams: one pass
      return mhc_rows::post_backward4(dY, c.x + n * S * C, c.f + n * C, ho, H, C, df, dx,
                                      accumulate_dx, res, post);
#endif
  const T* rows[kStreamsMax + 1];
  stream_rows(dY, S, C, rows);
  combine(ho, 1, rows, S, C, df, false);
  for (int64_t j = 0; j < S; ++j) combine(H + j, S, rows, S, C, dx + j * C, accumulate_dx);
  stream_rows(c.x + n * S * C, S, C, rows);
  rows[S] = c.f + n * C;
  T out[kStreamsMax + 1];
  for (int64_t k = 0; k < S; ++k) {
    dots(dY + k * C, rows, S + 1, C, out);
    for (int64_t j = 0; j < S; ++j) res[k * S + j] = out[j];
    post[k] = out[S];
  }
}

// Token n: H_post = 2σ(z) with dH_post[k] = dY_k · f (given), so dz = dH_post · H_post (1 −
// H_post/2); writes dproj's post columns, accumulates db_post, returns the α_post term.
template <typename T>
T post_coefficient_backward(const MhcLayout& L, const T* params, T* grads, const T* dh_post,
                            int64_t n, MhcCache<T>& c) {
  const int64_t S = c.S, P = c.P();
  const T* ho = c.h_post.data() + n * S;
  const T* pr = c.proj.data() + n * P;
  T* dp = c.dproj.data() + n * P;
  T dalpha = 0;
  for (int64_t k = 0; k < S; ++k) {
    const T dz = dh_post[k] * ho[k] * (T(1) - ho[k] / T(2));
    dalpha += dz * pr[S + k];
    grads[L.b_post + k] += dz;
    dp[S + k] = params[L.alpha_post] * dz;
  }
  return dalpha;
}

// Block `block`: d (S,S,kL) holds dH_res[k,j] = dY_k · X_j of its tokens; through the
// Sinkhorn rounds to dH̃ = α_res · proj_res + b_res; writes dproj's res columns, accumulates
// db_res, adds the α_res terms to dalpha (tokens in order, kAlphaResGroup at a time).
template <typename T>
void res_coefficient_backward(const MhcLayout& L, const T* params, T* grads, T* d, int64_t block,
                              T& dalpha_res, MhcCache<T>& c) {
  const int64_t S = c.S, SS = S * S, P = c.P();
  const int64_t n0 = block * kL, count = std::min(kL, c.N - n0);
  sinkhorn_block(L, params, block, false, c);  // the forward's rounds again: the same bits
  if (S == 4)
    sinkhorn_backward<T, 4>(c.sk_mat.data(), c.sk_sum.data(), S, c.iters, d);
  else
    sinkhorn_backward<T>(c.sk_mat.data(), c.sk_sum.data(), S, c.iters, d);
  T dalpha = 0;
  for (int64_t l = 0; l < count; ++l) {
    if (l > 0 && l % kAlphaResGroup == 0) dalpha_res += dalpha, dalpha = 0;
    const T* pr = c.proj.data() + (n0 + l) * P + 2 * S;
    T* dp = c.dproj.data() + (n0 + l) * P + 2 * S;
    for (int64_t e = 0; e < SS; ++e) {
      const T g = d[e * kL + l];
      dalpha += g * pr[e];
      grads[L.b_res + e] += g;
      dp[e] = params[L.alpha_res] * g;
    }
  }
  dalpha_res += dalpha;
}

// Token's streams through u = Σ_j H_pre[j] X_j: dX_j += H_pre[j] du, dH_pre[j] = du · X_j.
template <typename T>
void pre_streams_backward(const T* du, const T* x, const T* hp, int64_t S, int64_t C, T* dx,
                          T* dh) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>)
    if (S == 4 && C % mhc_rows::kDotLanes == 0)  // one pass, the same sums
      return mhc_rows::pre_backward4(du, x, hp, C, dx, dh);
#endif
  const T* xrows[kStreamsMax];
  stream_rows(x, S, C, xrows);
  dots(du, xrows, S, C, dh);
  for (int64_t j = 0; j < S; ++j)
    for (int64_t i = 0; i < C; ++i) dx[j * C + i] += hp[j] * du[i];
}

// Tokens [n0, n0 + rows) of mhc_pre_backward through u = Σ_j H_pre[j] X_j: dX_j += H_pre[j]
// du; dH_pre[j] = du · X_j into dproj's pre columns and db_pre; adds the α_pre terms to
// dalpha, token after token (one running sum over all tokens, as before the grouping).
template <typename T>
void pre_coefficient_backward(const MhcLayout& L, const T* params, T* grads, const T* du,
                              int64_t n0, int64_t rows, T* dX, T& dalpha, MhcCache<T>& c) {
  const int64_t S = c.S, C = c.C, D = S * C, P = c.P();
  const T a_pre = params[L.alpha_pre];
  for (int64_t n = n0; n < n0 + rows; ++n) {
    const T* dun = du + n * C;
    const T* hp = c.h_pre.data() + n * S;
    const T* pr = c.proj.data() + n * P;
    T* dx = dX + n * D;
    T* dp = c.dproj.data() + n * P;
    T dh[kStreamsMax];
    pre_streams_backward(dun, c.x + n * D, hp, S, C, dx, dh);
    for (int64_t j = 0; j < S; ++j) {
      // H_pre = σ(z): dz = dH_pre · H_pre (1 − H_pre)
      const T dz = dh[j] * hp[j] * (T(1) - hp[j]);
      dalpha += dz * pr[j];
      grads[L.b_pre + j] += dz;
      dp[j] = a_pre * dz;
    }
  }
}

}  // namespace

MhcLayout MhcLayout::from(const ParamTable& table, const std::string& prefix) {
  auto shape_of = [&](const char* name) { return table.at(prefix + name).shape; };
  const std::vector<int64_t> pre = shape_of("phi_pre");
  if (pre.size() != 2 || pre[0] < 1 || pre[1] % pre[0] != 0)
    throw std::invalid_argument(prefix + "phi_pre: shape must be (n, n·C)");
  const int64_t n = pre[0], D = pre[1];
  auto expect = [&](const char* name, std::vector<int64_t> want) {
    if (shape_of(name) != want)
      throw std::invalid_argument(prefix + name + ": shape differs from the one phi_pre " +
                                  "implies (n=" + std::to_string(n) + ")");
    return table.offset(prefix + name);
  };
  MhcLayout L;
  L.phi_pre = table.offset(prefix + "phi_pre");
  L.phi_post = expect("phi_post", {n, D});
  L.phi_res = expect("phi_res", {n * n, D});
  L.alpha_pre = expect("alpha_pre", {1});
  L.alpha_post = expect("alpha_post", {1});
  L.alpha_res = expect("alpha_res", {1});
  L.b_pre = expect("b_pre", {n});
  L.b_post = expect("b_post", {n});
  L.b_res = expect("b_res", {n, n});
  return L;
}

template <typename T>
void mhc_pre_forward(const ModelConfig& cfg, const MhcLayout& L, const T* params, const T* X,
                     int64_t N, T* u, MhcCache<T>& cache) {
  prepare(cache, cfg, N);
  const int64_t S = cache.S, C = cache.C, D = S * C;
  cache.x = X;
  const int64_t P = cache.P();
  transpose_phi(L, params, cache);
  // One block of tokens at a time, its X rows in L1 throughout: x̂ = vec(X) / sqrt(mean(vec(X)²)
  // + eps) (no weight), proj = x̂ φᵀ (each element gemm's chain over D), the coefficients, u.
  for (int64_t block = 0; block < cache.blocks(); ++block) {
    const int64_t n0 = block * kMhcLanes, rows = std::min(kMhcLanes, N - n0);
    kernels::rmsnorm_forward<T>(X + n0 * D, nullptr, T(cfg.rms_norm_eps), cache.xrows.data(),
                                cache.rstd.data() + n0, rows, D);
    kernels::gemm_rows_nn<T>(rows, P, D, cache.xrows.data(), D, cache.phi_t.data(), P, T(0),
                             cache.proj.data() + n0 * P, P);
    coefficients_forward(L, params, block, cache);
    for (int64_t n = n0; n < n0 + rows; ++n) {  // u = Σ_j H_pre[j] X_j
      const T* xr[kStreamsMax];
      stream_rows(X + n * D, S, C, xr);
      combine(cache.h_pre.data() + n * S, 1, xr, S, C, u + n * C, false);
    }
  }
  cache.stage = MhcCache<T>::Stage::PreForward;
}

template <typename T>
void mhc_post_forward(const ModelConfig& cfg, const MhcLayout& /*L*/, const T* /*params*/,
                      const T* X, const T* f, T* Xout, MhcCache<T>& cache) {
  check_stage(cache, MhcCache<T>::Stage::PreForward,
              "mhc_post_forward: expected right after mhc_pre_forward");
  check_dims(cfg, cache, "mhc_post_forward");
  const int64_t N = cache.N, S = cache.S, C = cache.C, D = S * C;
  cache.f = f;
  for (int64_t n = 0; n < N; ++n) {
    // X'_k = Σ_j H_res[k,j] X_j + H_post[k] · f
    const T* ho = cache.h_post.data() + n * S;
    const T* H = cache.h_res_.data() + n * S * S;
    if (S == 4) {  // tiny's and small's streams: one pass, the same sums
      mhc_rows::mix4(X + n * D, f + n * C, H, ho, C, Xout + n * D);
      continue;
    }
    const T* rows[kStreamsMax + 1];  // X_0 … X_{S−1}, f
    stream_rows(X + n * D, S, C, rows);
    rows[S] = f + n * C;
    for (int64_t k = 0; k < S; ++k) {
      T coef[kStreamsMax + 1];
      for (int64_t j = 0; j < S; ++j) coef[j] = H[k * S + j];
      coef[S] = ho[k];
      combine(coef, 1, rows, S + 1, C, Xout + n * D + k * C, false);
    }
  }
  cache.stage = MhcCache<T>::Stage::PostForward;
}

template <typename T>
void mhc_post_backward(const ModelConfig& cfg, const MhcLayout& L, const T* params, T* grads,
                       const T* dXout, T* dX, T* df, MhcCache<T>& cache, bool accumulate_dx) {
  check_stage(cache, MhcCache<T>::Stage::PostForward,
              "mhc_post_backward: expected right after mhc_post_forward");
  check_dims(cfg, cache, "mhc_post_backward");
  const int64_t N = cache.N, S = cache.S, C = cache.C, D = S * C;
  T dalpha_post = 0, dalpha_res = 0;
  const int64_t SS = S * S;
  for (int64_t block = 0; block < cache.blocks(); ++block) {
    T d[kStreamsMax * kStreamsMax * kL], res[kStreamsMax * kStreamsMax], post[kStreamsMax];
    std::fill(d, d + SS * kL, T(0));
    for (int64_t l = 0; l < kL && block * kL + l < N; ++l) {
      const int64_t n = block * kL + l;
      streams_post_backward(dXout + n * D, dX + n * D, df + n * C, n, cache, res, post,
                            accumulate_dx);
      dalpha_post += post_coefficient_backward(L, params, grads, post, n, cache);
      for (int64_t e = 0; e < SS; ++e) d[e * kL + l] = res[e];
    }
    res_coefficient_backward(L, params, grads, d, block, dalpha_res, cache);
  }
  grads[L.alpha_post] += dalpha_post;
  grads[L.alpha_res] += dalpha_res;
  cache.stage = MhcCache<T>::Stage::PostBackward;
}

template <typename T>
void mhc_pre_backward(const ModelConfig& cfg, const MhcLayout& L, const T* params, T* grads,
                      const T* du, T* dX, MhcCache<T>& cache) {
  check_stage(cache, MhcCache<T>::Stage::PostBackward,
              "mhc_pre_backward: expected right after mhc_post_backward");
  check_dims(cfg, cache, "mhc_pre_backward");
  const int64_t N = cache.N, S = cache.S, D = S * cache.C, P = cache.P();
  // A few tokens at a time, while their X and dX rows stay in L1: the u part, then dx̂
  // through the RMSNorm. Each dX element sees its += in the same order as token by token.
  T dalpha_pre = 0;
  std::fill(cache.dphi.begin(), cache.dphi.begin() + P * D, T(0));
  for (int64_t n0 = 0; n0 < N; n0 += kXhatRows) {
    const int64_t rows = std::min(kXhatRows, N - n0);
    pre_coefficient_backward(L, params, grads, du, n0, rows, dX, dalpha_pre, cache);
    xhat_backward(L, params, n0, rows, dX, cache);
  }
  grads[L.alpha_pre] += dalpha_pre;
  // dφ += the sums over all tokens (gemm's bits with beta = 1), row by row of the stack.
  for (int64_t p = 0; p < P; ++p) {
    T* g = grads + (phi_row(L, params, S, D, p) - params);
    const T* sum = cache.dphi.data() + p * D;
    for (int64_t d = 0; d < D; ++d) g[d] += sum[d];
  }
  cache.stage = MhcCache<T>::Stage::Empty;
}

#define TROUPE_MHC_INSTANTIATE(T)                                                                  \
  template struct MhcCache<T>;                                                                     \
  template void mhc_pre_forward<T>(const ModelConfig&, const MhcLayout&, const T*, const T*,       \
                                   int64_t, T*, MhcCache<T>&);                                     \
  template void mhc_post_forward<T>(const ModelConfig&, const MhcLayout&, const T*, const T*,      \
                                    const T*, T*, MhcCache<T>&);                                   \
  template void mhc_post_backward<T>(const ModelConfig&, const MhcLayout&, const T*, T*, const T*, \
                                     T*, T*, MhcCache<T>&, bool);                                  \
  template void mhc_pre_backward<T>(const ModelConfig&, const MhcLayout&, const T*, T*, const T*,  \
                                    T*, MhcCache<T>&);

TROUPE_MHC_INSTANTIATE(float)
TROUPE_MHC_INSTANTIATE(double)

}  // namespace troupe::model
