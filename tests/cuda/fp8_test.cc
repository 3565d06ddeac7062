// GPU FP8 against the CPU emulation (kernels/cpu/fp8.h): quantisation bit for bit (codes
// and scales), the block-scaled GEMM to 1e-3 of the output's scale on both paths.
// Skips without a GPU.
#include "kernels/cpu/fp8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "tests/cuda/cuda_test_util.h"

namespace troupe::kernels::cuda {

// Names the path in gtest's failure messages.
void PrintTo(Fp8GemmPath p, std::ostream* os) {
  *os << to_string(p);
}

namespace {

using test::download;
using test::upload;

// ---- the CPU side, in the GPU's scale layouts (cuda_kernels.h) ----

struct Quantized {
  std::vector<uint8_t> q;
  std::vector<float> scale;  // GPU layout
};

// kernels/cpu/fp8.h's quantisation, with its scales moved to the GPU layouts.
// Activations (M,K), 1x128 tiles: the CPU's (m, kb) at [m*tiles + kb] goes to [kb*M + m].
Quantized cpu_quantize_act(const std::vector<float>& x, int64_t M, int64_t K) {
  Quantized r{std::vector<uint8_t>(x.size()), std::vector<float>(fp8_act_scale_count(M, K))};
  std::vector<float> s(size_t(fp8_scale_count(M, K, Fp8Tiling::RowTiles)));
  fp8_quantize(x.data(), M, K, Fp8Tiling::RowTiles, Fp8Format::E4M3, r.q.data(), s.data());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t kb = 0; kb < fp8_tiles(K); ++kb) r.scale[kb * M + m] = s[m * fp8_tiles(K) + kb];
  return r;
}

// Weights (N,K), 128x128 blocks: (nb, kb) at [nb*tiles + kb] goes to [nb*ld + kb], padding 1.
Quantized cpu_quantize_weight(const std::vector<float>& w, int64_t N, int64_t K) {
  Quantized r{std::vector<uint8_t>(w.size()), std::vector<float>(fp8_weight_scale_count(N, K))};
  std::vector<float> s(size_t(fp8_scale_count(N, K, Fp8Tiling::Blocks)));
  fp8_quantize(w.data(), N, K, Fp8Tiling::Blocks, Fp8Format::E4M3, r.q.data(), s.data());
  std::fill(r.scale.begin(), r.scale.end(), 1.0f);
  for (int64_t nb = 0; nb < fp8_tiles(N); ++nb)
    for (int64_t kb = 0; kb < fp8_tiles(K); ++kb)
      r.scale[nb * fp8_weight_scale_ld(K) + kb] = s[nb * fp8_tiles(K) + kb];
  return r;
}

// Test data: uniform values whose magnitude changes by row (1e-3 … 1e3), so tiles have very
// different scales; one all-zero 128-wide tile; and, where the shape allows, a tile with
// amax 448 (scale exactly 1) holding the E4M3 rounding cases: ties to even, subnormals,
// underflow to zero, negative zero; and a tile of denormal floats.
std::vector<float> fp8_test_data(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> x = kernels::test::random_values<float>(rows * cols, seed);
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::pow(10.0f, float(r % 7) - 3.0f);
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] *= mag;
  }
  if (rows >= 2 && cols >= 256) std::fill_n(x.begin() + cols + 128, 128, 0.0f);
  if (rows >= 4 && cols >= 128) {  // amax/448 underflows to 0: the tile's scale is 1
    for (int64_t c = 0; c < 128; ++c) x[3 * cols + c] = (c % 2 ? -1e-44f : 3e-45f);
  }
  if (rows >= 3 && cols >= 16) {
    const float cases[] = {448.0f,  1.0625f, 1.1875f, -1.0625f,    0.0009765625f, -0.0029296875f,
                           3.0e-6f, 240.0f,  248.0f,  0.01953125f, 17.0f,         -19.0f,
                           -0.0f,   447.9f,  -440.0f, 0.0f};
    std::copy(std::begin(cases), std::end(cases), x.begin() + 2 * cols);
  }
  return x;
}

#define SKIP_WITHOUT_GPU()                            \
  do {                                                \
    std::string why_;                                 \
    if (!cuda_available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

TEST(CudaFp8, QuantizeActMatchesCpuBitwise) {
  SKIP_WITHOUT_GPU();
  for (const auto& [M, K] :
       {std::pair<int64_t, int64_t>{1, 1}, {3, 128}, {5, 300}, {64, 1024}, {130, 7168}}) {
    SCOPED_TRACE("M=" + std::to_string(M) + " K=" + std::to_string(K));
    const std::vector<float> x = fp8_test_data(M, K, 31);
    const Quantized want = cpu_quantize_act(x, M, K);
    DeviceBuffer dx = upload(x), dq = upload(want.q), ds = upload(want.scale);
    Status s = fp8_quantize_act(dx.as<float>(), dq.as<uint8_t>(), ds.as<float>(), M, K);
    ASSERT_TRUE(s.ok()) << s.error;
    EXPECT_EQ(download<uint8_t>(dq), want.q);
    const std::vector<float> scale = download<float>(ds);
    EXPECT_EQ(0, std::memcmp(scale.data(), want.scale.data(), scale.size() * sizeof(float)));
  }
}

TEST(CudaFp8, QuantizeWeightMatchesCpuBitwise) {
  SKIP_WITHOUT_GPU();
  for (const auto& [N, K] :
       {std::pair<int64_t, int64_t>{1, 1}, {128, 128}, {200, 300}, {257, 640}, {512, 7168}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " K=" + std::to_string(K));
    const std::vector<float> w = fp8_test_data(N, K, 32);
    const Quantized want = cpu_quantize_weight(w, N, K);
    DeviceBuffer dw = upload(w), dq = upload(want.q), ds = upload(want.scale);
    Status s = fp8_quantize_weight(dw.as<float>(), dq.as<uint8_t>(), ds.as<float>(), N, K);
    ASSERT_TRUE(s.ok()) << s.error;
    EXPECT_EQ(download<uint8_t>(dq), want.q);
    const std::vector<float> scale = download<float>(ds);
    EXPECT_EQ(0, std::memcmp(scale.data(), want.scale.data(), scale.size() * sizeof(float)));
  }
}

// GPU quantise + GPU GEMM on `path` against the CPU emulation: the worst error must be
// within 1e-3 of the output's scale (max |cpu|). Returns the path that ran.
Fp8GemmPath check_gemm(int64_t M, int64_t N, int64_t K, Fp8GemmPath path) {
  SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
               " path=" + to_string(path));
  const std::vector<float> a = kernels::test::random_values<float>(M * K, 41);
  std::vector<float> b = kernels::test::random_values<float>(N * K, 42);
  for (int64_t i = 0; i < N * K; i += 7) b[i] *= 50.0f;  // outliers: scales matter
  // The CPU emulation: out (M,N) = Q(a) (M,K) · Q(b)ᵀ, as an FP8 Linear with x = a, W = b.
  std::vector<float> want(size_t(M * N));
  fp8_linear_forward(a.data(), b.data(), want.data(), M, K, N);
  const Quantized qa = cpu_quantize_act(a, M, K), qb = cpu_quantize_weight(b, N, K);

  DeviceBuffer da = upload(a), db = upload(b), dqa = upload(qa.q), dsa = upload(qa.scale),
               dqb = upload(qb.q), dsb = upload(qb.scale), dout = upload(want);
  Status s = fp8_quantize_act(da.as<float>(), dqa.as<uint8_t>(), dsa.as<float>(), M, K);
  EXPECT_TRUE(s.ok()) << s.error;
  s = fp8_quantize_weight(db.as<float>(), dqb.as<uint8_t>(), dsb.as<float>(), N, K);
  EXPECT_TRUE(s.ok()) << s.error;
  Fp8GemmPath used = Fp8GemmPath::automatic;
  s = fp8_gemm(dqa.as<uint8_t>(), dsa.as<float>(), dqb.as<uint8_t>(), dsb.as<float>(),
               dout.as<float>(), M, N, K, path, &used);
  EXPECT_TRUE(s.ok()) << s.error;
  if (!s.ok()) return used;
  EXPECT_NE(used, Fp8GemmPath::automatic);
  if (path != Fp8GemmPath::automatic) {
    EXPECT_EQ(used, path);
  }
  const std::vector<float> got = download<float>(dout);
  double out_scale = 0, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    out_scale = std::max(out_scale, std::fabs(double(want[i])));
    err = std::max(err, std::fabs(double(got[i]) - double(want[i])));
  }
  EXPECT_LE(err, 1e-3 * out_scale) << "worst |gpu-cpu| " << err << ", max |cpu| " << out_scale;
  return used;
}

TEST(CudaFp8Gemm, SimtMatchesCpuEmulation) {
  SKIP_WITHOUT_GPU();
  for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                                {5, 17, 300},
                                {64, 128, 256},
                                {130, 200, 1000},
                                {256, 384, 2048}}) {
    check_gemm(M, N, K, Fp8GemmPath::simt);
  }
}

TEST(CudaFp8Gemm, CublasLtMatchesCpuEmulation) {
  SKIP_WITHOUT_GPU();
  std::string why;
  if (!detail::lt_applies(128, 256, 512, &why)) GTEST_SKIP() << why;
  for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{4, 16, 128},
                                {128, 256, 512},
                                {100, 144, 1024},
                                {256, 384, 2048}}) {
    check_gemm(M, N, K, Fp8GemmPath::cublaslt);
  }
}

TEST(CudaFp8Gemm, AutomaticRunsEveryShape) {
  SKIP_WITHOUT_GPU();
  // cuBLASLt where it applies (and offers an algorithm), the simt kernel elsewhere.
  const Fp8GemmPath aligned = check_gemm(8, 32, 256, Fp8GemmPath::automatic);
  if (!detail::lt_applies(8, 32, 256, nullptr)) {
    EXPECT_EQ(aligned, Fp8GemmPath::simt);
  }
  EXPECT_EQ(check_gemm(5, 17, 300, Fp8GemmPath::automatic), Fp8GemmPath::simt);
}

}  // namespace
}  // namespace troupe::kernels::cuda
