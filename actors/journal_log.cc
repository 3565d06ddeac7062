#include "actors/journal_log.h"

#include <charconv>
#include <filesystem>
#include <stdexcept>
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
  for (const char* key : {"members", "old_members", "recovery_base", "memory"})
    if (placement.contains(key)) r[key] = placement[key];
  return journal_->append(r);
}

namespace {

std::vector<RestartState::Member> members_of(const nlohmann::json& list) {
  std::vector<RestartState::Member> out;
  for (const nlohmann::json& m : list)
    out.push_back({m.value("id", ""), m.value("address", ""), m.value("pid", uint32_t(0)),
                   m.value("worker", "")});
  return out;
}

int64_t node_number(const std::string& id) {  // "n12" → 12
  return id.size() > 1 && id[0] == 'n' ? std::atoll(id.c_str() + 1) : 0;
}

}  // namespace

std::optional<RestartState> restart_state(const storage::Journal& journal) {
  std::optional<RestartState> out;
  int64_t committed = 0, max_node = 0;
  nlohmann::json before;   // an unfinished reshape's view before (old_members)
  nlohmann::json base;     // an unfinished recovery's base (recovery_base)
  nlohmann::json holders;  // the last engram_holders record
  for (const nlohmann::json& r : journal.records()) {
    const std::string kind = r.value("kind", "");
    if (kind == "engram_holders") holders = r;
    if (kind == "commit") committed = r.value("step", int64_t(-1)) + 1, base = {};
    if (kind == "recovered" && r.value("epoch", uint64_t(0)) == (out ? out->epoch : 0)) base = {};
    if (kind == "resume" || kind == "rollback") committed = r.value("step", int64_t(0));
    if (kind == "reshaped" && r.value("epoch", uint64_t(0)) == (out ? out->epoch : 0)) before = {};
    if (kind == "end") out.reset();  // the job ended: its nodes are gone
    if (kind != "view") continue;
    for (const char* key : {"members", "old_members", "memory"})
      for (const RestartState::Member& m : members_of(r.value(key, nlohmann::json::array())))
        max_node = std::max(max_node, node_number(m.id));
    before = r.value("old_members", nlohmann::json());
    base = r.value("recovery_base", nlohmann::json());
    if (!r.contains("members") || r["members"].empty()) {
      out.reset();  // a view without workers (joining): no job to restart into yet
      continue;
    }
    out = RestartState{};
    out->epoch = r.value("epoch", uint64_t(0));
    out->members = members_of(r["members"]);
    out->memory = members_of(r.value("memory", nlohmann::json::array()));
  }
  if (!out) return out;
  out->committed = committed;
  out->max_node = max_node;
  if (base.is_array())
    for (const nlohmann::json& w : base) out->recovery_base.push_back(w.get<std::string>());
  if (holders.is_object()) {
    out->engram_holders = holders.value("holders", nlohmann::json::array())
                              .get<std::vector<std::vector<std::string>>>();
    for (const nlohmann::json& a : holders.value("awaiting", nlohmann::json::array()))
      out->engram_awaiting.emplace_back(a.at(0).get<int64_t>(), a.at(1).get<std::string>());
  }
  if (!before.is_null() && !before.empty()) {
    out->members = members_of(before);  // back to the view before, as an aborted reshape does
    out->reshape_undone = true;
  }
  return out;
}

namespace {

// A swap record's "saved_hash" (16 hex digits, as the events print it).
uint64_t saved_hash_of(const nlohmann::json& r) {
  const std::string h = r.value("saved_hash", "");
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(h.data(), h.data() + h.size(), v, 16);
  if (h.empty() || ec != std::errc() || end != h.data() + h.size())
    throw std::runtime_error("the journal's " + r.value("kind", "") + " record of step " +
                             std::to_string(r.value("step", int64_t(-1))) +
                             " has no valid saved_hash ('" + h +
                             "'): the run directory is "
                             "damaged; resume from another copy of it");
  return v;
}

}  // namespace

std::vector<StackedSet> engram_stack_at(const storage::Journal& journal, int64_t step,
                                        bool at_step) {
  std::vector<std::pair<int64_t, nlohmann::json>> swaps;
  for (const nlohmann::json& r : journal.records()) {
    const std::string kind = r.value("kind", "");
    if (kind == "resume" || kind == "rollback") {
      const int64_t back = r.value("step", int64_t(0));
      std::erase_if(swaps, [&](const auto& w) { return w.first >= back; });
    }
    if (kind == "engram_attach" || kind == "engram_detach")
      swaps.emplace_back(r.value("step", int64_t(-1)), r);
  }
  std::vector<StackedSet> stack = {{"initial"}};
  for (const auto& [at, r] : swaps) {
    if (at > step || (at == step && !at_step)) continue;
    if (r.value("kind", "") == "engram_attach")
      push_engram_set(&stack, r.value("name", ""), at, saved_hash_of(r));
    else
      pop_engram_set(&stack);
  }
  return stack;
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
