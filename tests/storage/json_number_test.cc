// Integers out of JSON from files (storage/json_number.h): only an integer that fits.
#include "storage/json_number.h"

#include <gtest/gtest.h>

namespace troupe::storage {
namespace {

using nlohmann::json;

TEST(JsonNumber, OnlyAnIntegerThatFits) {
  EXPECT_EQ(json_integer<uint32_t>(json(5)), 5u);
  EXPECT_EQ(json_integer<uint32_t>(json(4294967295u)), 4294967295u);
  EXPECT_FALSE(json_integer<uint32_t>(json(4294967296u)));
  EXPECT_FALSE(json_integer<uint32_t>(json(-1)));
  // The fuzzer's crc32c: a float far out of range was a static_cast, undefined behaviour.
  EXPECT_FALSE(json_integer<uint32_t>(json::parse("647446e98")));
  EXPECT_FALSE(json_integer<int64_t>(json(1.0)));
  EXPECT_FALSE(json_integer<int64_t>(json("7")));
  EXPECT_FALSE(json_integer<int64_t>(json(18446744073709551615u)));
  EXPECT_EQ(json_integer<int64_t>(json(-3)), -3);
  EXPECT_EQ(json_integers<int64_t>(json::parse("[1, 2, 0]")), (std::vector<int64_t>{1, 2, 0}));
  EXPECT_FALSE(json_integers<int64_t>(json::parse("[1, 2.5]")));
  EXPECT_FALSE(json_integers<int64_t>(json::parse("{\"0\": 1}")));
}

}  // namespace
}  // namespace troupe::storage
