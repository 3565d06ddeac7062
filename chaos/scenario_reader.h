#pragma once
// Typed reads of one TOML table of a scenario file, each error naming the file, the line
// and the key (scenario.cc). Internal to chaos/.
#include <cstdint>
#include <string>
#include <vector>

#include "chaos/scenario.h"
#include "config/toml.h"  // never <toml++/toml.h> itself: config/toml.h says why

namespace troupe::chaos {

class TableReader {
 public:
  // `what` names the table in messages ("the file", "[[fault]] of line 12"); every key of
  // `t` must be in `known` (else an error listing them).
  TableReader(const toml::table& t, std::string path, std::string what,
              const std::vector<std::string>& known);

  bool has(const std::string& key) const { return t_.contains(key); }
  uint32_t line_of(const std::string& key) const;
  int64_t integer(const std::string& key, int64_t min, int64_t max, int64_t fallback) const;
  double number(const std::string& key, double min, double max, double fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::vector<std::string> strings(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key) const;
  std::vector<std::vector<std::string>> string_lists(const std::string& key) const;
  const toml::table* table(const std::string& key) const;
  // Throws ScenarioError "PATH:LINE: KEY: why" at the key's line.
  [[noreturn]] void fail(const std::string& key, const std::string& why) const;

 private:
  const toml::node& at(const std::string& key) const;
  const toml::table& t_;
  std::string path_, what_;
};

}  // namespace troupe::chaos
