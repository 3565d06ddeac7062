#include "storage/engram_tier.h"

#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <chrono>
#include <cstring>
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
  rocksdb::Options o;
  o.create_if_missing = true;
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

void TieredShardTables::evict_beyond_capacity() {
  while (int64_t(cache_.size()) > stats_.capacity_rows) {
    const uint64_t key = lru_.back();
    const auto it = cache_.find(key);
    if (it->second.dirty) write_back(key, it->second);
    lru_.pop_back();
    cache_.erase(it);
  }
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
  ++stats_.misses;
  const auto began = std::chrono::steady_clock::now();
  Row r;
  r.wmv.assign(size_t(3 * dim_), 0.f);
  std::string value;
  const rocksdb::Status st = db_->db->Get(rocksdb::ReadOptions(), key_bytes(key), &value);
  if (st.ok() && value.size() == r.wmv.size() * sizeof(float)) {
    std::memcpy(r.wmv.data(), value.data(), value.size());
    ++stats_.cold_reads;
    stats_.bytes_read += int64_t(value.size());
  } else if (st.IsNotFound()) {
    model::engram_initial_row(info_[size_t(table)], seed_, id, r.wmv.data());
  } else {
    throw std::runtime_error(fmt::format("cannot read the Engram cold tier in {}: {}", dir_,
                                         st.ok() ? "a row of the wrong size" : st.ToString()));
  }
  lru_.push_front(key);
  r.lru = lru_.begin();
  Row& out = cache_.emplace(key, std::move(r)).first->second;
  stats_.miss_ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - began).count();
  return out;
}

void TieredShardTables::lookup(int64_t table, const int64_t* ids, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + i * dim_, row(table, ids[i]).wmv.data(), sizeof(float) * size_t(dim_));
    evict_beyond_capacity();
  }
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

std::vector<float> TieredShardTables::read_table(int64_t table, int part) {
  if (!held(table)) throw std::out_of_range("read_table: a table not held here");
  const int64_t R = info_[size_t(table)].rows;
  std::vector<float> out(size_t(R * dim_));
  for (int64_t id = 0; id < R; ++id) {
    const std::vector<float>& x = row(table, id).wmv;
    std::copy(x.begin() + part * dim_, x.begin() + (part + 1) * dim_, out.begin() + id * dim_);
    evict_beyond_capacity();
  }
  return out;
}

void TieredShardTables::write_table(int64_t table, int part, const std::vector<float>& data) {
  if (!held(table)) throw std::out_of_range("write_table: a table not held here");
  const int64_t R = info_[size_t(table)].rows;
  if (int64_t(data.size()) != R * dim_)
    throw std::invalid_argument("write_table: a table of the wrong size");
  for (int64_t id = 0; id < R; ++id) {
    Row& x = row(table, id);
    std::copy(data.begin() + id * dim_, data.begin() + (id + 1) * dim_,
              x.wmv.begin() + part * dim_);
    x.dirty = true;
    evict_beyond_capacity();
  }
}

}  // namespace troupe::storage
