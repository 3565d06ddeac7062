// The coordinator's side of GRPO's rollout actors (issue 17; actors/rollout.cc). The prompts
// of step s are queued once the policy version they are sampled on, max(s − 1, 0), is
// committed — so the groups of step s + 1 are sampled while the workers train step s (lag 1);
// with grpo.overlap = false only once step s − 1 committed (generate, then train: the same
// bits, no overlap). Each rollout actor is handed a few prompts at a time, and the next as
// each group comes back: a slow actor samples fewer. A train step begins when all of its
// groups are in; its StepBegin carries them to the workers.
//
// A lost rollout node costs nothing but time: the prompts it held go back to the front of
// the queue for the others (a group is a pure function of (version, step, prompt), so the
// bits stay), and training is not disturbed (no new epoch). With no rollout node left the
// job stops. Asks and groups carry unfenced_epoch (protocol.h): a worker's loss (a new epoch)
// drops none of them.
#include <fmt/format.h>

#include <algorithm>

#include "actors/coordinator_state.h"
#include "actors/rollout_wire.h"

namespace troupe::actors::coordinator_impl {

namespace {

constexpr size_t asks_in_flight = 2;  // per rollout actor: one sampled, one waiting

// Hands queued prompts to the actors with room, fewest asked first.
void hand_out(Self* self) {
  auto& r = self->state.rollouts;
  while (!r.queue.empty() && !r.actors.empty()) {
    auto a = std::min_element(r.actors.begin(), r.actors.end(), [](const auto& x, const auto& y) {
      return x.asked.size() < y.asked.size();
    });
    if (a->asked.size() >= asks_in_flight) return;
    const auto [step, prompt] = r.queue.front();
    r.queue.pop_front();
    a->asked.insert({step, prompt});
    train::RolloutAsk ask;
    ask.set_step(step), ask.set_prompt(prompt);
    ActorMessage m = make_message(self->state.self_address, a->address, rollout_ask_type, ask);
    m.epoch = unfenced_epoch;
    self->send(self->state.router, std::move(m));
  }
}

bool step_complete(const RolloutRound& r, int64_t step) {
  const auto it = r.groups.find(step);
  return it != r.groups.end() &&
         std::all_of(it->second.begin(), it->second.end(), [](const auto& g) { return bool(g); });
}

}  // namespace

bool grpo_job(Self* self) {
  return self->state.opt.config.grpo.enabled;
}

void place_rollouts(Self* self, control::View* v) {
  auto& s = self->state;
  auto& r = s.rollouts;
  if (!grpo_job(self)) return;
  if (!r.placed) {
    for (size_t k = 0; k < s.core.rollout.size(); ++k)
      r.actors.push_back({s.core.rollout[k].id,
                          fmt::format("{}/rollout.{}", s.core.rollout[k].id, k),
                          int64_t(k),
                          {}});
    r.placed = true;
  }
  for (const auto& a : r.actors) {
    auto* p = v->add_placement();
    p->set_role("rollout"), p->set_index(a.index);
    p->set_node_id(a.node);
  }
}

void deal_rollouts(Self* self) {
  auto& s = self->state;
  auto& r = s.rollouts;
  if (!grpo_job(self)) return;
  const int64_t c = s.drv.committed;
  // Step t may be sampled once version max(t − 1, 0) is committed (t ≤ c + 1); without
  // overlap once step t − 1 is (t ≤ c).
  const int64_t last =
      std::min(s.opt.config.train.steps - 1, s.opt.config.grpo.overlap ? c + 1 : c);
  for (; r.dealt <= last; ++r.dealt) {
    r.groups[r.dealt].assign(size_t(s.opt.config.grpo.prompts_per_step), std::nullopt);
    for (int64_t p = 0; p < s.opt.config.grpo.prompts_per_step; ++p)
      r.queue.emplace_back(r.dealt, p);
  }
  hand_out(self);
}

bool rollouts_ready(Self* self) {
  auto& s = self->state;
  if (!grpo_job(self) || step_complete(s.rollouts, s.drv.step)) return true;
  if (!s.rollouts.waiting) s.rollouts.wait_from = now(self);
  s.rollouts.waiting = true;
  return false;
}

void add_rollouts(Self* self, train::StepBegin* b, std::vector<runtime::Payload>* payloads) {
  auto& r = self->state.rollouts;
  if (!grpo_job(self)) return;
  train::RolloutGroups all;
  for (const auto& g : r.groups.at(b->step())) *all.add_groups() = *g;
  b->set_rollout_groups(all.groups_size());
  for (const auto& a : r.actors) b->add_rollout_actors(a.address);
  const std::string bytes = all.SerializeAsString();
  payloads->push_back(owned_payload(std::vector<char>(bytes.begin(), bytes.end())));
}

void rollouts_committed(Self* self, int64_t step) {
  if (!grpo_job(self)) return;
  self->state.rollouts.groups.erase(step);
  deal_rollouts(self);
}

void rollout_stats(Self* self, int64_t step, model::StepStats* st) {
  const auto& r = self->state.rollouts;
  const auto it = r.groups.find(step);
  if (!grpo_job(self) || it == r.groups.end()) return;
  double sum = 0;
  int64_t n = 0;
  st->tokens = 0;
  for (const auto& g : it->second) {
    if (!g) continue;
    for (double x : g->reward()) sum += x, ++n;
    st->tokens += g->tokens_size();
  }
  st->reward = n > 0 ? sum / double(n) : -1;
}

Verdict on_rollout_group(Self* self, const train::RolloutAsk& head, const ActorMessage& m) {
  auto& s = self->state;
  auto& r = s.rollouts;
  train::RolloutGroup g;
  if (m.payloads.size() != 1 ||
      !g.ParseFromArray(m.payloads[0].bytes.data(), int(m.payloads[0].bytes.size())) ||
      g.step() != head.step() || g.prompt() != head.prompt())
    return drop(Drop::malformed, "a RolloutGroup without its group as payload 0");
  const auto a = std::find_if(r.actors.begin(), r.actors.end(),
                              [&](const auto& x) { return x.address == m.from; });
  if (a == r.actors.end()) return drop(Drop::unknown_sender, "not a rollout actor of the job");
  if (!a->asked.erase({g.step(), g.prompt()}))
    return drop(Drop::duplicate, fmt::format("step {} prompt {} was not asked of it (or came "
                                             "already)",
                                             g.step(), g.prompt()));
  hand_out(self);
  const auto it = r.groups.find(g.step());
  if (it == r.groups.end() || g.prompt() < 0 || size_t(g.prompt()) >= it->second.size())
    return drop(Drop::wrong_step,
                fmt::format("step {} prompt {} is not awaited", g.step(), g.prompt()));
  std::vector<model::Rollout> check;
  const model::JobConfig& cfg = s.opt.config;
  if (const std::string bad =
          group_from_proto(g, cfg.grpo.group_size, cfg.model.vocab_size, &check);
      !bad.empty())
    return drop(Drop::malformed, bad);
  if (it->second[size_t(g.prompt())]) return drop(Drop::duplicate, "a group received twice");
  it->second[size_t(g.prompt())] = g;
  if (r.waiting && g.step() == s.drv.step && step_complete(r, g.step()) &&
      s.core.phase == Phase::running && !s.drv.in_flight) {
    r.waiting = false;
    start_or_finish(self);
    // The step's time (tokens/s, idle fraction) counts from when it waited for its groups.
    if (s.drv.in_flight && s.drv.step == g.step()) s.drv.step_started = r.wait_from;
  }
  return {};
}

bool lose_rollout_node(Self* self, const std::string& node, const std::string& why, bool hung) {
  auto& s = self->state;
  auto& c = s.core;
  auto& r = s.rollouts;
  const auto it = std::find_if(c.rollout.begin(), c.rollout.end(),
                               [&](const NodeInfo& n) { return n.id == node; });
  if (it == c.rollout.end()) return false;
  const NodeInfo gone = *it;
  const std::string what =
      fmt::format("rollout node {} (pid {}) lost at step {}: {}", node, gone.pid, s.drv.step, why);
  c.rollout.erase(it);
  if (c.phase == Phase::joining || c.phase == Phase::starting) {
    fail(self, what);
    return true;
  }
  evict_node(self, gone, hung);
  std::vector<std::pair<int64_t, int64_t>> back;
  for (auto a = r.actors.begin(); a != r.actors.end();)
    if (a->node == node) {
      back.insert(back.end(), a->asked.begin(), a->asked.end());
      a = r.actors.erase(a);
    } else {
      ++a;
    }
  if (r.actors.empty()) {
    fail(self, what + ": it was the last rollout node (start the job with more --rollout-nodes)");
    return true;
  }
  std::sort(back.begin(), back.end());
  r.queue.insert(r.queue.begin(), back.begin(), back.end());
  event(self, "rollout_lost",
        fmt::format("{}; its {} prompt(s) go to the {} other rollout node(s)", what, back.size(),
                    r.actors.size()),
        {{"node", node}, {"pid", gone.pid}, {"hung", hung}, {"prompts", back.size()}});
  hand_out(self);
  return true;
}

}  // namespace troupe::actors::coordinator_impl
