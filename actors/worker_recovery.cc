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
#include <cstring>
#include <stdexcept>

#include "actors/invariant.h"
#include "actors/recovery_plan.h"
#include "actors/worker.h"
#include "runtime/log.h"
#include "storage/crc32c.h"
#include "train/dp_plan.h"

namespace troupe::actors::worker_impl {

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
    if (!r.transfers.complete() || (r.need_replica && r.replica.empty())) return;
    if (r.reshape) {
      take_reshape_state(self);
    } else {
      s.trainer->reshard_optimizer(s.owners[size_t(s.me)], [&](size_t t) -> const float* {
        auto it = r.sources.find(t);
        return it == r.sources.end() ? nullptr : it->second;
      });
    }
    r.resharded = true;
    send_buddy_copy(self, r.version);
  }
  if (!r.buddies.complete()) return;
  s.recovery = Recovery{};
  log::info("{}: recovered: worker {} of {} at step {} (epoch {})", s.ctx.address, s.me, s.workers,
            s.version, s.epoch);
  train::Recovered done;
  done.set_worker(s.me);
  reply(self, s.ctx.coordinator, recovered_type, done);
}

bool crc_ok(const Payload& p, uint32_t crc) {
  return storage::crc32c(p.bytes.data(), p.bytes.size()) == crc;
}

void send_checked(Self* self, const std::string& to, uint32_t type, ActorMessage m) {
  auto& s = self->state;
  m.from = s.ctx.address, m.to = to, m.type = type;
  m.epoch = s.epoch;
  s.sent[{to, type == replica_type}] = m;
  if (s.transfer_faults.next_corrupt() && !m.payloads.empty()) {
    const Payload& p = m.payloads[0];
    // One byte flipped; an empty transfer gets one stray byte instead.
    std::vector<uint8_t> bad(std::max<size_t>(1, p.bytes.size()), 0);
    if (!p.bytes.empty()) std::memcpy(bad.data(), p.bytes.data(), p.bytes.size());
    bad[0] ^= 0x5a;
    m.payloads[0] = owned_payload(std::move(bad));
    log::warn("{}: chaos: the {} to {} goes out corrupted", s.ctx.address, type_name(type), to);
  }
  send_to(self, std::move(m));
}

int64_t buddy_count(const WorkerState& s, int64_t workers) {
  return std::min(s.buddy_copies, workers - 1);
}

void send_buddy_copy(Self* self, int64_t version, const std::string& only) {
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
  for (int64_t d = 1; d <= buddy_count(s, s.workers); ++d) {
    const std::string& to = s.peers[size_t((s.me + d) % s.workers)];
    if (only.empty() || to == only) reply(self, to, buddy_state_type, b, {copy});
  }
}

namespace {

// What this worker still waits for in the recovery or reshape in flight, asked for again
// from its senders: the missing transfers, the Replica, the missing buddy copies. A sender
// that has not sent it yet (its own Recover or Reshape lost too) drops the request; the
// next resend asks again.
void ask_again(Self* self) {
  auto& s = self->state;
  const Recovery& r = s.recovery;
  if (!r.active) return;
  std::string asked;
  const auto ask = [&](const std::string& to, bool replica, bool buddy) {
    train::FetchAgain f;
    f.set_version(r.version);
    f.set_replica(replica);
    f.set_buddy(buddy);
    reply(self, to, fetch_again_type, f);
    const std::string what = replica ? "Replica" : buddy ? "BuddyState" : "StateTransfer";
    asked += (asked.empty() ? "" : ", ") + what + " from " + to;
  };
  if (!r.resharded) {
    for (int64_t i : r.transfers.missing())
      ask(r.reshape ? r.old_workers[size_t(i)] : s.peers[size_t(i)], false, false);
    if (r.need_replica && r.replica.empty()) ask(r.old_workers[0], true, false);
  }
  for (int64_t i : r.buddies.missing()) ask(s.peers[size_t(i)], false, true);
  if (asked.empty()) return;
  const std::string round = r.reshape ? "Reshape" : "Recover";
  log::warn("{}: the {} of step {} came again and this worker still waits: asking again for {}",
            s.ctx.address, round, r.version, asked);
}

}  // namespace

Verdict send_buddy_copy_again(Self* self, const train::FetchAgain& f, const ActorMessage& m) {
  auto& s = self->state;
  const int64_t to = std::find(s.peers.begin(), s.peers.end(), m.from) - s.peers.begin();
  const int64_t d = (to - s.me + s.workers) % s.workers;
  if (to >= s.workers || d == 0 || d > buddy_count(s, s.workers))
    return drop(Drop::unknown_sender, "FetchAgain of a buddy copy from a worker not a buddy");
  // The copy of the recovery's layout: this worker resharded, and no step began since.
  if (f.version() != s.version || s.step >= 0 || (s.recovery.active && !s.recovery.resharded))
    return drop(Drop::wrong_phase, fmt::format("FetchAgain of the buddy copy of version {} at "
                                               "version {}, step {}",
                                               f.version(), s.version, s.step));
  log::warn("{}: sending the BuddyState of version {} to {} again", s.ctx.address, f.version(),
            m.from);
  send_buddy_copy(self, f.version(), m.from);
  return {};
}

Verdict on_buddy_state(Self* self, const train::BuddyState& b, const ActorMessage& m) {
  auto& s = self->state;
  const int64_t pred = b.worker();
  if (pred < 0 || pred >= s.workers || pred == s.me ||
      (s.me - pred + s.workers) % s.workers > buddy_count(s, s.workers))
    return drop(Drop::unknown_sender, "buddy state from a worker that is not a predecessor");
  if (m.from != s.peers[size_t(pred)])
    return drop(Drop::unknown_sender, fmt::format("buddy state of worker {}", pred));
  int64_t floats = 0;
  (void)state_tensors(*s.trainer, s.owners[size_t(pred)], &floats);
  if (m.payloads.size() != 1 || m.payloads[0].bytes.size() != size_t(floats) * sizeof(float))
    return drop(Drop::malformed, "buddy state of the wrong size");
  if (b.version() > s.version + 1 || (!s.recovery.active && b.version() - 1 < s.step))
    return drop(Drop::wrong_step,
                fmt::format("buddy state of version {} at step {}", b.version(), s.step));
  const bool fresh =
      s.buddy
          .try_emplace({b.version(), pred}, BuddyCopy{pred, s.owners[size_t(pred)], m.payloads[0]})
          .second;
  while (!s.buddy.empty() && s.buddy.begin()->first.first < b.version() - 1)
    s.buddy.erase(s.buddy.begin());
  if (!fresh) return drop(Drop::duplicate, "a second buddy state of the same version");
  if (s.recovery.active && b.version() == s.recovery.version) {
    if (Verdict v = drop_receipt(s.recovery.buddies.add(s.epoch, b.version(), pred), "BuddyState"))
      return v;
    finish_recovery(self);
    return {};
  }
  if (b.version() - 1 < s.step) return drop(Drop::wrong_step, "buddy state of an old step");
  enter(s, b.version() - 1);
  if (Verdict v = drop_receipt(s.buddies.add(s.epoch, b.version(), pred), "BuddyState")) return v;
  try_done(self);
  return {};
}

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

namespace {

RecoveryInput recovery_input(const WorkerState& s, const RecoveryBase& base,
                             const train::Recover& r) {
  const model::Trainer& tr = *s.trainer;
  RecoveryInput in;
  in.old_workers = base.workers, in.old_me = base.me;
  in.copies = buddy_count(s, base.workers);
  in.old_index.assign(r.old_index().begin(), r.old_index().end());
  in.new_me = -1;
  for (int i = 0; i < r.workers_size(); ++i)
    if (r.workers(i) == s.ctx.address) in.new_me = i;
  in.old_owners = base.owners;
  in.new_owners = model::plan_owners(tr.table, r.workers_size());
  in.tensors = tr.table.all();
  for (size_t t = 0; t < in.tensors.size(); ++t)
    in.state_floats.push_back(tr.optimizer_state_floats_of(t));
  return in;
}

// The state this worker holds at version c: its own share's, and the shares of the lost
// predecessors it adopts (their buddy copies of version c; zeros at step 0).
Recovery gather_sources(WorkerState& s, const RecoveryBase& base, const RecoveryPlan& plan,
                        int64_t c) {
  const model::Trainer& tr = *s.trainer;
  Recovery rec;
  rec.active = true;
  rec.version = c;
  for (const auto& [t, v] : base.own) rec.sources[t] = v.data();
  int64_t floats = 0;
  for (int64_t pred : plan.adopted) {
    const std::vector<size_t> tensors = state_tensors(tr, base.owners[size_t(pred)], &floats);
    if (c == 0) {
      for (size_t t : tensors) {
        rec.local.emplace_back(size_t(tr.optimizer_state_floats_of(t)), 0.0f);
        rec.sources[t] = rec.local.back().data();
      }
      continue;
    }
    auto it = base.buddies.find(pred);
    if (it == base.buddies.end() && s.loaded && s.loaded->step == c) {  // resumed at c
      const size_t first = rec.local.size();
      read_loaded_state(s, tensors, &rec.local);
      for (size_t k = 0; k < tensors.size(); ++k)
        rec.sources[tensors[k]] = rec.local[first + k].data();
      continue;
    }
    if (it == base.buddies.end())
      throw std::runtime_error(fmt::format(
          "no buddy copy of worker {}'s optimizer state at step {}: cannot take it over", pred, c));
    const float* at = reinterpret_cast<const float*>(it->second.runs.bytes.data());
    for (size_t t : tensors) {
      rec.sources[t] = at;
      at += tr.optimizer_state_floats_of(t);
    }
  }
  return rec;
}

// Sends each new owner the state it needs from this worker (one transfer each, maybe empty).
void send_transfers(Self* self, const RecoveryPlan& plan, const Recovery& rec) {
  auto& s = self->state;
  for (int64_t j = 0; j < s.workers; ++j) {
    if (j == s.me) continue;
    train::StateTransfer st;
    st.set_version(rec.version);
    std::vector<float> runs;
    for (size_t t : plan.send[size_t(j)]) {
      st.add_tensors(int64_t(t));
      const float* src = rec.sources.at(t);
      runs.insert(runs.end(), src, src + s.trainer->optimizer_state_floats_of(t));
    }
    const Payload p = owned_payload(std::move(runs));
    st.set_crc32c(storage::crc32c(p.bytes.data(), p.bytes.size()));
    st.set_sender(s.me);
    ActorMessage m;
    m.header = st.SerializeAsString();
    m.payloads = {p};
    send_checked(self, s.peers[size_t(j)], state_transfer_type, std::move(m));
  }
}

// What a Recover must say to be acted on at all: survivors with their old indices, each
// once, this worker among them, from a view of the size this worker knows.
std::string check_shape(const WorkerState& s, const train::Recover& r) {
  const int64_t old_n = s.recovery_base ? s.recovery_base->workers : s.workers;
  if (r.old_workers() != old_n || r.workers_size() != r.old_index_size() || r.workers_size() == 0 ||
      r.workers_size() > old_n)
    return fmt::format("a Recover from {} workers to {}; this worker knows {}", r.old_workers(),
                       r.workers_size(), old_n);
  std::vector<bool> seen(size_t(old_n), false);
  bool me = false;
  for (int i = 0; i < r.workers_size(); ++i) {
    const int64_t o = r.old_index(i);
    if (o < 0 || o >= old_n || seen[size_t(o)]) return "a Recover naming a worker twice or none";
    seen[size_t(o)] = true;
    me |= r.workers(i) == s.ctx.address;
  }
  if (!me) return "a Recover that does not name this worker among the survivors";
  return "";
}

}  // namespace

namespace {

// The last fallback: an owner was lost with every buddy, so its share's state is gone from
// memory. Every survivor loads the newest complete checkpoint for its new share instead,
// sends its buddies their copies, and the job replays from there.
Verdict rollback(Self* self, const train::Recover& r, const ActorMessage& m) {
  auto& s = self->state;
  if (m.payloads.size() != 1) throw std::runtime_error("a rollback Recover without its manifest");
  const storage::Manifest man =
      storage::Manifest::from_json(nlohmann::json::parse(runtime::payload_text(m.payloads[0])));
  int64_t new_me = -1;
  for (int i = 0; i < r.workers_size(); ++i)
    if (r.workers(i) == s.ctx.address) new_me = i;
  s.peers.assign(r.workers().begin(), r.workers().end());
  plan(s, int64_t(s.peers.size()), new_me);
  if (s.checkpoint_writer.joinable()) s.checkpoint_writer.join();
  load_checkpoint(s, man);
  enter(s, -1);
  s.begun = s.validated = -1;
  s.buddy.clear();
  RecoveryBase base;  // a further loss restarts the rollback from the same view
  base.version = man.step, base.workers = r.old_workers(), base.me = -1;
  s.recovery_base = std::move(base);
  Recovery rec;
  rec.active = true, rec.version = man.step, rec.resharded = true;
  open_buddies(s, man.step, &rec.buddies);
  s.recovery = std::move(rec);
  send_buddy_copy(self, man.step);
  log::info("{}: rolling back to the checkpoint of step {} (epoch {}): worker {} of {}",
            s.ctx.address, man.step, s.epoch, s.me, s.workers);
  finish_recovery(self);
  return {};
}

}  // namespace

// The coordinator sent the Recover or Reshape this worker took again: it has not heard this
// worker's Recovered. Recovered already, the worker answers again (that answer may have been
// lost); still waiting, it asks again for what has not come (that may have been lost).
void answer_resend(Self* self) {
  auto& s = self->state;
  if (s.recovery.active) return ask_again(self);
  train::Recovered again;
  again.set_worker(s.me);
  reply(self, s.ctx.coordinator, recovered_type, again);
}

// A Recover under a new epoch: back to the committed version, renumber, and move the
// optimizer state to its new owners as plan_recovery says. A further loss during a recovery
// restarts it from the same view (recovery_base).
Verdict on_recover(Self* self, const train::Recover& r, const ActorMessage& m) {
  auto& s = self->state;
  // On arrival, before any check: a recovery that never finishes then tells "never
  // delivered" from "delivered and dropped" (docs/operations.md, known problems).
  log::info("{}: a Recover to step {} (epoch {}) arrived at epoch {}", s.ctx.address, r.version(),
            m.epoch, s.epoch);
  if (m.epoch == s.recover_epoch && s.recovery_base) answer_resend(self);
  if (m.epoch <= s.recover_epoch) return drop(Drop::duplicate, "a Recover already taken");
  if (std::string why = check_shape(s, r); !why.empty()) return drop(Drop::malformed, why);
  TROUPE_ASSERT(m.epoch >= s.epoch, "a Recover of epoch {} admitted at epoch {}", m.epoch, s.epoch);
  s.epoch = s.recover_epoch = m.epoch;  // from here on, even an error must reach the coordinator
  s.left = false;                       // a reshape it was leaving is aborted
  s.recovery = Recovery{};              // and so is one it was taking part in
  if (r.rollback()) return rollback(self, r, m);
  const int64_t c = r.version();
  if (!s.recovery_base) s.recovery_base = base_of(s, c, r.old_workers());
  const RecoveryBase& base = *s.recovery_base;
  if (base.version != c || r.old_workers() != base.workers ||
      r.workers_size() != r.old_index_size() || r.workers_size() == 0)
    throw std::runtime_error(fmt::format(
        "Recover to step {} from {} workers, but this worker's recovery is to step {} from {}", c,
        r.old_workers(), base.version, base.workers));
  const RecoveryInput in = recovery_input(s, base, r);
  const RecoveryPlan moves = plan_recovery(in);
  if (!moves.error.empty()) throw std::runtime_error(moves.error);
  Recovery rec = gather_sources(s, base, moves, c);
  s.committed = std::max(s.committed, c);
  s.peers.assign(r.workers().begin(), r.workers().end());
  plan(s, int64_t(s.peers.size()), in.new_me);
  enter(s, -1);
  s.begun = s.validated = -1;
  s.buddy.clear();
  send_transfers(self, moves, rec);
  std::map<size_t, const float*> mine;
  for (size_t t : moves.keep) mine[t] = rec.sources.at(t);
  rec.sources = std::move(mine);
  rec.transfers.open(s.epoch, c, s.workers);
  rec.transfers.waive(s.me);
  open_buddies(s, c, &rec.buddies);
  s.recovery = std::move(rec);
  log::info(
      "{}: recovering to step {} (epoch {}): worker {} of {} was {} of {}; waiting for {} state "
      "transfer(s)",
      s.ctx.address, c, s.epoch, s.me, s.workers, base.me, base.workers, s.workers - 1);
  finish_recovery(self);
  return {};
}

// The sender's index in the round of transfers: in a reshape its index in the old view
// (every old worker sends), in a recovery its new index. -1: not one of the round's.
int64_t transfer_sender(const WorkerState& s, const train::StateTransfer& t,
                        const ActorMessage& m) {
  const Recovery& r = s.recovery;
  if (!r.reshape) return std::find(s.peers.begin(), s.peers.end(), m.from) - s.peers.begin();
  if (t.sender() < 0 || t.sender() >= int64_t(r.old_workers.size()) ||
      r.old_workers[size_t(t.sender())] != m.from)
    return -1;
  return t.sender();
}

Verdict on_state_transfer(Self* self, const train::StateTransfer& t, const ActorMessage& m) {
  auto& s = self->state;
  Recovery& r = s.recovery;
  if (!r.active || t.version() != r.version)
    return drop(Drop::wrong_phase, "state transfer outside a recovery");
  if (m.payloads.size() != 1) return drop(Drop::malformed, "state transfer without one payload");
  const int64_t from = transfer_sender(s, t, m);
  if (Verdict v = drop_receipt(r.transfers.check(s.epoch, t.version(), from), "StateTransfer"))
    return v;
  if (!crc_ok(m.payloads[0], t.crc32c())) {
    log::warn("{}: the state transfer from {} fails its CRC32C: fetching it again", s.ctx.address,
              m.from);
    train::FetchAgain f;
    f.set_version(t.version());
    reply(self, m.from, fetch_again_type, f);
    return drop(Drop::malformed, "a state transfer with a wrong CRC32C (fetched again)");
  }
  const model::Trainer& tr = *s.trainer;
  int64_t floats = 0;
  for (int64_t i : t.tensors()) {
    if (i < 0 || size_t(i) >= tr.table.all().size() ||
        !s.owners[size_t(s.me)].covers(tr.table.all()[size_t(i)]))
      return drop(Drop::malformed, "state transfer of a tensor this worker does not own");
    floats += tr.optimizer_state_floats_of(size_t(i));
  }
  if (m.payloads[0].bytes.size() != size_t(floats) * sizeof(float))
    return drop(Drop::malformed, "state transfer of the wrong size");
  r.transfers.add(s.epoch, t.version(), from);
  const float* at = reinterpret_cast<const float*>(m.payloads[0].bytes.data());
  for (int64_t i : t.tensors()) {
    r.sources[size_t(i)] = at;
    at += tr.optimizer_state_floats_of(size_t(i));
  }
  r.received.push_back(m.payloads[0]);
  finish_recovery(self);
  return {};
}

}  // namespace troupe::actors::worker_impl
