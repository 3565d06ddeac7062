#pragma once
// GPU kernels, host API. Plain C++ (no CUDA types), so g++ code includes it; the kernels
// live in kernels.cu, the cuBLASLt GEMM in fp8_gemm_lt.cc. Shapes use the legend of
// kernels/README.md. Pointers named d_* are device memory. Every call is enqueued on the
// default stream; results are visible after synchronize() (or a download, which waits).
// Errors come back as a Status naming the call and the CUDA/cuBLAS error; nothing exits.
#include <cstddef>
#include <cstdint>
#include <string>

namespace troupe::kernels::cuda {

struct [[nodiscard]] Status {
  std::string error;  // empty on success, else "<what failed>: <why>"
  bool ok() const { return error.empty(); }
};

// True when a CUDA device is usable (the current one is sm_89 or newer). Otherwise false,
// and *why (if non-null) says why, e.g. "no CUDA device: cudaGetDeviceCount returned 100
// (no CUDA-capable device is detected)". Cheap after the first call; safe without a GPU.
bool cuda_available(std::string* why);

// One allocation of device memory; move-only, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  Status allocate(size_t bytes);                    // frees what was held first; contents undefined
  Status upload(const void* host, size_t bytes);    // bytes <= size()
  Status download(void* host, size_t bytes) const;  // waits for queued work
  size_t size() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

Status synchronize();  // waits for all queued work; reports an asynchronous kernel error

// ---- FP8 (SPEC-model.md §6): E4M3, scale = amax/448 per tile (1 where that is 0) ----
// Codes are OCP E4M3 bytes (round to nearest even, saturate to ±448), bit-identical to
// kernels/cpu/fp8.h. A dequantised value is decode(q) * scale.
//
// The scale layouts are the ones cuBLASLt's block-scaled FP8 GEMM reads on Hopper, so the
// quantiser's output feeds the GEMM with no copy:
//  - activations (M,K), 1x128 tiles along K: "outer-dim-major", the scale of row m and
//    K tile kb at scale[kb*M + m]; ceil(K/128)*M floats (cuBLASLt VEC128_32F).
//  - weights (N,K), 128x128 blocks: the scale of block (nb, kb) at scale[nb*ld + kb],
//    ld = ceil(K/128) rounded up to a multiple of 4 (16-byte rows; the padding is written
//    as 1); ceil(N/128)*ld floats (cuBLASLt BLK128x128_32F).
inline constexpr int64_t fp8_tile = 128;
inline constexpr float fp8_e4m3_max = 448.0f;
constexpr int64_t fp8_tiles(int64_t n) {
  return (n + fp8_tile - 1) / fp8_tile;
}
constexpr int64_t fp8_act_scale_count(int64_t M, int64_t K) {
  return fp8_tiles(K) * M;
}
constexpr int64_t fp8_weight_scale_ld(int64_t K) {
  return (fp8_tiles(K) + 3) / 4 * 4;
}
constexpr int64_t fp8_weight_scale_count(int64_t N, int64_t K) {
  return fp8_tiles(N) * fp8_weight_scale_ld(K);
}

// x (M,K) -> q (M,K) E4M3 codes, scale (activation layout above). Any K >= 1 (a last,
// shorter tile has its own amax).
Status fp8_quantize_act(const float* d_x, uint8_t* d_q, float* d_scale, int64_t M, int64_t K);
// w (N,K) -> q (N,K) E4M3 codes, scale (weight layout above). Any N, K >= 1.
Status fp8_quantize_weight(const float* d_w, uint8_t* d_q, float* d_scale, int64_t N, int64_t K);

// How fp8_gemm runs. cublaslt: cuBLASLt FP8 tensor cores with VEC128_32F (A) and
// BLK128x128_32F (B) scales, needs sm_90, K % 128 == 0, M % 4 == 0, N % 16 == 0.
// simt: our own kernel (CUDA cores, no tensor cores): decodes FP8 to FP32 in shared memory,
// accumulates each 128-wide K tile in FP32 and promotes it with sa*sb into the FP32 total
// (the V3 recipe, without the MMA); any shape. automatic: cublaslt where it applies and
// cuBLASLt offers an algorithm, otherwise simt.
enum class Fp8GemmPath { automatic, cublaslt, simt };
const char* to_string(Fp8GemmPath p);

// out (M,N) = dequant(qa, sa) (M,K) · dequant(qb, sb)ᵀ (K,N), FP32; qa/sa from
// fp8_quantize_act, qb/sb (N,K) from fp8_quantize_weight. *used (if non-null) receives
// the path that ran. Asking for cublaslt where it does not apply is an error, not a
// silent fallback.
Status fp8_gemm(const uint8_t* d_qa, const float* d_sa, const uint8_t* d_qb, const float* d_sb,
                float* d_out, int64_t M, int64_t N, int64_t K,
                Fp8GemmPath path = Fp8GemmPath::automatic, Fp8GemmPath* used = nullptr);

// ---- FP32 row kernels, same contracts as kernels/cpu/ops.h ----
// out (N,D) = x / sqrt(mean(x²) + eps) ⊙ w (w may be null); rstd (N) = 1/sqrt(mean(x²)+eps).
Status rmsnorm_forward(const float* d_x, const float* d_w, float eps, float* d_out, float* d_rstd,
                       int64_t N, int64_t D);
// In-place row softmax of x (N,D) over D; entries equal to -inf get probability 0.
Status softmax_rows(float* d_x, int64_t N, int64_t D);

// ---- internal: the cuBLASLt path (fp8_gemm_lt.cc), called by fp8_gemm ----
namespace detail {
// Whether the shape and device allow the cuBLASLt path (reason in *why when not).
bool lt_applies(int64_t M, int64_t N, int64_t K, std::string* why);
// Runs it; Status names the cuBLASLt error, or "no algorithm" if the heuristic has none.
Status lt_fp8_gemm(const uint8_t* d_qa, const float* d_sa, const uint8_t* d_qb, const float* d_sb,
                   float* d_out, int64_t M, int64_t N, int64_t K);
Status simt_fp8_gemm(const uint8_t* d_qa, const float* d_sa, const uint8_t* d_qb, const float* d_sb,
                     float* d_out, int64_t M, int64_t N, int64_t K);
}  // namespace detail

}  // namespace troupe::kernels::cuda
