// The expert_shard role (issue 15, item 2): it holds physical expert slots (weights set by
// ExpertWeights) and computes routed experts for the workers: ExpertForward → ExpertOutputs,
// ExpertBackward → ExpertGrads (train.proto). The bits are ExpertSlots' (train/expert_slots.h):
// the kernels the in-worker MoE block runs, on the same weights, each (micro-batch, slot)
// pair once, its weight gradient from zero.
//
// Versions and epochs. A request of step s is computed with the weights of s train steps:
// one that arrives before them is held (another worker may start the step before the
// worker beside this shard sent it the step's ExpertWeights), one whose weights are already
// newer is of an aborted step and dropped. A message of a newer epoch (a recovery, a
// reshape) starts it over: the pairs of the step in flight, the held requests and the
// slots' versions are forgotten (the weights are sent again in every epoch). A validation
// forward (ExpertForward.evaluate) keeps nothing. Bad input (a backward of a slot not held
// here, rows that do not match the payload, a pair computed twice) is dropped and counted;
// nothing a message says can crash the shard.
//
// With `[parallel] experts = "shards"` the coordinator places expert_shard.i beside
// worker.i, and worker i sends it the weights of its slots at every step
// (actors/worker_experts.cc).
#include "actors/expert_shard.h"

#include <fmt/format.h>

#include <caf/all.hpp>
#include <memory>

#include "actors/roles.h"
#include "config/config_parse.h"
#include "runtime/control.pb.h"
#include "runtime/log.h"
#include "train/expert_slots.h"

namespace troupe::actors {
namespace expert_shard_impl {
namespace {

// The rows of a request: every slot held, in range, and payload 0 exactly their rows.
template <class Request>
Verdict check_rows(const ShardState& s, const Request& r, const ActorMessage& m, int64_t* rows) {
  if (r.moe_layer() < 0 || r.moe_layer() >= s.moe_layers)
    return drop(Drop::malformed, fmt::format("MoE layer {} of {}", r.moe_layer(), s.moe_layers));
  if (r.step() < 0 || r.mb() < 0 || r.slots().empty())
    return drop(Drop::malformed, "a negative step or micro-batch, or no slot");
  *rows = 0;
  for (const train::ExpertRows& e : r.slots()) {
    if (e.slot() < 0) return drop(Drop::malformed, fmt::format("slot {}", e.slot()));
    if (e.rows() < 0 || e.rows() > (int64_t(1) << 31))
      return drop(Drop::malformed, fmt::format("{} rows for slot {}", e.rows(), e.slot()));
    *rows += e.rows();
  }
  const uint64_t want = uint64_t(*rows) * uint64_t(s.cfg.d_model) * sizeof(float);
  if (m.payloads.size() != 1 || m.payloads[0].bytes.size() != want)
    return drop(Drop::malformed, fmt::format("payload is not {} rows of d_model floats", *rows));
  return {};
}

// Computes a forward's rows and answers it. A validation forward (f.evaluate) keeps
// nothing; a train step's keeps each pair's inputs and cache for its backward.
Verdict answer_forward(Self* self, const train::ExpertForward& f, const ActorMessage& m,
                       int64_t rows) {
  auto& s = self->state;
  const int64_t C = s.cfg.d_model;
  std::vector<float> x, y(size_t(rows * C));
  read_payload(m.payloads[0], &x);  // a copy: aligned, whatever the wire's bytes are
  int64_t at = 0;
  for (const train::ExpertRows& e : f.slots()) {
    const float* in = x.data() + at * C;
    float* out = y.data() + at * C;
    if (f.evaluate())
      s.slots->evaluate(f.moe_layer(), e.slot(), in, e.rows(), out);
    else
      s.slots->forward(f.mb(), f.moe_layer(), e.slot(), in, e.rows(), out);
    at += e.rows();
  }
  train::ExpertOutputs out;
  out.set_step(f.step()), out.set_mb(f.mb()), out.set_moe_layer(f.moe_layer());
  out.set_request(f.request());
  reply(self, m.from, expert_outputs_type, out, {owned_payload(std::move(y))});
  return {};
}

Verdict on_forward(Self* self, const train::ExpertForward& f, const ActorMessage& m) {
  auto& s = self->state;
  int64_t rows = 0;
  if (Verdict v = check_rows(s, f, m, &rows)) return v;
  for (const train::ExpertRows& e : f.slots()) {
    const auto it = s.version.find({f.moe_layer(), e.slot()});
    const int64_t have = it == s.version.end() ? -1 : it->second;
    if (have > f.step())
      return drop(Drop::wrong_step, fmt::format("step {}: slot {} holds the weights of step {}",
                                                f.step(), e.slot(), have));
    if (have < f.step()) {  // its weights are on their way (this epoch's first, or newer)
      if (s.held.size() >= held_requests_max)
        return drop(Drop::backlog_full, "forwards waiting for weights");
      s.held.push_back(m);
      return {};
    }
  }
  if (f.evaluate()) return answer_forward(self, f, m, rows);
  if (f.step() < s.step) return drop(Drop::wrong_step, fmt::format("step {}", f.step()));
  if (f.step() > s.step) {
    s.slots->clear_step();
    s.step = f.step();
  }
  for (const train::ExpertRows& e : f.slots())
    if (s.slots->stage(f.mb(), f.moe_layer(), e.slot()) != Stage::none)
      return drop(Drop::duplicate, fmt::format("micro-batch {} of slot {}", f.mb(), e.slot()));
  return answer_forward(self, f, m, rows);
}

Verdict on_backward(Self* self, const train::ExpertBackward& b, const ActorMessage& m) {
  auto& s = self->state;
  int64_t rows = 0;
  if (Verdict v = check_rows(s, b, m, &rows)) return v;
  for (const train::ExpertRows& e : b.slots())
    if (!s.version.count({b.moe_layer(), e.slot()}))
      return drop(Drop::malformed,
                  fmt::format("slot {} of MoE layer {} is not held here", e.slot(), b.moe_layer()));
  if (b.step() != s.step)
    return drop(Drop::wrong_step, fmt::format("step {} while at step {}", b.step(), s.step));
  for (const train::ExpertRows& e : b.slots())
    if (!e.owner().empty() &&
        (e.expert() < 0 || e.expert() >= s.cfg.n_routed_experts || b.mb() >= b.micro_batches()))
      return drop(Drop::malformed, fmt::format("slot {}: expert {} of micro-batch {} of {} for "
                                               "its owner",
                                               e.slot(), e.expert(), b.mb(), b.micro_batches()));
  for (const train::ExpertRows& e : b.slots()) {
    const Stage st = s.slots->stage(b.mb(), b.moe_layer(), e.slot());
    if (st == Stage::backward)
      return drop(Drop::duplicate, fmt::format("micro-batch {} of slot {}", b.mb(), e.slot()));
    if (st == Stage::none || s.slots->rows(b.mb(), b.moe_layer(), e.slot()) != e.rows())
      return drop(Drop::malformed, fmt::format("micro-batch {} of slot {}: not the rows of its "
                                               "forward",
                                               b.mb(), e.slot()));
  }
  const int64_t C = s.cfg.d_model;
  std::vector<float> dy, dx(size_t(rows * C));
  read_payload(m.payloads[0], &dy);
  std::vector<Payload> payloads(1);
  int64_t at = 0;
  for (const train::ExpertRows& e : b.slots()) {
    s.slots->backward(b.mb(), b.moe_layer(), e.slot(), dy.data() + at * C, dx.data() + at * C);
    const std::vector<float>& g = *s.slots->grad(b.mb(), b.moe_layer(), e.slot());
    if (e.owner().empty()) {
      payloads.push_back(owned_payload(g));
    } else {  // to its owner; the worker's payload stays empty
      send_leaf(self, b, e, g);
      payloads.emplace_back();
    }
    at += e.rows();
  }
  payloads[0] = owned_payload(std::move(dx));
  train::ExpertGrads out;
  out.set_step(b.step()), out.set_mb(b.mb()), out.set_moe_layer(b.moe_layer());
  out.set_request(b.request());
  reply(self, m.from, expert_grads_type, out, std::move(payloads));
  return {};
}

void on_message(Self* self, const Dispatcher& table, ActorMessage& m);

Verdict on_weights(Self* self, const train::ExpertWeights& w, const ActorMessage& m) {
  auto& s = self->state;
  if (w.moe_layer() < 0 || w.moe_layer() >= s.moe_layers || w.version() < 0)
    return drop(Drop::malformed,
                fmt::format("MoE layer {}, version {}", w.moe_layer(), w.version()));
  const size_t bytes = size_t(s.slots->expert_size()) * sizeof(float);
  if (m.payloads.size() != size_t(w.slots_size()))
    return drop(Drop::malformed, "not one payload per slot");
  for (int i = 0; i < w.slots_size(); ++i) {
    if (w.slots(i) < 0 || m.payloads[size_t(i)].bytes.size() != bytes)
      return drop(Drop::malformed,
                  fmt::format("slot {}: not 3·moe_inter·d_model floats", w.slots(i)));
    const auto it = s.version.find({w.moe_layer(), w.slots(i)});
    if (it != s.version.end() && it->second > w.version() && m.epoch == s.epoch)
      return drop(Drop::wrong_step,
                  fmt::format("slot {}: version {} after {}", w.slots(i), w.version(), it->second));
  }
  for (int i = 0; i < w.slots_size(); ++i) {
    std::vector<float> values;
    read_payload(m.payloads[size_t(i)], &values);
    s.slots->set_weights(w.moe_layer(), w.slots(i), values);
    s.version[{w.moe_layer(), w.slots(i)}] = w.version();
  }
  return {};
}

std::shared_ptr<Dispatcher> shard_table(Self* self) {
  auto d = std::make_shared<Dispatcher>(type_name);
  d->on<train::ExpertWeights>(expert_weights_type, [self](const auto& w, ActorMessage& m) {
    return on_weights(self, w, m);
  });
  d->on<train::ExpertForward>(expert_forward_type, [self](const auto& f, ActorMessage& m) {
    return on_forward(self, f, m);
  });
  d->on<train::ExpertBackward>(expert_backward_type, [self](const auto& b, ActorMessage& m) {
    return on_backward(self, b, m);
  });
  add_owner_handlers(self, *d);
  return d;
}

void on_message(Self* self, const Dispatcher& table, ActorMessage& m) {
  auto& s = self->state;
  if (m.epoch < s.epoch) {
    s.drops.record(*drop(Drop::stale_epoch, ""), m);
    return;
  }
  if (m.epoch > s.epoch) {  // a new view: the step in flight and what waited for it are gone,
    if (s.answered > 0)
      log::info("{}: {} requests answered in epoch {}", s.ctx.address, s.answered, s.epoch);
    s.answered = 0;
    s.epoch = m.epoch;      // and the slots' weights count only once resent in this epoch
    s.slots->clear_step();  // (the job may have rolled back, the placement changed)
    s.step = -1;
    s.version.clear();
    for (const ActorMessage& h : s.held) s.drops.record(*drop(Drop::stale_epoch, "held"), h);
    s.held.clear();
    owner_new_epoch(s);
  }
  if (Verdict v = table.dispatch(m)) {
    s.drops.record(*v, m);
    return;
  }
  if (m.type != expert_weights_type || s.held.empty()) return;
  std::vector<ActorMessage> held;  // those whose weights are all in now are computed
  held.swap(s.held);
  for (ActorMessage& h : held) on_message(self, table, h);
}

caf::behavior expert_shard(Self* self, runtime::RoleContext ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.drops.set_owner(s.ctx.address);
  self->send(s.ctx.router, runtime::register_atom::value,
             fmt::format("expert_shard.{}", s.ctx.index), caf::actor(self));
  try {
    s.job = model::config_from_text(s.ctx.job.config_text, s.ctx.job.config_name,
                                    s.ctx.job.config_sets);
    s.cfg = s.job.model;
    s.moe_layers = model::moe_layer_count(s.cfg);
    s.slots = std::make_unique<model::ExpertSlots<float>>(s.cfg);
    s.epoch = s.ctx.epoch;
  } catch (const std::exception& e) {
    control::NodeError err;
    err.set_text(fmt::format("{}: {}", s.ctx.address, e.what()));
    reply(self, s.ctx.coordinator, runtime::node_error_type, err, {});
    self->quit();
    return {};
  }
  const std::shared_ptr<Dispatcher> table = shard_table(self);
  return {[=](ActorMessage& m) { on_message(self, *table, m); }};
}

}  // namespace
}  // namespace expert_shard_impl

caf::actor spawn_expert_shard(caf::actor_system& system, const runtime::RoleContext& ctx,
                              bool detached) {
  return detached ? system.spawn<caf::detached>(expert_shard_impl::expert_shard, ctx)
                  : system.spawn(expert_shard_impl::expert_shard, ctx);
}

void register_expert_shard_role() {
  runtime::register_role("expert_shard",
                         [](caf::actor_system& sys, const runtime::RoleContext& ctx) {
                           return spawn_expert_shard(sys, ctx, true);
                         });
}

}  // namespace troupe::actors
