// The coordinator's side of checkpoints in scripted conversations: a checkpoint is complete
// (its manifest recorded) only once every worker of the view wrote its shards, older ones
// beyond `keep` are deleted then and only then; a worker that could not write makes it
// skipped; an owner lost with its buddy rolls every survivor back to the newest checkpoint
// (Recover carries its manifest), and without one the job stops saying why.
#include <gtest/gtest.h>

#include <filesystem>

#include "actors/commit_log.h"
#include "storage/shard_store.h"
#include "switchboard.h"
#include "train/dp_plan.h"

namespace troupe::actors::testing {
namespace {

class CheckpointScript : public Conversation {
 protected:
  std::vector<std::string> live;
  std::shared_ptr<InMemoryCommitLog> log = std::make_shared<InMemoryCommitLog>();
  int64_t n_mb = 0;
  std::vector<float> bytes = {1, 2, 3, 4};

  void begin(int64_t every) {
    run_dir = (std::filesystem::temp_directory_path() /
               ("troupe-ckpt-script-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                  .string();
    std::filesystem::remove_all(run_dir);
    commit_log = log;
    start(3, {"train.steps=6", "train.eval_every=0", "model.engram_layers=[]",
              "checkpoint.every_steps=" + std::to_string(every), "checkpoint.keep=1"});
    n_mb = config.train.batch_size / config.train.micro_batch_rows;
    for (int64_t i = 0; i < 3; ++i) live.push_back(worker_address(i));
    for (int64_t i = 0; i < 3; ++i) {
      train::Ready r;
      r.set_worker(i), r.set_parameters(10), r.set_weights_hash(42);
      from(i, ready_type, r);
    }
  }
  void TearDown() override { std::filesystem::remove_all(run_dir); }

  template <class Proto>
  void from(int64_t i, uint32_t type, const Proto& body, std::vector<runtime::Payload> p = {}) {
    ActorMessage m = make_message(live[size_t(i)], "", type, body);
    m.payloads = std::move(p);
    to_coordinator(std::move(m));
  }
  void step(int64_t s) {
    const int64_t W = int64_t(live.size());
    for (int64_t i = 0; i < W; ++i) {
      const model::TreeNode r = model::plan_ranges(n_mb, W)[size_t(i)];
      train::Stats st;
      st.set_step(s), st.set_kind(train::TRAIN), st.set_worker(i);
      std::vector<runtime::Payload> p;
      for (const model::TreeNode& n : model::tree_pieces(n_mb, r.lo, r.hi)) {
        train::PieceStats* ps = st.add_pieces();
        ps->mutable_node()->set_lo(n.lo), ps->mutable_node()->set_hi(n.hi);
        ps->set_ce_count(n.hi - n.lo);
        p.push_back(owned_payload(std::vector<int64_t>{}));
      }
      from(i, stats_type, st, std::move(p));
      train::NormParts np;
      np.set_step(s), np.set_worker(i);
      from(i, norm_parts_type, np, {owned_payload(std::vector<double>{1.0})});
    }
    for (int64_t i = 0; i < W; ++i) {
      train::StepDone d;
      d.set_step(s), d.set_worker(i);
      from(i, step_done_type, d);
    }
  }
  // Worker i's shards of checkpoint `version`, really written, reported as written.
  void written(int64_t i, int64_t version, const std::string& error = "") {
    train::CheckpointWritten w;
    w.set_step(version), w.set_worker(i), w.set_ok(error.empty()), w.set_error(error);
    if (error.empty()) {
      const std::string writer = "w" + std::to_string(i);
      auto recs = storage::write_shards(storage::checkpoint_dir(run_dir, version) + "/" + writer,
                                        writer, version,
                                        {{"param/t" + std::to_string(i), {4}, bytes.data(), 4}});
      ASSERT_TRUE(recs.ok()) << recs.status().message();
      for (const storage::ShardRecord& r : recs.value()) {
        train::ShardEntry* e = w.add_shards();
        e->set_name(r.name), e->set_writer(r.writer), e->set_crc32c(r.crc32c);
        e->set_bytes(r.bytes);
      }
    }
    from(i, checkpoint_written_type, w);
  }
  void lose(const std::string& node) {
    caf::anon_send(coordinator, runtime::node_down_atom::value, node, std::string("killed"));
    run();
    live.erase(std::remove_if(live.begin(), live.end(),
                              [&](const std::string& a) { return runtime::node_of(a) == node; }),
               live.end());
  }
  size_t records(const std::string& kind) const {
    size_t n = 0;
    for (const auto& r : log->records()) n += r["kind"] == kind ? 1 : 0;
    return n;
  }
};

TEST_F(CheckpointScript, CompleteOnceEveryWorkerWroteThenOlderOnesGo) {
  begin(2);
  step(0), step(1);
  written(0, 2), written(1, 2);
  EXPECT_TRUE(log->checkpoints().empty()) << "complete before worker 2 wrote";
  written(2, 2);
  EXPECT_EQ(log->checkpoints(), (std::vector<int64_t>{2}));
  auto m = log->checkpoint(2);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m.value().shards.size(), 3u);
  EXPECT_FALSE(m.value().config_hash.empty());
  EXPECT_EQ(count_events("checkpoint"), 1u);
  step(2), step(3);
  for (int64_t i = 0; i < 3; ++i) written(i, 4);
  EXPECT_EQ(log->checkpoints(), (std::vector<int64_t>{4}));  // keep = 1
}

TEST_F(CheckpointScript, AWorkerThatCouldNotWriteSkipsItAndKeepsTheOlder) {
  begin(2);
  step(0), step(1);
  for (int64_t i = 0; i < 3; ++i) written(i, 2);
  step(2), step(3);
  written(0, 4), written(1, 4, "No space left on device"), written(2, 4);
  EXPECT_EQ(log->checkpoints(), (std::vector<int64_t>{2}));
  EXPECT_EQ(records("checkpoint_skipped"), 1u);
  ASSERT_EQ(count_events("checkpoint_skipped"), 1u);
  EXPECT_FALSE(result.has_value()) << "the job goes on";
}

TEST_F(CheckpointScript, OwnerAndBuddyLostRollsEverySurvivorBack) {
  begin(2);
  step(0), step(1);
  for (int64_t i = 0; i < 3; ++i) written(i, 2);
  step(2);  // committed: the job is at step 3 when two nodes go
  lose("n2");
  lose("n3");  // during the first recovery: worker 1 and its buddy, worker 2, are gone
  const auto recovers = net->of_type(recover_type);
  train::Recover r;
  ASSERT_TRUE(r.ParseFromString(recovers.back().header));
  EXPECT_EQ(r.version(), 2);
  ASSERT_FALSE(r.rollback_manifest().empty());
  EXPECT_EQ(storage::Manifest::from_json(nlohmann::json::parse(r.rollback_manifest())).step, 2);
  EXPECT_EQ(records("rollback"), 1u);
  EXPECT_EQ(count_events("rollback"), 1u);
  train::Recovered done;
  done.set_worker(0);
  from(0, recovered_type, done);
  step(2);  // replayed from the checkpoint on the one survivor
  ASSERT_TRUE(log->last_commit().has_value());
  EXPECT_EQ(log->last_commit()->step, 2);
  EXPECT_EQ(log->last_commit()->workers, 1);
}

TEST_F(CheckpointScript, OwnerAndBuddyLostWithoutACheckpointStopsSayingWhy) {
  begin(0);
  step(0), step(1);
  lose("n2");
  lose("n3");
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->error.find("and its buddies (the next worker) are all lost"),
            std::string::npos)
      << result->error;
  EXPECT_NE(result->error.find("no checkpoint to roll back to"), std::string::npos)
      << result->error;
}

}  // namespace
}  // namespace troupe::actors::testing
