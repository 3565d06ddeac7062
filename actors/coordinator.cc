#include "actors/coordinator.h"

#include <fmt/format.h>

#include <algorithm>
#include <caf/all.hpp>
#include <cstring>
#include <utility>

#include "actors/coordinator_state.h"
#include "optim/optim.h"
#include "runtime/control.pb.h"
#include "runtime/liveness.h"
#include "train/dp_plan.h"

namespace troupe::actors {

namespace coordinator_impl {

void event(Self* self, const std::string& kind, const std::string& text) {
  if (self->state.opt.on_event) self->state.opt.on_event(kind, text);
}

void to_all_workers(Self* self, uint32_t type, const google::protobuf::Message& body,
                    const std::vector<runtime::Payload>& payloads) {
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

void begin_step(Self* self, train::Kind kind) {
  auto& s = self->state;
  train::StepBegin b;
  b.set_step(s.step);
  b.set_kind(kind);
  if (kind == train::TRAIN) {
    s.pieces.clear();
    s.norm_parts.assign(s.workers.size(), {});
    s.engram_sumsq.assign(s.workers.size(), 0.0);
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
  for (size_t w = 1; w < s.engram_sumsq.size(); ++w)
    if (std::memcmp(&s.engram_sumsq[w], &s.engram_sumsq[0], sizeof(double)) != 0)
      return fail(self, fmt::format("worker {} reduced another Engram gradient than worker 0 "
                                    "(sum of squares {} vs {}): the replicas diverged",
                                    w, s.engram_sumsq[w], s.engram_sumsq[0]));
  st.grad_norm = model::global_norm_with_engram(
      s.opt.config.model, model::grad_norm_from_parts(parts), s.engram_sumsq.at(0));
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

// Worker 0's weights: the parameters, then each Engram table.
bool read_final_weights(const ActorMessage& m, const model::ModelConfig& cfg, JobResult* out) {
  const std::vector<model::EngramTableInfo> tables = model::engram_tables(cfg);
  if (m.payloads.size() != 1 + tables.size() || !read_payload(m.payloads[0], &out->weights))
    return false;
  out->engram_tables.assign(tables.size(), {});
  for (size_t t = 0; t < tables.size(); ++t)
    if (!read_payload(m.payloads[1 + t], &out->engram_tables[t]) ||
        int64_t(out->engram_tables[t].size()) != tables[t].rows * tables[t].dim)
      return false;
  return true;
}

void on_final(Self* self, const ActorMessage& m, const train::Final& f) {
  auto& s = self->state;
  if (s.finals_in == 0) s.result.weights_hash = f.weights_hash();
  if (f.weights_hash() != s.result.weights_hash)
    return fail(self, fmt::format("worker {} ends with weights {:016x}, worker 0 with {:016x}: "
                                  "the replicas diverged",
                                  f.worker(), f.weights_hash(), s.result.weights_hash));
  if (f.worker() == 0 && !read_final_weights(m, s.opt.config.model, &s.result))
    return fail(self, "worker 0 sent no weights (or Engram tables that do not fit) with its Final");
  if (++s.finals_in < int64_t(s.workers.size())) return;
  s.result.ok = true;
  s.result.steps_done = s.step;
  s.result.recoveries = s.recoveries;
  end_job(self, s.result);
}

}  // namespace coordinator_impl

namespace {

using namespace coordinator_impl;
using stop_atom = caf::atom_constant<caf::atom("stop")>;

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
      if (!r.ParseFromString(m.header)) return (void)++s.rejected;
      return on_ready(self, r);
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
      s.engram_sumsq[size_t(np.worker())] = np.engram_sumsq();
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
        const ms period(st.opt.config.fault_tolerance.heartbeat_interval_ms);
        // The coordinator itself was not running: the nodes' silence over that gap was not
        // observed, so it is not held against them, and the deadlines move by the gap.
        const auto gap = runtime::own_pause(st.last_tick, now, period,
                                            ms(st.opt.config.fault_tolerance.heartbeat_timeout_ms));
        if (gap > clock::duration::zero()) {
          for (NodeInfo& n : st.nodes) n.last_heard = std::max(n.last_heard, now);
          st.started += gap, st.recovery_started += gap;
          event(self, "paused",
                fmt::format("the coordinator did not run for {} ms: no node is declared dead "
                            "for that silence",
                            std::chrono::duration_cast<ms>(gap).count()));
        }
        if ((st.phase == Phase::joining || st.phase == Phase::starting) &&
            now - st.started > ms(st.opt.config.fault_tolerance.start_timeout_ms))
          return fail(self,
                      fmt::format("the job did not start within {} s: {} of {} nodes joined, "
                                  "{} workers ready",
                                  st.opt.config.fault_tolerance.start_timeout_ms / 1000,
                                  st.nodes.size(), st.opt.nodes,
                                  std::count(st.ready_from.begin(), st.ready_from.end(), true)));
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
        control::Heartbeat hb;  // the nodes' sign that this coordinator is not hung
        hb.set_sequence(++st.heartbeats);
        for (const NodeInfo& n : st.nodes)
          send_to(self, n.id + "/agent.0", runtime::heartbeat_type, hb);
        self->delayed_send(self, period, runtime::tick_atom::value);
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
