// train/eplb_in_place.h: a new placement reordered to move as few slots as it can, with the
// same balance (each shard's experts permuted among the shards of its node group only), the
// same replica counts, and no move at all when nothing changed.
#include "train/eplb_in_place.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "train/expert_slots.h"

namespace troupe::model {
namespace {

// splitmix64 loads: a few hot experts over a flat rest, different per layer and seed.
std::vector<std::vector<double>> skewed(uint64_t seed, int64_t layers, int64_t experts) {
  std::vector<std::vector<double>> out(static_cast<size_t>(layers),
                                       std::vector<double>(static_cast<size_t>(experts)));
  for (auto& row : out)
    for (double& x : row) {
      uint64_t z = (seed += 0x9e3779b97f4a7c15ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      z ^= z >> 31;
      x = double(10 + z % 100) * (z % 7 == 0 ? 20 : 1);
    }
  return out;
}

// The same loads a window later: each within ±25% (routing drifts; it does not start over).
std::vector<std::vector<double>> drifted(std::vector<std::vector<double>> loads, uint64_t seed) {
  const auto noise = skewed(seed, int64_t(loads.size()), int64_t(loads[0].size()));
  for (size_t l = 0; l < loads.size(); ++l)
    for (size_t e = 0; e < loads[l].size(); ++e)
      loads[l][e] *= 0.75 + 0.5 * double(int64_t(noise[l][e]) % 101) / 100;
  return loads;
}

std::vector<int64_t> sorted_shard(const std::vector<int64_t>& row, size_t per, size_t s) {
  std::vector<int64_t> out(row.begin() + int64_t(s * per), row.begin() + int64_t((s + 1) * per));
  std::sort(out.begin(), out.end());
  return out;
}

TEST(EplbInPlace, SameBalanceFewerMovesAndNodeGroupsKept) {
  int64_t moved_before = 0, moved_after = 0;
  for (uint64_t seed = 1; seed <= 20; ++seed)
    for (const auto& [shards, groups] : {std::pair<int64_t, int64_t>{4, 1}, {4, 2}, {8, 4}}) {
      const int64_t experts = 16, layers = 3, slots = 24;
      const EplbProblem old_p{skewed(seed, layers, experts), slots, 4, groups, shards};
      const EplbProblem new_p{drifted(old_p.loads, seed + 100), slots, 4, groups, shards};
      const EplbPlacement now = rebalance_experts(old_p);
      const EplbPlacement next = rebalance_experts(new_p);
      const EplbPlacement kept = keep_in_place(next, now, shards, groups);
      EXPECT_EQ(check_placement(new_p, kept), "") << seed;
      EXPECT_EQ(kept.logcnt, next.logcnt);
      const double b0 = placement_balance(new_p, next), b1 = placement_balance(new_p, kept);
      EXPECT_NEAR(b1, b0, 1e-12 * b0) << "seed " << seed << ": the balance is the same";
      // Each kept shard holds what some new shard of the same node group holds.
      const size_t per = size_t(slots / shards), per_group = size_t(shards / groups);
      for (size_t l = 0; l < size_t(layers); ++l)
        for (size_t s = 0; s < size_t(shards); ++s) {
          const size_t g = s / per_group;
          bool found = false;
          for (size_t t = g * per_group; t < (g + 1) * per_group; ++t)
            found |= sorted_shard(kept.phy2log[l], per, s) == sorted_shard(next.phy2log[l], per, t);
          EXPECT_TRUE(found) << "seed " << seed << " layer " << l << " shard " << s;
        }
      EXPECT_LE(moved_slots(kept, now), moved_slots(next, now)) << seed;
      moved_before += moved_slots(next, now), moved_after += moved_slots(kept, now);
      EXPECT_EQ(moved_slots(keep_in_place(now, now, shards, groups), now), 0);
    }
  EXPECT_LT(moved_after, moved_before * 3 / 4) << "a quarter fewer slots moved at least";
  std::printf("slots moved over 60 rebalances: %lld as placed, %lld kept in place\n",
              static_cast<long long>(moved_before), static_cast<long long>(moved_after));
}

TEST(EplbInPlace, ShapesThatDoNotAgreeAreRefused) {
  const EplbProblem p{skewed(1, 2, 8), 12, 1, 1, 3};
  const EplbPlacement a = rebalance_experts(p);
  EXPECT_THROW(keep_in_place(a, a, 5, 1), std::invalid_argument);  // 12 slots on 5 shards
  EXPECT_THROW(keep_in_place(a, a, 3, 2), std::invalid_argument);  // 2 groups of 3 shards
  EplbPlacement one_layer = a;
  one_layer.phy2log.pop_back();
  EXPECT_THROW(keep_in_place(a, one_layer, 3, 1), std::invalid_argument);
}

}  // namespace
}  // namespace troupe::model
