// Removes a passed test's fresh_test_dir (storage_test_dir.h): checkpoints of tens of MiB
// would otherwise pile up in TempDir() run after run.
#include <gtest/gtest.h>

#include <filesystem>
#include <system_error>

#include "storage_test_dir.h"

namespace troupe::storage {
namespace {

class RemovePassedTestDirs : public ::testing::EmptyTestEventListener {
  void OnTestEnd(const ::testing::TestInfo& t) override {
    if (!t.result()->Passed()) return;
    std::error_code ec;  // a test that made no directory: nothing to remove
    std::filesystem::remove_all(test_dir_of(t), ec);
  }
};

// Registered before main runs the tests; gtest owns and deletes the listener.
const bool registered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new RemovePassedTestDirs);
  return true;
}();

}  // namespace
}  // namespace troupe::storage
