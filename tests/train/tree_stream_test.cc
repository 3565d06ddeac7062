// TreeStream (train/tree_stream.h): leaves arriving in any order, from any thread, fold into
// the bits of the canonical tree_reduce, piece by piece, merging as soon as both halves are
// there; and the GradEngine that uses it holds fewer buffers than micro-batches.
#include "train/tree_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <thread>

#include "model/rng.h"
#include "tests/tiny_test_job.h"
#include "tests/train/expert_test_data.h"
#include "train/trainer.h"
#include "train/tree.h"

namespace troupe::model {
namespace {

// n leaves of len floats with values whose sums depend on the order of addition.
std::vector<std::vector<float>> leaves(int64_t n, int64_t len) {
  CounterRng rng(9, purpose_of("tree_stream_test"));
  std::vector<std::vector<float>> v(size_t(n), std::vector<float>(size_t(len), 0.0f));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < len; ++j)
      v[size_t(i)][size_t(j)] = float(rng.normal(uint64_t(i * len + j)) * std::pow(10.0, j % 7));
  return v;
}

TEST(TreeStream, AnyArrivalOrderGivesTheCanonicalBitsPerPiece) {
  std::mt19937 gen(5);
  for (int64_t n : {1, 2, 3, 5, 8, 11, 16}) {
    for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, n}, {n / 3, n}, {0, (n + 1) / 2}}) {
      if (hi <= lo) continue;
      const auto base = leaves(n, 64);
      const std::vector<TreeNode> nodes = tree_pieces(n, lo, hi);
      // The canonical bits: tree_reduce over each piece.
      std::vector<std::vector<float>> want = base;
      for (const TreeNode& p : nodes) tree_reduce(want, p.lo, p.hi, 64, 1);
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<std::vector<float>> bufs = base;
        std::vector<TreeNode> rel;
        for (const TreeNode& p : nodes) rel.push_back({p.lo - lo, p.hi - lo});
        TreeStream stream(rel);
        std::vector<int64_t> order(size_t(hi - lo));
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), gen);
        // Leaf i's value in buffer lo + i; merged-away buffers are poisoned to catch a reuse.
        for (int64_t i : order)
          stream.arrive(i, size_t(lo + i), [&](size_t into, size_t from) {
            for (size_t j = 0; j < 64; ++j) bufs[into][j] += bufs[from][j];
            std::fill(bufs[from].begin(), bufs[from].end(), std::nanf(""));
          });
        for (size_t k = 0; k < nodes.size(); ++k)
          EXPECT_TRUE(bufs[stream.piece_slot(k)] == want[size_t(nodes[k].lo)])
              << "n " << n << " piece [" << nodes[k].lo << ", " << nodes[k].hi << ")";
      }
    }
  }
}

TEST(TreeStream, ConcurrentArrivalsGiveTheCanonicalBits) {
  const int64_t n = 16, len = 4096;
  const auto base = leaves(n, len);
  std::vector<std::vector<float>> want = base;
  tree_reduce(want, 0, n, len, 1);
  for (int trial = 0; trial < 10; ++trial) {
    std::vector<std::vector<float>> bufs = base;
    TreeStream stream({{0, n}});
    std::vector<std::thread> pool;
    for (int w = 0; w < 4; ++w)
      pool.emplace_back([&, w] {
        for (int64_t i = w; i < n; i += 4)
          stream.arrive(i, size_t(i), [&](size_t into, size_t from) {
            for (int64_t j = 0; j < len; ++j) bufs[into][size_t(j)] += bufs[from][size_t(j)];
          });
      });
    for (auto& t : pool) t.join();
    EXPECT_TRUE(bufs[stream.piece_slot(0)] == want[0]) << "trial " << trial;
  }
}

TEST(TreeStream, RefusesALeafTwiceAndAnUnfinishedPiece) {
  TreeStream stream({{0, 4}});
  const auto none = [](size_t, size_t) {};
  stream.arrive(0, 0, none);
  EXPECT_THROW(stream.arrive(0, 1, none), std::logic_error);
  EXPECT_THROW(stream.piece_slot(0), std::logic_error);
}

// The most nodes held while leaves arrive in order, before each starts: a binary counter's
// set bits over the canonical tree, per piece, plus the pieces already done.
TEST(TreeStream, InOrderHeldMaxCountsTheDoneNodesBeforeALeaf) {
  const std::pair<int64_t, int64_t> want[] = {{1, 0}, {2, 1}, {3, 1},  {4, 2},  {5, 2},
                                              {7, 2}, {8, 3}, {12, 3}, {16, 4}, {32, 5}};
  for (auto [n, held] : want) EXPECT_EQ(TreeStream({{0, n}}).in_order_held_max(), held) << n;
  // [1, 8) of 8: pieces [1,2), [2,4), [4,8); before leaf 7: [1,2), [2,4), [4,6), [6,7).
  std::vector<TreeNode> rel;
  for (const TreeNode& p : tree_pieces(8, 1, 8)) rel.push_back({p.lo - 1, p.hi - 1});
  EXPECT_EQ(TreeStream(rel).in_order_held_max(), 4);
}

// 8 micro-batches on 2 threads hold at most 3 + 1 gradient buffers, even when micro-batch 3
// is slow and the other thread could run on through 4, 5, 6 (which once took a fifth and a
// sixth); the gradient keeps its bits.
TEST(GradEngine, HoldsAtMostItsCapOfBuffersWhenAMicroBatchIsSlow) {
  const JobConfig job = tests::tiny_test_job({"model.engram_layers=[]", "model.n_layers=2"});
  const ParamTable table(job.model);
  std::vector<float> params(size_t(table.total()));
  init_params(table, 7, params.data());
  const Batch batch = tests::random_batch(job.model, 8, 3);
  GradEngine<float> even(job.model, table, 2), skewed(job.model, table, 2);
  skewed.set_head_losses([](int64_t mb) -> HeadLoss<float>* {
    if (mb == 3) std::this_thread::sleep_for(std::chrono::milliseconds(400));
    return nullptr;  // cross-entropy
  });
  even.run(params.data(), batch, 1, true, true);
  skewed.run(params.data(), batch, 1, true, true);
  EXPECT_LE(even.grad_buffers(), 4u);
  EXPECT_LE(skewed.grad_buffers(), 4u);
  EXPECT_TRUE(even.grad() == skewed.grad());
}

}  // namespace
}  // namespace troupe::model
