// The coordinator's side of the Engram tables on engram_shard actors (`[engram] placement =
// "shards"`, issue 16). engram_shard.k is placed at the job's first view on the node of
// worker k mod W and stays there (its tables live nowhere else): every StepBegin names the
// shards for the workers; a train step's Apply waits for every shard's EngramNorm (each
// table's Σ g², taken from the shard holding it and added in table order: the one
// process's engram_grad_sumsq) and goes to the shards too.
//
// Not here yet: copies of a shard's tables. A view without the node of a shard (a lost
// node, a scale down or drain of it) ends the job with an error naming the shard, and a
// restarted coordinator refuses a job with shards (coordinator_restart.cc).
#include <fmt/format.h>

#include "actors/coordinator_state.h"
#include "train/engram_share.h"

namespace troupe::actors::coordinator_impl {

bool engram_sharded(Self* self) {
  const model::JobConfig& c = self->state.opt.config;
  return c.engram.placement == model::EngramAt::shards && !c.model.engram_layers.empty();
}

bool place_engram_shards(Self* self, control::View* v) {
  auto& s = self->state;
  if (!engram_sharded(self)) return true;
  EngramShards& e = s.engram;
  const auto& nodes = s.core.nodes;
  if (e.homes.empty()) {
    for (int64_t k = 0; k < s.opt.config.engram.shards; ++k) {
      const std::string& home = nodes.at(size_t(k) % nodes.size()).id;
      e.homes.push_back(home);
      e.addresses.push_back(fmt::format("{}/engram_shard.{}", home, k));
    }
    std::string where;
    for (const std::string& h : e.homes) where += (where.empty() ? "" : ", ") + h;
    event(self, "engram_shards",
          fmt::format("{} Engram shards on nodes {}", e.homes.size(), where));
  }
  for (size_t k = 0; k < e.homes.size(); ++k) {
    bool present = false;
    for (const NodeInfo& n : nodes) present = present || n.id == e.homes[k];
    if (!present) {
      fail(self, fmt::format("node {} left the view with engram_shard.{} and its Engram tables, "
                             "which have no copy elsewhere yet (issue 16); run with "
                             "engram.placement = \"replicated\" to survive losing any node",
                             e.homes[k], k));
      return false;
    }
    auto* p = v->add_placement();
    p->set_role("engram_shard"), p->set_index(int64_t(k)), p->set_node_id(e.homes[k]);
  }
  return true;
}

void begin_engram_step(Self* self, train::StepBegin* b) {
  auto& s = self->state;
  if (!engram_sharded(self)) return;
  EngramShards& e = s.engram;
  for (const std::string& a : e.addresses) b->add_engram_shards(a);
  if (b->kind() != train::TRAIN) return;
  e.norms.open(s.core.epoch, b->step(), int64_t(e.addresses.size()));
  e.parts.assign(e.addresses.size(), {});
}

bool engram_norms_ready(Self* self, double* sumsq) {
  *sumsq = 0;
  if (!engram_sharded(self)) return true;
  const EngramShards& e = self->state.engram;
  if (!e.norms.complete()) return false;
  const auto K = int64_t(e.parts.size());
  const size_t tables = model::engram_tables(self->state.opt.config.model).size();
  for (size_t t = 0; t < tables; ++t)  // table order, each from its shard
    *sumsq += e.parts[size_t(model::engram_shard_of_table(int64_t(t), K))].at(t);
  return true;
}

void apply_to_engram_shards(Self* self, const train::Apply& a,
                            const std::vector<runtime::Payload>& payloads) {
  if (!engram_sharded(self)) return;
  for (const std::string& shard : self->state.engram.addresses)
    send_to(self, shard, apply_type, a, payloads);
}

Verdict on_engram_norm(Self* self, const train::EngramNorm& n, const ActorMessage& m) {
  auto& s = self->state;
  EngramShards& e = s.engram;
  if (!engram_sharded(self) || n.shard() < 0 || n.shard() >= int64_t(e.addresses.size()) ||
      e.addresses[size_t(n.shard())] != m.from)
    return drop(Drop::unknown_sender, fmt::format("Engram shard {} is not {}", n.shard(), m.from));
  if (Verdict v = drop_receipt(e.norms.check(s.core.epoch, n.step(), n.shard()), "EngramNorm"))
    return v;
  std::vector<double> parts;
  const size_t tables = model::engram_tables(s.opt.config.model).size();
  if (m.payloads.size() != 1 || !read_payload(m.payloads[0], &parts) || parts.size() != tables)
    return drop(Drop::malformed, "an EngramNorm without one double per table");
  e.norms.add(s.core.epoch, n.step(), n.shard());
  e.parts[size_t(n.shard())] = std::move(parts);
  return {};
}

}  // namespace troupe::actors::coordinator_impl
