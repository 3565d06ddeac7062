// The coordinator actor: its lifecycle phases as behaviours, one dispatcher per phase over
// the message types that phase takes, the one rule for dropped messages, and the end of the
// job — which always reports through on_done, a throw included (the exception handler).
#include "actors/coordinator.h"

#include <fmt/format.h>

#include <caf/all.hpp>
#include <exception>
#include <nlohmann/json.hpp>
#include <utility>

#include "actors/coordinator_state.h"
#include "runtime/control.pb.h"
#include "runtime/refusals.h"

namespace troupe::actors {

namespace coordinator_impl {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::joining:
      return "joining";
    case Phase::starting:
      return "starting";
    case Phase::running:
      return "running";
    case Phase::recovering:
      return "recovering";
    case Phase::resizing:
      return "resizing";
    case Phase::finishing:
      return "finishing";
    case Phase::done:
      return "done";
    case Phase::rejoining:
      return "rejoining";
  }
  return "?";
}

void event(Self* self, const std::string& kind, const std::string& text, nlohmann::json fields) {
  fields["epoch"] = self->state.core.epoch;
  if (!fields.contains("step")) fields["step"] = self->state.drv.committed;
  if (self->state.opt.on_event) self->state.opt.on_event(kind, text, fields);
}

void to_all_workers(Self* self, uint32_t type, const google::protobuf::Message& body,
                    const std::vector<runtime::Payload>& payloads) {
  for (const std::string& w : self->state.core.workers) {
    ActorMessage m = make_message(self->state.self_address, w, type, body);
    m.payloads = payloads;
    self->send(self->state.router, std::move(m));
  }
}

Verdict check_worker(Self* self, int64_t index, const ActorMessage& m) {
  const auto& workers = self->state.core.workers;
  if (index < 0 || index >= int64_t(workers.size()) || workers[size_t(index)] != m.from)
    return drop(Drop::unknown_sender, fmt::format("worker index {} is not {}", index, m.from));
  return {};
}

namespace {

void shutdown_nodes(Self* self, const std::string& reason) {
  control::Shutdown sd;
  sd.set_reason(reason);
  for (const NodeInfo* n : heard_nodes(self))
    send_to(self, n->id + "/agent.0", runtime::shutdown_type, sd);
}

}  // namespace

void end_job(Self* self, JobResult result) {
  auto& s = self->state;
  if (std::exchange(s.ending, true)) return;
  s.core.phase = Phase::done;
  shutdown_nodes(self, result.ok ? "the job ended" : result.error);
  result.dropped = s.drops.counts();
  if (s.drops.total() > 0)
    event(self, "dropped",
          fmt::format("messages dropped over the job (coordinator and workers): {}",
                      s.drops.summary()));
  if (!result.ok) event(self, "job_failed", result.error, {{"reason", result.error}});
  s.reported = true;
  if (s.opt.on_done) s.opt.on_done(result);
  self->quit();
}

void fail(Self* self, const std::string& why) {
  JobResult r;
  r.error = why;
  r.steps_done = self->state.drv.step;
  end_job(self, std::move(r));
}

}  // namespace coordinator_impl

namespace {

using namespace coordinator_impl;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using control_atom = caf::atom_constant<caf::atom("control")>;
using status_atom = caf::atom_constant<caf::atom("status")>;

// The membership's messages, taken in every phase, and the core's by phase.
void add_core_handlers(Self* self, Phase p, Dispatcher& d) {
  d.on<control::Join>(runtime::join_type, [self](const control::Join& j, ActorMessage& m) {
    on_join(self, j, m);
    return Verdict{};
  });
  d.on<control::Heartbeat>(runtime::heartbeat_type,
                           [self](const control::Heartbeat&, ActorMessage& m) {
                             note_rejoined(self, std::string(runtime::node_of(m.from)), m);
                             return Verdict{};
                           });
  d.on<control::Rejoin>(runtime::rejoin_type, [self](const control::Rejoin& r, ActorMessage& m) {
    on_rejoin(self, r, m);
    return Verdict{};
  });
  d.on<control::NodeError>(runtime::node_error_type,
                           [self](const control::NodeError& e, ActorMessage&) {
                             fail(self, e.text());
                             return Verdict{};
                           });
  if (p == Phase::starting)
    d.on<train::Ready>(ready_type, [self](const train::Ready& r, ActorMessage& m) {
      return on_ready(self, r, m);
    });
  if (p == Phase::running || p == Phase::recovering)  // newcomers on standby
    d.on<train::Ready>(ready_type, [self](const train::Ready& r, ActorMessage& m) {
      return on_standby_ready(self, r, m);
    });
  if (p == Phase::resizing)
    d.on<train::Recovered>(recovered_type, [self](const train::Recovered& r, ActorMessage& m) {
      return on_reshaped(self, r, m);
    });
  if (p == Phase::running || p == Phase::recovering || p == Phase::resizing ||
      p == Phase::finishing)
    d.on<train::CheckpointWritten>(checkpoint_written_type,
                                   [self](const train::CheckpointWritten& w, ActorMessage& m) {
                                     return on_checkpoint_written(self, w, m);
                                   });
  if (p == Phase::running)
    d.on<train::EngramSwapped>(engram_swapped_type,
                               [self](const train::EngramSwapped& w, ActorMessage& m) {
                                 return on_engram_swapped(self, w, m);
                               });
  if (p == Phase::recovering) {
    d.on<train::Recovered>(recovered_type, [self](const train::Recovered& r, ActorMessage& m) {
      return on_recovered(self, r, m);
    });
    d.on<train::EngramSwapped>(engram_swapped_type,
                               [self](const train::EngramSwapped& w, ActorMessage& m) {
                                 return on_engram_rollback_loaded(self, w, m);
                               });
  }
}

void on_message(Self* self, const Dispatcher& table, ActorMessage& m) {
  auto& s = self->state;
  for (NodeInfo* n : heard_nodes(self))
    if (n->id == runtime::node_of(m.from)) n->last_heard = now(self);
  // A role's message from before the last view change: the step it belongs to was
  // aborted (the fabric drops these too, once the router has passed the new epoch on).
  const Verdict v = m.type >= runtime::control_types_end && m.epoch < s.core.epoch
                        ? drop(Drop::stale_epoch, fmt::format("{} < {}", m.epoch, s.core.epoch))
                        : table.dispatch(m);
  if (!v) return;
  const std::string first = s.drops.record(*v, m);
  if (!first.empty())
    event(self, "dropped", first, {{"reason", runtime::drop_name(v->reason)}, {"from", m.from}});
}

// A connection or message this process refused (the router's throttled report): an event
// with its typed fields, so that a machine reading events.jsonl sees who knocked and why.
void on_refused(Self* self, const runtime::ConnectionRefusal& r) {
  nlohmann::json f = {{"cause", r.cause}, {"reason", r.reason}, {"peer_address", r.peer_address}};
  if (!r.node.empty()) f["node"] = r.node;
  if (r.pid != 0) f["pid"] = r.pid;
  if (r.evicted_epoch != 0) f["evicted_epoch"] = r.evicted_epoch;
  if (r.more != 0) f["more"] = r.more, f["window_ms"] = r.window_ms;
  event(self, "connection_refused", runtime::refusal_text(r), f);
}

caf::behavior phase_behavior(Self* self, Phase p) {
  auto table = std::make_shared<Dispatcher>(type_name);
  add_core_handlers(self, p, *table);
  add_driver_handlers(self, p, *table);
  return {
      [=](ActorMessage& m) { on_message(self, *table, m); },
      [=](runtime::tick_atom) { on_tick(self); },
      [=](runtime::node_down_atom, const std::string& node, const std::string& why) {
        lose_node(self, node, why, false);
      },
      [=](stop_atom, const std::string& why) { fail(self, why); },
      [=](runtime::refused_atom, const runtime::ConnectionRefusal& r) { on_refused(self, r); },
      [=](control_atom, const std::string& kind, int64_t nodes,
          const std::string& node) -> caf::message {
        int64_t start = 0;
        const std::string why = on_control(self, kind, nodes, node, &start);
        return caf::make_message(why, start);
      },
      [=](status_atom) { return status_json(self); },
  };
}

// Whatever a handler throws ends the job with the error, reported through on_done: never
// a dead coordinator that launch waits for.
caf::error on_exception(Self* self, std::exception_ptr& e) {
  std::string what = "an unknown exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    what = x.what();
  } catch (...) {
  }
  const std::string why = fmt::format("the coordinator stopped on an error in phase {}: {}",
                                      phase_name(self->state.core.phase), what);
  try {
    fail(self, why);
  } catch (...) {  // a callback threw again: report the first error without the extras
    auto& s = self->state;
    JobResult r;
    r.error = why;
    if (!std::exchange(s.reported, true) && s.opt.on_done) s.opt.on_done(r);
  }
  return caf::make_error(caf::sec::runtime_error);
}

caf::behavior coordinator(Self* self, caf::actor router, CoordinatorOptions options) {
  auto& s = self->state;
  self->set_exception_handler([self](std::exception_ptr& e) { return on_exception(self, e); });
  s.opt = std::move(options);
  s.router = router;
  s.commit_log = s.opt.commit_log ? s.opt.commit_log : std::make_shared<InMemoryCommitLog>();
  s.drv.n_mb = s.opt.config.train.batch_size / s.opt.config.train.micro_batch_rows;
  s.drv.step = s.drv.committed = s.opt.resume_step;
  if (!s.opt.engram_stack.empty()) s.engram_sets.stack = s.engram_sets.base = s.opt.engram_stack;
  s.core.started = s.core.last_tick = now(self);
  self->send(router, runtime::register_atom::value, std::string("coordinator.0"), caf::actor(self));
  self->send(router, runtime::watch_atom::value, caf::actor(self));
  self->send(router, runtime::refusals_atom::value, caf::actor(self));
  self->send(self, runtime::tick_atom::value);
  if (s.opt.restart) {
    begin_rejoin(self);
    return phase_behavior(self, Phase::rejoining);
  }
  return phase_behavior(self, Phase::joining);
}

}  // namespace

namespace coordinator_impl {

void enter_phase(Self* self, Phase p) {
  self->state.core.phase = p;
  if (p != Phase::done) self->become(phase_behavior(self, p));
}

}  // namespace coordinator_impl

caf::actor spawn_coordinator(caf::actor_system& system, caf::actor router,
                             CoordinatorOptions options) {
  if (options.own_thread)
    return system.spawn<caf::detached>(coordinator, std::move(router), std::move(options));
  return system.spawn(coordinator, std::move(router), std::move(options));
}

caf::actor spawn_coordinator(runtime::Host& host, CoordinatorOptions options) {
  return spawn_coordinator(host.actor_system(), host.router(), std::move(options));
}

void request_stop(const caf::actor& coordinator, const std::string& why) {
  caf::anon_send(coordinator, stop_atom::value, why);
}

void tell_node_lost(const caf::actor& coordinator, const std::string& node,
                    const std::string& why) {
  caf::anon_send(coordinator, runtime::node_down_atom::value, node, why);
}

ControlAnswer ask_coordinator(caf::actor_system& system, const caf::actor& coordinator,
                              const std::string& kind, int64_t nodes, const std::string& node) {
  ControlAnswer a;
  a.error = "the coordinator did not answer within 5 s";
  caf::scoped_actor self{system};
  self->request(coordinator, std::chrono::seconds(5), control_atom::value, kind, nodes, node)
      .receive(
          [&](const std::string& why, int64_t start) {
            a.error = why;
            a.start_nodes = start;
          },
          [&](const caf::error& e) { a.error = "the coordinator: " + system.render(e); });
  return a;
}

void ask_coordinator_then(caf::actor_system& system, const caf::actor& coordinator,
                          const std::string& kind, int64_t nodes, const std::string& node,
                          std::function<void(const ControlAnswer&)> done) {
  system.spawn([=](caf::event_based_actor* self) {
    self->request(coordinator, std::chrono::seconds(5), control_atom::value, kind, nodes, node)
        .then(
            [=](const std::string& why, int64_t start) {
              done(ControlAnswer{why, start});
            },
            [=](const caf::error& e) {
              done(ControlAnswer{"the coordinator: " + self->system().render(e), 0});
            });
  });
}

std::string coordinator_status(caf::actor_system& system, const caf::actor& coordinator) {
  std::string out;
  caf::scoped_actor self{system};
  self->request(coordinator, std::chrono::seconds(5), status_atom::value)
      .receive([&](const std::string& json) { out = json; },
               [&](const caf::error& e) {
                 out = nlohmann::json{{"error", "the coordinator: " + system.render(e)}}.dump();
               });
  return out;
}

}  // namespace troupe::actors
