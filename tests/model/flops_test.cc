// model/flops.h: the FLOP counts that make bench divides by (GFLOP/s, mHC's share).
#include "model/flops.h"

#include <gtest/gtest.h>

namespace troupe::model {
namespace {

// tiny's mHC by hand (n 4, C 128, D 512, P 24, 20 rounds), per instance and token:
// forward 1536 + 24576 + 48 + 48 + 1280 + 1024 + 4096 + 1024 = 33632,
// backward 1024 + 4096 + 1024 + 4096 + 48 + 48 + 2560 + 16 + 49152 + 2048 + 2560 = 66672.
TEST(Flops, MhcCountsEveryOperationOfBothInstancesPerBlock) {
  ModelConfig c;
  c.hc_mult = 4, c.d_model = 128, c.sinkhorn_iters = 20, c.n_layers = 4;
  c.residual = Residual::mhc;
  EXPECT_DOUBLE_EQ(mhc_instance_flops(c), 33632.0 + 66672.0);
  EXPECT_DOUBLE_EQ(mhc_flops_per_token(c), 8 * (33632.0 + 66672.0));
  c.residual = Residual::plain;
  EXPECT_EQ(mhc_flops_per_token(c), 0.0);
}

// The matmul count includes mHC's projections (forward + backward = 3 × 2 · 2PD per block)
// and nothing else of mHC: the two residuals differ by exactly those.
TEST(Flops, TrainCountDiffersAcrossResidualsByTheProjections) {
  ModelConfig c;
  c.hc_mult = 4, c.d_model = 128, c.n_layers = 4;
  c.residual = Residual::mhc;
  const double with = train_flops_per_token(c);
  c.residual = Residual::plain;
  EXPECT_DOUBLE_EQ(with - train_flops_per_token(c), 4 * 3.0 * 2 * 2 * 24 * 512);
}

}  // namespace
}  // namespace troupe::model
