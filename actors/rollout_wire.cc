#include "actors/rollout_wire.h"

#include <fmt/format.h>

namespace troupe::actors {

void group_to_proto(const std::vector<model::Rollout>& group, int64_t step,
                    train::RolloutGroup* out) {
  out->set_step(step);
  out->set_prompt(group.empty() ? 0 : group.front().prompt);
  if (!group.empty()) *out->mutable_context() = {group[0].context.begin(), group[0].context.end()};
  for (const model::Rollout& r : group) {
    out->add_completion_len(int32_t(r.completion.size()));
    out->mutable_tokens()->Add(r.completion.begin(), r.completion.end());
    out->add_reward(r.reward);
    out->add_advantage(r.advantage);
    out->mutable_logp_old()->Add(r.logp_old.begin(), r.logp_old.end());
    out->mutable_logp_ref()->Add(r.logp_ref.begin(), r.logp_ref.end());
  }
}

std::string group_from_proto(const train::RolloutGroup& in, int64_t group_size, int64_t vocab,
                             std::vector<model::Rollout>* out) {
  const int G = in.completion_len_size();
  if (G != group_size || in.reward_size() != G || in.advantage_size() != G)
    return fmt::format("{} completions, {} rewards, {} advantages for a group of {}", G,
                       in.reward_size(), in.advantage_size(), group_size);
  int64_t n = 0;
  for (int32_t len : in.completion_len()) {
    if (len <= 0) return fmt::format("a completion of {} tokens", len);
    n += len;
  }
  if (in.tokens_size() != n || in.logp_old_size() != n || in.logp_ref_size() != n)
    return fmt::format("{} tokens, {} log π_old, {} log π_ref for completions of {} tokens",
                       in.tokens_size(), in.logp_old_size(), in.logp_ref_size(), n);
  if (in.context_size() == 0) return "no context";
  for (const auto* v : {&in.context(), &in.tokens()})
    for (int32_t t : *v)
      if (t < 0 || t >= vocab)
        return fmt::format("token {} outside the vocabulary of {}", t, vocab);
  std::vector<model::Rollout> got;
  int64_t at = 0;
  for (int i = 0; i < G; ++i) {
    model::Rollout r;
    r.prompt = in.prompt(), r.sample = i;
    r.context.assign(in.context().begin(), in.context().end());
    const int64_t len = in.completion_len(i);
    r.completion.assign(in.tokens().begin() + at, in.tokens().begin() + at + len);
    r.logp_old.assign(in.logp_old().begin() + at, in.logp_old().begin() + at + len);
    r.logp_ref.assign(in.logp_ref().begin() + at, in.logp_ref().begin() + at + len);
    r.reward = in.reward(i), r.advantage = in.advantage(i);
    at += len;
    got.push_back(std::move(r));
  }
  out->insert(out->end(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
  return "";
}

}  // namespace troupe::actors
