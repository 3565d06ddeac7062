// The coordinator's membership core, role-agnostic: nodes joining, the view (epoch, nodes,
// placement), the placed workers getting ready, liveness (heartbeats, endpoint failures)
// and a node lost after every node joined: the survivors return to the committed version
// under a new epoch and re-run what was not committed (worker_recovery.cc is the workers'
// side). What a step is belongs to the driver (coordinator_driver.cc).
#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <utility>

#include "actors/coordinator_state.h"
#include "actors/invariant.h"
#include "model/engram.h"
#include "runtime/control.pb.h"
#include "runtime/liveness.h"
#include "runtime/router.h"

namespace troupe::actors::coordinator_impl {

// Every view change: a new epoch, recorded before anyone hears of it.
void evict_node(Self* self, const NodeInfo& n, bool hung) {
  auto& s = self->state;
  if (hung) {  // it may wake up: tell it to leave (the new epoch fences it anyway)
    control::Shutdown sd;
    sd.set_reason("this node was declared lost; the job goes on without it");
    sd.set_evicted_epoch(s.core.epoch);
    send_to(self, n.id + "/agent.0", runtime::shutdown_type, sd);
  }
  self->send(s.router, runtime::evict_atom::value, n.id, s.core.epoch);
}

void bump_epoch(Self* self, bool recovering) {
  auto& s = self->state;
  const uint64_t before = s.core.epoch;
  ++s.core.epoch;
  TROUPE_ASSERT(s.core.epoch > before, "epoch {} after {}", s.core.epoch, before);
  std::vector<std::string> ids;
  for (const NodeInfo& n : s.core.nodes) ids.push_back(n.id);
  const auto list = [](const std::vector<NodeInfo>& nodes, const std::vector<std::string>& ws) {
    nlohmann::json members = nlohmann::json::array();
    for (size_t i = 0; i < nodes.size() && i < ws.size(); ++i)
      members.push_back({{"id", nodes[i].id},
                         {"address", nodes[i].address},
                         {"pid", nodes[i].pid},
                         {"worker", ws[i]}});
    return members;
  };
  nlohmann::json placement = {{"members", list(s.core.nodes, s.core.workers)}};
  nlohmann::json memory = nlohmann::json::array();  // memory nodes: no worker
  for (const NodeInfo& n : s.core.memory)
    memory.push_back({{"id", n.id}, {"address", n.address}, {"pid", n.pid}});
  if (!memory.empty()) placement["memory"] = memory;
  // A reshape's view: until its "reshaped" record, a restarted coordinator goes back to the
  // view before (journal_log.cc restart_state), as a reshape that loses a node does.
  if (s.reshape.active) placement["old_members"] = list(s.reshape.old_nodes, s.reshape.old_workers);
  // A recovery's view: until its "recovered" record (or a later commit), a restarted
  // coordinator recovers from the same base, as the workers that took its Recover do.
  if (recovering) placement["recovery_base"] = s.core.recovery_base;
  const runtime::Status st = s.commit_log->record_view(s.core.epoch, ids, placement);
  if (!st.ok()) throw std::runtime_error("cannot record the view change: " + st.to_string());
  abandon_checkpoints(self);
  abandon_engram_round(self);
  self->send(s.router, runtime::epoch_atom::value, s.core.epoch);
}

void publish_view(Self* self) {
  auto& c = self->state.core;
  const ReshapeState& rs = self->state.reshape;
  TROUPE_ASSERT(c.workers.size() == c.nodes.size() && c.role_index.size() == c.workers.size(),
                "{} workers, {} nodes, {} role indices: one worker per node", c.workers.size(),
                c.nodes.size(), c.role_index.size());
  TROUPE_ASSERT(
      rs.standby.size() <= rs.joiners.size() && rs.standby_index.size() == rs.standby.size(),
      "{} standby workers ({} indices) for {} joiners: at most one each", rs.standby.size(),
      rs.standby_index.size(), rs.joiners.size());
  control::View v;
  v.set_epoch(c.epoch);
  std::vector<const NodeInfo*> listed;  // the members, then the reshape's leavers and joiners
  for (const std::vector<NodeInfo>* list : std::initializer_list<const std::vector<NodeInfo>*>{
           &c.nodes, &c.memory, &c.rollout, &rs.leaving, &rs.joiners})
    for (const NodeInfo& n : *list) listed.push_back(&n);
  for (const NodeInfo* n : listed) {
    auto* e = v.add_nodes();
    e->set_node_id(n->id), e->set_address(n->address);
  }
  // `[parallel] experts = "shards"`: expert_shard.i beside worker.i (actors/worker_experts.cc),
  // listed first: a node's agent spawns in this order, so the shard is registered before
  // its worker can report Ready and other workers' requests reach it.
  const bool shards = self->state.opt.config.parallel.experts == model::ExpertsAt::shards;
  const auto place = [&](int64_t index, const std::string& node) {
    if (shards) {
      auto* p = v.add_placement();
      p->set_role("expert_shard"), p->set_index(index), p->set_node_id(node);
    }
    auto* p = v.add_placement();
    p->set_role("worker"), p->set_index(index), p->set_node_id(node);
  };
  if (!place_engram_shards(self, &v)) return;  // before the workers, as the expert shards
  place_rollouts(self, &v);
  for (size_t i = 0; i < c.workers.size(); ++i) place(c.role_index[i], c.nodes[i].id);
  for (size_t i = 0; i < rs.standby.size() && !rs.active; ++i)  // newcomers on standby
    place(rs.standby_index[i], rs.joiners[i].id);
  for (const NodeInfo* n : listed) send_to(self, n->id + "/agent.0", runtime::view_type, v);
  nlohmann::json ids = nlohmann::json::array();
  for (const NodeInfo& n : c.nodes) ids.push_back(n.id);
  event(self, "view",
        fmt::format("epoch {}: {} nodes, one worker each{}{}", c.epoch, c.nodes.size(),
                    shards ? " and an expert shard" : "",
                    rs.standby.empty() || rs.active
                        ? std::string()
                        : fmt::format(", {} newcomer(s) on standby", rs.standby.size())),
        {{"nodes", ids}, {"standby", rs.active ? 0 : rs.standby.size()}});
}

namespace {

void refuse_join(Self* self, const control::Join& j, const ActorMessage& m) {
  auto& s = self->state;
  control::Shutdown sd;
  sd.set_reason(
      j.role() == "engram"
          ? fmt::format("the job has its {} memory node(s), or has started", s.opt.engram_nodes)
          : fmt::format("the job already has its {} nodes", s.opt.nodes));
  ActorMessage r = make_message(s.self_address, "agent.0", runtime::shutdown_type, sd);
  r.peer = m.peer;
  self->send(s.router, std::move(r));
  event(self, "join_refused",
        fmt::format("a node from {} (pid {}) after the job started", j.address(), j.pid()),
        {{"pid", j.pid()}, {"address", j.address()}, {"reason", sd.reason()}});
}

}  // namespace

void welcome(Self* self, const NodeInfo& n, bool running) {
  auto& s = self->state;
  control::Welcome w;
  w.set_node_id(n.id);
  w.set_epoch(s.core.epoch);
  w.set_config_name(s.opt.job.config_name);
  w.set_run_dir(s.opt.job.run_dir);
  // A node joining a running job takes its state from its peers, not from the checkpoint
  // the job resumed from (which may be deleted by now).
  w.set_resume(!running && !s.opt.job.resume_manifest.empty());
  control::WelcomeJob job;  // a payload: a config file does not fit an envelope's bound
  job.set_config_text(s.opt.job.config_text);
  for (const auto& set : s.opt.job.config_sets) job.add_config_sets(set);
  ActorMessage r = make_message(s.self_address, n.id + "/agent.0", runtime::welcome_type, w);
  r.payloads.push_back(runtime::text_payload(job.SerializeAsString()));
  if (w.resume()) r.payloads.push_back(runtime::text_payload(s.opt.job.resume_manifest));
  r.peer = n.peer;
  self->send(s.router, std::move(r));
}

namespace {

// Every node joined: worker i lives on node i as index i.
void place_workers(Self* self) {
  auto& c = self->state.core;
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    c.workers.push_back(runtime::make_address(c.nodes[i].id, "worker", int64_t(i)));
    c.role_index.push_back(int64_t(i));
  }
  self->state.controls.next_worker_index = int64_t(c.nodes.size());
  c.ready.open(0, -1, int64_t(c.workers.size()));
  enter_phase(self, Phase::starting);
  bump_epoch(self);
  publish_view(self);
}

}  // namespace

NodeInfo admit_node(Self* self, const control::Join& j, const ActorMessage& m) {
  auto& s = self->state;
  NodeInfo n;
  n.id = fmt::format("n{}", ++s.core.joins);  // never reused: a node lost while joining is gone
  n.address = j.address();
  n.pid = j.pid();
  n.peer = m.peer;
  n.last_heard = now(self);
  self->send(s.router, runtime::bind_atom::value, n.id, n.peer);
  self->send(s.router, runtime::address_atom::value, n.id, n.address);
  return n;
}

void on_join(Self* self, const control::Join& j, const ActorMessage& m) {
  auto& s = self->state;
  const bool memory = j.role() == "engram" || j.role() == "rollout";
  std::vector<NodeInfo>& extra = j.role() == "rollout" ? s.core.rollout : s.core.memory;
  const int64_t extra_wanted = j.role() == "rollout" ? s.opt.rollout_nodes : s.opt.engram_nodes;
  if (memory && (s.core.phase != Phase::joining || int64_t(extra.size()) >= extra_wanted)) {
    refuse_join(self, j, m);  // memory and rollout nodes join before the start, as many as asked
    return;
  }
  if (!memory && s.core.phase != Phase::joining) {
    if (!admit_joiner(self, j, m)) refuse_join(self, j, m);
    return;
  }
  if (!memory && int64_t(s.core.nodes.size()) >= s.opt.nodes) return refuse_join(self, j, m);
  const NodeInfo n = admit_node(self, j, m);
  (memory ? extra : s.core.nodes).push_back(n);
  bump_epoch(self);
  welcome(self, n, false);
  event(self, "join",
        fmt::format("{} at {}, pid {} (epoch {}){}", n.id, n.address, n.pid, s.core.epoch,
                    !memory                 ? ""
                    : j.role() == "rollout" ? ": a rollout node (GRPO sampling)"
                                            : ": a memory node (Engram shards)"),
        {{"node", n.id},
         {"pid", n.pid},
         {"address", n.address},
         {"memory", j.role() == "engram"},
         {"rollout", j.role() == "rollout"}});
  if (int64_t(s.core.nodes.size()) == s.opt.nodes &&
      int64_t(s.core.memory.size()) == s.opt.engram_nodes &&
      int64_t(s.core.rollout.size()) == s.opt.rollout_nodes)
    place_workers(self);
}

namespace {

// An owner lost with all its buddies (its optimizer state is gone from memory) at a
// committed step past 0: the survivors roll back to the newest checkpoint that verifies
// (Recover carries its manifest); without one the job stops. False: the job stopped.
bool plan_rollback(Self* self, const std::string& what, train::Recover* r, std::string* manifest) {
  auto& s = self->state;
  auto& c = s.core;
  const std::vector<int64_t> survivors(r->old_index().begin(), r->old_index().end());
  const std::string lost = r->version() == 0 ? "" : share_lost(self, r->old_workers(), survivors);
  const std::string tables = r->version() == 0 ? "" : engram_holders_lost(self);
  if (c.rollback_to < 0 && lost.empty() && tables.empty()) return true;
  const std::string gone = !lost.empty()     ? lost + ": the optimizer state of its share is gone"
                           : !tables.empty() ? tables + ": its Engram tables are gone"
                                             : "a rollback in flight";
  runtime::Result<storage::Manifest> m = rollback_checkpoint(self);
  if (!m.ok()) {
    fail(self, fmt::format("{}: {} (fault_tolerance.buddy_copies = {}) and there is no "
                           "checkpoint to roll back to (checkpoint.every_steps = {}): {}",
                           what, gone, s.opt.config.fault_tolerance.buddy_copies,
                           s.opt.config.checkpoint.every_steps, m.status().message()));
    return false;
  }
  const int64_t step = m.value().step;
  const runtime::Status st = s.commit_log->record({{"kind", "rollback"}, {"step", step}});
  if (!st.ok()) {
    fail(self, fmt::format("cannot record the rollback to step {}: {}", step, st.message()));
    return false;
  }
  if (c.rollback_to < 0)
    event(
        self, "rollback",
        fmt::format("{}: every survivor rolls back to the checkpoint of step {} and replays "
                    "from there (was at step {})",
                    lost.empty() && !tables.empty() ? "an Engram shard was lost with every holder"
                                                    : "an owner was lost with all its buddy copies",
                    step, s.drv.committed),
        {{"step", step}, {"from_step", s.drv.committed}});
  c.rollback_to = step;
  s.drv.step = s.drv.committed = step;
  rewind_engram_sets(self, step);
  r->set_version(step);
  r->set_rollback(true);
  *manifest = m.value().to_json().dump();
  return true;
}

}  // namespace

void recover_without(Self* self, size_t k, const std::string& what, nlohmann::json fields) {
  auto& c = self->state.core;
  const bool again = c.phase == Phase::recovering;
  if (!again) c.recovery_base = c.workers;  // the view the workers recover from
  std::optional<NodeInfo> gone;
  if (k != std::string::npos) {
    gone = c.nodes[k];
    c.nodes.erase(c.nodes.begin() + int64_t(k));
    c.workers.erase(c.workers.begin() + int64_t(k));
    c.role_index.erase(c.role_index.begin() + int64_t(k));
  }
  train::Recover r;
  r.set_version(committed_version(self));
  r.set_old_workers(int64_t(c.recovery_base.size()));
  for (const std::string& w : c.workers) {
    r.add_workers(w);
    r.add_old_index(std::find(c.recovery_base.begin(), c.recovery_base.end(), w) -
                    c.recovery_base.begin());
  }
  std::string manifest;
  if (!plan_rollback(self, what, &r, &manifest)) return;
  bump_epoch(self, true);
  if (gone) evict_node(self, *gone, fields.value("hung", false));
  publish_view(self);
  send_engram_rollback(self, manifest);  // after the view: the new holders are placed
  enter_phase(self, Phase::recovering);
  c.recovered.open(0, -1, int64_t(c.workers.size()));
  ++c.recoveries;
  c.recovery_started = now(self);
  self->state.controls.last_recovery = what;
  event(self, "recover",
        fmt::format("{}; {} workers go back to step {} (epoch {}){}", what, c.workers.size(),
                    r.version(), c.epoch, again ? ", the recovery restarted without it" : ""),
        [&] {
          fields["step"] = r.version(), fields["reason"] = what;
          fields["workers"] = c.workers.size();
          return fields;
        }());
  std::vector<runtime::Payload> payloads;
  if (!manifest.empty()) payloads.push_back(runtime::text_payload(manifest));
  c.recover_message = make_message(self->state.self_address, "", recover_type, r);
  c.recover_message.payloads = payloads;
  c.recover_sent = now(self);
  to_all_workers(self, recover_type, r, payloads);
}

namespace {

// Before every node joined, another node may take the lost one's place.
void forget_joined(Self* self, size_t k, const std::string& why, bool hung) {
  auto& c = self->state.core;
  const std::string left = fmt::format("node {} (pid {}) lost before the job started: {}",
                                       c.nodes[k].id, c.nodes[k].pid, why);
  const nlohmann::json fields = {{"node", c.nodes[k].id}, {"pid", c.nodes[k].pid}, {"reason", why}};
  const NodeInfo gone = c.nodes[k];
  c.nodes.erase(c.nodes.begin() + int64_t(k));
  bump_epoch(self);
  evict_node(self, gone, hung);
  event(self, "left",
        fmt::format("{}; waiting for {} more node(s) to join", left,
                    self->state.opt.nodes - int64_t(c.nodes.size())),
        fields);
}

void try_start(Self* self);

}  // namespace

// A node is lost (endpoint error, missed heartbeats). With recovery on, the survivors take
// over; while the workers start, the loss waits until the others are ready. Else the job
// stops with the reason.
// `node` is a copy: a caller's reference into the view (silent_node) would dangle once the
// view changes below (an aborted reshape restores the old one).
namespace {

// A memory node lost: its holders are replaced as any lost holder is (a new epoch, the
// workers back to the committed step, a survivor's copy or a rollback). Before the job
// started there is nothing to go on with. False: not a memory node.
bool lose_memory_node(Self* self, const std::string& node, const std::string& why, bool hung) {
  auto& c = self->state.core;
  const auto it = std::find_if(c.memory.begin(), c.memory.end(),
                               [&](const NodeInfo& n) { return n.id == node; });
  if (it == c.memory.end()) return false;
  const NodeInfo gone = *it;
  const std::string what = fmt::format("memory node {} (pid {}) lost at step {}: {}", node,
                                       gone.pid, self->state.drv.step, why);
  if (c.phase == Phase::joining || c.phase == Phase::starting ||
      !self->state.opt.config.fault_tolerance.recover) {
    fail(self, what);
    return true;
  }
  c.memory.erase(it);
  evict_node(self, gone, hung);
  recover_without(self, std::string::npos, what,
                  {{"node", node}, {"pid", gone.pid}, {"hung", hung}, {"memory", true}});
  return true;
}

}  // namespace

void lose_node(Self* self, const std::string node, const std::string& why, bool hung) {
  auto& s = self->state;
  auto& c = s.core;
  if (c.phase == Phase::done) return;
  if (lose_memory_node(self, node, why, hung) || lose_rollout_node(self, node, why, hung)) return;
  size_t k = 0;
  while (k < c.nodes.size() && c.nodes[k].id != node) ++k;
  if (lose_during_reshape(self, node, why, hung)) return;
  if (k == c.nodes.size()) return;  // not one of the job's nodes (any more): old news
  for (const auto& l : c.start_losses)
    if (l.node == node) return;  // known, recovered from once the others are ready
  const std::string what =
      fmt::format("node {} (pid {}) lost at step {}: {}", node, c.nodes[k].pid, s.drv.step, why);
  if (!s.opt.config.fault_tolerance.recover)
    return fail(self, what + " (fault_tolerance.recover = false)");
  if (c.phase == Phase::starting) {
    c.start_losses.push_back({node, why, hung});
    return try_start(self);
  }
  if (c.phase == Phase::joining) return forget_joined(self, k, why, hung);
  if (c.workers.size() == 1) return fail(self, what + ": it was the last node");
  if (int64_t(c.workers.size()) - 1 < s.opt.min_nodes)
    return fail(self, fmt::format("{}: {} node(s) would remain, fewer than --min-nodes {}", what,
                                  c.workers.size() - 1, s.opt.min_nodes));
  // When the coordinator knew (before the view change is journaled and the event written).
  const int64_t known_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  recover_without(
      self, k, what,
      {{"node", node}, {"pid", c.nodes[k].pid}, {"hung", hung}, {"detected_unix_ms", known_ms}});
}

namespace {

std::string start_text(Self* self) {
  auto& s = self->state;
  const int64_t engram = model::engram_table_params(s.opt.config.model);
  return fmt::format(
      "{} workers ready, {} parameters; optimizer state (ZeRO-1) at most "
      "{:.2f} MiB per worker, {:.2f} MiB in all{}",
      s.core.workers.size() - s.core.start_losses.size(), s.core.parameters,
      double(s.core.state_floats_max) * 4 / (1 << 20),
      double(s.core.state_floats_total) * 4 / (1 << 20),
      engram == 0 ? std::string()
      : engram_sharded(self)
          ? fmt::format("; Engram tables ({} parameters) on {} engram_shard actors, {} "
                        "holders each: {:.2f} MiB per copy with their Adam moments, none in "
                        "the workers",
                        engram, s.engram.holders.size(),
                        s.engram.holders.empty() ? 0 : s.engram.holders[0].size(),
                        double(engram) * 3 * 4 / (1 << 20))
          : fmt::format("; Engram tables ({} parameters) replicated: "
                        "{:.2f} MiB per worker with their Adam moments",
                        engram, double(engram) * 3 * 4 / (1 << 20)));
}

// The job starts when every worker of the view is ready, but for one on a node lost while
// they started: that loss is then recovered from at step 0, as one during a step would be.
void try_start(Self* self) {
  auto& c = self->state.core;
  for (size_t i = 0; i < c.workers.size(); ++i)
    if (!c.ready.has(int64_t(i)) &&
        std::none_of(c.start_losses.begin(), c.start_losses.end(),
                     [&](const auto& l) { return l.node == c.nodes[i].id; }))
      return;
  enter_phase(self, Phase::running);
  event(self, "start", start_text(self));
  if (c.start_losses.empty()) return start_training(self);
  for (const auto& l : std::exchange(c.start_losses, {})) lose_node(self, l.node, l.why, l.hung);
}

}  // namespace

Verdict on_ready(Self* self, const train::Ready& r, const ActorMessage& m) {
  auto& c = self->state.core;
  if (Verdict v = check_worker(self, r.worker(), m)) return v;
  if (Verdict v = drop_receipt(c.ready.check(0, -1, r.worker()), "Ready")) return v;
  const bool first = c.ready.missing().size() == c.workers.size();
  if (first) c.initial_hash = r.weights_hash();
  if (r.weights_hash() != c.initial_hash) {
    fail(self, fmt::format("worker {} starts from other weights ({:016x} vs {:016x})", r.worker(),
                           r.weights_hash(), c.initial_hash));
    return {};
  }
  c.ready.add(0, -1, r.worker());
  c.parameters = r.parameters();
  c.state_floats_max = std::max(c.state_floats_max, r.optimizer_state_floats());
  c.state_floats_total += r.optimizer_state_floats();
  try_start(self);
  return {};
}

Verdict on_recovered(Self* self, const train::Recovered& r, const ActorMessage& m) {
  auto& c = self->state.core;
  if (Verdict v = check_worker(self, r.worker(), m)) return v;
  if (Verdict v = drop_receipt(c.recovered.add(0, -1, r.worker()), "Recovered")) return v;
  if (c.recovered.complete() && engram_rollback_done(self)) finish_recovery(self);
  return {};
}

void finish_recovery(Self* self) {
  auto& c = self->state.core;
  c.rollback_to = -1;
  if (const runtime::Status st =
          self->state.commit_log->record({{"kind", "recovered"}, {"epoch", c.epoch}});
      !st.ok()) {
    fail(self, "cannot journal the end of the recovery: " + st.to_string());
    return;
  }
  enter_phase(self, Phase::running);
  const double took_ms =
      std::chrono::duration<double, std::milli>(now(self) - c.recovery_started).count();
  event(self, "recovered",
        fmt::format("{} workers at step {} after {:.2f} s", c.workers.size(),
                    committed_version(self), took_ms / 1000),
        {{"duration_ms", took_ms}, {"workers", c.workers.size()}});
  resume_training(self);
}

namespace {

// The coordinator itself was not running: the nodes' silence over that gap was not
// observed, so it is not held against them, and the deadlines move by the gap.
void excuse_own_pause(Self* self, time_point t) {
  auto& s = self->state;
  const auto& ft = s.opt.config.fault_tolerance;
  const auto gap = runtime::own_pause(s.core.last_tick, t, ms(ft.heartbeat_interval_ms),
                                      ms(ft.heartbeat_timeout_ms));
  if (gap <= duration::zero()) return;
  for (NodeInfo* n : heard_nodes(self)) n->last_heard = std::max(n->last_heard, t);
  s.core.started += gap, s.core.recovery_started += gap, s.drv.begun += gap;
  s.reshape.boundary += gap;
  const int64_t gap_ms = std::chrono::duration_cast<ms>(gap).count();
  event(self, "coordinator_paused",
        fmt::format("the coordinator did not run for {} ms: no node is declared dead "
                    "for that silence",
                    gap_ms),
        {{"duration_ms", gap_ms}});
}

// Fails the job when it did not start, or a recovery did not finish, in time.
bool past_deadline(Self* self, time_point t) {
  auto& s = self->state;
  auto& c = s.core;
  const auto& ft = s.opt.config.fault_tolerance;
  if ((c.phase == Phase::joining || c.phase == Phase::starting) &&
      t - c.started > ms(ft.start_timeout_ms)) {
    const size_t ready =
        c.phase == Phase::starting ? c.workers.size() - c.ready.missing().size() : 0;
    fail(self, fmt::format("the job did not start within {} s: {} of {} nodes joined, "
                           "{} workers ready",
                           ft.start_timeout_ms / 1000, c.nodes.size(), s.opt.nodes, ready));
    return true;
  }
  if (c.phase != Phase::recovering || t - c.recovery_started <= ms(ft.recovery_timeout_ms))
    return false;
  fail(self, fmt::format("the recovery at step {} did not finish within {} ms; waiting for {}",
                         committed_version(self), ft.recovery_timeout_ms, waiting_workers(self)));
  return true;
}

// The first node silent for longer than its timeout, or null; all_silent_timeout_factor of
// them while no node was heard for half of one (a stall of ours: nodes heard a heartbeat
// apart before it would run out one by one, the first before all count as silent).
const NodeInfo* silent_node(Self* self, time_point t) {
  auto& s = self->state;
  const ms timeout(s.opt.config.fault_tolerance.heartbeat_timeout_ms);
  const std::vector<NodeInfo*> nodes = heard_nodes(self);
  time_point latest{};
  for (const NodeInfo* n : nodes) latest = std::max(latest, n->last_heard);
  const bool all_silent = !nodes.empty() && t - latest > timeout / 2;
  if (all_silent && !s.core.all_silent)
    event(self, "all_nodes_silent",
          fmt::format("no node was heard for {} ms: the coordinator or the whole machine "
                      "likely stalled; a node is declared dead after {} ms of silence now",
                      std::chrono::duration_cast<ms>(t - latest).count(),
                      all_silent_timeout_factor * timeout.count()),
          {{"silent_ms", std::chrono::duration_cast<ms>(t - latest).count()}});
  // The silence (a stall of ours: a FIFO a killed writer stopped, the machine) ended: the
  // others' messages queued behind it come next, so each node's timeout starts afresh.
  if (!all_silent && s.core.all_silent)
    for (NodeInfo* n : nodes) n->last_heard = std::max(n->last_heard, t);
  s.core.all_silent = all_silent;
  const ms limit = all_silent ? all_silent_timeout_factor * timeout : timeout;
  for (const NodeInfo* n : nodes)
    if (t - n->last_heard > limit) return n;
  return nullptr;
}

}  // namespace

// Every heartbeat_interval_ms: liveness by silence, deadlines, and the heartbeats that tell
// the nodes this coordinator is not hung.
void on_tick(Self* self) {
  auto& s = self->state;
  const auto& ft = s.opt.config.fault_tolerance;
  const time_point t = now(self);
  excuse_own_pause(self, t);
  if (past_deadline(self, t) || rejoin_deadline(self, t)) return;
  reshape_past_deadline(self, t);  // aborted: the old view recovers, the ticks go on
  if (s.core.phase == Phase::done) return;
  if (const NodeInfo* n = silent_node(self, t))
    lose_node(self, n->id,
              fmt::format("missed heartbeats for {} ms (timeout {} ms{}): declared dead",
                          std::chrono::duration_cast<ms>(t - n->last_heard).count(),
                          ft.heartbeat_timeout_ms,
                          s.core.all_silent
                              ? fmt::format(", every node silent: ×{}", all_silent_timeout_factor)
                              : ""),
              true);
  if (s.core.phase == Phase::done) return;
  check_step_progress(self, t);
  if (s.core.phase == Phase::recovering) resend_engram_rollback(self, t);
  if ((s.core.phase == Phase::recovering || s.core.phase == Phase::resizing) &&
      t - s.core.recover_sent >= ms(recover_resend_ms))
    resend_in_flight(self, t);
  control::Heartbeat hb;
  hb.set_sequence(++s.core.heartbeats);
  for (const NodeInfo* n : heard_nodes(self))
    send_to(self, n->id + "/agent.0", runtime::heartbeat_type, hb);
  self->delayed_send(self, ms(ft.heartbeat_interval_ms), runtime::tick_atom::value);
}

}  // namespace troupe::actors::coordinator_impl
