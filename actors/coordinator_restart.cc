// A coordinator restarted after the last one died (DESIGN §4, §8): it rebuilds the view and
// the committed step from the journal (restart_state), listens where the lost one did, and
// waits for the members to rejoin (node_agent.cc: a node that lost its coordinator keeps its
// roles and reconnects; its Rejoin or any message from it counts). Then every member that
// came back returns to the committed step under a new epoch, as in any recovery: when all
// are back nothing is rolled back; a member that does not come back within the window is a
// lost node (its share from a buddy copy, or the last fallback). A node that is not a member
// of the journal's view is fenced: told to shut down. Memory nodes (troupe node --role
// engram) are journaled with each view and rejoin the same way; the Engram holders come
// from the journal's engram_holders record.
#include <fmt/format.h>

#include <algorithm>

#include "actors/coordinator_state.h"
#include "runtime/router.h"

namespace troupe::actors::coordinator_impl {

namespace {

int64_t number_after(const std::string& s, char sep) {
  const size_t at = s.rfind(sep);
  try {
    return at == std::string::npos ? -1 : std::stoll(s.substr(at + 1));
  } catch (const std::exception&) {
    return -1;
  }
}

std::string join(const std::vector<std::string>& ids) {
  std::string out;
  for (const std::string& id : ids) out += (out.empty() ? "" : ", ") + id;
  return out;
}

// The journal's member (worker's node or memory node) `id`, or null.
NodeInfo* member(Membership& c, const std::string& id) {
  for (std::vector<NodeInfo>* list : {&c.nodes, &c.memory})
    for (NodeInfo& n : *list)
      if (n.id == id) return &n;
  return nullptr;
}

duration rejoin_window(Self* self) {
  return ms(
      std::max<int64_t>(2000, 5 * self->state.opt.config.fault_tolerance.heartbeat_timeout_ms));
}

void finish_rejoin(Self* self) {
  auto& s = self->state;
  auto& c = s.core;
  std::vector<std::string> missing, memory_lost;
  for (const NodeInfo& n : c.nodes)
    if (!c.rejoined.count(n.id)) missing.push_back(n.id);
  // A memory node that did not come back is dropped here: the recovery below replaces its
  // holders from the others (or fails, naming the shard, when a shard kept none).
  std::erase_if(c.memory, [&](const NodeInfo& n) {
    return !c.rejoined.count(n.id) && (memory_lost.push_back(n.id), true);
  });
  event(self, "rejoined",
        fmt::format(
            "{} of {} nodes{} rejoined the restarted coordinator in {:.0f} ms{}{}",
            c.nodes.size() - missing.size(), c.nodes.size(),
            c.memory.size() + memory_lost.size() == 0
                ? std::string()
                : fmt::format(" and {} of {} memory nodes", c.memory.size(),
                              c.memory.size() + memory_lost.size()),
            std::chrono::duration<double, std::milli>(now(self) - c.started).count(),
            missing.empty() ? std::string() : "; lost: " + join(missing),
            memory_lost.empty() ? std::string() : "; memory nodes lost: " + join(memory_lost)),
        {{"duration_ms", std::chrono::duration<double, std::milli>(now(self) - c.started).count()},
         {"missing", missing},
         {"memory_missing", memory_lost}});
  if (missing.size() == c.nodes.size()) {
    JobResult r;
    r.error = "no node rejoined the restarted coordinator: nothing to go on with";
    r.steps_done = s.drv.step;
    r.nothing_rejoined = true;
    return end_job(self, std::move(r));
  }
  // A recovery the last coordinator died in goes on from its base (recover_without's
  // "again"): its Recover names the workers as the survivors know them.
  c.recovery_base = s.opt.restart->recovery_base;
  if (c.recovery_base.empty())
    enter_phase(self, Phase::running);
  else
    c.phase = Phase::recovering;
  if (missing.empty())
    return recover_without(self, std::string::npos,
                           memory_lost.empty()
                               ? "the coordinator restarted; every node rejoined"
                               : "the coordinator restarted; every worker's node rejoined",
                           {{"coordinator_restart", true}});
  for (const std::string& id : missing) {
    size_t k = 0;
    while (k < c.nodes.size() && c.nodes[k].id != id) ++k;
    if (c.workers.size() == 1) return fail(self, "no node left after the coordinator restart");
    recover_without(self, k,
                    fmt::format("node {} did not rejoin the restarted coordinator within {} ms", id,
                                std::chrono::duration_cast<ms>(rejoin_window(self)).count()),
                    {{"node", id}, {"coordinator_restart", true}});
  }
}

}  // namespace

void begin_rejoin(Self* self) {
  auto& s = self->state;
  auto& c = s.core;
  const RestartState& r = *s.opt.restart;
  if (engram_sharded(self)) {  // the holders as journaled; the recovery replaces the missing
    if (r.engram_holders.empty())
      return fail(self,
                  "the journal names no engram_shard holders (a journal of an older troupe?): "
                  "restart the job from its checkpoint with --resume");
    s.engram.holders = r.engram_holders;
    s.engram.awaiting = {r.engram_awaiting.begin(), r.engram_awaiting.end()};
  }
  c.epoch = r.epoch;
  self->send(s.router, runtime::epoch_atom::value, c.epoch);
  for (const RestartState::Member& m : r.members) {
    NodeInfo n;
    n.id = m.id, n.address = m.address, n.pid = m.pid, n.last_heard = now(self);
    c.nodes.push_back(n);
    c.workers.push_back(m.worker);
    c.role_index.push_back(number_after(m.worker, '.'));
    c.joins = std::max<int64_t>(c.joins, number_after(m.id, 'n'));
    s.controls.next_worker_index = std::max(s.controls.next_worker_index, c.role_index.back() + 1);
    self->send(s.router, runtime::address_atom::value, m.id, m.address);
  }
  for (const RestartState::Member& m : r.memory) {  // they rejoin as the others do
    NodeInfo n;
    n.id = m.id, n.address = m.address, n.pid = m.pid, n.last_heard = now(self);
    c.memory.push_back(n);
    self->send(s.router, runtime::address_atom::value, m.id, m.address);
  }
  c.joins = std::max(c.joins, r.max_node);  // a fenced newcomer's id is not given again
  s.drv.step = s.drv.committed = r.committed;
  c.phase = Phase::rejoining;
  event(self, "coordinator_restarted",
        fmt::format(
            "rebuilt from the journal: epoch {}, {} nodes{}, {} steps committed{}; "
            "waiting up to {} ms for the nodes to rejoin",
            c.epoch, c.nodes.size(),
            c.memory.empty() ? std::string() : fmt::format(" and {} memory nodes", c.memory.size()),
            r.committed,
            r.reshape_undone ? "; the reshape it died in is undone (its newcomers are "
                               "fenced, its leavers stay)"
                             : "",
            std::chrono::duration_cast<ms>(rejoin_window(self)).count()),
        {{"nodes", c.nodes.size()}, {"step", r.committed}, {"reshape_undone", r.reshape_undone}});
}

void note_rejoined(Self* self, const std::string& node, const ActorMessage&) {
  auto& c = self->state.core;
  if (c.phase != Phase::rejoining || !member(c, node)) return;
  if (!c.rejoined.insert(node).second) return;
  if (c.rejoined.size() == c.nodes.size() + c.memory.size()) finish_rejoin(self);
}

void on_rejoin(Self* self, const control::Rejoin& r, const ActorMessage& m) {
  auto& s = self->state;
  auto& c = s.core;
  NodeInfo* it = member(c, r.node_id());
  if (!it) {  // not a member of the view this coordinator restarted from
    control::Shutdown sd;
    sd.set_reason("fenced: this node is not a member of the job's view (epoch " +
                  std::to_string(c.epoch) + ")");
    sd.set_evicted_epoch(c.epoch);  // it was lost before: its launcher may replace it now
    send_to(self, r.node_id() + "/agent.0", runtime::shutdown_type, sd);
    event(self, "fenced", sd.reason(),
          {{"node", r.node_id()}, {"pid", r.pid()}, {"evicted_epoch", c.epoch}});
    return;
  }
  if (!r.address().empty()) it->address = r.address();
  if (r.pid() != 0) it->pid = r.pid();
  it->last_heard = now(self);
  note_rejoined(self, r.node_id(), m);
}

bool rejoin_deadline(Self* self, time_point t) {
  auto& c = self->state.core;
  if (c.phase != Phase::rejoining || t - c.started <= rejoin_window(self)) return false;
  finish_rejoin(self);
  return true;
}

}  // namespace troupe::actors::coordinator_impl
