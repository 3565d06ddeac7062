// A checkpoint's shard file (storage/shard_file.h): its file header, trailer and index
// (shard_file::read_index) and each stored value's "TRSH" header, through the reader a
// resume uses (ShardReader::open, then read of every name in the index). Any file is
// read or refused with an error, never a crash; a shard read back has the size its
// header gave. The file lives in memory (memfd), opened by its /proc/self/fd path.
// Input: [u8 flags][the file]. flags bit 0: before the file is written, the harness sets
// the trailer's CRC32C to the index's own when the trailer points at an index, so that
// mutations of the index reach its JSON instead of stopping at the checksum.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "storage/crc32c.h"
#include "storage/shard_file.h"
#include "storage/shard_store.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace sf = troupe::storage::shard_file;
constexpr int64_t step = 7;  // the step of the seed files (make_seeds.cc)

void fix_index_crc(std::string* file) {
  const size_t n = file->size();
  if (n < sf::kFileHeaderBytes + sf::kTrailerBytes) return;
  auto* tail = reinterpret_cast<unsigned char*>(file->data() + n - sf::kTrailerBytes);
  uint64_t at = 0, len = 0;
  for (int i = 0; i < 8; ++i) at |= uint64_t(tail[i]) << (8 * i);
  for (int i = 0; i < 4; ++i) len |= uint64_t(tail[8 + i]) << (8 * i);
  if (at > n || len > n - at || at + len != n - sf::kTrailerBytes) return;
  const uint32_t crc = troupe::storage::crc32c(file->data() + at, len);
  for (int i = 0; i < 4; ++i) tail[12 + i] = static_cast<unsigned char>(crc >> (8 * i));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) fix_index_crc(&file);
  const int fd = ::memfd_create("shard", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0, "memfd_create");
  FUZZ_CHECK(::write(fd, file.data(), file.size()) == ssize_t(file.size()), "write to memfd");
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto reader = troupe::storage::ShardReader::open(path);
  if (reader.ok()) {
    for (const std::string& name : reader.value().names()) {
      std::vector<float> values;
      std::vector<int64_t> shape;
      if (!reader.value().read(name, step, &values, &shape).ok()) continue;
      int64_t numel = 1;
      for (int64_t d : shape) {
        FUZZ_CHECK(d >= 0 && (d == 0 || numel <= INT64_MAX / d), "a shard read has a real shape");
        numel *= d;
      }
      FUZZ_CHECK(numel >= 0 && uint64_t(numel) == values.size(), "a shard read has its shape");
    }
  } else {
    FUZZ_CHECK(!reader.status().message().empty(), "a refused file says why");
  }
  ::close(fd);
  return 0;
}
