#include "launch/train_grpo.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "actors/grpo_weights.h"
#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/progress.h"
#include "launch/run_files.h"
#include "launch/train_run.h"
#include "storage/checked_file.h"
#include "storage/weights_io.h"
#include "train/grpo.h"

namespace troupe::launch {

namespace {

void refuse_unsupported(const model::JobConfig& cfg, bool resume) {
  if (resume)
    throw UsageError(
        "train: --resume of a GRPO run (grpo.enabled = true) is not built yet: π_old and π_ref "
        "are not in the checkpoints; start a new run, from its weights via grpo.init_weights");
  if (cfg.checkpoint.every_steps > 0)
    throw UsageError(
        "train: checkpoint.every_steps = " + std::to_string(cfg.checkpoint.every_steps) +
        ": a GRPO run writes no checkpoints yet (π_old and π_ref are not in "
        "them), only its final weights; set checkpoint.every_steps=0");
}

struct GrpoEnd {
  std::vector<double> rewards;  // each step's mean reward
  double kl = 0, loss = 0, wall_s = 0;
  int64_t tokens = 0;  // completion tokens, all steps
};

// One progress line per step: the reward is what a reader of a GRPO run watches.
void print_step(const model::GrpoStepStats& st, int64_t steps, double tps, double elapsed_s) {
  const double eta = elapsed_s / double(st.step + 1) * double(steps - st.step - 1);
  std::fprintf(stderr,
               "grpo step %5ld/%ld  reward %.3f  kl %.2e  clipped %.3f  loss %+.4f  lr %.2e  "
               "%6.0f tok/s  ETA %s\n",
               long(st.step + 1), long(steps), st.mean_reward, st.kl, st.clipped_fraction, st.loss,
               st.lr, tps, format_duration(eta).c_str());
}

GrpoEnd grpo_steps(model::Trainer& trainer, const model::JobConfig& cfg,
                   storage::CheckedFile& metrics) {
  model::GrpoRunner runner(trainer, model::grpo_runner_config(cfg));
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  GrpoEnd end;
  for (int64_t s = 0; s < cfg.train.steps; ++s) {
    const auto ts = clock::now();
    const model::GrpoStepStats st = runner.step(s);
    const double dt = std::max(std::chrono::duration<double>(clock::now() - ts).count(), 1e-9);
    const double tps = double(st.tokens) / dt;
    const runtime::Status written = metrics.write(grpo_metrics_line(st, tps));
    if (!written.ok())
      throw RunFailed(written.message() + "; GRPO stopped at step " + std::to_string(s + 1) +
                      " (a GRPO run cannot be resumed yet): free space, then run again");
    end.rewards.push_back(st.mean_reward);
    end.kl = st.kl, end.loss = st.loss, end.tokens += st.tokens;
    print_step(st, cfg.train.steps, tps, std::chrono::duration<double>(clock::now() - t0).count());
  }
  end.wall_s = std::chrono::duration<double>(clock::now() - t0).count();
  return end;
}

double mean_of(const std::vector<double>& v, size_t lo, size_t hi) {
  double s = 0;
  for (size_t i = lo; i < hi; ++i) s += v[i];
  return hi > lo ? s / double(hi - lo) : 0.0;
}

// The reward curve in a few numbers: the mean over the first and last 20 steps, and over each
// block of 50 (the last one may be shorter).
void print_summary(const model::JobConfig& cfg, const GrpoEnd& end, uint64_t hash,
                   const std::string& run_dir) {
  constexpr size_t window_steps = 20, block_steps = 50;
  const size_t n = end.rewards.size(), w = std::min(window_steps, n);
  std::string blocks;
  for (size_t lo = 0; lo < n; lo += block_steps) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " %.3f",
                  mean_of(end.rewards, lo, std::min(n, lo + block_steps)));
    blocks += buf;
  }
  const double wall = std::max(end.wall_s, 1e-9);
  std::printf(
      "summary: grpo steps %ld  reward %.3f (first %zu steps) -> %.3f (last %zu)  kl %.2e  "
      "loss %+.4f  wall %s  %.0f tok/s  weights %016lx\n"
      "reward by %zu-step blocks:%s\n"
      "run dir: %s (metrics.jsonl, weights.safetensors, config.json)\n",
      long(cfg.train.steps), mean_of(end.rewards, 0, w), w, mean_of(end.rewards, n - w, n), w,
      end.kl, end.loss, format_duration(wall).c_str(), double(end.tokens) / wall,
      (unsigned long)hash, block_steps, blocks.c_str(), run_dir.c_str());
}

}  // namespace

void run_grpo_train(const model::JobConfig& cfg, const std::string& config_path,
                    const std::string& run_dir, bool resume) {
  refuse_unsupported(cfg, resume);
  model::Trainer trainer(cfg);
  try {  // before the run directory is taken: a bad file leaves none
    trainer.params = actors::grpo_start_weights(cfg, trainer.table);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("train: ") + e.what());
  }
  TrainRun run = open_train_run(run_dir, cfg, /*resume=*/false);
  write_config_json(run_dir, cfg);
  storage::CheckedFile metrics;
  const runtime::Status opened =
      metrics.open(run_dir + "/metrics.jsonl", false, storage::StorageFaults::from_env());
  if (!opened.ok()) throw RunFailed(opened.message());
  std::fprintf(
      stderr,
      "troupe train: %s, GRPO from %s, %ld parameters, %ld steps of %ld prompts × %ld "
      "completions (at most %ld tokens, temperature %g), seed %lu\n",
      config_path.c_str(),
      cfg.grpo.init_weights.empty() ? "the config's initialisation" : cfg.grpo.init_weights.c_str(),
      long(trainer.table.total()), long(cfg.train.steps), long(cfg.grpo.prompts_per_step),
      long(cfg.grpo.group_size), long(cfg.grpo.max_new_tokens), cfg.grpo.temperature,
      (unsigned long)cfg.train.seed);
  const GrpoEnd end = grpo_steps(trainer, cfg, metrics);
  const runtime::Status synced = metrics.sync();
  if (!synced.ok()) throw RunFailed(synced.message());
  model::write_safetensors(run_dir + "/weights.safetensors",
                           model::weights_to_safetensors(trainer.table, trainer.params.data(),
                                                         cfg.model, cfg.train.seed));
  print_summary(cfg, end, trainer.weights_hash(), run_dir);
}

}  // namespace troupe::launch
