#include "train/eplb_in_place.h"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "train/expert_slots.h"

namespace troupe::model {

namespace {

using Row = std::vector<int64_t>;

// How many experts two slot lists share, counting replicas (multiset intersection).
int64_t overlap(const Row& a, const Row& b) {
  std::map<int64_t, int64_t> count;
  for (int64_t e : a) ++count[e];
  int64_t n = 0;
  for (int64_t e : b)
    if (auto it = count.find(e); it != count.end() && it->second > 0) --it->second, ++n;
  return n;
}

// new_shard's experts laid into the slots of a shard that holds `old` now: each expert it
// keeps back in its slot, the others in new_shard's order in the slots left.
Row lay_out(const Row& new_shard, const Row& old) {
  std::map<int64_t, int64_t> left;
  for (int64_t e : new_shard) ++left[e];
  Row out(old.size(), -1);
  for (size_t k = 0; k < old.size(); ++k)
    if (auto it = left.find(old[k]); it != left.end() && it->second > 0)
      out[k] = old[k], --it->second;
  size_t k = 0;
  for (int64_t e : new_shard) {
    if (left[e] == 0) continue;  // kept in place above
    --left[e];
    while (out[k] != -1) ++k;
    out[k] = e;
  }
  return out;
}

Row keep_layer(const Row& next, const Row& now, int64_t shards, int64_t node_groups) {
  const size_t per = next.size() / size_t(shards);
  const auto shard_of = [&](const Row& row, int64_t s) {
    return Row(row.begin() + int64_t(size_t(s) * per), row.begin() + int64_t(size_t(s + 1) * per));
  };
  Row out(next.size());
  const int64_t per_group = shards / node_groups;
  for (int64_t g = 0; g < node_groups; ++g) {
    const int64_t lo = g * per_group, hi = lo + per_group;
    struct Pair {
      int64_t shared, from, to;
    };
    std::vector<Pair> pairs;
    for (int64_t s = lo; s < hi; ++s)
      for (int64_t t = lo; t < hi; ++t)
        pairs.push_back({overlap(shard_of(next, s), shard_of(now, t)), s, t});
    std::stable_sort(pairs.begin(), pairs.end(),
                     [](const Pair& a, const Pair& b) { return a.shared > b.shared; });
    std::vector<bool> placed(size_t(shards), false), taken(size_t(shards), false);
    for (const Pair& p : pairs) {
      if (placed[size_t(p.from)] || taken[size_t(p.to)]) continue;
      placed[size_t(p.from)] = taken[size_t(p.to)] = true;
      const Row laid = lay_out(shard_of(next, p.from), shard_of(now, p.to));
      std::copy(laid.begin(), laid.end(), out.begin() + int64_t(size_t(p.to) * per));
    }
  }
  return out;
}

}  // namespace

EplbPlacement keep_in_place(const EplbPlacement& next, const EplbPlacement& now, int64_t shards,
                            int64_t node_groups) {
  const size_t layers = next.phy2log.size();
  if (now.phy2log.size() != layers || layers == 0 || shards < 1 || node_groups < 1 ||
      shards % node_groups != 0)
    throw std::invalid_argument("keep_in_place: placements or shards of different shapes");
  Row flat;
  for (size_t l = 0; l < layers; ++l) {
    const Row& n = next.phy2log[l];
    if (now.phy2log[l].size() != n.size() || n.size() % size_t(shards) != 0)
      throw std::invalid_argument("keep_in_place: layer " + std::to_string(l) +
                                  " has slots of different counts or not whole per shard");
    const Row kept = keep_layer(n, now.phy2log[l], shards, node_groups);
    flat.insert(flat.end(), kept.begin(), kept.end());
  }
  EplbPlacement out;
  const int64_t experts = int64_t(next.logcnt.at(0).size());
  if (const std::string why = placement_from_phy2log(flat, int64_t(layers), experts, &out);
      !why.empty())
    throw std::invalid_argument("keep_in_place: " + why);
  out.hierarchical = next.hierarchical;
  return out;
}

int64_t moved_slots(const EplbPlacement& a, const EplbPlacement& b) {
  int64_t n = 0;
  for (size_t l = 0; l < a.phy2log.size() && l < b.phy2log.size(); ++l)
    for (size_t r = 0; r < a.phy2log[l].size() && r < b.phy2log[l].size(); ++r)
      n += a.phy2log[l][r] != b.phy2log[l][r];
  return n;
}

}  // namespace troupe::model
