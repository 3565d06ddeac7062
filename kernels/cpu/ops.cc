#include "kernels/cpu/ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/gemm_pack.h"

namespace troupe::kernels {

// RMSNorm's sums run over d in index order, one chain per row (the bits the model was
// trained with). A lone chain is bound by the adder's latency, so rows go in groups of
// kRowLanes whose chains interleave: each row's sum sees exactly the operations it would
// alone, and the group runs them side by side (the l loops vectorise across rows).
constexpr int64_t kRowLanes = kRmsNormRowGroup;

// A full group of 8 float rows: the products of 8 columns are formed row-wise (8 loads),
// transposed so that a register holds one column across the rows, and added column after
// column: lane l runs row l's chain, in its order.
inline void row_dots8(const float* a, const float* b, const float* w, int64_t D, float* ss) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    __m256 p[8];
    for (int l = 0; l < 8; ++l) {
      __m256 va = _mm256_loadu_ps(a + l * D + d);
      if (w) va = _mm256_mul_ps(va, _mm256_loadu_ps(w + d));
      p[l] = _mm256_mul_ps(va, _mm256_loadu_ps(b + l * D + d));
    }
    detail::transpose_8x8(p);
    for (int k = 0; k < 8; ++k) acc = _mm256_add_ps(acc, p[k]);
  }
  _mm256_storeu_ps(ss, acc);
  for (; d < D; ++d)
    for (int64_t l = 0; l < 8; ++l) ss[l] += a[l * D + d] * (w ? w[d] : 1.0f) * b[l * D + d];
}

// ss[l] = Σ_d a_l[d]·b_l[d]·(w ? w[d] : 1), d ascending, for rows l of a group.
template <typename T>
void row_dots(const T* a, const T* b, const T* w, int64_t D, int64_t rows, T* ss) {
  if constexpr (std::is_same_v<T, float>) {
    if (rows == kRowLanes) return row_dots8(a, b, w, D, ss);
  }
  for (int64_t l = 0; l < rows; ++l) ss[l] = 0;
  if (rows == kRowLanes && !w) {
    for (int64_t d = 0; d < D; ++d)
      for (int64_t l = 0; l < kRowLanes; ++l) ss[l] += a[l * D + d] * b[l * D + d];
  } else if (rows == kRowLanes) {
    for (int64_t d = 0; d < D; ++d)
      for (int64_t l = 0; l < kRowLanes; ++l) ss[l] += a[l * D + d] * w[d] * b[l * D + d];
  } else {
    for (int64_t l = 0; l < rows; ++l)
      for (int64_t d = 0; d < D; ++d) ss[l] += a[l * D + d] * (w ? w[d] : T(1)) * b[l * D + d];
  }
}

template <typename T>
void rmsnorm_forward(const T* x, const T* w, T eps, T* out, T* rstd, int64_t N, int64_t D) {
  T ss[kRowLanes];
  for (int64_t n0 = 0; n0 < N; n0 += kRowLanes) {
    const int64_t rows = std::min(kRowLanes, N - n0);
    row_dots<T>(x + n0 * D, x + n0 * D, nullptr, D, rows, ss);
    for (int64_t l = 0; l < rows; ++l) {
      const int64_t n = n0 + l;
      const T* xr = x + n * D;
      const T r = T(1) / std::sqrt(ss[l] / T(D) + eps);
      rstd[n] = r;
      T* o = out + n * D;
      if (w)
        for (int64_t d = 0; d < D; ++d) o[d] = xr[d] * r * w[d];
      else
        for (int64_t d = 0; d < D; ++d) o[d] = xr[d] * r;
    }
  }
}

template <typename T>
void rmsnorm_backward(const T* dout, const T* x, const T* w, const T* rstd, T* dx, T* dw, int64_t N,
                      int64_t D) {
  T dots[kRowLanes];
  for (int64_t n0 = 0; n0 < N; n0 += kRowLanes) {
    const int64_t rows = std::min(kRowLanes, N - n0);
    // out = x r w;  dL/dx = r (g w) − x r³/D Σ (g w x)
    row_dots<T>(dout + n0 * D, x + n0 * D, w, D, rows, dots);
    for (int64_t l = 0; l < rows; ++l) {  // rows in order: dw sums over them ascending
      const int64_t n = n0 + l;
      const T* xr = x + n * D;
      const T* g = dout + n * D;
      const T r = rstd[n];
      const T c = dots[l] * r * r * r / T(D);
      T* dxr = dx + n * D;
      if (w)
        for (int64_t d = 0; d < D; ++d) dxr[d] += g[d] * w[d] * r - xr[d] * c;
      else
        for (int64_t d = 0; d < D; ++d) dxr[d] += g[d] * r - xr[d] * c;
      if (dw)
        for (int64_t d = 0; d < D; ++d) dw[d] += g[d] * xr[d] * r;
    }
  }
}

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
template <typename T>
T silu(T x) {
  return x * sigmoid(x);
}
template <typename T>
T silu_grad(T x) {
  T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

template <typename T>
void softmax_rows(T* x, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n) {
    T* r = x + n * D;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t d = 0; d < D; ++d) m = r[d] > m ? r[d] : m;
    T s = 0;
    for (int64_t d = 0; d < D; ++d) {
      r[d] = r[d] == -std::numeric_limits<T>::infinity() ? T(0) : std::exp(r[d] - m);
      s += r[d];
    }
    T inv = T(1) / s;
    for (int64_t d = 0; d < D; ++d) r[d] *= inv;
  }
}

template <typename T>
void softmax_rows_backward(const T* p, const T* dp, T* dx, int64_t N, int64_t D) {
  for (int64_t n = 0; n < N; ++n) {
    const T* pr = p + n * D;
    const T* gr = dp + n * D;
    T dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += gr[d] * pr[d];
    T* o = dx + n * D;
    for (int64_t d = 0; d < D; ++d) o[d] += pr[d] * (gr[d] - dot);
  }
}

// cos/sin of p·θ_i for positions [0, P) and i < D/2, computed in double once per thread
// and (D, theta), then reused: RoPE runs 10× per step on the same positions.
template <typename T>
struct RopeTable {
  int64_t D = 0;
  double theta = 0;
  int64_t positions = 0;
  std::vector<T> cos, sin;  // (positions, D/2)

  void ensure(int64_t d, double th, int64_t max_pos) {
    if (d != D || th != theta) {
      D = d, theta = th, positions = 0;
      cos.clear(), sin.clear();
    }
    if (max_pos < positions) return;
    const int64_t h = D / 2, p_new = std::max<int64_t>(max_pos + 1, 2 * positions);
    cos.resize(p_new * h), sin.resize(p_new * h);
    for (int64_t p = positions; p < p_new; ++p)
      for (int64_t i = 0; i < h; ++i) {
        const double ang = double(p) * std::pow(theta, -2.0 * double(i) / double(D));
        cos[p * h + i] = T(std::cos(ang)), sin[p * h + i] = T(std::sin(ang));
      }
    positions = p_new;
  }
};

template <typename T>
static void rope_rotate(T* x, int64_t N, int64_t D, int64_t stride, const int32_t* pos, T theta,
                        T sign) {
  thread_local RopeTable<T> table;
  const int64_t h = D / 2;
  int32_t max_pos = 0;
  for (int64_t n = 0; n < N; ++n) max_pos = std::max(max_pos, pos[n]);
  table.ensure(D, double(theta), max_pos);
  for (int64_t n = 0; n < N; ++n) {
    T* v = x + n * stride;
    const T* cs = table.cos.data() + int64_t(pos[n]) * h;
    const T* sn = table.sin.data() + int64_t(pos[n]) * h;
    for (int64_t i = 0; i < h; ++i) {
      const T c = cs[i], s = sign * sn[i];
      const T a = v[i], b = v[i + h];
      v[i] = a * c - b * s;
      v[i + h] = b * c + a * s;
    }
  }
}

template <typename T>
void rope_forward(T* x, int64_t N, int64_t D, int64_t stride, const int32_t* pos, T theta) {
  rope_rotate(x, N, D, stride, pos, theta, T(1));
}
template <typename T>
void rope_backward(T* dx, int64_t N, int64_t D, int64_t stride, const int32_t* pos, T theta) {
  rope_rotate(dx, N, D, stride, pos, theta, T(-1));
}

template <typename T>
T cross_entropy(const T* logits, const int32_t* target, int64_t N, int64_t V, T scale, T* dlogits) {
  T total = 0;
  std::vector<T> p(V);
  for (int64_t n = 0; n < N; ++n) {
    if (target[n] < 0) continue;
    const T* l = logits + n * V;
    T m = l[0];
    for (int64_t v = 1; v < V; ++v) m = l[v] > m ? l[v] : m;
    T s = 0;
    for (int64_t v = 0; v < V; ++v) {
      p[v] = std::exp(l[v] - m);
      s += p[v];
    }
    total += std::log(s) + m - l[target[n]];
    if (dlogits) {
      T inv = T(1) / s;
      T* g = dlogits + n * V;
      for (int64_t v = 0; v < V; ++v) g[v] += scale * (p[v] * inv - (v == target[n] ? T(1) : T(0)));
    }
  }
  return total;
}

template <typename T>
T sum(const T* x, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

#define TROUPE_OPS_INSTANTIATE(T)                                                            \
  template void rmsnorm_forward<T>(const T*, const T*, T, T*, T*, int64_t, int64_t);         \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t, \
                                    int64_t);                                                \
  template T sigmoid<T>(T);                                                                  \
  template T silu<T>(T);                                                                     \
  template T silu_grad<T>(T);                                                                \
  template void softmax_rows<T>(T*, int64_t, int64_t);                                       \
  template void softmax_rows_backward<T>(const T*, const T*, T*, int64_t, int64_t);          \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, const int32_t*, T);           \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, const int32_t*, T);          \
  template T cross_entropy<T>(const T*, const int32_t*, int64_t, int64_t, T, T*);            \
  template T sum<T>(const T*, int64_t);

TROUPE_OPS_INSTANTIATE(float)
TROUPE_OPS_INSTANTIATE(double)

}  // namespace troupe::kernels
