#pragma once
// Checkpoint shards (docs/storage.md). One writer (a worker, or `troupe train`) writes the
// shards it owns for checkpoint step S into a shard file of its own (storage/shard_file.h),
// DIR/checkpoints/step-<S>/<writer>, created for that checkpoint, written once and synced:
// no file is ever written by two processes. Each shard is one value, found by the shard's
// name through the file's index, value = a header and the raw bytes:
//   u32 magic 'TRSH' | u32 header_len | header JSON | raw bytes
//   header: {"name","dtype":"f32","shape":[...],"step":S,"crc32c":C,"bytes":N}
// where C is the CRC32C of the raw bytes (the value format of the RocksDB store that came
// before, whose databases — a directory at that path — are still read). A checkpoint exists
// only once its manifest (storage/journal.h) lists every shard; the shards alone are never
// trusted.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/status.h"
#include "storage/faults.h"

namespace troupe::storage {

// One tensor (or one run of optimizer state) to write: float32 bytes, viewed, not owned.
struct ShardData {
  std::string name;            // e.g. "param/model.embed.weight", "optim/…", "engram/…/m"
  std::vector<int64_t> shape;  // the tensor's shape (the run's length for optimizer state)
  const float* data = nullptr;
  size_t floats = 0;
};

// What a manifest lists for a shard.
struct ShardRecord {
  std::string name;
  std::string writer;  // the file name under step-<S>/ that holds it
  uint32_t crc32c = 0;
  uint64_t bytes = 0;
};

// Writes `shards` of checkpoint `step` into a fresh shard file at dir (an existing file or
// database at dir is removed first: a retry after a crash). Syncs the file and the
// directory entries before returning ok. Honours faults.full_at(step) (fails before
// writing, "No space left on device (injected by TROUPE_STORAGE_FAULT)"),
// faults.sync_fails_at(step) (fails at the sync, likewise) and faults.corrupt_at(step) (one
// shard's bytes flipped after the CRC is taken; returns ok).
// Errors name the dir (or the shard) and the cause. `writer` fills ShardRecord::writer.
runtime::Result<std::vector<ShardRecord>> write_shards(const std::string& dir,
                                                       const std::string& writer, int64_t step,
                                                       const std::vector<ShardData>& shards,
                                                       const StorageFaults& faults = {});

// A writer's shard file (or database of the store before it), opened read-only.
class ShardReader {
 public:
  ~ShardReader();
  ShardReader(ShardReader&&) noexcept;
  ShardReader& operator=(ShardReader&&) noexcept;
  static runtime::Result<ShardReader> open(const std::string& dir);
  // Reads shard `name` of checkpoint `step` into out (resized), checking the header (name,
  // step, dtype, bytes) and the CRC32C. Errors name the dir, the shard and what is wrong
  // ("CRC32C mismatch: header 0x…, bytes 0x…").
  runtime::Status read(const std::string& name, int64_t step, std::vector<float>* out,
                       std::vector<int64_t>* shape = nullptr) const;
  // Every shard name in the database, sorted.
  std::vector<std::string> names() const;

 private:
  ShardReader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads shards by name across a checkpoint's writers: opens each writer's database once.
class CheckpointReader {
 public:
  // step_dir: DIR/checkpoints/step-<S>; shards: the manifest's list.
  CheckpointReader(std::string step_dir, int64_t step, std::vector<ShardRecord> shards);
  // Reads `name` from the writer the manifest names, checking the CRC against both the
  // header and the manifest. Errors as ShardReader::read, or "not in the manifest".
  runtime::Status read(const std::string& name, std::vector<float>* out);
  bool has(const std::string& name) const { return by_name_.count(name) > 0; }
  // Reads and checks every shard of the manifest: the first error.
  runtime::Status verify_all();

 private:
  std::string step_dir_;
  int64_t step_;
  std::map<std::string, ShardRecord> by_name_;
  std::map<std::string, std::unique_ptr<ShardReader>> open_;
};

// DIR/checkpoints/step-<S> (S zero-padded to 10 digits, so names sort by step).
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

// Called by a checkpoint writer thread: it runs at a lower priority (nice +10; Linux's nice
// is per thread), so on a box whose cores all train it takes their idle time, not the step's.
void lower_this_thread_priority();

}  // namespace troupe::storage
