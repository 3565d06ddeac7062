#include "model/engram.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "model/batch.h"
#include "model/rng.h"

namespace troupe::model {

namespace k = troupe::kernels;

namespace {
constexpr double kTableInitStd = 0.02;    // as the embedding: N(0, 0.02²)
constexpr uint64_t kLayerStride = 10007;  // SPEC §4: key = seed + 10007·l + k
}  // namespace

// ------------------------------------------------------------------------------- tables

int64_t next_prime_at_least(int64_t n) {
  auto prime = [](int64_t x) {
    if (x < 2) return false;
    for (int64_t d = 2; d * d <= x; ++d)
      if (x % d == 0) return false;
    return true;
  };
  while (!prime(n)) ++n;
  return n;
}

std::vector<EngramTableInfo> engram_tables(const ModelConfig& cfg) {
  std::vector<EngramTableInfo> out;
  int64_t next = cfg.engram_table_rows;
  for (int64_t l : cfg.engram_layers) {
    for (int64_t n : cfg.engram_orders) {
      for (int64_t j = 0; j < cfg.engram_heads; ++j) {
        EngramTableInfo t;
        t.layer = l, t.order = n, t.head = j, t.dim = cfg.engram_head_dim;
        t.rows = next_prime_at_least(next);
        next = t.rows + 1;
        t.name = "model.layers." + std::to_string(l) + ".engram.tables." + std::to_string(n) + "." +
                 std::to_string(j);
        out.push_back(std::move(t));
      }
    }
  }
  return out;
}

int64_t engram_table_params(const ModelConfig& cfg) {
  int64_t total = 0;
  for (const auto& t : engram_tables(cfg)) total += t.rows * t.dim;
  return total;
}

uint64_t engram_compress(int32_t id) {
  if (id >= 'A' && id <= 'Z') return uint64_t(id - 'A' + 'a');
  if ((id >= 9 && id <= 13) || id == 32) return 32;
  return uint64_t(id);
}

uint64_t engram_multiplier(uint64_t seed, int64_t layer, int64_t k) {
  const uint64_t key = seed + kLayerStride * uint64_t(layer) + uint64_t(k);
  return 2 * (splitmix64(key) % (uint64_t(1) << 31)) + 1;
}

void engram_row_ids(const ModelConfig& cfg, uint64_t seed, int64_t layer,
                    const std::vector<EngramTableInfo>& tables, const int32_t* tokens, int64_t R,
                    int64_t T, int64_t* ids, const int32_t* doc) {
  const int64_t N = R * T, K = cfg.engram_heads;
  std::vector<int32_t> first(static_cast<size_t>(N));
  doc_first_positions(doc, R, T, first.data());
  int64_t max_order = 0;
  for (int64_t n : cfg.engram_orders) max_order = std::max(max_order, n);
  std::vector<uint64_t> mult(static_cast<size_t>(max_order));
  for (int64_t kk = 0; kk < max_order; ++kk) mult[kk] = engram_multiplier(seed, layer, kk);
  for (size_t o = 0; o < cfg.engram_orders.size(); ++o) {
    const int64_t order = cfg.engram_orders[o];
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t t = 0; t < T; ++t) {
        uint64_t mix = 0;
        for (int64_t kk = 0; kk < order; ++kk) {
          const bool inside = t - kk >= first[r * T + t];  // BOS before the document start
          const uint64_t p = inside ? engram_compress(tokens[r * T + t - kk]) : 256;
          mix ^= p * mult[kk];
        }
        for (int64_t j = 0; j < K; ++j) {
          const EngramTableInfo& info = tables[o * K + j];
          ids[(int64_t(o) * K + j) * N + r * T + t] = int64_t(mix % uint64_t(info.rows));
        }
      }
    }
  }
}

template <typename T>
void sparse_rows_add(SparseRows<T>& a, const SparseRows<T>& b, int64_t dim) {
  if (b.ids.empty()) return;
  if (a.ids.empty()) {
    a = b;
    return;
  }
  SparseRows<T> out;
  out.ids.reserve(a.ids.size() + b.ids.size());
  out.values.reserve((a.ids.size() + b.ids.size()) * size_t(dim));
  size_t i = 0, j = 0;
  auto push = [&](const T* row) { out.values.insert(out.values.end(), row, row + dim); };
  while (i < a.ids.size() || j < b.ids.size()) {
    if (j == b.ids.size() || (i < a.ids.size() && a.ids[i] < b.ids[j])) {
      out.ids.push_back(a.ids[i]);
      push(a.values.data() + i * dim);
      ++i;
    } else if (i == a.ids.size() || b.ids[j] < a.ids[i]) {
      out.ids.push_back(b.ids[j]);
      push(b.values.data() + j * dim);
      ++j;
    } else {
      out.ids.push_back(a.ids[i]);
      const T* x = a.values.data() + i * dim;
      const T* y = b.values.data() + j * dim;
      for (int64_t d = 0; d < dim; ++d) out.values.push_back(x[d] + y[d]);
      ++i, ++j;
    }
  }
  a = std::move(out);
}

template <typename T>
double engram_table_sumsq(const SparseRows<T>& rows) {
  double part = 0;
  for (T x : rows.values) part += double(x) * double(x);
  return part;
}

template <typename T>
double engram_grad_sumsq(const EngramGrad<T>& g) {
  double total = 0;
  for (const SparseRows<T>& t : g) total += engram_table_sumsq(t);
  return total;
}

template <typename T>
void engram_initial_row(const EngramTableInfo& table, uint64_t seed, int64_t row, T* out) {
  CounterRng rng(seed, purpose_of(table.name));
  for (int64_t d = 0; d < table.dim; ++d)
    out[d] = T(kTableInitStd * rng.normal(uint64_t(row * table.dim + d)));
}

template <typename T>
InProcessEngramStore<T>::InProcessEngramStore(const ModelConfig& cfg, uint64_t seed)
    : InProcessEngramStore(cfg, seed, std::vector<bool>(engram_tables(cfg).size(), true)) {}

template <typename T>
InProcessEngramStore<T>::InProcessEngramStore(const ModelConfig& cfg, uint64_t seed,
                                              const std::vector<bool>& held)
    : info_(engram_tables(cfg)) {
  if (held.size() != info_.size())
    throw std::invalid_argument("engram store: " + std::to_string(held.size()) +
                                " table flags given, the config has " +
                                std::to_string(info_.size()) + " tables");
  for (size_t i = 0; i < info_.size(); ++i) {
    std::vector<T> w(held[i] ? size_t(info_[i].rows * info_[i].dim) : 0);
    CounterRng rng(seed, purpose_of(info_[i].name));
    for (size_t j = 0; j < w.size(); ++j) w[j] = T(kTableInitStd * rng.normal(j));
    values_.push_back(std::move(w));
    m_.emplace_back(values_.back().size(), T(0));
    v_.emplace_back(values_.back().size(), T(0));
  }
}

template <typename T>
InProcessEngramStore<T>::InProcessEngramStore(const ModelConfig& cfg,
                                              std::vector<std::vector<T>> values)
    : info_(engram_tables(cfg)), values_(std::move(values)) {
  if (values_.size() != info_.size())
    throw std::invalid_argument("engram store: " + std::to_string(values_.size()) +
                                " tables given, the config has " + std::to_string(info_.size()));
  for (size_t i = 0; i < info_.size(); ++i) {
    if (int64_t(values_[i].size()) != info_[i].rows * info_[i].dim)
      throw std::invalid_argument("engram store: table " + info_[i].name + " has the wrong size");
    m_.emplace_back(values_[i].size(), T(0));
    v_.emplace_back(values_[i].size(), T(0));
  }
}

template <typename T>
void InProcessEngramStore<T>::lookup(int64_t table, const int64_t* ids, int64_t n, T* out) const {
  const EngramTableInfo& info = info_.at(size_t(table));
  if (n > 0 && !held(table))
    throw std::out_of_range("engram table " + info.name + " is not held here");
  const T* w = values_[size_t(table)].data();
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= info.rows) throw std::out_of_range("engram row id out of range");
    std::copy(w + ids[i] * info.dim, w + (ids[i] + 1) * info.dim, out + i * info.dim);
  }
}

template <typename T>
EngramAdamRow<T> EngramAdamRow<T>::of(const EngramAdamStep& s) {
  const double c1 = 1.0 - std::pow(s.beta1, double(s.step + 1));
  const double c2 = 1.0 - std::pow(s.beta2, double(s.step + 1));
  return {T(s.beta1), T(s.beta2), T(s.grad_scale), T(s.lr / c1), T(1.0 / c2), T(s.eps)};
}

template <typename T>
void EngramAdamRow<T>::operator()(const T* g, T* w, T* m, T* v, int64_t D) const {
  for (int64_t d = 0; d < D; ++d) {
    const T gi = g[d] * scale;
    m[d] = b1 * m[d] + (T(1) - b1) * gi;
    v[d] = b2 * v[d] + (T(1) - b2) * gi * gi;
    w[d] -= step_size * m[d] / (std::sqrt(v[d] * inv_c2) + eps);
  }
}

template <typename T>
void InProcessEngramStore<T>::apply(const EngramGrad<T>& grad, const EngramAdamStep& s) {
  if (grad.size() != info_.size())
    throw std::invalid_argument("engram store: gradient has the wrong number of tables");
  const EngramAdamRow<T> adam = EngramAdamRow<T>::of(s);
  for (size_t t = 0; t < info_.size(); ++t) {
    const int64_t D = info_[t].dim;
    const SparseRows<T>& g = grad[t];
    if (!g.ids.empty() && !held(int64_t(t)))
      throw std::out_of_range("engram gradient for table " + info_[t].name + ", not held here");
    for (size_t r = 0; r < g.ids.size(); ++r) {
      const int64_t base = g.ids[r] * D;
      if (g.ids[r] < 0 || g.ids[r] >= info_[t].rows)
        throw std::out_of_range("engram gradient row id out of range in " + info_[t].name);
      adam(g.values.data() + int64_t(r) * D, values_[t].data() + base, m_[t].data() + base,
           v_[t].data() + base, D);
    }
  }
}

template <typename T>
EngramRowsBackup<T> InProcessEngramStore<T>::backup_rows(const EngramGrad<T>& grad) const {
  if (grad.size() != info_.size())
    throw std::invalid_argument("engram store: gradient has the wrong number of tables");
  EngramRowsBackup<T> b;
  b.ids.resize(info_.size()), b.values.resize(info_.size());
  b.m.resize(info_.size()), b.v.resize(info_.size());
  for (size_t t = 0; t < info_.size(); ++t) {
    const int64_t D = info_[t].dim;
    b.ids[t] = grad[t].ids;
    if (!grad[t].ids.empty() && !held(int64_t(t)))
      throw std::out_of_range("engram rows of table " + info_[t].name + ", not held here");
    for (int64_t id : grad[t].ids) {
      if (id < 0 || id >= info_[t].rows)
        throw std::out_of_range("engram gradient row id out of range in " + info_[t].name);
      const auto row = [&](const std::vector<T>& src, std::vector<T>& dst) {
        dst.insert(dst.end(), src.begin() + id * D, src.begin() + (id + 1) * D);
      };
      row(values_[t], b.values[t]), row(m_[t], b.m[t]), row(v_[t], b.v[t]);
    }
  }
  return b;
}

template <typename T>
void InProcessEngramStore<T>::restore_rows(const EngramRowsBackup<T>& b) {
  if (b.ids.size() != info_.size())
    throw std::invalid_argument("engram store: backup has the wrong number of tables");
  for (size_t t = 0; t < info_.size(); ++t) {
    const int64_t D = info_[t].dim;
    for (size_t r = 0; r < b.ids[t].size(); ++r) {
      const auto row = [&](const std::vector<T>& src, std::vector<T>& dst) {
        std::copy(src.begin() + int64_t(r) * D, src.begin() + int64_t(r + 1) * D,
                  dst.begin() + b.ids[t][r] * D);
      };
      row(b.values[t], values_[t]), row(b.m[t], m_[t]), row(b.v[t], v_[t]);
    }
  }
}

// ------------------------------------------------------------------------------ module

EngramLayout EngramLayout::from(const ParamTable& t, const ModelConfig& cfg, uint64_t seed,
                                int64_t layer) {
  EngramLayout L;
  L.layer = layer;
  L.seed = seed;
  const auto all = engram_tables(cfg);
  L.first_table = -1;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].layer != layer) continue;
    if (L.first_table < 0) L.first_table = int64_t(i);
    L.tables.push_back(all[i]);
  }
  if (L.first_table < 0)
    throw std::logic_error("layer " + std::to_string(layer) + " has no Engram");
  const std::string p = "model.layers." + std::to_string(layer) + ".engram.";
  for (int64_t m = 0; m < engram_streams(cfg); ++m) {
    const std::string sm = std::to_string(m);
    L.w_k.push_back(t.offset(p + "w_k." + sm));
    L.norm_q.push_back(t.offset(p + "norm_q." + sm));
    L.norm_k.push_back(t.offset(p + "norm_k." + sm));
    L.norm_c.push_back(t.offset(p + "norm_c." + sm));
  }
  L.w_v = t.offset(p + "w_v");
  L.conv = t.offset(p + "conv");
  return L;
}

template <typename T>
void engram_conv_forward(const T* w, const T* z, T* y, int64_t R, int64_t Tn, int64_t C, int64_t Kc,
                         int64_t dil, const int32_t* first) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t t = 0; t < Tn; ++t) {
      T* yr = y + (r * Tn + t) * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = T(0);
      for (int64_t i = 0; i < Kc; ++i) {
        const int64_t src = t - (Kc - 1 - i) * dil;
        if (src < (first ? first[r * Tn + t] : 0)) continue;  // zero before the document
        const T* zr = z + (r * Tn + src) * C;
        for (int64_t c = 0; c < C; ++c) yr[c] += w[c * Kc + i] * zr[c];
      }
    }
}

namespace {

// dy (R,T,C) -> dz += , dw (C,Kc) +=.
template <typename T>
void conv_backward(const T* w, const T* z, const T* dy, T* dz, T* dw, int64_t R, int64_t Tn,
                   int64_t C, int64_t Kc, int64_t dil, const int32_t* first) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t t = 0; t < Tn; ++t) {
      const T* dyr = dy + (r * Tn + t) * C;
      for (int64_t i = 0; i < Kc; ++i) {
        const int64_t src = t - (Kc - 1 - i) * dil;
        if (src < first[r * Tn + t]) continue;
        const T* zr = z + (r * Tn + src) * C;
        T* dzr = dz + (r * Tn + src) * C;
        for (int64_t c = 0; c < C; ++c) {
          dw[c * Kc + i] += dyr[c] * zr[c];
          dzr[c] += w[c * Kc + i] * dyr[c];
        }
      }
    }
}

}  // namespace

template <typename T>
void engram_forward(const ModelConfig& cfg, const EngramLayout& L, const T* P,
                    const EngramStore<T>& store, const int32_t* tokens, int64_t R, int64_t Tn,
                    const T* X, T* Xout, EngramCache<T>& c, const int32_t* doc) {
  const int64_t N = R * Tn, C = cfg.d_model, S = engram_streams(cfg);
  const int64_t J = int64_t(L.tables.size()), D = cfg.engram_head_dim, M = J * D;
  const int64_t Kc = cfg.engram_conv_kernel, dil = cfg.engram_conv_dilation;
  const T eps = T(cfg.rms_norm_eps), inv_sqrt_c = T(1) / std::sqrt(T(C));
  c.R = R, c.Tn = Tn, c.N = N;
  c.first.resize(size_t(N));
  doc_first_positions(doc, R, Tn, c.first.data());
  c.ids.resize(size_t(J * N));
  engram_row_ids(cfg, L.seed, L.layer, L.tables, tokens, R, Tn, c.ids.data(), doc);
  // e_t = [rows of table 0 | table 1 | …] (orders outer, heads inner).
  c.e.resize(size_t(N * M));
  std::vector<T> rows(size_t(N * D));
  for (int64_t j = 0; j < J; ++j) {
    store.lookup(L.first_table + j, c.ids.data() + j * N, N, rows.data());
    for (int64_t n = 0; n < N; ++n)
      std::copy(rows.data() + n * D, rows.data() + (n + 1) * D, c.e.data() + n * M + j * D);
  }
  c.v.resize(size_t(N * C));
  k::linear_forward(c.e.data(), P + L.w_v, c.v.data(), N, M, C);
  for (auto* b : {&c.x, &c.qn, &c.k, &c.kn, &c.vt, &c.cn, &c.conv}) b->resize(size_t(S * N * C));
  for (auto* b : {&c.rq, &c.rk, &c.s, &c.alpha, &c.rc}) b->resize(size_t(S * N));
  for (int64_t m = 0; m < S; ++m) {
    T* x = c.x.data() + m * N * C;
    for (int64_t n = 0; n < N; ++n)
      std::copy(X + (n * S + m) * C, X + (n * S + m + 1) * C, x + n * C);
    T *qn = c.qn.data() + m * N * C, *kk = c.k.data() + m * N * C, *kn = c.kn.data() + m * N * C;
    T *vt = c.vt.data() + m * N * C, *cn = c.cn.data() + m * N * C;
    T* cv = c.conv.data() + m * N * C;
    k::rmsnorm_forward(x, P + L.norm_q[m], eps, qn, c.rq.data() + m * N, N, C);
    k::linear_forward(c.e.data(), P + L.w_k[m], kk, N, M, C);
    k::rmsnorm_forward(kk, P + L.norm_k[m], eps, kn, c.rk.data() + m * N, N, C);
    for (int64_t n = 0; n < N; ++n) {
      T dot = 0;
      for (int64_t ch = 0; ch < C; ++ch) dot += qn[n * C + ch] * kn[n * C + ch];
      const T s = dot * inv_sqrt_c, a = k::sigmoid(s);
      c.s[m * N + n] = s, c.alpha[m * N + n] = a;
      for (int64_t ch = 0; ch < C; ++ch) vt[n * C + ch] = a * c.v[n * C + ch];
    }
    k::rmsnorm_forward(vt, P + L.norm_c[m], eps, cn, c.rc.data() + m * N, N, C);
    engram_conv_forward(P + L.conv + m * C * Kc, cn, cv, R, Tn, C, Kc, dil, c.first.data());
    for (int64_t n = 0; n < N; ++n) {
      const T* xin = X + (n * S + m) * C;
      T* xo = Xout + (n * S + m) * C;
      for (int64_t ch = 0; ch < C; ++ch)
        xo[ch] = xin[ch] + (k::silu(cv[n * C + ch]) + vt[n * C + ch]);
    }
  }
}

namespace {

// de (N, M) -> per table, ascending unique ids with their rows summed in position order.
template <typename T>
void table_grads(const EngramLayout& L, const EngramCache<T>& c, const T* de, int64_t D,
                 EngramGrad<T>& out) {
  const int64_t N = c.N, J = int64_t(L.tables.size()), M = J * D;
  std::vector<int64_t> order(static_cast<size_t>(N));
  for (int64_t j = 0; j < J; ++j) {
    const int64_t* ids = c.ids.data() + j * N;
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
    SparseRows<T>& g = out.at(size_t(L.first_table + j));
    g.ids.clear();
    g.values.clear();
    for (int64_t n : order) {
      if (g.ids.empty() || g.ids.back() != ids[n]) {
        g.ids.push_back(ids[n]);
        g.values.resize(g.values.size() + size_t(D), T(0));
      }
      T* dst = g.values.data() + (g.ids.size() - 1) * size_t(D);
      for (int64_t d = 0; d < D; ++d) dst[d] += de[n * M + j * D + d];
    }
  }
}

}  // namespace

template <typename T>
void engram_backward(const ModelConfig& cfg, const EngramLayout& L, const T* P, T* G,
                     const T* dXout, T* dX, EngramGrad<T>& tgrad, EngramCache<T>& c) {
  const int64_t N = c.N, C = cfg.d_model, S = engram_streams(cfg);
  const int64_t J = int64_t(L.tables.size()), D = cfg.engram_head_dim, M = J * D;
  const int64_t Kc = cfg.engram_conv_kernel, dil = cfg.engram_conv_dilation;
  const T inv_sqrt_c = T(1) / std::sqrt(T(C));
  std::vector<T> de(size_t(N * M), T(0)), dv(size_t(N * C), T(0));
  std::vector<T> dy(size_t(N * C)), dconv(size_t(N * C)), dvt(size_t(N * C));
  std::vector<T> dcn(size_t(N * C)), dqn(size_t(N * C)), dkn(size_t(N * C));
  std::vector<T> dk(size_t(N * C)), dxm(size_t(N * C));
  for (int64_t m = 0; m < S; ++m) {
    const T *x = c.x.data() + m * N * C, *qn = c.qn.data() + m * N * C;
    const T *kk = c.k.data() + m * N * C, *kn = c.kn.data() + m * N * C;
    const T *vt = c.vt.data() + m * N * C, *cn = c.cn.data() + m * N * C;
    const T* cv = c.conv.data() + m * N * C;
    const T* alpha = c.alpha.data() + m * N;
    // Xout_m = X_m + SiLU(conv) + ṽ_m.
    for (int64_t n = 0; n < N; ++n)
      std::copy(dXout + (n * S + m) * C, dXout + (n * S + m + 1) * C, dy.data() + n * C);
    for (int64_t i = 0; i < N * C; ++i) {
      dconv[i] = dy[i] * k::silu_grad(cv[i]);
      dvt[i] = dy[i];
    }
    std::fill(dcn.begin(), dcn.end(), T(0));
    conv_backward(P + L.conv + m * C * Kc, cn, dconv.data(), dcn.data(), G + L.conv + m * C * Kc,
                  c.R, c.Tn, C, Kc, dil, c.first.data());
    k::rmsnorm_backward(dcn.data(), vt, P + L.norm_c[m], c.rc.data() + m * N, dvt.data(),
                        G + L.norm_c[m], N, C);
    // ṽ_m = α_m v; α_m = σ(s), s = qn·kn / sqrt(C).
    for (int64_t n = 0; n < N; ++n) {
      T da = 0;
      for (int64_t ch = 0; ch < C; ++ch) {
        da += dvt[n * C + ch] * c.v[n * C + ch];
        dv[n * C + ch] += alpha[n] * dvt[n * C + ch];
      }
      const T ds = da * alpha[n] * (T(1) - alpha[n]) * inv_sqrt_c;
      for (int64_t ch = 0; ch < C; ++ch) {
        dqn[n * C + ch] = ds * kn[n * C + ch];
        dkn[n * C + ch] = ds * qn[n * C + ch];
      }
    }
    std::fill(dk.begin(), dk.end(), T(0));
    k::rmsnorm_backward(dkn.data(), kk, P + L.norm_k[m], c.rk.data() + m * N, dk.data(),
                        G + L.norm_k[m], N, C);
    k::linear_backward(dk.data(), c.e.data(), P + L.w_k[m], de.data(), G + L.w_k[m], N, M, C);
    // The residual path and the gate's read of X_m.
    std::copy(dy.begin(), dy.end(), dxm.begin());
    k::rmsnorm_backward(dqn.data(), x, P + L.norm_q[m], c.rq.data() + m * N, dxm.data(),
                        G + L.norm_q[m], N, C);
    for (int64_t n = 0; n < N; ++n) {
      T* dxr = dX + (n * S + m) * C;
      for (int64_t ch = 0; ch < C; ++ch) dxr[ch] += dxm[n * C + ch];
    }
  }
  k::linear_backward(dv.data(), c.e.data(), P + L.w_v, de.data(), G + L.w_v, N, M, C);
  table_grads(L, c, de.data(), D, tgrad);
}

template void sparse_rows_add<float>(SparseRows<float>&, const SparseRows<float>&, int64_t);
template void sparse_rows_add<double>(SparseRows<double>&, const SparseRows<double>&, int64_t);
template double engram_table_sumsq<float>(const SparseRows<float>&);
template double engram_table_sumsq<double>(const SparseRows<double>&);
template double engram_grad_sumsq<float>(const EngramGrad<float>&);
template double engram_grad_sumsq<double>(const EngramGrad<double>&);
template void engram_initial_row<float>(const EngramTableInfo&, uint64_t, int64_t, float*);
template void engram_initial_row<double>(const EngramTableInfo&, uint64_t, int64_t, double*);
template struct EngramAdamRow<float>;
template struct EngramAdamRow<double>;
template class InProcessEngramStore<float>;
template class InProcessEngramStore<double>;

#define TROUPE_ENGRAM_INSTANTIATE(T)                                                               \
  template void engram_forward<T>(const ModelConfig&, const EngramLayout&, const T*,               \
                                  const EngramStore<T>&, const int32_t*, int64_t, int64_t,         \
                                  const T*, T*, EngramCache<T>&, const int32_t*);                  \
  template void engram_conv_forward<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                       int64_t, const int32_t*);                                   \
  template void engram_backward<T>(const ModelConfig&, const EngramLayout&, const T*, T*,          \
                                   const T*, T*, EngramGrad<T>&, EngramCache<T>&);
TROUPE_ENGRAM_INSTANTIATE(float)
TROUPE_ENGRAM_INSTANTIATE(double)
#undef TROUPE_ENGRAM_INSTANTIATE

}  // namespace troupe::model
