#include "config/toml.h"

#include <fmt/format.h>

#include <algorithm>

namespace troupe::model {

void toml_check_failed(const char* check) {
  const std::string why = fmt::format(
      "a table header or key without a name (like '[ = 1'; the parser's check '{}' failed)", check);
  throw toml::parse_error(why.c_str(), toml::source_region{});  // copies `why`
}

std::string toml_error_text(const toml::parse_error& e, const std::string& name) {
  std::string why(e.description());
  std::replace(why.begin(), why.end(), '\n', ' ');
  const auto line = e.source().begin.line;
  if (line == 0) return fmt::format("{}: TOML syntax error: {}", name, why);
  return fmt::format("{}:{}: TOML syntax error: {}", name, line, why);
}

}  // namespace troupe::model
