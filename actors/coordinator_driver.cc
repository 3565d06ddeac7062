// The coordinator's training driver: the data-parallel step protocol on top of the
// membership core. StepBegin → Stats and NormParts from every worker → Apply → StepDone
// from every worker → the commit is recorded (CommitLog), then announced (Commit) → the
// validation, when model::validate_after says so → the next step. Every "have all arrived?"
// is a set of senders keyed by (epoch, step) (receipts.h), so a duplicate changes nothing.
// It decides when; model/step_rules.h computes what (loss line, clip scale, counts).
#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "actors/coordinator_state.h"
#include "actors/invariant.h"
#include "runtime/step_hook.h"
#include "train/dp_plan.h"
#include "train/step_rules.h"
#include "train/trainer.h"

namespace troupe::actors::coordinator_impl {

int64_t committed_version(Self* self) {
  return self->state.drv.committed;
}

namespace {

int64_t worker_count(Self* self) {
  return int64_t(self->state.core.workers.size());
}

void begin_step(Self* self, train::Kind kind) {
  auto& s = self->state;
  auto& d = s.drv;
  const int64_t W = worker_count(self);
  train::StepBegin b;
  std::vector<runtime::Payload> payloads;  // GRPO: the step's rollouts
  b.set_step(d.step);
  b.set_kind(kind);
  if (kind == train::TRAIN) runtime::set_current_step(d.step);  // runtime/step_hook.h
  if (kind == train::TRAIN) {
    d.pieces.clear();
    d.norm_parts.assign(size_t(W), {});
    d.engram_sumsq.assign(size_t(W), 0.0);
    d.stats.open(s.core.epoch, d.step, W);
    d.norms.open(s.core.epoch, d.step, W);
    d.done.open(s.core.epoch, d.step, W);
    d.apply_sent = false;
    d.step_started = now(self);
    d.busy_ms.assign(size_t(W), 0.0);
    d.padding_waste = -1;
    if (pulling(self)) begin_pull(self, &b);
    add_rollouts(self, &b, &payloads);
  } else {
    d.val_pieces.clear();
    d.val.open(s.core.epoch, d.step, W);
  }
  place_experts(self, &b);
  begin_engram_step(self, &b);
  d.in_flight = true;
  d.begun = now(self);
  to_all_workers(self, step_begin_type, b, payloads);
}

}  // namespace

// The next training step, or the end of the job (Finish to every worker) after the last. At
// this step boundary the operator's requests take effect (pause, reshape, checkpoint).
void start_or_finish(Self* self) {
  auto& s = self->state;
  s.drv.in_flight = false;
  if (s.drv.step < s.opt.config.train.steps) {
    if (hold_at_boundary(self) || !rollouts_ready(self) || !placement_ready(self)) return;
    return begin_step(self, train::TRAIN);
  }
  if (pulling(self)) report_pulls(self);
  enter_phase(self, Phase::finishing);
  s.drv.finals.open(s.core.epoch, -1, worker_count(self));
  train::Finish f;
  name_engram_shards(self, f.mutable_engram_shards());
  to_all_workers(self, finish_type, f);
}

namespace {

void finish_step(Self* self) {
  auto& s = self->state;
  if (s.opt.on_step) s.opt.on_step(s.drv.report);
  ++s.drv.step;
  start_or_finish(self);
}

bool read_pieces(const ActorMessage& m, const train::Stats& st,
                 std::vector<model::Piece<float>>* out) {
  if (st.pieces_size() != int(m.payloads.size())) return false;
  for (int i = 0; i < st.pieces_size(); ++i) {
    const auto& ps = st.pieces(i);
    model::Piece<float> p;
    p.node = {ps.node().lo(), ps.node().hi()};
    p.parts.ce = ps.ce(), p.parts.mtp = ps.mtp(), p.parts.bal = ps.bal();
    p.parts.ce_sum = ps.ce_sum(), p.parts.ce_count = ps.ce_count(), p.parts.head = ps.head();
    if (!unflatten_counts(ps.count_layers(), m.payloads[size_t(i)], &p.counts)) return false;
    out->push_back(std::move(p));
  }
  return true;
}

// A train Stats carries exactly the tree pieces of the sender's micro-batches; a validation
// one, pieces that overlap none received before.
Verdict check_piece_nodes(Self* self, const train::Stats& st,
                          const std::vector<model::Piece<float>>& got) {
  auto& d = self->state.drv;
  std::vector<model::TreeNode> nodes;
  for (const auto& p : got) nodes.push_back(p.node);
  if (st.kind() == train::TRAIN && pulling(self)) return {};  // take_pulled_stats checks them
  if (st.kind() == train::TRAIN) {
    const model::TreeNode r = model::plan_ranges(d.n_mb, worker_count(self))[size_t(st.worker())];
    if (nodes != model::tree_pieces(d.n_mb, r.lo, r.hi))
      return drop(Drop::malformed,
                  fmt::format("pieces other than those of micro-batches [{}, {})", r.lo, r.hi));
    return {};
  }
  for (const auto& p : d.val_pieces) nodes.push_back(p.node);
  std::sort(nodes.begin(), nodes.end(),
            [](const model::TreeNode& a, const model::TreeNode& b) { return a.lo < b.lo; });
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].lo < (i == 0 ? 0 : nodes[i - 1].hi) || nodes[i].lo >= nodes[i].hi)
      return drop(Drop::malformed, "validation pieces that overlap or are empty");
  return {};
}

void try_apply(Self* self) {
  auto& s = self->state;
  auto& d = s.drv;
  double engram_sumsq = 0;
  if (d.apply_sent || !(pulling(self) ? pull_complete(self) : d.stats.complete()) ||
      !d.norms.complete())
    return;
  if (!engram_norms_ready(self, &engram_sumsq)) return;
  if (engram_sharded(self)) d.engram_sumsq = {engram_sumsq};  // the shards' Σ, not the workers'
  std::vector<model::TreeNode> nodes;
  d.consumed.clear();
  for (const auto& p : d.pieces) {
    nodes.push_back(p.node);
    d.consumed.emplace_back(p.node.lo, p.node.hi);
  }
  const std::string cover = model::check_cover(nodes, d.n_mb);
  TROUPE_ASSERT(cover.empty(), "step {}: the pieces of {} workers: {}", d.step, worker_count(self),
                cover);
  model::StepReports in{d.step, d.n_mb, std::move(d.pieces), std::move(d.norm_parts),
                        std::move(d.engram_sumsq)};
  const model::StepDecision dec = model::decide_step(s.opt.config, in);
  if (!dec.error.empty()) return fail(self, dec.error);
  d.report.stats = dec.stats;
  d.report.stats.padding_waste = d.padding_waste;
  rollout_stats(self, d.step, &d.report.stats);
  d.report.expert_counts = dec.counts;
  d.apply_sent = true;
  train::Apply a;
  a.set_step(d.step);
  a.set_clip_scale(dec.clip_scale);
  std::vector<int64_t> flat;
  flatten_counts(dec.counts, a.mutable_count_layers(), &flat);
  const std::vector<runtime::Payload> payloads{owned_payload(std::move(flat))};
  to_all_workers(self, apply_type, a, payloads);
  apply_to_engram_shards(self, a, payloads);
}

void finish_validation(Self* self) {
  auto& d = self->state.drv;
  d.report.has_val = true;
  d.report.val_loss = model::validation_loss(d.val_pieces);
  finish_step(self);
}

Verdict on_stats(Self* self, const train::Stats& st, const ActorMessage& m) {
  auto& s = self->state;
  auto& d = s.drv;
  if (Verdict v = check_worker(self, st.worker(), m)) return v;
  const bool val = st.kind() == train::VALIDATE;
  const bool pulled = !val && pulling(self);
  Receipts& round = val ? d.val : d.stats;
  if (!pulled) {
    if (Verdict v = drop_receipt(round.check(s.core.epoch, st.step(), st.worker()), "Stats"))
      return v;
  }
  std::vector<model::Piece<float>> got;
  if (!read_pieces(m, st, &got)) return drop(Drop::malformed, "pieces that do not fit payloads");
  if (Verdict v = check_piece_nodes(self, st, got)) return v;
  const auto count_busy = [&] {
    d.busy_ms[size_t(st.worker())] += std::max(0.0, st.compute_ms());
    if (st.padding_waste() >= 0) d.padding_waste = st.padding_waste();
  };
  if (pulled) {
    if (Verdict v = take_pulled_stats(self, st, got)) return v;
    count_busy();
    d.pieces.push_back(std::move(got[0]));
    try_apply(self);
    return {};
  }
  round.add(s.core.epoch, st.step(), st.worker());
  if (!val) count_busy();
  auto& into = val ? d.val_pieces : d.pieces;
  into.insert(into.end(), std::make_move_iterator(got.begin()), std::make_move_iterator(got.end()));
  if (!val)
    try_apply(self);
  else if (d.val.complete())
    finish_validation(self);
  return {};
}

Verdict on_norm_parts(Self* self, const train::NormParts& np, const ActorMessage& m) {
  auto& s = self->state;
  auto& d = s.drv;
  if (Verdict v = check_worker(self, np.worker(), m)) return v;
  if (Verdict v = drop_receipt(d.norms.check(s.core.epoch, np.step(), np.worker()), "NormParts"))
    return v;
  std::vector<double> parts;
  if (m.payloads.size() != 1 || !read_payload(m.payloads[0], &parts))
    return drop(Drop::malformed, "norm parts without one payload of doubles");
  d.norms.add(s.core.epoch, np.step(), np.worker());
  d.norm_parts[size_t(np.worker())] = std::move(parts);
  d.engram_sumsq[size_t(np.worker())] = np.engram_sumsq();
  try_apply(self);
  return {};
}

// Every worker applied the step: record the commit, then announce it.
void commit_step(Self* self) {
  auto& s = self->state;
  auto& d = s.drv;
  TROUPE_ASSERT(d.committed == d.step, "committing step {} after {} committed steps", d.step,
                d.committed);
  const runtime::Status st = s.commit_log->record_commit({.step = d.step,
                                                          .epoch = s.core.epoch,
                                                          .workers = worker_count(self),
                                                          .micro_batches = d.consumed});
  if (!st.ok())
    return fail(self,
                fmt::format("cannot record the commit of step {}: {}", d.step, st.to_string()));
  d.committed = d.step + 1;
  rollouts_committed(self, d.step);
  record_expert_counts(self, d.report.expert_counts);
  expect_checkpoint(self, d.committed);
  train::Commit c;
  c.set_step(d.step);
  to_all_workers(self, commit_type, c);
  d.report.seconds = std::chrono::duration<double>(now(self) - d.step_started).count();
  d.report.stats.idle_fraction = model::idle_fraction(d.busy_ms, d.report.seconds);
  d.slowest_step_ms = std::max(d.slowest_step_ms, d.report.seconds * 1000);
  d.report.has_val = false;
  const auto& t = s.opt.config.train;
  if (model::validate_after(t.eval_every, d.step, t.steps))
    return begin_step(self, train::VALIDATE);
  finish_step(self);
}

Verdict on_step_done(Self* self, const train::StepDone& sd, const ActorMessage& m) {
  auto& s = self->state;
  auto& d = s.drv;
  if (Verdict v = check_worker(self, sd.worker(), m)) return v;
  if (Verdict v = drop_receipt(d.done.check(s.core.epoch, sd.step(), sd.worker()), "StepDone"))
    return v;
  if (!d.apply_sent) return drop(Drop::wrong_step, "StepDone before the step's Apply");
  d.done.add(s.core.epoch, sd.step(), sd.worker());
  if (d.done.complete()) commit_step(self);
  return {};
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

Verdict on_final(Self* self, const train::Final& f, const ActorMessage& m) {
  auto& s = self->state;
  auto& d = s.drv;
  if (Verdict v = check_worker(self, f.worker(), m)) return v;
  if (Verdict v = drop_receipt(d.finals.check(s.core.epoch, -1, f.worker()), "Final")) return v;
  if (f.worker() == 0 && !read_final_weights(m, s.opt.config.model, &d.result))
    return drop(Drop::malformed, "worker 0's Final without weights and Engram tables that fit");
  if (d.finals.missing().size() == s.core.workers.size()) d.result.weights_hash = f.weights_hash();
  if (f.weights_hash() != d.result.weights_hash) {
    fail(self, fmt::format("worker {} ends with weights {:016x}, worker 0 with {:016x}: "
                           "the replicas diverged",
                           f.worker(), f.weights_hash(), d.result.weights_hash));
    return {};
  }
  d.finals.add(s.core.epoch, -1, f.worker());
  d.worker_drops[m.from] = {f.drops().begin(), f.drops().end()};
  if (!d.finals.complete()) return {};
  if (engram_sharded(self))  // the workers agreed on the parameters; the tables are the shards'
    d.result.weights_hash = model::weights_hash_of(d.result.weights, d.result.engram_tables);
  for (const auto& [from, drops] : d.worker_drops)
    for (const train::DropCount& c : drops) s.drops.add(c.reason(), c.count());
  d.result.ok = true;
  d.result.steps_done = d.step;
  d.result.recoveries = s.core.recoveries;
  end_job(self, d.result);
  return {};
}

}  // namespace

namespace {

constexpr int64_t kStepRedosMax = 3;  // a step stalled again after this many redos: stop
// A step may take this many times the slowest committed one before it counts as stalled,
// whatever step_timeout_ms says: a slow model or a loaded machine is not a lost message.
constexpr int64_t kSlowestStepFactor = 4;

// "Stats from n1/worker.0, n2/worker.1": the workers a round still waits for.
std::string waiting_in(Self* self, const Receipts& round, const char* what) {
  std::string out;
  for (int64_t i : round.missing())
    out +=
        (out.empty() ? fmt::format("{} from ", what) : ", ") + self->state.core.workers[size_t(i)];
  return out;
}

std::string waiting_for(Self* self) {
  const auto& d = self->state.drv;
  const bool stats_in = pulling(self) ? pull_complete(self) : d.stats.complete();
  if (d.val.step() == d.step && !d.val.complete() && stats_in && d.done.complete())
    return waiting_in(self, d.val, "validation Stats");
  std::string out;
  if (!d.apply_sent) {
    out = pulling(self) ? pull_waiting(self) : waiting_in(self, d.stats, "Stats");
    const std::string norms = waiting_in(self, d.norms, "NormParts");
    out += out.empty() || norms.empty() ? norms : "; " + norms;
  } else {
    out = waiting_in(self, d.done, "StepDone");
  }
  return out.empty() ? "every report arrived" : "waiting for " + out;
}

}  // namespace

// A step (train or validation) not committed within step_timeout_ms of its StepBegin: one of
// its messages was lost (nothing in the fabric resends; the chaos suite's drops, a one-way
// cut that healed). Every worker goes back to the committed step and redoes it by the
// recovery path, with every node kept: the same bits as a run that lost nothing.
void check_step_progress(Self* self, time_point t) {
  auto& s = self->state;
  auto& d = s.drv;
  const int64_t set_ms = s.opt.config.fault_tolerance.step_timeout_ms;
  const int64_t limit_ms = std::max(set_ms, int64_t(kSlowestStepFactor * d.slowest_step_ms));
  if (s.core.phase != Phase::running || !d.in_flight || t - d.begun <= ms(limit_ms)) return;
  d.in_flight = false;
  d.stalls = d.stalled_step == d.step ? d.stalls + 1 : 1;
  d.stalled_step = d.step;
  const std::string what = fmt::format(
      "step {} did not finish within {} ms (step_timeout_ms = {}, or {} x the "
      "slowest step so far, {:.0f} ms) ({}): a message was lost",
      d.step, limit_ms, set_ms, kSlowestStepFactor, d.slowest_step_ms, waiting_for(self));
  if (d.stalls > kStepRedosMax)
    return fail(self, fmt::format("{}; it was redone {} times and stalled each time: the loss "
                                  "persists (a one-way cut?), or the step takes longer than "
                                  "fault_tolerance.step_timeout_ms (raise it); the job stops",
                                  what, kStepRedosMax));
  recover_without(self, std::string::npos, what, {{"stalled_ms", limit_ms}});
}

void start_training(Self* self) {
  deal_rollouts(self);
  start_or_finish(self);
}

// After a recovery: a train step every worker applied but whose validation was cut short is
// validated again; after the last step, the final weights are gathered again.
void resume_training(Self* self) {
  auto& d = self->state.drv;
  TROUPE_ASSERT(d.committed == d.step || d.committed == d.step + 1,
                "resuming at step {} with {} committed", d.step, d.committed);
  if (d.committed > d.step) return begin_step(self, train::VALIDATE);
  start_or_finish(self);
}

void add_driver_handlers(Self* self, Phase p, Dispatcher& d) {
  if (p == Phase::running) {
    d.on<train::Stats>(stats_type, [self](const train::Stats& st, ActorMessage& m) {
      return on_stats(self, st, m);
    });
    d.on<train::NormParts>(norm_parts_type, [self](const train::NormParts& np, ActorMessage& m) {
      return on_norm_parts(self, np, m);
    });
    d.on<train::StepDone>(step_done_type, [self](const train::StepDone& sd, ActorMessage& m) {
      return on_step_done(self, sd, m);
    });
    d.on<train::EngramNorm>(engram_norm_type, [self](const train::EngramNorm& n, ActorMessage& m) {
      Verdict v = on_engram_norm(self, n, m);
      if (!v) try_apply(self);
      return v;
    });
  }
  if (p == Phase::running || p == Phase::recovering)  // groups come whatever the workers do
    d.on<train::RolloutAsk>(rollout_group_type,
                            [self](const train::RolloutAsk& g, ActorMessage& m) {
                              return on_rollout_group(self, g, m);
                            });
  if (p == Phase::finishing)
    d.on<train::Final>(final_type, [self](const train::Final& f, ActorMessage& m) {
      return on_final(self, f, m);
    });
}

}  // namespace troupe::actors::coordinator_impl
