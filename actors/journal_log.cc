#include "actors/journal_log.h"

#include <filesystem>
#include <system_error>

#include "storage/shard_store.h"

namespace troupe::actors {

JournalCommitLog::JournalCommitLog(std::string run_dir, std::shared_ptr<storage::Journal> journal)
    : run_dir_(std::move(run_dir)), journal_(std::move(journal)) {}

runtime::Status JournalCommitLog::record_commit(const CommitRecord& r) {
  nlohmann::json mbs = nlohmann::json::array();
  for (const auto& [lo, hi] : r.micro_batches) mbs.push_back({lo, hi});
  runtime::Status st = journal_->append({{"kind", "commit"},
                                         {"step", r.step},
                                         {"epoch", r.epoch},
                                         {"workers", r.workers},
                                         {"micro_batches", mbs}});
  if (st.ok()) last_ = r;
  return st;
}

runtime::Status JournalCommitLog::record_view(uint64_t epoch,
                                              const std::vector<std::string>& nodes) {
  return journal_->append({{"kind", "view"}, {"epoch", epoch}, {"nodes", nodes}});
}

runtime::Status JournalCommitLog::record_checkpoint(const storage::Manifest& m) {
  return journal_->put_manifest(m);
}

runtime::Status JournalCommitLog::delete_checkpoint(int64_t step) {
  if (runtime::Status st = journal_->delete_manifest(step); !st.ok()) return st;
  std::error_code ec;
  std::filesystem::remove_all(storage::checkpoint_dir(run_dir_, step), ec);
  if (ec)
    return runtime::Status(runtime::Code::io_error,
                           "cannot remove " + storage::checkpoint_dir(run_dir_, step) + ": " +
                               ec.message());
  return {};
}

std::vector<int64_t> JournalCommitLog::checkpoints() const {
  return journal_->manifest_steps();
}

runtime::Result<storage::Manifest> JournalCommitLog::checkpoint(int64_t step) const {
  return journal_->manifest(step);
}

runtime::Status JournalCommitLog::record(const nlohmann::json& r) {
  return journal_->append(r);
}

}  // namespace troupe::actors
