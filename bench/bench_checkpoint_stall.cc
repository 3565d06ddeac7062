// The stall of checkpoints (issue 12, make bench-checkpoint): `troupe train`'s own loop on
// tiny — train_step, the journal's commit record, and CheckpointWriter (snapshot, the write
// on its own thread, the manifest, old ones deleted) — in one process, as blocks of
// `every` steps: a block without a checkpoint next to a block whose first step is followed
// by one (so its write overlaps the rest of the block, as in a run, and is waited for at the
// block's end: all its cost lands in its block), alternately, BENCH_CKPT_PAIRS times. Pairs
// share the machine's state, so the median of the per-pair ratios is steadier than two
// whole runs (whose tok/s differ by 2x on a shared 2-core box).
//
//   bench_checkpoint_stall CONFIG DIR   DIR: the run directory (created, removed after)
// BENCH_CKPT_NOISE=1 measures the noise floor (no checkpoint in either block);
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
  int64_t s = 0;
  // Steps [s, s + every): a checkpoint after the first when `ckpt`, waited for at the end.
  // Each block's process CPU (ms) goes to *cpu_ms: load on the box barely moves it.
  const auto block = [&](bool ckpt, std::vector<double>* cpu_ms) {
    const auto t0 = Clock::now();
    const double c0 = process_seconds();
    for (int64_t i = 0; i < every; ++i, ++s) {
      trainer.train_step(s);
      launch::commit_step(run.journal.get(), s, mbs);
      if (ckpt && i == 0) writer.after_step(s, trainer);
    }
    if (ckpt) writer.finish();
    cpu_ms->push_back(1e3 * (process_seconds() - c0));
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  for (; (s + 1) % every != 0; ++s) trainer.train_step(s);  // warm-up, then aligned blocks
  const double tokens = double(every * cfg.train.batch_size * cfg.model.seq_len);
  std::vector<double> none, with, ratio, cpu_none, cpu_with, cpu_extra;
  std::printf(
      "bench-checkpoint (stall): tiny, %d training thread(s) on %u cores, blocks of %ld "
      "steps, a checkpoint in every other block, %ld pairs\n",
      trainer.threads(), std::thread::hardware_concurrency(), long(every), long(pairs));
  for (int64_t p = 0; p < pairs; ++p) {
    none.push_back(block(false, &cpu_none));
    with.push_back(block(!noise, &cpu_with));
    ratio.push_back(none.back() / with.back());
    cpu_extra.push_back(cpu_with.back() - cpu_none.back());
    std::printf(
        "  pair %ld: none %.0f tok/s, with a checkpoint %.0f tok/s, ratio %.3f; CPU %.0f and "
        "%.0f ms\n",
        long(p + 1), tokens / none.back(), tokens / with.back(), ratio.back(), cpu_none.back(),
        cpu_with.back());
  }
  const double r = median(ratio);
  std::printf("no checkpoint            %9.0f tok/s (median)\n", tokens / median(none));
  std::printf(
      "checkpoint every %3ld     %9.0f tok/s (median)   ratio %.3f (median of pairs), "
      "stall %+.2f%% (issue 12: <= 2%%)\n",
      long(every), tokens / median(with), r, 100 * (1 - r));
  // The load-insensitive reading: a checkpoint's extra CPU (every thread of the process) over
  // a block's CPU; on a box whose every core trains, the stall tends to it.
  std::printf(
      "CPU per block: %.0f ms without, %.0f ms with (medians); extra CPU per checkpoint %.1f ms "
      "(median of pairs), %+.2f%% of a block's\n",
      median(cpu_none), median(cpu_with), median(cpu_extra),
      100 * median(cpu_extra) / median(cpu_none));
  std::printf("%s\n", writer.summary().c_str());
  std::filesystem::remove_all(dir);
  return 0;
}
