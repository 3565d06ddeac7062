// The safetensors reader (storage/safetensors.cc parse_safetensors, what read_safetensors
// runs on a file's bytes): any bytes are a file or a SafetensorsError, never a crash or an
// allocation beyond what the bytes hold. An accepted file serializes (our writer) and
// parses again to the same tensors and metadata.
#include <cstdint>
#include <span>
#include <vector>

#include "storage/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace m = troupe::model;
  m::SafetensorsFile file;
  try {
    file = m::parse_safetensors(std::span<const uint8_t>(data, size), "fuzz.safetensors");
  } catch (const m::SafetensorsError&) {
    return 0;
  }
  for (const auto& [name, t] : file.tensors) {
    FUZZ_CHECK(m::numel(t.shape) >= 0, "a tensor's element count is not negative");
    FUZZ_CHECK(t.bytes.size() == uint64_t(m::numel(t.shape)) * uint64_t(m::dtype_bytes(t.dtype)),
               "a tensor's bytes match its shape and dtype");
  }
  const std::vector<uint8_t> again = m::serialize_safetensors(file);
  FUZZ_CHECK(m::parse_safetensors(again, "written-back.safetensors") == file,
             "an accepted file, written back, parses to the same tensors");
  return 0;
}
