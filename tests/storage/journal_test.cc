// The coordinator journal: records in order across reopen, manifests, meta, read-only opens.
#include "storage/journal.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

#include "storage_test_dir.h"

namespace troupe::storage {
namespace {

using json = nlohmann::json;
using runtime::Code;

Manifest sample_manifest(int64_t step) {
  Manifest m;
  m.step = step;
  m.epoch = 3;
  m.config_hash = "0123456789abcdef";
  m.job = {{"model", {{"d_model", 64}}}};
  m.shards = {{"param/a", "w0", 0xdeadbeef, 24}, {"optim/b", "w1", 7, 4000000}};
  return m;
}

void expect_same(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_EQ(a.step, b.step);
  ASSERT_EQ(a.shards.size(), b.shards.size());
  EXPECT_EQ(a.shards[0].crc32c, b.shards[0].crc32c);
  EXPECT_EQ(a.shards[1].writer, b.shards[1].writer);
}

std::unique_ptr<Journal> open_journal(const std::string& dir, bool read_only = false) {
  auto j = Journal::open(dir, read_only);
  if (!j.ok()) throw std::runtime_error(j.status().message());
  return std::move(j).value();
}

TEST(Manifest, JsonRoundTrip) {
  Manifest m = sample_manifest(40);
  expect_same(Manifest::from_json(json::parse(m.to_json().dump())), m);
}

TEST(Manifest, MissingFieldIsNamed) {
  for (const char* field : {"step", "epoch", "config_hash", "job", "shards"}) {
    json j = sample_manifest(4).to_json();
    j.erase(field);
    try {
      Manifest::from_json(j);
      ADD_FAILURE() << field << " was not missed";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), std::string("manifest: field \"") + field + "\" is missing");
    }
  }
  json j = sample_manifest(4).to_json();
  j["shards"][1].erase("crc32c");
  EXPECT_THROW(
      {
        try {
          Manifest::from_json(j);
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "manifest shard: field \"crc32c\" is missing");
          throw;
        }
      },
      std::runtime_error);
  j = sample_manifest(4).to_json();
  j["step"] = "forty";
  EXPECT_THROW(Manifest::from_json(j), std::runtime_error);
}

TEST(Journal, RecordsKeepTheirOrderAndSequenceAcrossReopen) {
  std::string dir = fresh_test_dir();
  uint64_t s1 = 0, s2 = 0, s3 = 0;
  {
    auto j = open_journal(dir);
    EXPECT_TRUE(j->records().empty());
    ASSERT_TRUE(j->append({{"kind", "view"}, {"epoch", 1}}, &s1).ok());
    ASSERT_TRUE(j->append({{"kind", "commit"}, {"step", 0}}, &s2).ok());
  }
  EXPECT_EQ(s2, s1 + 1);
  auto j = open_journal(dir);
  ASSERT_TRUE(j->append({{"kind", "commit"}, {"step", 1}}, &s3).ok());
  EXPECT_EQ(s3, s2 + 1);
  std::vector<json> r = j->records();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0]["kind"], "view");
  EXPECT_EQ(r[2]["step"], 1);
}

TEST(Journal, RecordsNeedAKind) {
  auto j = open_journal(fresh_test_dir());
  runtime::Status s = j->append({{"step", 3}});
  EXPECT_EQ(s.code(), Code::invalid_argument);
  EXPECT_EQ(j->append(json::array()).code(), Code::invalid_argument);
  EXPECT_TRUE(j->records().empty());
}

TEST(Journal, ManifestsSurviveReopenAndDeletion) {
  std::string dir = fresh_test_dir();
  {
    auto j = open_journal(dir);
    ASSERT_TRUE(j->put_manifest(sample_manifest(20)).ok());
    ASSERT_TRUE(j->put_manifest(sample_manifest(10)).ok());
    ASSERT_TRUE(j->put_manifest(sample_manifest(30)).ok());
  }
  auto j = open_journal(dir);
  EXPECT_EQ(j->manifest_steps(), (std::vector<int64_t>{10, 20, 30}));
  auto m = j->manifest(20);
  ASSERT_TRUE(m.ok()) << m.status().message();
  expect_same(m.value(), sample_manifest(20));
  ASSERT_TRUE(j->delete_manifest(20).ok());
  EXPECT_EQ(j->manifest_steps(), (std::vector<int64_t>{10, 30}));
  EXPECT_EQ(j->manifest(20).status().message(), "no checkpoint of step 20 in " + dir + "/journal");
  EXPECT_FALSE(j->delete_manifest(20).ok());
  std::vector<json> r = j->records();
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0], (json{{"kind", "checkpoint"}, {"step", 20}}));
  EXPECT_EQ(r[3], (json{{"kind", "checkpoint_deleted"}, {"step", 20}}));
}

// troupe train's loop appends its commits while its checkpoint writer records manifests and
// deletes old ones (launch/train_run.cc): every record lands once, under a sequence number of
// its own, each thread's in its order. Without the Journal's lock two writers took the same
// sequence number and one record overwrote the other.
TEST(Journal, TwoThreadsWritingLoseNoRecord) {
  auto j = open_journal(fresh_test_dir());
  constexpr int kCommits = 200, kManifests = 40;
  std::thread writer([&] {
    for (int s = 0; s < kManifests; ++s) {
      ASSERT_TRUE(j->put_manifest(sample_manifest(s)).ok());
      if (s > 0) {
        ASSERT_TRUE(j->delete_manifest(s - 1).ok());
      }
    }
  });
  for (int s = 0; s < kCommits; ++s) ASSERT_TRUE(j->append({{"kind", "commit"}, {"step", s}}).ok());
  writer.join();
  int commits = 0, checkpoints = 0, deleted = 0;
  for (const json& r : j->records()) {
    const std::string kind = r["kind"];
    int* seen = kind == "commit" ? &commits : kind == "checkpoint" ? &checkpoints : &deleted;
    EXPECT_EQ(r["step"], (*seen)++) << r.dump();
  }
  EXPECT_EQ(commits, kCommits);
  EXPECT_EQ(checkpoints, kManifests);
  EXPECT_EQ(deleted, kManifests - 1);
  EXPECT_EQ(j->manifest_steps(), (std::vector<int64_t>{kManifests - 1}));
}

TEST(Journal, Meta) {
  std::string dir = fresh_test_dir();
  {
    auto j = open_journal(dir);
    EXPECT_EQ(j->meta("job"), std::nullopt);
    ASSERT_TRUE(j->put_meta("job", R"({"model":{}})").ok());
  }
  EXPECT_EQ(open_journal(dir)->meta("job"), R"({"model":{}})");
}

TEST(Journal, ReadOnlyOpenReadsAndRefusesWrites) {
  std::string dir = fresh_test_dir();
  EXPECT_FALSE(Journal::open(dir, true).ok());  // read-only never creates
  {
    auto j = open_journal(dir);
    ASSERT_TRUE(j->put_manifest(sample_manifest(5)).ok());
  }
  auto ro = open_journal(dir, true);
  EXPECT_EQ(ro->manifest_steps(), (std::vector<int64_t>{5}));
  EXPECT_EQ(ro->records().size(), 1u);
  runtime::Status s = ro->append({{"kind", "x"}});
  EXPECT_EQ(s.code(), Code::invalid_argument);
  EXPECT_NE(s.message().find("opened read-only"), std::string::npos);
}

// `troupe ledger` reads while the job's coordinator holds the journal open for writing.
TEST(Journal, ReadOnlyOpenWhileAWriterHoldsIt) {
  std::string dir = fresh_test_dir();
  auto writer = open_journal(dir);
  ASSERT_TRUE(writer->put_manifest(sample_manifest(5)).ok());
  auto ro = Journal::open(dir, true);
  ASSERT_TRUE(ro.ok()) << ro.status().message();
  EXPECT_EQ(ro.value()->manifest_steps(), (std::vector<int64_t>{5}));
}

TEST(Journal, SecondWriterIsRefusedSayingWhatToDo) {
  std::string dir = fresh_test_dir();
  auto writer = open_journal(dir);
  auto second = Journal::open(dir, false);
  ASSERT_FALSE(second.ok());
  // busy: a coordinator waits a while for it (launch/cmd_launch.cc, open_journal).
  EXPECT_EQ(second.status().code(), Code::busy);
  EXPECT_NE(second.status().message().find("another process has it open for writing"),
            std::string::npos)
      << second.status().message();
}

// A coordinator started right after its job was killed finds the journal still locked by the
// dying coordinator of that job: open_waiting waits for the lock, and only so long.
TEST(Journal, OpenWaitingWaitsForTheHolderToLetGo) {
  std::string dir = fresh_test_dir();
  auto writer = open_journal(dir);
  EXPECT_EQ(Journal::open_waiting(dir, std::chrono::milliseconds(100)).status().code(), Code::busy);
  std::thread holder([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    writer.reset();  // the old coordinator's exit
  });
  auto j = Journal::open_waiting(dir, std::chrono::seconds(30));
  holder.join();
  EXPECT_TRUE(j.ok()) << j.status().message();
}

// The coordinator appends a record per step for the whole job: what RocksDB keeps in memory
// for the journal must stay bounded (with its default 64 MiB memtable it grew all along).
TEST(Journal, MemoryStaysBoundedAsTheJournalGrows) {
  auto j = open_journal(fresh_test_dir());
  const std::string ledger(4096, 'x');  // a commit with a long data ledger
  const int records = 256;              // 1 MiB in all: 2.5x what memory may hold
  for (int i = 0; i < records; ++i)
    ASSERT_TRUE(j->append({{"kind", "commit"}, {"step", i}, {"ledger", ledger}}).ok());
  EXPECT_EQ(j->records().size(), size_t(records));  // reads every table through the cache
  const int64_t bound = 2 * kJournalMemtableBytes + kJournalCacheBytes;
  EXPECT_LE(j->memory_bytes(), bound);
  EXPECT_GT(j->memory_bytes(), 0);
}

}  // namespace
}  // namespace troupe::storage
