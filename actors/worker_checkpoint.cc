// The worker's side of checkpoints (docs/storage.md). After the Commit of every
// every_steps-th step each owner copies its share (weights and optimizer state; worker 0
// also the Engram tables and moments when every worker holds them alike — with Engram
// shards their lookup holders write them) and writes it on a thread of its own while
// training goes on; it reports the shards to the coordinator, which makes the checkpoint
// complete by recording its manifest. Resuming and rolling back
// load a checkpoint instead: every weight, and the optimizer state of the new share.
#include <fmt/format.h>

#include <chrono>

#include "actors/checkpoint_writer.h"
#include "actors/worker.h"
#include "storage/checkpoint.h"

namespace troupe::actors::worker_impl {

void maybe_checkpoint(Self* self, int64_t version, bool forced) {
  auto& s = self->state;
  const int64_t every = s.trainer->cfg.checkpoint.every_steps;
  if (!forced && (every <= 0 || version % every != 0)) return;
  if (s.ctx.job.run_dir.empty()) return;
  if (s.checkpoint_writer.joinable()) s.checkpoint_writer.join();  // one in flight at most
  const auto t0 = std::chrono::steady_clock::now();
  // Into the last checkpoint's buffers: its write is done (joined above).
  std::shared_ptr<std::vector<model::StateTensor>> snap = s.snapshot;
  s.trainer->snapshot_state_into(s.owners[size_t(s.me)], s.me == 0, snap.get());
  const double snapshot_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  s.snapshot_seconds += snapshot_ms / 1000;
  const std::string writer = fmt::format("e{}-w{}", s.epoch, s.me);
  const std::string dir = storage::checkpoint_dir(s.ctx.job.run_dir, version) + "/" + writer;
  ActorMessage m = make_message(s.ctx.address, s.ctx.coordinator, checkpoint_written_type,
                                train::CheckpointWritten{});
  m.epoch = s.epoch;
  train::CheckpointWritten w;
  w.set_step(version), w.set_worker(s.me), w.set_snapshot_ms(snapshot_ms);
  s.checkpoint_writer = std::thread([snap, dir, writer, w, m = std::move(m), router = s.ctx.router,
                                     faults = s.storage_faults]() mutable {
    write_and_report(*snap, dir, writer, std::move(w), std::move(m), router, faults);
  });
}

Verdict on_checkpoint_now(Self* self, const train::CheckpointNow& c, const ActorMessage&) {
  auto& s = self->state;
  if (c.version() != s.version || c.version() != s.committed || s.recovery.active)
    return drop(Drop::wrong_step, fmt::format("CheckpointNow of step {} at version {} ({} "
                                              "committed)",
                                              c.version(), s.version, s.committed));
  const int64_t every = s.trainer->cfg.checkpoint.every_steps;
  if (every > 0 && c.version() % every == 0)
    return drop(Drop::duplicate, "that checkpoint is written already (every_steps)");
  maybe_checkpoint(self, c.version(), true);
  return {};
}

void load_checkpoint(WorkerState& s, const storage::Manifest& m) {
  const runtime::Status st =
      storage::load_checkpoint(s.ctx.job.run_dir, m, s.owners[size_t(s.me)], s.trainer.get());
  if (!st.ok())
    throw std::runtime_error(
        fmt::format("cannot load the checkpoint of step {}: {}", m.step, st.message()));
  s.version = s.committed = m.step;
  s.saved_for = -1;
  s.loaded = m;
}

void read_loaded_state(const WorkerState& s, const std::vector<size_t>& tensors,
                       std::vector<std::vector<float>>* out) {
  const int64_t version = s.loaded->step;
  storage::CheckpointReader reader(storage::checkpoint_dir(s.ctx.job.run_dir, version), version,
                                   s.loaded->shards);
  for (size_t t : tensors) {
    const runtime::Status st =
        reader.read("optim/" + s.trainer->table.all()[t].name, &out->emplace_back());
    if (!st.ok())
      throw std::runtime_error(
          fmt::format("cannot read a lost owner's optimizer state from the "
                      "checkpoint of step {}: {}",
                      version, st.message()));
  }
}

}  // namespace troupe::actors::worker_impl
