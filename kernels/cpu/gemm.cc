#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <new>

#include "kernels/cpu/gemm_kernel.h"

// Blocked GEMM in the Goto/BLIS shape: B is packed into kNr-wide column panels, A into
// kMr-high row panels, both zero-padded to whole tiles so every tile, edges included, runs
// the one microkernel of gemm_kernel.h. Each output element is the chain
//   s = 0; for k = 0..K-1: s = fma(op(A)[i,k], op(B)[k,j], s);  C[i,j] = beta*C[i,j] + s
// (for beta == 0, C[i,j] = s without reading C). K blocks carry s in a buffer between
// them, so splitting K changes no bits; M, N, tiles and edges never enter the order.
// Single-threaded: callers parallelise across micro-batches.

namespace troupe::kernels {
namespace {

using detail::kMr;
using detail::kNr;
using detail::TileOut;

// Block sizes. kc: a B micro-panel (kc × kNr) stays in the 32 KiB L1 while a row of tiles
// runs. mc: an A block (mc × kc) stays in the 512 KiB L2. nc: bounds the packed B and
// carry buffers.
template <typename T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int64_t kc_max = 256;
  static constexpr int64_t mc = 144;
  static constexpr int64_t nc = 512;
};
template <>
struct Blocking<double> {
  static constexpr int64_t kc_max = 256;
  static constexpr int64_t mc = 72;
  static constexpr int64_t nc = 256;
};
static_assert(Blocking<float>::mc % kMr == 0 && Blocking<double>::mc % kMr == 0);
static_assert(Blocking<float>::nc % kNr<float> == 0 && Blocking<double>::nc % kNr<double> == 0);

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

constexpr size_t buffer_alignment_bytes = 64;  // one cache line; ≥ the 32 B of a ymm load

// A growable, cache-line-aligned scratch array. Only its capacity survives between calls:
// every element a call reads was written earlier in the same call.
template <typename T>
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(data_); }
  T* get(int64_t n) {
    if (n > capacity_) {
      std::free(data_);
      size_t bytes = round_up(n * int64_t(sizeof(T)), buffer_alignment_bytes);
      data_ = static_cast<T*>(std::aligned_alloc(buffer_alignment_bytes, bytes));
      if (!data_) throw std::bad_alloc();
      capacity_ = n;
    }
    return data_;
  }

 private:
  T* data_ = nullptr;
  int64_t capacity_ = 0;
};

template <typename T>
struct Buffers {
  Scratch<T> a;      // packed A block: mc_pad × kc
  Scratch<T> b;      // packed B panel: K × nc_pad
  Scratch<T> carry;  // partial sums between K blocks: mc_pad × nc_pad
};

template <typename T>
Buffers<T>& thread_buffers() {
  thread_local Buffers<T> buffers;
  return buffers;
}

// Packs rows i0..i0+mc of op(A), columns p0..p0+kc, into kMr-row panels, each kc × kMr
// k-major; rows past mc are zero.
template <typename T>
void pack_a(Trans ta, const T* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
            T* Ap) {
  for (int64_t ir = 0; ir < mc; ir += kMr) {
    const int rows = int(std::min<int64_t>(kMr, mc - ir));
    T* dst = Ap + ir * kc;
    if (ta == Trans::T) {
      const T* src = A + p0 * lda + i0 + ir;
      for (int64_t k = 0; k < kc; ++k, src += lda, dst += kMr) {
        for (int r = 0; r < rows; ++r) dst[r] = src[r];
        for (int r = rows; r < kMr; ++r) dst[r] = T(0);
      }
    } else if (rows == kMr) {
      const T* src = A + (i0 + ir) * lda + p0;
      for (int64_t k = 0; k < kc; ++k, dst += kMr) {
#pragma GCC unroll 6
        for (int r = 0; r < kMr; ++r) dst[r] = src[r * lda + k];
      }
    } else {
      const T* src = A + (i0 + ir) * lda + p0;
      for (int64_t k = 0; k < kc; ++k, dst += kMr) {
        for (int r = 0; r < rows; ++r) dst[r] = src[r * lda + k];
        for (int r = rows; r < kMr; ++r) dst[r] = T(0);
      }
    }
  }
}

// Packs columns j0..j0+nc of op(B), all K rows, into kNr-column panels, each K × kNr
// k-major; columns past nc are zero.
template <typename T>
void pack_b(Trans tb, const T* B, int64_t ldb, int64_t j0, int64_t nc, int64_t K, T* Bp) {
  constexpr int nr = kNr<T>;
  for (int64_t jr = 0; jr < nc; jr += nr) {
    const int cols = int(std::min<int64_t>(nr, nc - jr));
    T* dst = Bp + jr * K;
    if (tb == Trans::N) {
      const T* src = B + j0 + jr;
      for (int64_t k = 0; k < K; ++k, src += ldb, dst += nr) {
        for (int c = 0; c < cols; ++c) dst[c] = src[c];
        for (int c = cols; c < nr; ++c) dst[c] = T(0);
      }
    } else {
      const T* src = B + (j0 + jr) * ldb;
      for (int64_t k = 0; k < K; ++k, dst += nr) {
        for (int c = 0; c < cols; ++c) dst[c] = src[c * ldb + k];
        for (int c = cols; c < nr; ++c) dst[c] = T(0);
      }
    }
  }
}

// Runs every tile of one (mc × nc) block of C over the K block pc..pc+kc.
template <typename T>
void run_block(const T* Ap, const T* Bp, T* carry, int64_t K, int64_t pc, int64_t kc, int64_t mc,
               int64_t nc, T beta, T* C, int64_t ldc) {
  constexpr int nr = kNr<T>;
  const int64_t tiles_m = ceil_div(mc, kMr);
  const bool first = pc == 0;
  const bool last = pc + kc == K;
  for (int64_t jr = 0; jr < nc; jr += nr) {
    const T* b = Bp + jr * K + pc * nr;
    for (int64_t ir = 0; ir < mc; ir += kMr) {
      T* tile_carry = carry ? carry + ((jr / nr) * tiles_m + ir / kMr) * (kMr * nr) : nullptr;
      const TileOut<T> out{C + ir * ldc + jr, ldc, beta, int(std::min<int64_t>(kMr, mc - ir)),
                           int(std::min<int64_t>(nr, nc - jr))};
      detail::micro_kernel<T>(kc, Ap + ir * kc, b, first ? nullptr : tile_carry,
                              last ? nullptr : tile_carry, out);
    }
  }
}

// K == 0: s = 0 for every element, so C = beta*C (and C = 0 for beta == 0).
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
}

}  // namespace

template <typename T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  using Blk = Blocking<T>;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_c(M, N, beta, C, ldc);
  // Equal K blocks; their number depends on K alone (and the carry makes it bit-neutral).
  const int64_t k_blocks = ceil_div(K, Blk::kc_max);
  const int64_t kc_step = ceil_div(K, k_blocks);
  Buffers<T>& buf = thread_buffers<T>();
  for (int64_t jc = 0; jc < N; jc += Blk::nc) {
    const int64_t nc = std::min(Blk::nc, N - jc);
    const int64_t nc_pad = round_up(nc, kNr<T>);
    T* Bp = buf.b.get(nc_pad * K);
    pack_b(tb, B, ldb, jc, nc, K, Bp);
    for (int64_t ic = 0; ic < M; ic += Blk::mc) {
      const int64_t mc = std::min(Blk::mc, M - ic);
      const int64_t mc_pad = round_up(mc, kMr);
      T* carry = k_blocks > 1 ? buf.carry.get(mc_pad * nc_pad) : nullptr;
      T* Ap = buf.a.get(mc_pad * kc_step);
      for (int64_t pc = 0; pc < K; pc += kc_step) {
        const int64_t kc = std::min(kc_step, K - pc);
        pack_a(ta, A, lda, ic, mc, pc, kc, Ap);
        run_block(Ap, Bp, carry, K, pc, kc, mc, nc, beta, C + ic * ldc + jc, ldc);
      }
    }
  }
}

template void gemm<float>(Trans, Trans, int64_t, int64_t, int64_t, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(Trans, Trans, int64_t, int64_t, int64_t, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

void blas_sgemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta == Trans::N ? CblasNoTrans : CblasTrans,
              tb == Trans::N ? CblasNoTrans : CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C,
              ldc);
}

void blas_set_num_threads(int n) { openblas_set_num_threads(n); }
int blas_num_threads() { return openblas_get_num_threads(); }

}  // namespace troupe::kernels
