// load_checkpoint end to end: a trainer's state written by two owners through the shard
// store, its manifest through the journal, loaded into a fresh trainer that then trains on
// to the bits of a run that never stopped; a damaged shard is named, not loaded.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "storage/checkpoint.h"
#include "storage_test_dir.h"
#include "tests/tiny_test_job.h"
#include "train/dp_plan.h"

namespace troupe::storage {
namespace {

using model::FlatRange;
using model::Trainer;

model::JobConfig job() {
  model::JobConfig cfg = tests::tiny_test_job();
  cfg.train.threads = 1;
  return cfg;
}

// Trainer t's state after `step` steps as a checkpoint in run/: owner w writes its tensors
// (and owner 0 the Engram state) as writer "w<w>"; the manifest goes into the journal.
Manifest write_checkpoint(const std::string& run, Journal* j, const Trainer& t, int64_t step,
                          const StorageFaults& faults = {}) {
  const std::vector<FlatRange> owners = model::plan_owners(t.table, 2);
  Manifest m;
  m.step = step;
  m.job = job_identity(t.cfg);
  m.config_hash = identity_hash(m.job);
  for (size_t w = 0; w < owners.size(); ++w) {
    const std::vector<model::StateTensor> snap = t.snapshot_state(owners[w], w == 0);
    const std::string writer = fmt::format("w{}", w);  // not "w" + : GCC 12 -Wrestrict
    auto recs = write_shards(checkpoint_dir(run, step) + "/" + writer, writer, step,
                             shard_views(snap), faults);
    if (!recs.ok()) throw std::runtime_error(recs.status().message());
    m.shards.insert(m.shards.end(), recs.value().begin(), recs.value().end());
  }
  runtime::Status s = j->put_manifest(m);
  if (!s.ok()) throw std::runtime_error(s.message());
  return m;
}

TEST(LoadCheckpoint, ResumesBitwise) {
  const std::string run = fresh_test_dir();
  auto j = Journal::open(run, false);
  ASSERT_TRUE(j.ok()) << j.status().message();
  Trainer straight(job());
  for (int64_t s = 0; s < 4; ++s) straight.train_step(s);

  Trainer first(job());
  for (int64_t s = 0; s < 2; ++s) first.train_step(s);
  write_checkpoint(run, j.value().get(), first, 2);
  auto m = j.value()->manifest(2);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(identity_mismatch(m.value().job, job_identity(job())), "");

  Trainer second(job());
  runtime::Status s = load_checkpoint(run, m.value(), FlatRange{}, &second);
  ASSERT_TRUE(s.ok()) << s.message();
  for (int64_t step = 2; step < 4; ++step) second.train_step(step);
  EXPECT_EQ(second.weights_hash(), straight.weights_hash());
}

TEST(LoadCheckpoint, DamagedShardIsNamed) {
  const std::string run = fresh_test_dir();
  auto j = Journal::open(run, false);
  ASSERT_TRUE(j.ok()) << j.status().message();
  Trainer t(job());
  t.train_step(0);
  Manifest m = write_checkpoint(run, j.value().get(), t, 1, StorageFaults::parse("corrupt@1"));
  Trainer fresh(job());
  runtime::Status s = load_checkpoint(run, m, FlatRange{}, &fresh);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), runtime::Code::io_error);
  EXPECT_NE(s.message().find("cannot load the checkpoint of step 1 from " + run), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("shard " + m.shards[0].name + ": CRC32C mismatch"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace troupe::storage
