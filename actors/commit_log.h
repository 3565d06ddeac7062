// Where the coordinator records what it decided before it tells anyone (DESIGN §4): a step
// committed, a view changed. The coordinator announces a Commit only after record_commit
// returned ok, so a restarted coordinator that reads the log back never un-commits a step
// the workers were told about. In memory here; the next issue backs it with RocksDB.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace troupe::actors {

struct CommitRecord {
  int64_t step = 0;    // the train step every worker applied (0-based)
  uint64_t epoch = 0;  // the view it committed in
  int64_t workers = 0;
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
  virtual runtime::Status record_view(uint64_t epoch, const std::vector<std::string>& nodes) = 0;
  // The last recorded commit, if any.
  virtual std::optional<CommitRecord> last_commit() const = 0;
};

// The log in memory: what a coordinator that never restarts needs.
class InMemoryCommitLog final : public CommitLog {
 public:
  runtime::Status record_commit(const CommitRecord& r) override {
    commits_.push_back(r);
    return {};
  }
  runtime::Status record_view(uint64_t epoch, const std::vector<std::string>& nodes) override {
    views_.push_back({epoch, nodes});
    return {};
  }
  std::optional<CommitRecord> last_commit() const override {
    if (commits_.empty()) return std::nullopt;
    return commits_.back();
  }
  const std::vector<CommitRecord>& commits() const { return commits_; }

 private:
  struct ViewRecord {
    uint64_t epoch;
    std::vector<std::string> nodes;
  };
  std::vector<CommitRecord> commits_;
  std::vector<ViewRecord> views_;
};

}  // namespace troupe::actors
