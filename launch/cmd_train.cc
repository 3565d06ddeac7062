// `troupe train`: trains a model in this process and writes the run directory.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/progress.h"
#include "launch/run_files.h"
#include "model/flops.h"
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

void run_train(const TrainArgs& a) {
  std::vector<std::string> sets = a.sets;
  if (a.steps >= 0) sets.push_back("train.steps=" + std::to_string(a.steps));
  model::JobConfig cfg = model::load_config(a.config, sets);
  model::Trainer trainer(cfg);
  if (a.print_params) {
    print_params(trainer.table, cfg.optimizer, cfg.model);
    return;
  }
  std::filesystem::create_directories(a.run_dir);
  {
    std::ofstream c(a.run_dir + "/config.json");
    c << model::model_config_to_json(cfg.model, cfg.train.seed).dump(2) << "\n";
  }
  std::ofstream metrics(a.run_dir + "/metrics.jsonl");
  if (!metrics) throw UsageError("cannot write " + a.run_dir + "/metrics.jsonl");
  const int64_t steps = cfg.train.steps;
  std::fprintf(stderr,
               "troupe train: %s, %ld parameters, %ld steps of %ld×%ld tokens, %ld micro-batches "
               "on %d threads, seed %lu\n",
               a.config.c_str(), long(trainer.table.total()), long(steps),
               long(cfg.train.batch_size), long(cfg.model.seq_len), long(trainer.micro_batches()),
               trainer.threads(), (unsigned long)cfg.train.seed);
  Progress progress(steps);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  double last_val = 0, last_loss = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const auto ts = clock::now();
    model::StepStats st = trainer.train_step(s);
    const double dt = std::chrono::duration<double>(clock::now() - ts).count();
    const double tps = double(cfg.train.batch_size * cfg.model.seq_len) / dt;
    last_loss = st.loss;
    const bool val = model::validate_after(cfg.train.eval_every, s, steps);
    if (val) last_val = trainer.validate();
    write_metrics(metrics, st, tps, last_val, val);
    progress.step(s, st.loss, st.lr, tps, std::chrono::duration<double>(clock::now() - t0).count());
    if (val) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "step %ld  val_loss %.4f nats/byte", long(s + 1), last_val);
      progress.note(buf);
    }
  }
  progress.finish();
  const double wall = std::chrono::duration<double>(clock::now() - t0).count();
  model::write_safetensors(
      a.run_dir + "/weights.safetensors",
      model::weights_to_safetensors(trainer.table, trainer.params.data(), cfg.model, cfg.train.seed,
                                    trainer.engram()));
  std::printf(
      "summary: steps %ld  loss %.4f  val_loss %.4f  wall %s  %.0f tok/s  %.2f GFLOP/s  "
      "weights %016lx\n"
      "run dir: %s (metrics.jsonl, weights.safetensors, config.json)\n",
      long(steps), last_loss, last_val, format_duration(wall).c_str(),
      double(steps * cfg.train.batch_size * cfg.model.seq_len) / wall,
      double(steps * cfg.train.batch_size * cfg.model.seq_len) *
          model::train_flops_per_token(cfg.model) / wall * 1e-9,
      (unsigned long)trainer.weights_hash(), a.run_dir.c_str());
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
  cmd->add_flag("--print-params", args->print_params,
                "list every parameter with its shape and optimizer, then exit");
  cmd->callback([args] {
    if (args->run_dir.empty() && !args->print_params)
      throw UsageError("train: --run-dir is required (where metrics and weights go)");
    run_train(*args);
  });
}

}  // namespace troupe::launch
