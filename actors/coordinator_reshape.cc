// The operator's side of the coordinator (DESIGN §4, §8): scale up and down, drain, replace
// a lost node, pause, resume and checkpoint on request, all at step boundaries.
//
// Scale up: the joiners are admitted as they come (a running job refuses other nodes);
// once all are here their workers are placed on standby (a View at the same epoch: the step
// in flight goes on) and build their model while training goes on. At the first step
// boundary where every standby worker is Ready, the reshape begins: a new epoch, a Reshape
// to every worker of the old view and every newcomer (worker_reshape.cc), and the job goes
// on once every worker of the new view answered Recovered. Scale down and drain: the same,
// with leavers instead of newcomers; a leaver's node is shut down (exit 0) once the others
// hold its state. A node lost during a reshape aborts it: the old view recovers (in memory,
// as from any loss) and the newcomers are sent home.
#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "actors/coordinator_state.h"
#include "runtime/log.h"
#include "runtime/router.h"

namespace troupe::actors::coordinator_impl {

namespace {

double ms_since(Self* self, time_point t) {
  return std::chrono::duration<double, std::milli>(now(self) - t).count();
}

bool has(const std::vector<std::string>& list, const std::string& x) {
  return std::find(list.begin(), list.end(), x) != list.end();
}

size_t find_node(const std::vector<NodeInfo>& nodes, const std::string& id) {
  for (size_t k = 0; k < nodes.size(); ++k)
    if (nodes[k].id == id) return k;
  return std::string::npos;
}

// Chaos for tests: TROUPE_COORDINATOR_FAULT=kill@reshape kills the coordinator process
// (SIGKILL) when the first worker of a reshape's new view has answered and the others have
// not: the new view is journaled, the workers are between the two. Only a coordinator that
// was not itself restarted does it.
void chaos_kill_coordinator(Self* self, const std::string& at) {
  const char* spec = std::getenv("TROUPE_COORDINATOR_FAULT");
  if (spec == nullptr || spec != "kill@" + at || self->state.opt.restart) return;
  log::warn("TROUPE_COORDINATOR_FAULT={}: the coordinator kills itself", spec);
  ::raise(SIGKILL);
}

void shut_down(Self* self, const NodeInfo& n, const std::string& why) {
  control::Shutdown sd;
  sd.set_reason(why);
  send_to(self, n.id + "/agent.0", runtime::shutdown_type, sd);
}

// Writes the checkpoint of the committed step now (POST /checkpoint).
void checkpoint_now(Self* self) {
  auto& s = self->state;
  s.controls.checkpoint_now = false;
  const int64_t version = committed_version(self);
  if (s.checkpoints.count(version)) return;  // being written already
  expect_checkpoint(self, version, true);
  train::CheckpointNow c;
  c.set_version(version);
  to_all_workers(self, checkpoint_now_type, c);
  event(self, "checkpoint_requested", fmt::format("writing the checkpoint of step {}", version),
        {{"step", version}});
}

// Every joiner is here: the workers of those not placed yet are placed, on standby until the
// reshape. A replacement asked for once the others were placed (a second node lost while a
// first one's replacement waits on standby) adds one joiner: only it is placed then; placing
// every joiner again gave the first one a second worker, one more standby worker than joiners
// (troupe-sim seeds 3584 and 3585 in one process: the view read past the joiners).
void place_standby(Self* self) {
  auto& rs = self->state.reshape;
  for (size_t i = rs.standby.size(); i < rs.joiners.size(); ++i) {
    const int64_t index = self->state.controls.next_worker_index++;
    rs.standby.push_back(runtime::make_address(rs.joiners[i].id, "worker", index));
    rs.standby_index.push_back(index);
  }
  publish_view(self);
}

bool reshape_ready(const ReshapeState& rs) {
  if (rs.active) return false;
  if (rs.joiners_wanted > 0)
    return int64_t(rs.standby_ready.size()) == rs.joiners_wanted &&
           int64_t(rs.standby.size()) == rs.joiners_wanted;
  return !rs.draining.empty();
}

void begin_reshape(Self* self) {
  auto& s = self->state;
  auto& c = s.core;
  auto& rs = s.reshape;
  rs.old_nodes = c.nodes, rs.old_workers = c.workers, rs.old_role_index = c.role_index;
  c.nodes.clear(), c.workers.clear(), c.role_index.clear();
  for (size_t i = 0; i < rs.old_nodes.size(); ++i) {
    if (has(rs.draining, rs.old_nodes[i].id)) {
      rs.leaving.push_back(rs.old_nodes[i]);
      continue;
    }
    c.nodes.push_back(rs.old_nodes[i]);
    c.workers.push_back(rs.old_workers[i]);
    c.role_index.push_back(rs.old_role_index[i]);
  }
  for (size_t j = 0; j < rs.joiners.size(); ++j) {
    c.nodes.push_back(rs.joiners[j]);
    c.workers.push_back(rs.standby[j]);
    c.role_index.push_back(rs.standby_index[j]);
  }
  rs.joiners.clear(), rs.standby.clear(), rs.standby_index.clear();
  rs.active = true;
  rs.boundary = now(self);
  bump_epoch(self);
  publish_view(self);  // the new members and, until they are shut down, the leavers
  enter_phase(self, Phase::resizing);
  c.recovered.open(0, -1, int64_t(c.workers.size()));
  train::Reshape r;
  r.set_version(committed_version(self));
  for (const std::string& w : c.workers) r.add_workers(w);
  for (const std::string& w : rs.old_workers) r.add_old_workers(w);
  std::vector<std::string> to = c.workers;
  for (const std::string& w : rs.old_workers)
    if (!has(to, w)) to.push_back(w);
  for (const std::string& w : to) send_to(self, w, reshape_type, r);
  c.recover_message = make_message(s.self_address, "", reshape_type, r);
  c.recover_sent = now(self);
  event(self, "reshape",
        fmt::format("{} at step {} (epoch {}): {} → {} workers, {} leaving", rs.what, r.version(),
                    c.epoch, rs.old_workers.size(), c.workers.size(), rs.leaving.size()),
        {{"step", r.version()},
         {"workers", c.workers.size()},
         {"leaving", rs.leaving.size()},
         {"asked_ms", ms_since(self, rs.asked)}});
}

// A joiner lost before the reshape began: the scale is called off, the other joiners sent
// home; the job goes on as it was.
void abort_standby(Self* self, const std::string& node, const std::string& why) {
  auto& rs = self->state.reshape;
  const std::string what = rs.what;
  for (const NodeInfo& n : rs.joiners) {
    if (n.id != node) shut_down(self, n, "the scale this node joined for was called off");
    self->send(self->state.router, runtime::forget_atom::value, n.id);
  }
  rs = ReshapeState{};
  publish_view(self);
  event(
      self, "reshape_aborted",
      fmt::format("{}: joining node {} was lost ({}); the job goes on unchanged", what, node, why),
      {{"node", node}, {"reason", why}});
}

// A node lost during the reshape (node: "" when none was, the reshape ran out of time):
// back to the old view, which recovers as from any loss.
void abort_active(Self* self, const std::string& node, const std::string& why, bool hung) {
  auto& s = self->state;
  auto& c = s.core;
  auto& rs = s.reshape;
  for (const NodeInfo& n : c.nodes)
    if (find_node(rs.old_nodes, n.id) == std::string::npos) {  // a newcomer: sent home
      if (n.id != node) shut_down(self, n, "the reshape this node joined for was aborted");
      self->send(s.router, runtime::forget_atom::value, n.id);
    }
  // The old view's nodes as they are now: heard while the reshape ran (rs.old_nodes is the
  // copy from its start; restoring it evicted every node for a silence it never had).
  std::vector<NodeInfo> back = rs.old_nodes;
  for (NodeInfo& n : back)
    for (const std::vector<NodeInfo>* now : {&c.nodes, &rs.leaving})
      if (const size_t k = find_node(*now, n.id); k != std::string::npos) n = (*now)[k];
  c.nodes = std::move(back), c.workers = rs.old_workers, c.role_index = rs.old_role_index;
  const std::string what =
      node.empty() ? fmt::format("{} at step {}: {}; the reshape is aborted", rs.what,
                                 committed_version(self), why)
                   : fmt::format("node {} lost during {} at step {}: {}; the reshape is aborted",
                                 node, rs.what, committed_version(self), why);
  rs = ReshapeState{};
  const size_t k = find_node(c.nodes, node);
  if (k != std::string::npos && c.workers.size() == 1) return fail(self, what);
  recover_without(self, k, what, {{"node", node}, {"reshape_aborted", true}, {"hung", hung}});
}

}  // namespace

std::vector<NodeInfo*> heard_nodes(Self* self) {
  auto& s = self->state;
  std::vector<NodeInfo*> out;
  for (auto* list :
       {&s.core.nodes, &s.core.memory, &s.core.rollout, &s.reshape.joiners, &s.reshape.leaving})
    for (NodeInfo& n : *list) out.push_back(&n);
  return out;
}

bool hold_at_boundary(Self* self) {
  auto& s = self->state;
  if (s.controls.paused) {
    if (!s.controls.parked)
      event(self, "training_paused", fmt::format("training paused at step {}", s.drv.step),
            {{"step", s.drv.step}});
    s.controls.parked = true;
    if (s.controls.checkpoint_now) checkpoint_now(self);
    return true;
  }
  s.controls.parked = false;
  if (reshape_ready(s.reshape)) {
    begin_reshape(self);
    return true;
  }
  if (s.controls.checkpoint_now) checkpoint_now(self);
  return engram_swap_due(self);
}

bool admit_joiner(Self* self, const control::Join& j, const ActorMessage& m) {
  auto& s = self->state;
  auto& rs = s.reshape;
  const Phase p = s.core.phase;
  if ((p != Phase::running && p != Phase::recovering) || rs.active ||
      int64_t(rs.joiners.size()) >= rs.joiners_wanted)
    return false;
  const NodeInfo n = admit_node(self, j, m);
  rs.joiners.push_back(n);
  welcome(self, n, true);
  event(self, "join",
        fmt::format("{} at {}, pid {}: joins the running job ({}; {} of {})", n.id, n.address,
                    n.pid, rs.what, rs.joiners.size(), rs.joiners_wanted),
        {{"node", n.id}, {"pid", n.pid}, {"address", n.address}});
  if (int64_t(rs.joiners.size()) == rs.joiners_wanted) place_standby(self);
  return true;
}

Verdict on_standby_ready(Self* self, const train::Ready& r, const ActorMessage& m) {
  auto& rs = self->state.reshape;
  if (!has(rs.standby, m.from))
    return drop(Drop::unknown_sender, fmt::format("Ready from {}, not a standby worker", m.from));
  if (!rs.standby_ready.insert(m.from).second) return drop(Drop::duplicate, "a second Ready");
  (void)r;
  if (reshape_ready(rs))
    event(self, "standby",
          fmt::format("{} newcomer(s) ready after {:.0f} ms; they enter at the next step "
                      "boundary",
                      rs.standby_ready.size(), ms_since(self, rs.asked)),
          {{"duration_ms", ms_since(self, rs.asked)}, {"newcomers", rs.standby_ready.size()}});
  return {};
}

Verdict on_reshaped(Self* self, const train::Recovered& r, const ActorMessage& m) {
  auto& s = self->state;
  auto& c = s.core;
  auto& rs = s.reshape;
  if (Verdict v = check_worker(self, r.worker(), m)) return v;
  if (Verdict v = drop_receipt(c.recovered.add(0, -1, r.worker()), "Recovered")) return v;
  if (!c.recovered.complete()) {
    chaos_kill_coordinator(self, "reshape");
    return {};
  }
  // Done: a coordinator restarted from here on keeps the new view (journal_log.cc).
  if (const runtime::Status st = s.commit_log->record({{"kind", "reshaped"}, {"epoch", c.epoch}});
      !st.ok()) {
    fail(self, "cannot record the reshape: " + st.to_string());
    return {};
  }
  for (const NodeInfo& n : rs.leaving) {
    shut_down(self, n, fmt::format("drained: {}; the job goes on without this node", rs.what));
    self->send(s.router, runtime::forget_atom::value, n.id);
  }
  s.controls.last_reshape = fmt::format(
      "{}: {} workers at step {}; training paused {:.0f} ms ({:.0f} ms after the "
      "request)",
      rs.what, c.workers.size(), committed_version(self), ms_since(self, rs.boundary),
      ms_since(self, rs.asked));
  nlohmann::json left = nlohmann::json::array();
  for (const NodeInfo& n : rs.leaving) left.push_back(n.id);
  event(self, rs.leaving.empty() ? "scaled" : "drained", s.controls.last_reshape,
        {{"pause_ms", ms_since(self, rs.boundary)},
         {"duration_ms", ms_since(self, rs.asked)},
         {"workers", c.workers.size()},
         {"left", left}});
  rs = ReshapeState{};
  publish_view(self);
  enter_phase(self, Phase::running);
  resume_training(self);
  return {};
}

std::string waiting_workers(Self* self) {
  const auto& c = self->state.core;
  std::string waiting;
  for (int64_t i : c.recovered.missing())
    waiting += (waiting.empty() ? "" : ", ") + c.workers[size_t(i)];
  return waiting;
}

void resend_in_flight(Self* self, time_point t) {
  auto& c = self->state.core;
  c.recover_sent = t;
  std::vector<std::string> to;
  for (int64_t i : c.recovered.missing()) to.push_back(c.workers[size_t(i)]);
  if (c.phase == Phase::resizing)  // a leaver's may have been lost: it sends nothing
    for (const std::string& w : self->state.reshape.old_workers)
      if (!has(c.workers, w)) to.push_back(w);
  for (const std::string& w : to) {
    ActorMessage m = c.recover_message;
    m.to = w;
    self->send(self->state.router, std::move(m));
  }
}

void reshape_past_deadline(Self* self, time_point t) {
  auto& s = self->state;
  const int64_t limit_ms = s.opt.config.fault_tolerance.recovery_timeout_ms;
  if (s.core.phase != Phase::resizing || t - s.reshape.boundary <= ms(limit_ms)) return;
  abort_active(self, "",
               fmt::format("not finished within recovery_timeout_ms ({} ms), waiting for {}",
                           limit_ms, waiting_workers(self)),
               false);
}

bool lose_during_reshape(Self* self, const std::string& node, const std::string& why, bool hung) {
  auto& s = self->state;
  auto& rs = s.reshape;
  if (!rs.pending()) return false;
  if (rs.active) {
    if (find_node(rs.old_nodes, node) == std::string::npos &&
        find_node(s.core.nodes, node) == std::string::npos)
      return false;  // not one of the reshape's nodes
    abort_active(self, node, why, hung);
    return true;
  }
  if (find_node(rs.joiners, node) != std::string::npos) {
    abort_standby(self, node, why);
    return true;
  }
  if (has(rs.draining, node)) {  // lost before it could leave: a plain loss now
    rs.draining.erase(std::find(rs.draining.begin(), rs.draining.end(), node));
    if (rs.draining.empty()) rs = ReshapeState{};
  }
  return false;
}

}  // namespace troupe::actors::coordinator_impl
