// Engram tables on shards (issue 16) without the network: a trainer reading its tables
// through K EngramShares (table t on share t mod K), the pieces' sparse gradients split by
// table, each share reducing and updating its own, the norm summed table by table — must
// give train_step's loss, grad norm, weights and tables, bit for bit, for every K.
#include "train/engram_share.h"

#include <gtest/gtest.h>

#include "tests/tiny_test_job.h"
#include "train/dp_plan.h"
#include "train/step_rules.h"
#include "train/trainer.h"

namespace troupe::model {
namespace {

JobConfig engram_job() {
  JobConfig cfg = tests::tiny_test_job({"train.batch_size=12", "train.threads=1"});
  cfg.model.engram_layers = {1};
  cfg.model.engram_table_rows = 211;  // small tables: the steps touch rows more than once
  return cfg;
}

// The trainer's view of the shares: each table read from the share that holds it.
class Shares final : public EngramStore<float> {
 public:
  Shares(const JobConfig& cfg, int64_t K) {
    const auto T = int64_t(engram_tables(cfg.model).size());
    for (int64_t k = 0; k < K; ++k)
      shares.push_back(std::make_unique<EngramShare>(cfg, engram_tables_of_shard(T, K, k)));
  }
  const std::vector<EngramTableInfo>& tables() const override {
    return shares[0]->tables().tables();
  }
  void lookup(int64_t table, const int64_t* ids, int64_t n, float* out) const override {
    of(table).tables().lookup(table, ids, n, out);
  }
  void apply(const EngramGrad<float>&, const EngramAdamStep&) override { FAIL(); }
  EngramShare& of(int64_t table) const {
    return *shares[size_t(engram_shard_of_table(table, int64_t(shares.size())))];
  }
  std::vector<std::vector<float>> all_tables() const {
    std::vector<std::vector<float>> out;
    for (size_t t = 0; t < tables().size(); ++t) {
      out.push_back(of(int64_t(t)).tables().read_table(int64_t(t), 0));
    }
    return out;
  }
  std::vector<std::unique_ptr<EngramShare>> shares;
};

// One step of one worker whose tables are on the shares.
StepStats sharded_step(Trainer& t, Shares& sh, int64_t step) {
  const TreeNode all{0, t.micro_batches()};
  const auto& pieces = t.compute_range(step, all);
  StepReports r;
  r.step = step, r.micro_batches = t.micro_batches();
  r.pieces = pieces;
  std::vector<TreeNode> nodes;
  std::vector<const float*> slices;
  for (size_t k = 0; k < pieces.size(); ++k)
    nodes.push_back(pieces[k].node), slices.push_back(t.piece_grad(k));
  const FlatRange owned{0, t.table.total()};
  r.norm_parts.push_back(t.reduce_owned(owned, nodes, slices));
  const auto K = int64_t(sh.shares.size());
  std::vector<std::vector<double>> parts;
  for (int64_t k = 0; k < K; ++k) {  // each share gets the rows of its tables alone
    std::vector<EngramGrad<float>> mine;
    for (size_t p = 0; p < pieces.size(); ++p) {
      mine.emplace_back(t.piece_engram_grad(p).size());
      for (size_t tb = 0; tb < mine.back().size(); ++tb)
        if (engram_shard_of_table(int64_t(tb), K) == k)
          mine.back()[tb] = t.piece_engram_grad(p)[tb];
    }
    std::vector<const EngramGrad<float>*> grads;
    for (const auto& g : mine) grads.push_back(&g);
    parts.push_back(sh.shares[size_t(k)]->reduce(nodes, grads));
  }
  double sumsq = 0;
  for (size_t tb = 0; tb < sh.tables().size(); ++tb)
    sumsq += parts[size_t(engram_shard_of_table(int64_t(tb), K))][tb];
  r.engram_sumsq = {sumsq};
  const StepDecision d = decide_step(t.cfg, r);
  EXPECT_EQ(d.error, "");
  t.apply_owned(owned, step, d.clip_scale, d.counts);
  for (auto& s : sh.shares) s->apply(step, d.clip_scale);
  return d.stats;
}

TEST(EngramShare, ShardedTablesGiveTrainStepBitsForOneToThreeShards) {
  Trainer single(engram_job());
  std::vector<StepStats> ref;
  for (int64_t s = 0; s < 3; ++s) ref.push_back(single.train_step(s));
  for (int64_t K : {1, 2, 3}) {
    Shares sh(engram_job(), K);
    Trainer t(engram_job(), &sh);
    ASSERT_EQ(t.engram(), nullptr);
    for (int64_t s = 0; s < 3; ++s) {
      const StepStats st = sharded_step(t, sh, s);
      EXPECT_EQ(st.loss, ref[size_t(s)].loss) << K << " shards, step " << s;
      EXPECT_EQ(st.grad_norm, ref[size_t(s)].grad_norm) << K << " shards, step " << s;
    }
    EXPECT_EQ(weights_hash_of(t.params, sh.all_tables()), single.weights_hash()) << K << " shards";
    for (const auto& s : sh.shares) EXPECT_EQ(s->version(), 3);
  }
}

TEST(EngramShare, UndoReturnsToTheVersionBefore) {
  Shares sh(engram_job(), 2);
  Trainer t(engram_job(), &sh);
  sharded_step(t, sh, 0);
  const auto before = sh.all_tables();
  sharded_step(t, sh, 1);
  EXPECT_NE(sh.all_tables(), before);
  for (auto& s : sh.shares) {
    ASSERT_TRUE(s->can_undo());
    s->undo();
    EXPECT_EQ(s->version(), 1);
    EXPECT_FALSE(s->can_undo());
    EXPECT_THROW(s->undo(), std::logic_error);
  }
  EXPECT_EQ(sh.all_tables(), before);
}

TEST(EngramShare, InstallMakesANewHolderEqualToTheSurvivor) {
  Shares sh(engram_job(), 2);
  Trainer t(engram_job(), &sh);
  for (int64_t s = 0; s < 2; ++s) sharded_step(t, sh, s);
  EngramShare& from = *sh.shares[1];
  const auto T = int64_t(engram_tables(engram_job().model).size());
  EngramShare fresh(engram_job(), engram_tables_of_shard(T, 2, 1));
  std::vector<std::vector<float>> values, m, v;
  for (int64_t tb : from.held_tables()) {
    values.push_back(from.tables().read_table(tb, 0));
    m.push_back(from.tables().read_table(tb, 1)), v.push_back(from.tables().read_table(tb, 2));
  }
  EXPECT_THROW(fresh.install(2, {values[0]}, {m[0]}, {v[0]}), std::invalid_argument);
  fresh.install(2, values, m, v);
  EXPECT_EQ(fresh.version(), 2);
  EXPECT_FALSE(fresh.can_undo());
  for (int64_t tb : from.held_tables())
    for (int part = 0; part < 3; ++part)
      EXPECT_EQ(fresh.tables().read_table(tb, part), from.tables().read_table(tb, part));
}

TEST(EngramShare, RefusesRowsOfTablesHeldElsewhereAndStepsOutOfOrder) {
  const JobConfig cfg = engram_job();
  const auto T = int64_t(engram_tables(cfg.model).size());
  EngramShare s(cfg, engram_tables_of_shard(T, 2, 0));
  EngramGrad<float> g(static_cast<size_t>(T));
  g[1].ids = {3};  // table 1 is shard 1's
  g[1].values.assign(size_t(cfg.model.engram_head_dim), 1.f);
  const int64_t n = cfg.train.batch_size / cfg.train.micro_batch_rows;
  EXPECT_THROW(s.reduce({{0, n}}, {&g}), std::invalid_argument);
  EXPECT_THROW(s.apply(0, 1.0), std::logic_error);  // nothing reduced
  float row[64];
  const int64_t id = 3;
  EXPECT_THROW(s.tables().lookup(1, &id, 1, row), std::out_of_range);
  EngramGrad<float> none(static_cast<size_t>(T));
  s.reduce({{0, n}}, {&none});
  EXPECT_THROW(s.apply(1, 1.0), std::logic_error);  // version 0 takes step 0
  s.apply(0, 1.0);
  EXPECT_EQ(s.version(), 1);
}

}  // namespace
}  // namespace troupe::model
