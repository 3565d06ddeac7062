#pragma once
// The Engram update outside the trainer: its sparse Adam step, the tree reduction of the
// pieces' sparse gradients, and EngramShare, an engram_shard's tables with their update
// (actors/engram_shard.cc). A shard holds whole tables: each table's Σ g² is one sequential
// sum over its rows (engram_table_sumsq), so the global norm summed table by table from the
// shards' parts is bitwise the one process's (engram_grad_sumsq). Pure computation.
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "model/engram.h"
#include "train/train_config.h"
#include "train/tree.h"

namespace troupe::model {

// SPEC §4: sparse Adam on the touched rows at lr × 5, no weight decay, the optimizer's betas
// and eps, the step's global clip scale.
EngramAdamStep engram_adam_step(const TrainJobConfig& cfg, int64_t step, double clip_scale);

// The pieces covering micro-batches [0, n_mb) (nodes in any order; grads[i] belongs to
// nodes[i]) combined in canonical tree order, rowwise per table (sparse_rows_add): the bits
// of one process's reduction. Throws std::invalid_argument naming what does not fit.
EngramGrad<float> reduce_engram_pieces(const std::vector<EngramTableInfo>& tables, int64_t n_mb,
                                       const std::vector<TreeNode>& nodes,
                                       const std::vector<const EngramGrad<float>*>& grads);

// The tables t with owner_of_table(t) == shard: table t belongs to shard t mod shards.
std::vector<bool> engram_tables_of_shard(int64_t tables, int64_t shards, int64_t shard);
inline int64_t engram_shard_of_table(int64_t table, int64_t shards) {
  return table % shards;
}

// Where a shard keeps its tables (those it holds; the others throw std::out_of_range): all
// in host memory (MemoryShardTables), or a bounded host cache over a RocksDB cold tier
// (storage/engram_tier.h). Rows are read and updated one at a time through the same
// EngramAdamRow, so every kind gives the same bits.
class ShardTables {
 public:
  virtual ~ShardTables() = default;
  virtual const std::vector<EngramTableInfo>& tables() const = 0;
  virtual bool held(int64_t table) const = 0;
  // out (n, D) <- rows ids of `table` (a cold tier loads its misses).
  virtual void lookup(int64_t table, const int64_t* ids, int64_t n, float* out) = 0;
  virtual void apply(const EngramGrad<float>& grad, const EngramAdamStep& s) = 0;
  virtual EngramRowsBackup<float> backup_rows(const EngramGrad<float>& grad) = 0;
  virtual void restore_rows(const EngramRowsBackup<float>& b) = 0;
  // A whole held table's values (part 0), m (1) or v (2); and the same set wholesale.
  virtual std::vector<float> read_table(int64_t table, int part) = 0;
  virtual void write_table(int64_t table, int part, const std::vector<float>& data) = 0;
};

// Every held table in host memory (InProcessEngramStore).
class MemoryShardTables final : public ShardTables {
 public:
  MemoryShardTables(const ModelConfig& cfg, uint64_t seed, const std::vector<bool>& held)
      : store_(cfg, seed, held) {}
  const std::vector<EngramTableInfo>& tables() const override { return store_.tables(); }
  bool held(int64_t table) const override { return store_.held(table); }
  void lookup(int64_t table, const int64_t* ids, int64_t n, float* out) override {
    store_.lookup(table, ids, n, out);
  }
  void apply(const EngramGrad<float>& grad, const EngramAdamStep& s) override {
    store_.apply(grad, s);
  }
  EngramRowsBackup<float> backup_rows(const EngramGrad<float>& grad) override {
    return store_.backup_rows(grad);
  }
  void restore_rows(const EngramRowsBackup<float>& b) override { store_.restore_rows(b); }
  std::vector<float> read_table(int64_t table, int part) override;
  void write_table(int64_t table, int part, const std::vector<float>& data) override;

 private:
  InProcessEngramStore<float> store_;
};

// One shard's tables and their update. version() is the number of train steps applied; the
// rows the last update changed are kept (as they were) until undo() or the next update, so
// a step that a recovery aborts after this shard applied it can be taken back.
class EngramShare {
 public:
  // Tables in host memory, or in `tables` (holding the same tables as `held` says).
  EngramShare(const TrainJobConfig& cfg, std::vector<bool> held,
              std::unique_ptr<ShardTables> tables = nullptr);

  ShardTables& tables() { return *tables_; }
  const ShardTables& tables() const { return *tables_; }
  int64_t version() const { return version_; }
  // Reduces the step's pieces (rows of tables held here only: std::invalid_argument else)
  // and returns each table's Σ g² (engram_table_sumsq; 0 for a table not held).
  std::vector<double> reduce(const std::vector<TreeNode>& nodes,
                             const std::vector<const EngramGrad<float>*>& grads);
  bool reduced() const { return reduced_.has_value(); }
  // Train step `step` (== version(); std::logic_error else, or without reduce) applied.
  void apply(int64_t step, double clip_scale);
  // Back to version() − 1 (std::logic_error when the last update is not kept).
  void undo();
  bool can_undo() const { return backup_.has_value(); }
  // Forgets a reduction not applied (its step was aborted).
  void drop_reduced() { reduced_.reset(); }
  // Becomes `version` with the state another holder of the same tables sent: per table
  // held, in table order, its values, m and v (std::invalid_argument naming a table of the
  // wrong size, and nothing changes). No update is kept, no reduction pending.
  void install(int64_t version, const std::vector<std::vector<float>>& values,
               const std::vector<std::vector<float>>& m, const std::vector<std::vector<float>>& v);
  // The held tables, in table order.
  std::vector<int64_t> held_tables() const;

 private:
  TrainJobConfig cfg_;
  std::vector<bool> held_;
  std::unique_ptr<ShardTables> tables_;
  int64_t version_ = 0;
  std::optional<EngramGrad<float>> reduced_;
  std::optional<EngramRowsBackup<float>> backup_;
};

}  // namespace troupe::model
