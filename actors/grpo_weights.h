// The weights a GRPO phase starts from (π_ref, and π_old of its first steps): the config's
// initialisation from the job seed, or grpo.init_weights (the weights.safetensors of a
// supervised run). One definition for `troupe train`, the workers and the rollout actors,
// so that they all start from the same bits (the workers' Ready hashes say so).
#pragma once

#include <vector>

#include "config/job_config.h"
#include "model/params.h"

namespace troupe::actors {

// Throws std::invalid_argument naming grpo.init_weights and what is wrong with the file (not
// a file, unreadable, another model, another parameter count) and what to do.
std::vector<float> grpo_start_weights(const model::JobConfig& cfg, const model::ParamTable& table);

}  // namespace troupe::actors
