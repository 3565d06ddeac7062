// The Engram cold tier (issue 16): a shard's tables in a host cache of a few rows over
// RocksDB must give the bits of the same tables in memory — lookups, updates, undo, whole
// tables — whatever the cache holds; and it says so when it cannot open its directory.
#include "storage/engram_tier.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "model/rng.h"
#include "tests/storage/storage_test_dir.h"
#include "tests/tiny_test_job.h"

namespace troupe::storage {
namespace {

model::JobConfig job() {
  return tests::tiny_test_job({"model.engram_layers=[1]", "model.engram_table_rows=211"});
}

// A directory of the test's own (storage_test_dir.h: removed when the test passes).
std::string scratch(const std::string& name) {
  const auto dir = std::filesystem::path(fresh_test_dir()) / name;
  std::filesystem::create_directories(dir);
  return dir.string();
}

// A step's sparse gradient: rows drawn from `draw`, ascending and unique, on held tables.
model::EngramGrad<float> some_grad(const std::vector<model::EngramTableInfo>& info,
                                   const std::vector<bool>& held, uint64_t draw) {
  model::EngramGrad<float> g(info.size());
  model::CounterRng rng(draw, 7);
  for (size_t t = 0; t < info.size(); ++t) {
    if (!held[t]) continue;
    for (int64_t id = int64_t(draw % 5); id < info[t].rows; id += 3 + int64_t(draw % 4)) {
      g[t].ids.push_back(id);
      for (int64_t d = 0; d < info[t].dim; ++d)
        g[t].values.push_back(float(rng.normal(uint64_t(id * info[t].dim + d))));
    }
  }
  return g;
}

TEST(EngramTier, ACacheOfAFewRowsGivesTheBitsOfTablesInMemory) {
  const model::JobConfig cfg = job();
  const auto info = model::engram_tables(cfg.model);
  const std::vector<bool> held = model::engram_tables_of_shard(int64_t(info.size()), 2, 1);
  model::MemoryShardTables mem(cfg.model, cfg.train.seed, held);
  const int64_t row_bytes = 3 * cfg.model.engram_head_dim * 4;
  TieredShardTables tier(cfg.model, cfg.train.seed, held, scratch("bits"), 50 * row_bytes);
  for (int64_t step = 0; step < 4; ++step) {
    const model::EngramGrad<float> g = some_grad(info, held, uint64_t(step + 1));
    model::EngramAdamStep s;
    s.lr = 1e-2, s.step = step, s.grad_scale = 0.5;
    const auto b_mem = mem.backup_rows(g);
    const auto b_tier = tier.backup_rows(g);
    EXPECT_EQ(b_tier.values, b_mem.values);
    mem.apply(g, s), tier.apply(g, s);
    if (step == 2) {  // an aborted step taken back
      mem.restore_rows(b_mem), tier.restore_rows(b_tier);
      mem.apply(g, s), tier.apply(g, s);
    }
  }
  for (size_t t = 0; t < info.size(); ++t) {
    if (!held[t]) continue;
    for (int part = 0; part < 3; ++part)
      EXPECT_EQ(tier.read_table(int64_t(t), part), mem.read_table(int64_t(t), part))
          << info[t].name << " part " << part;
    std::vector<int64_t> ids = {0, 5, info[t].rows - 1, 5};
    std::vector<float> a(ids.size() * size_t(info[t].dim)), b(a.size());
    mem.lookup(int64_t(t), ids.data(), int64_t(ids.size()), a.data());
    tier.lookup(int64_t(t), ids.data(), int64_t(ids.size()), b.data());
    EXPECT_EQ(a, b);
  }
  const auto& st = tier.stats();
  EXPECT_EQ(st.capacity_rows, 50);
  EXPECT_LE(st.cached_rows, 50);
  EXPECT_GT(st.cold_reads, 0);  // rows came back from RocksDB
  EXPECT_GT(st.rows_written, 0);
}

// One lookup of more rows than the cache holds, ids repeated, some updated and evicted to
// RocksDB: every place gets its row (the misses read in one MultiGet, duplicates once).
TEST(EngramTier, ALookupLargerThanTheCacheFillsEveryPlace) {
  const model::JobConfig cfg = job();
  const auto info = model::engram_tables(cfg.model);
  const std::vector<bool> held(info.size(), true);
  model::MemoryShardTables mem(cfg.model, cfg.train.seed, held);
  const int64_t row_bytes = 3 * cfg.model.engram_head_dim * 4;
  TieredShardTables tier(cfg.model, cfg.train.seed, held, scratch("big"), 3 * row_bytes);
  const model::EngramGrad<float> g = some_grad(info, held, 3);
  model::EngramAdamStep s;
  s.lr = 1e-2, s.step = 0, s.grad_scale = 1;
  mem.apply(g, s), tier.apply(g, s);
  const std::vector<int64_t> ids = {7, 3, 7, 0, 11, 3, 15, 200, 0, 7, 42, 3};
  std::vector<float> a(ids.size() * size_t(info[0].dim)), b(a.size());
  for (int64_t t = 0; t < int64_t(info.size()); ++t) {
    mem.lookup(t, ids.data(), int64_t(ids.size()), a.data());
    tier.lookup(t, ids.data(), int64_t(ids.size()), b.data());
    EXPECT_EQ(a, b) << info[size_t(t)].name;
  }
  EXPECT_LE(tier.stats().cached_rows, 3);
  EXPECT_GT(tier.stats().cold_reads, 0);
}

TEST(EngramTier, WriteTableThenReadBackAndRefusals) {
  const model::JobConfig cfg = job();
  const auto info = model::engram_tables(cfg.model);
  const std::vector<bool> held = model::engram_tables_of_shard(int64_t(info.size()), 2, 0);
  TieredShardTables tier(cfg.model, cfg.train.seed, held, scratch("write"), 4096);
  std::vector<float> m(size_t(info[0].rows * info[0].dim));
  for (size_t i = 0; i < m.size(); ++i) m[i] = float(i) * 0.5f;
  tier.write_table(0, 1, m);
  EXPECT_EQ(tier.read_table(0, 1), m);
  EXPECT_THROW(tier.read_table(1, 0), std::out_of_range);  // shard 1's
  EXPECT_THROW(tier.write_table(0, 0, {1.f}), std::invalid_argument);
  float row[64];
  const int64_t bad = info[0].rows;
  EXPECT_THROW(tier.lookup(0, &bad, 1, row), std::out_of_range);
  EXPECT_THROW(TieredShardTables(cfg.model, cfg.train.seed, held, "/refused/before/opening", 10),
               std::invalid_argument);
  EXPECT_THROW(TieredShardTables(cfg.model, cfg.train.seed, held, "/proc/no/such/dir", 4096),
               std::runtime_error);
}

}  // namespace
}  // namespace troupe::storage
