// The engram_shard role (issue 16, `[engram] placement = "shards"`): it holds whole Engram
// tables (table t on shard t mod engram.shards) with their Adam moments, answers the
// workers' prefetches (EngramLookup → EngramRows), gathers every piece's sparse gradient of
// its tables (EngramSlices from the workers), reduces them in canonical tree order, sends
// each table's Σ g² to the coordinator (EngramNorm) and applies the step's sparse Adam on
// the coordinator's Apply — train::EngramShare, the trainer's bits on those tables.
//
// Versions and epochs. version = train steps applied. A lookup (or a dump) of a version not
// reached yet is held until the Apply that reaches it; the gradients of a step come only
// after its lookups were answered. A message of a newer epoch (a recovery, a reshape)
// forgets the step being gathered and what was held; and when it asks for the version
// before the last update, which was applied in an older epoch (the step was aborted after
// this shard applied it, before the coordinator recorded its commit), the update is undone
// first: the shard returns to the committed version as the workers do. Bad input is
// dropped and counted; nothing a message says can crash the shard.
//
// Checkpoints: the coordinator asks each shard's lookup holder (EngramDump with a
// checkpoint_writer) to write its tables and moments into the checkpoint of a version, as a
// worker writes its share (actors/checkpoint_writer.h): copied out at that version, written
// by a thread of the holder's own, reported to the coordinator with CheckpointWritten.
//
// Copies: every holder of a shard (actors/coordinator_engram.cc) gets the same messages but
// the lookups, and so stays equal. A new holder (its predecessor's node left) starts at
// version 0 and holds what it is sent until a survivor's EngramState (asked by the
// coordinator's EngramCopy, at the committed version) makes it that version.
#include <fmt/format.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "actors/checkpoint_writer.h"
#include "actors/dispatch.h"
#include "actors/protocol.h"
#include "actors/roles.h"
#include "config/config_parse.h"
#include "runtime/control.pb.h"
#include "runtime/log.h"
#include "storage/checkpoint.h"
#include "storage/crc32c.h"
#include "storage/engram_set.h"
#include "storage/engram_tier.h"
#include "storage/shard_store.h"
#include "train/engram_share.h"
#include "train/step_rules.h"

namespace troupe::actors {
namespace {

using runtime::ActorMessage;
using runtime::Payload;

// Lookups and dumps held until their version: a step's lookups of every worker, at most.
inline constexpr size_t held_requests_max = 4096;

struct EngramShardState {
  runtime::RoleContext ctx;
  model::JobConfig cfg;
  int64_t shards = 0, n_mb = 0;
  std::unique_ptr<model::EngramShare> share;
  uint64_t epoch = 0;
  uint64_t update_epoch = 0;  // the epoch in which the last kept update was applied
  int64_t step = -1;          // the step whose pieces are being gathered
  std::vector<model::TreeNode> nodes;
  std::vector<std::unique_ptr<model::EngramGrad<float>>> grads;
  int64_t covered = 0;  // micro-batches the gathered pieces cover
  std::vector<ActorMessage> held;
  DropLog drops{"", type_name};
  int64_t answered = 0;  // lookups answered in this epoch (the first is logged)
  storage::StorageFaults storage_faults;
  std::thread writer;  // the checkpoint being written (write_checkpoint), one at most
  ~EngramShardState() {
    if (writer.joinable()) writer.join();
  }
  static inline const char* name = "engram_shard";
};
using Self = caf::stateful_actor<EngramShardState>;

template <class Proto>
void reply(Self* self, const std::string& to, uint32_t type, const Proto& body,
           std::vector<Payload> payloads) {
  ActorMessage m = make_message(self->state.ctx.address, to, type, body);
  m.epoch = self->state.epoch;
  m.payloads = std::move(payloads);
  self->send(self->state.ctx.router, std::move(m));
}

void forget_step(EngramShardState& s) {
  s.nodes.clear(), s.grads.clear();
  s.covered = 0;
  s.share->drop_reduced();
}

// With engram.host_cache_bytes: the tables in a host cache over RocksDB in the run directory
// (one database per holder); else null (all in memory).
std::unique_ptr<model::ShardTables> cold_tier(const EngramShardState& s,
                                              const std::vector<bool>& held) {
  if (s.cfg.engram.host_cache_bytes == 0) return nullptr;
  if (s.ctx.job.run_dir.empty())
    throw std::invalid_argument("engram.host_cache_bytes needs a run directory for the cold tier");
  const std::string dir =
      fmt::format("{}/engram/{}-shard{}", s.ctx.job.run_dir, s.ctx.node_id, s.ctx.index);
  std::filesystem::create_directories(dir);
  return std::make_unique<storage::TieredShardTables>(s.cfg.model, s.cfg.train.seed, held, dir,
                                                      s.cfg.engram.host_cache_bytes);
}

// The cold tier's counts, when there is one (at the job's end: the final dump).
void log_tier(const EngramShardState& s) {
  const auto* tier = dynamic_cast<const storage::TieredShardTables*>(&s.share->tables());
  if (!tier) return;
  const auto& st = tier->stats();
  log::info(
      "{}: host cache {} of {} rows; {} hits, {} misses ({:.1f}%: {} from RocksDB, the "
      "rest fresh), {:.1f} ms loading them; {} rows written back ({:.1f} MiB), {:.1f} MiB "
      "read",
      s.ctx.address, st.cached_rows, st.capacity_rows, st.hits, st.misses,
      100.0 * double(st.misses) / double(std::max<int64_t>(1, st.hits + st.misses)), st.cold_reads,
      st.miss_ms, st.rows_written, double(st.bytes_written) / (1 << 20),
      double(st.bytes_read) / (1 << 20));
}

// The tables held, with their moments, from checkpoint m (worker 0 wrote them there as a
// worker holding every table does), at version m.step: a resumed job's, or a rollback's.
// Throws naming what is missing.
void load_tables(EngramShardState& s, const std::string& manifest) {
  const storage::Manifest m = storage::Manifest::from_json(nlohmann::json::parse(manifest));
  storage::CheckpointReader reader(storage::checkpoint_dir(s.ctx.job.run_dir, m.step), m.step,
                                   m.shards);
  std::vector<std::vector<float>> parts[3];
  for (int64_t t : s.share->held_tables())
    for (model::EngramPart p : model::kEngramParts) {
      const std::string name =
          model::engram_state_name(s.share->tables().tables()[size_t(t)].name, p);
      const runtime::Status st = reader.read(name, &parts[int(p)].emplace_back());
      if (!st.ok())
        throw std::runtime_error(fmt::format("cannot load {} from the checkpoint of step {}: {}",
                                             name, m.step, st.message()));
    }
  s.share->install(m.step, parts[0], parts[1], parts[2]);
  log::info("{}: loaded its tables from the checkpoint of step {}", s.ctx.address, m.step);
}

// A request for `version`: true when it can be answered now (after undoing an aborted
// update it asks to go back before); false with *v unset when it waits; a drop else.
bool ready_for(Self* self, int64_t version, const ActorMessage& m, Verdict* v) {
  auto& s = self->state;
  model::EngramShare& share = *s.share;
  if (version == share.version()) return true;
  if (version == share.version() - 1 && share.can_undo() && m.epoch > s.update_epoch) {
    log::info("{}: back to version {}: step {} was aborted after this shard applied it",
              s.ctx.address, version, version);
    share.undo();
    forget_step(s);
    return true;
  }
  if (version > share.version()) {
    if (s.held.size() >= held_requests_max)
      *v = drop(Drop::backlog_full, "requests waiting for their version");
    else
      s.held.push_back(m);
    return false;
  }
  *v = drop(Drop::wrong_step, fmt::format("version {} at version {}", version, share.version()));
  return false;
}

Verdict on_lookup(Self* self, const train::EngramLookup& l, const ActorMessage& m) {
  auto& s = self->state;
  const auto& info = s.share->tables().tables();
  if (size_t(l.tables_size()) != m.payloads.size() || l.version() < 0)
    return drop(Drop::malformed, "a lookup without one payload of ids per table");
  std::vector<std::vector<int64_t>> ids(m.payloads.size());
  for (int i = 0; i < l.tables_size(); ++i) {
    const int64_t t = l.tables(i);
    if (t < 0 || size_t(t) >= info.size() || !s.share->tables().held(t))
      return drop(Drop::malformed, fmt::format("table {} is not held here", t));
    if (!read_payload(m.payloads[size_t(i)], &ids[size_t(i)]))
      return drop(Drop::malformed, "ids that are not int64");
    for (int64_t id : ids[size_t(i)])
      if (id < 0 || id >= info[size_t(t)].rows)
        return drop(Drop::malformed, fmt::format("row {} of table {}", id, info[size_t(t)].name));
  }
  Verdict v;
  if (!ready_for(self, l.version(), m, &v)) return v;
  std::vector<Payload> payloads;
  for (int i = 0; i < l.tables_size(); ++i) {
    const int64_t t = l.tables(i), D = info[size_t(t)].dim;
    std::vector<float> rows(ids[size_t(i)].size() * size_t(D));
    s.share->tables().lookup(t, ids[size_t(i)].data(), int64_t(ids[size_t(i)].size()), rows.data());
    payloads.push_back(owned_payload(std::move(rows)));
  }
  if (s.answered++ == 0)
    log::info("{}: serving Engram tables of epoch {} at version {}", s.ctx.address, s.epoch,
              l.version());
  train::EngramRows r;
  r.set_version(l.version()), r.set_request(l.request());
  reply(self, m.from, engram_rows_type, r, std::move(payloads));
  return {};
}

// The checkpoint of version d.version(): this holder's tables and moments copied out now (the
// next Apply changes them), written by a thread of its own while training goes on; the
// coordinator hears CheckpointWritten (engram) with the shards, as from a worker.
void write_checkpoint(Self* self, const train::EngramDump& d) {
  auto& s = self->state;
  if (s.writer.joinable()) s.writer.join();  // one in flight at most
  const auto t0 = std::chrono::steady_clock::now();
  auto snap = std::make_shared<std::vector<model::StateTensor>>();
  const auto& info = s.share->tables().tables();
  for (int64_t t : s.share->held_tables())
    for (model::EngramPart p : model::kEngramParts)
      snap->push_back({model::engram_state_name(info[size_t(t)].name, p),
                       {info[size_t(t)].rows, info[size_t(t)].dim},
                       s.share->tables().read_table(t, int(p))});
  train::CheckpointWritten w;
  w.set_step(d.version()), w.set_worker(s.ctx.index), w.set_engram(true);
  w.set_snapshot_ms(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  ActorMessage m = make_message(s.ctx.address, s.ctx.coordinator, checkpoint_written_type,
                                train::CheckpointWritten{});
  m.epoch = s.epoch;
  const std::string dir =
      storage::checkpoint_dir(s.ctx.job.run_dir, d.version()) + "/" + d.checkpoint_writer();
  s.writer = std::thread([snap, dir, writer = d.checkpoint_writer(), w, m = std::move(m),
                          router = s.ctx.router, faults = s.storage_faults]() mutable {
    write_and_report(*snap, dir, writer, std::move(w), std::move(m), router, faults);
  });
}

Verdict on_dump(Self* self, const train::EngramDump& d, const ActorMessage& m) {
  auto& s = self->state;
  Verdict v;
  if (d.version() < 0) return drop(Drop::malformed, "a negative version");
  if (!d.checkpoint_writer().empty() && (m.from != s.ctx.coordinator || s.ctx.job.run_dir.empty() ||
                                         d.checkpoint_writer().find('/') != std::string::npos))
    return drop(Drop::malformed, "a checkpoint write not from the coordinator, or not a name");
  if (!ready_for(self, d.version(), m, &v)) return v;
  if (!d.checkpoint_writer().empty()) return write_checkpoint(self, d), Verdict{};
  if (!d.moments()) log_tier(s);  // the job's end
  train::EngramTables out;
  out.set_version(d.version()), out.set_request(d.request());
  std::vector<Payload> payloads;
  for (int64_t t : s.share->held_tables()) {
    out.add_tables(t);
    for (int part = 0; part < (d.moments() ? 3 : 1); ++part)
      payloads.push_back(owned_payload(s.share->tables().read_table(t, part)));
  }
  reply(self, m.from, engram_tables_type, out, std::move(payloads));
  return {};
}

// Every piece of the step is in: reduce, and the coordinator gets the tables' Σ g².
void reduce_step(Self* self) {
  auto& s = self->state;
  std::vector<const model::EngramGrad<float>*> grads;
  for (const auto& g : s.grads) grads.push_back(g.get());
  std::vector<double> parts = s.share->reduce(s.nodes, grads);
  s.nodes.clear(), s.grads.clear();
  train::EngramNorm n;
  n.set_step(s.step), n.set_shard(s.ctx.index);
  if (const auto* tier = dynamic_cast<const storage::TieredShardTables*>(&s.share->tables())) {
    const auto& st = tier->stats();
    train::EngramTierCounts* c = n.mutable_tier();
    c->set_hits(st.hits), c->set_misses(st.misses);
    c->set_bytes_read(st.bytes_read), c->set_bytes_written(st.bytes_written);
    c->set_miss_ms(st.miss_ms);
  }
  reply(self, s.ctx.coordinator, engram_norm_type, n, {owned_payload(std::move(parts))});
}

Verdict on_slices(Self* self, const train::EngramSlices& es, const ActorMessage& m) {
  auto& s = self->state;
  Verdict v;
  if (es.step() < 0) return drop(Drop::malformed, "a negative step");
  if (!ready_for(self, es.step(), m, &v)) return v;
  if (es.step() != s.step) forget_step(s), s.step = es.step();
  if (s.share->reduced()) return drop(Drop::duplicate, "pieces of a step already reduced");
  const std::string why = check_new_pieces(s.nodes, es.nodes(), s.n_mb, s.n_mb);
  if (!why.empty())
    return drop(why == "a piece received twice" ? Drop::duplicate : Drop::malformed, why);
  const auto& info = s.share->tables().tables();
  std::vector<std::unique_ptr<model::EngramGrad<float>>> grads;
  int64_t covered = 0;
  for (int i = 0; i < es.nodes_size(); ++i) {
    grads.push_back(std::make_unique<model::EngramGrad<float>>());
    if (!read_engram_piece(es, m.payloads, i, info, grads.back().get()))
      return drop(Drop::malformed, "Engram slices whose rows do not fit the tables");
    for (size_t t = 0; t < info.size(); ++t)
      if (!s.share->tables().held(int64_t(t)) && !(*grads.back())[t].ids.empty())
        return drop(Drop::malformed, fmt::format("rows of table {}, not held here", t));
    covered += es.nodes(i).hi() - es.nodes(i).lo();
  }
  if (s.covered + covered > s.n_mb)
    return drop(Drop::malformed, "pieces that cover more than the batch");
  for (int i = 0; i < es.nodes_size(); ++i) {
    s.nodes.push_back({es.nodes(i).lo(), es.nodes(i).hi()});
    s.grads.push_back(std::move(grads[size_t(i)]));
  }
  s.covered += covered;
  if (s.covered < s.n_mb) return {};
  const std::string cover = model::check_cover(s.nodes, s.n_mb);
  if (!cover.empty()) {
    forget_step(s);
    return drop(Drop::malformed, "the step's pieces: " + cover);
  }
  reduce_step(self);
  return {};
}

Verdict on_apply(Self* self, const train::Apply& a, const ActorMessage& m) {
  auto& s = self->state;
  if (m.from != s.ctx.coordinator)
    return drop(Drop::unknown_sender, "Apply not from the coordinator");
  if (a.step() != s.share->version() || a.step() != s.step)
    return drop(Drop::wrong_step,
                fmt::format("Apply of step {} at version {}", a.step(), s.share->version()));
  if (!s.share->reduced()) return drop(Drop::wrong_phase, "Apply before the step was reduced");
  s.share->apply(a.step(), a.clip_scale());
  s.update_epoch = m.epoch;
  return {};
}

// The coordinator asks this holder to send a new holder of its tables the committed version.
Verdict on_copy(Self* self, const train::EngramCopy& c, const ActorMessage& m) {
  auto& s = self->state;
  if (m.from != s.ctx.coordinator)
    return drop(Drop::unknown_sender, "EngramCopy not from the coordinator");
  if (c.version() < 0 || c.to().empty())
    return drop(Drop::malformed, "a copy without version or address");
  Verdict v;
  if (!ready_for(self, c.version(), m, &v)) return v;
  train::EngramState st;
  st.set_version(c.version());
  std::vector<Payload> payloads;
  for (int64_t t : s.share->held_tables()) {
    st.add_tables(t);
    for (int part = 0; part < 3; ++part) {
      payloads.push_back(owned_payload(s.share->tables().read_table(t, part)));
      st.add_crc32c(storage::crc32c(payloads.back().bytes.data(), payloads.back().bytes.size()));
    }
  }
  log::info("{}: sending the tables of version {} to {}", s.ctx.address, c.version(), c.to());
  reply(self, c.to(), engram_state_type, st, std::move(payloads));
  return {};
}

// A new holder of these tables gets them from a survivor.
Verdict on_state(Self* self, const train::EngramState& st, const ActorMessage& m) {
  auto& s = self->state;
  const std::vector<int64_t> held = s.share->held_tables();
  if (st.version() < 0 || std::vector<int64_t>(st.tables().begin(), st.tables().end()) != held ||
      m.payloads.size() != 3 * held.size() || size_t(st.crc32c_size()) != m.payloads.size())
    return drop(Drop::malformed, "an EngramState that is not this shard's tables");
  for (size_t j = 0; j < m.payloads.size(); ++j)
    if (storage::crc32c(m.payloads[j].bytes.data(), m.payloads[j].bytes.size()) !=
        st.crc32c(int(j)))
      return drop(Drop::malformed, fmt::format("EngramState payload {} fails its CRC32C", j));
  std::vector<std::vector<float>> parts[3];
  for (size_t j = 0; j < m.payloads.size(); ++j) {
    parts[j % 3].emplace_back();
    if (!read_payload(m.payloads[j], &parts[j % 3].back()))
      return drop(Drop::malformed, "an EngramState payload that is not floats");
  }
  try {
    s.share->install(st.version(), parts[0], parts[1], parts[2]);
  } catch (const std::invalid_argument& e) {
    return drop(Drop::malformed, e.what());
  }
  forget_step(s);
  s.step = -1;
  log::info("{}: took the tables of version {} from {}", s.ctx.address, st.version(), m.from);
  return {};
}

// A rollback: this holder's tables from the checkpoint of step w.version(), whatever version
// it is at (a newer one, or none yet: a new holder). Its epoch is the rollback's, so what
// came before it (steps, a survivor's EngramState) is gone or stale. Answered either way; a
// repeat (the coordinator resends until it hears) loads again.
Verdict on_rollback(Self* self, const train::EngramSwap& w, const ActorMessage& m) {
  auto& s = self->state;
  if (m.payloads.size() != 1 || w.round() != train::EngramSwap::LOAD)
    return drop(Drop::malformed, "a rollback LOAD without its manifest");
  train::EngramSwapped out;
  out.set_round(w.round()), out.set_checkpoint(true);
  try {
    load_tables(s, runtime::payload_text(m.payloads[0]));
    if (s.share->version() != w.version())
      throw std::runtime_error(fmt::format("the manifest is of step {}, the rollback to {}",
                                           s.share->version(), w.version()));
    forget_step(s);
    s.step = -1;
    out.set_ok(true);
  } catch (const std::exception& e) {
    out.set_ok(false);
    out.set_error(e.what());
  }
  reply(self, m.from, engram_swapped_type, out, {});
  return {};
}

// A table set attached or restored between two steps (the coordinator's EngramSwap LOAD at
// the committed version): this holder's tables from the set file. A new holder still waiting
// for its tables holds it until they are in (ready_for), so a survivor's older state never
// lands over the set.
Verdict on_swap(Self* self, const train::EngramSwap& w, const ActorMessage& m) {
  auto& s = self->state;
  if (m.from != s.ctx.coordinator)
    return drop(Drop::unknown_sender, "EngramSwap not from the coordinator");
  if (w.checkpoint()) return on_rollback(self, w, m);
  if (w.round() != train::EngramSwap::LOAD || w.version() < 0)
    return drop(Drop::malformed, "an EngramSwap to a holder that is not a LOAD");
  Verdict v;
  if (!ready_for(self, w.version(), m, &v)) return v;
  train::EngramSwapped out;
  out.set_op(w.op());
  out.set_round(w.round());
  try {
    const storage::EngramSet set =
        storage::read_engram_set(w.path(), s.cfg.model, s.cfg.train.seed);
    std::vector<std::vector<float>> parts[3];
    for (int64_t t : s.share->held_tables())
      for (size_t p = 0; p < 3; ++p) parts[p].push_back(set.tensors[size_t(3 * t) + p].data);
    s.share->install(w.version(), parts[0], parts[1], parts[2]);
    forget_step(s);
    s.step = -1;
    out.set_ok(true);
    out.set_tables_hash(storage::engram_set_hash(set.tensors));
    log::info("{}: table set {} loaded at version {}", s.ctx.address, w.name(), w.version());
  } catch (const std::exception& e) {
    out.set_ok(false);
    out.set_error(e.what());
  }
  reply(self, m.from, engram_swapped_type, out, {});
  return {};
}

std::shared_ptr<Dispatcher> shard_table(Self* self) {
  auto d = std::make_shared<Dispatcher>(type_name);
  d->on<train::EngramLookup>(
      engram_lookup_type, [self](const auto& l, ActorMessage& m) { return on_lookup(self, l, m); });
  d->on<train::EngramSlices>(engram_slices_type, [self](const auto& es, ActorMessage& m) {
    return on_slices(self, es, m);
  });
  d->on<train::Apply>(apply_type,
                      [self](const auto& a, ActorMessage& m) { return on_apply(self, a, m); });
  d->on<train::EngramDump>(engram_dump_type,
                           [self](const auto& x, ActorMessage& m) { return on_dump(self, x, m); });
  d->on<train::EngramCopy>(engram_copy_type,
                           [self](const auto& c, ActorMessage& m) { return on_copy(self, c, m); });
  d->on<train::EngramState>(
      engram_state_type, [self](const auto& st, ActorMessage& m) { return on_state(self, st, m); });
  d->on<train::EngramSwap>(engram_swap_type,
                           [self](const auto& w, ActorMessage& m) { return on_swap(self, w, m); });
  return d;
}

void on_message(Self* self, const Dispatcher& table, ActorMessage& m) {
  auto& s = self->state;
  if (m.epoch < s.epoch) {
    s.drops.record(*drop(Drop::stale_epoch, ""), m);
    return;
  }
  if (m.epoch > s.epoch) {  // a new view: the step being gathered and what waited are gone
    if (s.answered > 0)
      log::info("{}: {} lookups answered in epoch {}", s.ctx.address, s.answered, s.epoch);
    s.answered = 0;
    s.epoch = m.epoch;
    forget_step(s);
    s.step = -1;
    for (const ActorMessage& h : s.held) s.drops.record(*drop(Drop::stale_epoch, "held"), h);
    s.held.clear();
  }
  const int64_t version = s.share->version();
  if (Verdict v = table.dispatch(m)) {
    s.drops.record(*v, m);
    return;
  }
  if (s.share->version() == version || s.held.empty()) return;
  std::vector<ActorMessage> held;  // a new version: what waited for it is answered
  held.swap(s.held);
  for (ActorMessage& h : held) on_message(self, table, h);
}

caf::behavior engram_shard(Self* self, runtime::RoleContext ctx) {
  auto& s = self->state;
  s.ctx = std::move(ctx);
  s.drops.set_owner(s.ctx.address);
  self->send(s.ctx.router, runtime::register_atom::value,
             fmt::format("engram_shard.{}", s.ctx.index), caf::actor(self));
  try {
    s.cfg = model::config_from_text(s.ctx.job.config_text, s.ctx.job.config_name,
                                    s.ctx.job.config_sets);
    s.shards = s.cfg.engram.shards;
    if (s.cfg.engram.placement != model::EngramAt::shards || s.ctx.index >= s.shards)
      throw std::invalid_argument(
          fmt::format("engram_shard.{} in a job with {} Engram shards", s.ctx.index,
                      s.cfg.engram.placement == model::EngramAt::shards ? s.shards : 0));
    s.n_mb = s.cfg.train.batch_size / s.cfg.train.micro_batch_rows;
    s.storage_faults = storage::StorageFaults::from_env();
    const auto tables = int64_t(model::engram_tables(s.cfg.model).size());
    const std::vector<bool> held = model::engram_tables_of_shard(tables, s.shards, s.ctx.index);
    s.share = std::make_unique<model::EngramShare>(s.cfg, held, cold_tier(s, held));
    if (!s.ctx.job.resume_manifest.empty()) load_tables(s, s.ctx.job.resume_manifest);
    s.epoch = s.ctx.epoch;
  } catch (const std::exception& e) {
    control::NodeError err;
    err.set_text(fmt::format("{}: {}", s.ctx.address, e.what()));
    reply(self, s.ctx.coordinator, runtime::node_error_type, err, {});
    self->quit();
    return {};
  }
  const std::shared_ptr<Dispatcher> table = shard_table(self);
  return {[=](ActorMessage& m) { on_message(self, *table, m); }};
}

}  // namespace

caf::actor spawn_engram_shard(caf::actor_system& system, const runtime::RoleContext& ctx,
                              bool detached) {
  return detached ? system.spawn<caf::detached>(engram_shard, ctx)
                  : system.spawn(engram_shard, ctx);
}

void register_engram_shard_role() {
  runtime::register_role("engram_shard",
                         [](caf::actor_system& sys, const runtime::RoleContext& ctx) {
                           return spawn_engram_shard(sys, ctx, true);
                         });
}

}  // namespace troupe::actors
