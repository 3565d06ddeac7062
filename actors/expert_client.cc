#include "actors/expert_client.h"

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <stdexcept>

#include "actors/protocol.h"
#include "runtime/actor_message.h"
#include "train/expert_slots.h"

namespace troupe::actors {

using runtime::ActorMessage;

struct ExpertClient::Call {
  std::string shard;
  uint64_t request = 0;
  std::vector<int64_t> experts, slots;  // in the request's order, each with rows
  int64_t rows = 0;
  ActorMessage answer;
};

namespace {

template <class Answer>
bool request_of(const ActorMessage& m, uint64_t* request) {
  Answer a;
  if (!a.ParseFromString(m.header)) return false;
  *request = a.request();
  return true;
}

bool answer_of(const ActorMessage& m, uint64_t* request) {
  return (m.type == expert_outputs_type && request_of<train::ExpertOutputs>(m, request)) ||
         (m.type == expert_grads_type && request_of<train::ExpertGrads>(m, request));
}

template <class Request>
Request request_body(const ExpertClient::Call& c, int64_t step, int64_t mb, int64_t moe_layer,
                     std::span<const int64_t> begin) {
  Request r;
  r.set_step(step), r.set_mb(mb), r.set_moe_layer(moe_layer), r.set_request(c.request);
  for (size_t i = 0; i < c.experts.size(); ++i) {
    train::ExpertRows* e = r.add_slots();
    const auto x = size_t(c.experts[i]);
    e->set_slot(c.slots[i]), e->set_rows(begin[x + 1] - begin[x]);
  }
  return r;
}

// Payload p as floats, exactly `count` of them, or an error naming the shard.
std::vector<float> floats(const runtime::Payload& p, int64_t count, const std::string& shard) {
  std::vector<float> v;
  if (!read_payload(p, &v) || int64_t(v.size()) != count)
    throw std::runtime_error(
        fmt::format("expert shard {} answered {} bytes where {} floats were due", shard,
                    p.bytes.size(), count));
  return v;
}

}  // namespace

ExpertClient::ExpertClient(caf::actor_system& system, caf::actor router, std::string address,
                           const model::ModelConfig& cfg, const model::ParamTable& table,
                           ExpertRoute route, std::chrono::milliseconds answer_timeout_ms)
    : rpc_(system, std::move(router), std::move(address), answer_of),
      cfg_(cfg),
      layouts_(model::moe_layouts(cfg, table)),
      route_(std::move(route)),
      timeout_(answer_timeout_ms) {}

std::vector<std::vector<std::string>> first_replica_owners(const ExpertRoute& route) {
  std::vector<std::vector<std::string>> owners;
  for (const auto& layer : route.placement.log2phy) {
    owners.emplace_back();
    for (const auto& replicas : layer)
      owners.back().push_back(route.shard_of_slot.at(size_t(replicas.at(0))));
  }
  return owners;
}

void ExpertClient::set_step(int64_t step, uint64_t epoch, bool evaluate) {
  step_ = step, epoch_ = epoch, evaluate_ = evaluate;
  const std::lock_guard<std::mutex> lock(notes_mu_);
  routed_.clear();
}

void ExpertClient::note_rows(int64_t mb, int64_t moe_layer, std::span<const int64_t> begin) {
  std::map<std::string, train::ExpertRowsNote> notes;  // by owner
  {
    const std::lock_guard<std::mutex> lock(notes_mu_);
    auto& layers = routed_[mb];
    layers.resize(route_.owner_of.size());
    auto& mine = layers.at(size_t(moe_layer));
    mine.clear();
    for (int64_t e = 0; e + 1 < int64_t(begin.size()); ++e)
      if (begin[size_t(e) + 1] > begin[size_t(e)]) mine.push_back(e);
    mine.push_back(-1);  // this layer's backward is done (a layer may route no row at all)
    for (const auto& l : layers)
      if (l.empty()) return;  // a MoE layer of mb still to back
    for (const auto& owners : route_.owner_of)
      for (const std::string& o : owners) notes[o];  // every owner hears of every micro-batch
    for (size_t l = 0; l < layers.size(); ++l)
      for (const int64_t e : layers[l]) {
        if (e < 0) continue;
        train::ExpertRowsNote& n = notes[route_.owner_of[l].at(size_t(e))];
        n.add_moe_layers(int64_t(l)), n.add_experts(e);
      }
    routed_.erase(mb);
  }
  for (auto& [owner, n] : notes) {
    n.set_step(step_), n.set_mb(mb), n.set_micro_batches(micro_batches_);
    rpc_.send(make_message(rpc_.address(), owner, expert_rows_note_type, n), epoch_);
  }
}

std::vector<ExpertClient::Call> ExpertClient::exchange(uint32_t type, int64_t layer, int64_t mb,
                                                       std::span<const int64_t> begin, int64_t C,
                                                       const float* rows) {
  const int64_t m = layer - cfg_.first_k_dense;
  std::vector<Call> calls;
  std::map<std::string, size_t> index;  // shard → its call
  for (int64_t e = 0; e + 1 < int64_t(begin.size()); ++e) {
    if (begin[size_t(e) + 1] == begin[size_t(e)]) continue;  // no token: nothing to compute
    const int64_t slot = model::replica_of(route_.placement, m, e, mb);
    const std::string& shard = route_.shard_of_slot.at(size_t(slot));
    auto [it, fresh] = index.try_emplace(shard, calls.size());
    if (fresh) calls.push_back(Call{shard, 0, {}, {}, 0, {}});
    Call& c = calls[it->second];
    c.experts.push_back(e), c.slots.push_back(slot);
    c.rows += begin[size_t(e) + 1] - begin[size_t(e)];
  }
  for (Call& c : calls) c.request = rpc_.expect();
  for (const Call& c : calls) {
    std::vector<float> payload;
    payload.reserve(size_t(c.rows * C));
    for (int64_t e : c.experts)
      payload.insert(payload.end(), rows + begin[size_t(e)] * C, rows + begin[size_t(e) + 1] * C);
    ActorMessage msg;
    if (type == expert_forward_type) {
      auto body = request_body<train::ExpertForward>(c, step_, mb, m, begin);
      body.set_evaluate(evaluate_);
      msg = make_message(rpc_.address(), c.shard, type, body);
    } else {
      auto body = request_body<train::ExpertBackward>(c, step_, mb, m, begin);
      if (!route_.owner_of.empty()) {
        body.set_micro_batches(micro_batches_);
        for (size_t i = 0; i < c.experts.size(); ++i) {
          body.mutable_slots(int(i))->set_expert(c.experts[i]);
          body.mutable_slots(int(i))->set_owner(
              route_.owner_of.at(size_t(m)).at(size_t(c.experts[i])));
        }
      }
      msg = make_message(rpc_.address(), c.shard, type, body);
    }
    msg.payloads.push_back(owned_payload(std::move(payload)));
    rpc_.send(std::move(msg), epoch_);
  }
  std::vector<uint64_t> requests;
  std::vector<std::string> shards;
  for (const Call& c : calls) requests.push_back(c.request), shards.push_back(c.shard);
  std::vector<ActorMessage> answers =
      rpc_.await(requests, shards, epoch_, timeout_,
                 fmt::format("{} of micro-batch {} (MoE layer {})", type_name(type), mb, m));
  for (size_t i = 0; i < calls.size(); ++i) calls[i].answer = std::move(answers[i]);
  return calls;
}

void ExpertClient::forward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C,
                           const float* xs, float* ys) {
  for (const Call& c : exchange(expert_forward_type, layer, mb, begin, C, xs)) {
    if (c.answer.payloads.size() != 1)
      throw std::runtime_error(
          fmt::format("expert shard {}: ExpertOutputs without its rows", c.shard));
    const std::vector<float> y = floats(c.answer.payloads[0], c.rows * C, c.shard);
    int64_t at = 0;
    for (int64_t e : c.experts) {
      const int64_t n = begin[size_t(e) + 1] - begin[size_t(e)];
      std::memcpy(ys + begin[size_t(e)] * C, y.data() + at * C, sizeof(float) * size_t(n * C));
      at += n;
    }
  }
}

void ExpertClient::backward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C,
                            const float* dys, float* dxs, float* grads) {
  if (!route_.owner_of.empty() && micro_batches_ < 1)
    throw std::logic_error("ExpertClient: experts with owners, but no micro-batch count");
  const model::MoeLayout& L = layouts_.at(size_t(layer - cfg_.first_k_dense));
  const int64_t part = cfg_.moe_inter * cfg_.d_model;
  for (int64_t r = 0; r < begin.back() * C; ++r) dxs[r] = 0.f;  // rows with no answer: none
  for (const Call& c : exchange(expert_backward_type, layer, mb, begin, C, dys)) {
    if (c.answer.payloads.size() != 1 + c.experts.size())
      throw std::runtime_error(fmt::format("expert shard {}: ExpertGrads with {} payloads, not {}",
                                           c.shard, c.answer.payloads.size(),
                                           1 + c.experts.size()));
    const std::vector<float> dx = floats(c.answer.payloads[0], c.rows * C, c.shard);
    int64_t at = 0;
    for (size_t i = 0; i < c.experts.size(); ++i) {
      const int64_t e = c.experts[i], n = begin[size_t(e) + 1] - begin[size_t(e)];
      std::memcpy(dxs + begin[size_t(e)] * C, dx.data() + at * C, sizeof(float) * size_t(n * C));
      at += n;
      if (!route_.owner_of.empty()) continue;  // the weight gradient went to the owner
      const std::vector<float> g = floats(c.answer.payloads[1 + i], 3 * part, c.shard);
      model::add_expert_grads(L.experts.at(size_t(e)), part, g.data(), grads);
    }
  }
  if (!route_.owner_of.empty()) note_rows(mb, layer - cfg_.first_k_dense, begin);
}

}  // namespace troupe::actors
