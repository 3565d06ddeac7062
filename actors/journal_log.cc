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

runtime::Status JournalCommitLog::record_view(uint64_t epoch, const std::vector<std::string>& nodes,
                                              const nlohmann::json& placement) {
  nlohmann::json r = {{"kind", "view"}, {"epoch", epoch}, {"nodes", nodes}};
  if (placement.contains("members")) r["members"] = placement["members"];
  return journal_->append(r);
}

std::optional<RestartState> restart_state(const storage::Journal& journal) {
  std::optional<RestartState> out;
  int64_t committed = 0;
  for (const nlohmann::json& r : journal.records()) {
    const std::string kind = r.value("kind", "");
    if (kind == "commit") committed = r.value("step", int64_t(-1)) + 1;
    if (kind == "resume" || kind == "rollback") committed = r.value("step", int64_t(0));
    if (kind == "view" && r.contains("members") && !r["members"].empty()) {
      RestartState s;
      s.epoch = r.value("epoch", uint64_t(0));
      for (const nlohmann::json& m : r["members"])
        s.members.push_back({m.value("id", ""), m.value("address", ""), m.value("pid", uint32_t(0)),
                             m.value("worker", "")});
      out = std::move(s);
    }
    if (kind == "end") out.reset();  // the job ended: its nodes are gone
    if (kind == "view") {            // a view without workers (joining): no job to restart into yet
      if (!r.contains("members") || r["members"].empty()) out.reset();
    }
  }
  if (out) out->committed = committed;
  return out;
}

runtime::Status JournalCommitLog::record_checkpoint(const storage::Manifest& m) {
  return journal_->put_manifest(m);
}

runtime::Status JournalCommitLog::delete_checkpoint(int64_t step) {
  if (runtime::Status st = journal_->delete_manifest(step); !st.ok()) return st;
  std::error_code ec;
  std::filesystem::remove_all(storage::checkpoint_dir(run_dir_, step), ec);
  if (ec)
    return runtime::Status(
        runtime::Code::io_error,
        "cannot remove " + storage::checkpoint_dir(run_dir_, step) + ": " + ec.message());
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
