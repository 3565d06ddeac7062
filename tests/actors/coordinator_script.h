// The coordinator's scripted-conversation fixture (switchboard.h), shared by the scripts of
// coordinator_test.cc and checkpoint_script_test.cc: the test plays three workers (ready,
// stats, norm parts, step done, recovered, final) and the nodes (lost), message by message.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>

#include "actors/commit_log.h"
#include "switchboard.h"
#include "train/dp_plan.h"
#include "train/step_rules.h"

namespace troupe::actors::testing {

// A CommitLog that remembers how many Commit messages had gone out when each commit was
// recorded (0: recorded before it was announced), and can refuse.
class SpyLog final : public CommitLog {
 public:
  std::function<size_t()> commits_sent;
  std::vector<size_t> sent_when_recorded;
  std::vector<CommitRecord> commits;
  bool refuse = false;
  runtime::Status record_commit(const CommitRecord& r) override {
    sent_when_recorded.push_back(commits_sent());
    if (refuse) return {runtime::Code::io_error, "disk full"};
    commits.push_back(r);
    return {};
  }
  runtime::Status record_view(uint64_t, const std::vector<std::string>&,
                              const nlohmann::json&) override {
    return {};
  }
  std::optional<CommitRecord> last_commit() const override {
    if (commits.empty()) return std::nullopt;
    return commits.back();
  }
  // Checkpoints and the rest: kept in memory.
  InMemoryCommitLog rest;
  runtime::Status record_checkpoint(const storage::Manifest& m) override {
    return rest.record_checkpoint(m);
  }
  runtime::Status delete_checkpoint(int64_t step) override { return rest.delete_checkpoint(step); }
  std::vector<int64_t> checkpoints() const override { return rest.checkpoints(); }
  runtime::Result<storage::Manifest> checkpoint(int64_t step) const override {
    return rest.checkpoint(step);
  }
  runtime::Status record(const nlohmann::json& r) override { return rest.record(r); }
};

class CoordinatorScript : public Conversation {
 protected:
  std::vector<std::string> live;  // the workers' addresses, by current index
  std::shared_ptr<SpyLog> log = std::make_shared<SpyLog>();
  int64_t n_mb = 0;

  void SetUp() override { begin({"train.steps=2", "train.eval_every=0"}); }

  void begin(std::vector<std::string> extra) {
    extra.push_back("model.engram_layers=[]");
    log->commits_sent = [this] { return count_sent(commit_type); };
    commit_log = log;
    start(3, extra);
    n_mb = config.train.batch_size / config.train.micro_batch_rows;
    for (int64_t i = 0; i < 3; ++i) live.push_back(worker_address(i));
    for (int64_t i = 0; i < 3; ++i) ready(i);
  }

  template <class Proto>
  void from(int64_t i, uint32_t type, const Proto& body, std::vector<runtime::Payload> p = {}) {
    ActorMessage m = make_message(live[size_t(i)], "", type, body);
    m.payloads = std::move(p);
    to_coordinator(std::move(m));
  }
  void ready(int64_t i) {
    train::Ready r;
    r.set_worker(i), r.set_parameters(10), r.set_weights_hash(42), r.set_optimizer_state_floats(5);
    from(i, ready_type, r);
  }
  void stats(int64_t i, int64_t step) {
    const model::TreeNode r = model::plan_ranges(n_mb, int64_t(live.size()))[size_t(i)];
    train::Stats st;
    st.set_step(step), st.set_kind(train::TRAIN), st.set_worker(i);
    std::vector<runtime::Payload> p;
    for (const model::TreeNode& n : model::tree_pieces(n_mb, r.lo, r.hi)) {
      train::PieceStats* ps = st.add_pieces();
      ps->mutable_node()->set_lo(n.lo), ps->mutable_node()->set_hi(n.hi);
      ps->set_ce(0.25f * float(n.hi - n.lo)), ps->set_ce_count(n.hi - n.lo);
      p.push_back(owned_payload(std::vector<int64_t>{}));
    }
    from(i, stats_type, st, std::move(p));
  }
  void norms(int64_t i, int64_t step) {
    train::NormParts np;
    np.set_step(step), np.set_worker(i);
    from(i, norm_parts_type, np, {owned_payload(std::vector<double>{double(i + 1)})});
  }
  void done(int64_t i, int64_t step) {
    train::StepDone d;
    d.set_step(step), d.set_worker(i);
    from(i, step_done_type, d);
  }
  void recovered(int64_t i) {
    train::Recovered r;
    r.set_worker(i);
    from(i, recovered_type, r);
  }
  void send_final(int64_t i) {
    train::Final f;
    f.set_worker(i), f.set_weights_hash(7);
    train::DropCount* d = f.add_drops();
    d->set_reason("duplicate"), d->set_count(1);
    std::vector<runtime::Payload> p;
    if (i == 0) p.push_back(owned_payload(std::vector<float>(3, 1.0f)));
    from(i, final_type, f, std::move(p));
  }
  void val(int64_t i, int64_t step) {  // a validation share without pieces
    train::Stats st;
    st.set_step(step), st.set_kind(train::VALIDATE), st.set_worker(i);
    from(i, stats_type, st);
  }
  // Step s as the workers would answer it, with its validation when the job has one.
  void step(int64_t s) {
    for (int64_t i = 0; i < int64_t(live.size()); ++i) stats(i, s), norms(i, s);
    for (int64_t i = 0; i < int64_t(live.size()); ++i) done(i, s);
    if (!model::validate_after(config.train.eval_every, s, config.train.steps)) return;
    for (int64_t i = 0; i < int64_t(live.size()); ++i) val(i, s);
  }
  void lose(const std::string& node) {
    caf::anon_send(coordinator, runtime::node_down_atom::value, node, std::string("killed"));
    run();
    live.erase(std::remove_if(live.begin(), live.end(),
                              [&](const std::string& a) { return runtime::node_of(a) == node; }),
               live.end());
  }
  uint64_t dropped(const std::string& reason) const {
    auto it = result->dropped.find(reason);
    return it == result->dropped.end() ? 0 : it->second;
  }
};

}  // namespace troupe::actors::testing
