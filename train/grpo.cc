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

GrpoBatch pack_rollouts(const std::vector<Rollout>& rollouts, int64_t seq_len) {
  GrpoBatch out;
  Batch& b = out.batch;
  b.seq_len = seq_len;
  int32_t doc = 0;
  auto pad_row = [&] {  // the rest of the current row: one padding document
    const int64_t fill = b.rows * seq_len - int64_t(b.inputs.size());
    b.inputs.insert(b.inputs.end(), size_t(fill), kEos);
    b.targets.insert(b.targets.end(), size_t(fill), kNoTarget);
    b.doc.insert(b.doc.end(), size_t(fill), doc++);
  };
  for (size_t c = 0; c < rollouts.size(); ++c) {
    const Rollout& r = rollouts[c];
    std::vector<int32_t> seq = r.context;
    seq.insert(seq.end(), r.completion.begin(), r.completion.end());
    const int64_t len = int64_t(seq.size()) - 1;  // the last token is never an input
    if (len > seq_len)
      throw std::invalid_argument(fmt::format(
          "pack_rollouts: a sequence of {} positions exceeds seq_len {}", len, seq_len));
    if (b.rows == 0 || int64_t(b.inputs.size()) + len > b.rows * seq_len) {
      if (b.rows > 0) pad_row();
      ++b.rows;
    }
    const int64_t start = int64_t(b.inputs.size());
    for (int64_t i = 0; i < len; ++i) {
      b.inputs.push_back(seq[size_t(i)]);
      b.targets.push_back(kNoTarget);  // the head loss reads the tokens below, not targets
      b.doc.push_back(doc);
    }
    ++doc;
    for (int64_t j = int64_t(r.context.size()); j < int64_t(seq.size()); ++j) {
      out.position.push_back(start + j - 1);
      out.tokens.token.push_back(seq[size_t(j)]);
      out.tokens.completion.push_back(int32_t(c));
    }
    out.tokens.advantage.push_back(float(r.advantage));
  }
  if (b.rows > 0) pad_row();
  out.tokens.completions = int64_t(rollouts.size());
  return out;
}

GrpoRunner::GrpoRunner(Trainer& trainer, const GrpoConfig& g)
    : cfg(g),
      trainer_(trainer),
      ref_(trainer.params),
      old_(trainer.params),
      decoder_(trainer.cfg.model, trainer.table, trainer.cfg.train.seed, trainer.cfg.model.seq_len),
      model_(trainer.cfg.model, trainer.table, trainer.cfg.train.seed),
      grads_(trainer.params.size()) {
  if (const std::string bad = check_grpo(g, trainer.cfg); !bad.empty())
    throw std::invalid_argument(bad);
}

std::vector<Rollout> GrpoRunner::rollouts(int64_t s) {
  const TrainJobConfig& job = trainer_.cfg;
  const uint64_t seed = job.train.seed;
  GenerateOptions opts;
  opts.max_new = cfg.max_new_tokens;
  std::vector<Rollout> out;
  for (int64_t p = 0; p < cfg.prompts_per_step; ++p) {
    const ArithmeticProblem problem =
        arithmetic_problem(job.data, seed, kGrpoPrompts, uint64_t(s), uint64_t(p));
    std::vector<double> rewards;
    for (int64_t i = 0; i < cfg.group_size; ++i) {
      Rollout r;
      r.prompt = p, r.sample = i;
      r.context = prompt_tokens(problem.prompt);
      const Sampler sampler(cfg.temperature, seed, uint64_t(s), uint64_t(p), uint64_t(i));
      // A fresh sequence on the decoder (cached_next resets it) for every completion.
      const NextLogits<float> next = cached_next<float>(decoder_, old_.data(), nullptr);
      r.completion = generate(next, job.model.vocab_size, r.context, opts, sampler);
      r.reward = arithmetic_reward(problem, r.completion);
      rewards.push_back(r.reward);
      out.push_back(std::move(r));
    }
    const std::vector<double> A = group_advantages(rewards);
    for (int64_t i = 0; i < cfg.group_size; ++i)
      out[size_t(p * cfg.group_size + i)].advantage = A[size_t(i)];
  }
  return out;
}

// log π(token) at the batch's completion positions under `params` (forward only).
std::vector<float> GrpoRunner::logprobs(const std::vector<float>& params, const GrpoBatch& b) {
  LossScale scale;
  scale.rows = b.batch.rows;
  model_.step(params.data(), nullptr, b.batch, scale, false);
  const int64_t N = int64_t(b.position.size()), V = trainer_.cfg.model.vocab_size;
  std::vector<float> rows(static_cast<size_t>(N * V)), lp(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t)
    std::copy_n(model_.logits().begin() + b.position[size_t(t)] * V, V, rows.begin() + t * V);
  token_logprobs(rows.data(), b.tokens.token.data(), N, V, lp.data());
  return lp;
}

GrpoStepStats GrpoRunner::step(int64_t s) {
  const std::vector<Rollout> rolls = rollouts(s);
  GrpoBatch b = pack_rollouts(rolls, trainer_.cfg.model.seq_len);
  b.tokens.logp_old = logprobs(old_, b);
  b.tokens.logp_ref = logprobs(ref_, b);
  GrpoHead<float> head(cfg.loss, b.position, b.tokens);
  LossScale scale;
  scale.rows = b.batch.rows;
  std::fill(grads_.begin(), grads_.end(), 0.f);
  const LossParts<float> parts = model_.step(trainer_.params.data(), grads_.data(), b.batch, scale,
                                             false, nullptr, nullptr, &head);
  old_ = trainer_.params;  // θ_s is π_old of step s+1
  // The trainer's update path, as one owner of every tensor with one piece for the step.
  const FlatRange all{0, trainer_.table.total()};
  const std::vector<double> norm_parts =
      trainer_.reduce_owned(all, {TreeNode{0, trainer_.micro_batches()}}, {grads_.data()});
  GrpoStepStats st;
  st.step = s;
  st.grad_norm = grad_norm_from_parts(norm_parts);
  st.lr = lr_at(trainer_.cfg.train, s);
  trainer_.apply_owned(all, s, clip_scale(trainer_.cfg.train.grad_clip, st.grad_norm),
                       model_.expert_counts());
  for (const Rollout& r : rolls) st.mean_reward += r.reward;
  st.mean_reward /= double(rolls.size());
  st.loss = parts.total();
  st.kl = head.cache().kl_mean;
  st.clipped_fraction = head.cache().clipped_fraction;
  st.tokens = int64_t(b.position.size());
  return st;
}

}  // namespace troupe::model
