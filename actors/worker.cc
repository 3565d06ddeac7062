// The worker role: one data-parallel replica of the model (DESIGN §4–5). It holds all the
// weights, computes its share of each step's logical micro-batches, sends the reduced
// pieces' gradient slices to their owners, reduces and updates the tensors it owns, and
// sends them to every other worker. Engram's tables have no owner: every worker holds all
// of them, gets every piece's sparse table gradient (EngramSlices, owned copies), reduces
// them in tree order and applies the same sparse Adam step — or, with `[engram] placement
// = "shards"`, holds none and reads them from engram_shard actors (worker_engram.cc). Runs detached
// (its own thread): a step's compute blocks for as long as the model takes.
//
// The version before a step is kept until the coordinator announces the step's Commit (or,
// should the Commit be lost, until the next StepBegin, which implies it). Every message is
// decoded by one dispatcher; what is out of place is dropped and counted (dispatch.h), and
// the counts travel to the coordinator with Final.
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
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "actors/invariant.h"
#include "actors/roles.h"
#include "config/config_parse.h"
#include "runtime/control.pb.h"
#include "runtime/log.h"
#include "runtime/step_hook.h"
#include "train/dp_plan.h"
#include "train/step_rules.h"

namespace troupe::actors {

namespace worker_impl {

void plan(WorkerState& s, int64_t workers, int64_t me) {
  s.workers = workers;
  s.me = me;
  s.ranges = model::plan_ranges(s.trainer->micro_batches(), workers);
  s.val_ranges = model::plan_ranges(s.trainer->val_micro_batches(), workers);
  s.owners = model::plan_owners(s.trainer->table, workers);
  s.step_pieces.clear();
  if (s.pull)
    s.step_pieces =
        model::plan_pull_pieces(s.trainer->micro_batches(), workers, s.pull_pieces_per_worker);
  else
    for (const TreeNode& r : s.ranges)
      for (const TreeNode& p : model::tree_pieces(s.trainer->micro_batches(), r.lo, r.hi))
        s.step_pieces.push_back(p);
  s.total_pieces = int64_t(s.step_pieces.size());
  // The memory sized for the old share goes back: the next checkpoint's snapshot starts
  // afresh (one being written keeps its own), and the heap is trimmed, so that a node that
  // once ran with few workers does not keep that share's memory for the rest of the job
  // (worker_reshape.cc frees the old share's gradient buffers first).
  s.snapshot = std::make_shared<std::vector<model::StateTensor>>();
  ::malloc_trim(0);
  // What the heap holds after the trim, once per view: the soak reads a node's live heap
  // here (exact) where its RSS moves by whole huge pages (tools/soak.py).
  const struct mallinfo2 heap = ::mallinfo2();
  log::info("{}: heap after the trim at {} workers: {} KiB in use, {} KiB held, {} KiB mapped",
            s.ctx.address, workers, heap.uordblks >> 10, heap.arena >> 10, heap.hblkhd >> 10);
  for (size_t t = 0; t < s.trainer->table.all().size(); ++t) {
    int64_t owners = 0;
    for (const FlatRange& f : s.owners) owners += f.covers(s.trainer->table.all()[t]) ? 1 : 0;
    TROUPE_ASSERT(owners == 1, "tensor {} ({}) has {} owners among {} workers", t,
                  s.trainer->table.all()[t].name, owners, workers);
  }
  route_experts(s);
}

void send_to(Self* self, ActorMessage m) {
  m.epoch = self->state.epoch;
  self->send(self->state.ctx.router, std::move(m));
}

void enter(WorkerState& s, int64_t step) {
  if (step == s.step) return;
  s.step = step;
  s.weights.open(s.epoch, step, s.workers);
  for (int64_t o = 0; o < s.workers; ++o)
    if (o == s.me || s.owners[size_t(o)].hi <= s.owners[size_t(o)].lo) s.weights.waive(o);
  s.slice_nodes.clear();
  s.slice_payloads.clear();
  s.engram_nodes.clear();
  s.engram_grads.clear();
  s.engram_received.clear();
  s.reduced = s.applied = s.done = false;
  open_buddies(s, step + 1, &s.buddies);
}

void open_buddies(const WorkerState& s, int64_t version, Receipts* round) {
  round->open(s.epoch, version, s.workers);
  for (int64_t o = 0; o < s.workers; ++o)
    if (o == s.me || (s.me - o + s.workers) % s.workers > buddy_count(s, s.workers))
      round->waive(o);
}

void try_done(Self* self) {
  auto& s = self->state;
  if (s.done || !s.applied || !s.weights.complete()) return;
  if (!s.buddies.complete()) return;
  s.done = true;
  s.version = s.step + 1;
  train::StepDone d;
  d.set_step(s.step);
  d.set_worker(s.me);
  reply(self, s.ctx.coordinator, step_done_type, d);
}

Verdict accept_commit(Self* self, int64_t step) {
  auto& s = self->state;
  if (step + 1 <= s.committed) return drop(Drop::duplicate, "a step already committed");
  if (step + 1 != s.version)
    return drop(Drop::wrong_step,
                fmt::format("a commit of step {} at version {}", step, s.version));
  TROUPE_ASSERT(step + 1 > s.committed, "commit of step {} after {} committed", step, s.committed);
  s.committed = step + 1;
  if (s.saved_for == step) s.saved_for = -1;
  maybe_checkpoint(self, step + 1);
  return {};
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
  const std::string cover = model::check_cover(s.slice_nodes, s.trainer->micro_batches());
  TROUPE_ASSERT(cover.empty(), "step {}: the gradient slices of {} pieces: {}", s.step,
                s.total_pieces, cover);
  TROUPE_ASSERT(!engram || model::check_cover(s.engram_nodes, s.trainer->micro_batches()).empty(),
                "step {}: the Engram pieces do not cover the batch once", s.step);
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

// Pieces [first, end) of `pieces` (and how long they took to compute) to the coordinator.
void send_stats(Self* self, int64_t step, train::Kind kind,
                const std::vector<model::Piece<float>>& pieces, size_t first = 0,
                double compute_ms = 0) {
  auto& s = self->state;
  train::Stats st;
  st.set_step(step);
  st.set_kind(kind);
  st.set_worker(s.me);
  st.set_compute_ms(compute_ms);
  st.set_padding_waste(kind == train::TRAIN && s.trainer->cfg.data.mode == model::DataMode::mixed
                           ? s.trainer->padding_waste(step)
                           : -1);
  std::vector<Payload> payloads;
  for (size_t k = first; k < pieces.size(); ++k) {
    const auto& p = pieces[k];
    train::PieceStats* ps = st.add_pieces();
    ps->mutable_node()->set_lo(p.node.lo);
    ps->mutable_node()->set_hi(p.node.hi);
    ps->set_ce(p.parts.ce), ps->set_mtp(p.parts.mtp), ps->set_bal(p.parts.bal);
    ps->set_ce_sum(p.parts.ce_sum), ps->set_ce_count(p.parts.ce_count), ps->set_head(p.parts.head);
    std::vector<int64_t> flat;
    flatten_counts(p.counts, ps->mutable_count_layers(), &flat);
    payloads.push_back(owned_payload(std::move(flat)));
  }
  reply(self, s.ctx.coordinator, stats_type, st, std::move(payloads));
}

// Engram: every worker gets every piece's sparse table gradient and reduces them all.
void send_engram_pieces(Self* self, int64_t step, const std::vector<model::Piece<float>>& pieces,
                        size_t first) {
  auto& s = self->state;
  train::EngramSlices es;
  es.set_step(step);
  std::vector<Payload> payloads;
  for (size_t k = first; k < pieces.size(); ++k) {
    add_engram_piece(s.trainer->piece_engram_grad(k), pieces[k].node, &es, &payloads);
    s.engram_nodes.push_back(pieces[k].node);
    s.engram_grads.push_back(&s.trainer->piece_engram_grad(k));
  }
  for (int64_t o = 0; o < s.workers; ++o)
    if (o != s.me) reply(self, s.peers[size_t(o)], engram_slices_type, es, payloads);
}

Verdict on_validate(Self* self, const train::StepBegin& b) {
  auto& s = self->state;
  if (b.step() == s.validated) return drop(Drop::duplicate, "a validation already sent");
  if (b.step() + 1 != s.committed) {
    if (Verdict v = accept_commit(self, b.step())) return v;
  }
  s.validated = b.step();
  s.recovery_base.reset();  // every worker recovered: the coordinator goes on
  const TreeNode r = s.val_ranges[size_t(s.me)];
  static const std::vector<model::Piece<float>> none;
  const std::vector<model::Piece<float>>* pieces = &none;
  if (Verdict v = take_placement(s, b)) return v;
  if (Verdict v = take_engram_shards(s, b, b.step() + 1)) return v;
  prepare_experts(self, b.step() + 1, true);
  if (r.lo < r.hi && !computed(self, [&] { pieces = &s.trainer->validate_range(r); })) return {};
  send_stats(self, b.step(), b.kind(), *pieces);
  return {};
}

void send_grad_slices(Self* self, int64_t step, const std::vector<model::Piece<float>>& pieces,
                      size_t first) {
  auto& s = self->state;
  for (int64_t o = 0; o < s.workers; ++o) {
    const FlatRange f = s.owners[size_t(o)];
    if (f.hi <= f.lo || pieces.size() <= first) continue;
    train::GradSlices gs;
    gs.set_step(step);
    std::vector<Payload> payloads;
    for (size_t k = first; k < pieces.size(); ++k) {
      train::Node* n = gs.add_nodes();
      n->set_lo(pieces[k].node.lo), n->set_hi(pieces[k].node.hi);
      payloads.push_back(
          view_payload(s.trainer, s.trainer->piece_grad(k) + f.lo, size_t(f.hi - f.lo)));
    }
    if (o == s.me) {
      for (size_t k = first; k < pieces.size(); ++k) {
        s.slice_nodes.push_back(pieces[k].node);
        s.slice_payloads.push_back(payloads[k - first]);
      }
    } else {
      reply(self, s.peers[size_t(o)], grad_slices_type, gs, std::move(payloads));
    }
  }
}

}  // namespace

void worker_impl::compute_and_send(Self* self, int64_t step, TreeNode range) {
  auto& s = self->state;
  static const std::vector<model::Piece<float>> none;
  const std::vector<model::Piece<float>>* pieces = &none;
  const size_t first = s.pulled;
  if (s.pull && range.lo >= range.hi) return try_reduce(self);  // no piece handed out to it
  // The actor's clock: real time in a job, the simulated clock under chaos/sim (whose messages
  // must not carry wall times: a seed replays them bit for bit).
  const auto t0 = self->clock().now();
  if (range.lo < range.hi &&
      !computed(self, [&] { pieces = &s.trainer->compute_range(step, range, first > 0); }))
    return;
  s.pulled = pieces->size();
  const auto took = [&] {
    return std::chrono::duration<double, std::milli>(self->clock().now() - t0).count();
  };
  if (const double extra = s.compute_faults.extra_ms(s.me, took()); extra > 0)
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(extra));
  const double ms = took();
  send_stats(self, step, train::TRAIN, *pieces, first, ms);
  send_grad_slices(self, step, *pieces, first);
  if (s.trainer->engram() && pieces->size() > first) send_engram_pieces(self, step, *pieces, first);
  if (s.engram && pieces->size() > first) send_engram_to_shards(self, step, *pieces, first);
  try_reduce(self);
}

namespace {

Verdict on_step_begin(Self* self, const train::StepBegin& b, const ActorMessage& m) {
  auto& s = self->state;
  if (b.kind() == train::VALIDATE) return on_validate(self, b);
  if (b.step() == s.begun) return drop(Drop::duplicate, "a step already begun");
  if (b.step() > 0 && s.committed < b.step()) {  // the StepBegin implies the last Commit
    if (Verdict v = accept_commit(self, b.step() - 1)) return v;
  }
  if (b.step() != s.version)
    return drop(Drop::wrong_step, fmt::format("step {} at version {}", b.step(), s.version));
  if (Verdict v = take_placement(s, b)) return v;
  if (Verdict v = take_engram_shards(s, b, b.step())) return v;
  if (Verdict v = take_rollouts(s, b, m)) return v;
  s.recovery_base.reset();  // every worker recovered: the coordinator goes on
  s.sent.clear();
  runtime::set_current_step(b.step());  // a fault plan's steps window (runtime/step_hook.h)
  enter(s, b.step());
  s.begun = b.step();
  if (s.saved_for != b.step()) {  // the version before this step, until its Commit
    s.trainer->save_version();
    s.saved_for = b.step();
  }
  prepare_experts(self, b.step(), false);
  s.pulled = 0;
  if (!s.pull) {
    compute_and_send(self, b.step(), s.ranges[size_t(s.me)]);
    return {};
  }
  return begin_pulled(self, b);
}

// Pieces of a step (GradSlices, EngramSlices): of the step in flight or the next one, each
// once. A refusal of check_new_pieces is a duplicate when it says so.
Verdict check_pieces(const WorkerState& s, int64_t step, const std::vector<TreeNode>& have,
                     const google::protobuf::RepeatedPtrField<train::Node>& nodes) {
  if (step < s.step || step > s.version)
    return drop(Drop::wrong_step, fmt::format("step {} while at step {}", step, s.step));
  for (const train::Node& n : nodes)
    if (std::find(s.step_pieces.begin(), s.step_pieces.end(), TreeNode{n.lo(), n.hi()}) ==
        s.step_pieces.end())
      return drop(Drop::malformed,
                  fmt::format("[{}, {}) is not one of the step's pieces", n.lo(), n.hi()));
  static const std::vector<TreeNode> none;
  const std::string why = check_new_pieces(step == s.step ? have : none, nodes, s.total_pieces,
                                           s.trainer->micro_batches());
  if (why.empty()) return {};
  return drop(why == "a piece received twice" ? Drop::duplicate : Drop::malformed, why);
}

Verdict on_engram_slices(Self* self, const train::EngramSlices& es, const ActorMessage& m) {
  auto& s = self->state;
  if (!s.trainer->engram()) return drop(Drop::malformed, "Engram slices without Engram layers");
  if (Verdict v = check_pieces(s, es.step(), s.engram_nodes, es.nodes())) return v;
  std::vector<std::unique_ptr<model::EngramGrad<float>>> grads;
  for (int i = 0; i < es.nodes_size(); ++i) {
    grads.push_back(std::make_unique<model::EngramGrad<float>>());
    if (!read_engram_piece(es, m.payloads, i, s.trainer->engram()->tables(), grads.back().get()))
      return drop(Drop::malformed, "Engram slices whose rows do not fit the tables");
  }
  enter(s, es.step());
  for (int i = 0; i < es.nodes_size(); ++i) {
    s.engram_nodes.push_back({es.nodes(i).lo(), es.nodes(i).hi()});
    s.engram_grads.push_back(grads[size_t(i)].get());
    s.engram_received.push_back(std::move(grads[size_t(i)]));
  }
  try_reduce(self);
  return {};
}

Verdict on_grad_slices(Self* self, const train::GradSlices& gs, const ActorMessage& m) {
  auto& s = self->state;
  const FlatRange f = owned(s);
  if (gs.nodes_size() != int(m.payloads.size()))
    return drop(Drop::malformed, "gradient slices that do not match their nodes");
  if (Verdict v = check_pieces(s, gs.step(), s.slice_nodes, gs.nodes())) return v;
  for (const Payload& p : m.payloads)
    if (p.bytes.size() != size_t(f.hi - f.lo) * sizeof(float) ||
        reinterpret_cast<uintptr_t>(p.bytes.data()) % alignof(float) != 0)
      return drop(Drop::malformed, "a gradient slice of another size than the owned range");
  enter(s, gs.step());
  for (int i = 0; i < gs.nodes_size(); ++i) {
    s.slice_nodes.push_back({gs.nodes(i).lo(), gs.nodes(i).hi()});
    s.slice_payloads.push_back(m.payloads[size_t(i)]);
  }
  try_reduce(self);
  return {};
}

Verdict on_apply(Self* self, const train::Apply& a, const ActorMessage& m) {
  auto& s = self->state;
  std::vector<std::vector<int64_t>> counts;
  if (m.payloads.size() != 1 || !unflatten_counts(a.count_layers(), m.payloads[0], &counts))
    return drop(Drop::malformed, "Apply without valid expert counts");
  if (a.step() != s.step || a.step() != s.begun)
    return drop(Drop::wrong_step, fmt::format("Apply of step {} at step {}", a.step(), s.step));
  if (s.applied) return drop(Drop::duplicate, "the step is applied already");
  if (!s.reduced) return drop(Drop::wrong_phase, "Apply before this owner reduced the step");
  const FlatRange f = owned(s);
  if (f.hi > f.lo) {
    s.trainer->apply_owned(f, a.step(), a.clip_scale(), counts);
    train::Weights w;
    w.set_step(a.step());
    w.set_lo(f.lo), w.set_hi(f.hi);
    for (int64_t o = 0; o < s.workers; ++o)
      if (o != s.me)
        reply(self, s.peers[size_t(o)], weights_type, w,
              {view_payload(s.trainer, s.trainer->params.data() + f.lo, size_t(f.hi - f.lo))});
    stream_to_rollouts(self, w);
  }
  if (s.trainer->engram()) s.trainer->apply_engram(a.step(), a.clip_scale());
  send_buddy_copy(self, a.step() + 1);
  s.applied = true;
  try_done(self);
  return {};
}

Verdict on_weights(Self* self, const train::Weights& w, const ActorMessage& m) {
  auto& s = self->state;
  int64_t owner = -1;
  for (int64_t o = 0; o < s.workers; ++o) {
    const FlatRange f = s.owners[size_t(o)];
    if (f.lo == w.lo() && f.hi == w.hi() && f.hi > f.lo) owner = o;
  }
  if (owner < 0 || m.payloads.size() != 1 ||
      m.payloads[0].bytes.size() != size_t(w.hi() - w.lo()) * sizeof(float))
    return drop(Drop::malformed, "weights for a range nobody owns, or of the wrong size");
  if (m.from != s.peers[size_t(owner)])
    return drop(Drop::unknown_sender, fmt::format("weights of worker {}'s range", owner));
  if (w.step() < s.step || w.step() > s.version)
    return drop(Drop::wrong_step, fmt::format("weights of step {} at step {}", w.step(), s.step));
  enter(s, w.step());
  if (Verdict v = drop_receipt(s.weights.add(s.epoch, w.step(), owner), "Weights")) return v;
  std::memcpy(s.trainer->params.data() + w.lo(), m.payloads[0].bytes.data(),
              m.payloads[0].bytes.size());
  try_done(self);
  return {};
}

Verdict on_commit(Self* self, const train::Commit& c, const ActorMessage&) {
  return accept_commit(self, c.step());
}

Verdict on_finish(Self* self, const train::Finish& fin, const ActorMessage&) {
  auto& s = self->state;
  if (s.final_epoch == s.epoch) return drop(Drop::duplicate, "Final already sent in this epoch");
  std::vector<Payload> payloads;
  if (s.me == 0) {
    payloads.push_back(view_payload(s.trainer, s.trainer->params.data(), s.trainer->params.size()));
    if (const auto* e = s.trainer->engram())
      for (size_t t = 0; t < e->tables().size(); ++t)
        payloads.push_back(view_payload(s.trainer, e->data(int64_t(t)),
                                        size_t(e->tables()[t].rows * e->tables()[t].dim)));
  }
  if (!final_engram_tables(self, fin, &payloads)) return {};
  s.final_epoch = s.epoch;
  s.recovery_base.reset();
  train::Final f;
  f.set_worker(s.me);
  f.set_weights_hash(s.trainer->weights_hash());
  for (const auto& [reason, count] : s.drops.counts()) {
    train::DropCount* d = f.add_drops();
    d->set_reason(reason), d->set_count(count);
  }
  reply(self, s.ctx.coordinator, final_type, f, std::move(payloads));
  return {};
}

// Epochs: what was sent before the last view change is dropped; what comes from a newer
// epoch than the worker's waits for that epoch's Recover (a faster survivor's transfer).
Verdict admit_epoch(Self* self, ActorMessage& m, bool* held) {
  auto& s = self->state;
  *held = false;
  if (m.epoch < s.epoch) return drop(Drop::stale_epoch, fmt::format("{} < {}", m.epoch, s.epoch));
  if (m.epoch == s.epoch || m.type == recover_type || m.type == reshape_type) return {};
  if (s.early.size() >= early_messages_max)
    return drop(Drop::backlog_full, "too many messages from a newer epoch before its Recover");
  s.early.push_back(std::move(m));
  *held = true;
  return {};
}

void on_message(Self* self, const Dispatcher& table, ActorMessage& m) {
  auto& s = self->state;
  bool held = false;
  Verdict v = admit_epoch(self, m, &held);
  if (!v && held) return;
  if (!v && s.left && m.type != recover_type && m.type != fetch_again_type)
    v = drop(Drop::wrong_phase, "this worker left the view (its node is shut down next)");
  if (!v) v = table.dispatch(m);
  if (v) {
    s.drops.record(*v, m);
    return;
  }
  if (m.type != recover_type && m.type != reshape_type) return;
  std::vector<ActorMessage> early;  // now in this worker's epoch, or stale
  early.swap(s.early);
  for (ActorMessage& e : early) on_message(self, table, e);
}

template <class Proto>
using Handler = Verdict (*)(Self*, const Proto&, const ActorMessage&);

template <class Proto>
void route(Self* self, Dispatcher& d, uint32_t type, Handler<Proto> h) {
  d.on<Proto>(type, [self, h](const Proto& body, ActorMessage& m) { return h(self, body, m); });
}

std::shared_ptr<Dispatcher> worker_table(Self* self) {
  auto d = std::make_shared<Dispatcher>(type_name);
  route<train::StepBegin>(self, *d, step_begin_type, on_step_begin);
  route<train::GradSlices>(self, *d, grad_slices_type, on_grad_slices);
  route<train::EngramSlices>(self, *d, engram_slices_type, on_engram_slices);
  route<train::Apply>(self, *d, apply_type, on_apply);
  route<train::Weights>(self, *d, weights_type, on_weights);
  route<train::Commit>(self, *d, commit_type, on_commit);
  route<train::BuddyState>(self, *d, buddy_state_type, on_buddy_state);
  route<train::Recover>(self, *d, recover_type, on_recover);
  route<train::StateTransfer>(self, *d, state_transfer_type, on_state_transfer);
  route<train::Reshape>(self, *d, reshape_type, on_reshape);
  route<train::Replica>(self, *d, replica_type, on_replica);
  route<train::FetchAgain>(self, *d, fetch_again_type, on_fetch_again);
  route<train::CheckpointNow>(self, *d, checkpoint_now_type, on_checkpoint_now);
  route<train::EngramSwap>(self, *d, engram_swap_type, on_engram_swap);
  route<train::Finish>(self, *d, finish_type, on_finish);
  route<train::Take>(self, *d, take_type, on_take);
  return d;
}

void fail(Self* self, const std::string& what) {
  control::NodeError e;
  e.set_text(fmt::format("{}: {}", self->state.ctx.address, what));
  reply(self, self->state.ctx.coordinator, runtime::node_error_type, e);
  self->quit();
}

void start(Self* self) {
  auto& s = self->state;
  model::JobConfig cfg =
      model::config_from_text(s.ctx.job.config_text, s.ctx.job.config_name, s.ctx.job.config_sets);
  if (s.ctx.threads > 0) cfg.train.threads = s.ctx.threads;
  start_engram(self, cfg);
  s.trainer = std::make_shared<model::Trainer>(cfg, s.engram.get());
  hook_engram(s);
  s.buddy_copies = cfg.fault_tolerance.buddy_copies;
  s.pull = cfg.parallel.schedule == model::Schedule::pull;
  s.pull_pieces_per_worker = cfg.parallel.pull_pieces_per_worker;
  s.epoch = s.ctx.epoch;
  s.peers = s.ctx.peers;
  plan(s, int64_t(s.peers.size()), s.ctx.index);
  start_experts(self, cfg);
  start_grpo(s, cfg);
  s.storage_faults = storage::StorageFaults::from_env();
  s.transfer_faults = TransferFaults::from_env();
  s.compute_faults = ComputeFaults::from_env();
  if (!s.ctx.job.resume_manifest.empty())  // every weight, and this share's optimizer state
    load_checkpoint(s,
                    storage::Manifest::from_json(nlohmann::json::parse(s.ctx.job.resume_manifest)));
  else
    s.trainer->keep_optimizer_state(s.owners[size_t(s.me)]);  // ZeRO-1
  train::Ready r;
  r.set_worker(s.me);
  r.set_parameters(s.trainer->table.total());
  r.set_weights_hash(s.trainer->weights_hash());
  r.set_optimizer_state_floats(s.trainer->optimizer_state_floats());
  reply(self, s.ctx.coordinator, ready_type, r);
}

caf::behavior worker(Self* self, runtime::RoleContext ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.drops.set_owner(s.ctx.address);
  self->send(s.ctx.router, runtime::register_atom::value, fmt::format("worker.{}", s.ctx.index),
             caf::actor(self));
  try {
    start(self);
  } catch (const std::exception& e) {
    fail(self, e.what());
    return {};
  }
  const std::shared_ptr<Dispatcher> table = worker_table(self);
  return {[=](ActorMessage& m) {
    try {
      on_message(self, *table, m);
    } catch (const std::exception& e) {
      fail(self, e.what());
    }
  }};
}

}  // namespace

caf::actor spawn_worker(caf::actor_system& system, const runtime::RoleContext& ctx, bool detached) {
  return detached ? system.spawn<caf::detached>(worker, ctx) : system.spawn(worker, ctx);
}

void register_worker_role() {
  runtime::register_role("worker", [](caf::actor_system& sys, const runtime::RoleContext& ctx) {
    return spawn_worker(sys, ctx, true);
  });
}

}  // namespace troupe::actors
