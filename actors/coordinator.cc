#include "actors/coordinator.h"

#include <fmt/format.h>

#include <caf/all.hpp>

#include "actors/protocol.h"
#include "model/dp_plan.h"
#include "model/optim.h"
#include "runtime/control.pb.h"

namespace troupe::actors {

namespace {

using runtime::ActorMessage;
using clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;
using stop_atom = caf::atom_constant<caf::atom("stop")>;

struct NodeInfo {
  std::string id, address;
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
  uint64_t epoch = 0;
  std::vector<NodeInfo> nodes;
  std::vector<std::string> workers;  // addresses by index; worker i lives on nodes[i]
  std::vector<int64_t> role_index;   // worker i's role index (its name; kept across recoveries)
  int64_t n_mb = 0;
  // Readiness and the step in flight.
  int64_t ready = 0;
  int64_t state_floats_max = 0, state_floats_total = 0;  // from the workers' Ready
  uint64_t initial_hash = 0;
  int64_t step = 0;
  int64_t committed = 0;  // train steps every worker applied (StepDone from all)
  int64_t recovered_in = 0, recoveries = 0;
  std::vector<bool> recovered;  // by new worker index, during a recovery
  clock::time_point step_started, recovery_started;
  std::vector<model::Piece<float>> pieces;
  int64_t stats_in = 0, norms_in = 0, done_in = 0, val_in = 0, finals_in = 0;
  std::vector<std::vector<double>> norm_parts;  // by worker (owner order = table order)
  std::vector<model::Piece<float>> val_pieces;
  StepReport report;
  JobResult result;
  uint64_t rejected = 0, stale = 0;
  static inline const char* name = "coordinator";
};
using Self = caf::stateful_actor<CoordinatorState>;

void event(Self* self, const std::string& kind, const std::string& text) {
  if (self->state.opt.on_event) self->state.opt.on_event(kind, text);
}

template <class Proto>
void send_to(Self* self, const std::string& to, uint32_t type, const Proto& body,
             std::vector<runtime::Payload> payloads = {}) {
  ActorMessage m = make_message(self->state.self_address, to, type, body);
  m.payloads = std::move(payloads);
  self->send(self->state.router, std::move(m));
}

void to_all_workers(Self* self, uint32_t type, const google::protobuf::Message& body,
                    const std::vector<runtime::Payload>& payloads = {}) {
  for (const std::string& w : self->state.workers) {
    ActorMessage m = make_message(self->state.self_address, w, type, body);
    m.payloads = payloads;
    self->send(self->state.router, std::move(m));
  }
}

void shutdown_nodes(Self* self, const std::string& reason) {
  control::Shutdown sd;
  sd.set_reason(reason);
  for (const NodeInfo& n : self->state.nodes)
    send_to(self, n.id + "/agent.0", runtime::shutdown_type, sd);
}

void end_job(Self* self, JobResult result) {
  auto& s = self->state;
  if (s.phase == Phase::done) return;
  s.phase = Phase::done;
  shutdown_nodes(self, result.ok ? "the job ended" : result.error);
  if (!result.ok) event(self, "job_failed", result.error);
  if (s.opt.on_done) s.opt.on_done(result);
  self->quit();
}

void fail(Self* self, const std::string& why) {
  JobResult r;
  r.error = why;
  r.steps_done = self->state.step;
  end_job(self, std::move(r));
}

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
    event(self, "join_refused", fmt::format("a node from {} after the job started", m.header));
    return;
  }
  NodeInfo n;
  n.id = fmt::format("n{}", s.nodes.size() + 1);
  n.address = m.header;
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
  w.set_heartbeat_interval_ms(uint32_t(s.opt.config.fault_tolerance.heartbeat_interval_ms));
  ActorMessage r = make_message(s.self_address, n.id + "/agent.0", runtime::welcome_type, w);
  r.peer = n.peer;
  self->send(s.router, std::move(r));
  event(self, "join", fmt::format("{} at {} (epoch {})", n.id, n.address, s.epoch));
  s.nodes.push_back(n);
  if (int64_t(s.nodes.size()) < s.opt.nodes) return;
  // Worker i lives on node i+1 as index i.
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    s.workers.push_back(runtime::make_address(s.nodes[i].id, "worker", int64_t(i)));
    s.role_index.push_back(int64_t(i));
  }
  s.phase = Phase::starting;
  bump_epoch(self);
  publish_view(self);
}

void begin_step(Self* self, train::Kind kind) {
  auto& s = self->state;
  train::StepBegin b;
  b.set_step(s.step);
  b.set_kind(kind);
  if (kind == train::TRAIN) {
    s.pieces.clear();
    s.norm_parts.assign(s.workers.size(), {});
    s.stats_in = s.norms_in = s.done_in = 0;
    s.step_started = clock::now();
  } else {
    s.val_pieces.clear();
    s.val_in = 0;
  }
  to_all_workers(self, step_begin_type, b);
}

void start_or_finish(Self* self) {
  auto& s = self->state;
  if (s.step < s.opt.config.train.steps) return begin_step(self, train::TRAIN);
  s.phase = Phase::finishing;
  s.finals_in = 0;
  to_all_workers(self, finish_type, train::Finish{});
}

bool read_pieces(const ActorMessage& m, const train::Stats& st,
                 std::vector<model::Piece<float>>* out) {
  if (st.pieces_size() != int(m.payloads.size())) return false;
  for (int i = 0; i < st.pieces_size(); ++i) {
    const auto& ps = st.pieces(i);
    model::Piece<float> p;
    p.node = {ps.node().lo(), ps.node().hi()};
    p.parts.ce = ps.ce(), p.parts.mtp = ps.mtp(), p.parts.bal = ps.bal();
    p.parts.ce_sum = ps.ce_sum(), p.parts.ce_count = ps.ce_count();
    if (!unflatten_counts(ps.count_layers(), m.payloads[size_t(i)], &p.counts)) return false;
    out->push_back(std::move(p));
  }
  return true;
}

void try_apply(Self* self) {
  auto& s = self->state;
  const int64_t W = int64_t(s.workers.size());
  if (s.stats_in < W || s.norms_in < W) return;
  std::vector<std::vector<int64_t>> counts;
  const model::LossParts<float> lp = model::combine_pieces(s.pieces, s.n_mb, &counts);
  std::vector<double> parts;
  for (const auto& p : s.norm_parts) parts.insert(parts.end(), p.begin(), p.end());
  model::StepStats& st = s.report.stats;
  st = {};
  st.step = s.step;
  st.ce = lp.ce, st.mtp = lp.mtp, st.bal = lp.bal, st.loss = lp.total();
  st.tokens = lp.ce_count;
  st.lr = model::lr_at(s.opt.config.train, s.step);
  st.grad_norm = model::grad_norm_from_parts(parts);
  train::Apply a;
  a.set_step(s.step);
  a.set_clip_scale(model::clip_scale(s.opt.config.train.grad_clip, st.grad_norm));
  std::vector<int64_t> flat;
  flatten_counts(counts, a.mutable_count_layers(), &flat);
  to_all_workers(self, apply_type, a, {owned_payload(std::move(flat))});
}

void finish_step(Self* self) {
  auto& s = self->state;
  if (s.opt.on_step) s.opt.on_step(s.report);
  ++s.step;
  start_or_finish(self);
}

void on_stats(Self* self, const ActorMessage& m, const train::Stats& st) {
  auto& s = self->state;
  const bool val = st.kind() == train::VALIDATE;
  if (st.step() != s.step || s.phase != Phase::running) return (void)++s.rejected;
  if (!read_pieces(m, st, val ? &s.val_pieces : &s.pieces))
    return fail(self, "malformed Stats from " + m.from);
  if (!val) {
    ++s.stats_in;
    return try_apply(self);
  }
  if (++s.val_in < int64_t(s.workers.size())) return;
  const int64_t n_val = s.val_pieces.empty() ? 0 : [&] {
    int64_t hi = 0;
    for (const auto& p : s.val_pieces) hi = std::max(hi, p.node.hi);
    return hi;
  }();
  const model::LossParts<float> lp = model::combine_pieces(s.val_pieces, n_val, nullptr);
  s.report.has_val = true;
  s.report.val_loss = lp.ce_count > 0 ? double(lp.ce_sum) / double(lp.ce_count) : 0.0;
  finish_step(self);
}

void on_step_done(Self* self) {
  auto& s = self->state;
  if (++s.done_in < int64_t(s.workers.size())) return;
  s.committed = s.step + 1;
  s.report.seconds = std::chrono::duration<double>(clock::now() - s.step_started).count();
  s.report.has_val = false;
  const auto& t = s.opt.config.train;
  const bool val = (t.eval_every > 0 && (s.step + 1) % t.eval_every == 0) || s.step + 1 == t.steps;
  if (val) return begin_step(self, train::VALIDATE);
  finish_step(self);
}

void on_final(Self* self, const ActorMessage& m, const train::Final& f) {
  auto& s = self->state;
  if (s.finals_in == 0) s.result.weights_hash = f.weights_hash();
  if (f.weights_hash() != s.result.weights_hash)
    return fail(self, fmt::format("worker {} ends with weights {:016x}, worker 0 with {:016x}: "
                                  "the replicas diverged",
                                  f.worker(), f.weights_hash(), s.result.weights_hash));
  if (f.worker() == 0 &&
      (m.payloads.size() != 1 || !read_payload(m.payloads[0], &s.result.weights)))
    return fail(self, "worker 0 sent no weights with its Final");
  if (++s.finals_in < int64_t(s.workers.size())) return;
  s.result.ok = true;
  s.result.steps_done = s.step;
  s.result.recoveries = s.recoveries;
  end_job(self, s.result);
}

// A node is lost mid-run (endpoint error, missed heartbeats). With recovery on and the
// job running, the survivors go back to the committed step under a new epoch and take
// over its share; else the job stops with the reason.
void lose_node(Self* self, const std::string& node, const std::string& why, bool hung) {
  auto& s = self->state;
  if (s.phase == Phase::done) return;
  size_t k = 0;
  while (k < s.nodes.size() && s.nodes[k].id != node) ++k;
  if (k == s.nodes.size()) return;  // not one of the job's nodes (any more): old news
  const std::string what = fmt::format("node {} lost at step {}: {}", node, s.step, why);
  if (!s.opt.config.fault_tolerance.recover)
    return fail(self, what + " (fault_tolerance.recover = false)");
  if (s.phase == Phase::recovering)
    return fail(self, what + ", during a recovery: in-memory recovery takes one loss at a time");
  if (s.phase != Phase::running)
    return fail(self, what + " (recovery covers the training steps, not the start or the end)");
  const int64_t old_n = int64_t(s.workers.size());
  if (old_n == 1) return fail(self, what + ": it was the last node");
  if (hung) {  // it may wake up: tell it to leave (the new epoch fences it anyway)
    control::Shutdown sd;
    sd.set_reason("this node was declared lost; the job goes on without it");
    send_to(self, node + "/agent.0", runtime::shutdown_type, sd);
  }
  train::Recover r;
  r.set_version(s.committed);
  r.set_old_workers(old_n);
  for (int64_t i = 0; i < old_n; ++i) {
    if (size_t(i) == k) continue;
    r.add_workers(s.workers[size_t(i)]);
    r.add_old_index(i);
  }
  self->send(s.router, runtime::forget_atom::value, node);  // fenced: no flush, no waiting
  s.nodes.erase(s.nodes.begin() + int64_t(k));
  s.workers.erase(s.workers.begin() + int64_t(k));
  s.role_index.erase(s.role_index.begin() + int64_t(k));
  bump_epoch(self);
  publish_view(self);
  s.phase = Phase::recovering;
  s.recovered_in = 0;
  s.recovered.assign(s.workers.size(), false);
  ++s.recoveries;
  s.recovery_started = clock::now();
  event(self, "recover",
        fmt::format("{}; {} workers go back to step {} (epoch {})", what, s.workers.size(),
                    s.committed, s.epoch));
  to_all_workers(self, recover_type, r);
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
  begin_step(self, s.committed > s.step ? train::VALIDATE : train::TRAIN);
}

void on_message(Self* self, ActorMessage& m) {
  auto& s = self->state;
  auto heard = [&] {
    for (NodeInfo& n : s.nodes)
      if (n.id == runtime::node_of(m.from)) n.last_heard = clock::now();
  };
  heard();
  // A role's message from before the last view change: the step it belongs to was
  // aborted (the fabric drops these too, once the router has passed the new epoch on).
  if (m.type >= runtime::control_types_end && m.epoch < s.epoch) return (void)++s.stale;
  switch (m.type) {
    case runtime::join_type:
      return on_join(self, m);
    case runtime::heartbeat_type:
      return;
    case runtime::node_error_type: {
      control::NodeError e;
      (void)e.ParseFromString(m.header);
      return fail(self, e.text());
    }
    case ready_type: {
      train::Ready r;
      if (!r.ParseFromString(m.header) || s.phase != Phase::starting) return (void)++s.rejected;
      if (s.ready == 0) s.initial_hash = r.weights_hash();
      if (r.weights_hash() != s.initial_hash)
        return fail(self, fmt::format("worker {} starts from other weights ({:016x} vs {:016x})",
                                      r.worker(), r.weights_hash(), s.initial_hash));
      s.state_floats_max = std::max(s.state_floats_max, r.optimizer_state_floats());
      s.state_floats_total += r.optimizer_state_floats();
      if (++s.ready < int64_t(s.workers.size())) return;
      s.phase = Phase::running;
      event(self, "start",
            fmt::format("{} workers ready, {} parameters; optimizer state (ZeRO-1) at most "
                        "{:.2f} MiB per worker, {:.2f} MiB in all",
                        s.ready, r.parameters(), double(s.state_floats_max) * 4 / (1 << 20),
                        double(s.state_floats_total) * 4 / (1 << 20)));
      return start_or_finish(self);
    }
    case stats_type: {
      train::Stats st;
      if (!st.ParseFromString(m.header)) return fail(self, "malformed Stats from " + m.from);
      return on_stats(self, m, st);
    }
    case norm_parts_type: {
      train::NormParts np;
      std::vector<double> parts;
      if (!np.ParseFromString(m.header) || np.worker() < 0 ||
          np.worker() >= int64_t(s.workers.size()) || m.payloads.size() != 1 ||
          !read_payload(m.payloads[0], &parts))
        return fail(self, "malformed NormParts from " + m.from);
      if (np.step() != s.step || s.phase != Phase::running) return (void)++s.rejected;
      s.norm_parts[size_t(np.worker())] = std::move(parts);
      ++s.norms_in;
      return try_apply(self);
    }
    case step_done_type: {
      train::StepDone d;
      if (!d.ParseFromString(m.header) || d.step() != s.step || s.phase != Phase::running)
        return (void)++s.rejected;
      return on_step_done(self);
    }
    case recovered_type: {
      train::Recovered r;
      if (!r.ParseFromString(m.header)) return (void)++s.rejected;
      return on_recovered(self, r);
    }
    case final_type: {
      train::Final f;
      if (!f.ParseFromString(m.header) || s.phase != Phase::finishing) return (void)++s.rejected;
      return on_final(self, m, f);
    }
    default:
      if (++s.rejected <= 5)
        fmt::print(stderr, "troupe coordinator: unexpected message type {} from {}\n", m.type,
                   m.from);
  }
}

caf::behavior coordinator(Self* self, caf::actor router, CoordinatorOptions options) {
  auto& s = self->state;
  s.opt = std::move(options);
  s.router = router;
  s.n_mb = s.opt.config.train.batch_size / s.opt.config.train.micro_batch_rows;
  self->send(router, runtime::register_atom::value, std::string("coordinator.0"), caf::actor(self));
  self->send(router, runtime::watch_atom::value, caf::actor(self));
  self->send(self, runtime::tick_atom::value);
  return {
      [=](ActorMessage& m) { on_message(self, m); },
      [=](runtime::tick_atom) {
        auto& st = self->state;
        const auto now = clock::now();
        if ((st.phase == Phase::joining || st.phase == Phase::starting) &&
            now - st.started > ms(st.opt.config.fault_tolerance.start_timeout_ms))
          return fail(self, fmt::format("the job did not start within {} s: {} of {} nodes joined, "
                                        "{} workers ready",
                                        st.opt.config.fault_tolerance.start_timeout_ms / 1000,
                                        st.nodes.size(), st.opt.nodes, st.ready));
        const auto& ft = st.opt.config.fault_tolerance;
        if (st.phase == Phase::recovering &&
            now - st.recovery_started > ms(ft.recovery_timeout_ms)) {
          std::string waiting;
          for (size_t i = 0; i < st.workers.size(); ++i)
            if (!st.recovered[i]) waiting += (waiting.empty() ? "" : ", ") + st.workers[i];
          return fail(self, fmt::format("the recovery at step {} did not finish within {} ms; "
                                        "waiting for {}",
                                        st.committed, ft.recovery_timeout_ms, waiting));
        }
        for (const NodeInfo& n : st.nodes)
          if (now - n.last_heard > ms(st.opt.config.fault_tolerance.heartbeat_timeout_ms)) {
            lose_node(self, n.id,
                      fmt::format("missed heartbeats for {} ms: declared dead",
                                  st.opt.config.fault_tolerance.heartbeat_timeout_ms),
                      true);
            break;  // `nodes` changed
          }
        if (st.phase == Phase::done) return;
        self->delayed_send(self, std::chrono::milliseconds(100), runtime::tick_atom::value);
      },
      [=](runtime::node_down_atom, const std::string& node, const std::string& why) {
        lose_node(self, node, why, false);
      },
      [=](stop_atom, const std::string& why) { fail(self, why); },
  };
}

}  // namespace

caf::actor spawn_coordinator(runtime::Host& host, CoordinatorOptions options) {
  return host.actor_system().spawn(coordinator, host.router(), std::move(options));
}

void request_stop(const caf::actor& coordinator, const std::string& why) {
  caf::anon_send(coordinator, stop_atom::value, why);
}

}  // namespace troupe::actors
