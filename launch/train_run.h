#pragma once
// The run directory of `troupe train` (issue 12): held by one job (flock), its journal (one
// commit record per step: the data ledger), a resume from the newest good checkpoint, and
// the checkpoints written every [checkpoint] every_steps while training goes on.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/job_config.h"
#include "storage/faults.h"
#include "storage/journal.h"
#include "storage/run_lock.h"
#include "train/trainer.h"

namespace troupe::launch {

struct TrainRun {
  storage::RunLock lock;  // held for the job's life
  std::unique_ptr<storage::Journal> journal;
  nlohmann::json identity;   // storage::job_identity(cfg): meta/job and every manifest's
  int64_t start_step = 0;    // the first step to train (the resumed checkpoint's step)
  std::string resumed_from;  // what the resume loaded, for the log ("" on a fresh run)
};

// Takes the run directory for this job, before anything else is done: the lock (a busy
// directory is a UsageError naming the holder), a directory that already holds a run
// refused unless `resume`, the journal opened, meta/job put (a fresh journal) or matched (a
// UsageError naming the mismatching key).
TrainRun open_train_run(const std::string& run_dir, const model::JobConfig& cfg, bool resume);

// --resume: loads the newest good checkpoint into `trainer` (bad ones reported on stderr as
// "[checkpoint] …"; none: from step 0), sets run->start_step, appends the "resume" record
// and trims metrics.jsonl to the steps before it (they are trained and written again).
void resume_train_run(const std::string& run_dir, TrainRun* run, model::Trainer* trainer);

// Appends step s's commit: {"kind":"commit","step":s,"epoch":0,"workers":1,
// "micro_batches":[[0,M]]} (one process consumes the whole step). RunFailed on a failed write.
void commit_step(storage::Journal* journal, int64_t step, int64_t micro_batches);

// Checkpoints of one process, written asynchronously: after step s with (s+1) % every == 0
// a copy of the state is taken (snapshot_state) and written by a thread while training goes
// on; at most one write is in flight. A finished write is committed (manifest in the
// journal, older checkpoints beyond `keep` deleted, never the newest) at the next step
// boundary; a failed one is skipped with a message and a "checkpoint_skipped" record.
class CheckpointWriter {
 public:
  CheckpointWriter(std::string run_dir, storage::Journal* journal, nlohmann::json identity,
                   int64_t every_steps, int64_t keep, storage::StorageFaults faults);
  ~CheckpointWriter();  // waits for a write in flight; its result is dropped
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // After step `step` (0-based) is committed. RunFailed when the journal cannot be written.
  void after_step(int64_t step, const model::Trainer& trainer);
  // Waits for the write in flight and commits or skips it (the job's end, or a stop).
  void finish();
  // "checkpoints: every 10 steps, 6 written, 0 skipped; snapshot 3.1 ms each (18.6 ms in
  // all; CPU 2.5 ms each), waits for the writer 0.0 ms; the writer's CPU 14.1 ms each, and its
  // manifest and deletions 18.8 ms each" (or
  // "checkpoints: off").
  std::string summary() const;

 private:
  using Written = runtime::Result<std::vector<storage::ShardRecord>>;
  struct InFlight {
    int64_t step = 0;
    std::future<Written> result;
  };

  void start(int64_t step, const model::Trainer& trainer);
  void complete(bool wait);
  // On the writer's thread, once the shards are synced: the manifest into the journal (the
  // checkpoint exists), then the ones beyond keep deleted. RunFailed when the journal fails.
  void committed(int64_t step, const std::vector<storage::ShardRecord>& shards);
  void skipped(int64_t step, const std::string& why);
  void delete_beyond_keep();

  const std::string run_dir_;
  storage::Journal* const journal_;
  const nlohmann::json identity_;
  const std::string identity_hash_;
  const int64_t every_steps_, keep_;
  const storage::StorageFaults faults_;
  std::optional<InFlight> in_flight_;
  // The snapshot's memory, reused from one checkpoint to the next.
  std::shared_ptr<std::vector<model::StateTensor>> buffer_ =
      std::make_shared<std::vector<model::StateTensor>>();
  int64_t written_ = 0, skipped_ = 0;
  double snapshot_s_ = 0, wait_s_ = 0;  // copying the state; waiting for the previous write
  // Thread CPU: of the snapshots (the training thread's), of the writes (the writer's; added
  // by the writer thread).
  double snapshot_cpu_s_ = 0;
  std::atomic<double> write_cpu_s_ = 0;
  std::atomic<double> commit_s_ = 0;  // the writer's wall time for the manifest and deletions
};

}  // namespace troupe::launch
