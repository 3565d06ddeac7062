#include "runtime/node_agent.h"

#include <fmt/format.h>

#include <caf/all.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "runtime/control.pb.h"
#include "runtime/dispatch.h"
#include "runtime/liveness.h"
#include "runtime/log.h"
#include "runtime/roles.h"
#include "runtime/router.h"
#include "runtime/step_hook.h"

namespace troupe::runtime {

namespace {

using join_deadline_atom = caf::atom_constant<caf::atom("joindead")>;

struct AgentState {
  NodeAgentOptions options;
  caf::actor router;
  std::string node_id, coordinator_node;
  uint64_t epoch = 0, heartbeats = 0;
  std::chrono::milliseconds coordinator_timeout{0};  // from the Welcome; 0: never
  std::chrono::milliseconds heartbeat_timeout{0};    // from the Welcome; 0: not known
  std::chrono::steady_clock::time_point coordinator_heard, last_tick, last_late_log;
  JobSpec job;
  bool welcomed = false, exited = false;
  // Lost the coordinator: trying to rejoin a restarted one (NodeAgentOptions::rejoin).
  bool orphaned = false;
  std::chrono::steady_clock::time_point orphaned_at, last_rejoin;
  // Views that overtook the Welcome (a Welcome with a payload, the manifest of a resumed
  // job, goes by rendezvous; a View is small and eager): replayed once welcomed.
  std::vector<ActorMessage> before_welcome;
  std::map<std::string, caf::actor> roles;  // "role.index" → actor
  std::set<std::string> view_nodes;         // the nodes of the last view
  DropLog drops{"node agent"};              // what it dropped (dispatch.h), said at exit
  static inline const char* name = "node_agent";
};
using Self = caf::stateful_actor<AgentState>;

void finish(Self* self, int code, const std::string& why) {
  auto& s = self->state;
  if (s.exited) return;
  s.exited = true;
  for (auto& [name, actor] : s.roles) self->send_exit(actor, caf::exit_reason::user_shutdown);
  const std::string dropped =
      s.drops.total() == 0 ? "" : " (the agent dropped messages: " + s.drops.summary() + ")";
  if (s.options.on_exit) s.options.on_exit(code, why + dropped);
  self->quit();
}

template <class Proto>
void to_coordinator(Self* self, uint32_t type, const Proto& body) {
  ActorMessage m;
  m.from = self->state.node_id + "/agent.0";
  m.to = self->state.coordinator_node + "/coordinator.0";
  m.type = type;
  m.header = body.SerializeAsString();
  self->send(self->state.router, std::move(m));
}

void on_view(Self* self, const control::View& view) {
  auto& s = self->state;
  if (view.epoch() > s.epoch) {
    s.epoch = view.epoch();
    self->send(s.router, epoch_atom::value, s.epoch);
  }
  raise_node_epoch(s.epoch);
  std::set<std::string> listed;
  for (const auto& n : view.nodes()) {
    listed.insert(n.node_id());
    if (n.node_id() != s.node_id)
      self->send(s.router, address_atom::value, n.node_id(), n.address());
  }
  for (const std::string& gone : s.view_nodes)  // dropped from the view: lost, or it left
    if (!listed.count(gone)) self->send(s.router, evict_atom::value, gone, view.epoch());
  s.view_nodes = std::move(listed);
  std::map<std::string, std::vector<std::string>> peers;  // role → addresses by index
  for (const auto& p : view.placement()) {
    auto& list = peers[p.role()];
    if (list.size() <= size_t(p.index())) list.resize(size_t(p.index()) + 1);
    list[size_t(p.index())] = make_address(p.node_id(), p.role(), p.index());
  }
  for (const auto& p : view.placement()) {
    if (p.node_id() != s.node_id) continue;
    const std::string local = fmt::format("{}.{}", p.role(), p.index());
    if (s.roles.count(local)) continue;
    const RoleFactory* factory = find_role(p.role());
    if (!factory) {
      control::NodeError e;
      e.set_text(fmt::format("node {} has no role '{}' (this binary does not know it)", s.node_id,
                             p.role()));
      to_coordinator(self, node_error_type, e);
      return finish(self, 1, e.text());
    }
    RoleContext ctx;
    ctx.router = s.router;
    ctx.node_id = s.node_id;
    ctx.address = make_address(s.node_id, p.role(), p.index());
    ctx.index = p.index();
    ctx.peers = peers[p.role()];
    ctx.coordinator = s.coordinator_node + "/coordinator.0";
    ctx.job = s.job;
    ctx.epoch = s.epoch;
    ctx.threads = s.options.role_threads;
    try {
      s.roles[local] = (*factory)(self->system(), ctx);
    } catch (const std::exception& ex) {
      control::NodeError e;
      e.set_text(fmt::format("{} failed to start: {}", ctx.address, ex.what()));
      to_coordinator(self, node_error_type, e);
      return finish(self, 1, e.text());
    }
  }
}

Verdict on_welcome(Self* self, const control::Welcome& w, ActorMessage& m) {
  auto& s = self->state;
  if (s.welcomed) return drop(Drop::duplicate, "already welcomed");
  control::WelcomeJob job;
  if (m.payloads.size() != (w.resume() ? 2u : 1u) ||
      !job.ParseFromString(payload_text(m.payloads[0])))
    return drop(Drop::malformed, "a Welcome without its job (and manifest, when resumed)");
  s.welcomed = true;
  s.node_id = w.node_id();
  s.drops.set_owner("node " + s.node_id);
  log::set_log_node(s.node_id);
  s.coordinator_node = std::string(node_of(m.from));
  s.job.config_text = job.config_text();
  s.job.config_name = w.config_name();
  s.job.config_sets.assign(job.config_sets().begin(), job.config_sets().end());
  s.job.run_dir = w.run_dir();
  if (w.resume()) s.job.resume_manifest = payload_text(m.payloads[1]);
  if (s.options.read_fault_tolerance) {
    Result<FaultToleranceConfig> ft = s.options.read_fault_tolerance(s.job);
    if (!ft.ok()) {
      finish(self, 1, "the job's config: " + ft.status().message());
      return {};
    }
    s.options.heartbeat_interval = std::chrono::milliseconds(ft.value().heartbeat_interval_ms);
    s.coordinator_timeout = std::chrono::milliseconds(ft.value().coordinator_timeout_ms);
    s.heartbeat_timeout = std::chrono::milliseconds(ft.value().heartbeat_timeout_ms);
  }
  s.coordinator_heard = s.last_tick = self->clock().now();
  self->send(s.router, node_id_atom::value, s.node_id);
  self->send(s.router, bind_atom::value, s.coordinator_node, m.peer);
  self->send(s.router, epoch_atom::value, w.epoch());
  s.epoch = w.epoch();
  raise_node_epoch(s.epoch);
  log::info("joined as node {} (epoch {})", s.node_id, s.epoch);
  self->send(self, tick_atom::value);
  return {};
}

// Views held until the Welcome: a few at most (each join before the placement is one).
constexpr size_t views_before_welcome_max = 16;

// Only the coordinator speaks to the agent, and only once it has welcomed this node.
Verdict from_coordinator(const AgentState& s, const ActorMessage& m) {
  if (!s.welcomed) return drop(Drop::wrong_phase, "not welcomed yet");
  if (node_of(m.from) != s.coordinator_node)
    return drop(Drop::unknown_sender, "not the coordinator");
  return {};
}

// The coordinator ends this node: the job ended or it was drained (status 0), or it was
// evicted (exit_status_evicted: the job went on without it). Before the Welcome, a
// coordinator that refuses this node says so with a Shutdown: the only peer yet is the one
// we joined.
Verdict on_shutdown(Self* self, const control::Shutdown& sd, const ActorMessage& m) {
  if (self->state.welcomed)
    if (Verdict no = from_coordinator(self->state, m)) return no;
  if (sd.evicted_epoch() == 0)
    finish(self, 0, sd.reason());
  else
    finish(self, exit_status_evicted,
           fmt::format("evicted at epoch {}: {}", sd.evicted_epoch(), sd.reason()));
  return {};
}

std::shared_ptr<Dispatcher> agent_table(Self* self) {
  auto d = std::make_shared<Dispatcher>();
  d->on<control::Welcome>(welcome_type, [self](const control::Welcome& w, ActorMessage& m) {
    return on_welcome(self, w, m);
  });
  d->on<control::View>(view_type, [self](const control::View& v, ActorMessage& m) -> Verdict {
    auto& s = self->state;
    if (!s.welcomed && s.before_welcome.size() < views_before_welcome_max) {
      s.before_welcome.push_back(m);
      return {};
    }
    if (Verdict no = from_coordinator(self->state, m)) return no;
    on_view(self, v);
    return {};
  });
  d->on<control::Heartbeat>(heartbeat_type, [self](const control::Heartbeat&, ActorMessage& m) {
    return from_coordinator(self->state, m);  // the coordinator is alive: noted on arrival
  });
  d->on<control::Shutdown>(shutdown_type,
                           [self](const control::Shutdown& sd, ActorMessage& m) -> Verdict {
                             return on_shutdown(self, sd, m);
                           });
  return d;
}

void on_message(Self* self, const Dispatcher& table, ActorMessage& m) {
  auto& s = self->state;
  if (s.welcomed && node_of(m.from) == s.coordinator_node) {
    s.coordinator_heard = self->clock().now();
    if (std::exchange(s.orphaned, false))
      log::info(
          "rejoined the restarted coordinator after {} ms",
          std::chrono::duration_cast<std::chrono::milliseconds>(s.coordinator_heard - s.orphaned_at)
              .count());
  }
  if (Verdict dropped = table.dispatch(m)) s.drops.record(*dropped, m);
  if (!s.welcomed || s.before_welcome.empty()) return;
  std::vector<ActorMessage> held;
  held.swap(s.before_welcome);
  for (ActorMessage& h : held) on_message(self, table, h);
}

// Reconnects to the coordinator's address (a restarted coordinator listens where the lost one
// did) and says this node is back; the coordinator's first message ends the orphan state.
void try_rejoin(Self* self) {
  auto& s = self->state;
  s.last_rejoin = self->clock().now();
  self->send(s.router, forget_atom::value, s.coordinator_node);
  self->send(s.router, address_atom::value, s.coordinator_node, s.options.coordinator_address);
  control::Rejoin r;
  r.set_node_id(s.node_id);
  r.set_address(s.options.listen_address);
  r.set_pid(s.options.pid);
  r.set_epoch(s.epoch);
  to_coordinator(self, rejoin_type, r);
}

// A heartbeat that leaves late (the process was not scheduled, or its scheduler's threads
// were busy) is what makes a coordinator declare a live node dead: said in the node's log,
// at most every 10 s, so that such a death can be told from a real hang afterwards.
void log_late_tick(AgentState& s, steady::time_point now) {
  const auto late = now - s.last_tick - s.options.heartbeat_interval;
  const auto timeout = s.heartbeat_timeout;
  if (!s.welcomed || timeout.count() == 0 || late < timeout / 4 ||
      now - s.last_late_log < std::chrono::seconds(10))
    return;
  s.last_late_log = now;
  log::warn(
      "this node's heartbeat left {} ms late (every {} ms; the coordinator declares a "
      "node dead after {} ms of silence): the process was not scheduled or its threads "
      "were busy",
      std::chrono::duration_cast<std::chrono::milliseconds>(late).count(),
      s.options.heartbeat_interval.count(), timeout.count());
}

caf::behavior agent(Self* self, caf::actor router, NodeAgentOptions options) {
  self->state.options = std::move(options);
  self->state.router = router;
  self->send(router, register_atom::value, std::string("agent.0"), caf::actor(self));
  self->send(router, watch_atom::value, caf::actor(self));
  self->send(router, connect_atom::value, self->state.options.coordinator_address);
  self->delayed_send(self, self->state.options.join_timeout, join_deadline_atom::value);
  const std::shared_ptr<Dispatcher> table = agent_table(self);
  return {
      [=](ActorMessage& m) { on_message(self, *table, m); },
      [=](tick_atom) {
        auto& s = self->state;
        // This node's own pause is not the coordinator's silence.
        const auto now = self->clock().now();
        log_late_tick(s, now);
        if (own_pause(s.last_tick, now, s.options.heartbeat_interval, s.coordinator_timeout) >
            steady::duration::zero())
          s.coordinator_heard = now;
        if (s.coordinator_timeout.count() > 0 && now - s.coordinator_heard > s.coordinator_timeout)
          return finish(self, 1,
                        fmt::format("the coordinator has sent nothing for {} ms (hung?): this "
                                    "node leaves (fault_tolerance.coordinator_timeout_ms)",
                                    s.coordinator_timeout.count()));
        if (s.orphaned && now - s.last_rejoin >= s.options.rejoin_interval) try_rejoin(self);
        control::Heartbeat hb;
        hb.set_sequence(++s.heartbeats);
        to_coordinator(self, heartbeat_type, hb);
        self->delayed_send(self, s.options.heartbeat_interval, tick_atom::value);
      },
      [=](join_deadline_atom) {
        auto& s = self->state;
        if (!s.welcomed)
          finish(self, 1,
                 fmt::format("could not join {}: no welcome within {} ms (is it a troupe "
                             "coordinator, and is it still starting?)",
                             s.options.coordinator_address, s.options.join_timeout.count()));
      },
      [=](node_down_atom, const std::string& node, const std::string& why) {
        auto& s = self->state;
        if (!s.welcomed)
          return finish(self, 1,
                        fmt::format("could not join {}: {}", s.options.coordinator_address, why));
        if ((node.empty() || node == s.coordinator_node) && s.orphaned) return;  // a try failed
        if ((node.empty() || node == s.coordinator_node) && !s.options.rejoin)
          return finish(self, 1, fmt::format("lost the coordinator: {}", why));
        if (node.empty() || node == s.coordinator_node) {
          s.orphaned = true;
          s.orphaned_at = self->clock().now();
          log::warn(
              "lost the coordinator ({}): its roles go on; rejoining a restarted one at {} "
              "for up to {} ms",
              why, s.options.coordinator_address, s.coordinator_timeout.count());
          return try_rejoin(self);
        }
        log::warn("node {} is down: {}", node, why);
      },
  };
}

}  // namespace

caf::actor spawn_node_agent(Host& host, NodeAgentOptions options) {
  return host.actor_system().spawn(agent, host.router(), std::move(options));
}

}  // namespace troupe::runtime
