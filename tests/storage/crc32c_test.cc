// CRC32C: the standard check value, continuation, and the SSE4.2 path against the table.
#include "storage/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace troupe::storage {
namespace {

TEST(Crc32c, CheckValue) {
  const char* s = "123456789";
  EXPECT_EQ(crc32c(s, std::strlen(s)), 0xe3069283u);
  EXPECT_EQ(detail::crc32c_table(s, std::strlen(s), 0), 0xe3069283u);
  EXPECT_EQ(crc32c(s, 0), 0u);
}

TEST(Crc32c, KnownVectors) {
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xff, and ascending.
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xff), up(32);
  for (int i = 0; i < 32; ++i) up[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8a9136aau);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62a8ab43u);
  EXPECT_EQ(crc32c(up.data(), 32), 0x46dd794eu);
}

TEST(Crc32c, ContinuesAcrossPieces) {
  std::string s = "The quick brown fox jumps over the lazy dog, twice over and then some.";
  uint32_t whole = crc32c(s.data(), s.size());
  for (size_t cut = 0; cut <= s.size(); ++cut)
    EXPECT_EQ(crc32c(s.data() + cut, s.size() - cut, crc32c(s.data(), cut)), whole) << cut;
}

TEST(Crc32c, HardwareAgreesWithTable) {
  if (!detail::crc32c_hw_available()) GTEST_SKIP() << "this CPU has no SSE4.2";
  std::mt19937_64 gen(12);  // fixed seed: the same bytes every run
  std::vector<unsigned char> buf(1 << 16);
  for (auto& b : buf) b = static_cast<unsigned char>(gen());
  // Odd lengths at odd offsets: every tail length and misalignment of the 8-byte loops.
  for (size_t len : {1u, 3u, 7u, 9u, 15u, 17u, 63u, 1001u, 4097u, 65535u - 5}) {
    for (size_t off : {0u, 1u, 3u, 5u}) {
      EXPECT_EQ(detail::crc32c_hw(buf.data() + off, len, 0),
                detail::crc32c_table(buf.data() + off, len, 0))
          << "len " << len << " offset " << off;
      EXPECT_EQ(detail::crc32c_hw(buf.data() + off, len, 0xdeadbeef),
                detail::crc32c_table(buf.data() + off, len, 0xdeadbeef));
    }
  }
}

}  // namespace
}  // namespace troupe::storage
