// The versions of table sets a job's swaps save (storage/engram_saves.h): sets/<name> links
// the newest; a resume drops the future's versions and re-points the links (an import
// stays); pruning keeps what a resume to the oldest kept checkpoint needs.
#include "storage/engram_saves.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "storage/engram_set.h"
#include "tests/storage/storage_test_dir.h"

namespace troupe::storage {
namespace {

namespace fs = std::filesystem;

// A version's stand-in: its bytes say which it is (the functions never read a file's data).
void save(const std::string& run, int64_t step, const std::string& name) {
  const fs::path p = engram_saved_path(run, step, name);
  fs::create_directories(p.parent_path());
  std::ofstream(p) << name << "@" << step;
}

std::string text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool has(const std::string& run, int64_t step, const std::string& name) {
  return fs::exists(engram_saved_path(run, step, name));
}

TEST(EngramSaves, PublishLinksTheNewestVersion) {
  const std::string run = fresh_test_dir();
  EXPECT_EQ(engram_saved_path(run, 7, "X"), run + "/engram/saved/7/X.safetensors");
  save(run, 4, "X");
  publish_engram_save(run, 4, "X");
  EXPECT_EQ(text(engram_set_path(run, "X")), "X@4");
  save(run, 9, "X");
  publish_engram_save(run, 9, "X");
  EXPECT_EQ(text(engram_set_path(run, "X")), "X@9");
  EXPECT_EQ(text(engram_saved_path(run, 4, "X")), "X@4");  // the older version untouched
  EXPECT_THROW(publish_engram_save(run, 5, "X"), std::runtime_error);  // no such version
}

TEST(EngramSaves, AResumeDropsTheFutureAndRepointsTheLinks) {
  const std::string run = fresh_test_dir();
  for (auto [step, name] :
       {std::pair<int64_t, const char*>{4, "initial"}, {7, "X"}, {9, "initial"}}) {
    save(run, step, name);
    publish_engram_save(run, step, name);
  }
  save(run, 2, "Y");  // Y imported over its saved version: the import is no version
  publish_engram_save(run, 2, "Y");
  std::ofstream(engram_set_path(run, "Y")) << "Y imported";
  save(run, 8, "Y");
  drop_engram_saves_from(run, 7);
  EXPECT_TRUE(has(run, 4, "initial"));
  EXPECT_FALSE(has(run, 7, "X"));
  EXPECT_FALSE(has(run, 9, "initial"));
  EXPECT_FALSE(has(run, 8, "Y"));
  EXPECT_EQ(text(engram_set_path(run, "initial")), "initial@4");  // back to the version left
  EXPECT_FALSE(fs::exists(engram_set_path(run, "X")));            // none left
  EXPECT_EQ(text(engram_set_path(run, "Y")), "Y imported");
  EXPECT_FALSE(fs::exists(run + "/engram/saved/9"));
  drop_engram_saves_from(fresh_test_dir() + "/none", 0);  // nothing saved: nothing to do
}

TEST(EngramSaves, PruneKeepsTheNewestBeforeTheOldestStepAndAllAfter) {
  const std::string run = fresh_test_dir();
  for (auto [step, name] : {std::pair<int64_t, const char*>{1, "initial"},
                            {2, "X"},
                            {3, "initial"},
                            {5, "X"},
                            {6, "initial"},
                            {8, "X"}})
    save(run, step, name);
  EXPECT_EQ(prune_engram_saves(run, 6), 2);  // initial@1, X@2
  EXPECT_FALSE(has(run, 1, "initial"));
  EXPECT_FALSE(has(run, 2, "X"));
  EXPECT_FALSE(fs::exists(run + "/engram/saved/1"));
  EXPECT_TRUE(has(run, 3, "initial"));  // the newest before 6: a resume to 6 stands on it
  EXPECT_TRUE(has(run, 5, "X"));
  EXPECT_TRUE(has(run, 6, "initial"));
  EXPECT_TRUE(has(run, 8, "X"));
  EXPECT_EQ(prune_engram_saves(run, 6), 0);
}

}  // namespace
}  // namespace troupe::storage
