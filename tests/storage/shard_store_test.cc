// Checkpoint shards on RocksDB: round trips, every check a reader makes, the fault hook.
#include "storage/shard_store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <filesystem>

#include "storage/crc32c.h"
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

// Rewrites one byte of shard `name`'s stored value in place, `from_end` bytes before its end.
void flip_stored_byte(const std::string& dir, const std::string& name, size_t from_end) {
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string v;
  ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), name, &v).ok());
  v[v.size() - from_end] ^= 0x40;
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), name, v).ok());
  ASSERT_TRUE(db->Close().ok());
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

TEST(ShardStore, RewriteReplacesTheOldDatabase) {
  std::string dir = fresh_test_dir() + "/w0";
  Tensors t;
  ASSERT_TRUE(write_shards(dir, "w0", 2, t.shards()).ok());
  std::vector<ShardData> one = {t.shards()[0]};
  ASSERT_TRUE(write_shards(dir, "w0", 2, one).ok());
  auto reader = ShardReader::open(dir);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(reader.value().names(), (std::vector<std::string>{"param/a"}));
}

TEST(ShardStore, NoShardsIsAnEmptyDatabase) {
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
  EXPECT_FALSE(fs::exists(dir + ".ingest.sst"));
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

TEST(ShardStore, CheckpointDirSortsByStep) {
  EXPECT_EQ(checkpoint_dir("/runs/a", 40), "/runs/a/checkpoints/step-0000000040");
  EXPECT_LT(checkpoint_dir("r", 9), checkpoint_dir("r", 10));
}

}  // namespace
}  // namespace troupe::storage
