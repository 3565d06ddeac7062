#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <new>

#include "kernels/cpu/gemm_kernel.h"
#include "kernels/cpu/gemm_pack.h"

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
using detail::pack_a;
using detail::pack_b;
using detail::pack_slack;
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

constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
constexpr int64_t round_up(int64_t a, int64_t b) {
  return ceil_div(a, b) * b;
}

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
      capacity_ = 0;
      const size_t bytes = round_up(n * int64_t(sizeof(T)), buffer_alignment_bytes);
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
  Scratch<T> b;      // packed B block: kc × nc_pad
  Scratch<T> carry;  // partial sums between K blocks: M_pad × nc_pad
};

template <typename T>
Buffers<T>& thread_buffers() {
  thread_local Buffers<T> buffers;
  return buffers;
}

// Runs every tile of one (mc × nc) block of C over one K block. carry (nullable): this
// block's partial sums, one kMr × kNr tile after another, jr-major; first: start from zero
// instead; last: finish into C instead of the carry.
template <typename T>
void run_block(const T* Ap, const T* Bp, T* carry, bool first, bool last, int64_t kc, int64_t mc,
               int64_t nc, T beta, T* C, int64_t ldc) {
  constexpr int nr = kNr<T>;
  constexpr int64_t tile = kMr * nr;
  const int64_t tiles_m = ceil_div(mc, kMr);
  for (int64_t jr = 0; jr < nc; jr += nr) {
    const T* b = Bp + jr * kc;
    T* carry_col = carry ? carry + (jr / nr) * tiles_m * tile : nullptr;
    for (int64_t ir = 0; ir < mc; ir += kMr) {
      T* tile_carry = carry ? carry_col + (ir / kMr) * tile : nullptr;
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
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  using Blk = Blocking<T>;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_c(M, N, beta, C, ldc);
  // Equal K blocks; their number depends on K alone (and the carry makes it bit-neutral).
  const int64_t k_blocks = ceil_div(K, Blk::kc_max);
  const int64_t kc_step = ceil_div(K, k_blocks);
  Buffers<T>& buf = thread_buffers<T>();
  const int64_t m_pad = round_up(M, kMr);
  for (int64_t jc = 0; jc < N; jc += Blk::nc) {
    const int64_t nc = std::min(Blk::nc, N - jc);
    const int64_t nc_pad = round_up(nc, kNr<T>);
    T* carry = k_blocks > 1 ? buf.carry.get(m_pad * nc_pad) : nullptr;
    T* Bp = buf.b.get(nc_pad * kc_step + pack_slack);
    T* Ap = buf.a.get(std::min(Blk::mc, m_pad) * kc_step + pack_slack);
    for (int64_t pc = 0; pc < K; pc += kc_step) {
      const int64_t kc = std::min(kc_step, K - pc);
      pack_b(tb, B, ldb, jc, nc, pc, kc, Bp);
      for (int64_t ic = 0; ic < M; ic += Blk::mc) {
        const int64_t mc = std::min(Blk::mc, M - ic);
        pack_a(ta, A, lda, ic, mc, pc, kc, Ap);
        // The carry holds the tiles of rows 0..ic-1 first: ic/kMr tile rows of nc_pad.
        T* block_carry = carry ? carry + ic * nc_pad : nullptr;
        run_block(Ap, Bp, block_carry, pc == 0, pc + kc == K, kc, mc, nc, beta, C + ic * ldc + jc,
                  ldc);
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

void blas_set_num_threads(int n) {
  openblas_set_num_threads(n);
}

}  // namespace troupe::kernels
