#include "train/grpo_step.h"

#include <fmt/format.h>

#include <stdexcept>

#include "data/arithmetic.h"

namespace troupe::model {

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
    out.tokens.logp_old.insert(out.tokens.logp_old.end(), r.logp_old.begin(), r.logp_old.end());
    out.tokens.logp_ref.insert(out.tokens.logp_ref.end(), r.logp_ref.begin(), r.logp_ref.end());
    out.tokens.advantage.push_back(float(r.advantage));
  }
  if (b.rows > 0) pad_row();
  out.tokens.completions = int64_t(rollouts.size());
  return out;
}

namespace {

// Rows of padding (one document each) after b's, up to `rows`.
void pad_rows(Batch& b, int64_t rows) {
  for (int32_t doc = 1 << 20; b.rows < rows; ++b.rows, ++doc) {
    b.inputs.insert(b.inputs.end(), size_t(b.seq_len), kEos);
    b.targets.insert(b.targets.end(), size_t(b.seq_len), kNoTarget);
    b.doc.insert(b.doc.end(), size_t(b.seq_len), doc);
  }
}

}  // namespace

GrpoStep grpo_step_of(int64_t step, const std::vector<Rollout>& rollouts, int64_t micro_batches,
                      int64_t seq_len, const GrpoLossConfig& loss) {
  const int64_t M = micro_batches;
  const int64_t P = rollouts.empty() ? 0 : rollouts.back().prompt + 1;
  if (M <= 0 || P <= 0)
    throw std::invalid_argument(
        fmt::format("GRPO step {}: {} prompts for {} micro-batches", step, P, M));
  std::vector<std::vector<Rollout>> per_mb(static_cast<size_t>(M));
  GrpoStep out;
  out.step = step, out.loss = loss;
  for (const Rollout& r : rollouts) {
    if (r.prompt < 0 || r.prompt >= P)
      throw std::invalid_argument(
          fmt::format("GRPO step {}: prompt {} out of order", step, r.prompt));
    per_mb[size_t(r.prompt * M / P)].push_back(r);
    out.mean_reward += r.reward;
  }
  out.mean_reward /= double(rollouts.size());
  std::vector<float> advantage;  // every completion's: the loss's ids count over the step
  for (const Rollout& r : rollouts) advantage.push_back(float(r.advantage));
  std::vector<GrpoBatch> packed;
  for (const auto& mb : per_mb) {
    packed.push_back(pack_rollouts(mb, seq_len));
    out.mb_rows = std::max(out.mb_rows, packed.back().batch.rows);
  }
  out.batch.seq_len = seq_len;
  int32_t first = 0;  // the step's index of the micro-batch's first completion
  for (GrpoBatch& g : packed) {
    pad_rows(g.batch, out.mb_rows);
    out.batch.rows += g.batch.rows;
    out.batch.inputs.insert(out.batch.inputs.end(), g.batch.inputs.begin(), g.batch.inputs.end());
    out.batch.targets.insert(out.batch.targets.end(), g.batch.targets.begin(),
                             g.batch.targets.end());
    out.batch.doc.insert(out.batch.doc.end(), g.batch.doc.begin(), g.batch.doc.end());
    const int32_t local = int32_t(g.tokens.advantage.size());
    for (int32_t& c : g.tokens.completion) c += first;
    first += local;
    g.tokens.advantage = advantage;
    g.tokens.completions = int64_t(rollouts.size());
    out.position.push_back(std::move(g.position));
    out.tokens.push_back(std::move(g.tokens));
  }
  return out;
}

GrpoSampler::GrpoSampler(const TrainJobConfig& job, const ParamTable& table, const GrpoConfig& g)
    : job_(job),
      cfg_(g),
      decoder_(job_.model, table, job_.train.seed, job_.model.seq_len),
      model_(job_.model, table, job_.train.seed) {}

std::vector<Rollout> GrpoSampler::group(const float* old, const float* ref, int64_t step,
                                        int64_t prompt) {
  const uint64_t seed = job_.train.seed;
  const ArithmeticProblem problem =
      arithmetic_problem(job_.data, seed, kGrpoPrompts, uint64_t(step), uint64_t(prompt));
  GenerateOptions opts;
  opts.max_new = cfg_.max_new_tokens;
  std::vector<Rollout> out;
  std::vector<double> rewards;
  for (int64_t i = 0; i < cfg_.group_size; ++i) {
    Rollout r;
    r.prompt = prompt, r.sample = i;
    r.context = prompt_tokens(problem.prompt);
    const Sampler sampler(cfg_.temperature, seed, uint64_t(step), uint64_t(prompt), uint64_t(i));
    // A fresh sequence on the decoder (cached_next resets it) for every completion.
    const NextLogits<float> next = cached_next<float>(decoder_, old, nullptr);
    r.completion = generate(next, job_.model.vocab_size, r.context, opts, sampler);
    r.reward = arithmetic_reward(problem, r.completion);
    rewards.push_back(r.reward);
    out.push_back(std::move(r));
  }
  const std::vector<double> A = group_advantages(rewards);
  for (size_t i = 0; i < out.size(); ++i) out[i].advantage = A[i];
  const GrpoBatch b = pack_rollouts(out, job_.model.seq_len);
  const std::vector<float> lp_old = logprobs(old, b), lp_ref = logprobs(ref, b);
  size_t t = 0;
  for (Rollout& r : out) {
    r.logp_old.assign(lp_old.begin() + long(t), lp_old.begin() + long(t + r.completion.size()));
    r.logp_ref.assign(lp_ref.begin() + long(t), lp_ref.begin() + long(t + r.completion.size()));
    t += r.completion.size();
  }
  return out;
}

// log π(token) at the batch's completion positions under `params` (forward only).
std::vector<float> GrpoSampler::logprobs(const float* params, const GrpoBatch& b) {
  LossScale scale;
  scale.rows = b.batch.rows;
  model_.step(params, nullptr, b.batch, scale, false);
  const int64_t N = int64_t(b.position.size()), V = job_.model.vocab_size;
  std::vector<float> rows(static_cast<size_t>(N * V)), lp(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t)
    std::copy_n(model_.logits().begin() + b.position[size_t(t)] * V, V, rows.begin() + t * V);
  token_logprobs(rows.data(), b.tokens.token.data(), N, V, lp.data());
  return lp;
}

}  // namespace troupe::model
