// train/eplb.h: placements are valid and deterministic, bad problems are refused by name,
// the published policy reproduces eplb.py's own example, and the improved policy is never
// less balanced than the published one (tests/reference/eplb_parity.py runs eplb.py itself).
#include "train/eplb.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "train/eplb_detail.h"

namespace troupe::model {
namespace {

// A deterministic stream of loads: splitmix64, so the test needs no RNG state of its own.
struct Loads {
  uint64_t state;
  double next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return double((z ^ (z >> 31)) >> 11) / double(1ULL << 53);  // [0, 1)
  }
  // (layers,experts): uniform when skew is 0, else Zipf with exponent skew over a shuffled rank.
  std::vector<std::vector<double>> make(int64_t layers, int64_t experts, double skew) {
    std::vector<std::vector<double>> out(layers, std::vector<double>(experts));
    for (auto& row : out)
      for (int64_t e = 0; e < experts; ++e) {
        const double rank = 1 + std::floor(next() * double(experts));
        row[e] = std::round(1000 * (skew > 0 ? 100 / std::pow(rank, skew) : 1) * (0.5 + next()));
      }
    return out;
  }
};

EplbProblem problem(std::vector<std::vector<double>> loads, int64_t r, int64_t g, int64_t n,
                    int64_t p) {
  return EplbProblem{std::move(loads), r, g, n, p};
}

// eplb.py's README example: 2 layers × 12 experts, 16 replicas, 4 groups, 2 nodes, 8 GPUs.
EplbProblem readme_example() {
  return problem({{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
                  {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}},
                 16, 4, 2, 8);
}

TEST(Eplb, PublishedPolicyReproducesTheReadmeExample) {
  const EplbPlacement x = rebalance_experts(readme_example(), EplbPolicy::published);
  EXPECT_TRUE(x.hierarchical);
  // The output printed in deepseek-ai/EPLB's README.md.
  EXPECT_EQ(x.phy2log[0],
            (std::vector<int64_t>{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1}));
  EXPECT_EQ(x.phy2log[1], (std::vector<int64_t>{7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}));
  EXPECT_EQ(check_placement(readme_example(), x), "");
}

TEST(Eplb, PlacementsAreValidForEveryShapeAndPolicy) {
  struct Shape {
    int64_t experts, r, g, n, p;
  };
  const Shape shapes[] = {{12, 16, 4, 2, 8},  {16, 16, 4, 2, 8},    {16, 24, 4, 4, 8},
                          {64, 80, 8, 2, 16}, {256, 288, 8, 4, 32}, {12, 18, 3, 2, 6},
                          {8, 8, 1, 1, 8},    {8, 40, 2, 1, 5}};
  Loads gen{7};
  for (const Shape& s : shapes)
    for (const double skew : {0.0, 1.0, 2.0})
      for (const EplbPolicy policy : {EplbPolicy::published, EplbPolicy::improved}) {
        const EplbProblem prob = problem(gen.make(3, s.experts, skew), s.r, s.g, s.n, s.p);
        const EplbPlacement x = rebalance_experts(prob, policy);
        EXPECT_EQ(check_placement(prob, x), "") << s.experts << " experts, skew " << skew;
        EXPECT_EQ(x.hierarchical, s.g % s.n == 0);
      }
}

TEST(Eplb, CheckPlacementCatchesWhatIsWrong) {
  const EplbProblem prob = readme_example();
  const EplbPlacement good = rebalance_experts(prob);
  EplbPlacement x = good;
  x.logcnt[0][3] += 1;
  EXPECT_NE(check_placement(prob, x).find("logcnt of expert 3"), std::string::npos);
  x = good;
  x.phy2log[1][0] = 99;
  EXPECT_NE(check_placement(prob, x).find("not an expert"), std::string::npos);
  x = good;  // two groups swap one expert each: every group then spans both nodes
  std::swap(x.phy2log[0][0], x.phy2log[0][15]);
  for (auto& row : x.log2phy[0])
    for (auto& slot : row) slot = slot == 0 ? 15 : slot == 15 ? 0 : slot;
  EXPECT_NE(check_placement(prob, x).find("lies on two nodes"), std::string::npos);
  x = good;
  std::swap(x.log2phy[1][5][0], x.log2phy[1][6][0]);
  EXPECT_NE(check_placement(prob, x).find("log2phy of expert 5"), std::string::npos);
}

TEST(Eplb, SameProblemSamePlacement) {
  Loads gen{11};
  const EplbProblem prob = problem(gen.make(4, 64, 1.2), 80, 8, 2, 16);
  const EplbPlacement a = rebalance_experts(prob), b = rebalance_experts(prob);
  EXPECT_EQ(a.phy2log, b.phy2log);
  EXPECT_EQ(a.log2phy, b.log2phy);
  EXPECT_EQ(a.logcnt, b.logcnt);
}

TEST(Eplb, ImprovedIsNeverWorseLayerByLayer) {
  Loads gen{3};
  for (const double skew : {0.0, 0.8, 1.5, 3.0}) {
    const EplbProblem prob = problem(gen.make(6, 64, skew), 72, 8, 2, 8);
    const EplbPlacement pub = rebalance_experts(prob, EplbPolicy::published);
    const EplbPlacement imp = rebalance_experts(prob, EplbPolicy::improved);
    for (size_t l = 0; l < prob.loads.size(); ++l)
      EXPECT_LE(layer_balance(prob.loads[l], imp.phy2log[l], imp.logcnt[l], prob.gpus),
                layer_balance(prob.loads[l], pub.phy2log[l], pub.logcnt[l], prob.gpus))
          << "skew " << skew << " layer " << l;
  }
}

// One hot expert over 4 GPUs, 8 slots: eplb.py gives it 5 replicas, two of which share a
// GPU (balance 40 / 25.75); 4 replicas and a second one for a cold expert give 26 / 25.75.
TEST(Eplb, ImprovedSpreadsAHotExpertEvenly) {
  const EplbProblem prob = problem({{100, 1, 1, 1}}, 8, 1, 1, 4);
  const EplbPlacement pub = rebalance_experts(prob, EplbPolicy::published);
  const EplbPlacement imp = rebalance_experts(prob, EplbPolicy::improved);
  EXPECT_EQ(pub.logcnt[0], (std::vector<int64_t>{5, 1, 1, 1}));
  EXPECT_DOUBLE_EQ(placement_balance(prob, pub), 40 / 25.75);
  EXPECT_EQ(imp.logcnt[0][0], 4);
  EXPECT_DOUBLE_EQ(placement_balance(prob, imp), 26 / 25.75);
  EXPECT_EQ(check_placement(prob, imp), "");
}

TEST(Eplb, BalanceBeforeIsContiguousBlocksAndAfterIsPerSlot) {
  // 4 experts on 2 GPUs, one slot each: {0,1} and {2,3}.
  const EplbProblem prob = problem({{3, 1, 2, 2}, {0, 0, 0, 0}}, 4, 1, 1, 2);
  EXPECT_DOUBLE_EQ(static_balance(prob), (4.0 / 4.0 + 1.0) / 2);  // an empty layer counts 1
  const std::vector<double> g = gpu_loads({3, 1, 2, 2}, {0, 0, 1, 2, 3, 3}, {2, 1, 1, 2}, 2);
  EXPECT_EQ(g, (std::vector<double>{3 + 1, 2 + 2}));
  // 12 experts on 8 GPUs: expert e on GPU floor(e·8/12).
  std::vector<double> one_hot(12, 0.0);
  one_hot[11] = 12;
  EXPECT_DOUBLE_EQ(static_balance(problem({one_hot}, 16, 1, 1, 8)), 8.0);
}

TEST(Eplb, PackEvenlyKeepsPackSizesAndSwapsOffTheHeaviest) {
  // LPT with 3 items per pack: {10,4,2} = 16 and {6,5,3} = 14; swapping 4 and 3 gives 15, 15.
  const std::vector<double> w = {10, 6, 5, 4, 3, 2};
  const std::vector<int64_t> pack = eplb_detail::pack_evenly(w, 2);
  double load[2] = {0, 0};
  int count[2] = {0, 0};
  for (size_t i = 0; i < w.size(); ++i) load[pack[i]] += w[i], ++count[pack[i]];
  EXPECT_EQ(count[0], 3);
  EXPECT_EQ(count[1], 3);
  EXPECT_DOUBLE_EQ(load[0], 15);
  EXPECT_DOUBLE_EQ(load[1], 15);
}

void expect_refused(const EplbProblem& prob, const std::string& says) {
  try {
    rebalance_experts(prob);
    ADD_FAILURE() << "accepted; expected an error saying " << says;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(Eplb, BadProblemsAreRefusedByName) {
  const std::vector<std::vector<double>> l12 = readme_example().loads;
  expect_refused(problem({}, 16, 4, 2, 8), "no layers");
  expect_refused(problem({{}}, 16, 4, 2, 8), "no experts");
  expect_refused(problem({{1, 2, 3, 4}, {1, 2, 3}}, 4, 1, 1, 1), "loads[1] has 3 experts");
  expect_refused(problem({{1, -2, 3, 4}}, 4, 1, 1, 1), "loads[0][1]");
  expect_refused(problem({{1, NAN, 3, 4}}, 4, 1, 1, 1), "finite");
  expect_refused(problem({{1, INFINITY, 3, 4}}, 4, 1, 1, 1), "finite");
  expect_refused(problem(l12, 18, 4, 2, 8), "replicas 18 is not a multiple of gpus 8");
  expect_refused(problem(l12, 16, 5, 1, 8), "groups 5 does not divide the 12 experts");
  expect_refused(problem(l12, 8, 4, 2, 8), "replicas 8 is fewer than the 12 experts");
  expect_refused(problem(l12, 16, 4, 3, 8), "nodes 3 does not divide gpus 8");
  expect_refused(problem(l12, 16, 4, 0, 8), "nodes must be at least 1");
  expect_refused(problem(l12, 16, 4, 2, 0), "gpus must be at least 1");
}

TEST(Eplb, GroupsNotDivisibleByNodesSelectTheGlobalPolicy) {
  const EplbProblem prob = problem(readme_example().loads, 16, 3, 2, 8);
  const EplbPlacement x = rebalance_experts(prob, EplbPolicy::published);
  EXPECT_FALSE(x.hierarchical);
  EXPECT_EQ(check_placement(prob, x), "");
  // Global: one node of one group, so the same as G = N = 1.
  EXPECT_EQ(x.phy2log,
            rebalance_experts(problem(prob.loads, 16, 1, 1, 8), EplbPolicy::published).phy2log);
}

TEST(Eplb, OneSlotPerExpertIsThePermutationOfPacking) {
  // R == E and one slot per GPU: nothing to replicate or pack, every expert on its own GPU.
  const EplbProblem prob = problem({{5, 1, 4, 2, 8, 3, 7, 6}}, 8, 1, 1, 8);
  for (const EplbPolicy policy : {EplbPolicy::published, EplbPolicy::improved}) {
    const EplbPlacement x = rebalance_experts(prob, policy);
    EXPECT_EQ(x.phy2log[0], (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
    EXPECT_EQ(x.logcnt[0], std::vector<int64_t>(8, 1));
    EXPECT_DOUBLE_EQ(placement_balance(prob, x), static_balance(prob));
  }
}

}  // namespace
}  // namespace troupe::model
