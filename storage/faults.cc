#include "storage/faults.h"

#include <cstdlib>
#include <stdexcept>
#include <string_view>

namespace troupe::storage {
namespace {

constexpr const char* kAcceptedForms =
    "accepted: corrupt@S, full@S, sync@S (S a checkpoint step >= 0) and file-full:NAME@B "
    "(NAME a file name such as metrics.jsonl, B a byte count >= 0), comma-separated";

[[noreturn]] void bad_item(const std::string& item, const std::string& why) {
  throw std::invalid_argument("TROUPE_STORAGE_FAULT item \"" + item + "\": " + why + "; " +
                              kAcceptedForms);
}

// A whole non-negative decimal integer, or throws naming the item.
int64_t parse_count(const std::string& text, const std::string& item) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
    bad_item(item, "\"" + text + "\" is not a non-negative integer");
  try {
    return std::stoll(text);
  } catch (const std::out_of_range&) {
    bad_item(item, "\"" + text + "\" is out of range");
  }
}

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

StorageFaults StorageFaults::parse(const std::string& spec) {
  StorageFaults f;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    std::string item = trim(std::string_view(spec).substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) continue;  // "", trailing commas: nothing asked
    size_t at = item.rfind('@');
    if (at == std::string::npos) bad_item(item, "no '@'");
    std::string kind = item.substr(0, at);
    int64_t n = parse_count(item.substr(at + 1), item);
    if (kind == "corrupt") {
      f.corrupt_.insert(n);
    } else if (kind == "full") {
      f.full_.insert(n);
    } else if (kind == "sync") {
      f.sync_.insert(n);
    } else if (kind.rfind("file-full:", 0) == 0) {
      std::string name = kind.substr(std::string_view("file-full:").size());
      if (name.empty() || name.find('/') != std::string::npos)
        bad_item(item, "NAME must be a file name without '/'");
      f.file_limit_bytes_[name] = n;
    } else {
      bad_item(item, "unknown kind \"" + kind + "\"");
    }
  }
  return f;
}

StorageFaults StorageFaults::from_env() {
  const char* spec = std::getenv("TROUPE_STORAGE_FAULT");
  if (spec == nullptr || *spec == '\0') return StorageFaults();
  return parse(spec);
}

std::optional<int64_t> StorageFaults::file_limit_bytes(const std::string& file_name) const {
  auto it = file_limit_bytes_.find(file_name);
  if (it == file_limit_bytes_.end()) return std::nullopt;
  return it->second;
}

bool StorageFaults::any() const {
  return !corrupt_.empty() || !full_.empty() || !sync_.empty() || !file_limit_bytes_.empty();
}

}  // namespace troupe::storage
