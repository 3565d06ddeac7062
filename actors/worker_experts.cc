// A worker's routed experts on expert_shard actors (`[parallel] experts = "shards"`, issue
// 15). The coordinator places expert_shard.i beside worker.i. The placement of the expert
// slots is the one the step's StepBegin carries (the coordinator's last rebalance, [eplb]),
// or without one a pure function of the experts and the view's worker count
// (shard_placement), so every worker and every recovery computes a step on the same one.
// Before each step (and each validation) worker i sends its shard the weights of that shard's
// slots, cut from its own copy of the weights (every worker holds the whole version the step
// computes with); the shard holds the other workers' requests until they are in. The gradients come
// back into the worker's pieces where the in-worker backward puts them, so the reduction, the
// update and the bits are the in-worker ones (ExpertClientTest.*).
//
// What is not here yet: the shards hold weights only, no optimizer state (the owners keep
// it), so the weights go to the shards at every step rather than only when a rebalance
// moves a slot (the placing itself is the eplb_rebalancer actor's: actors/eplb_rebalancer.h).
#include <fmt/format.h>

#include "actors/expert_client.h"
#include "actors/worker.h"
#include "runtime/log.h"
#include "train/eplb.h"
#include "train/expert_slots.h"

namespace troupe::actors::worker_impl {

namespace {

// The expert_shard beside a worker: "n2/worker.1" → "n2/expert_shard.1".
std::string shard_beside(const std::string& worker) {
  const size_t slash = worker.find('/');
  const size_t dot = worker.rfind('.');
  if (slash == std::string::npos || dot == std::string::npos || dot < slash)
    throw std::invalid_argument("not a worker's address: " + worker);
  return worker.substr(0, slash + 1) + "expert_shard" + worker.substr(dot);
}

ExpertRoute route_of(model::EplbPlacement placement, const std::vector<std::string>& workers) {
  ExpertRoute route;
  route.placement = std::move(placement);
  const auto R = int64_t(route.placement.phy2log.at(0).size());
  const int64_t per = R / int64_t(workers.size());  // shard i holds slots [i·per, (i+1)·per)
  for (int64_t slot = 0; slot < R; ++slot)
    route.shard_of_slot.push_back(shard_beside(workers[size_t(slot / per)]));
  return route;
}

}  // namespace

ExpertRoute shard_placement(const model::ModelConfig& cfg,
                            const std::vector<std::string>& workers) {
  return route_of(model::rebalance_experts(model::shard_problem(cfg, int64_t(workers.size()))),
                  workers);
}

Verdict take_placement(WorkerState& s, const train::StepBegin& b) {
  if (!s.experts) {
    if (b.phy2log_size() > 0) return drop(Drop::malformed, "a placement, but no expert shards");
    return {};
  }
  const model::ModelConfig& m = s.trainer->cfg.model;
  if (b.phy2log_size() == 0) {  // computed once per view, not per step (route_experts)
    s.experts->set_route(s.uniform_route);
    return {};
  }
  model::EplbPlacement p;
  const std::vector<int64_t> flat(b.phy2log().begin(), b.phy2log().end());
  std::string why =
      model::placement_from_phy2log(flat, model::moe_layer_count(m), m.n_routed_experts, &p);
  const auto R = size_t(model::shard_slot_count(m.n_routed_experts, s.workers));
  if (why.empty() && p.phy2log[0].size() != R)
    why = fmt::format("{} slots per layer for {} shards", p.phy2log[0].size(), s.workers);
  if (!why.empty()) return drop(Drop::malformed, "an expert placement: " + why);
  s.experts->set_route(route_of(std::move(p), s.peers));
  return {};
}

void start_experts(Self* self, const model::JobConfig& cfg) {
  auto& s = self->state;
  if (cfg.parallel.experts != model::ExpertsAt::shards) return;
  s.uniform_route = shard_placement(cfg.model, s.peers);
  s.experts = std::make_unique<ExpertClient>(
      self->system(), s.ctx.router, fmt::format("{}/expert_client.{}", s.ctx.node_id, s.ctx.index),
      cfg.model, s.trainer->table, s.uniform_route,
      std::chrono::milliseconds(cfg.fault_tolerance.step_timeout_ms));
  s.trainer->set_routed_experts(s.experts.get());
}

void route_experts(WorkerState& s) {
  if (!s.experts) return;
  s.uniform_route = shard_placement(s.trainer->cfg.model, s.peers);
  s.experts->set_route(s.uniform_route);
}

void prepare_experts(Self* self, int64_t version, bool evaluate) {
  auto& s = self->state;
  if (!s.experts) return;
  s.experts->set_step(version, s.epoch, evaluate);
  const model::ModelConfig& m = s.trainer->cfg.model;
  const ExpertRoute& route = s.experts->route();
  const auto per = int64_t(route.shard_of_slot.size()) / s.workers;
  const int64_t part = m.moe_inter * m.d_model;
  const std::vector<model::MoeLayout>& layouts = s.experts->layouts();
  for (size_t layer = 0; layer < layouts.size(); ++layer) {
    train::ExpertWeights w;
    w.set_version(version), w.set_moe_layer(int64_t(layer));
    std::vector<Payload> payloads;
    for (int64_t slot = s.me * per; slot < (s.me + 1) * per; ++slot) {
      const int64_t e = route.placement.phy2log.at(layer).at(size_t(slot));
      std::vector<float> compact(size_t(3 * part));
      model::copy_expert_weights(layouts[layer].experts.at(size_t(e)), part,
                                 s.trainer->params.data(), compact.data());
      w.add_slots(slot);
      payloads.push_back(owned_payload(std::move(compact)));
    }
    reply(self, route.shard_of_slot.at(size_t(s.me * per)), expert_weights_type, w,
          std::move(payloads));
  }
}

bool computed(Self* self, const std::function<void()>& compute) {
  try {
    compute();
    return true;
  } catch (const StepAborted& e) {
    log::info("{}: step {} given up, a view change made it moot: {}", self->state.ctx.address,
              self->state.step, e.what());
    return false;
  }
}

}  // namespace troupe::actors::worker_impl
