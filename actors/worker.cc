// The worker role: one data-parallel replica of the model (DESIGN §4–5). It holds all the
// weights, computes its share of each step's logical micro-batches, sends the reduced
// pieces' gradient slices to their owners, reduces and updates the tensors it owns, and
// sends them to every other worker. Engram's tables have no owner: every worker holds all
// of them, gets every piece's sparse table gradient (EngramSlices, owned copies), reduces
// them in tree order and applies the same sparse Adam step. Runs detached (its own
// thread): a step's compute blocks for as long as the model takes.
//
// Zero-copy sends and their lifetime, by protocol: the GradSlices payloads view the
// engine's piece buffers and the Weights payload views this worker's parameters. The
// former are overwritten by the next step's compute and the latter by the next step's
// update; both happen only after the coordinator started the next step, which it does
// after every worker reported StepDone, i.e. after every owner received every slice and
// every worker received every owner's weights. A view change cuts that order short, and
// an aborted step's views may still be on their way while the worker restores its weights:
// they carry the old epoch and every receiver drops them (worker_recovery.cc).
#include "actors/worker.h"

#include <fmt/format.h>

#include "actors/roles.h"
#include "config/config_parse.h"
#include "runtime/control.pb.h"
#include "train/dp_plan.h"

namespace troupe::actors {

namespace worker_impl {

void plan(WorkerState& s, int64_t workers, int64_t me) {
  s.workers = workers;
  s.me = me;
  s.ranges = model::plan_ranges(s.trainer->micro_batches(), workers);
  s.val_ranges = model::plan_ranges(s.trainer->val_micro_batches(), workers);
  s.owners = model::plan_owners(s.trainer->table, workers);
  s.total_pieces = 0;
  for (const TreeNode& r : s.ranges)
    s.total_pieces += int64_t(model::tree_pieces(s.trainer->micro_batches(), r.lo, r.hi).size());
  s.weights_expected = 0;
  for (int64_t o = 0; o < workers; ++o)
    if (o != me && s.owners[size_t(o)].hi > s.owners[size_t(o)].lo) ++s.weights_expected;
}

void send_to(Self* self, ActorMessage m) {
  m.epoch = self->state.epoch;
  self->send(self->state.ctx.router, std::move(m));
}

void reject(Self* self, const ActorMessage& m, const std::string& why) {
  if (++self->state.rejected <= 5)
    fmt::print(stderr, "troupe {}: rejected message type {} from {}: {}\n", self->state.ctx.address,
               m.type, m.from, why);
}

void enter(WorkerState& s, int64_t step) {
  if (step == s.step) return;
  s.step = step;
  s.slice_nodes.clear();
  s.slice_payloads.clear();
  s.engram_nodes.clear();
  s.engram_grads.clear();
  s.engram_received.clear();
  s.reduced = s.applied = s.done = false;
  s.buddies_in = 0;
  s.weights_received = 0;
}

void try_done(Self* self) {
  auto& s = self->state;
  if (s.done || !s.applied || s.weights_received < s.weights_expected) return;
  if (s.buddies_in < buddy_count(s, s.workers)) return;
  s.done = true;
  s.version = s.step + 1;
  train::StepDone d;
  d.set_step(s.step);
  d.set_worker(s.me);
  reply(self, s.ctx.coordinator, step_done_type, d);
}

}  // namespace worker_impl

namespace {

using namespace worker_impl;

FlatRange owned(const WorkerState& s) {
  return s.owners[size_t(s.me)];
}

void try_reduce(Self* self) {
  auto& s = self->state;
  const bool engram = s.trainer->engram() != nullptr;
  if (s.reduced || int64_t(s.slice_nodes.size()) < s.total_pieces) return;
  if (engram && int64_t(s.engram_nodes.size()) < s.total_pieces) return;
  std::vector<const float*> slices;
  for (const Payload& p : s.slice_payloads)
    slices.push_back(reinterpret_cast<const float*>(p.bytes.data()));
  std::vector<double> parts;
  if (owned(s).hi > owned(s).lo) parts = s.trainer->reduce_owned(owned(s), s.slice_nodes, slices);
  s.reduced = true;  // the slices stay until the next step: apply_owned may read them
  train::NormParts np;
  np.set_step(s.step);
  np.set_worker(s.me);
  if (engram) np.set_engram_sumsq(s.trainer->reduce_engram(s.engram_nodes, s.engram_grads));
  reply(self, s.ctx.coordinator, norm_parts_type, np, {owned_payload(std::move(parts))});
}

void send_stats(Self* self, const train::StepBegin& b,
                const std::vector<model::Piece<float>>& pieces) {
  auto& s = self->state;
  train::Stats st;
  st.set_step(b.step());
  st.set_kind(b.kind());
  st.set_worker(s.me);
  std::vector<Payload> payloads;
  for (const auto& p : pieces) {
    train::PieceStats* ps = st.add_pieces();
    ps->mutable_node()->set_lo(p.node.lo);
    ps->mutable_node()->set_hi(p.node.hi);
    ps->set_ce(p.parts.ce), ps->set_mtp(p.parts.mtp), ps->set_bal(p.parts.bal);
    ps->set_ce_sum(p.parts.ce_sum), ps->set_ce_count(p.parts.ce_count);
    std::vector<int64_t> flat;
    flatten_counts(p.counts, ps->mutable_count_layers(), &flat);
    payloads.push_back(owned_payload(std::move(flat)));
  }
  reply(self, s.ctx.coordinator, stats_type, st, std::move(payloads));
}

// Engram: every worker gets every piece's sparse table gradient and reduces them all.
void send_engram_pieces(Self* self, int64_t step, const std::vector<model::Piece<float>>& pieces) {
  auto& s = self->state;
  train::EngramSlices es;
  es.set_step(step);
  std::vector<Payload> payloads;
  for (size_t k = 0; k < pieces.size(); ++k) {
    add_engram_piece(s.trainer->piece_engram_grad(k), pieces[k].node, &es, &payloads);
    s.engram_nodes.push_back(pieces[k].node);
    s.engram_grads.push_back(&s.trainer->piece_engram_grad(k));
  }
  for (int64_t o = 0; o < s.workers; ++o)
    if (o != s.me) reply(self, s.peers[size_t(o)], engram_slices_type, es, payloads);
}

void on_step_begin(Self* self, const train::StepBegin& b) {
  auto& s = self->state;
  s.recovery_base.reset();  // every worker recovered: the coordinator goes on
  if (b.kind() == train::VALIDATE) {
    const TreeNode r = s.val_ranges[size_t(s.me)];
    static const std::vector<model::Piece<float>> none;
    send_stats(self, b, r.lo < r.hi ? s.trainer->validate_range(r) : none);
    return;
  }
  enter(s, b.step());
  if (s.saved_for != b.step()) {  // the version before this step, until the next one
    s.trainer->save_version();
    s.saved_for = b.step();
  }
  const TreeNode r = s.ranges[size_t(s.me)];
  static const std::vector<model::Piece<float>> none;
  const auto& pieces = r.lo < r.hi ? s.trainer->compute_range(b.step(), r) : none;
  send_stats(self, b, pieces);
  for (int64_t o = 0; o < s.workers; ++o) {
    const FlatRange f = s.owners[size_t(o)];
    if (f.hi <= f.lo || pieces.empty()) continue;
    train::GradSlices gs;
    gs.set_step(b.step());
    std::vector<Payload> payloads;
    for (size_t k = 0; k < pieces.size(); ++k) {
      train::Node* n = gs.add_nodes();
      n->set_lo(pieces[k].node.lo), n->set_hi(pieces[k].node.hi);
      payloads.push_back(view_payload(s.trainer->piece_grad(k) + f.lo, size_t(f.hi - f.lo)));
    }
    if (o == s.me) {
      for (size_t k = 0; k < pieces.size(); ++k) {
        s.slice_nodes.push_back(pieces[k].node);
        s.slice_payloads.push_back(payloads[k]);
      }
    } else {
      reply(self, s.peers[size_t(o)], grad_slices_type, gs, std::move(payloads));
    }
  }
  if (s.trainer->engram() && !pieces.empty()) send_engram_pieces(self, b.step(), pieces);
  try_reduce(self);
}

void on_engram_slices(Self* self, const ActorMessage& m, const train::EngramSlices& es) {
  auto& s = self->state;
  if (!s.trainer->engram() || es.step() < s.step)
    return reject(self, m, "Engram slices without Engram layers, or of an old step");
  static const std::vector<TreeNode> none;
  const std::string why = check_new_pieces(es.step() == s.step ? s.engram_nodes : none, es.nodes(),
                                           s.total_pieces, s.trainer->micro_batches());
  if (!why.empty()) return reject(self, m, "Engram slices: " + why);
  std::vector<std::unique_ptr<model::EngramGrad<float>>> grads;
  for (int i = 0; i < es.nodes_size(); ++i) {
    grads.push_back(std::make_unique<model::EngramGrad<float>>());
    if (!read_engram_piece(es, m.payloads, i, s.trainer->engram()->tables(), grads.back().get()))
      return reject(self, m, "Engram slices whose rows do not fit the tables");
  }
  enter(s, es.step());
  for (int i = 0; i < es.nodes_size(); ++i) {
    s.engram_nodes.push_back({es.nodes(i).lo(), es.nodes(i).hi()});
    s.engram_grads.push_back(grads[size_t(i)].get());
    s.engram_received.push_back(std::move(grads[size_t(i)]));
  }
  try_reduce(self);
}

void on_grad_slices(Self* self, const ActorMessage& m, const train::GradSlices& gs) {
  auto& s = self->state;
  const FlatRange f = owned(s);
  if (gs.nodes_size() != int(m.payloads.size()) || gs.step() < s.step)
    return reject(self, m, "gradient slices do not match their nodes, or an old step");
  static const std::vector<TreeNode> none;
  const std::string why = check_new_pieces(gs.step() == s.step ? s.slice_nodes : none, gs.nodes(),
                                           s.total_pieces, s.trainer->micro_batches());
  if (!why.empty()) return reject(self, m, "gradient slices: " + why);
  for (const Payload& p : m.payloads)
    if (p.bytes.size() != size_t(f.hi - f.lo) * sizeof(float) ||
        reinterpret_cast<uintptr_t>(p.bytes.data()) % alignof(float) != 0)
      return reject(self, m, "gradient slice size does not match the owned range");
  enter(s, gs.step());
  for (int i = 0; i < gs.nodes_size(); ++i) {
    s.slice_nodes.push_back({gs.nodes(i).lo(), gs.nodes(i).hi()});
    s.slice_payloads.push_back(m.payloads[size_t(i)]);
  }
  try_reduce(self);
}

void on_apply(Self* self, const ActorMessage& m, const train::Apply& a) {
  auto& s = self->state;
  std::vector<std::vector<int64_t>> counts;
  if (m.payloads.size() != 1 || !unflatten_counts(a.count_layers(), m.payloads[0], &counts))
    return reject(self, m, "apply without valid expert counts");
  enter(s, a.step());
  const FlatRange f = owned(s);
  if (f.hi > f.lo) {
    s.trainer->apply_owned(f, a.step(), a.clip_scale(), counts);
    train::Weights w;
    w.set_step(a.step());
    w.set_lo(f.lo), w.set_hi(f.hi);
    for (int64_t o = 0; o < s.workers; ++o)
      if (o != s.me)
        reply(self, s.peers[size_t(o)], weights_type, w,
              {view_payload(s.trainer->params.data() + f.lo, size_t(f.hi - f.lo))});
  }
  if (s.trainer->engram()) s.trainer->apply_engram(a.step(), a.clip_scale());
  send_buddy_copy(self, a.step() + 1);
  s.applied = true;
  try_done(self);
}

void on_weights(Self* self, const ActorMessage& m, const train::Weights& w) {
  auto& s = self->state;
  bool known = false;
  for (const FlatRange& f : s.owners) known |= f.lo == w.lo() && f.hi == w.hi() && f.hi > f.lo;
  if (!known || m.payloads.size() != 1 ||
      m.payloads[0].bytes.size() != size_t(w.hi() - w.lo()) * sizeof(float) || w.step() < s.step)
    return reject(self, m, "weights for a range nobody owns, or of the wrong size");
  enter(s, w.step());
  std::memcpy(s.trainer->params.data() + w.lo(), m.payloads[0].bytes.data(),
              m.payloads[0].bytes.size());
  ++s.weights_received;
  try_done(self);
}

void on_message(Self* self, ActorMessage& m);

// Epochs: what was sent before the last view change is dropped; what comes from a newer
// epoch than the worker's waits for that epoch's Recover (a faster survivor's transfer).
bool admit_epoch(Self* self, ActorMessage& m) {
  auto& s = self->state;
  if (m.epoch < s.epoch) return ++s.stale, false;
  if (m.epoch == s.epoch || m.type == recover_type) return true;
  if (s.early.size() >= early_messages_max) {
    reject(self, m, "too many messages from a newer epoch before its Recover");
    return false;
  }
  s.early.push_back(std::move(m));
  return false;
}

void on_message(Self* self, ActorMessage& m) {
  auto& s = self->state;
  if (!admit_epoch(self, m)) return;
  switch (m.type) {
    case step_begin_type: {
      train::StepBegin b;
      if (!b.ParseFromString(m.header)) return reject(self, m, "malformed StepBegin");
      return on_step_begin(self, b);
    }
    case grad_slices_type: {
      train::GradSlices gs;
      if (!gs.ParseFromString(m.header)) return reject(self, m, "malformed GradSlices");
      return on_grad_slices(self, m, gs);
    }
    case apply_type: {
      train::Apply a;
      if (!a.ParseFromString(m.header)) return reject(self, m, "malformed Apply");
      return on_apply(self, m, a);
    }
    case weights_type: {
      train::Weights w;
      if (!w.ParseFromString(m.header)) return reject(self, m, "malformed Weights");
      return on_weights(self, m, w);
    }
    case engram_slices_type: {
      train::EngramSlices es;
      if (!es.ParseFromString(m.header)) return reject(self, m, "malformed EngramSlices");
      return on_engram_slices(self, m, es);
    }
    case buddy_state_type: {
      train::BuddyState b;
      if (!b.ParseFromString(m.header)) return reject(self, m, "malformed BuddyState");
      return on_buddy_state(self, m, b);
    }
    case recover_type: {
      train::Recover r;
      if (!r.ParseFromString(m.header)) return reject(self, m, "malformed Recover");
      on_recover(self, m, r);
      std::vector<ActorMessage> early;  // now in this worker's epoch, or stale
      early.swap(s.early);
      for (ActorMessage& e : early) on_message(self, e);
      return;
    }
    case state_transfer_type: {
      train::StateTransfer t;
      if (!t.ParseFromString(m.header)) return reject(self, m, "malformed StateTransfer");
      return on_state_transfer(self, m, t);
    }
    case finish_type: {
      s.recovery_base.reset();
      train::Final f;
      f.set_worker(s.me);
      f.set_weights_hash(s.trainer->weights_hash());
      std::vector<Payload> payloads;
      if (s.me == 0) {
        payloads.push_back(view_payload(s.trainer->params.data(), s.trainer->params.size()));
        if (const auto* e = s.trainer->engram())
          for (size_t t = 0; t < e->tables().size(); ++t)
            payloads.push_back(view_payload(e->data(int64_t(t)),
                                            size_t(e->tables()[t].rows * e->tables()[t].dim)));
      }
      return reply(self, s.ctx.coordinator, final_type, f, std::move(payloads));
    }
    default:
      return reject(self, m, "unknown message type");
  }
}

void fail(Self* self, const std::string& what) {
  control::NodeError e;
  e.set_text(fmt::format("{}: {}", self->state.ctx.address, what));
  reply(self, self->state.ctx.coordinator, runtime::node_error_type, e);
  self->quit();
}

caf::behavior worker(Self* self, runtime::RoleContext ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  self->send(s.ctx.router, runtime::register_atom::value, fmt::format("worker.{}", s.ctx.index),
             caf::actor(self));
  try {
    model::JobConfig cfg = model::config_from_text(s.ctx.job.config_text, s.ctx.job.config_name,
                                                   s.ctx.job.config_sets);
    if (s.ctx.threads > 0) cfg.train.threads = s.ctx.threads;
    s.trainer = std::make_unique<model::Trainer>(cfg);
    s.buddy_copies = cfg.fault_tolerance.buddy_copies;
    s.epoch = s.ctx.epoch;
    s.peers = s.ctx.peers;
    plan(s, int64_t(s.peers.size()), s.ctx.index);
    s.trainer->keep_optimizer_state(s.owners[size_t(s.me)]);  // ZeRO-1
    train::Ready r;
    r.set_worker(s.me);
    r.set_parameters(s.trainer->table.total());
    r.set_weights_hash(s.trainer->weights_hash());
    r.set_optimizer_state_floats(s.trainer->optimizer_state_floats());
    reply(self, s.ctx.coordinator, ready_type, r);
  } catch (const std::exception& e) {
    fail(self, e.what());
    return {};
  }
  return {[=](ActorMessage& m) {
    try {
      on_message(self, m);
    } catch (const std::exception& e) {
      fail(self, e.what());
    }
  }};
}

}  // namespace

void register_worker_role() {
  runtime::register_role("worker", [](caf::actor_system& sys, const runtime::RoleContext& ctx) {
    return sys.spawn<caf::detached>(worker, ctx);
  });
}

}  // namespace troupe::actors
