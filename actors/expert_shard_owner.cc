// The experts an expert_shard owns (issue 15, item 2): their weights and optimizer state in
// a model::ExpertOwner (train/expert_owner.h) behind the protocol (train.proto, "Owners of
// routed experts").
//
// - ExpertOwn gives the shard experts with their state (a job's start: weights alone; a
//   migration: the state run another owner gave up), each payload checked against its
//   CRC32C; what does not check out is refused by index in the ExpertOwned answer, for the
//   sender to send again, and the rest is owned. The owner sends the weights to the shards
//   of the experts' replicas at once (ExpertWeights, its own shard included).
// - A step's gradients arrive leaf by leaf: ExpertLeaf from the replica that computed a
//   (micro-batch, expert) pair, ExpertRowsNote from the worker that ran a micro-batch. The
//   first message of a newer step begins it (the owner's step in flight, if any, is given
//   up: an Apply would have ended it). Once every leaf is in, the clipping parts go to the
//   coordinator (ExpertNorm).
// - Apply updates every owned expert (the schedule's learning rate at the step, the clip
//   scale Apply carries) and sends the new weights, of step + 1 train steps, to the replicas.
// - A new epoch gives the step in flight up; the experts stay owned.
//
// Not yet (docs/eplb.md): the workers and the coordinator do not use this: a job's shards own
// nothing and the workers keep updating the routed experts. Nor does an owner keep the
// version before an applied step until its Commit, as a worker does (saved_for), so a
// recovery that goes back past an applied step cannot take its experts back yet.
#include <fmt/format.h>

#include "actors/expert_shard.h"
#include "storage/crc32c.h"
#include "train/schedule.h"

namespace troupe::actors::expert_shard_impl {

namespace {

using model::ExpertId;

model::ExpertOwner& owner_of(ShardState& s) {
  if (!s.owner) s.owner = std::make_unique<model::ExpertOwner>(s.job);
  return *s.owner;
}

Verdict check_replicas(const train::ExpertReplicas& r) {
  if (r.shards_size() != r.slots_size() || r.shards().empty())
    return drop(Drop::malformed, "replicas without one shard per slot, or none");
  for (const int64_t slot : r.slots())
    if (slot < 0) return drop(Drop::malformed, fmt::format("replica slot {}", slot));
  for (const std::string& shard : r.shards())
    if (shard.find('/') == std::string::npos)
      return drop(Drop::malformed, fmt::format("replica shard '{}'", shard));
  return {};
}

// The weights of `ids` after `version` train steps to the shards of their replicas: one
// ExpertWeights per (shard, MoE layer).
void send_weights(Self* self, const std::vector<ExpertId>& ids, int64_t version) {
  auto& s = self->state;
  std::map<std::pair<std::string, int64_t>, std::pair<train::ExpertWeights, std::vector<Payload>>>
      out;
  for (const ExpertId id : ids) {
    const train::ExpertReplicas& r = s.replicas.at(id);
    const std::span<const float> w = s.owner->weights(id);
    for (int i = 0; i < r.shards_size(); ++i) {
      auto& [body, payloads] = out[{r.shards(i), id.moe_layer}];
      body.set_version(version), body.set_moe_layer(id.moe_layer);
      body.add_slots(r.slots(i));
      payloads.push_back(owned_payload(std::vector<float>(w.begin(), w.end())));
    }
  }
  for (auto& [to, msg] : out)
    reply(self, to.first, expert_weights_type, msg.first, std::move(msg.second));
}

Verdict on_own(Self* self, const train::ExpertOwn& o, const ActorMessage& m) {
  auto& s = self->state;
  model::ExpertOwner& owner = owner_of(s);
  const int n = o.moe_layers_size();
  if (o.experts_size() != n || o.crc32c_size() != n || o.replicas_size() != n ||
      int(m.payloads.size()) != n || o.version() < 0)
    return drop(Drop::malformed, "not one expert, CRC32C, replica list and payload each");
  if (owner.in_step())
    return drop(Drop::wrong_step,
                fmt::format("experts given in the middle of step {}", owner.step()));
  for (int i = 0; i < n; ++i)
    if (Verdict v = check_replicas(o.replicas(i))) return v;
  train::ExpertOwned answer;
  answer.set_version(o.version());
  std::vector<ExpertId> taken;
  const int64_t want = o.fresh() ? owner.weight_floats() : owner.state_floats();
  for (int i = 0; i < n; ++i) {
    const ExpertId id{o.moe_layers(i), o.experts(i)};
    const std::span<const std::byte> bytes = m.payloads[size_t(i)].bytes;
    std::string why;
    if (storage::crc32c(bytes.data(), bytes.size()) != o.crc32c(i))
      why = "its CRC32C does not match";
    else if (int64_t(bytes.size()) != want * int64_t(sizeof(float)))
      why = fmt::format("{} bytes, not {} floats", bytes.size(), want);
    std::vector<float> values;
    if (why.empty() && read_payload(m.payloads[size_t(i)], &values)) {
      try {
        if (owner.owns(id)) owner.release(id);  // sent again: the newer state counts
        o.fresh() ? owner.own(id, values) : owner.own_state(id, values);
        s.replicas[id] = o.replicas(i);
        taken.push_back(id);
        continue;
      } catch (const std::exception& e) {
        why = e.what();
      }
    }
    answer.add_refused(i);
    if (answer.why().empty()) answer.set_why(fmt::format("{}: {}", model::to_string(id), why));
  }
  log::info("{}: owns {} experts more at version {}{}", s.ctx.address, taken.size(), o.version(),
            answer.refused().empty() ? "" : "; refused " + answer.why());
  reply(self, m.from, expert_owned_type, answer, {});
  send_weights(self, taken, o.version());
  return {};
}

// The step a leaf or a note belongs to: one after the last applied begins (the step in
// flight, if older, is given up: a view change cut it short), an applied or older one is
// dropped.
Verdict enter_step(ShardState& s, int64_t step, int64_t micro_batches) {
  model::ExpertOwner& owner = owner_of(s);
  if (micro_batches < 1 || micro_batches > (int64_t(1) << 24))
    return drop(Drop::malformed, fmt::format("{} micro-batches", micro_batches));
  if (step <= s.applied || (owner.in_step() && step < owner.step()))
    return drop(Drop::wrong_step,
                fmt::format("step {} after step {} (applied: {})", step, owner.step(), s.applied));
  if (!owner.in_step() || step > owner.step()) {
    if (owner.in_step()) owner.abandon_step();
    owner.begin_step(step, micro_batches);
    s.norm_sent = false;
  }
  return {};
}

// Every leaf in: the clipping parts to the coordinator.
void try_norm(Self* self) {
  auto& s = self->state;
  if (s.norm_sent || !s.owner->complete()) return;
  train::ExpertNorm n;
  n.set_step(s.owner->step());
  std::vector<double> parts;
  for (const model::NormRun& r : s.owner->norm_runs()) {
    n.add_offsets(r.offset), n.add_counts(int64_t(r.parts.size()));
    parts.insert(parts.end(), r.parts.begin(), r.parts.end());
  }
  s.norm_sent = true;
  reply(self, s.ctx.coordinator, expert_norm_type, n, {owned_payload(std::move(parts))});
}

Verdict on_leaf(Self* self, const train::ExpertLeaf& l, const ActorMessage& m) {
  auto& s = self->state;
  if (Verdict v = enter_step(s, l.step(), l.micro_batches())) return v;
  if (l.micro_batches() != s.owner->micro_batches())
    return drop(Drop::malformed, fmt::format("{} micro-batches in step {} of {}", l.micro_batches(),
                                             l.step(), s.owner->micro_batches()));
  std::vector<float> g;
  if (m.payloads.size() != 1 || !read_payload(m.payloads[0], &g))
    return drop(Drop::malformed, "a leaf without one payload of floats");
  const std::string why = s.owner->add_grad(l.mb(), {l.moe_layer(), l.expert()}, std::move(g));
  if (!why.empty()) return drop(Drop::malformed, why);
  try_norm(self);
  return {};
}

Verdict on_note(Self* self, const train::ExpertRowsNote& n, const ActorMessage&) {
  auto& s = self->state;
  if (n.moe_layers_size() != n.experts_size())
    return drop(Drop::malformed, "not one expert per MoE layer");
  if (Verdict v = enter_step(s, n.step(), n.micro_batches())) return v;
  if (n.micro_batches() != s.owner->micro_batches())
    return drop(Drop::malformed, fmt::format("{} micro-batches in step {} of {}", n.micro_batches(),
                                             n.step(), s.owner->micro_batches()));
  std::vector<ExpertId> routed;
  for (int i = 0; i < n.experts_size(); ++i) routed.push_back({n.moe_layers(i), n.experts(i)});
  const std::string why = s.owner->note_rows(n.mb(), routed);
  if (!why.empty()) return drop(Drop::malformed, why);
  try_norm(self);
  return {};
}

Verdict on_apply(Self* self, const train::Apply& a, const ActorMessage&) {
  auto& s = self->state;
  if (!s.owner || !s.owner->in_step() || a.step() != s.owner->step() || !s.norm_sent)
    return drop(Drop::wrong_step, fmt::format("Apply of step {} before its gradients", a.step()));
  if (!(a.clip_scale() > 0 && a.clip_scale() <= 1))
    return drop(Drop::malformed, fmt::format("clip scale {}", a.clip_scale()));
  s.owner->apply(model::lr_at(s.job.train, a.step()), a.clip_scale());
  s.applied = a.step(), s.norm_sent = false;
  send_weights(self, s.owner->owned(), a.step() + 1);
  return {};
}

}  // namespace

void add_owner_handlers(Self* self, Dispatcher& d) {
  d.on<train::ExpertOwn>(expert_own_type,
                         [self](const auto& o, ActorMessage& m) { return on_own(self, o, m); });
  d.on<train::ExpertLeaf>(expert_leaf_type,
                          [self](const auto& l, ActorMessage& m) { return on_leaf(self, l, m); });
  d.on<train::ExpertRowsNote>(expert_rows_note_type, [self](const auto& n, ActorMessage& m) {
    return on_note(self, n, m);
  });
  d.on<train::Apply>(apply_type,
                     [self](const auto& a, ActorMessage& m) { return on_apply(self, a, m); });
}

void owner_new_epoch(ShardState& s) {
  if (s.owner && s.owner->in_step()) s.owner->abandon_step();
  s.norm_sent = false;
}

void send_leaf(Self* self, const train::ExpertBackward& b, const train::ExpertRows& e,
               std::vector<float> grad) {
  train::ExpertLeaf l;
  l.set_step(b.step()), l.set_mb(b.mb()), l.set_moe_layer(b.moe_layer());
  l.set_expert(e.expert()), l.set_micro_batches(b.micro_batches());
  reply(self, e.owner(), expert_leaf_type, l, {owned_payload(std::move(grad))});
}

}  // namespace troupe::actors::expert_shard_impl
