// The expert_shard role's state and the pieces its two files share (expert_shard.cc: the
// slots, forward and backward; expert_shard_owner.cc: the experts it owns). Internal to
// actors/.
#pragma once

#include <fmt/format.h>

#include <caf/all.hpp>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "actors/dispatch.h"
#include "actors/protocol.h"
#include "config/job_config.h"
#include "runtime/log.h"
#include "runtime/roles.h"
#include "train/expert_owner.h"
#include "train/expert_slots.h"

namespace troupe::actors::expert_shard_impl {

using runtime::ActorMessage;
using runtime::Payload;
using Stage = model::ExpertSlots<float>::Stage;

// Requests held until their weights arrive: a step's forwards of every worker, at most.
inline constexpr size_t held_requests_max = 4096;

struct ShardState {
  runtime::RoleContext ctx;
  model::ModelConfig cfg;
  model::JobConfig job;  // the owned experts' optimizer and schedule
  std::unique_ptr<model::ExpertSlots<float>> slots;
  // The experts this shard owns (ExpertOwn), with their replicas' shards and slots, and
  // whether the step in flight's clipping parts went to the coordinator.
  std::unique_ptr<model::ExpertOwner> owner;
  std::map<model::ExpertId, train::ExpertReplicas> replicas;
  bool norm_sent = false;
  int64_t applied = -1;  // the last step the owner applied
  int64_t moe_layers = 0;
  uint64_t epoch = 0;
  int64_t step = -1;                                       // the step whose pairs `slots` keeps
  std::map<std::pair<int64_t, int64_t>, int64_t> version;  // (MoE layer, slot) → train steps
  std::vector<ActorMessage> held;                          // forwards waiting for weights
  DropLog drops{"", type_name};
  int64_t answered = 0;  // requests answered in this epoch (its first one is logged)
  static inline const char* name = "expert_shard";
};
using Self = caf::stateful_actor<ShardState>;

template <class Proto>
void reply(Self* self, const std::string& to, uint32_t type, const Proto& body,
           std::vector<Payload> payloads) {
  if (type != runtime::node_error_type && self->state.answered++ == 0)
    log::info("{}: serving the experts of epoch {} (first answer: {} to {})",
              self->state.ctx.address, self->state.epoch, type_name(type), to);
  ActorMessage m = make_message(self->state.ctx.address, to, type, body);
  m.epoch = self->state.epoch;
  m.payloads = std::move(payloads);
  self->send(self->state.ctx.router, std::move(m));
}

// The owner's handlers (expert_shard_owner.cc): ExpertOwn, ExpertLeaf, ExpertRowsNote, Apply.
void add_owner_handlers(Self* self, Dispatcher& d);
// A new epoch: the owner's step in flight is given up (its experts stay owned).
void owner_new_epoch(ShardState& s);
// Sends a slot's weight gradient to its owner (an ExpertBackward slot naming one).
void send_leaf(Self* self, const train::ExpertBackward& b, const train::ExpertRows& e,
               std::vector<float> grad);

}  // namespace troupe::actors::expert_shard_impl
