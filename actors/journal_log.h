// The CommitLog on the RocksDB journal of a run directory (storage/journal.h): every record
// synced before the coordinator announces what it decided. Deleting a checkpoint removes
// its manifest first, then its shard files, so a crash in between leaves only unreferenced
// files, never a manifest without its shards.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "actors/commit_log.h"

namespace troupe::actors {

// What a restarted coordinator rebuilds from the journal: the last view with workers (its
// epoch and members) and the steps committed (a commit's step + 1; a resume's or rollback's
// step). None when the job never placed its workers, or when it ended ("end": its nodes left).
struct RestartState {
  struct Member {
    std::string id, address;
    uint32_t pid = 0;
    std::string worker;  // its worker's address, "n3/worker.2"
  };
  uint64_t epoch = 0;
  std::vector<Member> members;
  std::vector<Member> memory;  // the memory nodes of that view (troupe node --role engram)
  int64_t committed = 0;
  int64_t max_node = 0;  // the highest K of any node nK in a view: new nodes get higher ids
  // The coordinator died during a reshape (a view with old_members and no "reshaped" record
  // for it): members are those of the view before; the newcomers are fenced.
  bool reshape_undone = false;
  // The coordinator died during a recovery (a view with recovery_base, no "recovered" record
  // for it and no commit since): the workers of the view it recovers from. The restarted
  // coordinator recovers from the same base, as the workers that took its Recover do.
  std::vector<std::string> recovery_base;
  // `[engram] placement = "shards"` (issue 16): the holders of the last view, node ids by
  // shard, and the (shard, node) pairs that had not been sent their tables yet.
  std::vector<std::vector<std::string>> engram_holders;
  std::vector<std::pair<int64_t, std::string>> engram_awaiting;
};
std::optional<RestartState> restart_state(const storage::Journal& journal);

// A table set on a job's stack and, below the attached one, the version its covering attach
// saved (storage/engram_saves.h): what a detach loads back, and the hash that load must give.
struct StackedSet {
  std::string name;
  int64_t saved_step = -1;  // -1: the attached set, not saved
  uint64_t saved_hash = 0;
  bool operator==(const StackedSet&) const = default;
};
// An attach after `step` commits: the attached set saved (with `hash`), `name` on top.
inline void push_engram_set(std::vector<StackedSet>* stack, const std::string& name, int64_t step,
                            uint64_t hash) {
  stack->back().saved_step = step;
  stack->back().saved_hash = hash;
  stack->push_back({name});
}
// A detach: the set under the attached one is attached again (not saved any more).
inline void pop_engram_set(std::vector<StackedSet>* stack) {
  if (stack->size() < 2) return;
  stack->pop_back();
  stack->back() = {stack->back().name};
}
// The Engram table sets attached in the state of step `step` (bottom first, "initial" at
// [0]), replayed from the journaled swaps: those before it, and with at_step those at it too
// (a swap at step s runs after the commit of s, after its checkpoint was taken; a restarted
// coordinator's workers kept it). Swaps that a later resume or rollback went back before are
// not counted.
std::vector<StackedSet> engram_stack_at(const storage::Journal& journal, int64_t step,
                                        bool at_step);

class JournalCommitLog final : public CommitLog {
 public:
  JournalCommitLog(std::string run_dir, std::shared_ptr<storage::Journal> journal);
  runtime::Status record_commit(const CommitRecord& r) override;
  runtime::Status record_view(uint64_t epoch, const std::vector<std::string>& nodes,
                              const nlohmann::json& placement) override;
  std::optional<CommitRecord> last_commit() const override { return last_; }
  runtime::Status record_checkpoint(const storage::Manifest& m) override;
  runtime::Status delete_checkpoint(int64_t step) override;
  std::vector<int64_t> checkpoints() const override;
  runtime::Result<storage::Manifest> checkpoint(int64_t step) const override;
  runtime::Status record(const nlohmann::json& r) override;

 private:
  std::string run_dir_;
  std::shared_ptr<storage::Journal> journal_;
  std::optional<CommitRecord> last_;
};

}  // namespace troupe::actors
