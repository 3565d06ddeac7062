// In-process GRPO (train/grpo.h) on a small model over the arithmetic task: a few steps run
// and are bitwise reproducible (rollouts, stats, weights); the rollouts are packed so that
// each loss position predicts its completion token inside its own document; check_grpo
// names what does not fit.
#include "train/grpo.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/tiny_test_job.h"

namespace troupe::model {
namespace {

JobConfig grpo_job(std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"data.source=\"arithmetic\"", "data.arith_documents=2000",
                                   "model.engram_layers=[]",     "train.threads=1",
                                   "train.warmup_steps=0",       "train.lr=1e-3"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return troupe::tests::tiny_test_job(sets);
}

GrpoConfig small_grpo() {
  GrpoConfig g;
  g.prompts_per_step = 2;
  g.group_size = 4;
  g.max_new_tokens = 6;
  return g;
}

struct GrpoRun {
  std::vector<GrpoStepStats> stats;
  std::vector<float> params;
};

GrpoRun run_steps(int64_t steps) {
  Trainer trainer(grpo_job());
  for (int64_t s = 0; s < 2; ++s) trainer.train_step(s);  // a little supervised start
  GrpoRunner grpo(trainer, small_grpo());
  GrpoRun r;
  for (int64_t s = 0; s < steps; ++s) r.stats.push_back(grpo.step(s));
  r.params = trainer.params;
  return r;
}

TEST(Grpo, StepsRunAndAreBitwiseReproducible) {
  const GrpoRun a = run_steps(3), b = run_steps(3);
  ASSERT_EQ(a.stats.size(), 3u);
  for (size_t s = 0; s < a.stats.size(); ++s) {
    const GrpoStepStats &x = a.stats[s], &y = b.stats[s];
    std::printf(
        "  step %zu: mean reward %.3f loss %.6f kl %.2e clipped %.3f grad_norm %.4f "
        "tokens %lld\n",
        s, x.mean_reward, x.loss, x.kl, x.clipped_fraction, x.grad_norm, (long long)x.tokens);
    EXPECT_EQ(std::memcmp(&x.loss, &y.loss, sizeof x.loss), 0);
    EXPECT_EQ(x.mean_reward, y.mean_reward);
    EXPECT_EQ(x.grad_norm, y.grad_norm);
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_TRUE(std::isfinite(x.loss));
    EXPECT_GT(x.grad_norm, 0.0);
    EXPECT_GE(x.mean_reward, 0.0);
    EXPECT_LE(x.mean_reward, 1.0);
  }
  // Step 0: θ = π_old = π_ref, so ρ = 1 and KL = 0 exactly; later steps move away.
  EXPECT_EQ(a.stats[0].kl, 0.0);
  EXPECT_EQ(a.stats[0].clipped_fraction, 0.0);
  EXPECT_GT(a.stats[2].kl, 0.0);
  EXPECT_EQ(a.params, b.params);
}

TEST(Grpo, RolloutsArePackedAsDocuments) {
  Trainer trainer(grpo_job());
  GrpoRunner grpo(trainer, small_grpo());
  const std::vector<Rollout> rolls = grpo.rollouts(5);
  ASSERT_EQ(rolls.size(), 8u);
  const std::vector<Rollout> again = grpo.rollouts(5);
  for (size_t i = 0; i < rolls.size(); ++i) {
    EXPECT_EQ(rolls[i].completion, again[i].completion);
    EXPECT_LE(int64_t(rolls[i].completion.size()), 6);
    EXPECT_EQ(rolls[i].context[0], kBos);
  }
  const GrpoBatch b = pack_rollouts(rolls, trainer.cfg.model.seq_len);
  ASSERT_EQ(b.batch.inputs.size(), size_t(b.batch.rows * b.batch.seq_len));
  ASSERT_EQ(b.batch.doc.size(), b.batch.inputs.size());
  ASSERT_EQ(b.tokens.completions, 8);
  size_t t = 0;
  for (size_t c = 0; c < rolls.size(); ++c)
    for (size_t j = 0; j < rolls[c].completion.size(); ++j, ++t) {
      const int64_t pos = b.position[t];
      EXPECT_EQ(b.tokens.token[t], rolls[c].completion[j]);
      EXPECT_EQ(b.tokens.completion[t], int32_t(c));
      // The position holds the token before it (the prompt's last byte, or the completion's
      // previous token), in the same document.
      const int32_t before = j == 0 ? rolls[c].context.back() : rolls[c].completion[j - 1];
      EXPECT_EQ(b.batch.inputs[size_t(pos)], before);
      if (j > 0) {
        EXPECT_EQ(b.batch.doc[size_t(pos)], b.batch.doc[size_t(pos) - 1]);
      }
    }
  EXPECT_EQ(t, b.position.size());
}

// A step's groups in the job's micro-batches: prompt p in micro-batch ⌊p·M/P⌋, completion ids
// and advantages counted over the step, every micro-batch the rows of the largest, and with
// more micro-batches than prompts some hold only padding.
TEST(Grpo, StepGroupsGoToTheJobsMicroBatches) {
  Trainer trainer(grpo_job());
  GrpoRunner grpo(trainer, small_grpo());
  const std::vector<Rollout> rolls = grpo.rollouts(3);  // 2 prompts × 4 samples
  const int64_t T = trainer.cfg.model.seq_len;
  for (int64_t M : {2, 4}) {
    const GrpoStep g = grpo_step_of(3, rolls, M, T, GrpoLossConfig{});
    ASSERT_EQ(g.batch.rows, M * g.mb_rows);
    ASSERT_EQ(g.tokens.size(), size_t(M));
    std::vector<int64_t> holds;  // the micro-batch of each prompt, from the tokens' ids
    for (int64_t m = 0; m < M; ++m) {
      const GrpoTokens<float>& t = g.tokens[size_t(m)];
      EXPECT_EQ(t.completions, 8);
      ASSERT_EQ(t.advantage.size(), 8u);
      for (size_t c = 0; c < 8; ++c) EXPECT_EQ(t.advantage[c], float(rolls[c].advantage));
      ASSERT_EQ(t.logp_old.size(), t.token.size());
      ASSERT_EQ(t.logp_ref.size(), t.token.size());
      for (size_t k = 0; k < t.token.size(); ++k) {
        const Rollout& r = rolls[size_t(t.completion[k])];
        holds.push_back(r.prompt * 100 + m);
        // The position (inside the micro-batch) reads the token before, in the step's batch.
        const int64_t at = m * g.mb_rows * T + g.position[size_t(m)][k];
        EXPECT_LT(g.position[size_t(m)][k], g.mb_rows * T);
        EXPECT_EQ(g.batch.targets[size_t(at)], kNoTarget);
      }
      if (t.token.empty()) {  // only padding: no completion is here
        for (int64_t i = m * g.mb_rows * T; i < (m + 1) * g.mb_rows * T; ++i)
          EXPECT_EQ(g.batch.inputs[size_t(i)], kEos);
      }
    }
    for (int64_t h : holds) EXPECT_EQ(h % 100, (h / 100) * M / 2) << "M = " << M;
  }
  EXPECT_THROW(grpo_step_of(3, {}, 2, T, GrpoLossConfig{}), std::invalid_argument);
}

TEST(Grpo, CheckNamesWhatDoesNotFit) {
  const JobConfig ok = grpo_job();
  EXPECT_EQ(check_grpo(small_grpo(), ok), "");
  GrpoConfig g = small_grpo();
  g.max_new_tokens = 40;  // BOS + "9*9=" + 40 − 1 > seq_len 32
  EXPECT_NE(check_grpo(g, ok).find("model.seq_len"), std::string::npos);
  g = small_grpo(), g.group_size = 1;
  EXPECT_NE(check_grpo(g, ok).find("group_size"), std::string::npos);
  g = small_grpo(), g.temperature = 0;
  EXPECT_NE(check_grpo(g, ok).find("temperature"), std::string::npos);
  const JobConfig engram = grpo_job({"model.engram_layers=[1]"});
  EXPECT_NE(check_grpo(small_grpo(), engram).find("engram_layers"), std::string::npos);
  Trainer trainer(engram);
  EXPECT_THROW(GrpoRunner(trainer, small_grpo()), std::invalid_argument);
}

}  // namespace
}  // namespace troupe::model
