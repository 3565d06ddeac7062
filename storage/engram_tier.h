#pragma once
// An engram_shard's tables in a bounded host cache over a RocksDB cold tier (issue 16,
// `[engram] host_cache_bytes`). A row is its table's fresh value (made from the seed on
// demand: engram_initial_row) with zero moments until it is first updated; from then on its
// values and moments live in the cold tier, so a table far larger than the cache costs no
// write up front. A lookup loads its misses into the cache — a shard gets a step's lookups
// (the workers' prefetch) before the forward needs them, so the loads are ahead of need —
// and an update changes the rows in the cache and marks them dirty. Beyond host_cache_bytes
// the least recently used rows are written back (dirty ones) and dropped. Rows are updated
// one at a time through EngramAdamRow: the bits of MemoryShardTables, whatever the cache
// size. RocksDB's own buffers and block cache are bounded in proportion (a quarter of
// host_cache_bytes each, 1 MiB at least; Bloom filters inside it). Every access — a lookup,
// an update, a backup — takes its rows a cache-full at a time: the misses read in one
// MultiGet after room is made, the dirty rows that made room written in one WriteBatch.
// The database is scratch: made empty when the tier opens (the copies and the seed are
// what a lost one is rebuilt from), written without a WAL.
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "train/engram_share.h"

namespace rocksdb {
class Status;
class WriteBatch;
}  // namespace rocksdb

namespace troupe::storage {

class TieredShardTables final : public model::ShardTables {
 public:
  // Opens (after emptying) the database in directory `dir`. Throws std::runtime_error naming
  // the directory when RocksDB cannot, std::invalid_argument for a cache under one row.
  TieredShardTables(const model::ModelConfig& cfg, uint64_t seed, const std::vector<bool>& held,
                    const std::string& dir, int64_t host_cache_bytes);
  ~TieredShardTables() override;

  const std::vector<model::EngramTableInfo>& tables() const override { return info_; }
  bool held(int64_t table) const override;
  void lookup(int64_t table, const int64_t* ids, int64_t n, float* out) override;
  void apply(const model::EngramGrad<float>& grad, const model::EngramAdamStep& s) override;
  model::EngramRowsBackup<float> backup_rows(const model::EngramGrad<float>& grad) override;
  void restore_rows(const model::EngramRowsBackup<float>& b) override;
  std::vector<float> read_table(int64_t table, int part) override;
  void write_table(int64_t table, int part, const std::vector<float>& data) override;

  struct Stats {
    int64_t hits = 0, misses = 0;  // rows a lookup, update or backup found / did not find
    int64_t cold_reads = 0;        // misses found in the cold tier (others: fresh rows)
    int64_t rows_written = 0;      // dirty rows written back
    int64_t bytes_read = 0, bytes_written = 0;
    double miss_ms = 0;  // time spent loading misses
    int64_t cached_rows = 0, capacity_rows = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Row {
    std::vector<float> wmv;  // values, m, v: D each
    bool dirty = false;
    std::list<uint64_t>::iterator lru;
  };
  void for_rows(int64_t table, const std::vector<int64_t>& ids,
                const std::function<void(size_t, Row&)>& f);
  std::vector<Row*> load(int64_t table, const std::vector<int64_t>& ids);
  bool decode(int64_t table, int64_t id, const rocksdb::Status& st, const std::string& value,
              float* wmv);
  void make_room(int64_t n);
  void write(rocksdb::WriteBatch* batch);
  void check(int64_t table, int64_t id) const;

  std::vector<model::EngramTableInfo> info_;
  std::vector<bool> held_;
  uint64_t seed_;
  int64_t dim_;
  std::string dir_;
  struct Db;
  std::unique_ptr<Db> db_;
  std::unordered_map<uint64_t, Row> cache_;
  std::list<uint64_t> lru_;  // most recent first
  Stats stats_;
};

}  // namespace troupe::storage
