// Where the coordinator records what it decided before it tells anyone (DESIGN §4): a step
// committed (with the micro-batches it consumed: the data ledger), a view changed, a
// checkpoint complete, a rollback. The coordinator announces a Commit only after
// record_commit returned ok, so a restarted coordinator that reads the log back never
// un-commits a step the workers were told about. In memory here (tests, and a job without
// a run directory); journal_log.h backs it with the RocksDB journal (storage/journal.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/status.h"
#include "storage/journal.h"

namespace troupe::actors {

struct CommitRecord {
  int64_t step = 0;    // the train step every worker applied (0-based)
  uint64_t epoch = 0;  // the view it committed in
  int64_t workers = 0;
  // The tree pieces [lo, hi) of the step's micro-batches whose gradients were reduced.
  std::vector<std::pair<int64_t, int64_t>> micro_batches;
};

class CommitLog {
 public:
  virtual ~CommitLog() = default;
  // Call when every worker of `epoch` applied `step`, before announcing Commit(step).
  // Guarantees on ok: the record is as durable as the log (a restart reads it back).
  // Errors: a Status naming the cause (a full disk, say); the caller then announces
  // nothing and stops the job with that message.
  virtual runtime::Status record_commit(const CommitRecord& r) = 0;
  // Call when the coordinator changes the view (bump_epoch), before publishing it.
  // Errors: as record_commit.
  // `placement`: what a restarted coordinator rebuilds the view from ({"members": [{"id",
  // "address", "pid", "worker"}]}).
  virtual runtime::Status record_view(uint64_t epoch, const std::vector<std::string>& nodes,
                                      const nlohmann::json& placement) = 0;
  // The last recorded commit, if any.
  virtual std::optional<CommitRecord> last_commit() const = 0;

  // A checkpoint whose every shard is written: from now on it exists. Errors: as above;
  // the checkpoint is then not complete and nothing older is deleted.
  virtual runtime::Status record_checkpoint(const storage::Manifest& m) = 0;
  // Deletes a complete checkpoint (its record first, then its files).
  virtual runtime::Status delete_checkpoint(int64_t step) = 0;
  // The complete checkpoints, by step (ascending).
  virtual std::vector<int64_t> checkpoints() const = 0;
  virtual runtime::Result<storage::Manifest> checkpoint(int64_t step) const = 0;
  // Anything else the journal keeps: {"kind": "rollback" | "resume" | "checkpoint_skipped",
  // …} (storage/journal.h).
  virtual runtime::Status record(const nlohmann::json& r) = 0;
};

// The log in memory: what a coordinator that never restarts needs.
class InMemoryCommitLog final : public CommitLog {
 public:
  runtime::Status record_commit(const CommitRecord& r) override {
    commits_.push_back(r);
    return {};
  }
  runtime::Status record_view(uint64_t epoch, const std::vector<std::string>& nodes,
                              const nlohmann::json&) override {
    views_.push_back({epoch, nodes});
    return {};
  }
  std::optional<CommitRecord> last_commit() const override {
    if (commits_.empty()) return std::nullopt;
    return commits_.back();
  }
  runtime::Status record_checkpoint(const storage::Manifest& m) override {
    manifests_[m.step] = m;
    return {};
  }
  runtime::Status delete_checkpoint(int64_t step) override {
    manifests_.erase(step);
    return {};
  }
  std::vector<int64_t> checkpoints() const override {
    std::vector<int64_t> out;
    for (const auto& [step, m] : manifests_) out.push_back(step);
    return out;
  }
  runtime::Result<storage::Manifest> checkpoint(int64_t step) const override {
    auto it = manifests_.find(step);
    if (it == manifests_.end())
      return runtime::Status(runtime::Code::invalid_argument,
                             "no checkpoint of step " + std::to_string(step));
    return it->second;
  }
  runtime::Status record(const nlohmann::json& r) override {
    records_.push_back(r);
    return {};
  }
  const std::vector<CommitRecord>& commits() const { return commits_; }
  const std::vector<nlohmann::json>& records() const { return records_; }

 private:
  struct ViewRecord {
    uint64_t epoch;
    std::vector<std::string> nodes;
  };
  std::vector<CommitRecord> commits_;
  std::vector<ViewRecord> views_;
  std::map<int64_t, storage::Manifest> manifests_;
  std::vector<nlohmann::json> records_;
};

}  // namespace troupe::actors
