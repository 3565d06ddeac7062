// Checkpoint glue: the job identity a resume must match, and falling back past bad
// checkpoints to the newest one whose every shard verifies.
#include "storage/checkpoint.h"

#include <gtest/gtest.h>

#include "storage_test_dir.h"

namespace troupe::storage {
namespace {

using json = nlohmann::json;

TEST(JobIdentity, HoldsWhatDecidesTheBitsOnly) {
  model::TrainJobConfig cfg;
  json id = job_identity(cfg);
  for (const char* section : {"model", "data", "train", "optimizer", "fp8"})
    EXPECT_TRUE(id.contains(section)) << section;
  EXPECT_EQ(id["optimizer"]["name"], "adamw");
  EXPECT_EQ(id["train"]["seed"], cfg.train.seed);
  EXPECT_FALSE(id["train"].contains("steps"));
  EXPECT_FALSE(id["train"].contains("threads"));
  std::string hash = identity_hash(id);
  EXPECT_EQ(hash.size(), 16u);
  model::TrainJobConfig longer = cfg;
  longer.train.steps *= 2;
  longer.train.eval_every = 7;
  longer.train.threads = 3;
  EXPECT_EQ(identity_hash(job_identity(longer)), hash);
  model::TrainJobConfig other = cfg;
  other.train.lr *= 2;
  EXPECT_NE(identity_hash(job_identity(other)), hash);
  other = cfg;
  other.fp8.enabled = true;
  EXPECT_NE(identity_hash(job_identity(other)), hash);
  other = cfg;
  other.optimizer.name = model::OptimizerKind::muon;
  EXPECT_EQ(identity_mismatch(id, job_identity(other)),
            "optimizer.name: the run directory's checkpoints were written with \"adamw\", "
            "this config has \"muon\"");
}

TEST(JobIdentity, MixedModeAndArithmeticDataAreParts) {
  model::TrainJobConfig packed;
  const json id = job_identity(packed);
  EXPECT_FALSE(id["data"].contains("mode"));  // a packed fortunes job's identity as before
  EXPECT_FALSE(id["data"].contains("source"));
  model::TrainJobConfig mixed = packed;
  mixed.data.mode = model::DataMode::mixed;
  EXPECT_EQ(identity_mismatch(id, job_identity(mixed)),
            "data.max_doc_tokens: the run directory's checkpoints were written with no such key, "
            "this config has " +
                std::to_string(packed.model.seq_len));
  model::TrainJobConfig budget = mixed;
  budget.train.tokens_per_microbatch = 3 * packed.model.seq_len;
  EXPECT_NE(identity_hash(job_identity(budget)), identity_hash(job_identity(mixed)));
  model::TrainJobConfig arith = packed;
  arith.data.source = model::DataSource::arithmetic;
  EXPECT_NE(identity_hash(job_identity(arith)), identity_hash(id));
  model::TrainJobConfig bigger = arith;
  bigger.data.arith_max_operand = 99;
  EXPECT_NE(identity_hash(job_identity(bigger)), identity_hash(job_identity(arith)));
}

TEST(JobIdentity, MismatchNamesTheFirstDifferingKey) {
  model::TrainJobConfig a, b;
  a.model.d_model = 64;
  b.model.d_model = 96;
  EXPECT_EQ(identity_mismatch(job_identity(a), job_identity(a)), "");
  EXPECT_EQ(identity_mismatch(job_identity(a), job_identity(b)),
            "model.d_model: the run directory's checkpoints were written with 64, this config "
            "has 96");
  json stored = {{"data", {{"shuffle", true}}}};
  json now = {{"data", {{"shuffle", true}, {"val_modulus", 20}}}};
  EXPECT_EQ(identity_mismatch(stored, now),
            "data.val_modulus: the run directory's checkpoints were written with no such key, "
            "this config has 20");
  EXPECT_EQ(identity_mismatch(now, stored),
            "data.val_modulus: the run directory's checkpoints were written with 20, this "
            "config has no such key");
}

TEST(ShardViews, ViewTheSnapshot) {
  std::vector<model::StateTensor> snap = {{"param/a", {2, 2}, {1, 2, 3, 4}},
                                          {"optim/a", {3}, {5, 6, 7}}};
  std::vector<ShardData> v = shard_views(snap);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[1].name, "optim/a");
  EXPECT_EQ(v[1].shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(v[1].data, snap[1].data.data());
  EXPECT_EQ(v[1].floats, 3u);
}

// A checkpoint of `step` by one writer, with its manifest in the journal.
void checkpoint(const std::string& run, Journal* j, int64_t step, const StorageFaults& f = {}) {
  std::vector<float> w(100, static_cast<float>(step));
  std::vector<ShardData> shards = {{"param/w", {10, 10}, w.data(), w.size()}};
  auto recs = write_shards(checkpoint_dir(run, step) + "/w0", "w0", step, shards, f);
  ASSERT_TRUE(recs.ok()) << recs.status().message();
  Manifest m;
  m.step = step;
  m.shards = recs.value();
  ASSERT_TRUE(j->put_manifest(m).ok());
}

TEST(NewestGoodCheckpoint, FallsBackPastACorruptOne) {
  std::string run = fresh_test_dir();
  auto j = Journal::open(run, false);
  ASSERT_TRUE(j.ok());
  StorageFaults faults = StorageFaults::parse("corrupt@6");
  for (int64_t s : {2, 4, 6}) checkpoint(run, j.value().get(), s, faults);
  std::vector<std::string> warnings;
  auto m =
      newest_good_checkpoint(run, *j.value(), [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m.value().step, 4);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0].rfind("checkpoint of step 6 is unusable: ", 0), 0u) << warnings[0];
  EXPECT_NE(warnings[0].find("CRC32C mismatch"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("; falling back to the one before"), std::string::npos);
}

TEST(NewestGoodCheckpoint, ErrorsWhenNoneVerifies) {
  std::string run = fresh_test_dir();
  auto j = Journal::open(run, false);
  ASSERT_TRUE(j.ok());
  auto none = newest_good_checkpoint(run, *j.value(), [](const std::string&) {});
  EXPECT_EQ(none.status().message(), "no complete checkpoint in " + run + "/journal");
  checkpoint(run, j.value().get(), 3, StorageFaults::parse("corrupt@3"));
  checkpoint(run, j.value().get(), 5);
  std::filesystem::remove_all(checkpoint_dir(run, 5));  // shards gone, manifest still there
  int warned = 0;
  auto bad = newest_good_checkpoint(run, *j.value(), [&](const std::string&) { ++warned; });
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(warned, 2);
  EXPECT_NE(bad.status().message().find("none of the 2 checkpoints in " + run + " verifies"),
            std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("CRC32C mismatch"), std::string::npos);
}

}  // namespace
}  // namespace troupe::storage
