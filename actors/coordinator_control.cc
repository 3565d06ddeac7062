// The operator's requests as the coordinator answers them (the control endpoint's POSTs,
// through ask_coordinator) and the job's status (GET /status). A request that cannot be
// done is refused with the reason and changes nothing; one that can takes effect at the
// next step boundary (coordinator_reshape.cc).
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "actors/coordinator_state.h"

namespace troupe::actors::coordinator_impl {

namespace {

bool job_running(Phase p) {
  return p == Phase::running || p == Phase::recovering || p == Phase::resizing;
}

std::string scale(Self* self, int64_t n, int64_t* start_nodes) {
  auto& s = self->state;
  auto& rs = s.reshape;
  const int64_t cur = int64_t(s.core.nodes.size());
  if (n < 1) return fmt::format("nodes must be at least 1, got {}", n);
  if (n < s.opt.min_nodes)
    return fmt::format("{} node(s) is fewer than --min-nodes {}", n, s.opt.min_nodes);
  if (rs.pending()) return fmt::format("{} is in progress; ask again once it is done", rs.what);
  if (n == cur) return "";
  rs = ReshapeState{};
  rs.what = fmt::format("scale {} → {}", cur, n);
  rs.asked = now(self);
  if (n > cur) {
    rs.joiners_wanted = n - cur;
    *start_nodes = n - cur;
  } else {
    for (int64_t k = n; k < cur; ++k) rs.draining.push_back(s.core.nodes[size_t(k)].id);
  }
  event(self, "scale_requested", rs.what, {{"nodes", n}, {"from_nodes", cur}});
  return "";
}

std::string drain(Self* self, const std::string& node) {
  auto& s = self->state;
  auto& rs = s.reshape;
  const auto& nodes = s.core.nodes;
  if (std::none_of(nodes.begin(), nodes.end(), [&](const NodeInfo& n) { return n.id == node; }))
    return fmt::format("no node '{}' in the job (its nodes: {})", node, [&] {
      std::string ids;
      for (const NodeInfo& n : nodes) ids += (ids.empty() ? "" : ", ") + n.id;
      return ids;
    }());
  if (int64_t(nodes.size()) - 1 < std::max<int64_t>(1, s.opt.min_nodes))
    return fmt::format("draining {} would leave {} node(s); the job needs at least {}", node,
                       nodes.size() - 1, std::max<int64_t>(1, s.opt.min_nodes));
  if (rs.pending()) return fmt::format("{} is in progress; ask again once it is done", rs.what);
  rs = ReshapeState{};
  rs.what = fmt::format("drain {}", node);
  rs.asked = now(self);
  rs.draining = {node};
  event(self, "drain_requested", rs.what, {{"node", node}});
  return "";
}

// A local node process was lost and is being restarted ([fault_tolerance] replace_lost): it
// joins as a new member by the scale-up path.
std::string replace(Self* self, int64_t* start_nodes) {
  auto& rs = self->state.reshape;
  if (rs.active || !rs.draining.empty())
    return fmt::format("{} is in progress: the lost node is not replaced", rs.what);
  if (rs.joiners_wanted == 0) {
    rs = ReshapeState{};
    rs.what = "replace a lost node";
    rs.asked = now(self);
  } else {
    rs.what += " (and replace a lost node)";
  }
  ++rs.joiners_wanted;
  *start_nodes = 1;
  return "";
}

}  // namespace

std::string on_control(Self* self, const std::string& kind, int64_t nodes, const std::string& node,
                       int64_t* start_nodes) {
  auto& s = self->state;
  *start_nodes = 0;
  if (!job_running(s.core.phase))
    return fmt::format("the job is not running (it is {})", phase_name(s.core.phase));
  if (kind == "scale") return scale(self, nodes, start_nodes);
  if (kind == "drain") return drain(self, node);
  if (kind == "replace") return replace(self, start_nodes);
  if (kind == "pause") {
    if (s.controls.paused) return "the job is paused already";
    s.controls.paused = true;
    event(self, "pause_requested", "training pauses at the next step boundary");
    return "";
  }
  if (kind == "resume") {
    if (!s.controls.paused) return "the job is not paused";
    s.controls.paused = false;
    event(self, "training_resumed", fmt::format("training goes on at step {}", s.drv.step));
    if (std::exchange(s.controls.parked, false) && s.core.phase == Phase::running)
      start_or_finish(self);
    return "";
  }
  if (kind == "checkpoint") {
    if (s.opt.job.run_dir.empty()) return "the job has no run directory to write checkpoints to";
    s.controls.checkpoint_now = true;
    if (s.controls.parked) hold_at_boundary(self);  // paused: write it now
    return "";
  }
  if (kind == "engram_detach") return ask_engram_op(self, EngramOp{false, "", ""});
  if (kind == "engram_attach") {
    const nlohmann::json a = nlohmann::json::parse(node, nullptr, false);
    if (!a.is_object() || !a.value("name", nlohmann::json()).is_string() ||
        !a.value("path", nlohmann::json("")).is_string())
      return "engram attach: want {\"name\": NAME, \"path\": FILE (optional)}";
    return ask_engram_op(
        self, EngramOp{true, a["name"].get<std::string>(), a.value("path", std::string())});
  }
  return fmt::format("unknown request '{}'", kind);
}

std::string status_json(Self* self) {
  auto& s = self->state;
  const auto t = now(self);
  nlohmann::json nodes = nlohmann::json::array();
  const auto add = [&](const NodeInfo& n, const std::string& state, const std::string& worker) {
    nodes.push_back(
        {{"id", n.id},
         {"host", n.address},
         {"pid", n.pid},
         {"role", "worker"},
         {"worker", worker},
         {"state", state},
         {"heartbeat_age_ms",
          std::chrono::duration_cast<std::chrono::milliseconds>(t - n.last_heard).count()}});
  };
  const auto& c = s.core;
  const auto& rs = s.reshape;
  for (size_t i = 0; i < c.nodes.size(); ++i)
    add(c.nodes[i],
        std::find(rs.draining.begin(), rs.draining.end(), c.nodes[i].id) != rs.draining.end()
            ? "draining"
            : "active",
        i < c.workers.size() ? c.workers[i] : "");
  for (const NodeInfo& n : rs.leaving) add(n, "leaving", "");
  for (const NodeInfo& n : c.memory) add(n, "memory", "");
  for (size_t j = 0; j < rs.joiners.size(); ++j)
    add(rs.joiners[j], j < rs.standby.size() ? "standby" : "joining",
        j < rs.standby.size() ? rs.standby[j] : "");
  return nlohmann::json{{"phase", phase_name(c.phase)},
                        {"epoch", c.epoch},
                        {"step", s.drv.step},
                        {"committed_step", s.drv.committed},
                        {"steps", s.opt.config.train.steps},
                        {"paused", s.controls.paused},
                        {"nodes", nodes},
                        {"reshape", rs.pending() ? rs.what : ""},
                        {"recoveries", c.recoveries},
                        {"last_recovery", s.controls.last_recovery},
                        {"last_reshape", s.controls.last_reshape},
                        {"last_checkpoint", s.controls.last_checkpoint},
                        {"engram_sets", engram_sets_status(self)}}
      .dump();
}

}  // namespace troupe::actors::coordinator_impl
