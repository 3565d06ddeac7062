#include "model/mhc.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"

namespace troupe::model {

using kernels::Trans;

namespace {

// Dot product in 8 interleaved partial sums (lane = index mod 8) combined pairwise: the
// order depends on n alone, and the compiler can vectorise it.
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc[8] = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[c + l] * b[c + l];
  for (int l = 0; c + l < n; ++l) acc[l] += a[c + l] * b[c + l];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
void check_stage(MhcCache<T>& cache, typename MhcCache<T>::Stage expected, const char* what) {
  if (cache.stage == expected) return;
  cache.stage = MhcCache<T>::Stage::Empty;
  throw std::logic_error(what);
}

template <typename T>
void check_dims(const ModelConfig& cfg, const MhcCache<T>& cache, const char* where) {
  if (cfg.hc_mult == cache.S && cfg.d_model == cache.C && cfg.sinkhorn_iters == cache.iters)
    return;
  throw std::logic_error(std::string(where) +
                         ": config (hc_mult, d_model, sinkhorn_iters) differs from the one "
                         "given to mhc_pre_forward");
}

// Sizes every buffer for N tokens; grows capacity only, so a reused cache never allocates.
template <typename T>
void prepare(MhcCache<T>& c, const ModelConfig& cfg, int64_t N) {
  if (cfg.hc_mult < 1 || cfg.d_model < 1 || cfg.sinkhorn_iters < 1 || N < 0)
    throw std::invalid_argument("mhc_pre_forward: need hc_mult, d_model, sinkhorn_iters >= 1 "
                                "and N >= 0");
  c.N = N, c.S = cfg.hc_mult, c.C = cfg.d_model, c.iters = cfg.sinkhorn_iters;
  const int64_t S = c.S, D = c.S * c.C, P = c.P();
  c.x.resize(N * D);
  c.xhat.resize(N * D);
  c.rstd.resize(N);
  c.proj.resize(N * P);
  c.h_pre.resize(N * S);
  c.h_post.resize(N * S);
  c.sk_mat.resize(N * (2 * c.iters + 1) * S * S);
  c.sk_sum.resize(N * c.iters * 2 * S);
  c.f.resize(N * c.C);
  c.dproj.resize(N * P);
  c.dxhat.resize(N * D);
  c.scratch.resize(2 * S * S);
}

// htilde (S,S) -> mats (2·iters+1, S, S), sums (iters, 2, S). mats[0] = exp(H̃ − max H̃);
// round t writes its row-normalised matrix to mats[2t+1] (row sums to sums[t][0]) and
// its column-normalised one to mats[2t+2] (column sums to sums[t][1]).
template <typename T>
void sinkhorn_forward(const T* htilde, int64_t S, int64_t iters, T* mats, T* sums) {
  const int64_t SS = S * S;
  T mx = htilde[0];
  for (int64_t i = 1; i < SS; ++i) mx = std::max(mx, htilde[i]);
  for (int64_t i = 0; i < SS; ++i) mats[i] = std::exp(htilde[i] - mx);
  for (int64_t t = 0; t < iters; ++t) {
    const T* m = mats + 2 * t * SS;
    T* a = mats + (2 * t + 1) * SS;
    T* b = a + SS;
    T* rs = sums + 2 * t * S;
    T* cs = rs + S;
    for (int64_t i = 0; i < S; ++i) {  // a = diag(1/rs) m,  rs = m 1
      T r = 0;
      for (int64_t j = 0; j < S; ++j) r += m[i * S + j];
      rs[i] = r;
      for (int64_t j = 0; j < S; ++j) a[i * S + j] = m[i * S + j] / r;
    }
    for (int64_t j = 0; j < S; ++j) cs[j] = 0;  // b = a diag(1/cs),  cs = 1ᵀ a
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) cs[j] += a[i * S + j];
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) b[i * S + j] = a[i * S + j] / cs[j];
  }
}

// d (S,S): in dH_res, out dH̃ (overwritten). Undoes the rounds of sinkhorn_forward in
// reverse, from what it stored; colsum (S) is work space.
template <typename T>
void sinkhorn_backward(const T* mats, const T* sums, int64_t S, int64_t iters, T* d,
                       T* colsum) {
  const int64_t SS = S * S;
  for (int64_t t = iters - 1; t >= 0; --t) {
    const T* a = mats + (2 * t + 1) * SS;
    const T* b = a + SS;
    const T* rs = sums + 2 * t * S;
    const T* cs = rs + S;
    // b_ij = a_ij / cs_j  =>  da_ij = (db_ij − Σ_k db_kj b_kj) / cs_j
    for (int64_t j = 0; j < S; ++j) colsum[j] = 0;
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) colsum[j] += d[i * S + j] * b[i * S + j];
    for (int64_t i = 0; i < S; ++i)
      for (int64_t j = 0; j < S; ++j) d[i * S + j] = (d[i * S + j] - colsum[j]) / cs[j];
    // a_ij = m_ij / rs_i  =>  dm_ij = (da_ij − Σ_k da_ik a_ik) / rs_i
    for (int64_t i = 0; i < S; ++i) {
      T s = 0;
      for (int64_t j = 0; j < S; ++j) s += d[i * S + j] * a[i * S + j];
      for (int64_t j = 0; j < S; ++j) d[i * S + j] = (d[i * S + j] - s) / rs[i];
    }
  }
  // mats[0] = exp(H̃ − max H̃): dH̃ = dm ⊙ mats[0]. The max is held constant: the result
  // is invariant to a scale of mats[0], so its gradient through the max is zero.
  for (int64_t i = 0; i < SS; ++i) d[i] *= mats[i];
}

// Token n's coefficients from its projection: H_pre, H_post and the Sinkhorn sequence.
template <typename T>
void coefficients_forward(const MhcLayout& L, const T* params, int64_t n, MhcCache<T>& c) {
  const int64_t S = c.S, SS = S * S, P = c.P();
  const T* pr = c.proj.data() + n * P;
  const T a_pre = params[L.alpha_pre], a_post = params[L.alpha_post];
  const T a_res = params[L.alpha_res];
  T* hp = c.h_pre.data() + n * S;
  T* ho = c.h_post.data() + n * S;
  for (int64_t i = 0; i < S; ++i) {
    hp[i] = kernels::sigmoid<T>(a_pre * pr[i] + params[L.b_pre + i]);
    ho[i] = T(2) * kernels::sigmoid<T>(a_post * pr[S + i] + params[L.b_post + i]);
  }
  T* htilde = c.scratch.data();
  for (int64_t r = 0; r < SS; ++r) htilde[r] = a_res * pr[2 * S + r] + params[L.b_res + r];
  sinkhorn_forward(htilde, S, c.iters, c.sk_mat.data() + n * (2 * c.iters + 1) * SS,
                   c.sk_sum.data() + n * c.iters * 2 * S);
}

// proj (N,P) = x̂ (N,D) · [φ_pre; φ_post; φ_res]ᵀ, one GEMM per tensor.
template <typename T>
void project(const MhcLayout& L, const T* params, MhcCache<T>& c) {
  const int64_t S = c.S, D = c.S * c.C, P = c.P();
  const T* xh = c.xhat.data();
  T* pr = c.proj.data();
  kernels::gemm<T>(Trans::N, Trans::T, c.N, S, D, xh, D, params + L.phi_pre, D, T(0), pr, P);
  kernels::gemm<T>(Trans::N, Trans::T, c.N, S, D, xh, D, params + L.phi_post, D, T(0), pr + S,
                   P);
  kernels::gemm<T>(Trans::N, Trans::T, c.N, S * S, D, xh, D, params + L.phi_res, D, T(0),
                   pr + 2 * S, P);
}

// For the rows [off, off+rows) of proj: dφ (rows,D) += dprojᵀ · x̂, and
// dx̂ (N,D) = beta·dx̂ + dproj · φ.
template <typename T>
void projection_backward(const T* phi, T* dphi, int64_t off, int64_t rows, T beta,
                         MhcCache<T>& c) {
  const int64_t D = c.S * c.C, P = c.P();
  const T* dp = c.dproj.data() + off;
  kernels::gemm<T>(Trans::T, Trans::N, rows, D, c.N, dp, P, c.xhat.data(), D, T(1), dphi, D);
  kernels::gemm<T>(Trans::N, Trans::N, c.N, D, rows, dp, P, phi, D, beta, c.dxhat.data(), D);
}

// Token n: df = Σ_k H_post[k] dY_k (overwritten), dX_j += Σ_k H_res[k,j] dY_k.
template <typename T>
void streams_post_backward(const T* dY, T* dx, T* df, int64_t n, const MhcCache<T>& c) {
  const int64_t S = c.S, C = c.C;
  const T* ho = c.h_post.data() + n * S;
  const T* H = c.h_res(n);
  for (int64_t i = 0; i < C; ++i) df[i] = 0;
  for (int64_t k = 0; k < S; ++k)
    for (int64_t i = 0; i < C; ++i) df[i] += ho[k] * dY[k * C + i];
  for (int64_t j = 0; j < S; ++j)
    for (int64_t k = 0; k < S; ++k) {
      const T h = H[k * S + j];
      for (int64_t i = 0; i < C; ++i) dx[j * C + i] += h * dY[k * C + i];
    }
}

// Token n: the gradients of H_post and H_res, through σ and Sinkhorn to their logits;
// writes dproj's post and res columns, accumulates the b gradients, returns the α terms.
template <typename T>
void coefficients_post_backward(const MhcLayout& L, const T* params, T* grads, const T* dY,
                                int64_t n, MhcCache<T>& c, T& dalpha_post, T& dalpha_res) {
  const int64_t S = c.S, SS = S * S, C = c.C, P = c.P();
  const T* x = c.x.data() + n * S * C;
  const T* f = c.f.data() + n * C;
  const T* ho = c.h_post.data() + n * S;
  const T* pr = c.proj.data() + n * P;
  T* dp = c.dproj.data() + n * P;
  const T a_post = params[L.alpha_post], a_res = params[L.alpha_res];
  for (int64_t k = 0; k < S; ++k) {  // H_post = 2σ(z): dz = dH_post · H_post (1 − H_post/2)
    const T dz = dot(dY + k * C, f, C) * ho[k] * (T(1) - ho[k] / T(2));
    dalpha_post += dz * pr[S + k];
    grads[L.b_post + k] += dz;
    dp[S + k] = a_post * dz;
  }
  T* d = c.scratch.data();
  for (int64_t k = 0; k < S; ++k)  // dH_res[k,j] = dY_k · X_j
    for (int64_t j = 0; j < S; ++j) d[k * S + j] = dot(dY + k * C, x + j * C, C);
  sinkhorn_backward(c.sk_mat.data() + n * (2 * c.iters + 1) * SS,
                    c.sk_sum.data() + n * c.iters * 2 * S, S, c.iters, d, d + SS);
  for (int64_t r = 0; r < SS; ++r) {  // H̃ = α_res · proj_res + b_res
    dalpha_res += d[r] * pr[2 * S + r];
    grads[L.b_res + r] += d[r];
    dp[2 * S + r] = a_res * d[r];
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
  std::copy(X, X + N * D, cache.x.data());
  // x̂ = vec(X) / sqrt(mean(vec(X)²) + eps), no weight
  kernels::rmsnorm_forward<T>(X, nullptr, T(cfg.rms_norm_eps), cache.xhat.data(),
                              cache.rstd.data(), N, D);
  project(L, params, cache);
  for (int64_t n = 0; n < N; ++n) {
    coefficients_forward(L, params, n, cache);
    // u = Σ_j H_pre[j] X_j
    const T* x = X + n * D;
    const T* hp = cache.h_pre.data() + n * S;
    T* un = u + n * C;
    for (int64_t i = 0; i < C; ++i) un[i] = 0;
    for (int64_t j = 0; j < S; ++j)
      for (int64_t i = 0; i < C; ++i) un[i] += hp[j] * x[j * C + i];
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
  std::copy(f, f + N * C, cache.f.data());
  for (int64_t n = 0; n < N; ++n) {
    // X'_k = Σ_j H_res[k,j] X_j + H_post[k] · f
    const T* x = X + n * D;
    const T* fn = f + n * C;
    const T* H = cache.h_res(n);
    const T* ho = cache.h_post.data() + n * S;
    for (int64_t k = 0; k < S; ++k) {
      T* y = Xout + n * D + k * C;
      for (int64_t i = 0; i < C; ++i) y[i] = 0;
      for (int64_t j = 0; j < S; ++j)
        for (int64_t i = 0; i < C; ++i) y[i] += H[k * S + j] * x[j * C + i];
      for (int64_t i = 0; i < C; ++i) y[i] += ho[k] * fn[i];
    }
  }
  cache.stage = MhcCache<T>::Stage::PostForward;
}

template <typename T>
void mhc_post_backward(const ModelConfig& cfg, const MhcLayout& L, const T* params, T* grads,
                       const T* dXout, T* dX, T* df, MhcCache<T>& cache) {
  check_stage(cache, MhcCache<T>::Stage::PostForward,
              "mhc_post_backward: expected right after mhc_post_forward");
  check_dims(cfg, cache, "mhc_post_backward");
  const int64_t N = cache.N, S = cache.S, C = cache.C, D = S * C;
  T dalpha_post = 0, dalpha_res = 0;
  for (int64_t n = 0; n < N; ++n) {
    streams_post_backward(dXout + n * D, dX + n * D, df + n * C, n, cache);
    coefficients_post_backward(L, params, grads, dXout + n * D, n, cache, dalpha_post,
                               dalpha_res);
  }
  grads[L.alpha_post] += dalpha_post;
  grads[L.alpha_res] += dalpha_res;
  // dφ_post, dφ_res += dprojᵀ x̂;  dx̂ = dproj_post φ_post + dproj_res φ_res
  projection_backward(params + L.phi_post, grads + L.phi_post, S, S, T(0), cache);
  projection_backward(params + L.phi_res, grads + L.phi_res, 2 * S, S * S, T(1), cache);
  cache.stage = MhcCache<T>::Stage::PostBackward;
}

template <typename T>
void mhc_pre_backward(const ModelConfig& cfg, const MhcLayout& L, const T* params, T* grads,
                      const T* du, T* dX, MhcCache<T>& cache) {
  check_stage(cache, MhcCache<T>::Stage::PostBackward,
              "mhc_pre_backward: expected right after mhc_post_backward");
  check_dims(cfg, cache, "mhc_pre_backward");
  const int64_t N = cache.N, S = cache.S, C = cache.C, D = S * C, P = cache.P();
  const T a_pre = params[L.alpha_pre];
  T dalpha_pre = 0;
  for (int64_t n = 0; n < N; ++n) {
    // u = Σ_j H_pre[j] X_j:  dX_j += H_pre[j] du;  dH_pre[j] = du · X_j
    const T* dun = du + n * C;
    const T* x = cache.x.data() + n * D;
    const T* hp = cache.h_pre.data() + n * S;
    const T* pr = cache.proj.data() + n * P;
    T* dx = dX + n * D;
    T* dp = cache.dproj.data() + n * P;
    for (int64_t j = 0; j < S; ++j) {
      for (int64_t i = 0; i < C; ++i) dx[j * C + i] += hp[j] * dun[i];
      // H_pre = σ(z): dz = dH_pre · H_pre (1 − H_pre)
      const T dz = dot(dun, x + j * C, C) * hp[j] * (T(1) - hp[j]);
      dalpha_pre += dz * pr[j];
      grads[L.b_pre + j] += dz;
      dp[j] = a_pre * dz;
    }
  }
  grads[L.alpha_pre] += dalpha_pre;
  projection_backward(params + L.phi_pre, grads + L.phi_pre, 0, S, T(1), cache);
  // x̂ = RMSNorm(vec(X)): dX += rstd·dx̂ − X·rstd³/D·(dx̂·X)
  kernels::rmsnorm_backward<T>(cache.dxhat.data(), cache.x.data(), nullptr, cache.rstd.data(),
                               dX, nullptr, N, D);
  cache.stage = MhcCache<T>::Stage::Empty;
}

#define TROUPE_MHC_INSTANTIATE(T)                                                             \
  template struct MhcCache<T>;                                                                \
  template void mhc_pre_forward<T>(const ModelConfig&, const MhcLayout&, const T*, const T*,  \
                                   int64_t, T*, MhcCache<T>&);                                \
  template void mhc_post_forward<T>(const ModelConfig&, const MhcLayout&, const T*, const T*, \
                                    const T*, T*, MhcCache<T>&);                              \
  template void mhc_post_backward<T>(const ModelConfig&, const MhcLayout&, const T*, T*,      \
                                     const T*, T*, T*, MhcCache<T>&);                         \
  template void mhc_pre_backward<T>(const ModelConfig&, const MhcLayout&, const T*, T*,       \
                                    const T*, T*, MhcCache<T>&);

TROUPE_MHC_INSTANTIATE(float)
TROUPE_MHC_INSTANTIATE(double)

}  // namespace troupe::model
