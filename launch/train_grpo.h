#pragma once
// `troupe train` with grpo.enabled = true: GRPO steps in this process (train/grpo.h,
// docs/grpo.md) from grpo.init_weights, written into the run directory as a supervised run
// is (metrics.jsonl, weights.safetensors, config.json). `troupe launch` refuses such a job.
#include <string>

#include "config/job_config.h"

namespace troupe::launch {

// Runs cfg.train.steps GRPO steps and writes the run directory. UsageError (status 2) for
// what the user can fix before anything is written: init_weights missing, unreadable or of
// another model, --resume, checkpoints asked for. RunFailed when a write fails mid-run.
void run_grpo_train(const model::JobConfig& cfg, const std::string& config_path,
                    const std::string& run_dir, bool resume);

}  // namespace troupe::launch
