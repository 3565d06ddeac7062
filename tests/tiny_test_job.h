#pragma once
// The tests' one tiny job: tests/configs/tiny_test.toml, with a test's own overrides (in
// --set syntax, "train.steps=8") on top. The file is found through TROUPE_SOURCE_DIR, which
// ctest sets; a test binary run by hand from inside the checkout finds it by walking up.
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config_parse.h"

namespace troupe::tests {

inline std::string tiny_test_config_path() {
  namespace fs = std::filesystem;
  const fs::path rel = fs::path("tests") / "configs" / "tiny_test.toml";
  if (const char* root = std::getenv("TROUPE_SOURCE_DIR"); root != nullptr && *root != '\0')
    return (fs::path(root) / rel).string();
  for (fs::path p = fs::current_path(); !p.empty(); p = p.parent_path()) {
    if (fs::exists(p / rel)) return (p / rel).string();
    if (p == p.parent_path()) break;
  }
  throw std::runtime_error(
      "tests/configs/tiny_test.toml not found: set TROUPE_SOURCE_DIR to "
      "the repository root (ctest does)");
}

inline model::JobConfig tiny_test_job(const std::vector<std::string>& sets = {}) {
  return model::load_config(tiny_test_config_path(), sets);
}

}  // namespace troupe::tests
