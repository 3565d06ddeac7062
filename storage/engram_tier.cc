#include "storage/engram_tier.h"

#include <fmt/format.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <stdexcept>

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

void TieredShardTables::write_back(uint64_t key, const Row& r) {
  const rocksdb::Slice value(reinterpret_cast<const char*>(r.wmv.data()),
                             r.wmv.size() * sizeof(float));
  const rocksdb::Status st = db_->db->Put(db_->write, key_bytes(key), value);
  if (!st.ok())
    throw std::runtime_error(
        fmt::format("cannot write the Engram cold tier in {}: {}", dir_, st.ToString()));
  ++stats_.rows_written;
  stats_.bytes_written += int64_t(value.size());
}

void TieredShardTables::evict_one() {
  const uint64_t key = lru_.back();
  const auto it = cache_.find(key);
  if (it->second.dirty) write_back(key, it->second);
  lru_.pop_back();
  cache_.erase(it);
}

void TieredShardTables::evict_beyond_capacity() {
  while (int64_t(cache_.size()) > stats_.capacity_rows) evict_one();
  stats_.cached_rows = int64_t(cache_.size());
}

TieredShardTables::Row& TieredShardTables::row(int64_t table, int64_t id) {
  check(table, id);
  const uint64_t key = key_of(table, id);
  if (const auto it = cache_.find(key); it != cache_.end()) {
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second;
  }
  const auto began = std::chrono::steady_clock::now();
  std::string value;
  const rocksdb::Status st = db_->db->Get(rocksdb::ReadOptions(), key_bytes(key), &value);
  Row& out = insert(table, id, st, value);
  stats_.miss_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count();
  return out;
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

// A missed row into the cache, most recently used: from the cold tier's answer `st`/`value`
// when it has the row, else fresh from the seed.
TieredShardTables::Row& TieredShardTables::insert(int64_t table, int64_t id,
                                                  const rocksdb::Status& st,
                                                  const std::string& value) {
  ++stats_.misses;
  const uint64_t key = key_of(table, id);
  Row r;
  r.wmv.resize(size_t(3 * dim_));
  if (decode(table, id, st, value, r.wmv.data())) ++stats_.cold_reads;
  lru_.push_front(key);
  r.lru = lru_.begin();
  return cache_.emplace(key, std::move(r)).first->second;
}

// The rows a lookup missed, read from the cold tier in one MultiGet (RocksDB batches the
// reads of one block) after room is made for them; each copied to every place it goes.
void TieredShardTables::fill_misses(int64_t table,
                                    const std::map<int64_t, std::vector<int64_t>>& at, float* out) {
  const auto began = std::chrono::steady_clock::now();
  const auto wanted = int64_t(at.size());
  while (!lru_.empty() &&
         int64_t(cache_.size()) + std::min(wanted, stats_.capacity_rows) > stats_.capacity_rows)
    evict_one();
  std::vector<std::string> keys;
  for (const auto& [id, places] : at) keys.push_back(key_bytes(key_of(table, id)));
  const std::vector<rocksdb::Slice> slices(keys.begin(), keys.end());
  std::vector<std::string> values;
  const std::vector<rocksdb::Status> st =
      db_->db->MultiGet(rocksdb::ReadOptions(), slices, &values);
  size_t k = 0;
  for (const auto& [id, places] : at) {
    const Row& r = insert(table, id, st[k], values[k]);
    for (int64_t i : places)
      std::memcpy(out + i * dim_, r.wmv.data(), sizeof(float) * size_t(dim_));
    ++k;
    evict_beyond_capacity();
  }
  stats_.miss_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count();
}

void TieredShardTables::lookup(int64_t table, const int64_t* ids, int64_t n, float* out) {
  std::map<int64_t, std::vector<int64_t>> missed;  // row id -> the places it goes
  for (int64_t i = 0; i < n; ++i) {
    check(table, ids[i]);
    const auto it = cache_.find(key_of(table, ids[i]));
    if (it == cache_.end()) {
      missed[ids[i]].push_back(i);
      continue;
    }
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    std::memcpy(out + i * dim_, it->second.wmv.data(), sizeof(float) * size_t(dim_));
  }
  if (!missed.empty()) fill_misses(table, missed, out);
  stats_.cached_rows = int64_t(cache_.size());
}

void TieredShardTables::apply(const model::EngramGrad<float>& grad,
                              const model::EngramAdamStep& s) {
  if (grad.size() != info_.size())
    throw std::invalid_argument("engram tier: gradient has the wrong number of tables");
  const model::EngramAdamRow<float> adam = model::EngramAdamRow<float>::of(s);
  for (size_t t = 0; t < info_.size(); ++t)
    for (size_t r = 0; r < grad[t].ids.size(); ++r) {
      Row& x = row(int64_t(t), grad[t].ids[r]);
      adam(grad[t].values.data() + int64_t(r) * dim_, x.wmv.data(), x.wmv.data() + dim_,
           x.wmv.data() + 2 * dim_, dim_);
      x.dirty = true;
      evict_beyond_capacity();
    }
}

model::EngramRowsBackup<float> TieredShardTables::backup_rows(
    const model::EngramGrad<float>& grad) {
  model::EngramRowsBackup<float> b;
  b.ids.resize(info_.size()), b.values.resize(info_.size());
  b.m.resize(info_.size()), b.v.resize(info_.size());
  for (size_t t = 0; t < info_.size() && t < grad.size(); ++t) {
    b.ids[t] = grad[t].ids;
    for (int64_t id : grad[t].ids) {
      const std::vector<float>& x = row(int64_t(t), id).wmv;
      b.values[t].insert(b.values[t].end(), x.begin(), x.begin() + dim_);
      b.m[t].insert(b.m[t].end(), x.begin() + dim_, x.begin() + 2 * dim_);
      b.v[t].insert(b.v[t].end(), x.begin() + 2 * dim_, x.end());
      evict_beyond_capacity();
    }
  }
  return b;
}

void TieredShardTables::restore_rows(const model::EngramRowsBackup<float>& b) {
  for (size_t t = 0; t < b.ids.size() && t < info_.size(); ++t)
    for (size_t r = 0; r < b.ids[t].size(); ++r) {
      Row& x = row(int64_t(t), b.ids[t][r]);
      const auto at = int64_t(r) * dim_;
      std::copy(b.values[t].begin() + at, b.values[t].begin() + at + dim_, x.wmv.begin());
      std::copy(b.m[t].begin() + at, b.m[t].begin() + at + dim_, x.wmv.begin() + dim_);
      std::copy(b.v[t].begin() + at, b.v[t].begin() + at + dim_, x.wmv.begin() + 2 * dim_);
      x.dirty = true;
      evict_beyond_capacity();
    }
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
    const rocksdb::Status w = db_->db->Write(db_->write, &batch);
    if (!w.ok())
      throw std::runtime_error(
          fmt::format("cannot write the Engram cold tier in {}: {}", dir_, w.ToString()));
  }
}

}  // namespace troupe::storage
