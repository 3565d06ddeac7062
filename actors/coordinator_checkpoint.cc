// The coordinator's side of checkpoints (docs/storage.md). After the commit of every
// every_steps-th step it expects one CheckpointWritten from each worker of the view (and,
// with Engram shards, from each shard's lookup holder, which it asks to write); when
// all wrote their shards it records the manifest (CommitLog::record_checkpoint, synced in
// the journal) and only then deletes the complete checkpoints beyond `keep`. A worker that
// could not write (full disk, failed sync) makes that checkpoint skipped: the job goes on,
// nothing older is deleted. A view change abandons the checkpoints in flight (a lost
// writer's shards may be missing). The last fallback, an owner lost with all its buddies,
// rolls every survivor back to the newest checkpoint that verifies.
#include <fmt/format.h>

#include <algorithm>

#include "actors/coordinator_state.h"
#include "model/params.h"
#include "storage/checkpoint.h"
#include "train/dp_plan.h"

namespace troupe::actors::coordinator_impl {

namespace {

void skip(Self* self, int64_t step, const std::string& why) {
  auto& s = self->state;
  event(self, "checkpoint_skipped",
        fmt::format("the checkpoint of step {} is skipped: {}; training goes on, older "
                    "checkpoints are kept",
                    step, why),
        {{"step", step}, {"reason", why}});
  (void)s.commit_log->record({{"kind", "checkpoint_skipped"}, {"step", step}, {"why", why}});
}

// Keeps the newest `keep` complete checkpoints.
void delete_old(Self* self) {
  auto& s = self->state;
  const std::vector<int64_t> steps = s.commit_log->checkpoints();
  const int64_t keep = std::max<int64_t>(1, s.opt.config.checkpoint.keep);
  for (size_t i = 0; i + size_t(keep) < steps.size(); ++i) {
    const runtime::Status st = s.commit_log->delete_checkpoint(steps[i]);
    if (!st.ok())
      event(self, "checkpoint",
            fmt::format("could not delete the checkpoint of step {}: {}", steps[i], st.message()));
  }
  storage::remove_incomplete_checkpoints(s.opt.job.run_dir, s.commit_log->checkpoints());
}

void complete(Self* self, int64_t step, PendingCheckpoint& p) {
  auto& s = self->state;
  storage::Manifest m;
  m.step = step;
  m.epoch = p.epoch;
  m.job = storage::job_identity(s.opt.config);
  m.config_hash = storage::identity_hash(m.job);
  m.shards = std::move(p.shards);
  const size_t shards = m.shards.size();
  const runtime::Status st = s.commit_log->record_checkpoint(m);
  if (!st.ok()) return skip(self, step, "its manifest could not be recorded: " + st.message());
  s.controls.last_checkpoint = step;
  event(self, "checkpoint",
        fmt::format("step {}: {} shards from {} workers{}, complete", step, shards,
                    s.core.workers.size(),
                    p.engram_writers ? fmt::format(" and {} Engram holders", p.engram_writers)
                                     : std::string()),
        {{"step", step}, {"shards", shards}, {"stall_ms", p.stall_ms}});
  delete_old(self);
}

}  // namespace

void expect_checkpoint(Self* self, int64_t version, bool forced) {
  auto& s = self->state;
  const int64_t every = s.opt.config.checkpoint.every_steps;
  if (!forced && (every <= 0 || version % every != 0)) return;
  if (s.opt.job.run_dir.empty()) return;
  PendingCheckpoint& p = s.checkpoints[version];
  p = PendingCheckpoint{};
  p.epoch = s.core.epoch;
  p.engram_writers = ask_engram_checkpoint(self, version);
  p.written.open(s.core.epoch, version, int64_t(s.core.workers.size()) + p.engram_writers);
}

void abandon_checkpoints(Self* self) {
  auto& s = self->state;
  for (const auto& [step, p] : s.checkpoints)
    skip(self, step, "the view changed while it was written");
  s.checkpoints.clear();
}

Verdict on_checkpoint_written(Self* self, const train::CheckpointWritten& w,
                              const ActorMessage& m) {
  auto& s = self->state;
  if (Verdict v =
          w.engram() ? check_engram_writer(self, w.worker(), m) : check_worker(self, w.worker(), m))
    return v;
  const int64_t writer = w.engram() ? int64_t(s.core.workers.size()) + w.worker() : w.worker();
  auto it = s.checkpoints.find(w.step());
  if (it == s.checkpoints.end())
    return drop(Drop::wrong_step, fmt::format("a checkpoint of step {} not expected", w.step()));
  PendingCheckpoint& p = it->second;
  train::ShardList list;
  if (w.ok() != (m.payloads.size() == 1) ||
      (w.ok() && !list.ParseFromString(runtime::payload_text(m.payloads[0]))))
    return drop(Drop::malformed, "a CheckpointWritten without its one shard list");
  if (Verdict v = drop_receipt(p.written.add(m.epoch, w.step(), writer), "CheckpointWritten"))
    return v;
  if (!w.ok() && p.failed.empty())
    p.failed =
        fmt::format("{} {}: {}", w.engram() ? "Engram shard" : "worker", w.worker(), w.error());
  p.stall_ms = std::max(p.stall_ms, w.snapshot_ms());
  for (const train::ShardEntry& e : list.shards())
    p.shards.push_back({e.name(), e.writer(), e.crc32c(), e.bytes()});
  if (!p.written.complete()) return {};
  if (p.failed.empty())
    complete(self, w.step(), p);
  else
    skip(self, w.step(), p.failed);
  s.checkpoints.erase(it);
  return {};
}

std::string share_lost(Self* self, int64_t old_workers, const std::vector<int64_t>& survivors) {
  auto& s = self->state;
  const model::ParamTable table(s.opt.config.model);
  const std::vector<model::FlatRange> owners = model::plan_owners(table, old_workers);
  const int64_t copies =
      std::min<int64_t>(s.opt.config.fault_tolerance.buddy_copies, old_workers - 1);
  std::vector<bool> alive(size_t(old_workers), false);
  for (int64_t i : survivors) alive[size_t(i)] = true;
  for (int64_t o = 0; o < old_workers; ++o) {
    if (owners[size_t(o)].hi <= owners[size_t(o)].lo) continue;
    bool held = false;
    for (int64_t d = 0; d <= copies && !held; ++d) held = alive[size_t((o + d) % old_workers)];
    if (!held)
      return fmt::format("worker {} and its buddies (the next {}) are all lost", o,
                         copies == 1 ? std::string("worker") : fmt::format("{} workers", copies));
  }
  return "";
}

runtime::Result<storage::Manifest> rollback_checkpoint(Self* self) {
  auto& s = self->state;
  const CommitLog& log = *s.commit_log;
  return storage::newest_good_checkpoint(
      s.opt.job.run_dir, log.checkpoints(), [&log](int64_t step) { return log.checkpoint(step); },
      [self](const std::string& w) { event(self, "checkpoint_corrupt", w); });
}

}  // namespace troupe::actors::coordinator_impl
