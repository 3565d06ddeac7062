#pragma once
// GRPO in one process (SPEC-model.md §7; issue 17, the model and train layers): each step
// samples every prompt's group with GrpoSampler on π_old (train/grpo_step.h), packs them into
// the job's micro-batches (grpo_step_of) and takes one trainer step on the GRPO loss — the
// same data and the same arithmetic as `troupe launch` with rollout actors, so both give the
// same bits.
//
// Versions: π_ref is the policy the phase started from; π_old at step s is version s − 1
// (grpo_policy_version: at step 0 the start). The gradient is taken on the current θ_s.
//
// Not yet: Engram (the old and reference versions of the tables are not kept; refused).
#include <cstdint>
#include <string>
#include <vector>

#include "data/arithmetic.h"
#include "train/grpo_step.h"
#include "train/trainer.h"

namespace troupe::model {

// "" when g is usable with this model (sizes positive, a finite temperature > 0, the longest
// prompt plus max_new_tokens within seq_len, as many prompts as micro-batches, no Engram),
// else one line naming what is wrong.
std::string check_grpo(const GrpoConfig& g, const TrainJobConfig& job);

struct GrpoStepStats {
  int64_t step = 0;
  double mean_reward = 0;       // over the step's P·G completions
  double loss = 0;              // the GRPO loss (+ the MoE balance loss) on θ_s
  double kl = 0;                // mean k3 KL(π_θ ‖ π_ref) estimate, per completion then mean
  double clipped_fraction = 0;  // tokens whose surrogate took the clipped branch
  double grad_norm = 0, lr = 0;
  int64_t tokens = 0;  // completion tokens the loss saw
};

class GrpoRunner {
 public:
  // Members first, as a table of contents.
  const GrpoConfig cfg;

 private:
  Trainer& trainer_;        // the policy θ, its optimizer and schedule (not owned)
  std::vector<float> ref_;  // π_ref: θ when the runner was made
  std::vector<float> old_;  // π_old: the version before the last step
  GrpoSampler sampler_;     // rollouts on π_old

 public:
  // Starts the phase from the trainer's current weights (π_ref = π_old = θ). Throws
  // std::invalid_argument with check_grpo's message. trainer must outlive the runner.
  GrpoRunner(Trainer& trainer, const GrpoConfig& g);
  // GRPO step s (0-based, consecutive): rollouts on π_old, the loss on θ_s, one update.
  GrpoStepStats step(int64_t s);
  // The step's rollouts (prompts in order, then samples), scored: pure in (π_old, seed, s).
  std::vector<Rollout> rollouts(int64_t s);
};

}  // namespace troupe::model
