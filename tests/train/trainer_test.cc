// The determinism contract in one process: weights after N steps are bitwise identical
// for 1 and 2 threads, and for different micro-batch placements of the same split.
#include "train/trainer.h"

#include <gtest/gtest.h>

#include "config/config_parse.h"
#include "tests/tiny_test_job.h"
#include "train/tree.h"

namespace troupe::model {
namespace {

JobConfig small_job(int threads) {
  JobConfig cfg = tests::tiny_test_job();  // as it is: 3 steps of 8 rows
  cfg.train.threads = threads;
  return cfg;
}

TEST(Trainer, WeightsBitwiseIdenticalForOneAndTwoThreads) {
  Trainer one(small_job(1)), two(small_job(2));
  ASSERT_EQ(one.weights_hash(), two.weights_hash());
  for (int64_t s = 0; s < 3; ++s) {
    StepStats a = one.train_step(s), b = two.train_step(s);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
    EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << s;
  }
  EXPECT_EQ(one.weights_hash(), two.weights_hash());
  EXPECT_EQ(one.params, two.params);
  EXPECT_EQ(one.validate(), two.validate());
}

// With Engram the sparse table gradients follow the same canonical tree: the weights and
// the tables stay bitwise identical for 1 and 2 threads (weights_hash covers the tables).
TEST(Trainer, EngramWeightsBitwiseIdenticalForOneAndTwoThreads) {
  auto job = [](int threads) {
    JobConfig cfg = small_job(threads);
    cfg.model.engram_layers = {1};
    cfg.model.engram_table_rows = 211;  // small tables: rows shared across micro-batches
    return cfg;
  };
  Trainer one(job(1)), two(job(2));
  ASSERT_NE(one.engram(), nullptr);
  ASSERT_EQ(one.weights_hash(), two.weights_hash());
  const uint64_t start = one.weights_hash();
  for (int64_t s = 0; s < 3; ++s) {
    StepStats a = one.train_step(s), b = two.train_step(s);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
    EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << s;
  }
  EXPECT_NE(one.weights_hash(), start);
  EXPECT_EQ(one.weights_hash(), two.weights_hash());
  EXPECT_EQ(one.params, two.params);
  EXPECT_EQ(one.validate(), two.validate());
}

// Mixed-length mode: one row of documents per micro-batch (document masking), the same bits
// for 1 and 2 threads; the batch is the planner's, a pure function of the step.
TEST(Trainer, MixedModeBitwiseIdenticalForOneAndTwoThreads) {
  auto job = [](int threads) {
    JobConfig cfg = small_job(threads);
    cfg.data.mode = DataMode::mixed;
    cfg.data.max_doc_tokens = 40;
    cfg.train.tokens_per_microbatch = 96;
    cfg.model.engram_layers = {1};
    cfg.model.engram_table_rows = 211;
    return cfg;
  };
  Trainer one(job(1)), two(job(2));
  const Batch b = one.step_batch(1);
  EXPECT_EQ(b.rows, 4);  // batch_size / micro_batch_rows micro-batches, one row each
  EXPECT_EQ(b.seq_len, 96);
  EXPECT_EQ(b.doc.size(), b.inputs.size());
  EXPECT_EQ(b.inputs, two.step_batch(1).inputs);
  EXPECT_GE(one.padding_waste(1), 0.0);
  EXPECT_LT(one.padding_waste(1), 0.5);
  for (int64_t s = 0; s < 3; ++s) {
    StepStats a = one.train_step(s), c = two.train_step(s);
    EXPECT_EQ(a.loss, c.loss) << "step " << s;
    EXPECT_EQ(a.grad_norm, c.grad_norm) << "step " << s;
    EXPECT_TRUE(std::isfinite(a.loss));
  }
  EXPECT_EQ(one.weights_hash(), two.weights_hash());
  EXPECT_EQ(one.validate(), two.validate());
}

TEST(Trainer, ValRowsMaxZeroMeansTheWholeValidationSet) {
  JobConfig some = small_job(2), all = small_job(2);
  some.data.val_rows_max = 4;
  all.data.val_rows_max = 0;
  Trainer a(some), b(all);
  // 4 rows of 32 tokens vs every row of the ~126k validation bytes: different losses.
  EXPECT_NE(a.validate(), b.validate());
  all.data.val_rows_max = 1 << 30;  // more rows than exist: clamped to the same set
  Trainer c(all);
  EXPECT_EQ(b.validate(), c.validate());
}

TEST(Trainer, LossIsFiniteAndFallsOnRepeatedSteps) {
  Trainer t(small_job(2));
  StepStats first = t.train_step(0);
  ASSERT_TRUE(std::isfinite(first.loss));
  EXPECT_NEAR(first.ce, std::log(258.0), 0.3);  // near-uniform predictions at init
  StepStats last{};
  for (int64_t s = 1; s < 3; ++s) last = t.train_step(s);
  EXPECT_TRUE(std::isfinite(last.loss));
}

TEST(Parallel, TreeSplitIsAlignedPowerOfTwo) {
  EXPECT_EQ(tree_split(0, 8), 4);
  EXPECT_EQ(tree_split(0, 5), 4);
  EXPECT_EQ(tree_split(0, 3), 2);
  EXPECT_EQ(tree_split(4, 6), 5);
  std::vector<double> parts = {1e16, 1.0, -1e16, 1.0};
  // ((1e16 + 1) + (−1e16 + 1)) in tree order: the grouping is fixed, not left-to-right.
  EXPECT_EQ(tree_sum(parts, 0, 4), (parts[0] + parts[1]) + (parts[2] + parts[3]));
}

}  // namespace
}  // namespace troupe::model
