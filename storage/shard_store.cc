#include "storage/shard_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
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

// The shards go into one SST file written directly (SstFileWriter), which the fresh database
// then ingests: one sequential write and one sync, measured 2-5x the bandwidth of puts
// through the memtable and a flush (no WAL either way). Not blob files, though they suit
// big values written once: RocksDB opened read-only cannot Get a blob value
// (facebook/rocksdb#12503, 7.8 included), and readers open read-only.
rocksdb::Options options_for_shards() {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.error_if_exists = true;  // the dir was removed just before: someone else is writing it
  o.compression = rocksdb::kNoCompression;  // float32 weights do not compress
  o.disable_auto_compactions = true;        // written once, read whole: nothing to compact
  o.keep_log_file_num = 1;
  return o;
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

// The stored value of one shard into *value (its CRC taken first, into rec); with corrupt,
// one byte of the stored copy flipped after.
void build_value(const ShardData& s, int64_t step, bool corrupt, ShardRecord* rec,
                 std::string* value) {
  size_t n = s.floats * sizeof(float);
  rec->name = s.name;
  rec->bytes = n;
  rec->crc32c = crc32c(s.data, n);
  *value = value_prefix(header_json(s, step, rec->crc32c));
  value->append(reinterpret_cast<const char*>(s.data), n);
  if (corrupt && n > 0) (*value)[value->size() - n / 2 - 1] ^= 0x01;
}

// The shard corrupt@S damages: the first with bytes to flip (shards.size(): none).
size_t corrupt_index(const std::vector<ShardData>& shards, int64_t step,
                     const StorageFaults& faults) {
  if (faults.corrupt_at(step))
    for (size_t i = 0; i < shards.size(); ++i)
      if (shards[i].floats > 0) return i;
  return shards.size();
}

// Every shard, in key order as an SST requires, into the SST file `path`, synced.
Status write_sst(const std::string& path, const std::string& dir, int64_t step,
                 const std::vector<ShardData>& shards, size_t corrupt,
                 std::vector<ShardRecord>* records) {
  std::vector<size_t> order(shards.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return shards[a].name < shards[b].name; });
  rocksdb::SstFileWriter sst(rocksdb::EnvOptions(), options_for_shards());
  rocksdb::Status st = sst.Open(path);
  if (!st.ok()) return io_error("cannot create " + path + ": " + st.ToString());
  std::string value;  // reused: one allocation of the largest shard
  for (size_t i : order) {
    build_value(shards[i], step, i == corrupt, &(*records)[i], &value);
    st = sst.Put(shards[i].name, value);
    if (!st.ok())
      return io_error("cannot write shard " + shards[i].name + " to " + dir + ": " + st.ToString());
  }
  st = sst.Finish();  // writes the index and footer, then syncs the file
  if (!st.ok()) return io_error("cannot sync shards to " + path + ": " + st.ToString());
  return Status();
}

// The database at dir, created, given the SST file (moved in), closed.
Status create_database(const std::string& dir, const std::string& sst_path, bool has_sst) {
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status st = rocksdb::DB::Open(options_for_shards(), dir, &raw_db);
  if (!st.ok()) return io_error("cannot create shard database " + dir + ": " + st.ToString());
  std::unique_ptr<rocksdb::DB> db(raw_db);
  if (has_sst) {
    rocksdb::IngestExternalFileOptions io;
    io.move_files = true;  // a hard link, not a second copy of the bytes
    st = db->IngestExternalFile({sst_path}, io);
    if (!st.ok()) return io_error("cannot add the shards to " + dir + ": " + st.ToString());
  }
  st = db->Close();
  if (!st.ok()) return io_error("cannot close shard database " + dir + ": " + st.ToString());
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
  fs::remove_all(dir, ec);  // a retry after a crash: the old attempt was never in a manifest
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
  // Beside dir, not in it: RocksDB owns what is in its directory.
  const std::string sst_path = dir + ".ingest.sst";
  fs::remove(sst_path, ec);
  Status s;
  if (!shards.empty())
    s = write_sst(sst_path, dir, step, shards, corrupt_index(shards, step, faults), &records);
  if (s.ok() && faults.sync_fails_at(step))
    s =
        io_error(fmt::format("cannot sync checkpoint shards in {}: {} (injected by "
                             "TROUPE_STORAGE_FAULT sync@{})",
                             dir, std::strerror(EIO), step));
  if (s.ok()) s = create_database(dir, sst_path, !shards.empty());
  fs::remove(sst_path, ec);  // moved in (RocksDB removes it), or left by a failure
  // The directory entries: the database's files, the database's, the step directory's.
  if (s.ok()) s = sync_dir(dir);
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
