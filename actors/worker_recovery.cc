// The worker's side of recovery (DESIGN §4), in memory. After every update an owner sends
// its share's optimizer state to its buddies, the next fault_tolerance.buddy_copies workers;
// a worker keeps the version before the step in flight. When a node is lost the coordinator
// sends Recover under a new epoch: each survivor returns to the committed version,
// renumbers, and the new owners gather their shares' state from whoever holds it (the old
// owner, or the first surviving buddy of a lost one). The step then re-runs; since nothing depends
// on the number of workers, the bits are those of a run that lost nothing. A further loss before
// the next step begins restarts the recovery from the same view (RecoveryBase), with every lost
// node left out.
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "actors/worker.h"

namespace troupe::actors::worker_impl {

namespace {

// The tensors of `range` that have optimizer state, in table order, and their total floats.
std::vector<size_t> state_tensors(const model::Trainer& t, FlatRange range, int64_t* floats) {
  std::vector<size_t> out;
  *floats = 0;
  for (size_t i = 0; i < t.table.all().size(); ++i) {
    if (!range.covers(t.table.all()[i]) || t.optimizer_state_floats_of(i) == 0) continue;
    out.push_back(i);
    *floats += t.optimizer_state_floats_of(i);
  }
  return out;
}

void finish_recovery(Self* self) {
  auto& s = self->state;
  Recovery& r = s.recovery;
  if (!r.active) return;
  if (!r.resharded) {
    if (r.transfers_in < r.transfers_expected) return;
    s.trainer->reshard_optimizer(s.owners[size_t(s.me)], [&](size_t t) -> const float* {
      auto it = r.sources.find(t);
      return it == r.sources.end() ? nullptr : it->second;
    });
    r.resharded = true;
    send_buddy_copy(self, r.version);
  }
  if (r.buddies_in < buddy_count(s, s.workers)) return;
  s.recovery = Recovery{};
  fmt::print(stderr, "troupe {}: recovered: worker {} of {} at step {} (epoch {})\n", s.ctx.address,
             s.me, s.workers, s.version, s.epoch);
  train::Recovered done;
  done.set_worker(s.me);
  reply(self, s.ctx.coordinator, recovered_type, done);
}

}  // namespace

int64_t buddy_count(const WorkerState& s, int64_t workers) {
  return std::min(s.buddy_copies, workers - 1);
}

void send_buddy_copy(Self* self, int64_t version) {
  auto& s = self->state;
  if (buddy_count(s, s.workers) == 0) return;
  int64_t floats = 0;
  const std::vector<size_t> tensors = state_tensors(*s.trainer, s.owners[size_t(s.me)], &floats);
  std::vector<float> runs(static_cast<size_t>(floats));
  size_t at = 0;
  for (size_t t : tensors) {
    s.trainer->read_optimizer_state(t, runs.data() + at);
    at += size_t(s.trainer->optimizer_state_floats_of(t));
  }
  train::BuddyState b;
  b.set_version(version);
  b.set_worker(s.me);
  const Payload copy = owned_payload(std::move(runs));
  for (int64_t d = 1; d <= buddy_count(s, s.workers); ++d)
    reply(self, s.peers[size_t((s.me + d) % s.workers)], buddy_state_type, b, {copy});
}

void on_buddy_state(Self* self, const ActorMessage& m, const train::BuddyState& b) {
  auto& s = self->state;
  const int64_t pred = b.worker();
  if (pred < 0 || pred >= s.workers || pred == s.me ||
      (s.me - pred + s.workers) % s.workers > buddy_count(s, s.workers))
    return reject(self, m, "buddy state from a worker that is not one of my predecessors");
  int64_t floats = 0;
  (void)state_tensors(*s.trainer, s.owners[size_t(pred)], &floats);
  if (m.payloads.size() != 1 || m.payloads[0].bytes.size() != size_t(floats) * sizeof(float))
    return reject(self, m, "buddy state of the wrong size");
  const bool fresh =
      s.buddy
          .try_emplace({b.version(), pred}, BuddyCopy{pred, s.owners[size_t(pred)], m.payloads[0]})
          .second;
  while (!s.buddy.empty() && s.buddy.begin()->first.first < b.version() - 1)
    s.buddy.erase(s.buddy.begin());
  if (!fresh) return reject(self, m, "a second buddy state of the same version");
  if (s.recovery.active && b.version() == s.recovery.version) {
    ++s.recovery.buddies_in;
    return finish_recovery(self);
  }
  if (b.version() - 1 < s.step) return reject(self, m, "buddy state of an old step");
  enter(s, b.version() - 1);
  ++s.buddies_in;
  try_done(self);
}

namespace {

// The view before the first Recover of a recovery: back to version c (the step in flight, if
// any, is dropped), and what this worker held in it.
RecoveryBase base_of(WorkerState& s, int64_t c, int64_t old_n) {
  model::Trainer& tr = *s.trainer;
  if (old_n != s.workers)
    throw std::runtime_error(
        fmt::format("Recover for {} workers, but this worker knows {}", old_n, s.workers));
  if (s.saved_for == c) {
    tr.restore_version();
  } else if (s.version != c) {
    throw std::runtime_error(
        fmt::format("cannot return to step {}: this worker is at step {}", c, s.version));
  }
  s.version = c;
  s.saved_for = -1;
  RecoveryBase b;
  b.version = c, b.workers = s.workers, b.me = s.me, b.owners = s.owners;
  int64_t floats = 0;
  for (size_t t : state_tensors(tr, s.owners[size_t(s.me)], &floats)) {
    std::vector<float>& v = b.own[t];
    v.resize(size_t(tr.optimizer_state_floats_of(t)));
    tr.read_optimizer_state(t, v.data());
  }
  for (const auto& [key, copy] : s.buddy)
    if (key.first == c) b.buddies[key.second] = copy;
  return b;
}

}  // namespace

void on_recover(Self* self, const ActorMessage& m, const train::Recover& r) {
  auto& s = self->state;
  model::Trainer& tr = *s.trainer;
  s.epoch = m.epoch;  // from here on, even an error report must reach the coordinator
  const int64_t c = r.version();
  // A further loss during a recovery: the coordinator restarts it from the same view.
  if (!s.recovery_base) s.recovery_base = base_of(s, c, r.old_workers());
  const RecoveryBase& base = *s.recovery_base;
  const int64_t old_n = base.workers, old_me = base.me;
  if (base.version != c || r.old_workers() != old_n || r.workers_size() != r.old_index_size() ||
      r.workers_size() == 0)
    throw std::runtime_error(fmt::format(
        "Recover to step {} from {} workers, but this worker's recovery is to step {} from {}", c,
        r.old_workers(), base.version, old_n));
  std::vector<bool> alive(size_t(old_n), false);
  for (int64_t i : r.old_index()) {
    if (i < 0 || i >= old_n) throw std::runtime_error("Recover names an unknown worker");
    alive[size_t(i)] = true;
  }
  // Who holds each old share's state now: its owner, or else its buddy.
  const int64_t copies = buddy_count(s, old_n);
  auto holder = [&](int64_t o) {
    for (int64_t d = 0; d <= copies; ++d)
      if (alive[size_t((o + d) % old_n)]) return (o + d) % old_n;
    throw std::runtime_error(fmt::format(
        "worker {} and its buddies (the next {}) are all lost: the optimizer state of its share "
        "is gone; in-memory recovery cannot go on (fault_tolerance.buddy_copies = {})",
        o, copies == 1 ? std::string("worker") : fmt::format("{} workers", copies), copies));
  };
  const std::vector<FlatRange>& old_owners = base.owners;
  std::vector<int64_t> owner_of(tr.table.all().size(), -1);
  for (size_t t = 0; t < owner_of.size(); ++t)
    for (int64_t o = 0; o < old_n; ++o)
      if (old_owners[size_t(o)].covers(tr.table.all()[t])) owner_of[t] = o;
  // The state this worker holds: its own share (at version c) and the shares of the lost
  // predecessors it is now the holder of (their buddy copies of version c; zeros at 0).
  Recovery rec;
  rec.active = true;
  rec.version = c;
  for (const auto& [t, v] : base.own) rec.sources[t] = v.data();
  int64_t floats = 0;
  for (int64_t d = 1; d <= copies; ++d) {
    const int64_t pred = (old_me - d + old_n) % old_n;
    if (holder(pred) != old_me) continue;
    const std::vector<size_t> tensors = state_tensors(tr, old_owners[size_t(pred)], &floats);
    if (c == 0) {
      for (size_t t : tensors) {
        rec.local.emplace_back(size_t(tr.optimizer_state_floats_of(t)), 0.0f);
        rec.sources[t] = rec.local.back().data();
      }
      continue;
    }
    auto it = base.buddies.find(pred);
    if (it == base.buddies.end())
      throw std::runtime_error(fmt::format(
          "no buddy copy of worker {}'s optimizer state at step {}: cannot take it over", pred, c));
    const float* at = reinterpret_cast<const float*>(it->second.runs.bytes.data());
    for (size_t t : tensors) {
      rec.sources[t] = at;
      at += tr.optimizer_state_floats_of(t);
    }
  }
  // The new layout.
  int64_t new_me = -1;
  for (int i = 0; i < r.workers_size(); ++i)
    if (r.workers(i) == s.ctx.address) new_me = i;
  if (new_me < 0) throw std::runtime_error("Recover does not name this worker among the survivors");
  s.peers.assign(r.workers().begin(), r.workers().end());
  plan(s, int64_t(s.peers.size()), new_me);
  enter(s, -1);
  s.buddy.clear();
  // Send each new owner the state it needs from here; keep what this worker needs itself.
  for (int64_t j = 0; j < s.workers; ++j) {
    if (j == s.me) continue;
    train::StateTransfer st;
    st.set_version(c);
    std::vector<float> runs;
    for (size_t t : state_tensors(tr, s.owners[size_t(j)], &floats)) {
      if (holder(owner_of[t]) != old_me) continue;
      st.add_tensors(int64_t(t));
      const float* src = rec.sources.at(t);
      runs.insert(runs.end(), src, src + tr.optimizer_state_floats_of(t));
    }
    reply(self, s.peers[size_t(j)], state_transfer_type, st, {owned_payload(std::move(runs))});
  }
  std::map<size_t, const float*> mine;
  for (size_t t : state_tensors(tr, s.owners[size_t(s.me)], &floats))
    if (holder(owner_of[t]) == old_me) mine[t] = rec.sources.at(t);
  rec.sources = std::move(mine);
  rec.transfers_expected = s.workers - 1;
  s.recovery = std::move(rec);
  fmt::print(stderr,
             "troupe {}: recovering to step {} (epoch {}): worker {} of {} was {} of {}; "
             "waiting for {} state transfer(s)\n",
             s.ctx.address, c, s.epoch, s.me, s.workers, old_me, old_n, s.workers - 1);
  finish_recovery(self);
}

void on_state_transfer(Self* self, const ActorMessage& m, const train::StateTransfer& t) {
  auto& s = self->state;
  Recovery& r = s.recovery;
  if (!r.active || t.version() != r.version || m.payloads.size() != 1)
    return reject(self, m, "state transfer outside a recovery");
  const model::Trainer& tr = *s.trainer;
  int64_t floats = 0;
  for (int64_t i : t.tensors()) {
    if (i < 0 || size_t(i) >= tr.table.all().size() ||
        !s.owners[size_t(s.me)].covers(tr.table.all()[size_t(i)]))
      return reject(self, m, "state transfer of a tensor this worker does not own");
    floats += tr.optimizer_state_floats_of(size_t(i));
  }
  if (m.payloads[0].bytes.size() != size_t(floats) * sizeof(float))
    return reject(self, m, "state transfer of the wrong size");
  const float* at = reinterpret_cast<const float*>(m.payloads[0].bytes.data());
  for (int64_t i : t.tensors()) {
    r.sources[size_t(i)] = at;
    at += tr.optimizer_state_floats_of(size_t(i));
  }
  r.received.push_back(m.payloads[0]);
  ++r.transfers_in;
  finish_recovery(self);
}

}  // namespace troupe::actors::worker_impl
