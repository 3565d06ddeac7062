// The run directory's small files: the fault hook's spec, checked files, the run lock.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "storage/checked_file.h"
#include "storage/faults.h"
#include "storage/run_lock.h"
#include "storage_test_dir.h"

namespace troupe::storage {
namespace {

using runtime::Code;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(StorageFaults, ParsesEveryForm) {
  StorageFaults f = StorageFaults::parse("corrupt@4, full@8,sync@12,file-full:metrics.jsonl@100,");
  EXPECT_TRUE(f.any());
  EXPECT_TRUE(f.corrupt_at(4));
  EXPECT_FALSE(f.corrupt_at(8));
  EXPECT_TRUE(f.full_at(8));
  EXPECT_TRUE(f.sync_fails_at(12));
  EXPECT_EQ(f.file_limit_bytes("metrics.jsonl"), 100);
  EXPECT_EQ(f.file_limit_bytes("events.jsonl"), std::nullopt);
  EXPECT_FALSE(StorageFaults::parse("").any());
  EXPECT_FALSE(StorageFaults().any());
}

TEST(StorageFaults, BadItemsNameTheItemAndTheForms) {
  for (const char* bad : {"corrupt@x", "bogus@3", "full", "file-full:@3", "sync@-1", "full@"}) {
    try {
      StorageFaults::parse(std::string("full@2,") + bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      std::string what = e.what();
      EXPECT_NE(what.find(std::string("\"") + bad + "\""), std::string::npos) << what;
      EXPECT_NE(what.find("file-full:NAME@B"), std::string::npos) << what;
    }
  }
}

TEST(StorageFaults, FromEnvironment) {
  ::unsetenv("TROUPE_STORAGE_FAULT");
  EXPECT_FALSE(StorageFaults::from_env().any());
  ::setenv("TROUPE_STORAGE_FAULT", "sync@3", 1);
  EXPECT_TRUE(StorageFaults::from_env().sync_fails_at(3));
  ::setenv("TROUPE_STORAGE_FAULT", "sink@3", 1);
  EXPECT_THROW(StorageFaults::from_env(), std::invalid_argument);
  ::unsetenv("TROUPE_STORAGE_FAULT");
}

TEST(CheckedFile, WritesTruncatesAndAppends) {
  std::string path = fresh_test_dir() + "/metrics.jsonl";
  CheckedFile f;
  ASSERT_TRUE(f.open(path, false).ok());
  EXPECT_TRUE(f.is_open());
  ASSERT_TRUE(f.write("one\n").ok());
  ASSERT_TRUE(f.sync().ok());
  f.close();
  EXPECT_FALSE(f.is_open());
  ASSERT_TRUE(f.open(path, true).ok());
  ASSERT_TRUE(f.write("two\n").ok());
  f.close();
  EXPECT_EQ(slurp(path), "one\ntwo\n");
  ASSERT_TRUE(f.open(path, false).ok());
  ASSERT_TRUE(f.write("three\n").ok());
  f.close();
  EXPECT_EQ(slurp(path), "three\n");
}

TEST(CheckedFile, OpenErrorNamesThePath) {
  std::string path = fresh_test_dir() + "/no/such/dir/events.jsonl";
  CheckedFile f;
  runtime::Status s = f.open(path, false);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::io_error);
  EXPECT_EQ(s.message(), "cannot open " + path + ": No such file or directory");
  EXPECT_FALSE(f.write("x").ok());
}

TEST(CheckedFile, InjectedFullDiskFailsTheWholeWriteAndSticks) {
  std::string path = fresh_test_dir() + "/metrics.jsonl";
  StorageFaults faults = StorageFaults::parse("file-full:metrics.jsonl@10");
  CheckedFile f;
  ASSERT_TRUE(f.open(path, false, faults).ok());
  ASSERT_TRUE(f.write("12345\n").ok());   // 6 bytes
  runtime::Status s = f.write("6789\n");  // 11 > 10: refused whole
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::io_error);
  EXPECT_EQ(s.message(), "cannot write " + path +
                             ": No space left on device (injected by TROUPE_STORAGE_FAULT "
                             "file-full:metrics.jsonl@10)");
  EXPECT_EQ(f.write("1\n").message(), s.message());  // would fit, but the first failure stays
  EXPECT_EQ(f.sync().message(), s.message());
  f.close();
  EXPECT_EQ(slurp(path), "12345\n");
}

TEST(CheckedFile, AppendCountsWhatIsThere) {
  std::string path = fresh_test_dir() + "/events.jsonl";
  StorageFaults faults = StorageFaults::parse("file-full:events.jsonl@8");
  CheckedFile f;
  ASSERT_TRUE(f.open(path, false).ok());  // no faults: the limit is per open
  ASSERT_TRUE(f.write("abcdef\n").ok());
  f.close();
  ASSERT_TRUE(f.open(path, true, faults).ok());
  EXPECT_TRUE(f.write("g").ok());  // 8 bytes: at the limit, not past it
  EXPECT_FALSE(f.write("h").ok());
}

TEST(RunLock, SecondAcquireIsRefusedNamingTheHolder) {
  std::string dir = fresh_test_dir() + "/run";
  runtime::Result<RunLock> first = RunLock::acquire(dir, "troupe train tiny.toml");
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_TRUE(first.value().held());
  EXPECT_EQ(slurp(dir + "/troupe.lock"), std::to_string(::getpid()) + " troupe train tiny.toml\n");
  runtime::Result<RunLock> second = RunLock::acquire(dir, "troupe launch");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::busy);
  EXPECT_EQ(second.status().message(),
            "run directory " + dir + " is in use by pid " + std::to_string(::getpid()) +
                " (troupe train tiny.toml); wait for it to end or choose another --run-dir");
  RunLock moved = std::move(first).value();
  EXPECT_TRUE(moved.held());
  moved = RunLock();  // released
  runtime::Result<RunLock> third = RunLock::acquire(dir, "troupe launch");
  ASSERT_TRUE(third.ok()) << third.status().message();
}

// A holder killed with SIGKILL leaves no stale lock: the kernel drops it with the process.
TEST(RunLock, KilledHolderReleasesTheLock) {
  std::string dir = fresh_test_dir() + "/run";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    runtime::Result<RunLock> lock = RunLock::acquire(dir, "child holder");
    char c = lock.ok() ? 'y' : 'n';
    if (::write(ready[1], &c, 1) != 1 || !lock.ok()) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(c, 'y');
  runtime::Result<RunLock> refused = RunLock::acquire(dir, "parent");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::busy);
  EXPECT_NE(
      refused.status().message().find("in use by pid " + std::to_string(child) + " (child holder)"),
      std::string::npos)
      << refused.status().message();
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  runtime::Result<RunLock> taken = RunLock::acquire(dir, "parent");
  ASSERT_TRUE(taken.ok()) << taken.status().message();
}

}  // namespace
}  // namespace troupe::storage
