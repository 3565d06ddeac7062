#pragma once
// Integers out of JSON that a file supplied (a shard's header and index, the journal).
// nlohmann's get<integer type>() converts whatever number it finds with a static_cast, so a
// float out of range (a damaged "crc32c": 6.47e103, found by tests/fuzz/shard_fuzz) is
// undefined behaviour. These take an integer that fits T, and nothing else.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace troupe::storage {

template <class T>
std::optional<T> json_integer(const nlohmann::json& j) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  if (j.is_number_unsigned()) {
    const uint64_t v = j.get<uint64_t>();
    if (std::in_range<T>(v)) return T(v);
  } else if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (std::in_range<T>(v)) return T(v);
  }
  return std::nullopt;
}

// An array of such integers, or nullopt when j is not one.
template <class T>
std::optional<std::vector<T>> json_integers(const nlohmann::json& j) {
  if (!j.is_array()) return std::nullopt;
  std::vector<T> out;
  out.reserve(j.size());
  for (const nlohmann::json& x : j) {
    const std::optional<T> v = json_integer<T>(x);
    if (!v) return std::nullopt;
    out.push_back(*v);
  }
  return out;
}

}  // namespace troupe::storage
