#include "storage/shard_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "storage/crc32c.h"
#include "storage/shard_file.h"

namespace troupe::storage {

using runtime::Code;
using runtime::Result;
using runtime::Status;
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[4] = {'T', 'R', 'S', 'H'};

Status io_error(const std::string& what) {
  return Status(Code::io_error, what);
}

std::string header_json(const ShardData& s, int64_t step, uint32_t crc) {
  nlohmann::json h = {{"name", s.name}, {"dtype", "f32"}, {"shape", s.shape},
                      {"step", step},   {"crc32c", crc},  {"bytes", s.floats * 4}};
  return h.dump();
}

// "TRSH" | u32 header length (little-endian) | header.
std::string value_prefix(const std::string& header) {
  std::string p(kMagic, sizeof kMagic);
  auto n = static_cast<uint32_t>(header.size());
  for (int i = 0; i < 4; ++i) p.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return p + header;
}

// fsync of a directory, so the entries of the files in it survive a crash.
Status sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open directory " + dir + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return io_error("cannot sync directory " + dir + ": " + std::strerror(err));
  return Status();
}

Status check_names(const std::string& dir, const std::vector<ShardData>& shards) {
  std::set<std::string> seen;
  for (const ShardData& s : shards) {
    if (!seen.insert(s.name).second)
      return Status(Code::invalid_argument,
                    "cannot write " + dir + ": shard " + s.name + " is given twice");
    if (s.floats > 0 && s.data == nullptr)
      return Status(Code::invalid_argument,
                    "cannot write " + dir + ": shard " + s.name + " has no data pointer");
  }
  return Status();
}

// The shard corrupt@S damages: the first with bytes to flip (shards.size(): none).
size_t corrupt_index(const std::vector<ShardData>& shards, int64_t step,
                     const StorageFaults& faults) {
  if (faults.corrupt_at(step))
    for (size_t i = 0; i < shards.size(); ++i)
      if (shards[i].floats > 0) return i;
  return shards.size();
}

std::string le_bytes(uint64_t v, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

// One shard's value appended to *file (its CRC taken first, into rec); with corrupt, one
// byte of the stored copy flipped after, while it is still staged.
Status append_value(const ShardData& s, int64_t step, bool corrupt, shard_file::StagedFile* file,
                    ShardRecord* rec) {
  const size_t n = s.floats * sizeof(float);
  rec->name = s.name;
  rec->bytes = n;
  rec->crc32c = crc32c(s.data, n);
  const std::string prefix = value_prefix(header_json(s, step, rec->crc32c));
  Status st = file->append(prefix.data(), prefix.size());
  const size_t flip = n - n / 2 - 1;  // a raw byte near the middle
  if (st.ok() && corrupt) st = file->append(s.data, flip + 1);
  if (st.ok() && corrupt) {
    char* b = file->staged_byte(file->size() - 1);
    if (b != nullptr) *b ^= 0x01;
  }
  const size_t done = corrupt ? flip + 1 : 0;
  if (st.ok()) st = file->append(reinterpret_cast<const char*>(s.data) + done, n - done);
  return st;
}

// Every shard, in name order, into the shard file `path` (shard_file.h), synced.
Status write_file(const std::string& path, int64_t step, const std::vector<ShardData>& shards,
                  size_t corrupt, std::vector<ShardRecord>* records) {
  std::vector<size_t> order(shards.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return shards[a].name < shards[b].name; });
  shard_file::StagedFile file;
  Status st = file.open(path);
  const std::string head =
      std::string(shard_file::kFileMagic, 4) + le_bytes(shard_file::kVersion, 4);
  if (st.ok()) st = file.append(head.data(), head.size());
  nlohmann::json index = nlohmann::json::array();
  for (size_t k = 0; st.ok() && k < order.size(); ++k) {
    const size_t i = order[k];
    const uint64_t offset = file.size();
    st = append_value(shards[i], step, i == corrupt, &file, &(*records)[i]);
    index.push_back({{"name", shards[i].name}, {"offset", offset}, {"size", file.size() - offset}});
  }
  const std::string text = index.dump();
  const std::string trailer = le_bytes(file.size(), 8) + le_bytes(text.size(), 4) +
                              le_bytes(crc32c(text.data(), text.size()), 4) +
                              std::string(shard_file::kTrailerMagic, 4);
  if (st.ok()) st = file.append(text.data(), text.size());
  if (st.ok()) st = file.append(trailer.data(), trailer.size());
  if (st.ok()) st = file.finish();
  if (!st.ok()) return io_error("cannot write checkpoint shards: " + st.message());
  return Status();
}

fs::path parent_or_dot(const fs::path& p) {
  return p.has_parent_path() ? p.parent_path() : fs::path(".");
}

}  // namespace

Result<std::vector<ShardRecord>> write_shards(const std::string& dir, const std::string& writer,
                                              int64_t step, const std::vector<ShardData>& shards,
                                              const StorageFaults& faults) {
  if (Status s = check_names(dir, shards); !s.ok()) return s;
  std::error_code ec;
  fs::remove_all(dir, ec);  // a retry after a crash (or an old database there): never in a manifest
  if (ec) return io_error("cannot remove the old shards at " + dir + ": " + ec.message());
  if (faults.full_at(step))
    return io_error(
        fmt::format("cannot write checkpoint shards to {}: {} (injected by "
                    "TROUPE_STORAGE_FAULT full@{})",
                    dir, std::strerror(ENOSPC), step));
  const fs::path step_dir = parent_or_dot(dir);
  fs::create_directories(step_dir, ec);
  if (ec) return io_error("cannot create " + step_dir.string() + ": " + ec.message());
  std::vector<ShardRecord> records(shards.size());
  for (ShardRecord& r : records) r.writer = writer;
  Status s = write_file(dir, step, shards, corrupt_index(shards, step, faults), &records);
  if (s.ok() && faults.sync_fails_at(step))
    s =
        io_error(fmt::format("cannot sync checkpoint shards in {}: {} (injected by "
                             "TROUPE_STORAGE_FAULT sync@{})",
                             dir, std::strerror(EIO), step));
  // The directory entries: the file's, the step directory's.
  if (s.ok()) s = sync_dir(step_dir.string());
  if (s.ok()) s = sync_dir(parent_or_dot(step_dir).string());
  if (!s.ok()) {
    fs::remove_all(dir, ec);  // nothing half-written left to be mistaken for shards
    return s;
  }
  return records;
}

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return fmt::format("{}/checkpoints/step-{:010d}", run_dir, step);
}

void lower_this_thread_priority() {
  // SCHED_IDLE: the thread runs only on a core nothing else wants (no privilege needed).
  // Where that is refused, nice +19, the weakest share CFS gives.
  const sched_param none{};
  if (::sched_setscheduler(0, SCHED_IDLE, &none) != 0)
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
}

}  // namespace troupe::storage
