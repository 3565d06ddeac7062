// The rollout role (issue 17, `troupe launch --rollout-nodes N` with [grpo] enabled): it
// samples whole groups for GRPO. The coordinator asks for one prompt of one step at a time
// (RolloutAsk, actors/coordinator_rollout.cc); the actor samples the group on policy version
// max(step − 1, 0) (train/grpo_step.h GrpoSampler), scores it, adds the group advantages and
// the log-probabilities under π_old and π_ref, and answers with a RolloutGroup.
//
// Versions. Version 0 is the phase's start (actors/grpo_weights.h), and π_ref for good.
// Version v + 1 is streamed by the owners as they apply step v: each sends its updated range
// (Weights, as to the other workers); when the ranges cover every parameter the version is
// whole. A range may come from an attempt of the step that was later aborted: the redone
// step gives the same bits (the determinism contract), so it fits with the others. An ask
// whose version is not whole yet waits for it; the last three whole versions are kept.
//
// Epochs do not matter here: a group is a pure function of (version, step, prompt), so a
// message of any epoch is taken, and what it sends carries unfenced_epoch (protocol.h). Bad
// input is dropped and counted; nothing a message says can crash the actor.
#include <fmt/format.h>

#include <algorithm>
#include <caf/all.hpp>
#include <deque>
#include <map>
#include <memory>

#include "actors/dispatch.h"
#include "actors/grpo_weights.h"
#include "actors/protocol.h"
#include "actors/roles.h"
#include "actors/rollout_wire.h"
#include "config/config_parse.h"
#include "runtime/control.pb.h"
#include "runtime/log.h"

namespace troupe::actors {
namespace {

using runtime::ActorMessage;

inline constexpr size_t held_asks_max = 1024;
inline constexpr int64_t versions_kept = 3;

// A version being streamed in: the weights, and the ranges received (sorted, merged).
struct Version {
  std::vector<float> weights;
  std::vector<std::pair<int64_t, int64_t>> have;
  bool whole = false;
};

struct RolloutState {
  runtime::RoleContext ctx;
  model::JobConfig cfg;
  std::unique_ptr<model::ParamTable> table;  // stable: the sampler reads through it
  std::unique_ptr<model::GrpoSampler> sampler;
  std::vector<float> ref;               // version 0, π_ref
  std::map<int64_t, Version> versions;  // 1, 2, …: streamed in
  std::deque<train::RolloutAsk> asks;   // waiting for their version
  DropLog drops{"", type_name};
  static inline const char* name = "rollout";
};
using Self = caf::stateful_actor<RolloutState>;

// The weights of version v when whole, else null.
const float* weights_of(RolloutState& s, int64_t v) {
  if (v == 0) return s.ref.data();
  const auto it = s.versions.find(v);
  return it != s.versions.end() && it->second.whole ? it->second.weights.data() : nullptr;
}

void add_range(Version& ver, int64_t lo, int64_t hi, int64_t total) {
  auto& h = ver.have;
  h.emplace_back(lo, hi);
  std::sort(h.begin(), h.end());
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (const auto& r : h)
    if (!merged.empty() && r.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, r.second);
    else
      merged.push_back(r);
  h = std::move(merged);
  ver.whole = h.size() == 1 && h[0].first == 0 && h[0].second == total;
}

// Samples every ask whose version is whole, in the order asked.
void serve(Self* self) {
  auto& s = self->state;
  for (auto it = s.asks.begin(); it != s.asks.end();) {
    const int64_t v = model::grpo_policy_version(it->step());
    const float* old = weights_of(s, v);
    if (!old) {
      ++it;
      continue;
    }
    const std::vector<model::Rollout> group =
        s.sampler->group(old, s.ref.data(), it->step(), it->prompt());
    train::RolloutGroup g;
    group_to_proto(group, it->step(), &g);
    ActorMessage m = make_message(s.ctx.address, s.ctx.coordinator, rollout_group_type, *it);
    m.epoch = unfenced_epoch;
    const std::string bytes = g.SerializeAsString();
    m.payloads.push_back(owned_payload(std::vector<char>(bytes.begin(), bytes.end())));
    self->send(s.ctx.router, std::move(m));
    it = s.asks.erase(it);
  }
}

Verdict on_ask(Self* self, const train::RolloutAsk& a) {
  auto& s = self->state;
  if (a.step() < 0 || a.step() >= s.cfg.train.steps || a.prompt() < 0 ||
      a.prompt() >= s.cfg.grpo.prompts_per_step)
    return drop(Drop::malformed,
                fmt::format("step {} prompt {} outside the job", a.step(), a.prompt()));
  const int64_t v = model::grpo_policy_version(a.step());
  if (v > 0 && !s.versions.empty() && v < s.versions.begin()->first)
    return drop(Drop::wrong_step, fmt::format("version {} is no longer kept", v));
  if (s.asks.size() >= held_asks_max) return drop(Drop::backlog_full, "too many asks waiting");
  s.asks.push_back(a);
  serve(self);
  return {};
}

Verdict on_weights(Self* self, const train::Weights& w, const ActorMessage& m) {
  auto& s = self->state;
  const int64_t total = s.table->total(), v = w.step() + 1;
  if (w.lo() < 0 || w.hi() > total || w.lo() >= w.hi() || m.payloads.size() != 1 ||
      m.payloads[0].bytes.size() != size_t(w.hi() - w.lo()) * sizeof(float))
    return drop(Drop::malformed, fmt::format("weights [{}, {}) of {}", w.lo(), w.hi(), total));
  if (w.step() < 0) return drop(Drop::malformed, "weights of a negative step");
  if (weights_of(s, v)) return drop(Drop::duplicate, fmt::format("version {} is whole", v));
  if (!s.versions.empty() && v < s.versions.begin()->first)
    return drop(Drop::wrong_step, fmt::format("version {} is no longer kept", v));
  Version& ver = s.versions[v];
  if (ver.weights.empty()) ver.weights.resize(size_t(total));
  std::memcpy(ver.weights.data() + w.lo(), m.payloads[0].bytes.data(), m.payloads[0].bytes.size());
  add_range(ver, w.lo(), w.hi(), total);
  if (ver.whole)
    while (s.versions.size() > size_t(versions_kept) && s.versions.begin()->first < v)
      s.versions.erase(s.versions.begin());
  serve(self);
  return {};
}

void fail(Self* self, const std::string& what) {
  control::NodeError e;
  e.set_text(fmt::format("{}: {}", self->state.ctx.address, what));
  ActorMessage m = make_message(self->state.ctx.address, self->state.ctx.coordinator,
                                runtime::node_error_type, e);
  self->send(self->state.ctx.router, std::move(m));
  self->quit();
}

caf::behavior rollout(Self* self, runtime::RoleContext ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.drops.set_owner(s.ctx.address);
  self->send(s.ctx.router, runtime::register_atom::value, fmt::format("rollout.{}", s.ctx.index),
             caf::actor(self));
  try {
    s.cfg = model::config_from_text(s.ctx.job.config_text, s.ctx.job.config_name,
                                    s.ctx.job.config_sets);
    if (!s.cfg.grpo.enabled)
      throw std::invalid_argument("a rollout actor in a job without [grpo] enabled = true");
    if (s.ctx.threads > 0) s.cfg.train.threads = s.ctx.threads;
    s.table = std::make_unique<model::ParamTable>(s.cfg.model);
    s.ref = grpo_start_weights(s.cfg, *s.table);
    s.sampler =
        std::make_unique<model::GrpoSampler>(s.cfg, *s.table, model::grpo_runner_config(s.cfg));
  } catch (const std::exception& e) {
    fail(self, e.what());
    return {};
  }
  auto table = std::make_shared<Dispatcher>(type_name);
  table->on<train::RolloutAsk>(rollout_ask_type,
                               [self](const auto& a, ActorMessage&) { return on_ask(self, a); });
  table->on<train::Weights>(
      weights_type, [self](const auto& w, ActorMessage& m) { return on_weights(self, w, m); });
  return {[=](ActorMessage& m) {
    auto& st = self->state;
    try {
      if (Verdict v = table->dispatch(m)) st.drops.record(*v, m);
    } catch (const std::exception& e) {
      fail(self, e.what());
    }
  }};
}

}  // namespace

caf::actor spawn_rollout(caf::actor_system& system, const runtime::RoleContext& ctx,
                         bool detached) {
  return detached ? system.spawn<caf::detached>(rollout, ctx) : system.spawn(rollout, ctx);
}

void register_rollout_role() {
  runtime::register_role("rollout", [](caf::actor_system& sys, const runtime::RoleContext& ctx) {
    return spawn_rollout(sys, ctx, true);
  });
}

}  // namespace troupe::actors
