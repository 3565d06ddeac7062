// A rollback with the Engram tables on engram_shard actors (issue 16). When an owner is lost
// with all its buddies, or a shard with every holder that had its tables, the survivors go
// back to the newest checkpoint that verifies (coordinator_membership.cc plan_rollback); the
// holders must go back with them: every holder of the new view (survivors and new ones
// alike) loads its tables and their moments from that checkpoint (EngramSwap with
// `checkpoint`, the manifest as its payload; engram_shard.cc on_rollback). The recovery ends
// when every worker has recovered and every holder has confirmed its load; until then the
// coordinator sends the load again every recover_resend_ms to the holders it has not heard
// from (a new holder's actor may not be registered yet when the first one arrives).
#include <fmt/format.h>

#include "actors/coordinator_state.h"

namespace troupe::actors::coordinator_impl {

namespace {

void send_load(Self* self, const std::string& holder) {
  auto& s = self->state;
  train::EngramSwap w;
  w.set_version(s.core.rollback_to);
  w.set_round(train::EngramSwap::LOAD);
  w.set_checkpoint(true);
  ActorMessage m = make_message(s.self_address, holder, engram_swap_type, w);
  m.epoch = s.core.epoch;
  m.payloads.push_back(runtime::text_payload(s.engram.rollback_manifest));
  self->send(s.router, std::move(m));
}

}  // namespace

std::string engram_holders_lost(Self* self) {
  const EngramShards& e = self->state.engram;
  if (!engram_sharded(self)) return "";
  for (size_t k = 0; k < e.holders.size(); ++k) {
    bool kept = false;
    for (const std::string& n : e.holders[k])
      kept = kept || (engram_home_in_view(self, n) && !e.awaiting.count({int64_t(k), n}));
    if (!kept && !e.holders[k].empty())
      return fmt::format("engram_shard.{} lost every holder of its tables (the last on {})", k,
                         e.holders[k].back());
  }
  return "";
}

void send_engram_rollback(Self* self, const std::string& manifest) {
  auto& s = self->state;
  EngramShards& e = s.engram;
  if (!engram_sharded(self) || s.core.rollback_to < 0) return;
  e.rollback_manifest = manifest;
  e.rollback_waiting = std::set<std::string>(e.flat.begin(), e.flat.end());
  e.rollback_sent = now(self);
  for (const std::string& holder : e.flat) send_load(self, holder);
}

void resend_engram_rollback(Self* self, time_point t) {
  EngramShards& e = self->state.engram;
  if (e.rollback_waiting.empty() || t - e.rollback_sent < ms(recover_resend_ms)) return;
  e.rollback_sent = t;
  for (const std::string& holder : e.rollback_waiting) send_load(self, holder);
}

bool engram_rollback_done(Self* self) {
  return self->state.engram.rollback_waiting.empty();
}

Verdict on_engram_rollback_loaded(Self* self, const train::EngramSwapped& w,
                                  const ActorMessage& m) {
  auto& s = self->state;
  if (!w.checkpoint()) return drop(Drop::wrong_phase, "a table set swap during a recovery");
  if (!s.engram.rollback_waiting.erase(m.from))
    return drop(Drop::duplicate, "a rollback load not waited for");
  if (!w.ok()) {
    fail(self, fmt::format("{} could not load its Engram tables from the checkpoint of step {} "
                           "for the rollback: {}",
                           m.from, s.core.rollback_to, w.error()));
    return {};
  }
  if (s.engram.rollback_waiting.empty() && s.core.recovered.complete()) finish_recovery(self);
  return {};
}

}  // namespace troupe::actors::coordinator_impl
