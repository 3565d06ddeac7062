#pragma once
// The inputs and the comparison of the expert-shard tests (tests/train/expert_slots_test.cc in one
// process, tests/actors/expert_client_test.cc through actors, tests/actors/expert_shard_test.cc): a
// random batch, a skewed placement, and bitwise equality.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "model/batch.h"
#include "model/config.h"
#include "model/model.h"
#include "train/eplb.h"
#include "train/expert_slots.h"
#include "train/trainer.h"
#include "train/tree.h"

namespace troupe::tests {

inline model::Batch random_batch(const model::ModelConfig& m, int64_t rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  model::Batch b;
  b.rows = rows, b.seq_len = m.seq_len;
  for (int64_t i = 0; i < rows * m.seq_len; ++i) {
    b.inputs.push_back(int32_t(rng() % uint64_t(m.vocab_size)));
    b.targets.push_back(int32_t(rng() % uint64_t(m.vocab_size)));
  }
  return b;
}

// Skewed loads: a few hot experts, so the placement replicates them.
inline model::EplbPlacement skewed_placement(const model::ModelConfig& m, int64_t replicas,
                                             int64_t gpus) {
  model::EplbProblem p;
  for (int64_t l = 0; l < model::moe_layer_count(m); ++l) {
    std::vector<double> load(size_t(m.n_routed_experts));
    for (int64_t e = 0; e < m.n_routed_experts; ++e) load[size_t(e)] = double((e * 7 + l) % 5 + 1);
    load[size_t(l % m.n_routed_experts)] *= 9;
    p.loads.push_back(load);
  }
  p.replicas = replicas, p.groups = 1, p.nodes = 1, p.gpus = gpus;
  return model::rebalance_experts(p);
}

struct Result {
  model::LossParts<float> parts;
  std::vector<float> grad;
};

// Micro-batches one by one, each gradient from zero, reduced in the canonical tree; with
// shards, the experts' gradients are the shards' (write_reduced_grads).
inline Result run(const model::ModelConfig& m, const model::ParamTable& table,
                  const std::vector<float>& params, const model::Batch& batch, int64_t mb_rows,
                  model::LocalExpertShards<float>* shards) {
  model::Model<float> model(m, table);
  model.set_routed_experts(shards);
  const model::LossScale scale = model::loss_scale_of(batch, true);
  const int64_t n = batch.rows / mb_rows, P = table.total();
  std::vector<std::vector<float>> grads(size_t(n), std::vector<float>(size_t(P), 0.f));
  std::vector<float> ce, mtp, bal;
  for (int64_t i = 0; i < n; ++i) {
    model.set_micro_batch(i);
    const model::LossParts<float> p = model.step(params.data(), grads[size_t(i)].data(),
                                                 batch.slice(i * mb_rows, mb_rows), scale, true);
    ce.push_back(p.ce), mtp.push_back(p.mtp), bal.push_back(p.bal);
  }
  model::tree_reduce(grads, 0, n, P, 1);
  Result r;
  r.parts.ce = model::tree_sum(ce, 0, n), r.parts.mtp = model::tree_sum(mtp, 0, n);
  r.parts.bal = model::tree_sum(bal, 0, n);
  r.grad = std::move(grads[0]);
  if (shards) shards->write_reduced_grads(n, r.grad.data());
  return r;
}

// n values drawn from N(0, 0.5²) with a seed: rows, gradients, weights.
inline std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 0.5f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Every bit equal.
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace troupe::tests
