#pragma once
// The GRPO loss (SPEC-model.md §7; DeepSeekMath arXiv 2402.03300) on the main head's
// logits: forward and hand-written backward side by side in grpo_loss.cc, the group
// advantages, and GrpoHead, which puts the loss in place of cross-entropy in Model::step.
//
// Shape letters (kernels/README.md): N completion tokens of the call (a gathered subset of
// the micro-batch's positions), V vocabulary, G completions the loss averages over.
//
//   lp_t   = log softmax(logits_t)[tok_t]                  (log π_θ)
//   ρ_t    = exp(lp_t − lp_old_t)                          (π_θ / π_old)
//   s_t    = min(ρ_t A_g, clip(ρ_t, 1−ε, 1+ε) A_g)        (g = the completion of token t)
//   q_t    = exp(lp_ref_t − lp_t)                          (π_ref / π_θ)
//   KL_t   = q_t − log q_t − 1                             (Schulman's k3 estimator)
//   loss   = −(1/G) Σ_g (1/n_g) Σ_{t∈g} (s_t − β KL_t)     (n_g: tokens of completion g)
//
// The loss is the negative of the objective (it is minimised). Every token of a completion
// must be in the same call (n_g is counted here); G is the number of completions of the
// whole batch, so that calls over disjoint completions add up to the batch's loss.
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace troupe::model {

struct GrpoLossConfig {
  double clip_eps = 0.2;  // ε: ρ is clipped to [1−ε, 1+ε] (SPEC §7)
  double kl_beta = 0.04;  // β: weight of the k3 KL estimate against π_ref (SPEC §7)
};

// The per-token inputs of one call, all of length N (advantage: per completion).
template <typename T>
struct GrpoTokens {
  std::vector<int32_t> token;       // (N) the sampled token, in [0, V)
  std::vector<int32_t> completion;  // (N) its completion, in [0, G)
  std::vector<T> logp_old;          // (N) log π_old(token): the policy that sampled it
  std::vector<T> logp_ref;          // (N) log π_ref(token): the GRPO phase's start
  std::vector<T> advantage;         // (G) A_g of each completion
  int64_t completions = 0;          // G: completions of the whole batch (the mean's divisor)
};

// What the forward keeps for the backward, and per-token diagnostics.
template <typename T>
struct GrpoCache {
  std::vector<T> prob;     // (N,V) softmax(logits)
  std::vector<T> logp;     // (N) log π_θ(token)
  std::vector<T> weight;   // (N) 1 / (G · n_g): the token's share of the mean
  T clipped_fraction = 0;  // tokens whose surrogate took the clipped branch, / N
  T kl_mean = 0;           // Σ_t weight_t KL_t: the mean k3 KL (per completion, then overall)
};

// logits (N,V) -> loss (above). Throws std::invalid_argument naming an input of the wrong
// length (advantage must hold G ≥ 1 entries), or a token or completion id out of range.
// A completion with no token in this call adds nothing (its tokens are in another call).
template <typename T>
T grpo_loss_forward(const GrpoLossConfig& cfg, const T* logits, int64_t N, int64_t V,
                    const GrpoTokens<T>& in, GrpoCache<T>& cache);

// dlogits (N,V) += dloss · d loss / d logits, through the log-softmax:
//   d loss/d lp_t = −weight_t · (ds_t/dlp_t − β (1 − q_t)),  ds_t/dlp_t = ρ_t A_g on the
//   unclipped branch (or inside the clip range), 0 where the clipped branch is a constant;
//   d lp_t / d logits_t = onehot(tok_t) − prob_t.
template <typename T>
void grpo_loss_backward(const GrpoLossConfig& cfg, int64_t N, int64_t V, const GrpoTokens<T>& in,
                        const GrpoCache<T>& cache, T dloss, T* dlogits);

// log softmax(logits_n)[token_n] for each of N rows (logits (N,V)) -> out (N).
template <typename T>
void token_logprobs(const T* logits, const int32_t* token, int64_t N, int64_t V, T* out);

// Group advantages A_i = (r_i − mean r) / (std r + 1e-4) over one group of rewards, with the
// population standard deviation (divide by G, not G−1: a group is the whole population the
// policy drew for its prompt; DeepSeekMath's formula leaves it open). All-equal rewards give
// A = 0. Throws std::invalid_argument for an empty group.
std::vector<double> group_advantages(const std::vector<double>& rewards);

// The GRPO loss as Model::step's head loss: the micro-batch's logits at the rows `position`
// (each the position whose logits predict a completion token) go through
// grpo_loss_forward/backward. position and the GrpoTokens share their order and length N.
template <typename T>
class GrpoHead final : public HeadLoss<T> {
 public:
  GrpoHead(const GrpoLossConfig& cfg, std::vector<int64_t> position, GrpoTokens<T> tokens);
  T apply(const T* logits, int64_t rows, int64_t V, T* dlogits) override;
  const GrpoCache<T>& cache() const { return cache_; }
  const GrpoTokens<T>& tokens() const { return tokens_; }

 private:
  GrpoLossConfig cfg_;
  std::vector<int64_t> position_;  // (N) rows of the micro-batch's logits
  GrpoTokens<T> tokens_;
  GrpoCache<T> cache_;
  std::vector<T> gathered_, dgathered_;  // (N,V)
};

}  // namespace troupe::model
