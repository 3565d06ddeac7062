// The coordinator's membership: nodes joining, the view (epoch, nodes, placement), the
// workers getting ready, and a node lost after every node joined: the survivors return to
// the committed step under a new epoch, take over its share and re-run the step
// (worker_recovery.cc is the workers' side).
#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "actors/coordinator_state.h"
#include "model/engram.h"
#include "runtime/control.pb.h"

namespace troupe::actors::coordinator_impl {

void bump_epoch(Self* self) {
  ++self->state.epoch;
  self->send(self->state.router, runtime::epoch_atom::value, self->state.epoch);
}

void publish_view(Self* self) {
  auto& s = self->state;
  control::View v;
  v.set_epoch(s.epoch);
  for (const NodeInfo& n : s.nodes) {
    auto* e = v.add_nodes();
    e->set_node_id(n.id), e->set_address(n.address);
  }
  for (size_t i = 0; i < s.workers.size(); ++i) {
    auto* p = v.add_placement();
    p->set_role("worker"), p->set_index(s.role_index[i]), p->set_node_id(s.nodes[i].id);
  }
  for (const NodeInfo& n : s.nodes) send_to(self, n.id + "/agent.0", runtime::view_type, v);
  event(self, "view", fmt::format("epoch {}: {} nodes, one worker each", s.epoch, s.nodes.size()));
}

void on_join(Self* self, const ActorMessage& m) {
  auto& s = self->state;
  if (s.phase != Phase::joining) {
    control::Shutdown sd;
    sd.set_reason(fmt::format("the job already has its {} nodes", s.opt.nodes));
    ActorMessage r = make_message(s.self_address, "agent.0", runtime::shutdown_type, sd);
    r.peer = m.peer;
    self->send(s.router, std::move(r));
    control::Join j;
    (void)j.ParseFromString(m.header);
    event(self, "join_refused",
          fmt::format("a node from {} (pid {}) after the job started", j.address(), j.pid()));
    return;
  }
  control::Join j;
  if (!j.ParseFromString(m.header)) return (void)++s.rejected;
  NodeInfo n;
  n.id = fmt::format("n{}", ++s.joins);  // never reused: a node lost while joining is gone
  n.address = j.address();
  n.pid = j.pid();
  n.peer = m.peer;
  n.last_heard = clock::now();
  self->send(s.router, runtime::bind_atom::value, n.id, n.peer);
  self->send(s.router, runtime::address_atom::value, n.id, n.address);
  bump_epoch(self);
  control::Welcome w;
  w.set_node_id(n.id);
  w.set_epoch(s.epoch);
  w.set_config_text(s.opt.job.config_text);
  w.set_config_name(s.opt.job.config_name);
  for (const auto& set : s.opt.job.config_sets) w.add_config_sets(set);
  ActorMessage r = make_message(s.self_address, n.id + "/agent.0", runtime::welcome_type, w);
  r.peer = n.peer;
  self->send(s.router, std::move(r));
  event(self, "join", fmt::format("{} at {}, pid {} (epoch {})", n.id, n.address, n.pid, s.epoch));
  s.nodes.push_back(n);
  if (int64_t(s.nodes.size()) < s.opt.nodes) return;
  // Worker i lives on node i+1 as index i.
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    s.workers.push_back(runtime::make_address(s.nodes[i].id, "worker", int64_t(i)));
    s.role_index.push_back(int64_t(i));
  }
  s.ready_from.assign(s.workers.size(), false);
  s.phase = Phase::starting;
  bump_epoch(self);
  publish_view(self);
}

// A node is lost (endpoint error, missed heartbeats). Before every node joined, another
// node may take its place. After, with recovery on, the survivors go back to the committed
// step under a new epoch and take over its share; a further loss before they are done
// restarts the recovery from the same view, without both. While the workers start, the
// loss waits until the others are ready. Else the job stops with the reason.
void lose_node(Self* self, const std::string& node, const std::string& why, bool hung) {
  auto& s = self->state;
  if (s.phase == Phase::done) return;
  size_t k = 0;
  while (k < s.nodes.size() && s.nodes[k].id != node) ++k;
  if (k == s.nodes.size()) return;  // not one of the job's nodes (any more): old news
  for (const auto& l : s.start_losses)
    if (l.node == node) return;  // known, recovered from once the others are ready
  const std::string what =
      fmt::format("node {} (pid {}) lost at step {}: {}", node, s.nodes[k].pid, s.step, why);
  if (!s.opt.config.fault_tolerance.recover)
    return fail(self, what + " (fault_tolerance.recover = false)");
  if (s.phase == Phase::starting) {
    s.start_losses.push_back({node, why, hung});
    return try_start(self);
  }
  if (hung) {  // it may wake up: tell it to leave (the new epoch fences it anyway)
    control::Shutdown sd;
    sd.set_reason("this node was declared lost; the job goes on without it");
    send_to(self, node + "/agent.0", runtime::shutdown_type, sd);
  }
  if (s.phase == Phase::joining) {  // nothing placed on it yet: wait for another node
    const std::string left =
        fmt::format("node {} (pid {}) lost before the job started: {}", node, s.nodes[k].pid, why);
    self->send(s.router, runtime::forget_atom::value, node);
    s.nodes.erase(s.nodes.begin() + int64_t(k));
    bump_epoch(self);
    return event(self, "left",
                 fmt::format("{}; waiting for {} more node(s) to join", left,
                             s.opt.nodes - int64_t(s.nodes.size())));
  }
  if (s.workers.size() == 1) return fail(self, what + ": it was the last node");
  const bool again = s.phase == Phase::recovering;
  if (!again) s.recovery_base = s.workers;                  // the view the workers recover from
  self->send(s.router, runtime::forget_atom::value, node);  // fenced: no flush, no waiting
  s.nodes.erase(s.nodes.begin() + int64_t(k));
  s.workers.erase(s.workers.begin() + int64_t(k));
  s.role_index.erase(s.role_index.begin() + int64_t(k));
  train::Recover r;
  r.set_version(s.committed);
  r.set_old_workers(int64_t(s.recovery_base.size()));
  for (const std::string& w : s.workers) {
    r.add_workers(w);
    r.add_old_index(std::find(s.recovery_base.begin(), s.recovery_base.end(), w) -
                    s.recovery_base.begin());
  }
  bump_epoch(self);
  publish_view(self);
  s.phase = Phase::recovering;
  s.recovered_in = 0;
  s.recovered.assign(s.workers.size(), false);
  ++s.recoveries;
  s.recovery_started = clock::now();
  event(self, "recover",
        fmt::format("{}; {} workers go back to step {} (epoch {}){}", what, s.workers.size(),
                    s.committed, s.epoch, again ? ", the recovery restarted without it" : ""));
  to_all_workers(self, recover_type, r);
}

// The job starts when every worker of the view is ready, but for one on a node lost while
// they started: that loss is then recovered from at step 0, as one during a step would be.
void try_start(Self* self) {
  auto& s = self->state;
  for (size_t i = 0; i < s.workers.size(); ++i)
    if (!s.ready_from[i] && std::none_of(s.start_losses.begin(), s.start_losses.end(),
                                         [&](const auto& l) { return l.node == s.nodes[i].id; }))
      return;
  s.phase = Phase::running;
  const int64_t engram = model::engram_table_params(s.opt.config.model);
  event(self, "start",
        fmt::format("{} workers ready, {} parameters; optimizer state (ZeRO-1) at most "
                    "{:.2f} MiB per worker, {:.2f} MiB in all{}",
                    s.workers.size() - s.start_losses.size(), s.parameters,
                    double(s.state_floats_max) * 4 / (1 << 20),
                    double(s.state_floats_total) * 4 / (1 << 20),
                    engram == 0 ? std::string()
                                : fmt::format("; Engram tables ({} parameters) replicated: "
                                              "{:.2f} MiB per worker with their Adam moments",
                                              engram, double(engram) * 3 * 4 / (1 << 20))));
  if (s.start_losses.empty()) return start_or_finish(self);
  for (const auto& l : std::exchange(s.start_losses, {})) lose_node(self, l.node, l.why, l.hung);
}

void on_ready(Self* self, const train::Ready& r) {
  auto& s = self->state;
  if (s.phase != Phase::starting || r.worker() < 0 || r.worker() >= int64_t(s.workers.size()) ||
      s.ready_from[size_t(r.worker())])
    return (void)++s.rejected;
  if (std::none_of(s.ready_from.begin(), s.ready_from.end(), [](bool b) { return b; }))
    s.initial_hash = r.weights_hash();
  if (r.weights_hash() != s.initial_hash)
    return fail(self, fmt::format("worker {} starts from other weights ({:016x} vs {:016x})",
                                  r.worker(), r.weights_hash(), s.initial_hash));
  s.ready_from[size_t(r.worker())] = true;
  s.parameters = r.parameters();
  s.state_floats_max = std::max(s.state_floats_max, r.optimizer_state_floats());
  s.state_floats_total += r.optimizer_state_floats();
  try_start(self);
}

void on_recovered(Self* self, const train::Recovered& r) {
  auto& s = self->state;
  if (s.phase != Phase::recovering || r.worker() < 0 || r.worker() >= int64_t(s.workers.size()) ||
      s.recovered[size_t(r.worker())])
    return (void)++s.rejected;
  s.recovered[size_t(r.worker())] = true;
  if (++s.recovered_in < int64_t(s.workers.size())) return;
  s.phase = Phase::running;
  event(self, "recovered",
        fmt::format("{} workers at step {} after {:.2f} s", s.workers.size(), s.committed,
                    std::chrono::duration<double>(clock::now() - s.recovery_started).count()));
  // A train step every worker applied but whose validation was cut short: validate again.
  // After the last step: gather the final weights again, from the survivors.
  if (s.committed > s.step) return begin_step(self, train::VALIDATE);
  start_or_finish(self);
}

}  // namespace troupe::actors::coordinator_impl
