#pragma once
// GRPO in one process (SPEC-model.md §7; issue 17 item 4, the model and train layers): each
// step draws arithmetic prompts (data/arithmetic.h), samples a group of completions per
// prompt from π_old with the KV-cache decoder (model/generate.h), scores them, turns the
// rewards into group advantages, and takes one optimizer step of the trainer's policy on
// the GRPO loss (model/grpo_loss.h) through Model::step's head loss.
//
// Versions: π_ref is the policy the phase started from; π_old at step s is the policy
// version s−1 (a fixed lag of 1, what an asynchronous rollout actor one step behind would
// use; at step 0 it is the start). The gradient is taken on the current policy θ_s.
//
// Determinism: a step's result is a pure function of the trainer's state, the config, the
// job seed and s: prompts are keyed (seed, purpose_of("grpo.prompt"), s, prompt), samples
// (seed, step, prompt, sample, position) as generate.h's Sampler keys them, and every
// sequence is packed in a fixed order. The loss is computed in one Model::step over the
// whole packed batch (the 1/G mean needs no cross-micro-batch normaliser).
//
// Not yet: Engram (the old and reference versions of the tables are not kept; refused),
// and `troupe launch` (the runtime's half, elsewhere).
#include <cstdint>
#include <memory>
#include <vector>

#include "data/arithmetic.h"
#include "model/generate.h"
#include "model/grpo_loss.h"
#include "model/model.h"
#include "train/trainer.h"

namespace troupe::model {

inline constexpr uint64_t kGrpoPrompts = purpose_of("grpo.prompt");

struct GrpoConfig {
  int64_t prompts_per_step = 4;  // prompts per step, each with its own group
  int64_t group_size = 8;        // G: completions per prompt (SPEC §7)
  int64_t max_new_tokens = 16;   // tokens a completion has at most (SPEC §7)
  double temperature = 1.0;      // sampling temperature (SPEC §7)
  GrpoLossConfig loss;           // ε = 0.2, β = 0.04 (SPEC §7)
};

// "" when g is usable with this model (sizes positive, a finite temperature > 0, the longest
// prompt plus max_new_tokens within seq_len, no Engram), else one line naming what is wrong.
std::string check_grpo(const GrpoConfig& g, const TrainJobConfig& job);

// One completion of a group, as sampled and scored.
struct Rollout {
  int64_t prompt = 0, sample = 0;
  std::vector<int32_t> context;     // BOS + prompt bytes
  std::vector<int32_t> completion;  // the sampled tokens (EOS included when it stopped there)
  double reward = 0, advantage = 0;
};

struct GrpoStepStats {
  int64_t step = 0;
  double mean_reward = 0;       // over the step's P·G completions
  double loss = 0;              // the GRPO loss (+ the MoE balance loss) on θ_s
  double kl = 0;                // mean k3 KL(π_θ ‖ π_ref) estimate, per completion then mean
  double clipped_fraction = 0;  // tokens whose surrogate took the clipped branch
  double grad_norm = 0, lr = 0;
  int64_t tokens = 0;  // completion tokens the loss saw
};

// The packed batch of a step's rollouts: each "BOS prompt completion" one document (its last
// token is never an input), packed in order into rows of seq_len, then the positions whose
// logits predict a completion token and the per-token inputs of the loss (logp_* empty).
struct GrpoBatch {
  Batch batch;
  std::vector<int64_t> position;
  GrpoTokens<float> tokens;
};
GrpoBatch pack_rollouts(const std::vector<Rollout>& rollouts, int64_t seq_len);

class GrpoRunner {
 public:
  // Members first, as a table of contents.
  const GrpoConfig cfg;

 private:
  Trainer& trainer_;          // the policy θ, its optimizer and schedule (not owned)
  std::vector<float> ref_;    // π_ref: θ when the runner was made
  std::vector<float> old_;    // π_old: the version before the last step
  Decoder<float> decoder_;    // rollouts on π_old
  Model<float> model_;        // forward/backward of the packed batch
  std::vector<float> grads_;  // the step's gradient

 public:
  // Starts the phase from the trainer's current weights (π_ref = π_old = θ). Throws
  // std::invalid_argument with check_grpo's message. trainer must outlive the runner.
  GrpoRunner(Trainer& trainer, const GrpoConfig& g);
  // GRPO step s (0-based, consecutive): rollouts on π_old, the loss on θ_s, one update.
  GrpoStepStats step(int64_t s);
  // The step's rollouts (prompts in order, then samples), scored: pure in (π_old, seed, s).
  std::vector<Rollout> rollouts(int64_t s);

 private:
  std::vector<float> logprobs(const std::vector<float>& params, const GrpoBatch& b);
};

}  // namespace troupe::model
