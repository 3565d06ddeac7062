#include "train/expert_slots.h"

#include <algorithm>
#include <array>
#include <optional>
#include <stdexcept>
#include <string>

#include "train/tree.h"

namespace troupe::model {

int64_t replica_of(const EplbPlacement& placement, int64_t moe_layer, int64_t expert, int64_t mb) {
  const auto& slots = placement.log2phy.at(size_t(moe_layer)).at(size_t(expert));
  const int64_t count = placement.logcnt.at(size_t(moe_layer)).at(size_t(expert));
  if (count < 1 || mb < 0)
    throw std::invalid_argument("replica_of: expert " + std::to_string(expert) + " of MoE layer " +
                                std::to_string(moe_layer) + " has no replica, or mb < 0");
  return slots.at(size_t(mb % count));
}

int64_t shard_slot_count(int64_t experts, int64_t shards) {
  return ((experts + shards - 1) / shards + 1) * shards;
}

EplbProblem shard_problem(const ModelConfig& cfg, int64_t shards,
                          std::vector<std::vector<double>> loads, int64_t node_groups) {
  EplbProblem p;
  p.loads = loads.empty() ? std::vector<std::vector<double>>(
                                size_t(moe_layer_count(cfg)),
                                std::vector<double>(size_t(cfg.n_routed_experts), 1.0))
                          : std::move(loads);
  p.replicas = shard_slot_count(cfg.n_routed_experts, shards);
  p.groups = cfg.n_group, p.gpus = shards;
  p.nodes = node_groups > 0 && shards % node_groups == 0 ? node_groups : 1;
  return p;
}

std::string placement_from_phy2log(const std::vector<int64_t>& flat, int64_t layers,
                                   int64_t experts, EplbPlacement* out) {
  if (layers <= 0 || experts <= 0 || flat.size() % size_t(layers) != 0)
    return std::to_string(flat.size()) + " slots for " + std::to_string(layers) + " MoE layers";
  const auto R = int64_t(flat.size()) / layers;
  EplbPlacement p;
  p.phy2log.assign(size_t(layers), {});
  p.logcnt.assign(size_t(layers), std::vector<int64_t>(size_t(experts), 0));
  using Slots = std::vector<std::vector<int64_t>>;  // expert → its slots, of one layer
  std::vector<Slots> slots(static_cast<size_t>(layers), Slots(static_cast<size_t>(experts)));
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t e = flat[size_t(l * R + r)];
      if (e < 0 || e >= experts)
        return "slot " + std::to_string(r) + " holds expert " + std::to_string(e);
      p.phy2log[size_t(l)].push_back(e);
      ++p.logcnt[size_t(l)][size_t(e)];
      slots[size_t(l)][size_t(e)].push_back(r);
    }
  int64_t most = 0;
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t e = 0; e < experts; ++e) {
      if (p.logcnt[size_t(l)][size_t(e)] == 0)
        return "expert " + std::to_string(e) + " of MoE layer " + std::to_string(l) +
               " has no slot";
      most = std::max(most, p.logcnt[size_t(l)][size_t(e)]);
    }
  for (auto& layer : slots)
    for (auto& s : layer) s.resize(size_t(most), -1);
  p.log2phy = std::move(slots);
  *out = std::move(p);
  return "";
}

int64_t moe_layer_count(const ModelConfig& cfg) {
  return cfg.ffn == Ffn::moe ? std::max<int64_t>(0, cfg.n_layers - cfg.first_k_dense) : 0;
}

std::vector<MoeLayout> moe_layouts(const ModelConfig& cfg, const ParamTable& table) {
  std::vector<MoeLayout> out;
  for (int64_t m = 0; m < moe_layer_count(cfg); ++m)
    out.push_back(MoeLayout::from(
        table, cfg, "model.layers." + std::to_string(m + cfg.first_k_dense) + ".mlp."));
  return out;
}

namespace {

// The three matrices of an expert, in compact order: gate, up, down.
std::array<int64_t, 3> parts_of(const SwigluLayout& L) {
  return {L.gate, L.up, L.down};
}

}  // namespace

template <typename T>
void copy_expert_weights(const SwigluLayout& L, int64_t part, const T* params, T* compact) {
  const auto offs = parts_of(L);
  for (size_t k = 0; k < 3; ++k)
    std::copy(params + offs[k], params + offs[k] + part, compact + int64_t(k) * part);
}

template <typename T>
void add_expert_grads(const SwigluLayout& L, int64_t part, const T* compact, T* grads) {
  const auto offs = parts_of(L);
  for (size_t k = 0; k < 3; ++k)
    for (int64_t i = 0; i < part; ++i) grads[offs[k] + i] += compact[int64_t(k) * part + i];
}

// ---- ExpertSlots ------------------------------------------------------------------------

template <typename T>
ExpertSlots<T>::ExpertSlots(const ModelConfig& cfg)
    : cfg_(cfg),
      C_(cfg.d_model),
      I_(cfg.moe_inter),
      layout_(compact_swiglu_layout(cfg.d_model, cfg.moe_inter)) {}

template <typename T>
void ExpertSlots<T>::set_weights(int64_t moe_layer, int64_t slot, std::span<const T> w) {
  if (int64_t(w.size()) != expert_size())
    throw std::invalid_argument(
        "expert slot weights: " + std::to_string(w.size()) +
        " values, want 3·moe_inter·d_model = " + std::to_string(expert_size()));
  weights_[{moe_layer, slot}].assign(w.begin(), w.end());
}

template <typename T>
bool ExpertSlots<T>::holds(int64_t moe_layer, int64_t slot) const {
  return weights_.count({moe_layer, slot}) > 0;
}

namespace {
template <typename Map>
auto held_weights(const Map& weights, int64_t moe_layer, int64_t slot) {
  const auto w = weights.find({moe_layer, slot});
  if (w == weights.end())
    throw std::logic_error("expert slot " + std::to_string(slot) + " of MoE layer " +
                           std::to_string(moe_layer) + " is not held by this shard");
  return w;
}
}  // namespace

template <typename T>
void ExpertSlots<T>::evaluate(int64_t moe_layer, int64_t slot, const T* x, int64_t n, T* y) const {
  const auto w = held_weights(weights_, moe_layer, slot);
  SwigluCache<T> cache;
  expert_forward(cfg_, layout_, w->second.data(), x, n, C_, y, cache);
}

template <typename T>
void ExpertSlots<T>::forward(int64_t mb, int64_t moe_layer, int64_t slot, const T* x, int64_t n,
                             T* y) {
  const auto w = held_weights(weights_, moe_layer, slot);
  auto [it, fresh] = work_.try_emplace({mb, moe_layer, slot});
  if (!fresh)
    throw std::logic_error("expert slot " + std::to_string(slot) + ": micro-batch " +
                           std::to_string(mb) + " computed twice in one step");
  Work& wk = it->second;
  wk.n = n;
  wk.x.assign(x, x + n * C_);
  expert_forward(cfg_, layout_, w->second.data(), wk.x.data(), n, C_, y, wk.cache);
}

template <typename T>
void ExpertSlots<T>::backward(int64_t mb, int64_t moe_layer, int64_t slot, const T* dy, T* dx) {
  const auto it = work_.find({mb, moe_layer, slot});
  if (it == work_.end() || it->second.backward_done)
    throw std::logic_error("expert slot " + std::to_string(slot) + ": a backward of micro-batch " +
                           std::to_string(mb) + " without its forward, or twice");
  Work& wk = it->second;
  std::fill(dx, dx + wk.n * C_, T(0));
  wk.grad.assign(size_t(expert_size()), T(0));
  expert_backward(cfg_, layout_, weights_.at({moe_layer, slot}).data(), wk.grad.data(), wk.x.data(),
                  dy, dx, wk.cache);
  wk.backward_done = true;
}

template <typename T>
typename ExpertSlots<T>::Stage ExpertSlots<T>::stage(int64_t mb, int64_t moe_layer,
                                                     int64_t slot) const {
  const auto it = work_.find({mb, moe_layer, slot});
  if (it == work_.end()) return Stage::none;
  return it->second.backward_done ? Stage::backward : Stage::forward;
}

template <typename T>
int64_t ExpertSlots<T>::rows(int64_t mb, int64_t moe_layer, int64_t slot) const {
  const auto it = work_.find({mb, moe_layer, slot});
  return it == work_.end() ? -1 : it->second.n;
}

template <typename T>
const std::vector<T>* ExpertSlots<T>::grad(int64_t mb, int64_t moe_layer, int64_t slot) const {
  const auto it = work_.find({mb, moe_layer, slot});
  return it != work_.end() && it->second.backward_done ? &it->second.grad : nullptr;
}

// ---- LocalExpertShards ------------------------------------------------------------------

template <typename T>
LocalExpertShards<T>::LocalExpertShards(const ModelConfig& cfg, const ParamTable& table,
                                        const EplbPlacement& placement, int64_t shards,
                                        const T* params)
    : cfg_(cfg), placement_(placement) {
  const int64_t layers = moe_layer_count(cfg);
  if (int64_t(placement.phy2log.size()) != layers)
    throw std::invalid_argument("the expert placement has " +
                                std::to_string(placement.phy2log.size()) + " layers, the model " +
                                std::to_string(layers) + " MoE layers");
  const int64_t R = layers > 0 ? int64_t(placement.phy2log[0].size()) : 0;
  if (shards < 1 || R % shards != 0)
    throw std::invalid_argument("expert shards = " + std::to_string(shards) +
                                " must divide the placement's " + std::to_string(R) + " slots");
  slots_per_shard_ = R / shards;
  shards_.assign(size_t(shards), ExpertSlots<T>(cfg));
  const int64_t part = cfg.moe_inter * cfg.d_model;
  std::vector<T> w(size_t(3 * part));
  layouts_ = moe_layouts(cfg, table);
  for (int64_t m = 0; m < layers; ++m)
    for (int64_t s = 0; s < R; ++s) {
      const SwigluLayout& L =
          layouts_[size_t(m)].experts.at(size_t(placement.phy2log[m][size_t(s)]));
      copy_expert_weights(L, part, params, w.data());
      shard_of(s).set_weights(m, s, w);
    }
}

template <typename T>
template <class F>
void LocalExpertShards<T>::each_expert(int64_t layer, int64_t mb, std::span<const int64_t> begin,
                                       F&& f) {
  const int64_t m = layer - cfg_.first_k_dense;
  for (int64_t e = 0; e + 1 < int64_t(begin.size()); ++e) {
    const int64_t slot = replica_of(placement_, m, e, mb);
    const int64_t b = begin[size_t(e)];
    f(shard_of(slot), m, slot, b, begin[size_t(e) + 1] - b);
  }
}

template <typename T>
void LocalExpertShards<T>::forward(int64_t layer, int64_t mb, std::span<const int64_t> begin,
                                   int64_t C, const T* xs, T* ys) {
  each_expert(layer, mb, begin,
              [&](ExpertSlots<T>& sh, int64_t m, int64_t slot, int64_t b, int64_t n) {
                sh.forward(mb, m, slot, xs + b * C, n, ys + b * C);
              });
}

template <typename T>
void LocalExpertShards<T>::backward(int64_t layer, int64_t mb, std::span<const int64_t> begin,
                                    int64_t C, const T* dys, T* dxs, T*) {
  each_expert(layer, mb, begin,
              [&](ExpertSlots<T>& sh, int64_t m, int64_t slot, int64_t b, int64_t) {
                sh.backward(mb, m, slot, dys + b * C, dxs + b * C);
              });
}

template <typename T>
void LocalExpertShards<T>::write_reduced_grads(int64_t n_mb, T* grads) const {
  const int64_t part = cfg_.moe_inter * cfg_.d_model, size = 3 * part;
  for (int64_t m = 0; m < int64_t(layouts_.size()); ++m)
    for (int64_t e = 0; e < int64_t(layouts_[size_t(m)].experts.size()); ++e) {
      const auto leaf = [&](int64_t lo, int64_t hi) -> std::optional<std::vector<T>> {
        if (hi - lo != 1) return std::nullopt;
        const int64_t slot = replica_of(placement_, m, e, lo);
        const auto* g = shards_[size_t(slot / slots_per_shard_)].grad(lo, m, slot);
        return g ? *g : std::vector<T>(size_t(size), T(0));
      };
      const auto merge = [](std::vector<T>& a, const std::vector<T>& b) {
        for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
      };
      if (n_mb < 1) continue;
      const std::vector<T> sum = tree_fold<std::vector<T>>(0, n_mb, leaf, merge);
      const auto offs = parts_of(layouts_[size_t(m)].experts[size_t(e)]);
      for (size_t k = 0; k < 3; ++k)
        for (int64_t i = 0; i < part; ++i) grads[offs[k] + i] = sum[size_t(int64_t(k) * part + i)];
    }
}

template <typename T>
void LocalExpertShards<T>::set_expert_weights(int64_t moe_layer, int64_t expert,
                                              std::span<const T> w) {
  const auto& slots = placement_.log2phy.at(size_t(moe_layer)).at(size_t(expert));
  const int64_t count = placement_.logcnt.at(size_t(moe_layer)).at(size_t(expert));
  for (int64_t r = 0; r < count; ++r)
    shard_of(slots.at(size_t(r))).set_weights(moe_layer, slots[size_t(r)], w);
}

template void copy_expert_weights<float>(const SwigluLayout&, int64_t, const float*, float*);
template void copy_expert_weights<double>(const SwigluLayout&, int64_t, const double*, double*);
template void add_expert_grads<float>(const SwigluLayout&, int64_t, const float*, float*);
template void add_expert_grads<double>(const SwigluLayout&, int64_t, const double*, double*);
template class ExpertSlots<float>;
template class ExpertSlots<double>;
template class LocalExpertShards<float>;
template class LocalExpertShards<double>;

}  // namespace troupe::model
