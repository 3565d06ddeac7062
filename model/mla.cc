#include "model/mla.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/linear.h"

namespace troupe::model {

namespace {

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("mla: ") + what);
}

// Queries per block of the attention core: a block of queries [t0, t1) needs keys [0, t1)
// only, so blocking skips most of the masked upper triangle while every product stays a
// gemm. Bits do not depend on it: the skipped terms are exact zeros at the ends of a sum.
constexpr int64_t kQueryBlock = 32;

// doc (T) or null -> first (T): the first position of the row that query t may see. Keys
// in [first[t], t] whose doc differs from doc[t] are masked one by one in the core.
void key_first_positions(const int32_t* doc, int64_t Tlen, int32_t* first) {
  for (int64_t t = 0; t < Tlen; ++t) {
    int64_t lo = 0;
    if (doc)
      while (doc[lo] != doc[t]) ++lo;
    first[t] = static_cast<int32_t>(lo);
  }
}

// kh (T,DQ) = [k_nope | k_pe] of one head, gathered from kv (stride H·DKV) and k_pe.
template <typename T>
void gather_keys(const MlaDims& d, int64_t Tlen, const T* kv, const T* k_pe, T* kh) {
  for (int64_t t = 0; t < Tlen; ++t) {
    std::copy(kv + t * d.H * d.DKV, kv + t * d.H * d.DKV + d.DN, kh + t * d.DQ);
    std::copy(k_pe + t * d.DR, k_pe + (t + 1) * d.DR, kh + t * d.DQ + d.DN);
  }
}

// Row t of the scores (T) -> probabilities in place: scale, mask, softmax over the keys
// [lo, t]; every other entry exactly 0.
template <typename T>
void softmax_query(T* p, int64_t Tlen, int64_t t, int64_t lo, const int32_t* doc, T scale) {
  std::fill(p, p + lo, T(0));
  std::fill(p + t + 1, p + Tlen, T(0));
  for (int64_t j = lo; j <= t; ++j) p[j] *= scale;
  if (doc)
    for (int64_t j = lo; j < t; ++j)
      if (doc[j] != doc[t]) p[j] = -std::numeric_limits<T>::infinity();
  kernels::softmax_rows(p + lo, 1, t - lo + 1);  // -inf -> probability exactly 0
}

// One (row, head) of the attention core. Strided views into the token-major buffers:
// q (T,DQ) stride H·DQ, kv (T,[k_nope|v]) stride H·DKV, k_pe (T,DR) stride DR,
// o (T,DV) stride H·DV (overwritten); probs (T,T) overwritten; kh (T,DQ) scratch.
template <typename T>
void attention_head_forward(const MlaDims& d, int64_t Tlen, const T* q, const T* kv, const T* k_pe,
                            const int32_t* doc, const int32_t* first, T* kh, T* probs, T* o) {
  using kernels::Trans;
  const int64_t qs = d.H * d.DQ, kvs = d.H * d.DKV, os = d.H * d.DV;
  const T scale = T(1) / std::sqrt(T(d.DQ));
  gather_keys(d, Tlen, kv, k_pe, kh);
  for (int64_t t0 = 0; t0 < Tlen; t0 += kQueryBlock) {
    const int64_t t1 = std::min(Tlen, t0 + kQueryBlock), m = t1 - t0;
    T* p = probs + t0 * Tlen;
    // s[t, t'] = q[t]·k[t'] for t in [t0, t1), t' in [0, t1)
    kernels::gemm<T>(Trans::N, Trans::T, m, t1, d.DQ, q + t0 * qs, qs, kh, d.DQ, T(0), p, Tlen);
    for (int64_t t = t0; t < t1; ++t)
      softmax_query(probs + t * Tlen, Tlen, t, first[t], doc, scale);
    // o[t] = Σ_t' p[t, t'] v[t']  (p is 0 beyond t)
    kernels::gemm<T>(Trans::N, Trans::N, m, d.DV, t1, p, Tlen, kv + d.DN, kvs, T(0), o + t0 * os,
                     os);
  }
}

// Backward of attention_head_forward. d_o (T,DV) stride H·DV. Writes dq (T,DQ) stride H·DQ
// and dkv (T,[dk_nope|dv]) stride H·DKV; adds into dk_pe (T,DR), which all heads share
// (heads add in order). kh, dkh (T,DQ) and dp, ds (T,T) are scratch.
template <typename T>
void attention_head_backward(const MlaDims& d, int64_t Tlen, const T* q, const T* kv, const T* k_pe,
                             const int32_t* first, const T* probs, const T* d_o, T* kh, T* dkh,
                             T* dp, T* ds, T* dq, T* dkv, T* dk_pe) {
  using kernels::Trans;
  const int64_t qs = d.H * d.DQ, kvs = d.H * d.DKV, os = d.H * d.DV;
  const T scale = T(1) / std::sqrt(T(d.DQ));
  gather_keys(d, Tlen, kv, k_pe, kh);
  for (int64_t t0 = 0; t0 < Tlen; t0 += kQueryBlock) {
    const int64_t t1 = std::min(Tlen, t0 + kQueryBlock), m = t1 - t0;
    // o[t] = Σ_t' p[t, t'] v[t']  =>  dp[t, t'] = do[t]·v[t']
    kernels::gemm<T>(Trans::N, Trans::T, m, t1, d.DV, d_o + t0 * os, os, kv + d.DN, kvs, T(0),
                     dp + t0 * Tlen, Tlen);
    // p = softmax(s·scale)  =>  ds = scale · p ⊙ (dp − Σ dp⊙p); exactly 0 where masked
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t lo = first[t];
      T* dst = ds + t * Tlen;
      std::fill(dst, dst + Tlen, T(0));
      kernels::softmax_rows_backward(probs + t * Tlen + lo, dp + t * Tlen + lo, dst + lo, 1,
                                     t - lo + 1);
      for (int64_t j = lo; j <= t; ++j) dst[j] *= scale;
    }
    // s[t, t'] = q[t]·k[t']  =>  dq[t] = Σ_t' ds[t, t'] k[t']  (ds is 0 beyond t)
    kernels::gemm<T>(Trans::N, Trans::N, m, d.DQ, t1, ds + t0 * Tlen, Tlen, kh, d.DQ, T(0),
                     dq + t0 * qs, qs);
  }
  for (int64_t k0 = 0; k0 < Tlen; k0 += kQueryBlock) {
    const int64_t k1 = std::min(Tlen, k0 + kQueryBlock), m = k1 - k0, n = Tlen - k0;
    // dk[t'] = Σ_t ds[t, t'] q[t],  dv[t'] = Σ_t p[t, t'] do[t]  (both 0 for t < t')
    kernels::gemm<T>(Trans::T, Trans::N, m, d.DQ, n, ds + k0 * Tlen + k0, Tlen, q + k0 * qs, qs,
                     T(0), dkh + k0 * d.DQ, d.DQ);
    kernels::gemm<T>(Trans::T, Trans::N, m, d.DV, n, probs + k0 * Tlen + k0, Tlen, d_o + k0 * os,
                     os, T(0), dkv + k0 * kvs + d.DN, kvs);
  }
  // k = [k_nope | k_pe]: k_nope is this head's, k_pe is shared by all heads
  for (int64_t t = 0; t < Tlen; ++t) {
    std::copy(dkh + t * d.DQ, dkh + t * d.DQ + d.DN, dkv + t * kvs);
    for (int64_t i = 0; i < d.DR; ++i) dk_pe[t * d.DR + i] += dkh[t * d.DQ + d.DN + i];
  }
}

// Sizes every cache buffer for a call of N = R·T tokens (no reallocation when unchanged).
template <typename T>
void size_cache(const MlaDims& d, int64_t R, int64_t Tlen, MlaCache<T>& c) {
  const int64_t N = R * Tlen;
  c.R = R;
  c.Tlen = Tlen;
  c.key_first.resize(N);
  c.q_a.resize(N * d.QL);
  c.q_rstd.resize(N);
  c.c_q.resize(N * d.QL);
  c.q.resize(N * d.H * d.DQ);
  c.kv_a.resize(N * (d.KL + d.DR));
  c.kv_rstd.resize(N);
  c.c_kv.resize(N * d.KL);
  c.k_pe.resize(N * d.DR);
  c.kv.resize(N * d.H * d.DKV);
  c.probs.resize(R * d.H * Tlen * Tlen);
  c.attn.resize(N * d.H * d.DV);
  c.kh.resize(Tlen * d.DQ);
}

// Scratch of n values, zero-filled or as left (storage reused across calls).
template <typename T>
T* zeroed(std::vector<T>& v, int64_t n) {
  v.assign(n, T(0));
  return v.data();
}
template <typename T>
T* sized(std::vector<T>& v, int64_t n) {
  v.resize(n);
  return v.data();
}

}  // namespace

MlaLayout MlaLayout::from(const ParamTable& table, const std::string& prefix) {
  auto info = [&](const char* name) -> const ParamInfo& { return table.at(prefix + name); };
  const ParamInfo &q_a = info("q_a_proj.weight"), &q_a_norm = info("q_a_layernorm.weight"),
                  &q_b = info("q_b_proj.weight"), &kv_a = info("kv_a_proj_with_mqa.weight"),
                  &kv_a_norm = info("kv_a_layernorm.weight"), &kv_b = info("kv_b_proj.weight"),
                  &o = info("o_proj.weight");
  // The chain u -> q_a -> q_b and u -> kv_a -> kv_b -> o must fit together.
  require(q_a.shape.size() == 2 && q_b.shape.size() == 2 && kv_a.shape.size() == 2 &&
              kv_b.shape.size() == 2 && o.shape.size() == 2,
          "projection weights must be 2-D");
  require(q_a_norm.numel == q_a.shape[0] && q_b.shape[1] == q_a.shape[0],
          "q_a_proj / q_a_layernorm / q_b_proj widths differ");
  require(kv_a.shape[1] == q_a.shape[1] && o.shape[0] == q_a.shape[1],
          "kv_a_proj_with_mqa / o_proj do not match q_a_proj's d_model");
  require(kv_b.shape[1] == kv_a_norm.numel && kv_a.shape[0] > kv_a_norm.numel,
          "kv_a_layernorm / kv_b_proj widths differ");
  return MlaLayout{q_a.offset,       q_a_norm.offset, q_b.offset, kv_a.offset,
                   kv_a_norm.offset, kv_b.offset,     o.offset};
}

template <typename T>
void mla_forward(const ModelConfig& cfg, const MlaLayout& L, const T* params, const T* u, int64_t R,
                 int64_t Tlen, const int32_t* pos, const int32_t* doc, T* out, MlaCache<T>& c) {
  const MlaDims d(cfg);
  require(R > 0 && Tlen > 0, "forward needs R > 0 and Tlen > 0");
  require(d.DR % 2 == 0, "qk_rope_head_dim must be even");
  const int64_t N = R * Tlen, QW = d.H * d.DQ, KVA = d.KL + d.DR;
  const T eps = T(cfg.rms_norm_eps), theta = T(cfg.rope_theta);
  size_cache(d, R, Tlen, c);
  c.u.assign(u, u + N * d.C);
  c.pos.assign(pos, pos + N);
  for (int64_t r = 0; r < R; ++r)
    key_first_positions(doc ? doc + r * Tlen : nullptr, Tlen, c.key_first.data() + r * Tlen);

  // c_q (N,QL) = RMSNorm_q(u · W_q_aᵀ);  q (N,H·DQ) = c_q · W_q_bᵀ, RoPE on each q_pe
  linear_fwd(cfg, u, params + L.q_a, c.q_a.data(), N, d.C, d.QL);
  kernels::rmsnorm_forward(c.q_a.data(), params + L.q_a_norm, eps, c.c_q.data(), c.q_rstd.data(), N,
                           d.QL);
  linear_fwd(cfg, c.c_q.data(), params + L.q_b, c.q.data(), N, d.QL, QW);
  for (int64_t h = 0; h < d.H; ++h)
    kernels::rope_forward(c.q.data() + h * d.DQ + d.DN, N, d.DR, QW, pos, theta);

  // [c_kv | k_pe] (N,KL+DR) = u · W_kv_aᵀ;  c_kv ← RMSNorm_kv(c_kv);  RoPE on k_pe
  linear_fwd(cfg, u, params + L.kv_a, c.kv_a.data(), N, d.C, KVA);
  for (int64_t n = 0; n < N; ++n) {
    const T* row = c.kv_a.data() + n * KVA;
    kernels::rmsnorm_forward(row, params + L.kv_a_norm, eps, c.c_kv.data() + n * d.KL,
                             c.kv_rstd.data() + n, 1, d.KL);
    std::copy(row + d.KL, row + KVA, c.k_pe.data() + n * d.DR);
  }
  kernels::rope_forward(c.k_pe.data(), N, d.DR, d.DR, pos, theta);
  // kv (N,H·(DN+DV)) = c_kv · W_kv_bᵀ
  linear_fwd(cfg, c.c_kv.data(), params + L.kv_b, c.kv.data(), N, d.KL, d.H * d.DKV);

  for (int64_t r = 0; r < R; ++r)
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t n0 = r * Tlen;
      attention_head_forward(
          d, Tlen, c.q.data() + n0 * QW + h * d.DQ, c.kv.data() + n0 * d.H * d.DKV + h * d.DKV,
          c.k_pe.data() + n0 * d.DR, doc ? doc + n0 : nullptr, c.key_first.data() + n0, c.kh.data(),
          c.probs.data() + (r * d.H + h) * Tlen * Tlen, c.attn.data() + n0 * d.H * d.DV + h * d.DV);
    }
  // out (N,C) = attn (N,H·DV) · W_oᵀ
  linear_fwd(cfg, c.attn.data(), params + L.o, out, N, d.H * d.DV, d.C);
}

template <typename T>
void mla_backward(const ModelConfig& cfg, const MlaLayout& L, const T* params, T* grads,
                  const T* dout, T* du, const MlaCache<T>& c) {
  const MlaDims d(cfg);
  const int64_t R = c.R, Tlen = c.Tlen, N = R * Tlen, QW = d.H * d.DQ, KVA = d.KL + d.DR;
  require(N > 0, "backward before forward");
  require(static_cast<int64_t>(c.q.size()) == N * QW &&
              static_cast<int64_t>(c.kv.size()) == N * d.H * d.DKV &&
              static_cast<int64_t>(c.u.size()) == N * d.C,
          "cache was filled with another config");
  const T theta = T(cfg.rope_theta);
  MlaBackwardScratch<T>& s = c.scratch;

  // out = attn · W_oᵀ
  T* d_attn = zeroed(s.d_attn, N * d.H * d.DV);
  linear_bwd(cfg, dout, c.attn.data(), params + L.o, d_attn, grads + L.o, N, d.H * d.DV, d.C);

  // attention core, per (row, head)
  T* dq = sized(s.dq, N * QW);             // written whole, head by head
  T* dkv = sized(s.dkv, N * d.H * d.DKV);  // likewise
  T* dk_pe = zeroed(s.dk_pe, N * d.DR);    // heads add into it
  T* kh = sized(s.kh, Tlen * d.DQ);
  T* dkh = sized(s.dkh, Tlen * d.DQ);
  T* dp = sized(s.dp, Tlen * Tlen);
  T* ds = sized(s.ds, Tlen * Tlen);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t n0 = r * Tlen;
      attention_head_backward(d, Tlen, c.q.data() + n0 * QW + h * d.DQ,
                              c.kv.data() + n0 * d.H * d.DKV + h * d.DKV, c.k_pe.data() + n0 * d.DR,
                              c.key_first.data() + n0, c.probs.data() + (r * d.H + h) * Tlen * Tlen,
                              d_attn + n0 * d.H * d.DV + h * d.DV, kh, dkh, dp, ds,
                              dq + n0 * QW + h * d.DQ, dkv + n0 * d.H * d.DKV + h * d.DKV,
                              dk_pe + n0 * d.DR);
    }

  // q = RoPE(c_q · W_q_bᵀ);  c_q = RMSNorm_q(q_a);  q_a = u · W_q_aᵀ
  for (int64_t h = 0; h < d.H; ++h)
    kernels::rope_backward(dq + h * d.DQ + d.DN, N, d.DR, QW, c.pos.data(), theta);
  T* dc_q = zeroed(s.dc_q, N * d.QL);
  linear_bwd(cfg, dq, c.c_q.data(), params + L.q_b, dc_q, grads + L.q_b, N, d.QL, QW);
  T* dq_a = zeroed(s.dq_a, N * d.QL);
  kernels::rmsnorm_backward(dc_q, c.q_a.data(), params + L.q_a_norm, c.q_rstd.data(), dq_a,
                            grads + L.q_a_norm, N, d.QL);
  linear_bwd(cfg, dq_a, c.u.data(), params + L.q_a, du, grads + L.q_a, N, d.C, d.QL);

  // kv = c_kv · W_kv_bᵀ;  c_kv = RMSNorm_kv(kv_a[:, :KL]);  k_pe = RoPE(kv_a[:, KL:])
  T* dc_kv = zeroed(s.dc_kv, N * d.KL);
  linear_bwd(cfg, dkv, c.c_kv.data(), params + L.kv_b, dc_kv, grads + L.kv_b, N, d.KL, d.H * d.DKV);
  kernels::rope_backward(dk_pe, N, d.DR, d.DR, c.pos.data(), theta);
  T* dkv_a = zeroed(s.dkv_a, N * KVA);
  for (int64_t n = 0; n < N; ++n) {
    kernels::rmsnorm_backward(dc_kv + n * d.KL, c.kv_a.data() + n * KVA, params + L.kv_a_norm,
                              c.kv_rstd.data() + n, dkv_a + n * KVA, grads + L.kv_a_norm, 1, d.KL);
    std::copy(dk_pe + n * d.DR, dk_pe + (n + 1) * d.DR, dkv_a + n * KVA + d.KL);
  }
  // kv_a = u · W_kv_aᵀ
  linear_bwd(cfg, dkv_a, c.u.data(), params + L.kv_a, du, grads + L.kv_a, N, d.C, KVA);
}

#define TROUPE_MLA_INSTANTIATE(T)                                                                 \
  template void mla_forward<T>(const ModelConfig&, const MlaLayout&, const T*, const T*, int64_t, \
                               int64_t, const int32_t*, const int32_t*, T*, MlaCache<T>&);        \
  template void mla_backward<T>(const ModelConfig&, const MlaLayout&, const T*, T*, const T*, T*, \
                                const MlaCache<T>&);

TROUPE_MLA_INSTANTIATE(float)
TROUPE_MLA_INSTANTIATE(double)

}  // namespace troupe::model
