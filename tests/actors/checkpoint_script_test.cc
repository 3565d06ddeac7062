// The coordinator's side of checkpoints in scripted conversations: a checkpoint is complete
// (its manifest recorded) only once every worker of the view wrote its shards, older ones
// beyond `keep` are deleted then and only then; a worker that could not write makes it
// skipped; an owner lost with its buddy rolls every survivor back to the newest checkpoint
// (Recover carries its manifest), and without one the job stops saying why.
#include <gtest/gtest.h>

#include <filesystem>

#include "coordinator_script.h"
#include "storage/shard_store.h"

namespace troupe::actors::testing {
namespace {

// CoordinatorScript's workers, on a job that checkpoints every `every` steps (keep = 1)
// into a run directory of the test's own.
class CheckpointScript : public CoordinatorScript {
 protected:
  std::vector<float> bytes = {1, 2, 3, 4};

  void SetUp() override {}  // each test begins with its own checkpoint interval
  void begin_every(int64_t every) {
    run_dir = (std::filesystem::temp_directory_path() /
               ("troupe-ckpt-script-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                  .string();
    std::filesystem::remove_all(run_dir);
    begin({"train.steps=6", "train.eval_every=0", "checkpoint.every_steps=" + std::to_string(every),
           "checkpoint.keep=1"});
  }
  void TearDown() override { std::filesystem::remove_all(run_dir); }

  // Worker i's shards of checkpoint `version`, really written, reported as written.
  void written(int64_t i, int64_t version, const std::string& error = "") {
    train::CheckpointWritten w;
    w.set_step(version), w.set_worker(i), w.set_ok(error.empty()), w.set_error(error);
    train::ShardList list;
    if (error.empty()) {
      const std::string writer = "w" + std::to_string(i);
      auto recs =
          storage::write_shards(storage::checkpoint_dir(run_dir, version) + "/" + writer, writer,
                                version, {{"param/t" + std::to_string(i), {4}, bytes.data(), 4}});
      ASSERT_TRUE(recs.ok()) << recs.status().message();
      for (const storage::ShardRecord& r : recs.value()) {
        train::ShardEntry* e = list.add_shards();
        e->set_name(r.name), e->set_writer(r.writer), e->set_crc32c(r.crc32c);
        e->set_bytes(r.bytes);
      }
    }
    std::vector<runtime::Payload> p;
    if (error.empty()) p.push_back(runtime::text_payload(list.SerializeAsString()));
    from(i, checkpoint_written_type, w, std::move(p));
  }
  size_t records(const std::string& kind) const {
    size_t n = 0;
    for (const auto& r : log->rest.records()) n += r["kind"] == kind ? 1 : 0;
    return n;
  }
};

TEST_F(CheckpointScript, CompleteOnceEveryWorkerWroteThenOlderOnesGo) {
  begin_every(2);
  step(0), step(1);
  written(0, 2), written(1, 2);
  EXPECT_TRUE(log->rest.checkpoints().empty()) << "complete before worker 2 wrote";
  written(2, 2);
  EXPECT_EQ(log->rest.checkpoints(), (std::vector<int64_t>{2}));
  auto m = log->rest.checkpoint(2);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m.value().shards.size(), 3u);
  EXPECT_FALSE(m.value().config_hash.empty());
  EXPECT_EQ(count_events("checkpoint"), 1u);
  step(2), step(3);
  for (int64_t i = 0; i < 3; ++i) written(i, 4);
  EXPECT_EQ(log->rest.checkpoints(), (std::vector<int64_t>{4}));  // keep = 1
}

TEST_F(CheckpointScript, AWorkerThatCouldNotWriteSkipsItAndKeepsTheOlder) {
  begin_every(2);
  step(0), step(1);
  for (int64_t i = 0; i < 3; ++i) written(i, 2);
  step(2), step(3);
  written(0, 4), written(1, 4, "No space left on device"), written(2, 4);
  EXPECT_EQ(log->rest.checkpoints(), (std::vector<int64_t>{2}));
  EXPECT_EQ(records("checkpoint_skipped"), 1u);
  ASSERT_EQ(count_events("checkpoint_skipped"), 1u);
  EXPECT_FALSE(result.has_value()) << "the job goes on";
}

TEST_F(CheckpointScript, OwnerAndBuddyLostRollsEverySurvivorBack) {
  begin_every(2);
  step(0), step(1);
  for (int64_t i = 0; i < 3; ++i) written(i, 2);
  step(2);  // committed: the job is at step 3 when two nodes go
  lose("n2");
  lose("n3");  // during the first recovery: worker 1 and its buddy, worker 2, are gone
  const auto recovers = net->of_type(recover_type);
  train::Recover r;
  ASSERT_TRUE(r.ParseFromString(recovers.back().header));
  EXPECT_EQ(r.version(), 2);
  ASSERT_TRUE(r.rollback());
  ASSERT_EQ(recovers.back().payloads.size(), 1u);
  EXPECT_EQ(storage::Manifest::from_json(
                nlohmann::json::parse(runtime::payload_text(recovers.back().payloads[0])))
                .step,
            2);
  EXPECT_EQ(records("rollback"), 1u);
  EXPECT_EQ(count_events("rollback"), 1u);
  recovered(0);
  step(2);  // replayed from the checkpoint on the one survivor
  ASSERT_TRUE(log->last_commit().has_value());
  EXPECT_EQ(log->last_commit()->step, 2);
  EXPECT_EQ(log->last_commit()->workers, 1);
}

TEST_F(CheckpointScript, OwnerAndBuddyLostWithoutACheckpointStopsSayingWhy) {
  begin_every(0);
  step(0), step(1);
  lose("n2");
  lose("n3");
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("and its buddies (the next worker) are all lost"), std::string::npos)
      << result->error;
  EXPECT_NE(result->error.find("no checkpoint to roll back to"), std::string::npos)
      << result->error;
}

}  // namespace
}  // namespace troupe::actors::testing
