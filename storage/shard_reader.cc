// The read side of shard_store.h: ShardReader (one writer's database) and CheckpointReader
// (a checkpoint's shards by name, checked against its manifest).
#include <fcntl.h>
#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "storage/crc32c.h"
#include "storage/json_number.h"
#include "storage/shard_file.h"
#include "storage/shard_store.h"

namespace troupe::storage {

using runtime::Code;
using runtime::Result;
using runtime::Status;

namespace {

constexpr size_t kPrefixBytes = 8;  // "TRSH" + u32 header length

struct ParsedValue {
  nlohmann::json header;
  const char* raw = nullptr;
  size_t raw_bytes = 0;
};

// Splits a stored value into its header and raw bytes; "" or what is malformed.
std::string parse_value(const rocksdb::Slice& v, ParsedValue* out) {
  if (v.size() < kPrefixBytes || std::memcmp(v.data(), "TRSH", 4) != 0)
    return "not a shard value (no TRSH magic)";
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<uint8_t>(v[4 + i])) << (8 * i);
  if (n > v.size() - kPrefixBytes)
    return fmt::format("header length {} runs past the value's {} bytes", n, v.size());
  try {
    out->header = nlohmann::json::parse(v.data() + kPrefixBytes, v.data() + kPrefixBytes + n);
  } catch (const nlohmann::json::exception& e) {
    return std::string("header is not JSON: ") + e.what();
  }
  out->raw = v.data() + kPrefixBytes + n;
  out->raw_bytes = v.size() - kPrefixBytes - n;
  return "";
}

// The header against what the reader expects and the bytes that follow it.
std::string check_header(const ParsedValue& p, const std::string& name, int64_t step, uint32_t* crc,
                         std::vector<int64_t>* shape) {
  try {
    const nlohmann::json& h = p.header;
    if (h.at("name").get<std::string>() != name)
      return "header names shard " + h.at("name").get<std::string>();
    const auto header_step = json_integer<int64_t>(h.at("step"));
    if (!header_step) return "header step " + h.at("step").dump() + " is not an integer";
    if (*header_step != step)
      return fmt::format("header is of step {}, not {}", *header_step, step);
    if (h.at("dtype").get<std::string>() != "f32")
      return "dtype " + h.at("dtype").get<std::string>() + ", expected f32";
    const auto header_bytes = json_integer<uint64_t>(h.at("bytes"));
    const auto header_shape = json_integers<int64_t>(h.at("shape"));
    const auto header_crc = json_integer<uint32_t>(h.at("crc32c"));
    if (!header_bytes || !header_shape || !header_crc)
      return "header bytes, shape or crc32c is not an integer (list) in range: " + h.dump();
    const uint64_t bytes = *header_bytes;
    *shape = *header_shape;
    *crc = *header_crc;
    if (bytes != p.raw_bytes)
      return fmt::format("header says {} bytes, the value holds {}", bytes, p.raw_bytes);
    int64_t numel = 1;  // checked: a damaged shape must not overflow into a size that fits
    for (int64_t d : *shape) {
      if (d < 0 || (d > 0 && numel > INT64_MAX / d))
        return "shape " + h.at("shape").dump() + " has a negative or too large dimension";
      numel *= d;
    }
    if (bytes % sizeof(float) != 0 || static_cast<uint64_t>(numel) != bytes / sizeof(float))
      return fmt::format("shape has {} elements but the value holds {} bytes", numel, bytes);
  } catch (const nlohmann::json::exception& e) {
    return std::string("header field missing or malformed: ") + e.what();
  }
  return "";
}

}  // namespace

// A shard file (shard_file.h), or a RocksDB database directory (checkpoints written before
// the shard file: still read).
struct ShardReader::Impl {
  std::string dir;
  std::unique_ptr<rocksdb::DB> db;  // a database directory
  int fd = -1;                      // a shard file, and where its values lie
  std::map<std::string, shard_file::Extent> index;
  ~Impl() {
    if (fd >= 0) ::close(fd);
  }
  // Shard `name`'s stored value into *value; "" or what went wrong ("not in the database").
  std::string get(const std::string& name, std::string* value) const;
};

std::string ShardReader::Impl::get(const std::string& name, std::string* value) const {
  if (db) {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;  // read once, whole
    rocksdb::Status st = db->Get(ro, db->DefaultColumnFamily(), name, value);
    return st.IsNotFound() ? "not in the database" : st.ok() ? "" : st.ToString();
  }
  const auto at = index.find(name);
  if (at == index.end()) return "not in the database";
  value->resize(at->second.size);
  size_t done = 0;
  while (done < value->size()) {
    const ssize_t r =
        ::pread(fd, value->data() + done, value->size() - done, off_t(at->second.offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? std::strerror(errno) : "the file ends inside its value";
    done += size_t(r);
  }
  return "";
}

ShardReader::ShardReader() : impl_(std::make_unique<Impl>()) {}
ShardReader::~ShardReader() = default;
ShardReader::ShardReader(ShardReader&&) noexcept = default;
ShardReader& ShardReader::operator=(ShardReader&&) noexcept = default;

Result<ShardReader> ShardReader::open(const std::string& dir) {
  struct stat info {};
  if (::stat(dir.c_str(), &info) == 0 && S_ISREG(info.st_mode)) {  // a shard file
    ShardReader r;
    r.impl_->dir = dir;
    r.impl_->fd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
    if (r.impl_->fd < 0)
      return Status(Code::io_error, "cannot open shard file " + dir + ": " + std::strerror(errno));
    Status s = shard_file::read_index(r.impl_->fd, dir, uint64_t(info.st_size), &r.impl_->index);
    if (!s.ok()) return s;
    return r;
  }
  rocksdb::Options o;
  o.create_if_missing = false;
  rocksdb::DB* db = nullptr;
  rocksdb::Status st = rocksdb::DB::OpenForReadOnly(o, dir, &db);
  if (!st.ok())
    return Status(Code::io_error, "cannot open shard database " + dir + ": " + st.ToString());
  ShardReader r;
  r.impl_->dir = dir;
  r.impl_->db.reset(db);
  return r;
}

Status ShardReader::read(const std::string& name, int64_t step, std::vector<float>* out,
                         std::vector<int64_t>* shape) const {
  auto fail = [&](const std::string& what) {
    return Status(Code::io_error, impl_->dir + ": shard " + name + ": " + what);
  };
  std::string value;
  if (std::string err = impl_->get(name, &value); !err.empty()) return fail(err);
  ParsedValue p;
  std::vector<int64_t> dims;
  uint32_t header_crc = 0;
  std::string bad = parse_value(value, &p);
  if (bad.empty()) bad = check_header(p, name, step, &header_crc, &dims);
  if (!bad.empty()) return fail(bad);
  uint32_t crc = crc32c(p.raw, p.raw_bytes);
  if (crc != header_crc)
    return fail(fmt::format("CRC32C mismatch: header {:#010x}, bytes {:#010x}", header_crc, crc));
  out->resize(p.raw_bytes / sizeof(float));
  if (p.raw_bytes > 0) std::memcpy(out->data(), p.raw, p.raw_bytes);
  if (shape != nullptr) *shape = std::move(dims);
  return Status();
}

std::vector<std::string> ShardReader::names() const {
  std::vector<std::string> names;
  if (!impl_->db) {
    for (const auto& [name, extent] : impl_->index) names.push_back(name);
    return names;  // a std::map: sorted
  }
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) names.push_back(it->key().ToString());
  return names;  // RocksDB's bytewise order: sorted
}

CheckpointReader::CheckpointReader(std::string step_dir, int64_t step,
                                   std::vector<ShardRecord> shards)
    : step_dir_(std::move(step_dir)), step_(step) {
  for (ShardRecord& r : shards) by_name_[r.name] = std::move(r);
}

Status CheckpointReader::read(const std::string& name, std::vector<float>* out) {
  auto rec = by_name_.find(name);
  if (rec == by_name_.end())
    return Status(Code::io_error, fmt::format("{}: shard {} is not in the manifest of step {}",
                                              step_dir_, name, step_));
  const ShardRecord& r = rec->second;
  auto& reader = open_[r.writer];
  if (!reader) {
    Result<ShardReader> opened = ShardReader::open(step_dir_ + "/" + r.writer);
    if (!opened.ok()) return opened.status();
    reader = std::make_unique<ShardReader>(std::move(opened).value());
  }
  if (Status s = reader->read(name, step_, out); !s.ok()) return s;
  size_t bytes = out->size() * sizeof(float);
  uint32_t crc = crc32c(out->data(), bytes);
  if (bytes != r.bytes || crc != r.crc32c)
    return Status(Code::io_error,
                  fmt::format("{}/{}: shard {}: does not match the manifest: manifest {} bytes "
                              "CRC32C {:#010x}, stored {} bytes CRC32C {:#010x}",
                              step_dir_, r.writer, name, r.bytes, r.crc32c, bytes, crc));
  return Status();
}

Status CheckpointReader::verify_all() {
  std::vector<float> buf;
  for (const auto& [name, rec] : by_name_)
    if (Status s = read(name, &buf); !s.ok()) return s;
  return Status();
}

}  // namespace troupe::storage
