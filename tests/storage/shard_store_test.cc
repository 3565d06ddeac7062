// Checkpoint shards in shard files: round trips, every check a reader makes, the fault hook,
// and databases of the RocksDB store before them, still read.
#include "storage/shard_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "storage/crc32c.h"
#include "storage/shard_file.h"
#include "storage_test_dir.h"

namespace troupe::storage {
namespace {

using runtime::Code;
namespace fs = std::filesystem;

struct Tensors {
  std::vector<float> a, b, empty;
  Tensors() : a(6), b(1000 * 1000 + 3) {
    for (size_t i = 0; i < a.size(); ++i) a[i] = 0.5f * static_cast<float>(i) - 1.0f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 977) * 1e-3f;
  }
  std::vector<ShardData> shards() const {
    return {{"param/a", {2, 3}, a.data(), a.size()},
            {"optim/b", {static_cast<int64_t>(b.size())}, b.data(), b.size()},
            {"engram/t0/m", {0, 4}, empty.data(), 0}};
  }
};

uint32_t crc_of(const std::vector<float>& v) {
  return crc32c(v.data(), v.size() * sizeof(float));
}

// Flips one byte of the shard file `path` at `offset` (in place).
void flip_byte_at(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good());
  f.seekg(std::streamoff(offset));
  char c = 0;
  f.get(c);
  f.seekp(std::streamoff(offset));
  f.put(static_cast<char>(c ^ 0x40));
  ASSERT_TRUE(f.good());
}

// Rewrites one byte of shard `name`'s stored value in place, `from_end` bytes before its end.
void flip_stored_byte(const std::string& path, const std::string& name, size_t from_end) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::map<std::string, shard_file::Extent> index;
  const runtime::Status s = shard_file::read_index(fd, path, fs::file_size(path), &index);
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_EQ(index.count(name), 1u);
  flip_byte_at(path, index[name].offset + index[name].size - from_end);
}

TEST(ShardStore, RoundTrip) {
  std::string dir = checkpoint_dir(fresh_test_dir(), 8) + "/w0";
  Tensors t;
  auto recs = write_shards(dir, "w0", 8, t.shards());
  ASSERT_TRUE(recs.ok()) << recs.status().message();
  ASSERT_EQ(recs.value().size(), 3u);
  EXPECT_EQ(recs.value()[1].name, "optim/b");
  EXPECT_EQ(recs.value()[1].writer, "w0");
  EXPECT_EQ(recs.value()[1].bytes, t.b.size() * 4);
  EXPECT_EQ(recs.value()[1].crc32c, crc_of(t.b));
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  EXPECT_EQ(reader.value().names(),
            (std::vector<std::string>{"engram/t0/m", "optim/b", "param/a"}));
  std::vector<float> out;
  std::vector<int64_t> shape;
  ASSERT_TRUE(reader.value().read("param/a", 8, &out, &shape).ok());
  EXPECT_EQ(out, t.a);
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 3}));
  runtime::Status sb = reader.value().read("optim/b", 8, &out);
  ASSERT_TRUE(sb.ok()) << sb.message();
  EXPECT_EQ(out, t.b);
  ASSERT_TRUE(reader.value().read("engram/t0/m", 8, &out, &shape).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(shape, (std::vector<int64_t>{0, 4}));
}

TEST(ShardStore, RewriteReplacesTheOldFile) {
  std::string dir = fresh_test_dir() + "/w0";
  Tensors t;
  ASSERT_TRUE(write_shards(dir, "w0", 2, t.shards()).ok());
  std::vector<ShardData> one = {t.shards()[0]};
  ASSERT_TRUE(write_shards(dir, "w0", 2, one).ok());
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader.value().names(), (std::vector<std::string>{"param/a"}));
}

TEST(ShardStore, NoShardsIsAnEmptyFile) {
  std::string dir = fresh_test_dir() + "/w3";
  auto r = write_shards(dir, "w3", 2, {});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r.value().empty());
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  EXPECT_TRUE(reader.value().names().empty());
}

TEST(ShardStore, DuplicateNamesAreRefused) {
  Tensors t;
  std::vector<ShardData> twice = {t.shards()[0], t.shards()[0]};
  auto r = write_shards(fresh_test_dir() + "/w0", "w0", 2, twice);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shard param/a is given twice"), std::string::npos);
}

TEST(ShardStore, ReaderChecksNameAndStep) {
  std::string dir = fresh_test_dir() + "/w0";
  Tensors t;
  ASSERT_TRUE(write_shards(dir, "w0", 4, t.shards()).ok());
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok());
  std::vector<float> out;
  runtime::Status s = reader.value().read("param/a", 6, &out);
  EXPECT_EQ(s.message(), dir + ": shard param/a: header is of step 4, not 6");
  s = reader.value().read("param/zz", 4, &out);
  EXPECT_EQ(s.message(), dir + ": shard param/zz: not in the database");
  EXPECT_FALSE(ShardReader::open(dir + "-missing").ok());
}

TEST(ShardStore, CorruptedBytesAreNamed) {
  std::string dir = fresh_test_dir() + "/w0";
  Tensors t;
  ASSERT_TRUE(write_shards(dir, "w0", 4, t.shards()).ok());
  flip_stored_byte(dir, "optim/b", 1);  // the last raw byte
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok());
  std::vector<float> out;
  runtime::Status s = reader.value().read("optim/b", 4, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::io_error);
  EXPECT_NE(s.message().find(dir + ": shard optim/b: CRC32C mismatch: header 0x"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(reader.value().read("param/a", 4, &out).ok());
}

TEST(ShardStore, InjectedFullDiskLeavesNothing) {
  std::string dir = fresh_test_dir() + "/step/w0";
  Tensors t;
  auto r = write_shards(dir, "w0", 7, t.shards(), StorageFaults::parse("full@7"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::io_error);
  EXPECT_EQ(r.status().message(), "cannot write checkpoint shards to " + dir +
                                      ": No space left on device (injected by "
                                      "TROUPE_STORAGE_FAULT full@7)");
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(write_shards(dir, "w0", 8, t.shards(), StorageFaults::parse("full@7")).ok());
}

TEST(ShardStore, InjectedSyncFailureLeavesNothing) {
  std::string dir = fresh_test_dir() + "/step/w0";
  Tensors t;
  auto r = write_shards(dir, "w0", 7, t.shards(), StorageFaults::parse("sync@7"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cannot sync checkpoint shards in " + dir),
            std::string::npos);
  EXPECT_NE(r.status().message().find("(injected by TROUPE_STORAGE_FAULT sync@7)"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir));
}

TEST(ShardStore, InjectedCorruptionIsCaughtByTheReader) {
  std::string dir = fresh_test_dir() + "/w0";
  Tensors t;
  auto r = write_shards(dir, "w0", 3, t.shards(), StorageFaults::parse("corrupt@3"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].crc32c, crc_of(t.a));  // the CRC of the bytes as they should be
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok());
  std::vector<float> out;
  runtime::Status s = reader.value().read("param/a", 3, &out);
  EXPECT_NE(s.message().find("CRC32C mismatch"), std::string::npos) << s.message();
  EXPECT_TRUE(reader.value().read("optim/b", 3, &out).ok());
}

// Two writers of one checkpoint, read by name through the manifest's records.
TEST(CheckpointReader, ReadsAcrossWritersAndChecksTheManifest) {
  std::string step_dir = checkpoint_dir(fresh_test_dir(), 12);
  Tensors t;
  auto shards = t.shards();
  auto r0 = write_shards(step_dir + "/w0", "w0", 12, {shards[0]});
  auto r1 = write_shards(step_dir + "/w1", "w1", 12, {shards[1], shards[2]});
  ASSERT_TRUE(r0.ok() && r1.ok());
  std::vector<ShardRecord> recs = r0.value();
  recs.insert(recs.end(), r1.value().begin(), r1.value().end());
  CheckpointReader reader(step_dir, 12, recs);
  EXPECT_TRUE(reader.has("optim/b"));
  EXPECT_FALSE(reader.has("param/zz"));
  std::vector<float> out;
  ASSERT_TRUE(reader.read("optim/b", &out).ok());
  EXPECT_EQ(out, t.b);
  ASSERT_TRUE(reader.read("param/a", &out).ok());
  EXPECT_EQ(out, t.a);
  EXPECT_TRUE(reader.verify_all().ok());
  EXPECT_EQ(reader.read("param/zz", &out).message(),
            step_dir + ": shard param/zz is not in the manifest of step 12");
  recs[0].crc32c ^= 1;  // a manifest that disagrees with a self-consistent shard
  CheckpointReader wrong(step_dir, 12, recs);
  runtime::Status s = wrong.verify_all();
  EXPECT_NE(s.message().find("shard param/a: does not match the manifest"), std::string::npos)
      << s.message();
}

TEST(CheckpointReader, VerifyAllFindsACorruptShard) {
  std::string step_dir = checkpoint_dir(fresh_test_dir(), 5);
  Tensors t;
  auto r = write_shards(step_dir + "/w0", "w0", 5, t.shards());
  ASSERT_TRUE(r.ok());
  flip_stored_byte(step_dir + "/w0", "param/a", 3);
  CheckpointReader reader(step_dir, 5, r.value());
  runtime::Status s = reader.verify_all();
  EXPECT_NE(s.message().find("shard param/a: CRC32C mismatch"), std::string::npos) << s.message();
}

// A file cut short (a crash mid-write that a manifest never named), or with its index
// damaged, is refused as a whole, naming the file.
TEST(ShardStore, ACutOrDamagedFileIsRefused) {
  std::string path = fresh_test_dir() + "/w0";
  Tensors t;
  ASSERT_TRUE(write_shards(path, "w0", 4, t.shards()).ok());
  const uint64_t size = fs::file_size(path);
  flip_byte_at(path, size - shard_file::kTrailerBytes - 3);  // inside the index
  auto damaged = ShardReader::open(path);
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().message(),
            path + ": not a readable shard file: its index fails its CRC32C");
  fs::resize_file(path, size / 2);
  auto cut = ShardReader::open(path);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find(path + ": not a readable shard file: no TRSF magic"),
            std::string::npos)
      << cut.status().message();
}

// Where O_DIRECT is refused (tmpfs), the file is written with plain writes, the same bytes.
TEST(ShardStore, WritesWhereDirectIOIsRefused) {
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string path = "/dev/shm/troupe_shard_store_test_" + std::to_string(::getpid());
  Tensors t;
  auto recs = write_shards(path, "w0", 4, t.shards());
  ASSERT_TRUE(recs.ok()) << recs.status().message();
  auto reader = ShardReader::open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  std::vector<float> out;
  EXPECT_TRUE(reader.value().read("optim/b", 4, &out).ok());
  EXPECT_EQ(out, t.b);
  fs::remove(path);
}

// Checkpoints of the store before the shard file: a RocksDB database per writer, one value
// per shard in the same value format. Still read, with every check.
TEST(ShardStore, ReadsTheRocksDBStoreBeforeIt) {
  const std::string base = fresh_test_dir(), dir = base + "/w0", file = base + "/file";
  Tensors t;
  auto recs = write_shards(file, "w0", 9, t.shards());
  ASSERT_TRUE(recs.ok());
  auto from_file = ShardReader::open(file);
  ASSERT_TRUE(from_file.ok());
  // The same values, as the old store held them (read back through the file's index).
  const int fd = ::open(file.c_str(), O_RDONLY);
  std::map<std::string, shard_file::Extent> index;
  ASSERT_TRUE(shard_file::read_index(fd, file, fs::file_size(file), &index).ok());
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(o, dir, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  for (const auto& [name, x] : index) {
    std::string v(x.size, '\0');
    ASSERT_EQ(::pread(fd, v.data(), v.size(), off_t(x.offset)), ssize_t(v.size()));
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), name, v).ok());
  }
  ::close(fd);
  ASSERT_TRUE(db->Close().ok());
  db.reset();
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  EXPECT_EQ(reader.value().names(), from_file.value().names());
  std::vector<float> out;
  ASSERT_TRUE(reader.value().read("optim/b", 9, &out).ok());
  EXPECT_EQ(out, t.b);
  EXPECT_EQ(reader.value().read("param/a", 8, &out).message(),
            dir + ": shard param/a: header is of step 9, not 8");
}

TEST(ShardStore, CheckpointDirSortsByStep) {
  EXPECT_EQ(checkpoint_dir("/runs/a", 40), "/runs/a/checkpoints/step-0000000040");
  EXPECT_LT(checkpoint_dir("r", 9), checkpoint_dir("r", 10));
}

}  // namespace
}  // namespace troupe::storage
