#include "storage/journal.h"

#include <fmt/format.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "storage/json_number.h"

namespace troupe::storage {

using json = nlohmann::json;
using runtime::Code;
using runtime::Result;
using runtime::Status;

namespace {

constexpr const char* kLogPrefix = "log/";
constexpr const char* kManifestPrefix = "manifest/";
constexpr const char* kMetaPrefix = "meta/";
constexpr uint64_t kFirstSeq = 1;  // 0 is left to callers for "no record yet"

std::string log_key(uint64_t seq) {
  return fmt::format("{}{:016d}", kLogPrefix, seq);
}
std::string manifest_key(int64_t step) {
  return fmt::format("{}{:010d}", kManifestPrefix, step);
}

bool starts_with(const rocksdb::Slice& s, const std::string& prefix) {
  return s.starts_with(rocksdb::Slice(prefix));
}

// Field `key` of a manifest, converted, or std::runtime_error naming it.
template <class T>
T field(const json& j, const char* key, const char* where = "manifest") {
  if (!j.is_object() || !j.contains(key))
    throw std::runtime_error(fmt::format("{}: field \"{}\" is missing", where, key));
  try {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (const std::optional<T> v = json_integer<T>(j.at(key))) return *v;
      throw std::runtime_error(fmt::format("{}: field \"{}\" is not an integer in range: {}", where,
                                           key, j.at(key).dump()));
    } else {
      return j.at(key).get<T>();
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(
        fmt::format("{}: field \"{}\" is malformed: {}", where, key, e.what()));
  }
}

// A journal gets a record per step (~1 KiB with the data ledger) for the whole job, and the
// coordinator lives as long as the job: RocksDB's defaults (a 64 MiB memtable, every table's
// index held outside any cache) made its RSS grow ~5 MiB an hour in the 2-hour soak. These
// bound it: a small memtable flushed often, and index and filter blocks in a small cache.
void bound_memory(rocksdb::Options* o) {
  o->write_buffer_size = kJournalMemtableBytes;
  o->max_write_buffer_number = 2;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = rocksdb::NewLRUCache(kJournalCacheBytes);
  t.cache_index_and_filter_blocks = true;
  o->table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
}

}  // namespace

json Manifest::to_json() const {
  json list = json::array();
  for (const ShardRecord& s : shards)
    list.push_back(
        {{"name", s.name}, {"writer", s.writer}, {"crc32c", s.crc32c}, {"bytes", s.bytes}});
  return {{"step", step},
          {"epoch", epoch},
          {"config_hash", config_hash},
          {"job", job},
          {"shards", std::move(list)}};
}

Manifest Manifest::from_json(const json& j) {
  Manifest m;
  m.step = field<int64_t>(j, "step");
  m.epoch = field<uint64_t>(j, "epoch");
  m.config_hash = field<std::string>(j, "config_hash");
  m.job = field<json>(j, "job");
  json list = field<json>(j, "shards");
  if (!list.is_array()) throw std::runtime_error("manifest: field \"shards\" is not an array");
  for (const json& s : list) {
    ShardRecord r;
    r.name = field<std::string>(s, "name", "manifest shard");
    r.writer = field<std::string>(s, "writer", "manifest shard");
    r.crc32c = field<uint32_t>(s, "crc32c", "manifest shard");
    r.bytes = field<uint64_t>(s, "bytes", "manifest shard");
    m.shards.push_back(std::move(r));
  }
  return m;
}

struct Journal::Impl {
  std::string path;
  bool read_only = false;
  std::unique_ptr<rocksdb::DB> db;
  // Writers on two threads (troupe train's loop and its checkpoint writer) take turns: each
  // log record takes the next sequence number in the order the records are written.
  std::mutex mu;
  uint64_t next_seq = kFirstSeq;

  // `batch` with the log record `record` under the next sequence number, synced.
  Status log_and_write(rocksdb::WriteBatch* batch, const std::string& record,
                       const std::string& what, uint64_t* seq = nullptr) {
    std::lock_guard<std::mutex> lock(mu);
    batch->Put(log_key(next_seq), record);
    if (Status s = write(batch, what); !s.ok()) return s;
    if (seq != nullptr) *seq = next_seq;
    ++next_seq;
    return Status();
  }

  Status write(rocksdb::WriteBatch* batch, const std::string& what) {
    if (read_only)
      return Status(Code::invalid_argument,
                    "cannot " + what + ": journal " + path + " is opened read-only");
    rocksdb::WriteOptions wo;
    wo.sync = true;  // decided means on disk: a restarted coordinator rebuilds from this
    rocksdb::Status st = db->Write(wo, batch);
    if (!st.ok())
      return Status(Code::io_error, "cannot " + what + " in " + path + ": " + st.ToString());
    return Status();
  }

  // Calls f(key, value) for every key starting with prefix, in key order.
  template <class F>
  void scan(const std::string& prefix, F&& f) const {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(prefix); it->Valid() && starts_with(it->key(), prefix); it->Next())
      f(it->key(), it->value());
  }

  // The sequence number after the last log/ key (kFirstSeq in an empty journal).
  uint64_t seq_after_last() const {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    it->SeekForPrev("log0");  // '0' follows '/': the last key before it is the last log/ key
    if (!it->Valid() || !starts_with(it->key(), kLogPrefix)) return kFirstSeq;
    std::string digits = it->key().ToString().substr(std::string(kLogPrefix).size());
    return std::stoull(digits) + 1;
  }
};

Journal::Journal() : impl_(std::make_unique<Impl>()) {}
Journal::~Journal() = default;

Result<std::unique_ptr<Journal>> Journal::open(const std::string& run_dir, bool read_only) {
  std::unique_ptr<Journal> j(new Journal());
  Impl& impl = *j->impl_;
  impl.path = run_dir + "/journal";
  impl.read_only = read_only;
  rocksdb::Options o;
  o.create_if_missing = !read_only;
  o.keep_log_file_num = 4;  // RocksDB's own info logs, not ours
  bound_memory(&o);
  rocksdb::DB* db = nullptr;
  rocksdb::Status st = read_only ? rocksdb::DB::OpenForReadOnly(o, impl.path, &db)
                                 : rocksdb::DB::Open(o, impl.path, &db);
  if (!st.ok()) {
    std::string what = st.ToString();
    const bool locked = what.find("lock") != std::string::npos;
    std::string advice = locked ? "another process has it open for writing (a troupe job on " +
                                      run_dir + "?); wait for it to end or choose another " +
                                      "--run-dir: "
                                : "";
    return Status(locked ? Code::busy : Code::io_error,
                  "cannot open journal " + impl.path + ": " + advice + what);
  }
  impl.db.reset(db);
  impl.next_seq = impl.seq_after_last();
  return j;
}

Result<std::unique_ptr<Journal>> Journal::open_waiting(const std::string& run_dir,
                                                       std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto j = open(run_dir, false);
  while (!j.ok() && j.status().code() == Code::busy &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // another process's exit
    j = open(run_dir, false);
  }
  return j;
}

Status Journal::append(const json& record, uint64_t* seq) {
  if (!record.is_object() || !record.contains("kind") || !record["kind"].is_string())
    return Status(Code::invalid_argument,
                  "journal record needs a string \"kind\": " + record.dump());
  rocksdb::WriteBatch batch;
  return impl_->log_and_write(&batch, record.dump(), "append a record", seq);
}

std::vector<json> Journal::records() const {
  std::vector<json> out;
  impl_->scan(kLogPrefix, [&](const rocksdb::Slice& k, const rocksdb::Slice& v) {
    json r = json::parse(v.data(), v.data() + v.size(), nullptr, /*allow_exceptions=*/false);
    // Never skipped silently: an unreadable record stays in the order, saying so.
    if (r.is_discarded()) r = {{"kind", "unreadable"}, {"key", k.ToString()}};
    out.push_back(std::move(r));
  });
  return out;
}

Status Journal::put_manifest(const Manifest& m) {
  rocksdb::WriteBatch batch;
  batch.Put(manifest_key(m.step), m.to_json().dump());
  return impl_->log_and_write(&batch, json{{"kind", "checkpoint"}, {"step", m.step}}.dump(),
                              fmt::format("record the checkpoint of step {}", m.step));
}

Status Journal::delete_manifest(int64_t step) {
  if (Result<Manifest> m = manifest(step); !m.ok()) return m.status();
  rocksdb::WriteBatch batch;
  batch.Delete(manifest_key(step));
  return impl_->log_and_write(&batch, json{{"kind", "checkpoint_deleted"}, {"step", step}}.dump(),
                              fmt::format("delete the checkpoint of step {}", step));
}

std::vector<int64_t> Journal::manifest_steps() const {
  std::vector<int64_t> steps;
  const size_t skip = std::string(kManifestPrefix).size();
  impl_->scan(kManifestPrefix, [&](const rocksdb::Slice& k, const rocksdb::Slice&) {
    steps.push_back(std::stoll(k.ToString().substr(skip)));
  });
  return steps;  // zero-padded keys: ascending
}

Result<Manifest> Journal::manifest(int64_t step) const {
  std::string value;
  rocksdb::Status st = impl_->db->Get(rocksdb::ReadOptions(), manifest_key(step), &value);
  if (st.IsNotFound())
    return Status(Code::io_error, fmt::format("no checkpoint of step {} in {}", step, impl_->path));
  if (!st.ok())
    return Status(Code::io_error, fmt::format("cannot read the manifest of step {} in {}: {}", step,
                                              impl_->path, st.ToString()));
  try {
    return Manifest::from_json(json::parse(value));
  } catch (const std::exception& e) {
    return Status(Code::io_error, fmt::format("the manifest of step {} in {} is unreadable: {}",
                                              step, impl_->path, e.what()));
  }
}

Status Journal::put_meta(const std::string& name, const std::string& value) {
  rocksdb::WriteBatch batch;
  batch.Put(kMetaPrefix + name, value);
  return impl_->write(&batch, "write meta/" + name);
}

int64_t Journal::memory_bytes() const {
  uint64_t memtables = 0, cache = 0;
  impl_->db->GetIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &memtables);
  impl_->db->GetIntProperty(rocksdb::DB::Properties::kBlockCacheUsage, &cache);
  return int64_t(memtables + cache);
}

std::optional<std::string> Journal::meta(const std::string& name) const {
  std::string value;
  rocksdb::Status st = impl_->db->Get(rocksdb::ReadOptions(), kMetaPrefix + name, &value);
  if (!st.ok()) return std::nullopt;
  return value;
}

}  // namespace troupe::storage
