// gpu_bench: block-scaled FP8 GEMM TFLOP/s (cuBLASLt path and our simt kernel) next to its
// anchor, cuBLASLt BF16 GEMM with the same FP32 output, as ratios from one run.
// Usage: gpu_bench [iterations]   (default 20). Without a GPU it says why and exits 0.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "tests/cuda/cuda_test_util.h"

namespace cu = troupe::kernels::cuda;

namespace {

struct Shape {
  int64_t M, N, K;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "gpu_bench: %s\n", what.c_str());
  std::exit(1);
}

void check(const cu::Status& s) {
  if (!s.ok()) die(s.error);
}

// Mean milliseconds of fn over `iterations` runs, after 3 warm-up runs.
double time_ms(int iterations, const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  for (int i = 0; i < iterations; ++i) fn();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  check(cu::synchronize());
  return double(ms) / iterations;
}

uint16_t to_bf16(float f) {  // round to nearest even; inputs are finite
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// The anchor: cuBLASLt BF16 x BF16 -> FP32, FP32 compute, same TN layout as the FP8 path.
struct Bf16Gemm {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo = {};
  cu::DeviceBuffer workspace;
  static constexpr size_t workspace_bytes = size_t(32) << 20;

  Bf16Gemm(int64_t M, int64_t N, int64_t K) {
    const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    check(workspace.allocate(workspace_bytes));
    bool ok = cublasLtCreate(&handle) == CUBLAS_STATUS_SUCCESS &&
              cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0 &&
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)) == 0 &&
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)) == 0 &&
              cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, K, N, K) == 0 &&
              cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, K, M, K) == 0 &&
              cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, N, M, N) == 0;
    cublasLtMatmulPreference_t pref = nullptr;
    const uint64_t ws = workspace_bytes;
    cublasLtMatmulHeuristicResult_t result = {};
    int found = 0;
    ok = ok && cublasLtMatmulPreferenceCreate(&pref) == 0 &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                              sizeof(ws)) == 0 &&
         cublasLtMatmulAlgoGetHeuristic(handle, op, a, b, d, d, pref, 1, &result, &found) == 0 &&
         found > 0;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) die("cuBLASLt BF16 GEMM setup failed");
    algo = result.algo;
  }
  ~Bf16Gemm() {
    cublasLtMatrixLayoutDestroy(d);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(handle);
  }
  void run(const void* A, const void* B, float* out) {
    const float alpha = 1.0f, beta = 0.0f;
    if (cublasLtMatmul(handle, op, &alpha, B, a, A, b, &beta, out, d, out, d, &algo,
                       workspace.as<void>(), workspace_bytes, nullptr) != CUBLAS_STATUS_SUCCESS) {
      die("cuBLASLt BF16 GEMM failed");
    }
  }
};

void bench_shape(const Shape& s, int iterations) {
  const int64_t M = s.M, N = s.N, K = s.K;
  const std::vector<float> a = troupe::kernels::test::random_values<float>(M * K, 1);
  const std::vector<float> b = troupe::kernels::test::random_values<float>(N * K, 2);
  cu::DeviceBuffer da = cu::test::upload(a), db = cu::test::upload(b), qa, qb, sa, sb, out;
  check(qa.allocate(size_t(M * K)));
  check(qb.allocate(size_t(N * K)));
  check(sa.allocate(size_t(cu::fp8_act_scale_count(M, K)) * 4));
  check(sb.allocate(size_t(cu::fp8_weight_scale_count(N, K)) * 4));
  check(out.allocate(size_t(M * N) * 4));
  const double quant_ms = time_ms(iterations, [&] {
    check(cu::fp8_quantize_act(da.as<float>(), qa.as<uint8_t>(), sa.as<float>(), M, K));
  });
  check(cu::fp8_quantize_weight(db.as<float>(), qb.as<uint8_t>(), sb.as<float>(), N, K));
  auto fp8 = [&](cu::Fp8GemmPath path) {
    check(cu::fp8_gemm(qa.as<uint8_t>(), sa.as<float>(), qb.as<uint8_t>(), sb.as<float>(),
                       out.as<float>(), M, N, K, path));
  };
  const double flop = 2.0 * double(M) * double(N) * double(K);
  auto tflops = [&](double ms) { return flop / (ms * 1e-3) / 1e12; };

  std::string why;
  double lt = NAN;
  if (cu::detail::lt_applies(M, N, K, &why)) {
    lt = tflops(time_ms(iterations, [&] { fp8(cu::Fp8GemmPath::cublaslt); }));
  }
  const std::vector<float> lt_out = cu::test::download<float>(out);
  const double simt =
      tflops(time_ms(std::max(1, iterations / 4), [&] { fp8(cu::Fp8GemmPath::simt); }));
  const std::vector<float> simt_out = cu::test::download<float>(out);

  std::vector<uint16_t> a16(a.size()), b16(b.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = to_bf16(a[i]);
  for (size_t i = 0; i < b.size(); ++i) b16[i] = to_bf16(b[i]);
  cu::DeviceBuffer da16 = cu::test::upload(a16), db16 = cu::test::upload(b16);
  Bf16Gemm bf16(M, N, K);
  const double anchor = tflops(
      time_ms(iterations, [&] { bf16.run(da16.as<void>(), db16.as<void>(), out.as<float>()); }));

  std::printf("gemm %ldx%ldx%ld (MxNxK)  cuBLAS BF16 (anchor) %.1f TFLOP/s\n", long(M), long(N),
              long(K), anchor);
  if (std::isnan(lt)) {
    std::printf("  fp8 cublaslt: not run (%s)\n", why.c_str());
  } else {
    std::printf("  fp8 cublaslt %.1f TFLOP/s  ratio %.2f x BF16   (agrees with simt to %.1e)\n", lt,
                lt / anchor, cu::test::max_rel_diff(lt_out, simt_out));
  }
  std::printf("  fp8 simt     %.1f TFLOP/s  ratio %.2f x BF16\n", simt, simt / anchor);
  std::printf("  fp8 quantize (M,K) 1x128: %.3f ms, %.0f GB/s\n", quant_ms,
              double(M * K) * 5.0 / (quant_ms * 1e-3) / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!cu::cuda_available(&why)) {
    std::printf("gpu_bench: skipped: %s\n", why.c_str());
    return 0;
  }
  const int iterations = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("gpu_bench: %s (sm_%d%d), %d iterations\n", prop.name, prop.major, prop.minor,
              iterations);
  for (const Shape& s : {Shape{4096, 4096, 4096}, Shape{8192, 7168, 2048}}) {
    bench_shape(s, iterations);
  }
  return 0;
}
