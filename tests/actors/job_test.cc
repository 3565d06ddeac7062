// Whole jobs, the coordinator and real workers, on CAF's deterministic test coordinator
// through the switchboard (switchboard.h): an undisturbed job ends with the weights of a
// single-process Trainer; every message delivered twice, old messages replayed, the Weights
// of each step reordered, and a node lost between Apply and StepDone all end with the same
// weights — a duplicated, replayed or reordered message changes nothing.
#include <gtest/gtest.h>

#include <algorithm>

#include "switchboard.h"
#include "train/trainer.h"

namespace troupe::actors::testing {
namespace {

// Small enough to run a few steps per test in a second or two; Engram on, so EngramSlices
// travel too; a validation after step 1 and after the last.
const std::vector<std::string> small_job = {
    "model.n_layers=2",         "model.d_model=64",     "model.seq_len=32",   "train.batch_size=8",
    "train.micro_batch_rows=2", "train.steps=3",        "train.eval_every=2", "train.threads=1",
    "data.val_rows_max=4",      "model.dense_inter=96", "model.moe_inter=32"};

class Job : public Conversation {
 protected:
  // Runs the job on `nodes` workers until on_done, holding back what `hold` selects and
  // delivering it through `release` whenever everyone else is idle.
  void run_job(int64_t nodes) {
    start(nodes, small_job);
    spawn_workers(nodes);
    for (int rounds = 0; !result && rounds < 10000; ++rounds) {
      run();
      if (result || held.empty()) break;
      release();
    }
    ASSERT_TRUE(result.has_value()) << "the job did not end";
  }

  uint64_t trainer_hash() {
    model::JobConfig c = model::config_from_text(config_text, "tiny.toml", small_job);
    model::Trainer t(c);
    for (int64_t s = 0; s < c.train.steps; ++s) t.train_step(s);
    return t.weights_hash();
  }

  // Messages held back by the switchboard's copies rule (0 copies, kept here).
  std::vector<ActorMessage> held;
  void release() {
    std::vector<ActorMessage> out;
    out.swap(held);
    std::reverse(out.begin(), out.end());
    for (ActorMessage& m : out) caf::anon_send(net->actors.at(m.to.substr(m.to.find('/') + 1)), m);
  }
  uint64_t dropped(const std::string& reason) const {
    auto it = result->dropped.find(reason);
    return it == result->dropped.end() ? 0 : it->second;
  }
};

TEST_F(Job, UndisturbedEndsWithTheTrainersWeights) {
  run_job(3);
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->steps_done, 3);
  EXPECT_EQ(result->weights_hash, trainer_hash());
  EXPECT_TRUE(result->dropped.empty());
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_TRUE(reports[1].has_val && reports[2].has_val && !reports[0].has_val);
  EXPECT_EQ(count_sent(commit_type), 9u);  // three steps, three workers
}

TEST_F(Job, EveryMessageTwiceChangesNothing) {
  net->copies = [](const ActorMessage&) { return 2; };
  run_job(3);
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->weights_hash, trainer_hash());
  EXPECT_GT(dropped("duplicate"), 0u);
  EXPECT_EQ(dropped("malformed"), 0u);  // a second copy is a duplicate, not a bad message
  // Every type the actors exchange went twice and was dropped, not acted on, the second time.
  EXPECT_EQ(count_sent(apply_type), 9u);
  EXPECT_EQ(count_sent(commit_type), 9u);
}

TEST_F(Job, ReplayedOldMessagesChangeNothing) {
  // After every 7th message, one sent earlier (half-way back) arrives once more.
  net->after = [this](const ActorMessage&) {
    const size_t n = net->sent.size();
    if (n % 7 != 0) return;
    const ActorMessage& old = net->sent[n / 2];
    const auto it = net->actors.find(old.to.substr(old.to.find('/') + 1));
    if (it != net->actors.end()) caf::anon_send(it->second, old);
  };
  run_job(3);
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->weights_hash, trainer_hash());
  EXPECT_GT(result->dropped.size(), 0u);
}

TEST_F(Job, ReorderedWeightsChangeNothing) {
  net->copies = [this](const ActorMessage& m) {
    if (m.type != weights_type) return 1;
    held.push_back(m);  // delivered later, last first
    return 0;
  };
  run_job(3);
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->weights_hash, trainer_hash());
}

TEST_F(Job, ANodeLostBetweenApplyAndStepDoneChangesNothing) {
  bool killed = false;
  net->after = [&](const ActorMessage& m) {
    train::Apply a;
    if (killed || m.type != apply_type || !a.ParseFromString(m.header) || a.step() != 1) return;
    killed = true;
    net->dead.insert("n2");
    caf::anon_send(coordinator, runtime::node_down_atom::value, std::string("n2"),
                   std::string("killed by the test"));
  };
  run_job(3);
  ASSERT_TRUE(killed);
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->recoveries, 1);
  EXPECT_EQ(result->weights_hash, trainer_hash());
}

TEST_F(Job, AMalformedMessageOfEveryTypeIsDroppedAndTheWorkerGoesOn) {
  const std::vector<uint32_t> types = {step_begin_type,  grad_slices_type, engram_slices_type,
                                       apply_type,       weights_type,     commit_type,
                                       buddy_state_type, recover_type,     state_transfer_type,
                                       finish_type,      stats_type,       9999};
  bool sent = false;
  net->after = [&](const ActorMessage& m) {  // in the middle of step 1
    train::Apply a;
    if (sent || m.type != apply_type || !a.ParseFromString(m.header) || a.step() != 1) return;
    sent = true;
    for (int64_t w = 0; w < 3; ++w)
      for (uint32_t t : types) {
        ActorMessage bad;
        bad.from = worker_address((w + 1) % 3), bad.to = worker_address(w);
        bad.type = t, bad.header = "\xff\xff\xff\xff", bad.epoch = net->epoch;
        caf::anon_send(workers[size_t(w)], bad);
      }
    train::Recover r;  // decodes, from a future epoch, but names nobody this worker knows
    r.set_version(1), r.set_old_workers(3);
    r.add_workers("n9/worker.9"), r.add_old_index(0);
    train::GradSlices gs;  // inside the batch, but not one of the step's canonical pieces
    gs.set_step(1);
    gs.add_nodes()->set_hi(3);
    for (int64_t w = 0; w < 3; ++w) {
      ActorMessage bad = make_message("n0/coordinator.0", worker_address(w), recover_type, r);
      bad.epoch = net->epoch + 100;
      caf::anon_send(workers[size_t(w)], bad);
      bad = make_message(worker_address((w + 1) % 3), worker_address(w), grad_slices_type, gs);
      bad.epoch = net->epoch;
      bad.payloads = {owned_payload(std::vector<float>{})};
      caf::anon_send(workers[size_t(w)], bad);
    }
  };
  run_job(3);
  ASSERT_TRUE(sent);
  EXPECT_TRUE(result->ok) << result->error;
  EXPECT_EQ(result->weights_hash, trainer_hash());
  EXPECT_EQ(dropped("undecodable"), 3u * 10);  // the worker's ten types
  EXPECT_EQ(dropped("wrong_phase"), 3u);       // Stats: the coordinator's, not a worker's
  EXPECT_EQ(dropped("unknown_type"), 3u);
  // The Recovers (the workers stay in their epoch) and the GradSlices.
  EXPECT_EQ(dropped("malformed"), 3u + 3u);
}

}  // namespace
}  // namespace troupe::actors::testing
