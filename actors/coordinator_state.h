// The coordinator's state and what its two files share (coordinator.cc: the step protocol
// and the actor; coordinator_membership.cc: joins, the view, lost nodes and recovery).
// Internal to actors/.
#pragma once

#include <caf/all.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "actors/protocol.h"

namespace troupe::actors::coordinator_impl {

using runtime::ActorMessage;
using clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

struct NodeInfo {
  std::string id, address;
  uint32_t pid = 0;  // the node's process id, as its Hello said (0: not said)
  runtime::PeerId peer = runtime::peer_none;
  clock::time_point last_heard;
};

enum class Phase { joining, starting, running, recovering, finishing, done };

struct CoordinatorState {
  CoordinatorOptions opt;
  caf::actor router;
  std::string self_address = "n0/coordinator.0";
  Phase phase = Phase::joining;
  clock::time_point started = clock::now();
  clock::time_point last_tick = clock::now();  // the heartbeat check before this one
  uint64_t heartbeats = 0;  // sent to the nodes, one per check (heartbeat_interval_ms)
  uint64_t epoch = 0;
  std::vector<NodeInfo> nodes;
  int64_t joins = 0;                 // nodes that ever joined: their ids are n1, n2, ...
  std::vector<std::string> workers;  // addresses by index; worker i lives on nodes[i]
  std::vector<int64_t> role_index;   // worker i's role index (its name; kept across recoveries)
  int64_t n_mb = 0;
  // Readiness and the step in flight.
  std::vector<bool> ready_from;  // by worker index, while starting
  // Nodes lost while the workers start: recovered from (at step 0) once the others are ready.
  struct StartLoss {
    std::string node, why;
    bool hung = false;
  };
  std::vector<StartLoss> start_losses;
  int64_t state_floats_max = 0, state_floats_total = 0;  // from the workers' Ready
  int64_t parameters = 0;                                // from the workers' Ready
  uint64_t initial_hash = 0;
  int64_t step = 0;
  int64_t committed = 0;  // train steps every worker applied (StepDone from all)
  int64_t recovered_in = 0, recoveries = 0;
  std::vector<bool> recovered;             // by new worker index, during a recovery
  std::vector<std::string> recovery_base;  // the workers of the view a recovery started from
  clock::time_point step_started, recovery_started;
  std::vector<model::Piece<float>> pieces;
  int64_t stats_in = 0, norms_in = 0, done_in = 0, val_in = 0, finals_in = 0;
  std::vector<std::vector<double>> norm_parts;  // by worker (owner order = table order)
  std::vector<double> engram_sumsq;             // by worker: each reduced all the tables
  std::vector<model::Piece<float>> val_pieces;
  StepReport report;
  JobResult result;
  uint64_t rejected = 0, stale = 0;
  static inline const char* name = "coordinator";
};
using Self = caf::stateful_actor<CoordinatorState>;

void event(Self* self, const std::string& kind, const std::string& text);

template <class Proto>
void send_to(Self* self, const std::string& to, uint32_t type, const Proto& body,
             std::vector<runtime::Payload> payloads = {}) {
  ActorMessage m = make_message(self->state.self_address, to, type, body);
  m.payloads = std::move(payloads);
  self->send(self->state.router, std::move(m));
}

void to_all_workers(Self* self, uint32_t type, const google::protobuf::Message& body,
                    const std::vector<runtime::Payload>& payloads = {});
void fail(Self* self, const std::string& why);
void begin_step(Self* self, train::Kind kind);
// The next training step, or the end of the job (Finish to every worker) after the last.
void start_or_finish(Self* self);

// coordinator_membership.cc
void bump_epoch(Self* self);
void publish_view(Self* self);
void on_join(Self* self, const ActorMessage& m);
void lose_node(Self* self, const std::string& node, const std::string& why, bool hung);
void on_recovered(Self* self, const train::Recovered& r);
void on_ready(Self* self, const train::Ready& r);
void try_start(Self* self);

}  // namespace troupe::actors::coordinator_impl
