#pragma once
// Routed experts on physical slots (issue 15), without the network: the state one
// expert_shard holds (ExpertSlots), the rule that picks which replica computes a micro-batch's
// tokens (replica_of), and an in-process RoutedExperts over several shards (LocalExpertShards)
// with which the tests prove the bits before any message is sent.
//
// The determinism argument (DESIGN §5): a replica computes expert e's rows of micro-batch mb
// with expert_forward/expert_backward on its own copy of e's weights (the same bits as
// every replica's, since the owner sends one update to all), so its forward output and its
// input gradient are the in-worker ones. It keeps e's weight gradient of that micro-batch
// alone, starting from zero, as the in-worker backward does in the micro-batch's own buffer;
// the owner of e sums those per-micro-batch gradients in the canonical tree over micro-batch
// ids. Exactly one replica computes each (micro-batch, expert) pair, so the sum does not
// depend on the placement, the number of shards or the replicas.
#include <cstdint>
#include <map>
#include <span>
#include <tuple>
#include <vector>

#include "model/config.h"
#include "model/ffn.h"
#include "model/params.h"
#include "train/eplb.h"

namespace troupe::model {

// The physical slot whose replica computes micro-batch mb's tokens of logical expert
// `expert` in MoE layer `moe_layer` (the placement's row): a pure function of the micro-batch
// id and the placement, so every worker and every recovery picks the same one.
int64_t replica_of(const EplbPlacement& placement, int64_t moe_layer, int64_t expert, int64_t mb);

// The slots of a MoE layer spread over `shards` expert shards: every expert once, rounded up
// to a whole number per shard, plus one redundant slot per shard (for the hot experts'
// replicas), as DeepSeek-V3 deploys them. Shard i holds slots [i·R/shards, (i+1)·R/shards).
int64_t shard_slot_count(int64_t experts, int64_t shards);
// The problem a job's placement solves: `loads` (MoE layers × experts, empty: uniform),
// shard_slot_count slots, cfg.n_group groups on `node_groups` node groups of `shards`
// shards (parallel.node_groups; one group where it does not divide the shards).
EplbProblem shard_problem(const ModelConfig& cfg, int64_t shards,
                          std::vector<std::vector<double>> loads = {}, int64_t node_groups = 1);
// The placement whose phy2log is `flat` (MoE layers × slots, row-major): logcnt and log2phy
// (replicas in slot order) follow from it. "" and *out set, or what is wrong with it.
std::string placement_from_phy2log(const std::vector<int64_t>& flat, int64_t layers,
                                   int64_t experts, EplbPlacement* out);

// The MoE layers of a config: block l is MoE layer l − first_k_dense.
int64_t moe_layer_count(const ModelConfig& cfg);

// The MoE layout of each MoE layer of a table (MoE layer m is block m + first_k_dense).
std::vector<MoeLayout> moe_layouts(const ModelConfig& cfg, const ParamTable& table);
// Expert L's weights copied out of params (the table's layout) in compact order (3·I·C:
// gate, up, down), as a slot holds them; and a slot's weight gradient added back into grads
// where the in-worker backward puts it.
template <typename T>
void copy_expert_weights(const SwigluLayout& L, int64_t part, const T* params, T* compact);
template <typename T>
void add_expert_grads(const SwigluLayout& L, int64_t part, const T* compact, T* grads);

// What one expert shard holds: the weights of its physical slots (each 3·I·C values: gate,
// up, down; see compact_swiglu_layout) and, during a step, each computed (micro-batch, MoE
// layer, slot)'s inputs, forward cache and weight gradient.
template <typename T>
class ExpertSlots {
 public:
  explicit ExpertSlots(const ModelConfig& cfg);

  // Sets (or replaces) the weights of a slot of a MoE layer: 3·I·C values.
  void set_weights(int64_t moe_layer, int64_t slot, std::span<const T> w);
  bool holds(int64_t moe_layer, int64_t slot) const;
  // x (n,C) -> y (n,C) with the slot's weights; keeps x and the cache for the backward.
  // Throws std::logic_error when the slot is not held or the pair was computed already.
  void forward(int64_t mb, int64_t moe_layer, int64_t slot, const T* x, int64_t n, T* y);
  // The same y for a forward that no backward follows (validation): nothing is kept.
  void evaluate(int64_t moe_layer, int64_t slot, const T* x, int64_t n, T* y) const;
  // dy (n,C) -> dx (n,C), overwritten; the pair's weight gradient (from zero) is kept.
  // Throws std::logic_error without the forward or after a backward of the same pair.
  void backward(int64_t mb, int64_t moe_layer, int64_t slot, const T* dy, T* dx);
  // How far a pair got this step: nothing yet, its forward, or its backward too.
  enum class Stage { none, forward, backward };
  Stage stage(int64_t mb, int64_t moe_layer, int64_t slot) const;
  int64_t rows(int64_t mb, int64_t moe_layer, int64_t slot) const;  // its forward's; -1: none
  // The kept weight gradient of a pair (3·I·C), or nullptr when it had no backward here.
  const std::vector<T>* grad(int64_t mb, int64_t moe_layer, int64_t slot) const;
  // Forgets every pair (after the step's gradients were sent).
  void clear_step() { work_.clear(); }
  int64_t expert_size() const { return 3 * I_ * C_; }

 private:
  struct Work {
    int64_t n = 0;
    std::vector<T> x, grad;
    SwigluCache<T> cache;
    bool backward_done = false;
  };
  ModelConfig cfg_;
  int64_t C_, I_;
  SwigluLayout layout_;
  std::map<std::pair<int64_t, int64_t>, std::vector<T>> weights_;  // (moe layer, slot)
  std::map<std::tuple<int64_t, int64_t, int64_t>, Work> work_;     // (mb, moe layer, slot)
};

// Every slot of a placement spread over `shards` ExpertSlots in this process (slot s on shard
// s / (R / shards)), as RoutedExperts of one Model (Model::set_micro_batch before each step()).
template <typename T>
class LocalExpertShards : public RoutedExperts<T> {
 public:
  // Copies each slot's logical expert weights out of params (the table's layout). R (the
  // placement's slots per layer) must be a multiple of shards; throws std::invalid_argument.
  LocalExpertShards(const ModelConfig& cfg, const ParamTable& table, const EplbPlacement& placement,
                    int64_t shards, const T* params);

  void forward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C, const T* xs,
               T* ys) override;
  // Keeps the weight gradients on the shards (grads is not written): write_reduced_grads.
  void backward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C, const T* dys,
                T* dxs, T* grads) override;

  // Writes into grads (the table's layout) every expert's weight gradient summed over
  // micro-batches [0, n_mb) in the canonical tree (a micro-batch that sent an expert no
  // backward counts as zero). What the owners of the experts compute.
  void write_reduced_grads(int64_t n_mb, T* grads) const;
  // What an owner sends its expert's replicas after its update: expert `expert` of MoE layer
  // `moe_layer` gets weights w (3·I·C: gate, up, down, the table's order) on every slot.
  void set_expert_weights(int64_t moe_layer, int64_t expert, std::span<const T> w);
  // Forgets every shard's step (the next step computes every pair afresh).
  void clear_step() {
    for (ExpertSlots<T>& s : shards_) s.clear_step();
  }
  const ExpertSlots<T>& shard(int64_t i) const { return shards_[size_t(i)]; }

 private:
  ExpertSlots<T>& shard_of(int64_t slot) { return shards_[size_t(slot / slots_per_shard_)]; }
  // f(shard, MoE layer, slot, first row, rows) for each expert of block `layer`, on the
  // replica that computes the current micro-batch.
  template <class F>
  void each_expert(int64_t layer, int64_t mb, std::span<const int64_t> begin, F&& f);
  ModelConfig cfg_;
  EplbPlacement placement_;
  std::vector<MoeLayout> layouts_;  // per MoE layer
  std::vector<ExpertSlots<T>> shards_;
  int64_t slots_per_shard_ = 0;
};

}  // namespace troupe::model
