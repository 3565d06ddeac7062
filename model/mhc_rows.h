#pragma once
// mHC's per-token row kernels (internal to model/mhc.cc): dot products and weighted sums of
// a token's stream rows. Each fixes an order of operations that depends on the row length
// alone; the fused forms below run several of them in one pass over the rows without
// changing any of those orders, so their bits are the unfused ones'.
#include <cstdint>
#include <type_traits>

namespace troupe::model::mhc_rows {

// Lanes of a dot product's partial sums: lane l sums the products at indices ≡ l (mod 16).
constexpr int64_t kDotLanes = 16;

// The partial sums of a dot product, folded in halves to one value.
template <typename T>
T fold(T (&acc)[kDotLanes]) {
  for (int64_t l = 0; l < 8; ++l) acc[l] += acc[l + 8];
  for (int64_t l = 0; l < 4; ++l) acc[l] += acc[l + 4];
  for (int64_t l = 0; l < 2; ++l) acc[l] += acc[l + 2];
  return acc[0] + acc[1];
}

// Dot product in 16 interleaved partial sums (lane = index mod 16), folded in halves:
// the order depends on n alone, and the compiler vectorises it into 2 independent chains
// (measured at n = 128: 8 lanes is latency-bound, 32 lanes pays for its longer fold).
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T acc[kDotLanes] = {};
  int64_t c = 0;
  for (; c + kDotLanes <= n; c += kDotLanes)
    for (int64_t l = 0; l < kDotLanes; ++l) acc[l] += a[c + l] * b[c + l];
  for (int64_t l = 0; c + l < n; ++l) acc[l] += a[c + l] * b[c + l];
  return fold(acc);
}

// GCC vector types of `bytes` bytes: elementwise + and × with the IEEE bits of the scalar
// operations (no contraction: the build passes -ffp-contract=off), whatever the width.
template <typename T, int bytes = 32>
struct VecN {
  typedef T type __attribute__((vector_size(bytes)));
  static constexpr int64_t lanes = int64_t(bytes / sizeof(T));
  static type load(const T* p) {
    type v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, type v) { __builtin_memcpy(p, &v, sizeof v); }
};
// An AVX2 register.
template <typename T>
using Vec32 = VecN<T, 32>;
// The widest register of the build, for elementwise loops: an AVX-512 register where there is
// one (these are inlined into one translation unit, so the width never crosses an ABI).
#ifdef __AVX512F__
template <typename T>
using VecWide = VecN<T, 64>;
#else
template <typename T>
using VecWide = VecN<T, 32>;
#endif

#ifdef __AVX512F__
// (AVX-512 builds: a 64-byte vector is one register there, and passing one between functions
// built without AVX-512 would change the ABI.)
// 16 floats: one dot product's kDotLanes partial sums in one zmm register.
typedef float v16 __attribute__((vector_size(64)));

inline v16 load16(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// fold() of the partial sums in a v16, in registers.
inline float fold16(const v16& acc) {
  typedef float v8 __attribute__((vector_size(32)));
  typedef float v4 __attribute__((vector_size(16)));
  v8 lo8, hi8;
  __builtin_memcpy(&lo8, &acc, sizeof lo8);
  __builtin_memcpy(&hi8, reinterpret_cast<const char*>(&acc) + sizeof lo8, sizeof hi8);
  const v8 p = lo8 + hi8;  // lane l + lane l+8
  v4 lo4, hi4;
  __builtin_memcpy(&lo4, &p, sizeof lo4);
  __builtin_memcpy(&hi4, reinterpret_cast<const char*>(&p) + sizeof lo4, sizeof hi4);
  const v4 q = lo4 + hi4;  // + lane l+4
  return (q[0] + q[2]) + (q[1] + q[3]);
}

// Floats, n a multiple of kDotLanes: dots with their partial sums in registers.
template <int M>
void dots16(const float* a, const float* const* rows, int64_t n, float* out) {
  v16 acc[M] = {};
  for (int64_t c = 0; c < n; c += kDotLanes) {
    const v16 va = load16(a + c);
    for (int j = 0; j < M; ++j) acc[j] += va * load16(rows[j] + c);
  }
  for (int j = 0; j < M; ++j) out[j] = fold16(acc[j]);
}
#endif

// out[j] = dot(a, rows[j], n) for j < M, in one pass over a (the same bits: each lane's
// sum sees the same products in the same order, and products commute).
template <typename T, int M>
void dots(const T* a, const T* const* rows, int64_t n, T* out) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float>)
    if (n % kDotLanes == 0) return dots16<M>(a, rows, n, out);
#endif
  using V = Vec32<T>;
  constexpr int64_t G = kDotLanes / V::lanes;  // vectors per partial-sum set
  typename V::type acc[M][G] = {};
  int64_t c = 0;
  for (; c + kDotLanes <= n; c += kDotLanes)
    for (int64_t g = 0; g < G; ++g) {
      const typename V::type va = V::load(a + c + g * V::lanes);
      for (int j = 0; j < M; ++j) acc[j][g] += va * V::load(rows[j] + c + g * V::lanes);
    }
  for (int j = 0; j < M; ++j) {
    T sums[kDotLanes];
    for (int64_t g = 0; g < G; ++g) V::store(sums + g * V::lanes, acc[j][g]);
    for (int64_t l = 0; c + l < n; ++l) sums[l] += a[c + l] * rows[j][c + l];
    out[j] = fold(sums);
  }
}

// y (n) = (accumulate ? y : 0) + Σ_k coef[k·coef_stride] · rows[k] (n), k ascending for
// every element: one pass over y, its sums in registers.
template <typename T>
void combine(const T* coef, int64_t coef_stride, const T* const* rows, int64_t K, int64_t n, T* y,
             bool accumulate) {
  using V = VecWide<T>;
  // Eight sums in flight: each element's chain of K adds is latency-bound alone.
  constexpr int64_t kWide = 8, WW = kWide * V::lanes;
  int64_t i0 = 0;
  for (; i0 + WW <= n; i0 += WW) {
    typename V::type a[kWide];
    for (int64_t g = 0; g < kWide; ++g)
      a[g] = accumulate ? V::load(y + i0 + g * V::lanes) : typename V::type{};
    for (int64_t k = 0; k < K; ++k) {
      const T c = coef[k * coef_stride];
      const T* r = rows[k] + i0;
      for (int64_t g = 0; g < kWide; ++g) a[g] += c * V::load(r + g * V::lanes);
    }
    for (int64_t g = 0; g < kWide; ++g) V::store(y + i0 + g * V::lanes, a[g]);
  }
  constexpr int64_t W = 2 * V::lanes;
  for (; i0 + W <= n; i0 += W) {
    typename V::type a0 = {}, a1 = {};
    if (accumulate) a0 = V::load(y + i0), a1 = V::load(y + i0 + V::lanes);
    for (int64_t k = 0; k < K; ++k) {
      const T c = coef[k * coef_stride];
      const T* r = rows[k] + i0;
      a0 += c * V::load(r);
      a1 += c * V::load(r + V::lanes);
    }
    V::store(y + i0, a0);
    V::store(y + i0 + V::lanes, a1);
  }
  for (int64_t i = i0; i < n; ++i) {
    T acc = accumulate ? y[i] : T(0);
    for (int64_t k = 0; k < K; ++k) acc += coef[k * coef_stride] * rows[k][i];
    y[i] = acc;
  }
}

// A token's new streams, 4 of n elements: out_k = Σ_j H[k·4+j] X_j + ho[k] f, the sums of
// combine() over the rows X_0 … X_3, f with the coefficients H[k·4+0 … 3], ho[k] (from zero,
// rows in order), in one pass that reads each input row once for all four outputs.
template <typename T>
void mix4(const T* X, const T* f, const T* H, const T* ho, int64_t n, T* out) {
  using V = VecWide<T>;
  constexpr int64_t W = V::lanes;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    typename V::type a[4][2] = {};
#pragma GCC unroll 5
    for (int j = 0; j <= 4; ++j) {
      const T* r = j < 4 ? X + j * n + i : f + i;
      const typename V::type r0 = V::load(r), r1 = V::load(r + W);
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const T c = j < 4 ? H[k * 4 + j] : ho[k];
        a[k][0] += c * r0;
        a[k][1] += c * r1;
      }
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      V::store(out + k * n + i, a[k][0]), V::store(out + k * n + i + W, a[k][1]);
  }
  for (; i < n; ++i)
    for (int k = 0; k < 4; ++k) {
      T acc = 0;
      for (int j = 0; j < 4; ++j) acc += H[k * 4 + j] * X[j * n + i];
      acc += ho[k] * f[i];
      out[k * n + i] = acc;
    }
}

#ifdef __AVX512F__
// A token's streams through the post backward, 4 streams of n floats (n a multiple of
// kDotLanes), in one pass over its rows dY (4,n), X (4,n) and f (n):
//   df = Σ_k ho[k] dY_k,  dx_j = (accumulate ? dx_j : 0) + Σ_k H[k·4+j] dY_k   (combine's sums)
//   res[k·4+j] = dY_k · X_j,  post[k] = dY_k · f                              (dot's sums)
// each element and each dot in the order of the unfused kernels above, so with their bits.
inline void post_backward4(const float* dY, const float* X, const float* f, const float* ho,
                           const float* H, int64_t n, float* df, float* dx, bool accumulate,
                           float* res, float* post) {
  v16 acc[4][5] = {};
  for (int64_t c = 0; c < n; c += kDotLanes) {
    v16 y[4];
    for (int k = 0; k < 4; ++k) y[k] = load16(dY + k * n + c);
    v16 g = {};
    for (int k = 0; k < 4; ++k) g += ho[k] * y[k];
    __builtin_memcpy(df + c, &g, sizeof g);
    for (int j = 0; j < 4; ++j) {
      v16 d = accumulate ? load16(dx + j * n + c) : v16{};
      for (int k = 0; k < 4; ++k) d += H[k * 4 + j] * y[k];
      __builtin_memcpy(dx + j * n + c, &d, sizeof d);
    }
    // One row of X (then f) at a time: 20 sums, 4 rows of dY and one more row fit the
    // 32 registers, where all 9 rows at once made the compiler spill sums.
    for (int j = 0; j < 5; ++j) {
      const v16 r = load16(j < 4 ? X + j * n + c : f + c);
      for (int k = 0; k < 4; ++k) acc[k][j] += y[k] * r;
    }
  }
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 4; ++j) res[k * 4 + j] = fold16(acc[k][j]);
    post[k] = fold16(acc[k][4]);
  }
}

// A token's streams through u = Σ_j hp[j] X_j, 4 streams of n floats (n a multiple of
// kDotLanes), in one pass over du, X (4,n) and dx (4,n): dh[j] = du · X_j (dot's sums) and
// dx_j += hp[j] du, as the unfused loops do them.
inline void pre_backward4(const float* du, const float* X, const float* hp, int64_t n, float* dx,
                          float* dh) {
  v16 acc[4] = {};
  for (int64_t c = 0; c < n; c += kDotLanes) {
    const v16 g = load16(du + c);
    for (int j = 0; j < 4; ++j) {
      acc[j] += g * load16(X + j * n + c);
      const v16 d = load16(dx + j * n + c) + hp[j] * g;
      __builtin_memcpy(dx + j * n + c, &d, sizeof d);
    }
  }
  for (int j = 0; j < 4; ++j) dh[j] = fold16(acc[j]);
}
#endif

}  // namespace troupe::model::mhc_rows
