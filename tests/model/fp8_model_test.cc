// FP8 training end to end (SPEC-model.md §6): the [fp8] switch reaches the block Linears,
// a small model trains to a loss close to FP32's, and FP8 keeps the determinism contract.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm.h"
#include "model/linear.h"
#include "tests/tiny_test_job.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

JobConfig small_job(bool fp8, int threads) {
  // 8 steps: long enough for FP8's loss to be compared with FP32's.
  JobConfig cfg = tests::tiny_test_job({"train.steps=8", "train.warmup_steps=2",
                                        std::string("fp8.enabled=") + (fp8 ? "true" : "false")});
  cfg.train.threads = threads;
  return cfg;
}

TEST(Fp8Config, LoaderCopiesTheSwitchIntoTheModelConfigButNotIntoItsJson) {
  const JobConfig on = config_from_sets({"fp8.enabled=true"});
  EXPECT_TRUE(on.fp8.enabled);
  EXPECT_TRUE(on.model.fp8);
  EXPECT_FALSE(config_from_sets({}).model.fp8);
  // The checkpoint's [model] JSON stays what the PyTorch reference reads.
  const nlohmann::json j = model_config_to_json(on.model, 1);
  EXPECT_FALSE(j.contains("fp8"));
  EXPECT_FALSE(model_config_from_json(j).fp8);
}

TEST(Fp8Linear, DispatchFollowsTheModelConfig) {
  const int64_t R = 3, I = 130, O = 20;
  std::vector<float> x(R * I), W(O * I);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i));
  for (size_t i = 0; i < W.size(); ++i) W[i] = std::cos(0.11f * float(i)) * 0.1f;
  ModelConfig cfg;
  std::vector<float> y(R * O), want(R * O);
  linear_fwd(cfg, x.data(), W.data(), y.data(), R, I, O);
  kernels::linear_forward<float>(x.data(), W.data(), want.data(), R, I, O);
  EXPECT_EQ(y, want);
  cfg.fp8 = true;
  linear_fwd(cfg, x.data(), W.data(), y.data(), R, I, O);
  kernels::fp8_linear_forward(x.data(), W.data(), want.data(), R, I, O);
  EXPECT_EQ(y, want);
  // Double precision is for gradient checks: FP8 is refused there, by name.
  const std::vector<double> xd(R * I, 1.0), Wd(O * I, 1.0);
  std::vector<double> yd(R * O);
  try {
    linear_fwd(cfg, xd.data(), Wd.data(), yd.data(), R, I, O);
    ADD_FAILURE() << "double with fp8 on did not throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fp8.enabled"), std::string::npos) << e.what();
  }
}

TEST(Fp8Training, LossIsFiniteAndCloseToFp32) {
  Trainer fp8(small_job(true, 2)), fp32(small_job(false, 2));
  ASSERT_TRUE(fp8.cfg.model.fp8);
  ASSERT_EQ(fp8.params, fp32.params);  // same initial weights: only the GEMMs differ
  for (int64_t s = 0; s < 8; ++s) {
    const StepStats a = fp8.train_step(s), b = fp32.train_step(s);
    ASSERT_TRUE(std::isfinite(a.loss)) << "step " << s;
    EXPECT_NEAR(a.loss, b.loss, 0.01 * b.loss) << "step " << s;
    if (s == 0) {
      EXPECT_NE(a.loss, b.loss) << "the FP8 switch did not reach the layers";
    }
  }
  const double v8 = fp8.validate(), v32 = fp32.validate();
  EXPECT_TRUE(std::isfinite(v8));
  EXPECT_NEAR(v8, v32, 0.01 * v32);
}

// The determinism contract holds under FP8 too: FP8 tiles never cross a micro-batch.
TEST(Fp8Training, WeightsBitwiseIdenticalForOneAndTwoThreads) {
  Trainer one(small_job(true, 1)), two(small_job(true, 2));
  for (int64_t s = 0; s < 3; ++s) {
    const StepStats a = one.train_step(s), b = two.train_step(s);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
  }
  EXPECT_EQ(one.weights_hash(), two.weights_hash());
}

}  // namespace
}  // namespace troupe::model
