#pragma once
// CRC32C (Castagnoli), the checksum of every checkpoint shard: SSE4.2's crc32 instruction
// where the CPU has it, a table otherwise (same value either way).
#include <cstddef>
#include <cstdint>

namespace troupe::storage {

// The CRC32C of bytes [data, data + n), continuing from `crc` (0 to start).
// crc32c("123456789") == 0xe3069283.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// The two paths crc32c chooses between, for the test that they agree. crc32c_hw must be
// called only where crc32c_hw_available().
namespace detail {
bool crc32c_hw_available();
uint32_t crc32c_hw(const void* data, size_t n, uint32_t crc);
uint32_t crc32c_table(const void* data, size_t n, uint32_t crc);
}  // namespace detail

}  // namespace troupe::storage
