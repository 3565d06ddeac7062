// GPU RMSNorm and softmax against kernels/cpu (FP32, relative 1e-5). Skips without a GPU.
#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "tests/cuda/cuda_test_util.h"

namespace troupe::kernels::cuda {
namespace {

using test::download;
using test::upload;

TEST(CudaOps, RmsnormForwardMatchesCpu) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
  for (const auto& [N, D, weighted] : {std::tuple<int64_t, int64_t, bool>{7, 1, true},
                                       {33, 100, true},
                                       {5, 4096, false},
                                       {300, 7168, true}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " D=" + std::to_string(D));
    std::vector<float> x = kernels::test::random_values<float>(N * D, 11);
    std::vector<float> w = kernels::test::random_values<float>(D, 12);
    for (float& v : x) v *= 3.0f;
    const float eps = 1e-6f;
    std::vector<float> out(x.size()), rstd(N);
    kernels::rmsnorm_forward<float>(x.data(), weighted ? w.data() : nullptr, eps, out.data(),
                                    rstd.data(), N, D);

    DeviceBuffer dx = upload(x), dw = upload(w), dout = upload(out), drstd = upload(rstd);
    Status s = rmsnorm_forward(dx.as<float>(), weighted ? dw.as<float>() : nullptr, eps,
                               dout.as<float>(), drstd.as<float>(), N, D);
    ASSERT_TRUE(s.ok()) << s.error;
    EXPECT_LE(test::max_rel_diff(download<float>(dout), out), 1e-5);
    EXPECT_LE(test::max_rel_diff(download<float>(drstd), rstd), 1e-5);
  }
}

TEST(CudaOps, SoftmaxRowsMatchesCpu) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
  for (const auto& [N, D] : {std::pair<int64_t, int64_t>{3, 1}, {17, 129}, {64, 32000}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " D=" + std::to_string(D));
    std::vector<float> x = kernels::test::random_values<float>(N * D, 21);
    for (float& v : x) v *= 8.0f;
    // Masked entries (attention's causal mask) must get probability exactly 0.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t d = n % 3 + 1; d < D; d += 5) x[n * D + d] = -INFINITY;
    std::vector<float> p = x;
    kernels::softmax_rows<float>(p.data(), N, D);

    DeviceBuffer dx = upload(x);
    Status s = softmax_rows(dx.as<float>(), N, D);
    ASSERT_TRUE(s.ok()) << s.error;
    const std::vector<float> got = download<float>(dx);
    EXPECT_LE(test::max_rel_diff(got, p), 1e-5);
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isinf(x[i])) {
        ASSERT_EQ(got[i], 0.0f) << "masked entry " << i;
      }
    }
  }
}

TEST(CudaOps, AvailabilityReasonIsClear) {
  std::string why;
  if (!cuda_available(&why)) {
    EXPECT_NE(why.find("no CUDA device"), std::string::npos) << why;
    GTEST_SKIP() << why;
  }
  EXPECT_TRUE(why.empty());
}

}  // namespace
}  // namespace troupe::kernels::cuda
