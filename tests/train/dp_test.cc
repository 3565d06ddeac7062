// Data parallelism inside one process: W simulated workers split step s's micro-batches
// and the tensors, exchange pieces and slices as the worker actors do, and must end with
// train_step's bits — loss, grad norm and weights — for every W.
#include <gtest/gtest.h>

#include "config/config_parse.h"
#include "tests/tiny_test_job.h"
#include "train/dp_plan.h"
#include "train/step_rules.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

JobConfig small_job(const std::string& optimizer, bool engram = false, bool mixed = false) {
  // 6 micro-batches: 5 workers get uneven shares.
  JobConfig cfg = tests::tiny_test_job(
      {"train.batch_size=12", "train.threads=1", "optimizer.name=" + optimizer});
  if (mixed) {  // 6 micro-batches of one row of 64 tokens: whole documents up to 48 tokens
    cfg.data.mode = DataMode::mixed;
    cfg.data.max_doc_tokens = 48;
  }
  if (engram) {
    cfg.model.engram_layers = {1};
    cfg.model.engram_table_rows = 211;  // small tables: the steps touch rows more than once
  }
  return cfg;
}

TEST(DpPlan, RangesAndOwnersCoverEverythingContiguously) {
  for (int64_t w = 1; w <= 5; ++w) {
    const auto r = plan_ranges(7, w);
    ASSERT_EQ(r.size(), size_t(w));
    EXPECT_EQ(r.front().lo, 0);
    EXPECT_EQ(r.back().hi, 7);
    for (size_t i = 1; i < r.size(); ++i) EXPECT_EQ(r[i].lo, r[i - 1].hi);
  }
  const ParamTable table(small_job("adamw").model);
  for (int64_t w = 1; w <= 5; ++w) {
    const auto o = plan_owners(table, w);
    ASSERT_EQ(o.size(), size_t(w));
    EXPECT_EQ(o.front().lo, 0);
    EXPECT_EQ(o.back().hi, table.total());
    for (const ParamInfo& p : table.all()) {
      int covering = 0;
      for (const FlatRange& f : o) covering += f.covers(p) ? 1 : 0;
      EXPECT_EQ(covering, 1) << p.name << " with " << w << " workers";
    }
  }
}

TEST(DpPlan, TreePiecesAreMaximalAlignedNodes) {
  EXPECT_EQ(tree_pieces(8, 0, 3), (std::vector<TreeNode>{{0, 2}, {2, 3}}));
  EXPECT_EQ(tree_pieces(8, 3, 6), (std::vector<TreeNode>{{3, 4}, {4, 6}}));
  EXPECT_EQ(tree_pieces(8, 0, 8), (std::vector<TreeNode>{{0, 8}}));
  EXPECT_EQ(tree_pieces(6, 4, 6), (std::vector<TreeNode>{{4, 6}}));
  EXPECT_TRUE(tree_pieces(6, 3, 3).empty());
}

TEST(DpPlan, PullPiecesAreAlignedNodesCoveringTheStep) {
  EXPECT_EQ(plan_pull_pieces(8, 1, 4), (std::vector<TreeNode>{{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  EXPECT_EQ(plan_pull_pieces(8, 3, 4).size(), 8u);  // fewer micro-batches than 12: one each
  EXPECT_EQ(plan_pull_pieces(7, 1, 2), (std::vector<TreeNode>{{0, 4}, {4, 7}}));
  EXPECT_EQ(plan_pull_pieces(7, 1, 3), (std::vector<TreeNode>{{0, 2}, {2, 4}, {4, 6}, {6, 7}}));
  EXPECT_EQ(plan_pull_pieces(12, 1, 3), (std::vector<TreeNode>{{0, 4}, {4, 8}, {8, 12}}));
  for (int64_t n : {1, 5, 6, 12, 16, 33})
    for (int64_t w = 1; w <= 5; ++w) {
      const auto p = plan_pull_pieces(n, w, 4);
      EXPECT_EQ(check_cover(p, n), "") << n << " micro-batches, " << w << " workers";
      EXPECT_GE(int64_t(p.size()), std::min(n, 4 * w)) << n << " micro-batches, " << w;
      for (const TreeNode& node : p)  // a maximal node of itself: a canonical tree node
        EXPECT_EQ(tree_pieces(n, node.lo, node.hi), std::vector<TreeNode>{node});
    }
  EXPECT_EQ(pull_order({{0, 4}, {4, 6}, {6, 7}, {8, 12}}),
            (std::vector<TreeNode>{{0, 4}, {8, 12}, {4, 6}, {6, 7}}));
  EXPECT_THROW(plan_pull_pieces(8, 0, 4), std::invalid_argument);
  EXPECT_THROW(plan_pull_pieces(8, 2, 0), std::invalid_argument);
}

TEST(StepRules, IdleFractionIsTheWorkersShareOfTheWallNotComputing) {
  EXPECT_DOUBLE_EQ(idle_fraction({500, 1000}, 1.0), 0.25);
  EXPECT_DOUBLE_EQ(idle_fraction({1000, 1000}, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(idle_fraction({3000}, 1.0), 0.0);  // clamped: clocks of other processes
  EXPECT_EQ(idle_fraction({}, 1.0), -1);
  EXPECT_EQ(idle_fraction({100}, 0.0), -1);
}

// Which micro-batches each simulated worker computes: the static split's contiguous ranges,
// or (pulled) the pull pieces in pull_order dealt round-robin, computed one after another.
std::vector<std::vector<TreeNode>> assignment(int64_t n_mb, int64_t W, bool pulled) {
  std::vector<std::vector<TreeNode>> out(static_cast<size_t>(W));
  if (!pulled) {
    const auto ranges = plan_ranges(n_mb, W);
    for (int64_t w = 0; w < W; ++w)
      if (ranges[w].lo < ranges[w].hi) out[w].push_back(ranges[w]);
    return out;
  }
  const auto order = pull_order(plan_pull_pieces(n_mb, W, 2));
  for (size_t i = 0; i < order.size(); ++i) out[(i * 7 + 3) % size_t(W)].push_back(order[i]);
  return out;
}

// One step across W simulated workers, following the worker protocol; the step's decision
// (loss, grad norm, clip scale, expert counts) is decide_step's, as the coordinator's is.
StepStats dp_step(std::vector<std::unique_ptr<Trainer>>& workers, int64_t step,
                  bool pulled = false) {
  const int64_t W = int64_t(workers.size());
  const Trainer& t0 = *workers[0];
  const auto shares = assignment(t0.micro_batches(), W, pulled);
  const auto owners = plan_owners(t0.table, W);
  StepReports reports;
  reports.step = step;
  reports.micro_batches = t0.micro_batches();
  // Every worker computes its pieces; keep copies of the gradients (the "messages").
  std::vector<Piece<float>>& pieces = reports.pieces;
  std::vector<std::vector<float>> grads;
  std::vector<EngramGrad<float>> egrads;
  for (int64_t w = 0; w < W; ++w) {
    if (shares[w].empty()) continue;
    // A pulling worker's earlier pieces must stay valid while it computes later ones: their
    // gradients are read only after the last.
    for (size_t i = 0; i < shares[w].size(); ++i)
      workers[w]->compute_range(step, shares[w][i], i > 0);
    const auto& ps = workers[w]->computed_pieces();
    for (size_t k = 0; k < ps.size(); ++k) {
      pieces.push_back(ps[k]);
      const float* g = workers[w]->piece_grad(k);
      grads.emplace_back(g, g + t0.table.total());
      if (t0.engram()) egrads.push_back(workers[w]->piece_engram_grad(k));
    }
  }
  // Engram: every worker reduces every piece's table gradient (pieces in reverse order).
  for (int64_t w = 0; w < W && t0.engram(); ++w) {
    std::vector<TreeNode> nodes;
    std::vector<const EngramGrad<float>*> eg;
    for (size_t i = pieces.size(); i-- > 0;) {
      nodes.push_back(pieces[i].node);
      eg.push_back(&egrads[i]);
    }
    reports.engram_sumsq.push_back(workers[w]->reduce_engram(nodes, eg));
  }
  // Owners reduce their slices (pieces given in reverse order: order must not matter).
  for (int64_t w = 0; w < W; ++w) {
    std::vector<TreeNode> nodes;
    std::vector<const float*> slices;
    for (size_t i = pieces.size(); i-- > 0;) {
      nodes.push_back(pieces[i].node);
      slices.push_back(grads[i].data() + owners[w].lo);
    }
    reports.norm_parts.push_back(workers[w]->reduce_owned(owners[w], nodes, slices));
  }
  const StepDecision d = decide_step(t0.cfg, reports);
  EXPECT_EQ(d.error, "");  // every worker reduced the same Engram gradient
  for (int64_t w = 0; w < W; ++w) {
    workers[w]->apply_owned(owners[w], step, d.clip_scale, d.counts);
    if (t0.engram()) workers[w]->apply_engram(step, d.clip_scale);
  }
  // Gather: every owner's slice to every worker.
  for (int64_t w = 0; w < W; ++w)
    for (int64_t o = 0; o < W; ++o)
      if (o != w)
        std::copy(workers[o]->params.begin() + owners[o].lo,
                  workers[o]->params.begin() + owners[o].hi,
                  workers[w]->params.begin() + owners[o].lo);
  return d.stats;
}

void expect_dp_matches_single(const std::string& optimizer, bool engram = false, bool mixed = false,
                              bool pulled = false) {
  Trainer single(small_job(optimizer, engram, mixed));
  std::vector<StepStats> ref;
  for (int64_t s = 0; s < 3; ++s) ref.push_back(single.train_step(s));
  for (int64_t W : {1, 2, 3, 4, 5}) {
    std::vector<std::unique_ptr<Trainer>> workers;
    for (int64_t w = 0; w < W; ++w)
      workers.push_back(std::make_unique<Trainer>(small_job(optimizer, engram, mixed)));
    for (int64_t s = 0; s < 3; ++s) {
      const StepStats st = dp_step(workers, s, pulled);
      EXPECT_EQ(st.loss, ref[s].loss) << W << " workers, step " << s;
      EXPECT_EQ(st.grad_norm, ref[s].grad_norm) << W << " workers, step " << s;
    }
    for (int64_t w = 0; w < W; ++w)
      EXPECT_EQ(workers[w]->weights_hash(), single.weights_hash()) << W << " workers, worker " << w;
  }
}

TEST(DataParallel, AdamWBitsMatchTrainStepForOneToFiveWorkers) {
  expect_dp_matches_single("adamw");
}
TEST(DataParallel, PulledPiecesGiveTrainStepBitsForOneToFiveWorkers) {
  expect_dp_matches_single("adamw", false, false, true);
  expect_dp_matches_single("muon", true, true, true);  // Engram and mixed-length rows too
}

TEST(DataParallel, MuonBitsMatchTrainStepForOneToFiveWorkers) {
  expect_dp_matches_single("muon");
}

TEST(DataParallel, ValidationPiecesCombineToValidate) {
  Trainer t(small_job("adamw"));
  const double whole = t.validate();
  const int64_t n = t.val_micro_batches();
  std::vector<Piece<float>> pieces;
  for (const TreeNode& r : plan_ranges(n, 3))
    if (r.lo < r.hi)
      for (const auto& p : t.validate_range(r)) pieces.push_back(p);
  EXPECT_EQ(validation_loss(pieces), whole);  // the coordinator's rule
}

TEST(DataParallel, MissingPieceIsAnError) {
  std::vector<Piece<float>> pieces(1);
  pieces[0].node = {0, 2};
  EXPECT_THROW(combine_pieces(pieces, 4, nullptr), std::invalid_argument);
}

TEST(DataParallel, EngramBitsMatchTrainStepForOneToFiveWorkers) {
  expect_dp_matches_single("adamw", true);
}

// Mixed-length mode (data/mixed_batch.h): every worker builds the same planned micro-batch
// for an id, so any split gives train_step's bits.
TEST(DataParallel, MixedModeBitsMatchTrainStepForOneToFiveWorkers) {
  expect_dp_matches_single("muon", true, true);
}

// Recovery returns to the version before the step in flight: the dense weights, the
// optimizer, and the Engram rows (values and moments) that the step's update changed.
TEST(DataParallel, RestoreVersionUndoesAnEngramUpdate) {
  Trainer single(small_job("adamw", true));
  for (int64_t s = 0; s < 3; ++s) single.train_step(s);
  std::vector<std::unique_ptr<Trainer>> workers;
  for (int w = 0; w < 2; ++w)
    workers.push_back(std::make_unique<Trainer>(small_job("adamw", true)));
  for (int64_t s = 0; s < 3; ++s) {
    std::vector<uint64_t> before;
    for (auto& w : workers) {
      before.push_back(w->weights_hash());
      w->save_version();
    }
    if (s == 1) {  // the step runs, is undone on both workers, and runs again
      dp_step(workers, s);
      for (size_t w = 0; w < workers.size(); ++w) {
        EXPECT_NE(workers[w]->weights_hash(), before[w]);
        workers[w]->restore_version();
        EXPECT_EQ(workers[w]->weights_hash(), before[w]) << "worker " << w;
      }
    }
    dp_step(workers, s);
  }
  for (auto& w : workers) EXPECT_EQ(w->weights_hash(), single.weights_hash());
}

TEST(DataParallel, EngramPieceMissingIsAnError) {
  Trainer t(small_job("adamw", true));
  const auto& ps = t.compute_range(0, {0, 2});
  ASSERT_EQ(ps.size(), 1u);
  const EngramGrad<float> g = t.piece_engram_grad(0);
  EXPECT_THROW(t.reduce_engram({ps[0].node}, {&g}), std::invalid_argument);
}

}  // namespace
}  // namespace troupe::model
