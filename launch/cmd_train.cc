// `troupe train`: trains a model in this process and writes the run directory (metrics,
// weights, and with launch/train_run.h the journal and checkpoints; --resume continues).
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/progress.h"
#include "launch/run_files.h"
#include "launch/train_grpo.h"
#include "launch/train_run.h"
#include "model/flops.h"
#include "storage/checked_file.h"
#include "storage/weights_io.h"
#include "train/step_rules.h"
#include "train/trainer.h"

namespace troupe::launch {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string run_dir;
  int64_t steps = -1;
  bool print_params = false;
  bool resume = false;
  std::string log_level = "info";
};

// One line of --print-params: name, shape (AxB), update, parameters.
void print_tensor(const std::string& name, const std::vector<int64_t>& shape, const char* update,
                  int64_t numel) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) dims.push_back('x');
    dims.append(std::to_string(shape[i]));
  }
  std::printf("%-60s %-12s %-16s %ld\n", name.c_str(), dims.c_str(), update, long(numel));
}

// Each tensor with the update it gets under this job's [optimizer] name; then the Engram
// tables, which live outside the dense buffer and get sparse Adam at lr × 5 (SPEC §4).
void print_params(const model::ParamTable& table, const model::OptimizerConfig& opt,
                  const model::ModelConfig& mcfg) {
  int64_t by_group[4] = {0, 0, 0, 0};
  for (const auto& p : table.all()) {
    const model::OptGroup group = model::effective_group(p.group, opt);
    print_tensor(p.name, p.shape, model::opt_group_name(group), p.numel);
    by_group[static_cast<int>(group)] += p.numel;
  }
  for (const auto& t : model::engram_tables(mcfg))
    print_tensor(t.name, {t.rows, t.dim}, "engram-adam", t.rows * t.dim);
  for (auto g : {model::OptGroup::AdamW, model::OptGroup::AdamWNoDecay, model::OptGroup::Muon,
                 model::OptGroup::Rule})
    std::printf("group %-16s %ld parameters\n", model::opt_group_name(g),
                long(by_group[static_cast<int>(g)]));
  const int64_t engram = model::engram_table_params(mcfg);
  if (engram > 0)
    std::printf("group %-16s %ld parameters (sparse rows, lr x 5, no decay)\n", "engram-adam",
                long(engram));
  std::printf("total %ld parameters\n", long(table.total() + engram));
}

struct LoopEnd {
  double last_loss = 0, last_val = 0;
  double wall_s = 0;  // the steps of this process, with the last checkpoint's write
};

// Steps [from, steps): train, commit to the journal, validate, metrics, checkpoint. A failed
// write stops the job at once (RunFailed), what is committed kept.
LoopEnd train_steps(model::Trainer& trainer, const model::JobConfig& cfg, TrainRun& run,
                    storage::CheckedFile& metrics, CheckpointWriter& checkpoints) {
  const int64_t steps = cfg.train.steps;
  Progress progress(steps);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  LoopEnd end;
  for (int64_t s = run.start_step; s < steps; ++s) {
    const auto ts = clock::now();
    model::StepStats st = trainer.train_step(s);
    const double dt = std::chrono::duration<double>(clock::now() - ts).count();
    const double tps = double(cfg.train.batch_size * cfg.model.seq_len) / dt;
    commit_step(run.journal.get(), s, trainer.micro_batches());
    end.last_loss = st.loss;
    const bool val = model::validate_after(cfg.train.eval_every, s, steps);
    if (val) end.last_val = trainer.validate();
    const runtime::Status written = metrics.write(metrics_line(st, tps, end.last_val, val));
    if (!written.ok()) {
      progress.finish();
      checkpoints.finish();
      throw RunFailed(written.message() + "; training stopped at step " + std::to_string(s + 1) +
                      " (checkpoints and the journal are kept): free space, then run again "
                      "with --resume");
    }
    progress.step(s, st.loss, st.lr, tps, std::chrono::duration<double>(clock::now() - t0).count());
    if (val) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "step %ld  val_loss %.4f nats/byte", long(s + 1),
                    end.last_val);
      progress.note(buf);
    }
    checkpoints.after_step(s, trainer);
  }
  progress.finish();
  checkpoints.finish();
  end.wall_s = std::chrono::duration<double>(clock::now() - t0).count();
  return end;
}

// "memory: peak RSS …": the process's high-water mark and what a step holds for its backward
// (the accountant, per compute thread; memory.recompute chooses how much).
std::string memory_summary(const model::Trainer& trainer, const model::JobConfig& cfg) {
  std::string_view mode;
  for (const auto& [m, name] : model::kRecomputeNames)
    if (m == cfg.memory.recompute) mode = name;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const model::HeldBytes h = trainer.held_bytes();
  const auto mib = [](int64_t bytes) {
    return fmt::format("{:.1f} MiB", double(bytes) / (1 << 20));
  };
  int64_t blocks = 0;
  for (int64_t b : h.block) blocks += b;
  return fmt::format(
      "memory: peak RSS {} (training); held for backward {} per compute thread × {} (recompute = "
      "\"{}\": "
      "blocks {}, shared {}, streams {}, rest {})",
      mib(int64_t(ru.ru_maxrss) * 1024), mib(h.total()), trainer.threads(), mode, mib(blocks),
      mib(h.shared), mib(h.streams), mib(h.rest));
}

void run_train(const TrainArgs& a) {
  std::vector<std::string> sets = a.sets;
  if (a.steps >= 0) sets.push_back("train.steps=" + std::to_string(a.steps));
  model::JobConfig cfg = model::load_config(a.config, sets);
  if (a.print_params) {
    model::Trainer trainer(cfg);
    print_params(trainer.table, cfg.optimizer, cfg.model);
    return;
  }
  if (cfg.parallel.experts == model::ExpertsAt::shards)
    throw UsageError(
        "train: parallel.experts = \"shards\" puts the experts on expert_shard actors, which "
        "one process has none of; run the job with `troupe launch`, or set "
        "parallel.experts=worker");
  if (cfg.engram.placement == model::EngramAt::shards && !cfg.model.engram_layers.empty())
    throw UsageError(
        "train: engram.placement = \"shards\" puts the Engram tables on engram_shard actors, "
        "which one process has none of; run the job with `troupe launch`, or set "
        "engram.placement=replicated");
  if (cfg.grpo.enabled) return run_grpo_train(cfg, a.config, a.run_dir, a.resume);
  TrainRun run = open_train_run(a.run_dir, cfg, a.resume);
  model::Trainer trainer(cfg);
  if (a.resume) resume_train_run(a.run_dir, &run, &trainer);
  if (!std::filesystem::exists(a.run_dir + "/config.json")) write_config_json(a.run_dir, cfg);
  storage::CheckedFile metrics;
  const runtime::Status opened =
      metrics.open(a.run_dir + "/metrics.jsonl", a.resume, storage::StorageFaults::from_env());
  if (!opened.ok()) throw RunFailed(opened.message());
  const int64_t steps = cfg.train.steps;
  std::fprintf(stderr,
               "troupe train: %s, %ld parameters, %ld steps of %ld×%ld tokens, %ld micro-batches "
               "on %d threads, seed %lu\n",
               a.config.c_str(), long(trainer.table.total()), long(steps),
               long(cfg.train.batch_size), long(cfg.model.seq_len), long(trainer.micro_batches()),
               trainer.threads(), (unsigned long)cfg.train.seed);
  if (a.resume) std::fprintf(stderr, "resumed from %s\n", run.resumed_from.c_str());
  CheckpointWriter checkpoints(a.run_dir, run.journal.get(), run.identity,
                               cfg.checkpoint.every_steps, cfg.checkpoint.keep,
                               storage::StorageFaults::from_env());
  const LoopEnd end = train_steps(trainer, cfg, run, metrics, checkpoints);
  // The training's peak, before writing the weights (which copies them).
  const std::string memory = memory_summary(trainer, cfg);
  const runtime::Status synced = metrics.sync();
  if (!synced.ok()) throw RunFailed(synced.message());
  model::write_safetensors(
      a.run_dir + "/weights.safetensors",
      model::weights_to_safetensors(trainer.table, trainer.params.data(), cfg.model, cfg.train.seed,
                                    trainer.engram()));
  const double tokens =
      double((steps - std::min(run.start_step, steps)) * cfg.train.batch_size * cfg.model.seq_len);
  const double wall = std::max(end.wall_s, 1e-9);
  std::printf(
      "summary: steps %ld  loss %.4f  val_loss %.4f  wall %s  %.0f tok/s  %.2f GFLOP/s  "
      "weights %016lx\n"
      "%s\n%s\n"
      "run dir: %s (metrics.jsonl, weights.safetensors, config.json, journal, checkpoints)\n",
      long(steps), end.last_loss, end.last_val, format_duration(wall).c_str(), tokens / wall,
      tokens * model::train_flops_per_token(cfg.model) / wall * 1e-9,
      (unsigned long)trainer.weights_hash(), memory.c_str(), checkpoints.summary().c_str(),
      a.run_dir.c_str());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "train a model in this process");
  cmd->add_option("--config", args->config, "job configuration (TOML)")->required();
  cmd->add_option("--set", args->sets, "override one key: section.key=value (repeatable)");
  cmd->add_option("--run-dir", args->run_dir, "directory for metrics.jsonl and weights");
  cmd->add_option("--steps", args->steps, "number of steps (overrides train.steps)")
      ->check(at_least(1, ""));
  cmd->add_flag("--resume", args->resume,
                "continue the run in --run-dir from its newest complete checkpoint");
  cmd->add_flag("--print-params", args->print_params,
                "list every parameter with its shape and optimizer, then exit");
  add_log_level_option(cmd, &args->log_level);
  cmd->callback([args] {
    if (args->run_dir.empty() && !args->print_params)
      throw UsageError("train: --run-dir is required (where metrics and weights go)");
    log::init_logging("train", checked_log_level(args->log_level));
    run_train(*args);
  });
}

}  // namespace troupe::launch
