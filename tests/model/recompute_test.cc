// memory.recompute (model/config.h): dropping activations in forward and recomputing them
// in backward changes no bit. Every mode against "none" on a model with every part on (mHC,
// MoE, Engram, MTP, documents), the same Model reused over micro-batches of different
// shapes; FP8; whole training steps; the accountant's bytes; the config's rules.
#include <gtest/gtest.h>

#include <map>

#include "config/config_parse.h"
#include "model/model.h"
#include "model/rng.h"
#include "tests/model/small_model.h"
#include "tests/tiny_test_job.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

constexpr Recompute kModes[] = {Recompute::none, Recompute::attention, Recompute::block,
                                Recompute::full};

// rows × T random tokens; with docs, each row two documents (split at `cut`).
Batch random_batch(int64_t rows, int64_t T, uint64_t seed, bool docs, int64_t cut) {
  Batch b;
  b.rows = rows, b.seq_len = T;
  CounterRng rng(seed, purpose_of("recompute_test.tokens"));
  for (int64_t n = 0; n < rows * T; ++n) {
    b.inputs.push_back(int32_t(32 + rng.bits(uint64_t(2 * n)) % 90));
    b.targets.push_back(n % T == T - 1 ? kNoTarget
                                       : int32_t(32 + rng.bits(uint64_t(2 * n + 1)) % 90));
    if (docs) b.doc.push_back(int32_t(2 * (n / T) + (n % T >= cut)));
  }
  return b;
}

struct Outcome {
  std::vector<LossParts<float>> parts;
  std::vector<std::vector<float>> grads;
  std::vector<std::vector<std::vector<int64_t>>> counts;
  std::vector<std::map<std::pair<size_t, int64_t>, std::vector<float>>> rows;
  HeldBytes held;
};

// Three micro-batches through one Model (its workspace reused, shapes changing), each with
// forward and backward.
Outcome run(ModelConfig cfg, Recompute mode) {
  cfg.recompute = mode;
  const ParamTable table(cfg);
  const std::vector<float> params = small_model::random_params<float>(table, 11, "recompute_test");
  const InProcessEngramStore<float> store(cfg, 5);
  Model<float> model(cfg, table, 5);
  Outcome r;
  const Batch batches[] = {random_batch(2, 12, 1, true, 5), random_batch(1, 16, 2, false, 0),
                           random_batch(2, 12, 3, true, 8)};
  for (const Batch& b : batches) {
    std::vector<float> g(params.size(), 0.0f);
    EngramGrad<float> eg;
    r.parts.push_back(model.step(params.data(), g.data(), b, loss_scale_of(b, true), true,
                                 cfg.engram_layers.empty() ? nullptr : &store, &eg));
    r.grads.push_back(std::move(g));
    r.counts.push_back(model.expert_counts());
    auto& rows = r.rows.emplace_back();
    for (size_t t = 0; t < eg.size(); ++t)
      for (size_t i = 0; i < eg[t].ids.size(); ++i) {
        const int64_t D = cfg.engram_head_dim;
        rows[{t, eg[t].ids[i]}].assign(eg[t].values.begin() + int64_t(i) * D,
                                       eg[t].values.begin() + int64_t(i + 1) * D);
      }
  }
  r.held = model.held_bytes();
  return r;
}

void expect_same_bits(const Outcome& want, const Outcome& got, const char* what) {
  ASSERT_EQ(want.parts.size(), got.parts.size());
  for (size_t i = 0; i < want.parts.size(); ++i) {
    EXPECT_EQ(want.parts[i].ce, got.parts[i].ce) << what << " micro-batch " << i;
    EXPECT_EQ(want.parts[i].mtp, got.parts[i].mtp) << what << " micro-batch " << i;
    EXPECT_EQ(want.parts[i].bal, got.parts[i].bal) << what << " micro-batch " << i;
    EXPECT_TRUE(want.grads[i] == got.grads[i]) << what << ": gradient of micro-batch " << i;
    EXPECT_EQ(want.counts[i], got.counts[i]) << what << " micro-batch " << i;
    EXPECT_TRUE(want.rows[i] == got.rows[i]) << what << ": table rows of micro-batch " << i;
  }
}

TEST(Recompute, EveryModeGivesTheBitsOfNoneWithEveryPartOn) {
  ModelConfig cfg = small_model::small_config(true);
  cfg.n_layers = 3;  // two MoE blocks and the dense one; Engram on block 1
  const Outcome none = run(cfg, Recompute::none);
  EXPECT_GT(none.parts[0].bal, 0.0f);
  EXPECT_GT(none.parts[0].mtp, 0.0f);
  EXPECT_FALSE(none.rows[0].empty());
  expect_same_bits(none, run(cfg, Recompute::attention), "attention");
  expect_same_bits(none, run(cfg, Recompute::block), "block");
  expect_same_bits(none, run(cfg, Recompute::full), "full");
}

TEST(Recompute, EveryModeGivesTheBitsOfNoneWithFp8AndAPlainResidual) {
  ModelConfig cfg = small_model::small_config(false);
  cfg.fp8 = true;
  cfg.residual = Residual::plain;
  cfg.hc_mult = 1;
  const Outcome none = run(cfg, Recompute::none);
  expect_same_bits(none, run(cfg, Recompute::attention), "attention");
  expect_same_bits(none, run(cfg, Recompute::block), "block");
  expect_same_bits(none, run(cfg, Recompute::full), "full");
}

// The accountant: "full" keeps no block's activations of its own, only one shared set;
// "block" keeps each block's attention only; "attention" keeps less per block than "none";
// the streams are the same in every mode.
TEST(Recompute, TheAccountantSeesWhatEachModeKeeps) {
  ModelConfig cfg = small_model::small_config(true);
  cfg.n_layers = 4;
  const HeldBytes none = run(cfg, Recompute::none).held;
  const HeldBytes attn = run(cfg, Recompute::attention).held;
  const HeldBytes block = run(cfg, Recompute::block).held;
  const HeldBytes full = run(cfg, Recompute::full).held;
  ASSERT_EQ(none.block.size(), 4u);
  for (size_t l = 0; l < 4; ++l) {
    EXPECT_GT(none.block[l], 0) << l;
    EXPECT_LT(attn.block[l], none.block[l]) << l;
    EXPECT_GT(block.block[l], 0) << l;
    EXPECT_LT(block.block[l], none.block[l] / 2) << l;
    EXPECT_EQ(full.block[l], 0) << l;
  }
  EXPECT_EQ(none.shared, 0);
  EXPECT_GT(attn.shared, 0);
  // The 2L + 1 = 9 stream tensors: all kept under "none" and "attention"; under "block" and
  // "full" the L + 1 even ones (the blocks' inputs) and one shared by the odd ones.
  EXPECT_EQ(attn.streams, none.streams);
  EXPECT_EQ(full.streams * 9, none.streams * 6);
  EXPECT_EQ(block.streams, full.streams);
  EXPECT_LT(full.total(), block.total());
  EXPECT_LT(block.total(), none.total());
  EXPECT_LT(attn.total(), none.total());
  // "full"'s one set is about one block's worth: less than half of "none"'s four blocks.
  EXPECT_LT(full.shared, (none.block[1] + none.block[2] + none.block[3]) / 2);
}

// Whole steps: the trainer with each mode ends with the weights of "none", 2 threads.
TEST(Recompute, TrainingStepsEndWithTheSameWeights) {
  std::map<Recompute, uint64_t> hash;
  for (Recompute mode : kModes) {
    JobConfig cfg = tests::tiny_test_job();
    cfg.train.threads = 2;
    cfg.model.engram_layers = {1};
    cfg.model.engram_table_rows = 211;
    cfg.memory.recompute = cfg.model.recompute = mode;
    Trainer t(cfg);
    for (int64_t s = 0; s < 2; ++s) t.train_step(s);
    hash[mode] = t.weights_hash();
  }
  EXPECT_EQ(hash[Recompute::none], hash[Recompute::attention]);
  EXPECT_EQ(hash[Recompute::none], hash[Recompute::block]);
  EXPECT_EQ(hash[Recompute::none], hash[Recompute::full]);
}

// The optimizer state offloaded (memory.offload_optimizer) with "block": the same weights.
TEST(Recompute, OffloadedOptimizerStateWithBlockEndsWithTheSameWeights) {
  uint64_t hash[2] = {0, 0};
  for (int offload = 0; offload < 2; ++offload) {
    JobConfig cfg = tests::tiny_test_job({"optimizer.name=muon"});
    cfg.memory.offload_optimizer = offload == 1;
    if (offload) cfg.memory.recompute = cfg.model.recompute = Recompute::block;
    Trainer t(cfg);
    for (int64_t s = 0; s < 2; ++s) t.train_step(s);
    hash[offload] = t.weights_hash();
  }
  EXPECT_EQ(hash[0], hash[1]);
}

TEST(Recompute, TheConfigNamesTheModesAndRefusesBlockWithExpertShards) {
  EXPECT_EQ(config_from_sets({"memory.recompute=block"}).model.recompute, Recompute::block);
  EXPECT_EQ(config_from_sets({}).model.recompute, Recompute::none);
  try {
    config_from_sets({"memory.recompute=blocks"});
    FAIL() << "an unknown mode was taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("none, attention, block, full"), std::string::npos)
        << e.what();
  }
  try {
    config_from_sets({"memory.recompute=block", "parallel.experts=shards"});
    FAIL() << "block recompute with expert shards was taken";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("memory.recompute"), std::string::npos) << e.what();
  }
  EXPECT_THROW(config_from_sets({"memory.recompute=full", "parallel.experts=shards"}), ConfigError);
  EXPECT_NO_THROW(config_from_sets({"memory.recompute=attention", "parallel.experts=shards"}));
}

}  // namespace
}  // namespace troupe::model
