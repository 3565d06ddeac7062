// The worker's side of a reshape (DESIGN §4): scale up, scale down and drain, between
// steps, with nothing redone. The coordinator sends Reshape under a new epoch to every worker
// of the old view and to the newcomers it placed. Each old worker sends each new one the
// optimizer state of its new share that it owns now (StateTransfer, one per receiver, maybe
// empty); old worker 0 also sends each newcomer the weights and the Engram tables with their
// moments (Replica). Every transfer carries its CRC32C; a receiver that finds it wrong asks
// for it again (FetchAgain). A stayer then reshards, a newcomer loads its whole state, each
// sends its buddies their copies of the new layout and answers Recovered. A leaver keeps what
// it sent until its node is shut down. Should a node be lost during the reshape, the
// coordinator recovers from the old view instead: every old worker kept its RecoveryBase.
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "actors/worker.h"
#include "runtime/log.h"
#include "storage/crc32c.h"
#include "train/dp_plan.h"

namespace troupe::actors::worker_impl {

namespace {

int64_t index_of(const google::protobuf::RepeatedPtrField<std::string>& list,
                 const std::string& address) {
  const auto it = std::find(list.begin(), list.end(), address);
  return it == list.end() ? -1 : int64_t(it - list.begin());
}

// What a Reshape must say to be acted on: distinct workers in each view, this worker in one
// of them, and, for an old worker, the view and the version it is at; committed, or with the
// commit of its last step still on its way (commit_in_flight: the Reshape implies it).
std::string check_reshape(const WorkerState& s, const train::Reshape& r, int64_t old_me,
                          int64_t new_me, bool commit_in_flight) {
  if (r.workers_size() == 0 || r.old_workers_size() == 0) return "a Reshape with an empty view";
  for (const auto* list : {&r.workers(), &r.old_workers()})
    for (int i = 0; i < list->size(); ++i)
      if (index_of(*list, (*list)[i]) != i) return "a Reshape naming a worker twice";
  if (old_me < 0 && new_me < 0) return "a Reshape that does not name this worker";
  if (old_me < 0) return "";
  if (r.old_workers_size() != s.workers ||
      !std::equal(s.peers.begin(), s.peers.end(), r.old_workers().begin()))
    return fmt::format("a Reshape from a view of {} workers that is not this worker's",
                       r.old_workers_size());
  if (r.version() != s.version || r.version() != s.committed + (commit_in_flight ? 1 : 0))
    return fmt::format("a Reshape at step {}, but this worker is at version {} ({} committed)",
                       r.version(), s.version, s.committed);
  return "";
}

// Old worker old_me → each new worker but itself: the state of its new share that it owns.
void send_shares(Self* self, const train::Reshape& r, int64_t old_me, int64_t new_me) {
  auto& s = self->state;
  const model::Trainer& tr = *s.trainer;
  const std::vector<FlatRange> old_owners = model::plan_owners(tr.table, r.old_workers_size());
  const std::vector<FlatRange> new_owners = model::plan_owners(tr.table, r.workers_size());
  for (int j = 0; j < r.workers_size(); ++j) {
    if (j == new_me) continue;
    train::StateTransfer st;
    st.set_version(r.version());
    st.set_sender(old_me);
    std::vector<float> runs;
    int64_t floats = 0;
    for (size_t t : state_tensors(tr, new_owners[size_t(j)], &floats)) {
      if (!old_owners[size_t(old_me)].covers(tr.table.all()[t])) continue;
      st.add_tensors(int64_t(t));
      const size_t at = runs.size();
      runs.resize(at + size_t(tr.optimizer_state_floats_of(t)));
      tr.read_optimizer_state(t, runs.data() + at);
    }
    const Payload p = owned_payload(std::move(runs));
    st.set_crc32c(storage::crc32c(p.bytes.data(), p.bytes.size()));
    ActorMessage m;
    m.header = st.SerializeAsString();
    m.payloads = {p};
    send_checked(self, r.workers(j), state_transfer_type, std::move(m));
  }
}

// Old worker 0 → each newcomer: the weights, then each Engram table's values, m and v.
// Views of this worker's state: it does not change until the next step begins, which the
// coordinator starts only after every newcomer answered Recovered.
void send_replicas(Self* self, const train::Reshape& r) {
  auto& s = self->state;
  const std::vector<float>& params = s.trainer->params;
  std::vector<Payload> payloads = {view_payload(s.trainer, params.data(), params.size())};
  if (auto* e = s.trainer->engram()) {
    auto* store = const_cast<model::InProcessEngramStore<float>*>(e);
    for (size_t t = 0; t < e->tables().size(); ++t) {
      const size_t n = size_t(e->tables()[t].rows * e->tables()[t].dim);
      payloads.push_back(view_payload(s.trainer, e->data(int64_t(t)), n));
      payloads.push_back(view_payload(s.trainer, store->moment_m(int64_t(t)).data(), n));
      payloads.push_back(view_payload(s.trainer, store->moment_v(int64_t(t)).data(), n));
    }
  }
  train::Replica rep;
  rep.set_version(r.version());
  for (const Payload& p : payloads) rep.add_crc32c(storage::crc32c(p.bytes.data(), p.bytes.size()));
  for (const std::string& w : r.workers()) {
    if (index_of(r.old_workers(), w) >= 0) continue;
    ActorMessage m;
    m.header = rep.SerializeAsString();
    m.payloads = payloads;
    send_checked(self, w, replica_type, std::move(m));
  }
}

// The new view's receiving side: the transfers expected (from every old worker but itself),
// the share it keeps of its own, its new seat.
void await_shares(Self* self, const train::Reshape& r, int64_t old_me, int64_t new_me) {
  auto& s = self->state;
  model::Trainer& tr = *s.trainer;
  Recovery rec;
  rec.active = rec.reshape = true;
  rec.version = r.version();
  rec.old_workers.assign(r.old_workers().begin(), r.old_workers().end());
  rec.need_replica = old_me < 0;
  rec.transfers.open(s.epoch, r.version(), r.old_workers_size());
  if (old_me >= 0) rec.transfers.waive(old_me);
  const std::vector<FlatRange> new_owners = model::plan_owners(tr.table, r.workers_size());
  if (old_me >= 0) {  // a stayer: the state of its new share that it owned already
    int64_t floats = 0;
    for (size_t t : state_tensors(tr, new_owners[size_t(new_me)], &floats)) {
      if (!s.owners[size_t(old_me)].covers(tr.table.all()[t])) continue;
      rec.local.emplace_back(size_t(tr.optimizer_state_floats_of(t)));
      tr.read_optimizer_state(t, rec.local.back().data());
      rec.sources[t] = rec.local.back().data();
    }
  }
  s.peers.assign(r.workers().begin(), r.workers().end());
  // Between steps, the last step committed: none of its gradient slices is still on its way.
  tr.release_grads();
  plan(s, r.workers_size(), new_me);
  enter(s, -1);
  s.begun = s.validated = -1;
  s.buddy.clear();
  s.version = s.committed = r.version();
  s.saved_for = -1;
  open_buddies(s, r.version(), &rec.buddies);
  s.recovery = std::move(rec);
}

}  // namespace

Verdict on_reshape(Self* self, const train::Reshape& r, const ActorMessage& m) {
  auto& s = self->state;
  const int64_t old_me = index_of(r.old_workers(), s.ctx.address);
  const int64_t new_me = index_of(r.workers(), s.ctx.address);
  if (m.epoch == s.recover_epoch && new_me >= 0) answer_resend(self);
  if (m.epoch <= s.recover_epoch) return drop(Drop::duplicate, "a Reshape already taken");
  // The coordinator sends a Reshape at version V once step V − 1 is committed, but the Commit
  // may still be on its way (one lane can overtake another: the simulation's seed 534 dropped
  // the Reshape and the job hung). As a StepBegin does, the Reshape implies it.
  const bool commit_in_flight =
      old_me >= 0 && r.version() == s.version && r.version() == s.committed + 1;
  if (std::string why = check_reshape(s, r, old_me, new_me, commit_in_flight); !why.empty())
    return drop(Drop::malformed, why);
  if (commit_in_flight)
    if (Verdict v = accept_commit(self, r.version() - 1)) return v;
  s.epoch = s.recover_epoch = m.epoch;  // from here on, even an error must reach the coordinator
  if (old_me >= 0) {                    // should the reshape be aborted: a recovery from this view
    s.recovery_base = base_of(s, r.version(), r.old_workers_size());
    send_shares(self, r, old_me, new_me);
    if (old_me == 0) send_replicas(self, r);
  }
  if (new_me < 0) {
    s.left = true;
    log::info(
        "{}: leaving the job at step {} (epoch {}): its state is handed over to "
        "the {} workers that stay",
        s.ctx.address, r.version(), s.epoch, r.workers_size());
    return {};
  }
  await_shares(self, r, old_me, new_me);
  log::info("{}: reshaping at step {} (epoch {}): worker {} of {}, was {} of {}", s.ctx.address,
            r.version(), s.epoch, s.me, s.workers,
            old_me < 0 ? std::string("new") : std::to_string(old_me), r.old_workers_size());
  finish_recovery(self);
  return {};
}

Verdict on_replica(Self* self, const train::Replica& rep, const ActorMessage& m) {
  auto& s = self->state;
  Recovery& r = s.recovery;
  if (!r.active || !r.need_replica || rep.version() != r.version)
    return drop(Drop::wrong_phase, "a Replica this worker does not wait for");
  if (r.old_workers.empty() || m.from != r.old_workers[0])
    return drop(Drop::unknown_sender, "a Replica not from old worker 0");
  if (!r.replica.empty()) return drop(Drop::duplicate, "a second Replica");
  const auto* e = s.trainer->engram();
  const size_t expected = 1 + (e ? 3 * e->tables().size() : 0);
  if (m.payloads.size() != expected || rep.crc32c_size() != int(expected))
    return drop(Drop::malformed, "a Replica with the wrong number of payloads");
  for (size_t i = 0; i < expected; ++i)
    if (!crc_ok(m.payloads[i], rep.crc32c(int(i)))) {
      log::warn("{}: the Replica from {} fails its CRC32C: fetching it again", s.ctx.address,
                m.from);
      train::FetchAgain f;
      f.set_version(rep.version());
      f.set_replica(true);
      reply(self, m.from, fetch_again_type, f);
      return drop(Drop::malformed, "a Replica with a wrong CRC32C (fetched again)");
    }
  r.replica = m.payloads;
  finish_recovery(self);
  return {};
}

Verdict on_fetch_again(Self* self, const train::FetchAgain& f, const ActorMessage& m) {
  auto& s = self->state;
  if (f.buddy()) return send_buddy_copy_again(self, f, m);
  const auto it = s.sent.find({m.from, f.replica()});
  if (it == s.sent.end()) return drop(Drop::wrong_phase, "FetchAgain of nothing sent to it");
  ActorMessage again = it->second;  // the kept copy: never the corrupted one
  if (again.epoch != s.epoch) return drop(Drop::stale_epoch, "FetchAgain of an older transfer");
  log::warn("{}: sending the {} to {} again", s.ctx.address, type_name(again.type), m.from);
  send_to(self, std::move(again));
  return {};
}

void take_reshape_state(Self* self) {
  auto& s = self->state;
  Recovery& r = s.recovery;
  model::Trainer& tr = *s.trainer;
  const FlatRange owned = s.owners[size_t(s.me)];
  const auto state_of = [&](size_t t) -> const float* {
    auto it = r.sources.find(t);
    return it == r.sources.end() ? nullptr : it->second;
  };
  if (!r.need_replica) return tr.reshard_optimizer(owned, state_of);
  // A newcomer: everything, as from a checkpoint held in its peers' memory.
  struct Slice {
    const Payload* payload;
    size_t offset, floats;
  };
  std::map<std::string, Slice> named;
  for (const model::ParamInfo& p : tr.table.all())
    named["param/" + p.name] = {&r.replica[0], size_t(p.offset), size_t(p.numel)};
  if (const auto* e = tr.engram())
    for (size_t t = 0; t < e->tables().size(); ++t)
      for (model::EngramPart k : model::kEngramParts) {
        const Payload* p = &r.replica[1 + 3 * t + size_t(k)];
        named[model::engram_state_name(e->tables()[t].name, k)] = {p, 0,
                                                                   p->bytes.size() / sizeof(float)};
      }
  tr.load_state(owned, [&](const std::string& name, std::vector<float>* out) {
    if (name.rfind("optim/", 0) == 0) {
      for (size_t t = 0; t < tr.table.all().size(); ++t)
        if ("optim/" + tr.table.all()[t].name == name) {
          const float* src = state_of(t);
          if (!src) throw std::runtime_error("no transfer brought " + name);
          out->assign(src, src + tr.optimizer_state_floats_of(t));
          return;
        }
    }
    const auto it = named.find(name);
    if (it == named.end()) throw std::runtime_error("the Replica has no " + name);
    const Slice& sl = it->second;
    if ((sl.offset + sl.floats) * sizeof(float) > sl.payload->bytes.size())
      throw std::runtime_error("the Replica is too short for " + name);
    const float* base = reinterpret_cast<const float*>(sl.payload->bytes.data()) + sl.offset;
    out->assign(base, base + sl.floats);
  });
}

}  // namespace troupe::actors::worker_impl
