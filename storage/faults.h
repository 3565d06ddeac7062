#pragma once
// The storage fault hook (chaos at the disk seam): faults the storage layer injects into
// its own writes, so tests exercise every failure path without a broken disk. Read from
// the environment variable TROUPE_STORAGE_FAULT, a comma-separated list of
//   corrupt@S        the checkpoint of step S is written with one shard's bytes flipped
//                    after its CRC was taken (a reader must detect it)
//   full@S           writing the checkpoint of step S fails: "No space left on device"
//   sync@S           syncing the checkpoint of step S fails (fsync/fdatasync error)
//   file-full:NAME@B a CheckedFile whose file name is NAME (e.g. metrics.jsonl) fails
//                    with ENOSPC on the write that would take it past B bytes
// S is the checkpoint's step: the number of train steps applied (every_steps, 2·every…).
// Empty or unset: no faults. Every node process inherits it from `troupe launch`.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace troupe::storage {

class StorageFaults {
 public:
  StorageFaults() = default;  // no faults
  // Throws std::invalid_argument naming the bad item and the accepted forms.
  static StorageFaults parse(const std::string& spec);
  // parse(getenv("TROUPE_STORAGE_FAULT")), or no faults when unset/empty.
  static StorageFaults from_env();

  bool corrupt_at(int64_t step) const { return corrupt_.count(step) > 0; }
  bool full_at(int64_t step) const { return full_.count(step) > 0; }
  bool sync_fails_at(int64_t step) const { return sync_.count(step) > 0; }
  // The byte limit of checked files named `file_name` (the last path component).
  std::optional<int64_t> file_limit_bytes(const std::string& file_name) const;
  bool any() const;

 private:
  std::set<int64_t> corrupt_, full_, sync_;
  std::map<std::string, int64_t> file_limit_bytes_;
};

}  // namespace troupe::storage
