#include "train/grpo.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "train/schedule.h"

namespace troupe::model {

namespace {

// The longest prompt the config's operands make: "a*b=" with both at the maximum.
int64_t longest_prompt(const DataConfig& d) {
  return 2 * int64_t(std::to_string(d.arith_max_operand).size()) + 2;
}

}  // namespace

std::string check_grpo(const GrpoConfig& g, const TrainJobConfig& job) {
  if (g.prompts_per_step <= 0)
    return fmt::format("grpo prompts_per_step = {}: must be positive", g.prompts_per_step);
  if (g.group_size < 2)
    return fmt::format("grpo group_size = {}: must be 2 or more (advantages compare a group)",
                       g.group_size);
  if (g.max_new_tokens <= 0)
    return fmt::format("grpo max_new_tokens = {}: must be positive", g.max_new_tokens);
  if (!std::isfinite(g.temperature) || g.temperature <= 0)
    return fmt::format("grpo temperature = {}: must be finite and > 0", g.temperature);
  if (!(g.loss.clip_eps > 0 && g.loss.clip_eps < 1))
    return fmt::format("grpo clip_eps = {}: must be in (0, 1)", g.loss.clip_eps);
  if (!std::isfinite(g.loss.kl_beta) || g.loss.kl_beta < 0)
    return fmt::format("grpo kl_beta = {}: must be finite and >= 0", g.loss.kl_beta);
  if (const std::string bad = check_arithmetic(job.data); !bad.empty()) return bad;
  // A sequence feeds BOS + prompt + completion − 1 positions, and must fit one row.
  const int64_t need = 1 + longest_prompt(job.data) + g.max_new_tokens - 1;
  if (need > job.model.seq_len)
    return fmt::format(
        "grpo: BOS + the longest prompt ({} bytes) + max_new_tokens {} − 1 = {} positions "
        "exceed model.seq_len = {}; lower max_new_tokens or data.arith_max_operand",
        longest_prompt(job.data), g.max_new_tokens, need, job.model.seq_len);
  if (!job.model.engram_layers.empty())
    return "grpo: model.engram_layers must be empty (the old and reference Engram tables are "
           "not kept yet)";
  return "";
}

GrpoRunner::GrpoRunner(Trainer& trainer, const GrpoConfig& g)
    : cfg(g),
      trainer_(trainer),
      ref_(trainer.params),
      old_(trainer.params),
      sampler_(trainer.cfg, trainer.table, g) {
  if (const std::string bad = check_grpo(g, trainer.cfg); !bad.empty())
    throw std::invalid_argument(bad);
}

std::vector<Rollout> GrpoRunner::rollouts(int64_t s) {
  std::vector<Rollout> out;
  for (int64_t p = 0; p < cfg.prompts_per_step; ++p) {
    std::vector<Rollout> g = sampler_.group(old_.data(), ref_.data(), s, p);
    out.insert(out.end(), std::make_move_iterator(g.begin()), std::make_move_iterator(g.end()));
  }
  return out;
}

GrpoStepStats GrpoRunner::step(int64_t s) {
  const std::vector<Rollout> rolls = rollouts(s);
  auto input = std::make_shared<GrpoStep>(
      grpo_step_of(s, rolls, trainer_.micro_batches(), trainer_.cfg.model.seq_len, cfg.loss));
  trainer_.set_grpo_step(input);
  old_ = trainer_.params;  // θ_s is π_old of step s+1
  const StepStats t = trainer_.train_step(s);
  GrpoStepStats st;
  st.step = s;
  st.mean_reward = input->mean_reward;
  st.loss = t.loss, st.grad_norm = t.grad_norm, st.lr = t.lr;
  int64_t clipped = 0;  // the heads' fractions are per their own tokens
  for (size_t m = 0; m < input->tokens.size(); ++m) {
    const GrpoHead<float>& h = trainer_.grpo_head(m);
    const int64_t n = int64_t(input->tokens[m].token.size());
    st.kl += h.cache().kl_mean;  // each head's is its share of the step's mean
    clipped += std::llround(double(h.cache().clipped_fraction) * double(n));
    st.tokens += n;
  }
  st.clipped_fraction = st.tokens > 0 ? double(clipped) / double(st.tokens) : 0;
  return st;
}

}  // namespace troupe::model
