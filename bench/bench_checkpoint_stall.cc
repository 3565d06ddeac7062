// The stall of checkpoints (issue 12, make bench-checkpoint): `troupe train`'s own loop on
// tiny — train_step, the journal's commit record, and CheckpointWriter (snapshot, the write
// on its own thread, the manifest, old ones deleted) — in one process, as runs of
// BENCH_CKPT_RUN blocks of `every` steps: a run without a checkpoint next to a run with one
// after the first step of each block (as a job checkpoints every `every` steps: each write
// overlaps its block, and the run's last is waited for at its end, so all the cost lands in
// the run), alternately, BENCH_CKPT_PAIRS times. Pairs share the machine's state, so the
// median of the per-pair ratios is steadier than two whole runs (whose tok/s differ by 2x on
// a shared 2-core box).
//
//   bench_checkpoint_stall CONFIG DIR   DIR: the run directory (created, removed after)
// BENCH_CKPT_NOISE=1 measures the noise floor (no checkpoint in either run);
// BENCH_CKPT_RUN=1 waits for every write at its block's end (the stricter reading);
// TROUPE_STORAGE_FAULT=full@10,full@30,… splits the cost (those are snapshot, not written).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "config/config_parse.h"
#include "launch/train_run.h"
#include "storage/checkpoint.h"
#include "storage/faults.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace troupe;

int64_t env_int(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : dflt;
}

// CPU time of the whole process (every training thread and the writer), in seconds.
double process_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// What the pairs measured: tok/s of each run, and process CPU per block.
struct Figures {
  std::vector<double> none, with, ratio, cpu_none, cpu_with, cpu_extra, finish_ms;
};

void print_summary(const Figures& f, int64_t every, double tokens) {
  const double r = median(f.ratio);
  std::printf("no checkpoint            %9.0f tok/s (median)\n", tokens / median(f.none));
  std::printf(
      "checkpoint every %3ld     %9.0f tok/s (median)   ratio %.3f (median of pairs), "
      "stall %+.2f%% (issue 12: <= 2%%)\n",
      long(every), tokens / median(f.with), r, 100 * (1 - r));
  // The load-insensitive reading: a checkpoint's extra CPU (every thread of the process) over
  // a block's CPU; on a box whose every core trains, the stall tends to it.
  std::printf(
      "CPU per block: %.0f ms without, %.0f ms with (medians); extra CPU per checkpoint %.1f ms "
      "(median of pairs), %+.2f%% of a block's\n",
      median(f.cpu_none), median(f.cpu_with), median(f.cpu_extra),
      100 * median(f.cpu_extra) / median(f.cpu_none));
  if (!f.finish_ms.empty())
    std::printf("the wait for each run's last write at its end: %.1f ms (median)\n",
                median(f.finish_ms));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: bench_checkpoint_stall CONFIG DIR\n");
    return 2;
  }
  const int64_t every = env_int("BENCH_CKPT_EVERY", 10), pairs = env_int("BENCH_CKPT_PAIRS", 5);
  const std::string dir = argv[2];
  std::filesystem::remove_all(dir);
  // BENCH_CKPT_THREADS: training threads (0: every core, as troupe train does).
  model::JobConfig cfg = model::load_config(
      argv[1], {"train.steps=100000", "train.eval_every=0", "data.val_rows_max=4",
                "train.threads=" + std::to_string(env_int("BENCH_CKPT_THREADS", 0))});
  launch::TrainRun run = launch::open_train_run(dir, cfg, false);
  model::Trainer trainer(cfg);
  launch::CheckpointWriter writer(dir, run.journal.get(), run.identity, every, cfg.checkpoint.keep,
                                  storage::StorageFaults::from_env());
  // BENCH_CKPT_NOISE=1: no checkpoint in either block of a pair: the ratio's own spread.
  const bool noise = env_int("BENCH_CKPT_NOISE", 0) != 0;
  const int64_t mbs = trainer.micro_batches();
  // BENCH_CKPT_RUN: blocks per run, as a job runs them: a checkpoint after the first step of
  // every block of a "with" run, each write overlapping its block and the next checkpoint's
  // start finding it done; only the run's last write is waited for, at its end (a job never
  // waits for it: its figure is the limit of many blocks). 1: every write waited for at its
  // own block's end, an upper bound that charges each checkpoint the disk's sync latency.
  const int64_t run_blocks = std::max<int64_t>(1, env_int("BENCH_CKPT_RUN", 5));
  int64_t s = 0;
  Figures f;
  // Blocks [s, s + run_blocks * every), a checkpoint after each block's first step when
  // `ckpt`, the last waited for at the end. The run's process CPU (ms) goes to *cpu_ms: load
  // on the box barely moves it.
  const auto stretch = [&](bool ckpt, std::vector<double>* cpu_ms) {
    const auto t0 = Clock::now();
    const double c0 = process_seconds();
    for (int64_t i = 0; i < run_blocks * every; ++i, ++s) {
      trainer.train_step(s);
      launch::commit_step(run.journal.get(), s, mbs);
      if (ckpt && i % every == 0) writer.after_step(s, trainer);
    }
    const auto tf = Clock::now();
    if (ckpt) writer.finish();
    if (ckpt) f.finish_ms.push_back(1e3 * std::chrono::duration<double>(Clock::now() - tf).count());
    cpu_ms->push_back(1e3 * (process_seconds() - c0) / double(run_blocks));
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  for (; (s + 1) % every != 0; ++s) trainer.train_step(s);  // warm-up, then aligned blocks
  const double tokens = double(run_blocks * every * cfg.train.batch_size * cfg.model.seq_len);
  std::printf(
      "bench-checkpoint (stall): tiny, %d training thread(s) on %u cores, runs of %ld blocks "
      "of %ld steps, a checkpoint in every block of every other run, %ld pairs\n",
      trainer.threads(), std::thread::hardware_concurrency(), long(run_blocks), long(every),
      long(pairs));
  for (int64_t p = 0; p < pairs; ++p) {
    f.none.push_back(stretch(false, &f.cpu_none));
    f.with.push_back(stretch(!noise, &f.cpu_with));
    f.ratio.push_back(f.none.back() / f.with.back());
    f.cpu_extra.push_back(f.cpu_with.back() - f.cpu_none.back());
    std::printf(
        "  pair %ld: none %.0f tok/s, with checkpoints %.0f tok/s, ratio %.3f; CPU per block "
        "%.0f and %.0f ms\n",
        long(p + 1), tokens / f.none.back(), tokens / f.with.back(), f.ratio.back(),
        f.cpu_none.back(), f.cpu_with.back());
  }
  print_summary(f, every, tokens);
  std::printf("%s\n", writer.summary().c_str());
  std::error_code ec;  // the journal is still open: RocksDB may delete a log file meanwhile
  std::filesystem::remove_all(dir, ec);
  return 0;
}
