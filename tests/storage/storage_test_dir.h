#pragma once
// A fresh, empty directory per test: TempDir()/troupe_<test suite>_<test>_<pid>, so
// concurrent runs (ctest -j, two checkouts) never share one. test_dir_cleanup.cc removes it
// after the test passes; a failed test's stays for a look.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace troupe::storage {

inline std::filesystem::path test_dir_of(const ::testing::TestInfo& t) {
  return std::filesystem::path(::testing::TempDir()) /
         ("troupe_" + std::string(t.test_suite_name()) + "_" + t.name() + "_" +
          std::to_string(::getpid()));
}

inline std::string fresh_test_dir() {
  std::filesystem::path dir = test_dir_of(*::testing::UnitTest::GetInstance()->current_test_info());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace troupe::storage
