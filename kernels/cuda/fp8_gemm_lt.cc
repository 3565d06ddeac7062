// The cuBLASLt path of fp8_gemm: FP8 (E4M3) tensor cores with DeepSeek-V3 block scaling,
// VEC128_32F (one FP32 scale per 1x128 tile) on the activations and BLK128x128_32F on the
// weights; cuBLASLt accumulates in FP32 and applies the scales per 128-wide K block.
//
// cuBLASLt is column-major. Our row-major out (M,N) = A (M,K) · B (N,K)ᵀ is its
// column-major outᵀ (N,M) = op(B') · A' with B' = our B seen as column-major (K,N), transposed
// ("T"), and A' = our A seen as column-major (K,M) ("N"): the "TN" layout Hopper FP8 needs.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "kernels/cuda/cuda_kernels.h"

namespace troupe::kernels::cuda::detail {

namespace {

// cuBLAS's advice for Hopper is a 32 MiB workspace; split-K algorithms use it.
constexpr size_t lt_workspace_bytes = size_t(32) << 20;
// cuBLASLt FP8 operands, scales and output must be 16-byte aligned.
constexpr uintptr_t lt_alignment_bytes = 16;

std::string lt_error(const char* what, cublasStatus_t s) {
  return std::string(what) + ": " + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) +
         ")";
}

#define TROUPE_LT_TRY(call)                             \
  do {                                                  \
    const cublasStatus_t troupe_lt_status = (call);     \
    if (troupe_lt_status != CUBLAS_STATUS_SUCCESS)      \
      return Status{lt_error(#call, troupe_lt_status)}; \
  } while (0)

// One handle and workspace per process (the current device at first use), and the
// algorithm chosen for each shape, so a repeated GEMM skips the heuristic query.
struct LtState {
  std::mutex mu;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::string init_error;
  std::map<std::tuple<int64_t, int64_t, int64_t>, cublasLtMatmulAlgo_t> algos;
};

LtState& lt_state() {
  static LtState* st = [] {
    auto* s = new LtState;  // never destroyed: outlives every caller, even at exit
    cublasStatus_t e = cublasLtCreate(&s->handle);
    if (e != CUBLAS_STATUS_SUCCESS) {
      s->init_error = lt_error("cublasLtCreate", e);
    } else if (cudaMalloc(&s->workspace, lt_workspace_bytes) != cudaSuccess) {
      s->init_error = "cudaMalloc of the cuBLASLt workspace failed";
    }
    return s;
  }();
  return *st;
}

// Owns the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

template <typename V>
cublasStatus_t set_attr(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attr,
                        const V& value) {
  return cublasLtMatmulDescSetAttribute(op, attr, &value, sizeof(value));
}

Status make_descs(LtDescs& ds, const float* d_sa, const float* d_sb, int64_t M, int64_t N,
                  int64_t K) {
  TROUPE_LT_TRY(cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  TROUPE_LT_TRY(set_attr(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T));
  TROUPE_LT_TRY(set_attr(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N));
  // cuBLASLt's A is our weights (128x128 blocks), its B our activations (1x128 tiles).
  const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const int32_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  TROUPE_LT_TRY(set_attr(ds.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, a_mode));
  TROUPE_LT_TRY(set_attr(ds.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, b_mode));
  TROUPE_LT_TRY(set_attr(ds.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, d_sb));
  TROUPE_LT_TRY(set_attr(ds.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, d_sa));
  TROUPE_LT_TRY(cublasLtMatrixLayoutCreate(&ds.a, CUDA_R_8F_E4M3, K, N, K));
  TROUPE_LT_TRY(cublasLtMatrixLayoutCreate(&ds.b, CUDA_R_8F_E4M3, K, M, K));
  TROUPE_LT_TRY(cublasLtMatrixLayoutCreate(&ds.d, CUDA_R_32F, N, M, N));
  TROUPE_LT_TRY(cublasLtMatmulPreferenceCreate(&ds.pref));
  const uint64_t ws = lt_workspace_bytes;
  TROUPE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(
      ds.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  return {};
}

// The algorithm for this shape: cached, else the heuristic's first choice. An error whose
// text starts with "no algorithm" means cuBLASLt cannot run the problem (fp8_gemm then
// falls back to the simt kernel in automatic mode).
Status find_algo(LtState& st, const LtDescs& ds, int64_t M, int64_t N, int64_t K,
                 cublasLtMatmulAlgo_t* algo) {
  std::lock_guard<std::mutex> lock(st.mu);
  const auto key = std::make_tuple(M, N, K);
  if (auto it = st.algos.find(key); it != st.algos.end()) {
    *algo = it->second;
    return {};
  }
  cublasLtMatmulHeuristicResult_t result = {};
  int found = 0;
  const cublasStatus_t e = cublasLtMatmulAlgoGetHeuristic(st.handle, ds.op, ds.a, ds.b, ds.d, ds.d,
                                                          ds.pref, 1, &result, &found);
  if (e != CUBLAS_STATUS_SUCCESS) {
    return {"no algorithm: " + lt_error("cublasLtMatmulAlgoGetHeuristic", e)};
  }
  if (found == 0) return {"no algorithm: cuBLASLt heuristic returned none"};
  st.algos.emplace(key, result.algo);
  *algo = result.algo;
  return {};
}

}  // namespace

bool lt_applies(int64_t M, int64_t N, int64_t K, std::string* why) {
  std::string reason;
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();
    reason = "no usable CUDA device";
  } else if (major < 9) {
    reason = "block-scaled FP8 in cuBLASLt needs sm_90 or newer (device is sm_" +
             std::to_string(major) + "x)";
  } else if (K % fp8_tile != 0 || M % 4 != 0 || N % 16 != 0) {
    reason = "shape M=" + std::to_string(M) + " N=" + std::to_string(N) +
             " K=" + std::to_string(K) + " is not K%128 == 0, M%4 == 0, N%16 == 0";
  }
  if (why) *why = reason;
  return reason.empty();
}

Status lt_fp8_gemm(const uint8_t* d_qa, const float* d_sa, const uint8_t* d_qb, const float* d_sb,
                   float* d_out, int64_t M, int64_t N, int64_t K) {
  for (const void* p : {static_cast<const void*>(d_qa), static_cast<const void*>(d_sa),
                        static_cast<const void*>(d_qb), static_cast<const void*>(d_sb),
                        static_cast<const void*>(d_out)}) {
    if (reinterpret_cast<uintptr_t>(p) % lt_alignment_bytes != 0) {
      return {"no algorithm: an operand is not 16-byte aligned"};
    }
  }
  LtState& st = lt_state();
  if (!st.init_error.empty()) return {st.init_error};
  LtDescs ds;
  if (Status s = make_descs(ds, d_sa, d_sb, M, N, K); !s.ok()) {
    return {"no algorithm: " + s.error};  // this cuBLASLt lacks the block-scaled modes
  }
  cublasLtMatmulAlgo_t algo;
  if (Status s = find_algo(st, ds, M, N, K, &algo); !s.ok()) return s;
  const float alpha = 1.0f, beta = 0.0f;
  TROUPE_LT_TRY(cublasLtMatmul(st.handle, ds.op, &alpha, d_qb, ds.a, d_qa, ds.b, &beta, d_out, ds.d,
                               d_out, ds.d, &algo, st.workspace, lt_workspace_bytes, nullptr));
  return {};
}

}  // namespace troupe::kernels::cuda::detail
