#include "storage/engram_tier.h"

#include <fmt/format.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <unordered_map>

namespace troupe::storage {

struct TieredShardTables::Db {
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::WriteOptions write;
};

namespace {

uint64_t key_of(int64_t table, int64_t id) {
  return (uint64_t(table) << 40) | uint64_t(id);
}

std::string key_bytes(uint64_t key) {  // big-endian: a table's rows sort together
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((key >> (56 - 8 * i)) & 0xff);
  return out;
}

// RocksDB's own memory kept in proportion to the host cache: its write buffers (two) and its
// block cache a quarter of host_cache_bytes each, 1 MiB at least (the default 64 MiB write
// buffer would hold every row of a small shard in memory, and the tier would be one in name
// only). Rows are floats: compressing them costs CPU and saves little.
rocksdb::Options tier_options(int64_t host_cache_bytes) {
  rocksdb::Options o;
  o.create_if_missing = true;
  const auto quarter = size_t(std::max<int64_t>(int64_t(1) << 20, host_cache_bytes / 4));
  o.write_buffer_size = quarter;
  o.max_write_buffer_number = 2;
  o.max_background_jobs = 1;
  o.compression = rocksdb::kNoCompression;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = rocksdb::NewLRUCache(quarter);
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));  // a fresh row's miss reads no block
  t.cache_index_and_filter_blocks = true;                    // inside the bound
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

}  // namespace

TieredShardTables::TieredShardTables(const model::ModelConfig& cfg, uint64_t seed,
                                     const std::vector<bool>& held, const std::string& dir,
                                     int64_t host_cache_bytes)
    : info_(model::engram_tables(cfg)),
      held_(held),
      seed_(seed),
      dim_(cfg.engram_head_dim),
      dir_(dir),
      db_(std::make_unique<Db>()) {
  if (held_.size() != info_.size()) throw std::invalid_argument("engram tier: one flag per table");
  stats_.capacity_rows = host_cache_bytes / int64_t(3 * dim_ * int64_t(sizeof(float)));
  if (stats_.capacity_rows < 1)
    throw std::invalid_argument(
        fmt::format("engram.host_cache_bytes = {} holds no row ({} bytes each with its moments)",
                    host_cache_bytes, 3 * dim_ * int64_t(sizeof(float))));
  const rocksdb::Options o = tier_options(host_cache_bytes);
  rocksdb::DestroyDB(dir_, o);  // scratch: a new holder starts from the seed or a copy
  rocksdb::DB* db = nullptr;
  const rocksdb::Status st = rocksdb::DB::Open(o, dir_, &db);
  if (!st.ok())
    throw std::runtime_error(
        fmt::format("cannot open the Engram cold tier in {}: {}", dir_, st.ToString()));
  db_->db.reset(db);
  db_->write.disableWAL = true;
}

TieredShardTables::~TieredShardTables() = default;

bool TieredShardTables::held(int64_t table) const {
  return table >= 0 && size_t(table) < held_.size() && held_[size_t(table)];
}

void TieredShardTables::check(int64_t table, int64_t id) const {
  if (!held(table)) throw std::out_of_range(fmt::format("engram table {} is not held here", table));
  if (id < 0 || id >= info_[size_t(table)].rows)
    throw std::out_of_range("engram row id out of range in " + info_[size_t(table)].name);
}

// Room for n more rows: the least recently used rows dropped, the dirty ones written back in
// one WriteBatch.
void TieredShardTables::make_room(int64_t n) {
  rocksdb::WriteBatch batch;
  while (!lru_.empty() && int64_t(cache_.size()) + n > stats_.capacity_rows) {
    const uint64_t key = lru_.back();
    const auto it = cache_.find(key);
    if (it->second.dirty) {
      const std::vector<float>& wmv = it->second.wmv;
      batch.Put(key_bytes(key), rocksdb::Slice(reinterpret_cast<const char*>(wmv.data()),
                                               wmv.size() * sizeof(float)));
      ++stats_.rows_written;
      stats_.bytes_written += int64_t(wmv.size() * sizeof(float));
    }
    lru_.pop_back();
    cache_.erase(it);
  }
  write(&batch);
}

void TieredShardTables::write(rocksdb::WriteBatch* batch) {
  if (batch->Count() == 0) return;
  const rocksdb::Status st = db_->db->Write(db_->write, batch);
  if (!st.ok())
    throw std::runtime_error(
        fmt::format("cannot write the Engram cold tier in {}: {}", dir_, st.ToString()));
}

// Row `id` of `table` (values, m, v) into wmv from the cold tier's answer `st`/`value`: the
// stored row (true; its bytes counted as read) or, not found, the fresh one from the seed
// with zero moments (false). Any other answer throws naming the directory.
bool TieredShardTables::decode(int64_t table, int64_t id, const rocksdb::Status& st,
                               const std::string& value, float* wmv) {
  const size_t bytes = size_t(3 * dim_) * sizeof(float);
  if (st.ok() && value.size() == bytes) {
    std::memcpy(wmv, value.data(), bytes);
    stats_.bytes_read += int64_t(bytes);
    return true;
  }
  if (!st.IsNotFound())
    throw std::runtime_error(fmt::format("cannot read the Engram cold tier in {}: {}", dir_,
                                         st.ok() ? "a row of the wrong size" : st.ToString()));
  std::fill(wmv, wmv + 3 * dim_, 0.f);
  model::engram_initial_row(info_[size_t(table)], seed_, id, wmv);
  return false;
}

// Rows `ids` of `table` (not cached, distinct) into the cache, most recently used: room made
// for all of them first, then read in one MultiGet (RocksDB batches the reads of one block);
// a row the cold tier does not have is the fresh one from the seed.
std::vector<TieredShardTables::Row*> TieredShardTables::load(int64_t table,
                                                             const std::vector<int64_t>& ids) {
  const auto began = std::chrono::steady_clock::now();
  make_room(int64_t(ids.size()));
  std::vector<std::string> keys;
  for (int64_t id : ids) keys.push_back(key_bytes(key_of(table, id)));
  const std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<std::string> values;
  const std::vector<rocksdb::Status> st =
      db_->db->MultiGet(rocksdb::ReadOptions(), slices, &values);
  std::vector<Row*> out;
  for (size_t k = 0; k < ids.size(); ++k) {
    ++stats_.misses;
    Row r;
    r.wmv.resize(size_t(3 * dim_));
    if (decode(table, ids[k], st[k], values[k], r.wmv.data())) ++stats_.cold_reads;
    lru_.push_front(key_of(table, ids[k]));
    r.lru = lru_.begin();
    out.push_back(&cache_.emplace(lru_.front(), std::move(r)).first->second);
  }
  stats_.miss_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count();
  return out;
}

// f(k, row of ids[k]) for every k, the rows cached a chunk of at most the capacity at a time:
// the chunk's cached rows made most recent (so making room for its misses, from the least
// recent end, drops none of them), then its misses loaded together. `ids` are distinct.
void TieredShardTables::for_rows(int64_t table, const std::vector<int64_t>& ids,
                                 const std::function<void(size_t, Row&)>& f) {
  for (int64_t id : ids) check(table, id);
  const auto chunk = size_t(stats_.capacity_rows);
  for (size_t lo = 0; lo < ids.size(); lo += chunk) {
    const size_t hi = std::min(ids.size(), lo + chunk);
    std::vector<Row*> rows(hi - lo, nullptr);
    std::vector<int64_t> missed;
    std::vector<size_t> missed_at;
    for (size_t k = lo; k < hi; ++k) {
      const auto it = cache_.find(key_of(table, ids[k]));
      if (it == cache_.end()) {
        missed.push_back(ids[k]), missed_at.push_back(k - lo);
        continue;
      }
      ++stats_.hits;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      rows[k - lo] = &it->second;
    }
    if (!missed.empty()) {
      const std::vector<Row*> loaded = load(table, missed);
      for (size_t j = 0; j < loaded.size(); ++j) rows[missed_at[j]] = loaded[j];
    }
    for (size_t k = lo; k < hi; ++k) f(k, *rows[k - lo]);
  }
  stats_.cached_rows = int64_t(cache_.size());
}

void TieredShardTables::lookup(int64_t table, const int64_t* ids, int64_t n, float* out) {
  std::unordered_map<int64_t, size_t> index;  // row id -> its place in `distinct`
  std::vector<int64_t> distinct;
  std::vector<std::vector<int64_t>> places;  // of distinct[k]
  for (int64_t i = 0; i < n; ++i) {
    check(table, ids[i]);
    const auto [it, fresh] = index.try_emplace(ids[i], distinct.size());
    if (fresh) distinct.push_back(ids[i]), places.emplace_back();
    places[it->second].push_back(i);
  }
  for_rows(table, distinct, [&](size_t k, Row& r) {
    for (int64_t i : places[k])
      std::memcpy(out + i * dim_, r.wmv.data(), sizeof(float) * size_t(dim_));
  });
}

void TieredShardTables::apply(const model::EngramGrad<float>& grad,
                              const model::EngramAdamStep& s) {
  if (grad.size() != info_.size())
    throw std::invalid_argument("engram tier: gradient has the wrong number of tables");
  const model::EngramAdamRow<float> adam = model::EngramAdamRow<float>::of(s);
  for (size_t t = 0; t < info_.size(); ++t)
    for_rows(int64_t(t), grad[t].ids, [&](size_t r, Row& x) {
      adam(grad[t].values.data() + int64_t(r) * dim_, x.wmv.data(), x.wmv.data() + dim_,
           x.wmv.data() + 2 * dim_, dim_);
      x.dirty = true;
    });
}

model::EngramRowsBackup<float> TieredShardTables::backup_rows(
    const model::EngramGrad<float>& grad) {
  model::EngramRowsBackup<float> b;
  b.ids.resize(info_.size()), b.values.resize(info_.size());
  b.m.resize(info_.size()), b.v.resize(info_.size());
  for (size_t t = 0; t < info_.size() && t < grad.size(); ++t) {
    b.ids[t] = grad[t].ids;
    for_rows(int64_t(t), grad[t].ids, [&](size_t, Row& x) {
      b.values[t].insert(b.values[t].end(), x.wmv.begin(), x.wmv.begin() + dim_);
      b.m[t].insert(b.m[t].end(), x.wmv.begin() + dim_, x.wmv.begin() + 2 * dim_);
      b.v[t].insert(b.v[t].end(), x.wmv.begin() + 2 * dim_, x.wmv.end());
    });
  }
  return b;
}

void TieredShardTables::restore_rows(const model::EngramRowsBackup<float>& b) {
  for (size_t t = 0; t < b.ids.size() && t < info_.size(); ++t)
    for_rows(int64_t(t), b.ids[t], [&](size_t r, Row& x) {
      const auto at = int64_t(r) * dim_;
      std::copy(b.values[t].begin() + at, b.values[t].begin() + at + dim_, x.wmv.begin());
      std::copy(b.m[t].begin() + at, b.m[t].begin() + at + dim_, x.wmv.begin() + dim_);
      std::copy(b.v[t].begin() + at, b.v[t].begin() + at + dim_, x.wmv.begin() + 2 * dim_);
      x.dirty = true;
    });
}

// A whole table part (a checkpoint, a copy to a new holder, the final weights): read past
// the cache, which it neither fills nor churns — cached rows (the newest) from the cache,
// the others from the cold tier a block of MultiGet at a time, never-updated ones fresh.
std::vector<float> TieredShardTables::read_table(int64_t table, int part) {
  if (!held(table)) throw std::out_of_range("read_table: a table not held here");
  if (part < 0 || part > 2) throw std::out_of_range("read_table: part is 0, 1 or 2");
  const int64_t R = info_[size_t(table)].rows;
  std::vector<float> out(size_t(R * dim_));
  std::vector<float> fresh(size_t(3 * dim_));
  const auto put = [&](int64_t id, const float* wmv) {
    std::copy(wmv + part * dim_, wmv + (part + 1) * dim_, out.begin() + id * dim_);
  };
  constexpr int64_t block_rows = 4096;
  for (int64_t lo = 0; lo < R; lo += block_rows) {
    std::vector<int64_t> ids;
    std::vector<std::string> keys;
    for (int64_t id = lo; id < std::min(R, lo + block_rows); ++id) {
      if (const auto it = cache_.find(key_of(table, id)); it != cache_.end()) {
        put(id, it->second.wmv.data());
        continue;
      }
      ids.push_back(id);
      keys.push_back(key_bytes(key_of(table, id)));
    }
    const std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
    std::vector<std::string> values;
    const std::vector<rocksdb::Status> st =
        db_->db->MultiGet(rocksdb::ReadOptions(), slices, &values);
    for (size_t k = 0; k < ids.size(); ++k) {
      decode(table, ids[k], st[k], values[k], fresh.data());
      put(ids[k], fresh.data());
    }
  }
  return out;
}

// A whole table part written (a checkpoint or a set loaded, a copy from a survivor): cached
// rows changed in place (dirty), the others read, changed and written to the cold tier a
// block at a time (one MultiGet, one WriteBatch), without passing through the cache.
void TieredShardTables::write_table(int64_t table, int part, const std::vector<float>& data) {
  if (!held(table)) throw std::out_of_range("write_table: a table not held here");
  if (part < 0 || part > 2) throw std::out_of_range("write_table: part is 0, 1 or 2");
  const int64_t R = info_[size_t(table)].rows;
  if (int64_t(data.size()) != R * dim_)
    throw std::invalid_argument("write_table: a table of the wrong size");
  std::vector<float> row(size_t(3 * dim_));
  constexpr int64_t block_rows = 4096;
  for (int64_t lo = 0; lo < R; lo += block_rows) {
    std::vector<int64_t> ids;
    std::vector<std::string> keys;
    for (int64_t id = lo; id < std::min(R, lo + block_rows); ++id) {
      if (const auto it = cache_.find(key_of(table, id)); it != cache_.end()) {
        std::copy(data.begin() + id * dim_, data.begin() + (id + 1) * dim_,
                  it->second.wmv.begin() + part * dim_);
        it->second.dirty = true;
        continue;
      }
      ids.push_back(id);
      keys.push_back(key_bytes(key_of(table, id)));
    }
    const std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
    std::vector<std::string> values;
    const std::vector<rocksdb::Status> st =
        db_->db->MultiGet(rocksdb::ReadOptions(), slices, &values);
    rocksdb::WriteBatch batch;
    for (size_t k = 0; k < ids.size(); ++k) {
      decode(table, ids[k], st[k], values[k], row.data());
      std::copy(data.begin() + ids[k] * dim_, data.begin() + (ids[k] + 1) * dim_,
                row.begin() + part * dim_);
      batch.Put(slices[k], rocksdb::Slice(reinterpret_cast<const char*>(row.data()),
                                          row.size() * sizeof(float)));
      ++stats_.rows_written;
      stats_.bytes_written += int64_t(row.size() * sizeof(float));
    }
    write(&batch);
  }
}

}  // namespace troupe::storage
