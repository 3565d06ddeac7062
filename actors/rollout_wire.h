// A prompt's group of rollouts (train/grpo_step.h Rollout) as it travels: train.proto's
// RolloutGroup, from a rollout actor through the coordinator to the workers. Floats travel
// as their bits, so a group read back is the group sampled.
#pragma once

#include <string>
#include <vector>

#include "actors/train.pb.h"
#include "train/grpo_step.h"

namespace troupe::actors {

// The group (one prompt's G rollouts, in sample order) of `step` into *out.
void group_to_proto(const std::vector<model::Rollout>& group, int64_t step,
                    train::RolloutGroup* out);

// Appends the group's rollouts to *out: "" when it is whole (group_size completions whose
// lengths, rewards, advantages and log-probabilities add up, tokens in [0, vocab)), else
// what does not fit (and *out is unchanged).
std::string group_from_proto(const train::RolloutGroup& in, int64_t group_size, int64_t vocab,
                             std::vector<model::Rollout>* out);

}  // namespace troupe::actors
