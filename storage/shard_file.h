#pragma once
// The shard file (storage/ internal): one writer's shards of one checkpoint in one file,
// DIR/checkpoints/step-<S>/<writer>, written once, sequentially, and synced:
//   "TRSF" u32 version (1)
//   value of shard 0 | value of shard 1 | …      in name order; each value as RocksDB held it:
//                                                "TRSH" u32 header_len | header JSON | raw bytes
//   index JSON: [{"name":N,"offset":O,"size":Z},…]   where each value lies in the file
//   u64 index offset | u32 index length | u32 CRC32C of the index | "TRSE"     (the trailer)
// Integers are little-endian. The values' headers carry each shard's CRC32C (shard_store.h);
// the index has its own, so a damaged index is named as such rather than misread.
//
// Why not RocksDB (the store before it): per checkpoint of tiny (37 MB) RocksDB's SST
// writer, the fresh database and the ingestion cost ~65 ms of the writer's CPU, this file
// ~7 ms (bench_checkpoint_phases), and on a box whose every core trains that CPU is taken
// from training. A directory at DIR/…/<writer> is such a database, still read (shard_reader.cc).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <string>

#include "runtime/status.h"

namespace troupe::storage::shard_file {

constexpr char kFileMagic[4] = {'T', 'R', 'S', 'F'};
constexpr char kTrailerMagic[4] = {'T', 'R', 'S', 'E'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFileHeaderBytes = 8;  // magic + version
constexpr size_t kTrailerBytes = 20;    // offset, length, CRC, magic
// The staging buffer: big writes (the disk's bandwidth), small enough to stay in L2/L3
// between the copy into it and the write from it.
constexpr size_t kStageBytes = size_t(4) << 20;
// O_DIRECT wants buffers, offsets and lengths aligned to the logical block size: 4 KiB
// covers 512-byte and 4 KiB devices.
constexpr size_t kDirectAlignBytes = 4096;
static_assert(kStageBytes % kDirectAlignBytes == 0);
// Stages per file: kStages - 1 writes in flight while one fills (a queue the device keeps
// busy from; 2 measured 0.53-0.70 of the disk's bandwidth under load, buffered writes 1.0).
constexpr size_t kStages = 4;
// A bound on a sane index (about 100 bytes a shard): a larger length is damage.
constexpr uint32_t kIndexBytesMax = uint32_t(64) << 20;

// Where one value lies in the file.
struct Extent {
  uint64_t offset = 0, size = 0;
};

// A file written front to back through two page-aligned staging buffers (one fills while
// the other is written), with O_DIRECT where the file system takes it (no copy into the page
// cache: the device reads the buffer), with plain writes where it does not (tmpfs). Errors
// name the path and errno's text.
class StagedFile {
 public:
  StagedFile() = default;
  ~StagedFile();  // closes (an unfinished file stays as it is: the caller removes it)
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  runtime::Status open(const std::string& path);  // created, truncated
  runtime::Status append(const void* data, size_t n);
  uint64_t size() const { return flushed_ + used_; }  // the bytes appended so far
  // Writes what is staged and syncs the file's data and size (fdatasync); then closed.
  runtime::Status finish();
  // The byte at file offset `at` among those appended and not yet written (the fault hook's
  // corruption of a stored copy), or null.
  char* staged_byte(uint64_t at);

 private:
  runtime::Status hand_off();
  runtime::Status wait_pending(bool all);
  runtime::Status fail(const std::string& what, int err);

  std::string path_;
  int fd_ = -1;
  bool direct_ = false;
  char* stage_[kStages] = {};             // kStageBytes each, kDirectAlignBytes-aligned
  size_t cur_ = 0;                        // the stage being filled
  size_t used_ = 0;                       // bytes in it
  uint64_t flushed_ = 0;                  // the file offset of its first byte
  std::deque<std::future<int>> pending_;  // the other stages' writes, oldest first: 0 or errno
};

// The index of the shard file at `path`, open as `fd` with `file_bytes` bytes: the trailer,
// the index's CRC and every extent checked to lie between the file header and the index.
// Errors name the path and what is wrong.
runtime::Status read_index(int fd, const std::string& path, uint64_t file_bytes,
                           std::map<std::string, Extent>* index);

}  // namespace troupe::storage::shard_file
