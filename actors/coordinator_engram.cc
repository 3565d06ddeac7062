// The coordinator's side of the Engram tables on engram_shard actors (`[engram] placement =
// "shards"`, issue 16). Shard k's tables are held by 1 + fault_tolerance.buddy_copies
// engram_shard.k actors on distinct nodes (at most one per node of the view), first placed
// on the nodes of workers k, k + 1, … mod W; every holder gets every gradient of its tables
// and applies every update, and the first answers the lookups. When a holder leaves the
// view (lost, drained, scaled away) the shard gets a new holder on another node, and a
// surviving holder is told to send it the tables of the committed version (EngramCopy →
// EngramState, CRC32C-checked); until they are in, it holds what it is sent.
//
// Every StepBegin names the holders for the workers; a train step's Apply waits for every
// holder's EngramNorm (each table's Σ g², taken from the first holder of its shard and
// added in table order: the one process's engram_grad_sumsq; the copies must agree bit for
// bit) and goes to the holders too. A shard that loses every holder is brought back by a
// rollback to the newest checkpoint, as an owner lost with all its buddies is
// (coordinator_engram_rollback.cc). Every placement is journaled ("engram_holders"): a
// restarted coordinator takes the holders from there.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "actors/coordinator_state.h"
#include "train/engram_share.h"

namespace troupe::actors::coordinator_impl {

namespace {

std::string holder_address(const std::string& node, size_t k) {
  return fmt::format("{}/engram_shard.{}", node, k);
}

}  // namespace

bool engram_home_in_view(Self* self, const std::string& node) {
  for (const auto* list : {&self->state.core.nodes, &self->state.core.memory})
    for (const NodeInfo& n : *list)
      if (n.id == node) return true;
  return false;
}

namespace {

// Where holders live: the memory nodes while there are any, else the workers' nodes.
const std::vector<NodeInfo>& homes(Self* self) {
  const auto& c = self->state.core;
  return c.memory.empty() ? c.nodes : c.memory;
}

// The first placement: shard k on the nodes of workers k, k + 1, ….
void first_holders(Self* self, size_t copies) {
  auto& s = self->state;
  const auto& nodes = homes(self);
  for (int64_t k = 0; k < s.opt.config.engram.shards; ++k) {
    s.engram.holders.emplace_back();
    for (size_t c = 0; c < copies; ++c)
      s.engram.holders.back().push_back(nodes[(size_t(k) + c) % nodes.size()].id);
  }
  std::string where;
  for (size_t k = 0; k < s.engram.holders.size(); ++k) {
    where += fmt::format("{}shard {} on", k ? "; " : "", k);
    for (const std::string& n : s.engram.holders[k]) where += " " + n;
  }
  event(
      self, "engram_shards",
      fmt::format("{} Engram shards, {} holders each: {}", s.engram.holders.size(), copies, where));
}

// Holders that left the view are dropped and replaced; false: a shard has none left. In a
// rollback (every holder loads the checkpoint) and before the first commit (a new holder's
// fresh tables are version 0's), a new holder waits for no copy.
bool replace_holders(Self* self, size_t copies) {
  auto& s = self->state;
  EngramShards& e = s.engram;
  const auto& nodes = homes(self);
  const bool no_copy = s.core.rollback_to >= 0 || committed_version(self) == 0;
  if (no_copy) e.awaiting.clear();
  for (auto it = e.awaiting.begin(); it != e.awaiting.end();)
    it = engram_home_in_view(self, it->second) ? std::next(it) : e.awaiting.erase(it);
  for (size_t k = 0; k < e.holders.size(); ++k) {
    std::vector<std::string>& h = e.holders[k];
    std::vector<std::string> gone;
    for (const std::string& n : h)
      if (!engram_home_in_view(self, n)) gone.push_back(n);
    std::erase_if(h, [&](const std::string& n) { return !engram_home_in_view(self, n); });
    bool source = false;
    for (const std::string& n : h) source = source || !e.awaiting.count({int64_t(k), n});
    if (!source && !no_copy) {
      fail(self, fmt::format("engram_shard.{} lost every holder of its Engram tables (the last "
                             "on {}); more fault_tolerance.buddy_copies keep more copies",
                             k, gone.empty() ? std::string("?") : gone.back()));
      return false;
    }
    for (size_t i = 0; h.size() < copies && i < nodes.size(); ++i) {
      const std::string& n = nodes[(k + h.size() + i) % nodes.size()].id;
      if (std::find(h.begin(), h.end(), n) != h.end()) continue;
      h.push_back(n);
      const std::string from = no_copy ? std::string("the checkpoint or the seed") : h.front();
      if (!no_copy) e.awaiting.insert({int64_t(k), n});
      event(self, "engram_copy",
            fmt::format("engram_shard.{}: a new holder on {} (for {}), its tables from {}", k, n,
                        gone.empty() ? std::string("a holder short") : gone.front(), from),
            {{"shard", k}, {"node", n}, {"from", from}});
    }
  }
  return true;
}

// The holders, journaled before any of them is told: a restarted coordinator finds them
// there (journal_log.cc restart_state), with those still waiting for their tables.
void journal_holders(Self* self) {
  auto& s = self->state;
  nlohmann::json awaiting = nlohmann::json::array();
  for (const auto& [k, node] : s.engram.awaiting) awaiting.push_back({k, node});
  const runtime::Status st = s.commit_log->record({{"kind", "engram_holders"},
                                                   {"epoch", s.core.epoch},
                                                   {"holders", s.engram.holders},
                                                   {"awaiting", awaiting}});
  if (!st.ok()) throw std::runtime_error("cannot record the Engram holders: " + st.to_string());
}

// A holder's running counts into the step's report: what grew since its last ones (all of
// them when they went back: a new holder started over).
void count_tier(CoordinatorState& s, const std::string& holder, const train::EngramTierCounts& c) {
  train::EngramTierCounts& last = s.engram.tier_seen[holder];
  if (c.hits() < last.hits() || c.misses() < last.misses()) last = train::EngramTierCounts();
  StepReport::EngramTier& r = s.drv.report.engram_tier;
  r.hits += c.hits() - last.hits(), r.misses += c.misses() - last.misses();
  r.bytes_read += std::max<int64_t>(0, c.bytes_read() - last.bytes_read());
  r.bytes_written += std::max<int64_t>(0, c.bytes_written() - last.bytes_written());
  r.miss_ms += std::max(0.0, c.miss_ms() - last.miss_ms());
  last = c;
}

}  // namespace

bool engram_sharded(Self* self) {
  const model::JobConfig& c = self->state.opt.config;
  return c.engram.placement == model::EngramAt::shards && !c.model.engram_layers.empty();
}

bool place_engram_shards(Self* self, control::View* v) {
  auto& s = self->state;
  if (!engram_sharded(self)) return true;
  EngramShards& e = s.engram;
  const size_t copies =
      std::min(size_t(1 + s.opt.config.fault_tolerance.buddy_copies), homes(self).size());
  if (e.holders.empty())
    first_holders(self, copies);
  else if (!replace_holders(self, copies))
    return false;
  journal_holders(self);
  e.flat.clear(), e.flat_shard.clear();
  for (size_t k = 0; k < e.holders.size(); ++k)
    for (const std::string& n : e.holders[k]) {
      e.flat.push_back(holder_address(n, k));
      e.flat_shard.push_back(int64_t(k));
      auto* p = v->add_placement();
      p->set_role("engram_shard"), p->set_index(int64_t(k)), p->set_node_id(n);
    }
  for (const auto& [k, node] : e.awaiting) {  // (again, after a further loss) from a survivor
    const auto& h = e.holders[size_t(k)];
    const auto src = std::find_if(h.begin(), h.end(), [&, k = k](const std::string& n) {
      return !e.awaiting.count({k, n});
    });
    train::EngramCopy c;
    c.set_version(committed_version(self));
    c.set_to(holder_address(node, size_t(k)));
    ActorMessage m =
        make_message(s.self_address, holder_address(*src, size_t(k)), engram_copy_type, c);
    m.epoch = s.core.epoch;
    self->send(s.router, std::move(m));
  }
  return true;
}

void name_engram_shards(Self* self, google::protobuf::RepeatedPtrField<std::string>* into) {
  const EngramShards& e = self->state.engram;
  for (size_t k = 0; engram_sharded(self) && k < e.holders.size(); ++k)
    *into->Add() = holder_address(e.holders[k].front(), k);
}

void begin_engram_step(Self* self, train::StepBegin* b) {
  auto& s = self->state;
  if (!engram_sharded(self)) return;
  EngramShards& e = s.engram;
  name_engram_shards(self, b->mutable_engram_shards());
  for (size_t k = 0; k < e.holders.size(); ++k) {
    for (size_t c = 1; c < e.holders[k].size(); ++c) {
      b->add_engram_copies(holder_address(e.holders[k][c], k));
      b->add_engram_copy_shards(int64_t(k));
    }
  }
  if (b->kind() != train::TRAIN) return;
  e.norms.open(s.core.epoch, b->step(), int64_t(e.flat.size()));
  e.parts.assign(e.flat.size(), {});
  s.drv.report.engram_tier = {};
}

bool engram_norms_ready(Self* self, double* sumsq) {
  *sumsq = 0;
  if (!engram_sharded(self)) return true;
  const EngramShards& e = self->state.engram;
  if (!e.norms.complete()) return false;
  const size_t tables = model::engram_tables(self->state.opt.config.model).size();
  const auto K = int64_t(e.holders.size());
  std::vector<size_t> first(size_t(K), e.flat.size());  // each shard's first holder
  for (size_t i = e.flat.size(); i-- > 0;) first[size_t(e.flat_shard[i])] = i;
  for (size_t i = 0; i < e.flat.size(); ++i)  // the copies reduced the same bits
    if (std::memcmp(e.parts[i].data(), e.parts[first[size_t(e.flat_shard[i])]].data(),
                    tables * sizeof(double)) != 0) {
      fail(self, fmt::format("the holders of engram_shard.{} reduced different gradients ({} "
                             "and {}): their tables diverged",
                             e.flat_shard[i], e.flat[first[size_t(e.flat_shard[i])]], e.flat[i]));
      return false;
    }
  for (size_t t = 0; t < tables; ++t)  // table order, each from its shard
    *sumsq += e.parts[first[size_t(model::engram_shard_of_table(int64_t(t), K))]].at(t);
  return true;
}

void apply_to_engram_shards(Self* self, const train::Apply& a,
                            const std::vector<runtime::Payload>& payloads) {
  if (!engram_sharded(self)) return;
  for (const std::string& holder : self->state.engram.flat)
    send_to(self, holder, apply_type, a, payloads);
}

int64_t ask_engram_checkpoint(Self* self, int64_t version) {
  auto& s = self->state;
  if (!engram_sharded(self)) return 0;
  for (size_t k = 0; k < s.engram.holders.size(); ++k) {
    train::EngramDump d;
    d.set_version(version), d.set_moments(true);
    d.set_checkpoint_writer(fmt::format("e{}-engram{}", s.core.epoch, k));
    send_to(self, holder_address(s.engram.holders[k].front(), k), engram_dump_type, d);
  }
  return int64_t(s.engram.holders.size());
}

Verdict check_engram_writer(Self* self, int64_t shard, const ActorMessage& m) {
  const auto& h = self->state.engram.holders;
  if (!engram_sharded(self) || shard < 0 || size_t(shard) >= h.size() ||
      holder_address(h[size_t(shard)].front(), size_t(shard)) != m.from)
    return drop(Drop::unknown_sender,
                fmt::format("{} is not the lookup holder of Engram shard {}", m.from, shard));
  return {};
}

Verdict on_engram_norm(Self* self, const train::EngramNorm& n, const ActorMessage& m) {
  auto& s = self->state;
  EngramShards& e = s.engram;
  const auto at = std::find(e.flat.begin(), e.flat.end(), m.from);
  if (!engram_sharded(self) || at == e.flat.end() ||
      e.flat_shard[size_t(at - e.flat.begin())] != n.shard())
    return drop(Drop::unknown_sender,
                fmt::format("{} does not hold Engram shard {}", m.from, n.shard()));
  const auto i = int64_t(at - e.flat.begin());
  if (Verdict v = drop_receipt(e.norms.check(s.core.epoch, n.step(), i), "EngramNorm")) return v;
  std::vector<double> parts;
  const size_t tables = model::engram_tables(s.opt.config.model).size();
  if (m.payloads.size() != 1 || !read_payload(m.payloads[0], &parts) || parts.size() != tables)
    return drop(Drop::malformed, "an EngramNorm without one double per table");
  e.norms.add(s.core.epoch, n.step(), i);
  e.parts[size_t(i)] = std::move(parts);
  count_tier(s, m.from, n.tier());
  const std::string node(m.from.substr(0, m.from.find('/')));
  e.awaiting.erase({n.shard(), node});  // it reduced a step: it has the tables
  return {};
}

}  // namespace troupe::actors::coordinator_impl
