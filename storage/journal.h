#pragma once
// The coordinator journal (docs/storage.md): a RocksDB database at DIR/journal written by
// one process (the coordinator in `troupe launch`, or `troupe train`), every write synced
// before the call returns. It is the source of truth for what was decided: every view,
// every commit (with the micro-batches the step consumed: the data ledger), every complete
// checkpoint's manifest, every resume and rollback. A restarted coordinator rebuilds
// from it; `troupe ledger`, `troupe export` and `--resume` read it.
//
// Keys:  log/<seq, 16 digits>  one record (JSON, "kind" field), in the order appended
//        manifest/<step, 10 digits>  a complete checkpoint's manifest (JSON)
//        meta/<name>  e.g. meta/job: the config keys a resume must match
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runtime/status.h"
#include "storage/shard_store.h"

namespace troupe::storage {

// A complete checkpoint: every shard, who wrote it and its CRC, and the config it belongs to.
struct Manifest {
  int64_t step = 0;         // train steps applied: the job continues at step `step`
  uint64_t epoch = 0;       // the view whose workers wrote it (0 for troupe train)
  std::string config_hash;  // xxh64 (hex) of `job`'s canonical dump
  nlohmann::json job;       // the config keys a resume must match (meta/job's value)
  std::vector<ShardRecord> shards;
  nlohmann::json to_json() const;
  // Throws std::runtime_error naming the missing or malformed field.
  static Manifest from_json(const nlohmann::json& j);
};

// What RocksDB may hold in memory for a journal however long the job: two memtables of
// kJournalMemtableBytes and a block cache (index, filter and data blocks) of kJournalCacheBytes.
// RocksDB's smallest memtable (64 KiB): freed memtables are unmapped, so the coordinator's RSS
// saws by this much, ~0.15% of it, where a 1 MiB memtable made it saw by 2.5% each flush.
inline constexpr int64_t kJournalMemtableBytes = int64_t(64) << 10;
inline constexpr int64_t kJournalCacheBytes = int64_t(256) << 10;

class Journal {
 public:
  ~Journal();
  // Opens (creates unless read_only) DIR/journal. Errors name the path and RocksDB's status
  // (a second writer gets RocksDB's lock error, prefixed with what to do, as Code::busy).
  static runtime::Result<std::unique_ptr<Journal>> open(const std::string& run_dir, bool read_only);
  // open(run_dir, false), tried again every 50 ms for up to `wait` while another process holds
  // the lock: for a caller that knows the holder is on its way out.
  static runtime::Result<std::unique_ptr<Journal>> open_waiting(const std::string& run_dir,
                                                                std::chrono::milliseconds wait);

  // Appends one record (an object with a string "kind"), synced. Returns its sequence
  // number through `seq` when non-null.
  runtime::Status append(const nlohmann::json& record, uint64_t* seq = nullptr);
  // Every record in order.
  std::vector<nlohmann::json> records() const;

  // The manifest (synced) and a "checkpoint" record in one atomic batch.
  runtime::Status put_manifest(const Manifest& m);
  // Removes manifest/<step> and appends a "checkpoint_deleted" record, atomically.
  runtime::Status delete_manifest(int64_t step);
  std::vector<int64_t> manifest_steps() const;  // ascending
  // Errors: "no checkpoint of step S in DIR/journal", or the parse error.
  runtime::Result<Manifest> manifest(int64_t step) const;

  // Bytes RocksDB holds in memory for this journal now: memtables plus the block cache.
  int64_t memory_bytes() const;

  runtime::Status put_meta(const std::string& name, const std::string& value);
  std::optional<std::string> meta(const std::string& name) const;

 private:
  Journal();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace troupe::storage
