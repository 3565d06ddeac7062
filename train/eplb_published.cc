// DeepSeek's published EPLB algorithm (deepseek-ai/EPLB, eplb.py, MIT licence), one layer at
// a time, step for step: the same float32 sums and quotients, the same greedy choices. Its
// rebalance_experts converts the loads to float32 first; so do we. Where eplb.py leaves a
// tie to torch's unstable sort we take the lower index first; elsewhere its rules are ours:
// Python's min and torch's max both return the first of equal values.
#include <algorithm>
#include <numeric>

#include "train/eplb_detail.h"

namespace troupe::model::eplb_detail {

namespace {

struct Packing {
  std::vector<int64_t> pack;  // (n) pack of each item
  std::vector<int64_t> rank;  // (n) position of the item in its pack
};

// Item indices by weight, heaviest first, lower index first among equals.
template <typename T>
std::vector<int64_t> heaviest_first(const std::vector<T>& weight) {
  std::vector<int64_t> order(weight.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return weight[a] > weight[b]; });
  return order;
}

// eplb.py balanced_packing for one row: heaviest item first, each into the lightest pack
// that has room (the first such on ties). One item per pack is the identity, as there.
Packing balanced_packing(const std::vector<float>& weight, int64_t packs) {
  const int64_t n = int64_t(weight.size()), per_pack = n / packs;
  Packing out{std::vector<int64_t>(n), std::vector<int64_t>(n, 0)};
  if (per_pack == 1) {
    std::iota(out.pack.begin(), out.pack.end(), 0);
    return out;
  }
  std::vector<float> pack_weight(packs, 0.0f);
  std::vector<int64_t> pack_items(packs, 0);
  for (const int64_t item : heaviest_first(weight)) {
    int64_t best = -1;
    for (int64_t p = 0; p < packs; ++p)
      if (pack_items[p] < per_pack && (best < 0 || pack_weight[p] < pack_weight[best])) best = p;
    out.pack[item] = best;
    out.rank[item] = pack_items[best]++;
    pack_weight[best] += weight[item];
  }
  return out;
}

struct Replication {
  std::vector<int64_t> phy2log;  // (num_phy) expert of each physical replica
  std::vector<int64_t> rank;     // (num_phy) replica rank
  std::vector<int64_t> logcnt;   // (num_log) replicas per expert
};

// eplb.py replicate_experts for one row: each redundant replica goes to the expert with the
// largest load per replica (the first on ties), in float32 as there.
Replication replicate_experts(const std::vector<float>& weight, int64_t num_phy) {
  const int64_t num_log = int64_t(weight.size());
  Replication out{std::vector<int64_t>(num_phy), std::vector<int64_t>(num_phy, 0),
                  std::vector<int64_t>(num_log, 1)};
  std::iota(out.phy2log.begin(), out.phy2log.begin() + num_log, 0);
  for (int64_t i = num_log; i < num_phy; ++i) {
    int64_t best = 0;
    float best_per_replica = weight[0] / float(out.logcnt[0]);
    for (int64_t e = 1; e < num_log; ++e) {
      const float per_replica = weight[e] / float(out.logcnt[e]);
      if (per_replica > best_per_replica) best = e, best_per_replica = per_replica;
    }
    out.phy2log[i] = best;
    out.rank[i] = out.logcnt[best]++;
  }
  return out;
}

// Step 1: groups onto nodes by their float32 sums. Returns log2mlog, the position of each
// logical expert in node-major order ("mlog": node n holds positions [n·E/N, (n+1)·E/N)).
std::vector<int64_t> pack_groups(const std::vector<float>& w, const Shape& s) {
  const int64_t gs = s.group_size();
  std::vector<float> group_weight(s.groups, 0.0f);
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t j = 0; j < gs; ++j) group_weight[g] += w[g * gs + j];
  const Packing gp = balanced_packing(group_weight, s.nodes);
  std::vector<int64_t> log2mlog(s.experts);
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t j = 0; j < gs; ++j)
      log2mlog[g * gs + j] = (gp.pack[g] * s.groups_per_node() + gp.rank[g]) * gs + j;
  return log2mlog;
}

// Steps 2 and 3 for node n: replicate its experts onto its R/N slots, pack the replicas
// onto its GPUs, and write the node's slots of `out`.
void place_node(const std::vector<float>& w, const std::vector<int64_t>& mlog2log, int64_t n,
                const Shape& s, LayerPlacement& out) {
  const int64_t epn = s.experts_per_node(), spn = s.slots_per_node();
  std::vector<float> node_weight(epn);
  for (int64_t k = 0; k < epn; ++k) node_weight[k] = w[mlog2log[n * epn + k]];
  const Replication rep = replicate_experts(node_weight, spn);
  std::vector<float> replica_weight(spn);
  for (int64_t i = 0; i < spn; ++i)
    replica_weight[i] = node_weight[rep.phy2log[i]] / float(rep.logcnt[rep.phy2log[i]]);
  const Packing pp = balanced_packing(replica_weight, s.gpus_per_node());
  for (int64_t i = 0; i < spn; ++i) {
    const int64_t slot = n * spn + pp.pack[i] * s.slots_per_gpu() + pp.rank[i];
    out.phy2log[slot] = mlog2log[n * epn + rep.phy2log[i]];
    out.phyrank[slot] = rep.rank[i];
  }
  for (int64_t k = 0; k < epn; ++k) out.logcnt[mlog2log[n * epn + k]] = rep.logcnt[k];
}

}  // namespace

LayerPlacement published_layer(const std::vector<double>& load, const Shape& s) {
  std::vector<float> w(load.size());
  for (size_t e = 0; e < load.size(); ++e) w[e] = float(load[e]);  // eplb.py: weight.float()
  const std::vector<int64_t> log2mlog = pack_groups(w, s);
  std::vector<int64_t> mlog2log(s.experts);
  for (int64_t e = 0; e < s.experts; ++e) mlog2log[log2mlog[e]] = e;
  LayerPlacement out{std::vector<int64_t>(s.replicas, -1), std::vector<int64_t>(s.replicas, -1),
                     std::vector<int64_t>(s.experts, 0)};
  for (int64_t n = 0; n < s.nodes; ++n) place_node(w, mlog2log, n, s, out);
  return out;
}

}  // namespace troupe::model::eplb_detail
