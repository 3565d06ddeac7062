// model/step_rules.h (moves to tests/train/ with it): the validation rule, the cover of a
// step's pieces, and a step's decision from its pieces equal to the Trainer's own step.
#include "train/step_rules.h"

#include <gtest/gtest.h>

#include "optim/optim.h"

namespace troupe::model {
namespace {

TEST(StepRules, ValidateEveryEvalEveryAndAfterTheLast) {
  EXPECT_FALSE(validate_after(3, 0, 10));
  EXPECT_TRUE(validate_after(3, 2, 10));
  EXPECT_TRUE(validate_after(3, 5, 10));
  EXPECT_TRUE(validate_after(3, 9, 10));  // the last
  EXPECT_FALSE(validate_after(0, 4, 10));
  EXPECT_TRUE(validate_after(0, 9, 10));
}

TEST(StepRules, PiecesCoverTheBatchOnce) {
  EXPECT_EQ(check_cover({{4, 8}, {0, 4}}, 8), "");
  EXPECT_EQ(check_cover({}, 0), "");
  EXPECT_EQ(check_cover({{0, 4}}, 8), "micro-batch 4 not covered");
  EXPECT_EQ(check_cover({{0, 4}, {2, 8}}, 8), "micro-batch 2 covered twice");
  EXPECT_EQ(check_cover({{0, 4}, {5, 8}}, 8), "micro-batch 4 not covered");
  EXPECT_NE(check_cover({{0, 9}}, 8), "");
  EXPECT_NE(check_cover({{3, 3}}, 8), "");
}

Piece<float> piece(int64_t lo, int64_t hi, float ce) {
  Piece<float> p;
  p.node = {lo, hi};
  p.parts.ce = ce, p.parts.ce_sum = ce, p.parts.ce_count = hi - lo;
  return p;
}

TEST(StepRules, TheDecisionCombinesInTreeOrderAndClips) {
  TrainJobConfig cfg;
  cfg.model.engram_layers.clear();
  cfg.train.grad_clip = 1.0;
  StepReports in;
  in.step = 3, in.micro_batches = 4;
  in.pieces = {piece(2, 4, 0.5f), piece(0, 2, 0.25f)};
  in.norm_parts = {{4.0}, {5.0}};  // Σ g² = 9
  in.engram_sumsq = {0.0, 0.0};
  const StepDecision d = decide_step(cfg, in);
  EXPECT_EQ(d.error, "");
  EXPECT_EQ(d.stats.step, 3);
  EXPECT_EQ(d.stats.ce, double(0.25f + 0.5f));
  EXPECT_EQ(d.stats.tokens, 4);
  EXPECT_EQ(d.stats.lr, lr_at(cfg.train, 3));
  EXPECT_EQ(d.stats.grad_norm, grad_norm_from_parts({4.0, 5.0}));
  EXPECT_EQ(d.clip_scale, clip_scale(1.0, d.stats.grad_norm));
  in.engram_sumsq = {1.0, 2.0};  // the replicas disagree: no Apply
  EXPECT_NE(decide_step(cfg, in).error.find("diverged"), std::string::npos);
  EXPECT_EQ(validation_loss({piece(0, 1, 2.0f), piece(1, 2, 4.0f)}), 3.0);
}

}  // namespace
}  // namespace troupe::model
