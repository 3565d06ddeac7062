// bench_mhc_step: mHC (n = 4) next to residual = "plain", whole training steps, alternated
// step by step inside one process (issue 18). Two trainers of one config, Engram off, one
// compute thread, differ only in model.residual; each takes its steps in turn (ABBA order), so a
// drift of the machine's speed, which swings separate runs by ±10% over a minute here, falls
// on both alike. Steps have the same index, so the same tokens. The overhead is the median
// over pairs of mHC step time / plain step time − 1, printed next to mHC's share of the step's
// FLOPs (model/flops.h, as `troupe dev flops` counts it) and their ratio (bound 1.3).
// Times are the process's CPU time per step (wall time is printed beside it).
//
// Usage: bench_mhc_step [--steps N] CONFIG...   (default 24 steps a trainer, after 2 warm-up)
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "model/flops.h"
#include "train/trainer.h"

namespace {

using troupe::model::JobConfig;
using troupe::model::Trainer;

double process_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

JobConfig config(const std::string& path, const char* residual, int64_t steps) {
  return troupe::model::load_config(
      path, {"model.engram_layers=[]", std::string("model.residual=") + residual, "train.threads=1",
             "train.eval_every=0", "data.val_rows_max=1", "train.steps=" + std::to_string(steps)});
}

struct Times {
  double cpu = 0, wall = 0;
};

Times timed_step(Trainer& t, int64_t step) {
  const double c0 = process_seconds(), w0 = wall_seconds();
  t.train_step(step);
  return {process_seconds() - c0, wall_seconds() - w0};
}

void one_config(const std::string& path, int64_t steps) {
  constexpr int64_t kWarmup = 2;
  const JobConfig plain_cfg = config(path, "plain", steps + kWarmup);
  const JobConfig mhc_cfg = config(path, "mhc", steps + kWarmup);
  // Each trainer built and warmed up before the other starts, so that its buffers (allocated
  // in its first steps) lie where they would alone, not interleaved with the other's: with
  // interleaved warm-ups the plain trainer's steps once ran 14% slower in one build than in
  // another that differed only in mHC's scratch sizes.
  Trainer plain(plain_cfg);
  for (int64_t s = 0; s < kWarmup; ++s) plain.train_step(s);
  Trainer mhc(mhc_cfg);
  for (int64_t s = 0; s < kWarmup; ++s) mhc.train_step(s);
  std::vector<double> cpu_ratio, wall_ratio, cpu_plain, cpu_mhc;
  for (int64_t s = kWarmup; s < kWarmup + steps; ++s) {
    Times p, m;
    if (s % 2 == 0) {
      p = timed_step(plain, s), m = timed_step(mhc, s);
    } else {
      m = timed_step(mhc, s), p = timed_step(plain, s);
    }
    cpu_ratio.push_back(m.cpu / p.cpu), wall_ratio.push_back(m.wall / p.wall);
    cpu_plain.push_back(p.cpu), cpu_mhc.push_back(m.cpu);
  }
  const double f_mhc = troupe::model::mhc_flops_per_token(mhc_cfg.model);
  troupe::model::ModelConfig plain_model = mhc_cfg.model;
  plain_model.residual = troupe::model::Residual::plain;
  const double f_plain = troupe::model::train_flops_per_token(plain_model);
  const double share = f_mhc / (f_plain + f_mhc);
  std::vector<double> sorted = cpu_ratio;
  std::sort(sorted.begin(), sorted.end());
  const double overhead = median(cpu_ratio) - 1, wall_overhead = median(wall_ratio) - 1;
  std::printf(
      "%s: plain %.1f ms/step  mHC %.1f ms/step  (CPU time, medians of %lld steps each, "
      "alternated)\n",
      path.c_str(), 1e3 * median(cpu_plain), 1e3 * median(cpu_mhc), (long long)steps);
  std::printf(
      "%s: mHC step-time overhead %.1f%% (pairs ranged %.1f%% to %.1f%%; wall time "
      "%.1f%%)   mHC share of the step's FLOPs %.1f%%   overhead / share %.2f (bound "
      "1.30)\n",
      path.c_str(), 100 * overhead, 100 * (sorted.front() - 1), 100 * (sorted.back() - 1),
      100 * wall_overhead, 100 * share, overhead / share);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 24;
  std::vector<std::string> configs;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      steps = std::atoll(argv[++i]);
    } else {
      configs.push_back(argv[i]);
    }
  }
  if (configs.empty() || steps < 1) {
    std::fprintf(stderr, "usage: bench_mhc_step [--steps N >= 1] CONFIG...\n");
    return 2;
  }
  for (const std::string& c : configs) one_config(c, steps);
  return 0;
}
