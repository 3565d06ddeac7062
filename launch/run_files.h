#pragma once
// What `troupe train` and `troupe launch` write into a run directory, written one way.
#include <nlohmann/json.hpp>
#include <string>

#include "config/config_parse.h"
#include "launch/commands.h"
#include "storage/checked_file.h"
#include "train/grpo.h"
#include "train/trainer.h"

namespace troupe::launch {

// One metrics.jsonl line, "\n" included. Losses are written with every bit (JSON doubles of
// the float values), so two runs' lines compare exactly. unix_ms (when >= 0): the wall clock
// at the commit, for what measures time across processes (bench-recovery).
inline std::string metrics_line(const model::StepStats& st, double tokens_per_s, double val_loss,
                                bool has_val, int64_t unix_ms = -1) {
  nlohmann::json j = {{"step", st.step},
                      {"loss", st.loss},
                      {"ce", st.ce},
                      {"mtp", st.mtp},
                      {"bal", st.bal},
                      {"lr", st.lr},
                      {"grad_norm", st.grad_norm},
                      {"tokens_per_s", tokens_per_s}};
  if (has_val) j["val_loss"] = val_loss;
  if (st.padding_waste >= 0) j["padding_waste"] = st.padding_waste;  // mixed mode
  if (st.idle_fraction >= 0) j["idle_fraction"] = st.idle_fraction;  // troupe launch
  if (st.reward >= 0) j["reward"] = st.reward;                       // GRPO
  if (unix_ms >= 0) j["unix_ms"] = unix_ms;
  return j.dump() + "\n";
}

// One metrics.jsonl line of a GRPO step (troupe train with grpo.enabled), "\n" included: the
// step's mean reward and the loss terms with every bit, as metrics_line writes losses.
inline std::string grpo_metrics_line(const model::GrpoStepStats& st, double tokens_per_s) {
  const nlohmann::json j = {{"step", st.step},
                            {"reward", st.mean_reward},
                            {"loss", st.loss},
                            {"kl", st.kl},
                            {"clipped_fraction", st.clipped_fraction},
                            {"lr", st.lr},
                            {"grad_norm", st.grad_norm},
                            {"tokens", st.tokens},
                            {"tokens_per_s", tokens_per_s}};
  return j.dump() + "\n";
}

// config.json: the model config and seed, for readers of the run directory. RunFailed when it
// cannot be written.
inline void write_config_json(const std::string& run_dir, const model::JobConfig& cfg) {
  storage::CheckedFile f;
  runtime::Status st = f.open(run_dir + "/config.json", /*append=*/false);
  if (st.ok()) st = f.write(model::model_config_to_json(cfg.model, cfg.train.seed).dump(2) + "\n");
  if (!st.ok()) throw RunFailed(st.message());
}

}  // namespace troupe::launch
