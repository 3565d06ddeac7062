#include "launch/train_run.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "launch/commands.h"
#include "runtime/log.h"
#include "storage/checked_file.h"
#include "storage/checkpoint.h"

namespace troupe::launch {

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the calling thread (user and system), in seconds: what a checkpoint costs
// the machine, which other processes' load barely moves (unlike wall time).
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void append_or_stop(storage::Journal* journal, const nlohmann::json& record) {
  const runtime::Status st = journal->append(record);
  if (!st.ok())
    throw RunFailed("cannot append a \"" + record.value("kind", "") +
                    "\" record to the journal: " + st.message() +
                    "; training stopped, what is committed is kept: fix the cause, then "
                    "run again with --resume");
}

// meta/job: put into a journal that has none, else the job must be the one that wrote it.
void match_identity(storage::Journal* journal, const nlohmann::json& identity,
                    const std::string& run_dir) {
  const std::optional<std::string> stored = journal->meta("job");
  if (!stored) {
    const runtime::Status st = journal->put_meta("job", identity.dump());
    if (!st.ok()) throw RunFailed("cannot write meta/job to the journal: " + st.message());
    return;
  }
  const nlohmann::json was = nlohmann::json::parse(*stored, nullptr, false);
  if (was.is_discarded())
    throw UsageError("run directory " + run_dir + ": meta/job of its journal is not JSON; " +
                     "choose another --run-dir");
  const std::string mismatch = storage::identity_mismatch(was, identity);
  if (!mismatch.empty())
    throw UsageError("run directory " + run_dir + " belongs to another job: " + mismatch +
                     "; resume it with its own config, or choose another --run-dir");
}

// metrics.jsonl keeps the lines of steps before `step`, in order; the rest (and a line cut
// by a kill) go: the resumed job trains and writes those steps again.
void trim_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line) && !in.eof()) {  // eof here: a last line without "\n"
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer() ||
        j["step"].get<int64_t>() >= step)
      break;
    kept += line + "\n";
  }
  in.close();
  storage::CheckedFile out;
  const std::string tmp = path + ".trim";
  runtime::Status st = out.open(tmp, /*append=*/false);
  if (st.ok()) st = out.write(kept);
  if (st.ok()) st = out.sync();
  out.close();
  std::error_code ec;
  if (st.ok()) std::filesystem::rename(tmp, path, ec);
  if (!st.ok() || ec)
    throw RunFailed("resume: cannot rewrite " + path + " without the steps from " +
                    std::to_string(step) + ": " + (st.ok() ? ec.message() : st.message()));
}

}  // namespace

TrainRun open_train_run(const std::string& run_dir, const model::JobConfig& cfg, bool resume) {
  TrainRun run;
  runtime::Result<storage::RunLock> lock = storage::RunLock::acquire(run_dir, "troupe train");
  if (!lock.ok()) throw UsageError(lock.status().message());
  run.lock = std::move(lock.value());
  namespace fs = std::filesystem;
  if (!resume && (fs::exists(run_dir + "/journal") || fs::exists(run_dir + "/config.json")))
    throw UsageError("run directory " + run_dir +
                     " already holds a run; pass --resume to continue it, or choose another "
                     "--run-dir");
  auto journal = storage::Journal::open(run_dir, /*read_only=*/false);
  if (!journal.ok()) throw UsageError(journal.status().message());
  run.journal = std::move(journal.value());
  run.identity = storage::job_identity(cfg);
  match_identity(run.journal.get(), run.identity, run_dir);
  return run;
}

void resume_train_run(const std::string& run_dir, TrainRun* run, model::Trainer* trainer) {
  run->start_step = 0;
  run->resumed_from = "no checkpoint in the journal: from step 0";
  if (!run->journal->manifest_steps().empty()) {
    auto m = storage::newest_good_checkpoint(
        run_dir, *run->journal, [](const std::string& w) { log::warn("[checkpoint] {}", w); });
    if (!m.ok()) {
      log::warn("[checkpoint] {}; starting from step 0", m.status().message());
      run->resumed_from = "no checkpoint verifies: from step 0";
    } else {
      const runtime::Status st = storage::load_checkpoint(
          run_dir, m.value(), model::FlatRange{0, trainer->table.total()}, trainer);
      if (!st.ok()) throw RunFailed("resume: " + st.message());
      run->start_step = m.value().step;
      run->resumed_from = "the checkpoint of step " + std::to_string(run->start_step);
    }
  }
  append_or_stop(run->journal.get(), {{"kind", "resume"}, {"step", run->start_step}});
  trim_metrics(run_dir + "/metrics.jsonl", run->start_step);
}

void commit_step(storage::Journal* journal, int64_t step, int64_t micro_batches) {
  nlohmann::json pieces = nlohmann::json::array();
  pieces.push_back(nlohmann::json::array({0, micro_batches}));
  append_or_stop(journal, {{"kind", "commit"},
                           {"step", step},
                           {"epoch", 0},
                           {"workers", 1},
                           {"micro_batches", std::move(pieces)}});
}

// ---- CheckpointWriter ----------------------------------------------------------------------

CheckpointWriter::CheckpointWriter(std::string run_dir, storage::Journal* journal,
                                   nlohmann::json identity, int64_t every_steps, int64_t keep,
                                   storage::StorageFaults faults)
    : run_dir_(std::move(run_dir)),
      journal_(journal),
      identity_(std::move(identity)),
      identity_hash_(storage::identity_hash(identity_)),
      every_steps_(every_steps),
      keep_(keep),
      faults_(std::move(faults)) {}

CheckpointWriter::~CheckpointWriter() {
  if (in_flight_ && in_flight_->result.valid()) in_flight_->result.wait();
}

void CheckpointWriter::after_step(int64_t step, const model::Trainer& trainer) {
  if (every_steps_ <= 0) return;
  complete(/*wait=*/false);
  if ((step + 1) % every_steps_ == 0) start(step + 1, trainer);
}

void CheckpointWriter::finish() {
  complete(/*wait=*/true);
}

void CheckpointWriter::start(int64_t step, const model::Trainer& trainer) {
  if (in_flight_) {  // one write in flight at most: the previous one finishes first
    const auto t0 = Clock::now();
    complete(/*wait=*/true);
    wait_s_ += seconds_since(t0);
  }
  const auto t0 = Clock::now();
  const double c0 = thread_cpu_seconds();
  // The last checkpoint's buffers are reused: its write is done (one in flight at most).
  trainer.snapshot_state_into(model::FlatRange{0, trainer.table.total()}, /*engram=*/true,
                              buffer_.get());
  std::shared_ptr<const std::vector<model::StateTensor>> snap = buffer_;
  snapshot_s_ += seconds_since(t0);
  snapshot_cpu_s_ += thread_cpu_seconds() - c0;
  std::string dir = storage::checkpoint_dir(run_dir_, step) + "/train";
  in_flight_ = InFlight{step, std::async(std::launch::async, [this, snap, dir, step, f = faults_] {
                          storage::lower_this_thread_priority();
                          const double w0 = thread_cpu_seconds();
                          Written w = storage::write_shards(dir, "train", step,
                                                            storage::shard_views(*snap), f);
                          write_cpu_s_.fetch_add(thread_cpu_seconds() - w0);
                          // The manifest and the deletions on this thread too: their syncs
                          // took ~19 ms per tiny checkpoint from training (issue 12).
                          if (w.ok()) committed(step, w.value());
                          return w;
                        })};
}

void CheckpointWriter::complete(bool wait) {
  if (!in_flight_) return;
  if (!wait && in_flight_->result.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    return;
  InFlight f = std::move(*in_flight_);
  in_flight_.reset();
  std::optional<Written> written;
  std::string why;
  try {
    written.emplace(f.result.get());
    if (!written->ok()) why = written->status().message();
  } catch (const RunFailed&) {
    throw;                             // the journal could not take the manifest: training stops
  } catch (const std::exception& e) {  // the writer thread threw: a failed write all the same
    why = e.what();
  }
  if (why.empty())
    ++written_;
  else
    skipped(f.step, why);
}

void CheckpointWriter::committed(int64_t step, const std::vector<storage::ShardRecord>& shards) {
  const auto t0 = Clock::now();
  storage::Manifest m;
  m.step = step;
  m.config_hash = identity_hash_;
  m.job = identity_;
  m.shards = shards;
  const runtime::Status st = journal_->put_manifest(m);
  if (!st.ok())
    throw RunFailed("cannot commit the checkpoint of step " + std::to_string(step) +
                    " to the journal: " + st.message() +
                    "; training stopped, what is committed is kept");
  log::info("[checkpoint] step {} written: {} shards", step, m.shards.size());
  delete_beyond_keep();
  commit_s_.fetch_add(seconds_since(t0));
}

void CheckpointWriter::skipped(int64_t step, const std::string& why) {
  log::warn("[checkpoint] step {} skipped: {}; training goes on", step, why);
  ++skipped_;
  append_or_stop(journal_, {{"kind", "checkpoint_skipped"}, {"step", step}, {"why", why}});
}

// The oldest complete checkpoints beyond keep (the newest always stays): manifest first, so a
// crash between the two leaves files without a manifest, never a manifest without files.
// Then the directories of checkpoints older than the newest that never completed (skipped,
// or cut by a kill): files no manifest names.
void CheckpointWriter::delete_beyond_keep() {
  std::vector<int64_t> steps = journal_->manifest_steps();
  if (steps.empty()) return;
  const size_t keep = size_t(std::max<int64_t>(keep_, 1));
  namespace fs = std::filesystem;
  std::error_code ec;
  for (size_t i = 0; i + keep < steps.size(); ++i) {
    const runtime::Status st = journal_->delete_manifest(steps[i]);
    if (!st.ok())
      throw RunFailed("cannot delete the manifest of step " + std::to_string(steps[i]) +
                      " from the journal: " + st.message());
    fs::remove_all(storage::checkpoint_dir(run_dir_, steps[i]), ec);
  }
  storage::remove_incomplete_checkpoints(run_dir_, journal_->manifest_steps());
}

std::string CheckpointWriter::summary() const {
  if (every_steps_ <= 0) return "checkpoints: off ([checkpoint] every_steps = 0)";
  const int64_t taken = written_ + skipped_;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "checkpoints: every %ld steps, %ld written, %ld skipped; snapshot %.1f ms each "
                "(%.1f ms in all; CPU %.1f ms each), waits for the writer %.1f ms; the writer's "
                "CPU %.1f ms each, and its manifest and deletions %.1f ms each",
                long(every_steps_), long(written_), long(skipped_),
                taken ? snapshot_s_ * 1e3 / double(taken) : 0.0, snapshot_s_ * 1e3,
                taken ? snapshot_cpu_s_ * 1e3 / double(taken) : 0.0, wait_s_ * 1e3,
                taken ? write_cpu_s_.load() * 1e3 / double(taken) : 0.0,
                written_ ? commit_s_.load() * 1e3 / double(written_) : 0.0);
  return buf;
}

}  // namespace troupe::launch
