#pragma once
// A GRPO step's data (SPEC-model.md §7; issue 17): the rollouts of a prompt's group as one
// unit of work (GrpoSampler: G completions sampled on π_old, scored, given their group
// advantages and the log-probabilities under π_old and π_ref), and the step's batch as the
// trainer computes it (GrpoStep: the groups packed into the job's micro-batches, each with
// its GRPO head loss). Both are pure functions of their inputs: whichever rollout actor
// samples a group and whichever worker computes a micro-batch, the bits are the same.
//
// Policy versions: the rollouts of step s are sampled on version max(s − 1, 0) (the weights
// after that many updates): a fixed lag of 1, so that generation for step s + 1 overlaps the
// training of step s. π_ref is version 0, the phase's start.
#include <cstdint>
#include <memory>
#include <vector>

#include "model/generate.h"
#include "model/grpo_loss.h"
#include "model/model.h"
#include "model/rng.h"
#include "train/train_config.h"

namespace troupe::model {

inline constexpr uint64_t kGrpoPrompts = purpose_of("grpo.prompt");

// The policy version the rollouts of step s are sampled on (a fixed lag of 1).
inline int64_t grpo_policy_version(int64_t step) {
  return step > 0 ? step - 1 : 0;
}

struct GrpoConfig {
  int64_t prompts_per_step = 4;  // prompts per step, each with its own group
  int64_t group_size = 8;        // G: completions per prompt (SPEC §7)
  int64_t max_new_tokens = 16;   // tokens a completion has at most (SPEC §7)
  double temperature = 1.0;      // sampling temperature (SPEC §7)
  GrpoLossConfig loss;           // ε = 0.2, β = 0.04 (SPEC §7)
};

// One completion of a group, as sampled and scored.
struct Rollout {
  int64_t prompt = 0, sample = 0;
  std::vector<int32_t> context;     // BOS + prompt bytes
  std::vector<int32_t> completion;  // the sampled tokens (EOS included when it stopped there)
  double reward = 0, advantage = 0;
  std::vector<float> logp_old, logp_ref;  // per completion token: log π_old, log π_ref
};

// Rollouts packed into rows: each "BOS prompt completion" one document (its last token is
// never an input), in order into rows of seq_len, then the positions whose logits predict a
// completion token and the per-token inputs of the loss (logp_* from the rollouts).
struct GrpoBatch {
  Batch batch;
  std::vector<int64_t> position;
  GrpoTokens<float> tokens;
};
GrpoBatch pack_rollouts(const std::vector<Rollout>& rollouts, int64_t seq_len);

// A step's batch as the trainer's micro-batches: prompt p of P goes to micro-batch
// ⌊p·M/P⌋ of M, its group's completions packed there (with fewer prompts than micro-batches,
// some hold only padding); every micro-batch has the rows of the largest (the rest padding),
// and its head loss averages over all of the step's completions, ids counted over the step
// (so that the micro-batches' losses add up to the step's).
struct GrpoStep {
  int64_t step = -1;
  GrpoLossConfig loss;
  Batch batch;  // M · mb_rows rows
  int64_t mb_rows = 0;
  std::vector<std::vector<int64_t>> position;  // per micro-batch, rows of its logits
  std::vector<GrpoTokens<float>> tokens;       // per micro-batch
  double mean_reward = 0;                      // over the step's completions
};
// rollouts: every completion of the step, by prompt then sample, with its logp_*. Throws
// std::invalid_argument for no rollouts, or a sequence that does not fit a row.
GrpoStep grpo_step_of(int64_t step, const std::vector<Rollout>& rollouts, int64_t micro_batches,
                      int64_t seq_len, const GrpoLossConfig& loss);

// Samples and scores whole groups: what a rollout actor (and the one-process runner) does.
class GrpoSampler {
 public:
  // table must outlive the sampler (the model reads through it).
  GrpoSampler(const TrainJobConfig& job, const ParamTable& table, const GrpoConfig& g);
  // Prompt `prompt` of step `step`: G completions on `old` (π_old), scored, with their group
  // advantages and log π_old, log π_ref from a forward of the group's packed rows.
  std::vector<Rollout> group(const float* old, const float* ref, int64_t step, int64_t prompt);

 private:
  const TrainJobConfig job_;  // a copy: decoder_ and model_ keep references into it
  const GrpoConfig cfg_;
  Decoder<float> decoder_;
  Model<float> model_;
  std::vector<float> logprobs(const float* params, const GrpoBatch& b);
};

}  // namespace troupe::model
