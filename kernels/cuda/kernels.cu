// GPU kernels: FP8 quantisation (1x128 tiles, 128x128 blocks), the simt block-scaled FP8
// GEMM, RMSNorm forward and row softmax, each with its host wrapper below it. The only
// file that nvcc compiles (kept small: nvcc is slow, and builds twice, for sm_89 and sm_90).
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/cuda_kernels.h"

namespace troupe::kernels::cuda {

namespace {

constexpr int block_threads = 256;  // every kernel here; 8 warps
constexpr int warp_threads = 32;

Status launch_status(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return {};
  return {std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")"};
}

// ---- FP8 E4M3, the same arithmetic as kernels/cpu/fp8.cc ----

// scale = amax/448 (IEEE division, as on the CPU); a scale that comes out 0 (an all-zero
// tile, or amax below 448·2^-150) is 1 instead.
__device__ float fp8_scale_of(float amax) {
  const float s = amax / fp8_e4m3_max;
  return s == 0.0f ? 1.0f : s;
}

// Round to nearest even, saturate to ±448 (the hardware cvt.rn.satfinite on sm_89+).
__device__ uint8_t fp8_quantize(float x, float scale) {
  return __nv_cvt_float_to_fp8(x / scale, __NV_SATFINITE, __NV_E4M3);
}

// Exact E4M3 decode: S.EEEE.MMM, bias 7, subnormals m·2^-9, S.1111.111 is NaN.
__device__ float fp8_decode(uint8_t b) {
  const uint32_t e = (b >> 3) & 15u, m = b & 7u;
  float v = e == 0 ? float(m) * 0.001953125f : __uint_as_float(((e + 120u) << 23) | (m << 20));
  if (e == 15 && m == 7) v = __uint_as_float(0x7fc00000u);
  return (b & 0x80) ? -v : v;
}

struct MaxOp {
  static constexpr float identity = 0.0f;  // used on |x| only
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  static constexpr float identity = 0.0f;
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct SignedMaxOp {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};

template <typename Op>
__device__ float warp_reduce(float v, Op op) {
  for (int o = warp_threads / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduces v over the block; every thread gets the result. `identity` pads the missing warps.
template <typename Op>
__device__ float block_reduce(float v, Op op, float identity) {
  __shared__ float partial[block_threads / warp_threads];
  v = warp_reduce(v, op);
  const int warp = int(threadIdx.x) / warp_threads, lane = int(threadIdx.x) % warp_threads;
  __syncthreads();  // the previous call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < block_threads / warp_threads ? partial[lane] : identity;
  return warp_reduce(v, op);
}

// x (M,K): one warp per (row m, K tile kb), 4 values a lane.
__global__ void quantize_act_kernel(const float* x, uint8_t* q, float* scale, int64_t M,
                                    int64_t K) {
  const int64_t tiles = fp8_tiles(K);
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / warp_threads;
  const int lane = int(threadIdx.x) % warp_threads;
  if (warp >= M * tiles) return;  // uniform over the warp
  const int64_t m = warp / tiles, kb = warp % tiles;
  const int64_t base = m * K + kb * fp8_tile;
  const int64_t len = K - kb * fp8_tile < fp8_tile ? K - kb * fp8_tile : fp8_tile;
  float v[fp8_tile / warp_threads];
  float amax = 0.0f;
  for (int i = 0; i < fp8_tile / warp_threads; ++i) {
    const int64_t k = lane + i * warp_threads;
    v[i] = k < len ? x[base + k] : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  const float s = fp8_scale_of(warp_reduce(amax, MaxOp{}));
  for (int i = 0; i < fp8_tile / warp_threads; ++i) {
    const int64_t k = lane + i * warp_threads;
    if (k < len) q[base + k] = fp8_quantize(v[i], s);
  }
  if (lane == 0) scale[kb * M + m] = s;
}

// w (N,K): one block per 128x128 block (kb = blockIdx.x, nb = blockIdx.y), 64 values a thread.
__global__ void quantize_weight_kernel(const float* w, uint8_t* q, float* scale, int64_t N,
                                       int64_t K) {
  constexpr int per_thread = fp8_tile * fp8_tile / block_threads;
  const int64_t kb = blockIdx.x, nb = blockIdx.y;
  float v[per_thread];
  float amax = 0.0f;
  for (int i = 0; i < per_thread; ++i) {
    const int idx = int(threadIdx.x) + i * block_threads;
    const int64_t n = nb * fp8_tile + idx / fp8_tile, k = kb * fp8_tile + idx % fp8_tile;
    v[i] = n < N && k < K ? w[n * K + k] : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  const float s = fp8_scale_of(block_reduce(amax, MaxOp{}, MaxOp::identity));
  for (int i = 0; i < per_thread; ++i) {
    const int idx = int(threadIdx.x) + i * block_threads;
    const int64_t n = nb * fp8_tile + idx / fp8_tile, k = kb * fp8_tile + idx % fp8_tile;
    if (n < N && k < K) q[n * K + k] = fp8_quantize(v[i], s);
  }
  if (threadIdx.x == 0) {
    const int64_t ld = fp8_weight_scale_ld(K);
    scale[nb * ld + kb] = s;
    if (kb == int64_t(gridDim.x) - 1) {
      for (int64_t p = kb + 1; p < ld; ++p) scale[nb * ld + p] = 1.0f;  // padding
    }
  }
}

// ---- simt block-scaled FP8 GEMM: out (M,N) = A (M,K) · B (N,K)ᵀ ----
// A 64x64 output tile per block, 4x4 per thread (rows ty+16i, columns tx+16j). K runs in
// 128-wide scale tiles; each is summed in FP32 from 32-wide chunks decoded into shared
// memory, then promoted: total += partial · sa[m] · sb[block]. 64 divides 128, so one
// output tile lies in a single 128-row weight block and sees one weight scale per kb.
constexpr int gemm_tile = 64, gemm_chunk = 32, gemm_micro = 4;
static_assert(fp8_tile % gemm_tile == 0 && fp8_tile % gemm_chunk == 0);
static_assert((gemm_tile / gemm_micro) * (gemm_tile / gemm_micro) == block_threads);

__device__ void load_chunk(const uint8_t* src, int64_t rows, int64_t K, int64_t r0, int64_t k0,
                           float (*dst)[gemm_tile + 1]) {
  constexpr int per_thread = gemm_tile * gemm_chunk / block_threads;
  for (int i = 0; i < per_thread; ++i) {
    const int idx = int(threadIdx.x) + i * block_threads;
    const int r = idx / gemm_chunk, c = idx % gemm_chunk;
    const bool in = r0 + r < rows && k0 + c < K;
    dst[c][r] = in ? fp8_decode(src[(r0 + r) * K + k0 + c]) : 0.0f;
  }
}

__global__ void fp8_gemm_simt_kernel(const uint8_t* qa, const float* sa, const uint8_t* qb,
                                     const float* sb, float* out, int64_t M, int64_t N, int64_t K) {
  __shared__ float a_s[gemm_chunk][gemm_tile + 1];  // +1: conflict-free transposed stores
  __shared__ float b_s[gemm_chunk][gemm_tile + 1];
  const int64_t m0 = int64_t(blockIdx.y) * gemm_tile, n0 = int64_t(blockIdx.x) * gemm_tile;
  const int ty = int(threadIdx.x) / (gemm_tile / gemm_micro);
  const int tx = int(threadIdx.x) % (gemm_tile / gemm_micro);
  const int64_t ld_sb = fp8_weight_scale_ld(K), nb = n0 / fp8_tile;
  float total[gemm_micro][gemm_micro] = {};
  for (int64_t kb = 0; kb < fp8_tiles(K); ++kb) {
    float part[gemm_micro][gemm_micro] = {};
    for (int64_t k0 = kb * fp8_tile; k0 < K && k0 < (kb + 1) * fp8_tile; k0 += gemm_chunk) {
      load_chunk(qa, M, K, m0, k0, a_s);
      load_chunk(qb, N, K, n0, k0, b_s);
      __syncthreads();
      for (int k = 0; k < gemm_chunk; ++k) {
        float a[gemm_micro], b[gemm_micro];
        for (int i = 0; i < gemm_micro; ++i) a[i] = a_s[k][ty + i * 16];
        for (int j = 0; j < gemm_micro; ++j) b[j] = b_s[k][tx + j * 16];
        for (int i = 0; i < gemm_micro; ++i)
          for (int j = 0; j < gemm_micro; ++j) part[i][j] = fmaf(a[i], b[j], part[i][j]);
      }
      __syncthreads();
    }
    const float s_b = sb[nb * ld_sb + kb];
    for (int i = 0; i < gemm_micro; ++i) {
      const int64_t m = m0 + ty + i * 16;
      const float s_a = m < M ? sa[kb * M + m] : 0.0f;
      for (int j = 0; j < gemm_micro; ++j) total[i][j] += part[i][j] * s_a * s_b;
    }
  }
  for (int i = 0; i < gemm_micro; ++i) {
    for (int j = 0; j < gemm_micro; ++j) {
      const int64_t m = m0 + ty + i * 16, n = n0 + tx + j * 16;
      if (m < M && n < N) out[m * N + n] = total[i][j];
    }
  }
}

// ---- FP32 row kernels: one block per row ----

__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float eps, float* out,
                                       float* rstd, int64_t D) {
  const float* xr = x + int64_t(blockIdx.x) * D;
  float ss = 0.0f;
  for (int64_t d = threadIdx.x; d < D; d += block_threads) ss += xr[d] * xr[d];
  ss = block_reduce(ss, SumOp{}, SumOp::identity);
  const float r = 1.0f / sqrtf(ss / float(D) + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  float* o = out + int64_t(blockIdx.x) * D;
  for (int64_t d = threadIdx.x; d < D; d += block_threads) o[d] = xr[d] * r * (w ? w[d] : 1.0f);
}

__global__ void softmax_rows_kernel(float* x, int64_t D) {
  float* r = x + int64_t(blockIdx.x) * D;
  const float neg_inf = -__int_as_float(0x7f800000);
  float m = neg_inf;
  for (int64_t d = threadIdx.x; d < D; d += block_threads) m = r[d] > m ? r[d] : m;
  m = block_reduce(m, SignedMaxOp{}, neg_inf);
  float s = 0.0f;
  for (int64_t d = threadIdx.x; d < D; d += block_threads) {
    r[d] = r[d] == neg_inf ? 0.0f : expf(r[d] - m);
    s += r[d];
  }
  const float inv = 1.0f / block_reduce(s, SumOp{}, SumOp::identity);
  for (int64_t d = threadIdx.x; d < D; d += block_threads) r[d] *= inv;
}

}  // namespace

Status fp8_quantize_act(const float* d_x, uint8_t* d_q, float* d_scale, int64_t M, int64_t K) {
  if (M < 1 || K < 1) return {};
  const int64_t warps = M * fp8_tiles(K);
  const int64_t blocks = (warps * warp_threads + block_threads - 1) / block_threads;
  quantize_act_kernel<<<unsigned(blocks), block_threads>>>(d_x, d_q, d_scale, M, K);
  return launch_status("fp8_quantize_act");
}

Status fp8_quantize_weight(const float* d_w, uint8_t* d_q, float* d_scale, int64_t N, int64_t K) {
  if (N < 1 || K < 1) return {};
  const dim3 grid(unsigned(fp8_tiles(K)), unsigned(fp8_tiles(N)));
  quantize_weight_kernel<<<grid, block_threads>>>(d_w, d_q, d_scale, N, K);
  return launch_status("fp8_quantize_weight");
}

namespace detail {
Status simt_fp8_gemm(const uint8_t* d_qa, const float* d_sa, const uint8_t* d_qb, const float* d_sb,
                     float* d_out, int64_t M, int64_t N, int64_t K) {
  const dim3 grid(unsigned((N + gemm_tile - 1) / gemm_tile),
                  unsigned((M + gemm_tile - 1) / gemm_tile));
  fp8_gemm_simt_kernel<<<grid, block_threads>>>(d_qa, d_sa, d_qb, d_sb, d_out, M, N, K);
  return launch_status("fp8_gemm (simt)");
}
}  // namespace detail

Status rmsnorm_forward(const float* d_x, const float* d_w, float eps, float* d_out, float* d_rstd,
                       int64_t N, int64_t D) {
  if (N < 1 || D < 1) return {};
  rmsnorm_forward_kernel<<<unsigned(N), block_threads>>>(d_x, d_w, eps, d_out, d_rstd, D);
  return launch_status("rmsnorm_forward");
}

Status softmax_rows(float* d_x, int64_t N, int64_t D) {
  if (N < 1 || D < 1) return {};
  softmax_rows_kernel<<<unsigned(N), block_threads>>>(d_x, D);
  return launch_status("softmax_rows");
}

}  // namespace troupe::kernels::cuda
