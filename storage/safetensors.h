#pragma once
// safetensors files (https://github.com/huggingface/safetensors), the export format:
//   u64 little-endian N | N bytes of JSON header | data
//   header = {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//             "__metadata__": {string: string}}; offsets relative to the start of the data.
// We write tensors in name order, contiguous, the header padded with spaces to 8 bytes.
// We read any valid file (any order, padding, holes between tensors), and reject — with a
// SafetensorsError naming the path and the field — everything else, never crashing.
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace troupe::model {

struct SafetensorsError : std::runtime_error {
  using runtime_error::runtime_error;
};

// A header longer than this is refused before it is read: ours are a few hundred KiB.
constexpr uint64_t header_bytes_max = 100ull << 20;

enum class DType { F32, F64, I32, I64 };

struct TensorData {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian, row-major; size = numel(shape)·dtype_bytes
  bool operator==(const TensorData&) const = default;
};

struct SafetensorsFile {
  std::map<std::string, TensorData> tensors;
  std::map<std::string, std::string> metadata;
  bool operator==(const SafetensorsFile&) const = default;
};

// Writes path.tmp, then renames it to path: a failure leaves no partial file at path.
// Throws std::runtime_error naming the path (also for a tensor whose bytes do not match
// its shape and dtype).
void write_safetensors(const std::string& path, const SafetensorsFile& file);

// Reads and validates a whole file. Throws SafetensorsError: "<path>: <what is wrong>".
SafetensorsFile read_safetensors(const std::string& path);
// The header alone (the metadata, every tensor's dtype and shape, its bytes left empty),
// checked as read_safetensors checks it against the file's size; the data is not read.
SafetensorsFile read_safetensors_header(const std::string& path);

// The same on bytes in memory; `label` names them in errors.
std::vector<uint8_t> serialize_safetensors(const SafetensorsFile& file);  // throws runtime_error
SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes, const std::string& label);

const char* dtype_name(DType d);                   // "F32", …
int64_t dtype_bytes(DType d);                      // 4 or 8
int64_t numel(const std::vector<int64_t>& shape);  // product; 1 for a scalar shape []

// Typed views. to_tensor_data copies values into a tensor of that shape (throws
// std::invalid_argument if numel(shape) differs from values.size()). tensor_as_* checks the
// dtype (SafetensorsError naming both) and copies out.
TensorData to_tensor_data(const std::vector<float>& values, std::vector<int64_t> shape);
TensorData to_tensor_data(const std::vector<double>& values, std::vector<int64_t> shape);
TensorData to_tensor_data(const std::vector<int32_t>& values, std::vector<int64_t> shape);
TensorData to_tensor_data(const std::vector<int64_t>& values, std::vector<int64_t> shape);
std::vector<float> tensor_as_f32(const TensorData& t);
std::vector<double> tensor_as_f64(const TensorData& t);
std::vector<int32_t> tensor_as_i32(const TensorData& t);
std::vector<int64_t> tensor_as_i64(const TensorData& t);

}  // namespace troupe::model
