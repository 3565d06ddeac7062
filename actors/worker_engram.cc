// A worker's Engram tables on engram_shard actors (`[engram] placement = "shards"`, issue
// 16). The worker holds no table: its trainer reads them through an EngramClient, which
// prefetches the rows of each range before it computes (Trainer::set_before_compute); the
// pieces' sparse gradients go to every holder of their tables (each gets every piece, with
// the rows of its shard's tables alone) instead of to every other worker; the shards
// reduce, report Σ g² to the coordinator and apply the step's Apply. Worker 0 fetches the
// final tables from the shards for its Final. Each is a no-op without shards.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "actors/engram_client.h"
#include "actors/worker.h"
#include "runtime/log.h"
#include "storage/engram_set.h"
#include "train/engram_share.h"

namespace troupe::actors::worker_impl {

void start_engram(Self* self, const model::JobConfig& cfg) {
  auto& s = self->state;
  if (cfg.engram.placement != model::EngramAt::shards || cfg.model.engram_layers.empty()) return;
  s.engram = std::make_unique<EngramClient>(
      self->system(), s.ctx.router, fmt::format("{}/engram_client.{}", s.ctx.node_id, s.ctx.index),
      cfg.model, cfg.train.seed, cfg.engram.shards,
      std::chrono::milliseconds(cfg.fault_tolerance.step_timeout_ms));
}

void hook_engram(WorkerState& s) {
  if (!s.engram) return;
  WorkerState* at = &s;
  s.trainer->set_before_compute([at](const model::Batch& rows) {
    at->engram->prefetch(rows, at->engram_version, at->epoch);
  });
}

Verdict take_engram_shards(WorkerState& s, const train::StepBegin& b, int64_t version) {
  if (!s.engram) {
    if (b.engram_shards_size() > 0) return drop(Drop::malformed, "Engram shards, but none here");
    return {};
  }
  const auto shards = int64_t(s.engram->shard_count());
  if (b.engram_shards_size() != shards)
    return drop(Drop::malformed, fmt::format("{} Engram shards for engram.shards = {}",
                                             b.engram_shards_size(), shards));
  if (b.engram_copies_size() != b.engram_copy_shards_size())
    return drop(Drop::malformed, "Engram copies without their shards");
  std::vector<std::pair<int64_t, std::string>> copies;
  for (int i = 0; i < b.engram_copies_size(); ++i) {
    if (b.engram_copy_shards(i) < 0 || b.engram_copy_shards(i) >= shards)
      return drop(Drop::malformed,
                  fmt::format("a copy of Engram shard {}", b.engram_copy_shards(i)));
    copies.emplace_back(b.engram_copy_shards(i), b.engram_copies(i));
  }
  s.engram->set_shards({b.engram_shards().begin(), b.engram_shards().end()});
  s.engram->set_copies(copies);
  s.engram_version = version;
  return {};
}

void send_engram_to_shards(Self* self, int64_t step, const std::vector<model::Piece<float>>& pieces,
                           size_t first) {
  auto& s = self->state;
  const auto& info = s.engram->tables();
  const int64_t K = int64_t(s.engram->shards().size());
  for (int64_t k = 0; k < K; ++k) {
    train::EngramSlices es;
    es.set_step(step);
    std::vector<Payload> payloads;
    for (size_t p = first; p < pieces.size(); ++p) {
      model::EngramGrad<float> mine(info.size());
      const model::EngramGrad<float>& g = s.trainer->piece_engram_grad(p);
      for (size_t t = 0; t < info.size(); ++t)
        if (model::engram_shard_of_table(int64_t(t), K) == k) mine[t] = g[t];
      add_engram_piece(mine, pieces[p].node, &es, &payloads);
    }
    for (const std::string& holder : s.engram->holders(k))
      reply(self, holder, engram_slices_type, es, payloads);
  }
}

namespace {

// A table set saved by worker 0: every Engram table with its moments from the shards,
// appended to *out under the names a worker holding the tables writes
// ("engram/<table>/values|m|v"). "" when done (or not worker 0 / no shards), else why not.
std::string snapshot_engram(WorkerState& s, int64_t version, std::vector<model::StateTensor>* out) {
  if (!s.engram || s.me != 0) return "";
  try {
    std::vector<std::vector<float>> got = s.engram->fetch_tables(version, s.epoch, true);
    const auto& info = s.engram->tables();
    for (size_t t = 0; t < info.size(); ++t)
      for (model::EngramPart p : model::kEngramParts)
        out->push_back({model::engram_state_name(info[t].name, p),
                        {info[t].rows, info[t].dim},
                        std::move(got[3 * t + size_t(p)])});
    return "";
  } catch (const std::exception& e) {  // a view change, a shard that did not answer
    return fmt::format("the Engram tables from the shards: {}", e.what());
  }
}

}  // namespace

bool final_engram_tables(Self* self, const train::Finish& f, std::vector<Payload>* payloads) {
  auto& s = self->state;
  if (!s.engram) return true;
  if (f.engram_shards_size() > 0)
    s.engram->set_shards({f.engram_shards().begin(), f.engram_shards().end()});
  log::info("{}: Engram rows waited for {:.1f} ms in all over {} prefetches ({:.2f} ms each)",
            s.ctx.address, s.engram->waited_ms(), s.engram->prefetches(),
            s.engram->waited_ms() / double(std::max<int64_t>(1, s.engram->prefetches())));
  if (s.me != 0) return true;
  try {
    for (auto& t : s.engram->fetch_tables(s.version, s.epoch))
      payloads->push_back(owned_payload(std::move(t)));
    return true;
  } catch (const StepAborted& e) {
    log::info("{}: the final Engram tables wait for the next view: {}", s.ctx.address, e.what());
    return false;
  }
}

namespace {

// SAVE: the job's tables and moments at the committed version as a set file; the hash.
uint64_t save_engram_set(WorkerState& s, const train::EngramSwap& w) {
  storage::EngramSet set{w.name(), w.version(), {}};
  if (s.engram) {
    s.engram->set_shards({w.engram_shards().begin(), w.engram_shards().end()});
    const std::string error = snapshot_engram(s, w.version(), &set.tensors);
    if (!error.empty()) throw std::runtime_error(error);
  } else {
    set.tensors = s.trainer->snapshot_state(model::FlatRange{0, 0}, true);
  }
  std::filesystem::create_directories(std::filesystem::path(w.path()).parent_path());
  storage::write_engram_set(w.path(), set, s.trainer->cfg.model, s.trainer->cfg.train.seed);
  return storage::engram_set_hash(set.tensors);
}

// LOAD into this worker's own tables (with shards the holders load; the worker holds none).
uint64_t load_engram_set(WorkerState& s, const train::EngramSwap& w) {
  const storage::EngramSet set =
      storage::read_engram_set(w.path(), s.trainer->cfg.model, s.trainer->cfg.train.seed);
  if (s.engram) return storage::engram_set_hash(set.tensors);
  std::map<std::string, const std::vector<float>*> by_name;
  for (const model::StateTensor& t : set.tensors) by_name[t.name] = &t.data;
  s.trainer->load_engram_state([&](const std::string& name, std::vector<float>* out) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw std::runtime_error("the table set has no " + name);
    *out = *it->second;
  });
  return storage::engram_set_hash(set.tensors);
}

}  // namespace

Verdict on_engram_swap(Self* self, const train::EngramSwap& w, const ActorMessage& m) {
  auto& s = self->state;
  if (m.from != s.ctx.coordinator)
    return drop(Drop::unknown_sender, "EngramSwap not from the coordinator");
  if (w.version() != s.version || w.version() != s.committed || s.recovery.active)
    return drop(Drop::wrong_step, fmt::format("EngramSwap at step {}, at version {} ({} committed)",
                                              w.version(), s.version, s.committed));
  if (w.round() == train::EngramSwap::SAVE && s.me != 0)
    return drop(Drop::malformed, "an EngramSwap SAVE to a worker other than worker 0");
  train::EngramSwapped out;
  out.set_op(w.op());
  out.set_round(w.round());
  try {
    out.set_tables_hash(w.round() == train::EngramSwap::SAVE ? save_engram_set(s, w)
                                                             : load_engram_set(s, w));
    out.set_ok(true);
  } catch (const std::exception& e) {
    out.set_ok(false);
    out.set_error(e.what());
  }
  reply(self, s.ctx.coordinator, engram_swapped_type, out);
  return {};
}

}  // namespace troupe::actors::worker_impl
