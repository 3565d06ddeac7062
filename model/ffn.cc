#include "model/ffn.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/linear.h"

namespace troupe::model {

namespace k = troupe::kernels;

// =======================================================================================
// SwiGLU

namespace {

void check_shape(const ParamTable& t, const std::string& name, std::vector<int64_t> want) {
  const ParamInfo& p = t.at(name);
  if (p.shape != want)
    throw std::invalid_argument("parameter " + name + " has an unexpected shape for the FFN");
}

// Sizes c's scratch for N rows of width I (the forward's; the backward's: size_backward).
template <typename T>
void size_rows(SwigluCache<T>& c, int64_t N, int64_t C, int64_t I) {
  c.N = N, c.C = C, c.I = I;
  c.a.resize(N * I), c.b.resize(N * I), c.sig.resize(N * I), c.h.resize(N * I);
}

template <typename T>
void size_backward(const SwigluCache<T>& c) {
  c.da.resize(c.N * c.I), c.db.resize(c.N * c.I);
}

// The forward of n rows into rows [first, first + n) of c's scratch (sized by size_rows),
// x given separately, so that MoE experts read their gathered inputs in place and keep their
// rows in one cache of the layer's sorted rows.
// x (n,C) -> out (n,C) = beta·out + W2 (silu(W1 x) ⊙ W3 x)
// cfg chooses the Linears' precision (model/linear.h).
template <typename T>
void swiglu_forward_at(const ModelConfig& cfg, const SwigluLayout& L, const T* params, const T* x,
                       int64_t n, int64_t C, T* out, SwigluCache<T>& c, int64_t first, T beta) {
  const int64_t I = L.inter, o = first * I;
  T *a = c.a.data() + o, *b = c.b.data() + o, *sig = c.sig.data() + o, *h = c.h.data() + o;
  linear_fwd(cfg, x, params + L.gate, a, n, C, I);  // a = W1 x
  linear_fwd(cfg, x, params + L.up, b, n, C, I);    // b = W3 x
  for (int64_t j = 0; j < n * I; ++j) {
    sig[j] = k::sigmoid(a[j]);
    h[j] = a[j] * sig[j] * b[j];  // silu(a) ⊙ b, silu(a) = a·σ(a)
  }
  linear_fwd(cfg, h, params + L.down, out, n, I, C, beta);  // out = W2 h
}

template <typename T>
void swiglu_forward_from(const ModelConfig& cfg, const SwigluLayout& L, const T* params, const T* x,
                         int64_t N, int64_t C, T* out, SwigluCache<T>& c, T beta) {
  size_rows(c, N, C, L.inter);
  swiglu_forward_at(cfg, L, params, x, N, C, out, c, 0, beta);
}

// dout (n,C), x (n,C) -> dx (n,C) +=, grads += ; restates swiglu_forward_at from rows
// [first, first + n) of c's scratch (da and db sized by size_backward).
template <typename T>
void swiglu_backward_at(const ModelConfig& cfg, const SwigluLayout& L, const T* params, T* grads,
                        const T* x, const T* dout, T* dx, const SwigluCache<T>& c, int64_t first,
                        int64_t n) {
  if (n == 0) return;
  const int64_t I = L.inter, C = c.C, o = first * I;
  const T *a_ = c.a.data() + o, *b_ = c.b.data() + o, *sig_ = c.sig.data() + o;
  const T* h = c.h.data() + o;
  T *da = c.da.data() + o, *db = c.db.data() + o;
  T* dh = da;  // dh is turned into da in place below
  // out = W2 h:  dh = dout·W2 (dh is scratch: zeroed, then accumulated), dW2 += doutᵀ h
  std::fill(dh, dh + n * I, T(0));
  linear_bwd(cfg, dout, h, params + L.down, dh, grads + L.down, n, I, C);
  // h = silu(a) ⊙ b:  da = dh ⊙ b ⊙ silu'(a),  db = dh ⊙ silu(a)
  // (silu and silu' spelled out as in kernels/cpu/ops.cc, from the stored σ(a))
  for (int64_t j = 0; j < n * I; ++j) {
    const T a = a_[j], sig = sig_[j], g = dh[j];
    db[j] = g * (a * sig);
    da[j] = g * b_[j] * (sig * (T(1) + a * (T(1) - sig)));
  }
  // a = W1 x, b = W3 x
  linear_bwd(cfg, da, x, params + L.gate, dx, grads + L.gate, n, C, I);
  linear_bwd(cfg, db, x, params + L.up, dx, grads + L.up, n, C, I);
}

template <typename T>
void swiglu_backward_from(const ModelConfig& cfg, const SwigluLayout& L, const T* params, T* grads,
                          const T* x, const T* dout, T* dx, const SwigluCache<T>& c) {
  if (c.N == 0) return;
  size_backward(c);
  swiglu_backward_at(cfg, L, params, grads, x, dout, dx, c, 0, c.N);
}

}  // namespace

SwigluLayout SwigluLayout::from(const ParamTable& t, const std::string& prefix) {
  SwigluLayout L;
  const ParamInfo& gate = t.at(prefix + "gate_proj.weight");
  if (gate.shape.size() != 2)
    throw std::invalid_argument("parameter " + gate.name + " is not a matrix");
  L.inter = gate.shape[0];
  const int64_t C = gate.shape[1];
  check_shape(t, prefix + "up_proj.weight", {L.inter, C});
  check_shape(t, prefix + "down_proj.weight", {C, L.inter});
  L.gate = gate.offset;
  L.up = t.offset(prefix + "up_proj.weight");
  L.down = t.offset(prefix + "down_proj.weight");
  return L;
}

SwigluLayout compact_swiglu_layout(int64_t C, int64_t I) {
  SwigluLayout L;
  L.inter = I, L.gate = 0, L.up = I * C, L.down = 2 * I * C;
  return L;
}

template <typename T>
void expert_forward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, const T* x,
                    int64_t N, int64_t C, T* out, SwigluCache<T>& cache) {
  swiglu_forward_from(cfg, L, params, x, N, C, out, cache, T(0));
}

template <typename T>
void expert_backward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, T* grads,
                     const T* x, const T* dout, T* dx, const SwigluCache<T>& cache) {
  swiglu_backward_from(cfg, L, params, grads, x, dout, dx, cache);
}

template <typename T>
void swiglu_forward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, const T* x,
                    int64_t N, int64_t C, T* out, SwigluCache<T>& cache, T beta) {
  cache.x.assign(x, x + N * C);
  swiglu_forward_from(cfg, L, params, cache.x.data(), N, C, out, cache, beta);
}

template <typename T>
void swiglu_backward(const ModelConfig& cfg, const SwigluLayout& L, const T* params, T* grads,
                     const T* dout, T* dx, const SwigluCache<T>& cache) {
  swiglu_backward_from(cfg, L, params, grads, cache.x.data(), dout, dx, cache);
}

// =======================================================================================
// MoE routing

namespace {

// The index in [0,n) with skip[i] false holding the largest v; ties go to the lower index.
// Returns the first unskipped index when no value compares larger (NaN), -1 if none.
template <typename T>
int64_t argmax_unskipped(const T* v, const bool* skip, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i)
    if (!skip[i] && (best < 0 || v[i] > v[best])) best = i;
  return best;
}

// Sum of the top-2 values of v (n ≥ 1), or v[0] when n == 1.
template <typename T>
T top2_sum(const T* v, int64_t n) {
  std::array<bool, moe_routed_experts_max> skip{};
  const int64_t i1 = argmax_unskipped(v, skip.data(), n);
  if (n == 1) return v[i1];
  skip[i1] = true;
  return v[i1] + v[argmax_unskipped(v, skip.data(), n)];
}

void check_routing_config(const ModelConfig& cfg) {
  const int64_t E = cfg.n_routed_experts, G = cfg.n_group;
  auto fail = [](const std::string& what) { throw std::invalid_argument("model config: " + what); };
  if (E < 1 || E > moe_routed_experts_max)
    fail("n_routed_experts = " + std::to_string(E) + " must be in [1, " +
         std::to_string(moe_routed_experts_max) + "]");
  if (G < 1 || E % G != 0)
    fail("n_group = " + std::to_string(G) + " must divide n_routed_experts = " + std::to_string(E));
  if (cfg.topk_group < 1 || cfg.topk_group > G)
    fail("topk_group = " + std::to_string(cfg.topk_group) + " must be in [1, n_group]");
  if (cfg.top_k < 1 || cfg.top_k > cfg.topk_group * (E / G))
    fail("top_k = " + std::to_string(cfg.top_k) +
         " must be in [1, topk_group · n_routed_experts / n_group]");
}

}  // namespace

template <typename T>
void moe_route_token(const ModelConfig& cfg, const T* s, const T* bias, int32_t* top, T* weight) {
  const int64_t E = cfg.n_routed_experts, G = cfg.n_group, per = E / G, K = cfg.top_k;
  std::array<T, moe_routed_experts_max> sel, group_score;
  for (int64_t i = 0; i < E; ++i) sel[i] = s[i] + bias[i];
  for (int64_t g = 0; g < G; ++g) group_score[g] = top2_sum(sel.data() + g * per, per);
  // Keep the topk_group best groups: experts outside them are skipped.
  std::array<bool, moe_routed_experts_max> group_kept{}, skip{};
  for (int64_t r = 0; r < cfg.topk_group; ++r)
    group_kept[argmax_unskipped(group_score.data(), group_kept.data(), G)] = true;
  for (int64_t i = 0; i < E; ++i) skip[i] = !group_kept[i / per];
  std::array<bool, moe_routed_experts_max> chosen{};
  for (int64_t r = 0; r < K; ++r) {
    const int64_t i = argmax_unskipped(sel.data(), skip.data(), E);
    chosen[i] = skip[i] = true;
  }
  // g_i = s_i / Σ_{j∈top} s_j · routed_scaling, top listed by ascending id.
  T denom = T(0);
  for (int64_t i = 0, r = 0; i < E; ++i)
    if (chosen[i]) top[r++] = static_cast<int32_t>(i), denom += s[i];
  for (int64_t r = 0; r < K; ++r) weight[r] = s[top[r]] / denom * T(cfg.routed_scaling);
}

template <typename T>
void moe_bias_update(const ModelConfig& cfg, const int64_t* counts, T* bias) {
  const int64_t E = cfg.n_routed_experts;
  int64_t total = 0;
  for (int64_t i = 0; i < E; ++i) total += counts[i];
  const T gamma = T(cfg.bias_update_speed);
  for (int64_t i = 0; i < E; ++i) {
    const int64_t scaled = counts[i] * E;  // c_i·E vs Σc  ⇔  c_i vs mean(c)
    if (scaled < total) bias[i] += gamma;
    if (scaled > total) bias[i] -= gamma;
  }
}

// =======================================================================================
// MoE forward and backward

MoeLayout MoeLayout::from(const ParamTable& t, const ModelConfig& cfg, const std::string& prefix) {
  check_routing_config(cfg);
  const int64_t E = cfg.n_routed_experts, C = cfg.d_model;
  MoeLayout L;
  check_shape(t, prefix + "gate.weight", {E, C});
  check_shape(t, prefix + "gate.e_score_correction_bias", {E});
  L.gate = t.offset(prefix + "gate.weight");
  L.bias = t.offset(prefix + "gate.e_score_correction_bias");
  for (int64_t e = 0; e < E; ++e)
    L.experts.push_back(SwigluLayout::from(t, prefix + "experts." + std::to_string(e) + "."));
  L.has_shared = cfg.n_shared_experts > 0;
  if (L.has_shared) L.shared = SwigluLayout::from(t, prefix + "shared_experts.");
  return L;
}

namespace {

// x (N,C) -> c.s (N,E), c.top/weight (N,K), c.counts (E), and the expert-sorted rows:
// expert e owns sorted rows [begin[e], begin[e+1]) holding its tokens in ascending order.
template <typename T>
void moe_route(const ModelConfig& cfg, const MoeLayout& L, const T* params, MoeCache<T>& c) {
  const int64_t N = c.N, E = c.E, K = c.K;
  k::linear_forward(c.x.data(), params + L.gate, c.s.data(), N, c.C, E);  // u·e_i
  for (int64_t j = 0; j < N * E; ++j) c.s[j] = k::sigmoid(c.s[j]);
  std::fill(c.counts.begin(), c.counts.end(), 0);
  for (int64_t t = 0; t < N; ++t) {
    moe_route_token(cfg, &c.s[t * E], params + L.bias, &c.top[t * K], &c.weight[t * K]);
    for (int64_t r = 0; r < K; ++r) ++c.counts[c.top[t * K + r]];
  }
  c.expert_begin[0] = 0;
  for (int64_t e = 0; e < E; ++e) c.expert_begin[e + 1] = c.expert_begin[e] + c.counts[e];
  std::array<int64_t, moe_routed_experts_max> next;
  std::copy(c.expert_begin.begin(), c.expert_begin.end() - 1, next.begin());
  for (int64_t t = 0; t < N; ++t)
    for (int64_t r = 0; r < K; ++r) {
      const int64_t row = next[c.top[t * K + r]]++;
      c.slot[t * K + r] = row;
      c.token_of[row] = t;
    }
}

// Sequence-wise balance loss: Σ_rows Σ_i f_i P_i with
// f_i = E/(K·Tlen) Σ_t 1[i ∈ top(t)],  P_i = 1/Tlen Σ_t s_{i,t} / Σ_j s_{j,t}.
// Fills c.f (R,E); returns the unweighted sum.
template <typename T>
T moe_balance_loss(MoeCache<T>& c) {
  const int64_t E = c.E, K = c.K, Tlen = c.Tlen;
  const T f_scale = T(E) / T(K * Tlen);
  T total = T(0);
  for (int64_t row = 0; row < c.R; ++row) {
    std::array<T, moe_routed_experts_max> P{};
    T* f = &c.f[row * E];
    std::fill(f, f + E, T(0));
    for (int64_t t = row * Tlen; t < (row + 1) * Tlen; ++t) {
      const T* s = &c.s[t * E];
      const T z = k::sum(s, E);
      for (int64_t i = 0; i < E; ++i) P[i] += s[i] / z;
      for (int64_t r = 0; r < K; ++r) f[c.top[t * K + r]] += T(1);
    }
    T row_loss = T(0);
    for (int64_t i = 0; i < E; ++i) {
      f[i] *= f_scale;
      row_loss += f[i] * (P[i] / T(Tlen));
    }
    total += row_loss;
  }
  return total;
}

// The routed experts in this block, each on its sorted rows, ascending id. Their scratch
// is one cache over the layer's N·K sorted rows (expert e's from row expert_begin[e]), so
// it is as large as the micro-batch, whatever the routing: a cache per expert kept the
// most rows each expert was ever routed (docs/operations.md, the soak's heap by site).
template <typename T>
void routed_experts_forward(const ModelConfig& cfg, const MoeLayout& L, const T* params,
                            MoeCache<T>& c) {
  const int64_t C = c.C;
  size_rows(c.experts, c.N * c.K, C, cfg.moe_inter);
  for (int64_t e = 0; e < c.E; ++e) {
    const int64_t b = c.expert_begin[e], n = c.expert_begin[e + 1] - b;
    if (L.experts[e].inter != cfg.moe_inter)
      throw std::logic_error("routed experts of unequal widths");
    swiglu_forward_at(cfg, L.experts[e], params, c.xs.data() + b * C, n, C, c.ys.data() + b * C,
                      c.experts, b, T(0));
  }
}

template <typename T>
void routed_experts_backward(const ModelConfig& cfg, const MoeLayout& L, const T* params, T* grads,
                             const MoeCache<T>& c) {
  const int64_t C = c.C;
  size_backward(c.experts);
  for (int64_t e = 0; e < c.E; ++e) {
    const int64_t b = c.expert_begin[e], n = c.expert_begin[e + 1] - b;
    swiglu_backward_at(cfg, L.experts[e], params, grads, c.xs.data() + b * C, c.dys.data() + b * C,
                       c.dxs.data() + b * C, c.experts, b, n);
  }
}

}  // namespace

template <typename T>
T moe_forward(const ModelConfig& cfg, const MoeLayout& L, const T* params, const T* x, int64_t R,
              int64_t Tlen, T bal_weight, T* out, MoeCache<T>& c, RoutedExperts<T>* routed,
              int64_t layer, int64_t mb) {
  const int64_t N = R * Tlen, C = cfg.d_model, E = cfg.n_routed_experts, K = cfg.top_k;
  c.R = R, c.Tlen = Tlen, c.N = N, c.C = C, c.E = E, c.K = K, c.bal_weight = bal_weight;
  c.x.assign(x, x + N * C);
  c.s.resize(N * E), c.top.resize(N * K), c.weight.resize(N * K), c.slot.resize(N * K);
  c.expert_begin.resize(E + 1), c.token_of.resize(N * K), c.counts.resize(E);
  c.xs.resize(N * K * C), c.ys.resize(N * K * C), c.f.resize(R * E);
  c.routed = routed, c.layer = layer, c.mb = mb;
  moe_route(cfg, L, params, c);
  const T balance = N > 0 ? bal_weight * moe_balance_loss(c) : T(0);

  // Shared expert first (overwrites out), then each routed expert on its gathered batch.
  if (L.has_shared)
    swiglu_forward_from(cfg, L.shared, params, c.x.data(), N, C, out, c.shared, T(0));
  else
    std::fill(out, out + N * C, T(0));
  for (int64_t row = 0; row < N * K; ++row)
    std::memcpy(&c.xs[row * C], &c.x[c.token_of[row] * C], sizeof(T) * C);
  if (routed)
    routed->forward(layer, mb, c.expert_begin, C, c.xs.data(), c.ys.data());
  else
    routed_experts_forward(cfg, L, params, c);
  // out_t += g_{t,r} · y_{e_r}(u_t), r in ascending expert id.
  for (int64_t t = 0; t < N; ++t)
    for (int64_t r = 0; r < K; ++r) {
      const T g = c.weight[t * K + r];
      const T* y = &c.ys[c.slot[t * K + r] * C];
      T* o = out + t * C;
      for (int64_t j = 0; j < C; ++j) o[j] += g * y[j];
    }
  return balance;
}

namespace {

// Adds to c.ds (N,E) the gradient of bal_weight·Σ_rows Σ_i f_i P_i (f constant):
// ds_{t,j} += w / (Tlen·z_t) · (f_j − Σ_i f_i s_{t,i} / z_t),  z_t = Σ_i s_{t,i}.
template <typename T>
void moe_balance_backward(const MoeCache<T>& c) {
  const int64_t E = c.E, Tlen = c.Tlen;
  for (int64_t t = 0; t < c.N; ++t) {
    const T* s = &c.s[t * E];
    const T* f = &c.f[(t / Tlen) * E];
    const T z = k::sum(s, E);
    T fs = T(0);
    for (int64_t i = 0; i < E; ++i) fs += f[i] * s[i];
    const T mean_f = fs / z;
    const T scale = c.bal_weight / (T(Tlen) * z);
    T* ds = &c.ds[t * E];
    for (int64_t j = 0; j < E; ++j) ds[j] += scale * (f[j] - mean_f);
  }
}

// dweight (N,K) = dL/dg -> c.ds += the gradient through
// g_i = rs · s_i / S,  S = Σ_{j∈top} s_j:  ds_j += rs/S · (dg_j − Σ_i dg_i s_i / S).
template <typename T>
void moe_weight_backward(const ModelConfig& cfg, const T* dweight, const MoeCache<T>& c) {
  const int64_t E = c.E, K = c.K;
  const T rs = T(cfg.routed_scaling);
  for (int64_t t = 0; t < c.N; ++t) {
    const T* s = &c.s[t * E];
    const int32_t* top = &c.top[t * K];
    const T* dg = dweight + t * K;
    T denom = T(0), dot = T(0);
    for (int64_t r = 0; r < K; ++r) denom += s[top[r]];
    for (int64_t r = 0; r < K; ++r) dot += dg[r] * s[top[r]];
    const T mean_dg = dot / denom, scale = rs / denom;
    for (int64_t r = 0; r < K; ++r) c.ds[t * E + top[r]] += scale * (dg[r] - mean_dg);
  }
}

// Routed experts: y-space gradient dy_row = g · dout_t and dg = dout_t · y_row; each
// expert's backward on its sorted rows; dx_t += dx_row, experts in ascending id.
// Writes dg into dweight (N,K).
template <typename T>
void moe_experts_backward(const ModelConfig& cfg, const MoeLayout& L, const T* params, T* grads,
                          const T* dout, T* dx, T* dweight, const MoeCache<T>& c) {
  const int64_t N = c.N, C = c.C, K = c.K;
  c.dys.resize(N * K * C), c.dxs.assign(N * K * C, T(0));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t r = 0; r < K; ++r) {
      const int64_t row = c.slot[t * K + r];
      const T g = c.weight[t * K + r];
      const T* d = dout + t * C;
      const T* y = &c.ys[row * C];
      T* dy = &c.dys[row * C];
      T dot = T(0);
      for (int64_t j = 0; j < C; ++j) dy[j] = g * d[j], dot += d[j] * y[j];
      dweight[t * K + r] = dot;
    }
  if (c.routed)
    c.routed->backward(c.layer, c.mb, c.expert_begin, C, c.dys.data(), c.dxs.data(), grads);
  else
    routed_experts_backward(cfg, L, params, grads, c);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t r = 0; r < K; ++r) {
      const T* src = &c.dxs[c.slot[t * K + r] * C];
      T* d = dx + t * C;
      for (int64_t j = 0; j < C; ++j) d[j] += src[j];
    }
}

}  // namespace

template <typename T>
void moe_backward(const ModelConfig& cfg, const MoeLayout& L, const T* params, T* grads,
                  const T* dout, T* dx, const MoeCache<T>& c) {
  const int64_t N = c.N, C = c.C, E = c.E;
  if (N == 0) return;
  if (L.has_shared)
    swiglu_backward_from(cfg, L.shared, params, grads, c.x.data(), dout, dx, c.shared);
  c.dweight.resize(N * c.K), c.ds.assign(N * E, T(0));
  moe_experts_backward(cfg, L, params, grads, dout, dx, c.dweight.data(), c);
  moe_weight_backward(cfg, c.dweight.data(), c);
  if (c.bal_weight != T(0)) moe_balance_backward(c);
  // s = σ(u·e):  d(u·e) = ds ⊙ s (1 − s);  dE += d(u·e)ᵀ u,  du += d(u·e) E
  for (int64_t j = 0; j < N * E; ++j) c.ds[j] *= c.s[j] * (T(1) - c.s[j]);
  k::linear_backward<T>(c.ds.data(), c.x.data(), params + L.gate, dx, grads + L.gate, N, C, E);
}

// =======================================================================================

#define TROUPE_FFN_INSTANTIATE(T)                                                                 \
  template void swiglu_forward<T>(const ModelConfig&, const SwigluLayout&, const T*, const T*,    \
                                  int64_t, int64_t, T*, SwigluCache<T>&, T);                      \
  template void swiglu_backward<T>(const ModelConfig&, const SwigluLayout&, const T*, T*,         \
                                   const T*, T*, const SwigluCache<T>&);                          \
  template T moe_forward<T>(const ModelConfig&, const MoeLayout&, const T*, const T*, int64_t,    \
                            int64_t, T, T*, MoeCache<T>&, RoutedExperts<T>*, int64_t, int64_t);   \
  template void expert_forward<T>(const ModelConfig&, const SwigluLayout&, const T*, const T*,    \
                                  int64_t, int64_t, T*, SwigluCache<T>&);                         \
  template void expert_backward<T>(const ModelConfig&, const SwigluLayout&, const T*, T*,         \
                                   const T*, const T*, T*, const SwigluCache<T>&);                \
  template void moe_backward<T>(const ModelConfig&, const MoeLayout&, const T*, T*, const T*, T*, \
                                const MoeCache<T>&);                                              \
  template void moe_route_token<T>(const ModelConfig&, const T*, const T*, int32_t*, T*);         \
  template void moe_bias_update<T>(const ModelConfig&, const int64_t*, T*);

TROUPE_FFN_INSTANTIATE(float)
TROUPE_FFN_INSTANTIATE(double)
#undef TROUPE_FFN_INSTANTIATE

}  // namespace troupe::model
