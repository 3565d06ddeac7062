// Typed reads of a scenario's TOML tables: every error names the file, the line and the key.
#include "chaos/scenario_reader.h"

#include <fmt/format.h>

#include <algorithm>

namespace troupe::chaos {

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += fmt::format("{}{}", out.empty() ? "" : ", ", s);
  return out;
}

}  // namespace

TableReader::TableReader(const toml::table& t, std::string path, std::string what,
                         const std::vector<std::string>& known)
    : t_(t), path_(std::move(path)), what_(std::move(what)) {
  for (auto&& [key, value] : t_) {
    (void)value;
    const std::string k(key.str());
    if (std::find(known.begin(), known.end(), k) == known.end())
      throw ScenarioError(fmt::format("{}:{}: unknown key '{}' in {}; known keys: {}", path_,
                                      key.source().begin.line, k, what_, joined(known)));
  }
}

uint32_t TableReader::line_of(const std::string& key) const {
  for (auto&& [k, v] : t_)
    if (k.str() == key) return k.source().begin.line;
  return t_.source().begin.line;
}

void TableReader::fail(const std::string& key, const std::string& why) const {
  throw ScenarioError(fmt::format("{}:{}: {} in {}: {}", path_, line_of(key), key, what_, why));
}

const toml::node& TableReader::at(const std::string& key) const {
  return *t_.get(key);
}

int64_t TableReader::integer(const std::string& key, int64_t min, int64_t max,
                             int64_t fallback) const {
  if (!has(key)) return fallback;
  const auto v = at(key).value_exact<int64_t>();
  if (!v) fail(key, "must be an integer");
  if (*v < min || *v > max) fail(key, fmt::format("must be in [{}, {}], got {}", min, max, *v));
  return *v;
}

double TableReader::number(const std::string& key, double min, double max, double fallback) const {
  if (!has(key)) return fallback;
  const auto v = at(key).value<double>();
  if (!v) fail(key, "must be a number");
  if (!(*v >= min && *v <= max))
    fail(key, fmt::format("must be in [{}, {}], got {}", min, max, *v));
  return *v;
}

std::string TableReader::string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto v = at(key).value_exact<std::string>();
  if (!v) fail(key, "must be a string");
  return *v;
}

bool TableReader::boolean(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto v = at(key).value_exact<bool>();
  if (!v) fail(key, "must be true or false");
  return *v;
}

std::vector<std::string> TableReader::strings(const std::string& key) const {
  std::vector<std::string> out;
  if (!has(key)) return out;
  const toml::array* a = at(key).as_array();
  if (!a) fail(key, "must be an array of strings");
  for (const toml::node& x : *a) {
    const auto s = x.value_exact<std::string>();
    if (!s) fail(key, "must be an array of strings");
    out.push_back(*s);
  }
  return out;
}

std::vector<int64_t> TableReader::integers(const std::string& key) const {
  std::vector<int64_t> out;
  if (!has(key)) return out;
  const toml::array* a = at(key).as_array();
  if (!a) fail(key, "must be an array of integers");
  for (const toml::node& x : *a) {
    const auto s = x.value_exact<int64_t>();
    if (!s) fail(key, "must be an array of integers");
    out.push_back(*s);
  }
  return out;
}

std::vector<std::vector<std::string>> TableReader::string_lists(const std::string& key) const {
  std::vector<std::vector<std::string>> out;
  if (!has(key)) return out;
  const toml::array* a = at(key).as_array();
  if (!a) fail(key, "must be an array of arrays of strings");
  for (const toml::node& x : *a) {
    const toml::array* inner = x.as_array();
    if (!inner) fail(key, "must be an array of arrays of strings");
    out.emplace_back();
    for (const toml::node& y : *inner) {
      const auto s = y.value_exact<std::string>();
      if (!s) fail(key, "must be an array of arrays of strings");
      out.back().push_back(*s);
    }
  }
  return out;
}

const toml::table* TableReader::table(const std::string& key) const {
  if (!has(key)) return nullptr;
  const toml::table* t = at(key).as_table();
  if (!t) fail(key, "must be a table: write [" + key + "]");
  return t;
}

}  // namespace troupe::chaos
