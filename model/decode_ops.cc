#include "model/decode_ops.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/linear.h"

namespace troupe::model {

namespace k = troupe::kernels;

namespace {

template <typename T>
T* sized(std::vector<T>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
  return v.data();
}

// c.q (n,H·DQ) <- the new positions' queries: RMSNorm_q(u · W_q_aᵀ) · W_q_bᵀ, RoPE on q_pe.
template <typename T>
void queries_forward(const ModelConfig& cfg, const MlaDims& d, const MlaLayout& L, const T* P,
                     const T* u, int64_t n, MlaKvCache<T>& c) {
  const int64_t QW = d.H * d.DQ;
  T* q_a = sized(c.q_a, n * d.QL);
  T* c_q = sized(c.c_q, n * d.QL);
  T* q = sized(c.q, n * QW);
  linear_fwd(cfg, u, P + L.q_a, q_a, n, d.C, d.QL);
  k::rmsnorm_forward(q_a, P + L.q_a_norm, T(cfg.rms_norm_eps), c_q, sized(c.q_rstd, n), n, d.QL);
  linear_fwd(cfg, c_q, P + L.q_b, q, n, d.QL, QW);
  for (int64_t h = 0; h < d.H; ++h)
    k::rope_forward(q + h * d.DQ + d.DN, n, d.DR, QW, c.pos.data(), T(cfg.rope_theta));
}

// Appends the new positions' latents: [c_kv | k_pe] = u · W_kv_aᵀ; c_kv ← RMSNorm_kv(c_kv)
// into c.c_kv rows len…len+n−1; RoPE(k_pe) into c.k_pe rows len…len+n−1.
template <typename T>
void latents_append(const ModelConfig& cfg, const MlaDims& d, const MlaLayout& L, const T* P,
                    const T* u, int64_t n, MlaKvCache<T>& c) {
  const int64_t KVA = d.KL + d.DR;
  T* kv_a = sized(c.kv_a, n * KVA);
  T* rstd = sized(c.kv_rstd, n);
  linear_fwd(cfg, u, P + L.kv_a, kv_a, n, d.C, KVA);
  for (int64_t i = 0; i < n; ++i) {
    const T* row = kv_a + i * KVA;
    k::rmsnorm_forward(row, P + L.kv_a_norm, T(cfg.rms_norm_eps),
                       c.c_kv.data() + (c.len + i) * d.KL, rstd + i, 1, d.KL);
    std::copy(row + d.KL, row + KVA, c.k_pe.data() + (c.len + i) * d.DR);
  }
  k::rope_forward(c.k_pe.data() + c.len * d.DR, n, d.DR, d.DR, c.pos.data(), T(cfg.rope_theta));
}

// One head over the cache: queries q (n,DQ) stride H·DQ at positions first…first+n−1, keys
// [k_nope | k_pe] of positions 0…total−1 (kv stride H·DKV, k_pe stride DR) -> o (n,DV)
// stride H·DV. kh (total,DQ) and probs (n,total) are scratch.
template <typename T>
void head_attend(const MlaDims& d, int64_t n, int64_t first, int64_t total, const T* q, const T* kv,
                 const T* k_pe, T* kh, T* probs, T* o) {
  using k::Trans;
  const int64_t kvs = d.H * d.DKV;
  for (int64_t t = 0; t < total; ++t) {
    std::copy(kv + t * kvs, kv + t * kvs + d.DN, kh + t * d.DQ);
    std::copy(k_pe + t * d.DR, k_pe + (t + 1) * d.DR, kh + t * d.DQ + d.DN);
  }
  // s[i, t'] = q[i]·k[t'];  p = softmax over t' ≤ first+i of s·scale (as mla.cc's core)
  k::gemm<T>(Trans::N, Trans::T, n, total, d.DQ, q, d.H * d.DQ, kh, d.DQ, T(0), probs, total);
  const T scale = T(1) / std::sqrt(T(d.DQ));
  for (int64_t i = 0; i < n; ++i) {
    T* p = probs + i * total;
    const int64_t t = first + i;
    std::fill(p + t + 1, p + total, T(0));
    for (int64_t j = 0; j <= t; ++j) p[j] *= scale;
    k::softmax_rows(p, 1, t + 1);
  }
  // o[i] = Σ_t' p[i, t'] v[t']
  k::gemm<T>(Trans::N, Trans::N, n, d.DV, total, probs, total, kv + d.DN, kvs, T(0), o, d.H * d.DV);
}

}  // namespace

template <typename T>
void MlaKvCache<T>::reset(const ModelConfig& cfg, int64_t capacity_positions) {
  const MlaDims d(cfg);
  len = 0;
  capacity = capacity_positions;
  c_kv.assign(static_cast<size_t>(capacity * d.KL), T(0));
  k_pe.assign(static_cast<size_t>(capacity * d.DR), T(0));
}

template <typename T>
void mla_append_forward(const ModelConfig& cfg, const MlaLayout& L, const T* P, const T* u,
                        int64_t n, T* out, MlaKvCache<T>& c) {
  const MlaDims d(cfg);
  if (n <= 0) throw std::invalid_argument("mla_append_forward: needs at least one position");
  if (c.len + n > c.capacity)
    throw std::length_error("mla_append_forward: positions " + std::to_string(c.len) + "…" +
                            std::to_string(c.len + n - 1) + " exceed the cache's capacity of " +
                            std::to_string(c.capacity) + " positions");
  c.pos.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) c.pos[i] = static_cast<int32_t>(c.len + i);
  queries_forward(cfg, d, L, P, u, n, c);
  latents_append(cfg, d, L, P, u, n, c);
  const int64_t first = c.len, total = c.len + n;
  c.len = total;
  // kv (total,H·(DN+DV)) = c_kv · W_kv_bᵀ, re-expanded from the cached latents
  T* kv = sized(c.kv, total * d.H * d.DKV);
  linear_fwd(cfg, c.c_kv.data(), P + L.kv_b, kv, total, d.KL, d.H * d.DKV);
  T* kh = sized(c.kh, total * d.DQ);
  T* probs = sized(c.probs, n * total);
  T* attn = sized(c.attn, n * d.H * d.DV);
  for (int64_t h = 0; h < d.H; ++h)
    head_attend(d, n, first, total, c.q.data() + h * d.DQ, kv + h * d.DKV, c.k_pe.data(), kh, probs,
                attn + h * d.DV);
  // out (n,C) = attn (n,H·DV) · W_oᵀ
  linear_fwd(cfg, attn, P + L.o, out, n, d.H * d.DV, d.C);
}

template <typename T>
void EngramDecodeState<T>::reset(const ModelConfig& cfg) {
  history = (cfg.engram_conv_kernel - 1) * cfg.engram_conv_dilation;
  conv_in.assign(static_cast<size_t>(engram_streams(cfg) * history * cfg.d_model), T(0));
}

namespace {

// st.e (n,M) <- the table rows of the last n positions of tokens; hashing reads the
// max(order)−1 tokens before them (or starts at position 0, BOS before it).
template <typename T>
void engram_rows(const ModelConfig& cfg, const EngramLayout& L, const EngramStore<T>& store,
                 const std::vector<int32_t>& tokens, int64_t n, EngramDecodeState<T>& st) {
  const int64_t len = static_cast<int64_t>(tokens.size());
  const int64_t J = static_cast<int64_t>(L.tables.size()), D = cfg.engram_head_dim, M = J * D;
  const int64_t max_order = *std::max_element(cfg.engram_orders.begin(), cfg.engram_orders.end());
  const int64_t start = std::max<int64_t>(0, len - n - (max_order - 1)), w = len - start;
  int64_t* ids = sized(st.ids, J * w);
  engram_row_ids(cfg, L.seed, L.layer, L.tables, tokens.data() + start, 1, w, ids);
  T* rows = sized(st.rows, n * D);
  T* e = sized(st.e, n * M);
  for (int64_t j = 0; j < J; ++j) {
    store.lookup(L.first_table + j, ids + j * w + (w - n), n, rows);
    for (int64_t i = 0; i < n; ++i) std::copy(rows + i * D, rows + (i + 1) * D, e + i * M + j * D);
  }
}

// Stream m: st.vt (n,C) = α_m v, α_m = σ(RMSNorm_q(X_m)·RMSNorm_k(W_K^m e) / sqrt(C)), and
// st.cn (n,C) = RMSNorm_c(ṽ_m), as engram_forward computes them.
template <typename T>
void engram_gate(const ModelConfig& cfg, const EngramLayout& L, const T* P, const T* X, int64_t n,
                 int64_t m, EngramDecodeState<T>& st) {
  const int64_t C = cfg.d_model, S = engram_streams(cfg), M = int64_t(st.e.size()) / n;
  const T eps = T(cfg.rms_norm_eps), inv_sqrt_c = T(1) / std::sqrt(T(C));
  T *x = sized(st.x, n * C), *qn = sized(st.qn, n * C), *kk = sized(st.k, n * C);
  T *kn = sized(st.kn, n * C), *vt = sized(st.vt, n * C), *cn = sized(st.cn, n * C);
  for (int64_t i = 0; i < n; ++i)
    std::copy(X + (i * S + m) * C, X + (i * S + m + 1) * C, x + i * C);
  k::rmsnorm_forward(x, P + L.norm_q[m], eps, qn, sized(st.rq, n), n, C);
  k::linear_forward(st.e.data(), P + L.w_k[m], kk, n, M, C);
  k::rmsnorm_forward(kk, P + L.norm_k[m], eps, kn, sized(st.rk, n), n, C);
  for (int64_t i = 0; i < n; ++i) {
    T dot = 0;
    for (int64_t ch = 0; ch < C; ++ch) dot += qn[i * C + ch] * kn[i * C + ch];
    const T a = k::sigmoid(dot * inv_sqrt_c);
    for (int64_t ch = 0; ch < C; ++ch) vt[i * C + ch] = a * st.v[i * C + ch];
  }
  k::rmsnorm_forward(vt, P + L.norm_c[m], eps, cn, sized(st.rc, n), n, C);
}

}  // namespace

template <typename T>
void engram_append_forward(const ModelConfig& cfg, const EngramLayout& L, const T* P,
                           const EngramStore<T>& store, const std::vector<int32_t>& tokens,
                           int64_t n, const T* X, T* Xout, EngramDecodeState<T>& st) {
  const int64_t C = cfg.d_model, S = engram_streams(cfg), Hc = st.history;
  const int64_t Kc = cfg.engram_conv_kernel, dil = cfg.engram_conv_dilation;
  if (n <= 0 || n > static_cast<int64_t>(tokens.size()))
    throw std::invalid_argument("engram_append_forward: n must be in [1, tokens]");
  engram_rows(cfg, L, store, tokens, n, st);
  const int64_t M = static_cast<int64_t>(st.e.size()) / n;
  k::linear_forward(st.e.data(), P + L.w_v, sized(st.v, n * C), n, M, C);
  T* z = sized(st.z, (Hc + n) * C);
  T* conv = sized(st.conv, (Hc + n) * C);
  for (int64_t m = 0; m < S; ++m) {
    engram_gate(cfg, L, P, X, n, m, st);
    // z = [the last Hc positions' conv inputs | the new ones]; Y = SiLU(conv(z)) + ṽ
    T* kept = st.conv_in.data() + m * Hc * C;
    std::copy(kept, kept + Hc * C, z);
    std::copy(st.cn.begin(), st.cn.end(), z + Hc * C);
    engram_conv_forward(P + L.conv + m * C * Kc, z, conv, int64_t(1), Hc + n, C, Kc, dil);
    for (int64_t i = 0; i < n; ++i) {
      const T* xin = X + (i * S + m) * C;
      T* xo = Xout + (i * S + m) * C;
      const T* cv = conv + (Hc + i) * C;
      for (int64_t ch = 0; ch < C; ++ch) xo[ch] = xin[ch] + (k::silu(cv[ch]) + st.vt[i * C + ch]);
    }
    std::copy(z + n * C, z + (Hc + n) * C, kept);
  }
}

#define TROUPE_DECODE_OPS_INSTANTIATE(T)                                                        \
  template struct MlaKvCache<T>;                                                                \
  template struct EngramDecodeState<T>;                                                         \
  template void mla_append_forward<T>(const ModelConfig&, const MlaLayout&, const T*, const T*, \
                                      int64_t, T*, MlaKvCache<T>&);                             \
  template void engram_append_forward<T>(const ModelConfig&, const EngramLayout&, const T*,     \
                                         const EngramStore<T>&, const std::vector<int32_t>&,    \
                                         int64_t, const T*, T*, EngramDecodeState<T>&);
TROUPE_DECODE_OPS_INSTANTIATE(float)
TROUPE_DECODE_OPS_INSTANTIATE(double)
#undef TROUPE_DECODE_OPS_INSTANTIATE

}  // namespace troupe::model
