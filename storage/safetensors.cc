#include "storage/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

namespace troupe::model {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host needs byte swaps");

namespace {

constexpr const char* kMetadataKey = "__metadata__";
constexpr size_t kHeaderAlignBytes = 8;  // the data starts 8-byte aligned (safetensors does too)

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& label, const std::string& what) {
  throw SafetensorsError(label + ": " + what);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

bool parse_dtype(const std::string& s, DType* out) {
  for (DType d : {DType::F32, DType::F64, DType::I32, DType::I64})
    if (s == dtype_name(d)) return *out = d, true;
  return false;
}

// numel(shape)·dtype_bytes, or -1 when it overflows int64.
int64_t byte_size(const std::vector<int64_t>& shape, DType d) {
  int64_t n = dtype_bytes(d);
  for (int64_t x : shape)
    if (x < 0 || __builtin_mul_overflow(n, x, &n)) return -1;
  return n;
}

// A JSON integer in [0, int64 max], else -1.
int64_t json_count(const json& v) {
  if (!v.is_number_integer()) return -1;
  if (v.is_number_unsigned())
    return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? static_cast<int64_t>(v.get<uint64_t>())
               : -1;
  return v.get<int64_t>() >= 0 ? v.get<int64_t>() : -1;
}

struct Span {
  int64_t begin, end;
  std::string name;
};

// One header entry → (TensorData without bytes, its span). Every field checked.
Span parse_entry(const std::string& label, const std::string& name, const json& e, TensorData* t) {
  const std::string where = fmt::format("tensor '{}'", name);
  if (!e.is_object()) fail(label, where + ": entry is not a JSON object");
  for (const auto& [k, v] : e.items())
    if (k != "dtype" && k != "shape" && k != "data_offsets")
      fail(label, fmt::format("{}: unknown field '{}'", where, k));
  for (const char* k : {"dtype", "shape", "data_offsets"})
    if (!e.contains(k)) fail(label, fmt::format("{}: missing '{}'", where, k));

  const json& dt = e["dtype"];
  if (!dt.is_string() || !parse_dtype(dt.get<std::string>(), &t->dtype))
    fail(label, fmt::format("{}: dtype {} is not supported (known: F32, F64, I32, I64)", where,
                            dt.dump(-1, ' ', false, json::error_handler_t::replace)));
  const json& sh = e["shape"];
  if (!sh.is_array()) fail(label, where + ": shape is not a list");
  for (const json& d : sh) {
    if (json_count(d) < 0) fail(label, where + ": shape is not a list of non-negative integers");
    t->shape.push_back(json_count(d));
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || json_count(off[0]) < 0 || json_count(off[1]) < 0)
    fail(label, where + ": data_offsets is not [begin, end] of non-negative integers");
  const int64_t begin = json_count(off[0]), end = json_count(off[1]);
  if (begin > end)
    fail(label, fmt::format("{}: data_offsets [{}, {}] are reversed", where, begin, end));
  const int64_t need = byte_size(t->shape, t->dtype);
  if (need < 0) fail(label, fmt::format("{}: shape {} is too large", where, shape_text(t->shape)));
  if (end - begin != need)
    fail(label,
         fmt::format("{}: data_offsets [{}, {}] span {} bytes but shape {} of {} needs {}", where,
                     begin, end, end - begin, shape_text(t->shape), dtype_name(t->dtype), need));
  return {begin, end, name};
}

std::map<std::string, std::string> parse_metadata(const std::string& label, const json& m) {
  if (!m.is_object()) fail(label, "__metadata__ is not a JSON object");
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : m.items()) {
    if (!v.is_string()) fail(label, fmt::format("__metadata__ value of '{}' is not a string", k));
    out[k] = v.get<std::string>();
  }
  return out;
}

json parse_header(const std::string& label, std::span<const uint8_t> bytes, uint64_t* n) {
  if (bytes.size() < 8)
    fail(label,
         fmt::format("file is {} bytes, too short for the 8-byte header length", bytes.size()));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > header_bytes_max)
    fail(label,
         fmt::format("header length {} exceeds header_bytes_max {}", header_len, header_bytes_max));
  if (header_len > bytes.size() - 8)
    fail(label, fmt::format("header length {} runs past the end of the file ({} bytes): the "
                            "file is truncated",
                            header_len, bytes.size()));
  *n = header_len;
  const auto* begin = reinterpret_cast<const char*>(bytes.data() + 8);
  json header;
  try {
    header = json::parse(begin, begin + header_len);
  } catch (const json::exception& e) {
    fail(label, fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) fail(label, "header is not a JSON object");
  return header;
}

}  // namespace

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
  }
  return "?";
}

int64_t dtype_bytes(DType d) {
  return d == DType::F32 || d == DType::I32 ? 4 : 8;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t x : shape) n *= x;
  return n;
}

namespace {

// The tensors and metadata of a parsed header over `data_size` bytes of data; with `data`,
// each tensor's bytes copied from it (else left empty).
SafetensorsFile parse_layout(const std::string& label, const json& header, int64_t data_size,
                             const std::span<const uint8_t>* data) {
  SafetensorsFile file;
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      file.metadata = parse_metadata(label, entry);
      continue;
    }
    TensorData t;
    const Span s = parse_entry(label, name, entry, &t);
    if (s.end > data_size)
      fail(label, fmt::format("tensor '{}': data_offsets end {} is past the end of the data "
                              "({} bytes): the file is truncated",
                              name, s.end, data_size));
    if (data) t.bytes.assign(data->begin() + s.begin, data->begin() + s.end);
    file.tensors.emplace(name, std::move(t));
    if (s.end > s.begin) spans.push_back(s);
  }
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end)
      fail(label, fmt::format("tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", spans[i - 1].name,
                              spans[i - 1].begin, spans[i - 1].end, spans[i].name, spans[i].begin,
                              spans[i].end));
  return file;
}

}  // namespace

SafetensorsFile parse_safetensors(std::span<const uint8_t> bytes, const std::string& label) {
  uint64_t header_len = 0;
  const json header = parse_header(label, bytes, &header_len);
  const std::span<const uint8_t> data = bytes.subspan(8 + header_len);
  return parse_layout(label, header, static_cast<int64_t>(data.size()), &data);
}

SafetensorsFile read_safetensors_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, fmt::format("cannot open: {}", std::strerror(errno)));
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  std::vector<uint8_t> bytes(std::min<uint64_t>(8, file_size));
  in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
  if (bytes.size() == 8) {
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    if (n <= header_bytes_max && n <= file_size - 8) {  // else parse_header says why
      bytes.resize(8 + n);
      in.read(reinterpret_cast<char*>(bytes.data() + 8), std::streamsize(n));
    }
  }
  if (in.bad() || in.fail()) fail(path, "read error");
  // A span the size of the file, for parse_header's checks; it reads the first 8 + N bytes.
  uint64_t header_len = 0;
  const json header =
      parse_header(path, {bytes.data(), file_size < 8 ? bytes.size() : file_size}, &header_len);
  return parse_layout(path, header, static_cast<int64_t>(file_size - 8 - header_len), nullptr);
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, fmt::format("cannot open: {}", std::strerror(errno)));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "read error");
  return parse_safetensors(bytes, path);
}

std::vector<uint8_t> serialize_safetensors(const SafetensorsFile& file) {
  json header = json::object();
  int64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    const int64_t need = byte_size(t.shape, t.dtype);
    if (name == kMetadataKey || need < 0 || need != static_cast<int64_t>(t.bytes.size()))
      throw std::runtime_error(fmt::format(
          "safetensors: tensor '{}' ({} {}, {} bytes) cannot be written: {}", name,
          dtype_name(t.dtype), shape_text(t.shape), t.bytes.size(),
          name == kMetadataKey ? "the name is reserved" : "bytes do not match shape and dtype"));
    header[name] = {{"dtype", dtype_name(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + need}}};
    offset += need;
  }
  if (!file.metadata.empty()) header[kMetadataKey] = file.metadata;
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  text.append((kHeaderAlignBytes - text.size() % kHeaderAlignBytes) % kHeaderAlignBytes, ' ');

  std::vector<uint8_t> out(8 + text.size());
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, text.data(), text.size());
  out.reserve(out.size() + static_cast<size_t>(offset));
  for (const auto& [name, t] : file.tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  std::vector<uint8_t> bytes;
  try {
    bytes = serialize_safetensors(file);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("cannot write '{}': {}", path, e.what()));
  }
  const std::string tmp = path + ".tmp";
  int err = 0;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) err = errno;
  for (size_t done = 0; fd >= 0 && done < bytes.size();) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      err = w < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(w);
  }
  if (fd >= 0 && !err && ::fsync(fd) != 0) err = errno;
  if (fd >= 0 && ::close(fd) != 0 && !err) err = errno;
  if (!err && std::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err) {
    std::remove(tmp.c_str());  // no partial file left behind
    throw std::runtime_error(
        fmt::format("cannot write '{}' (via '{}'): {}", path, tmp, std::strerror(err)));
  }
}

// ---- Typed views -------------------------------------------------------------------------

namespace {
template <typename T>
TensorData make_typed(DType d, std::vector<int64_t> shape, std::span<const T> values) {
  const int64_t n = byte_size(shape, d);
  if (n < 0 || n / dtype_bytes(d) != static_cast<int64_t>(values.size()))
    throw std::invalid_argument(fmt::format("to_tensor_data: shape {} does not hold {} values",
                                            shape_text(shape), values.size()));
  TensorData t;
  t.dtype = d;
  t.shape = std::move(shape);
  t.bytes.resize(static_cast<size_t>(n));
  if (n > 0) std::memcpy(t.bytes.data(), values.data(), static_cast<size_t>(n));
  return t;
}

template <typename T>
std::vector<T> typed_values(DType want, const TensorData& t) {
  if (t.dtype != want)
    throw SafetensorsError(
        fmt::format("tensor of dtype {} read as {}", dtype_name(t.dtype), dtype_name(want)));
  const int64_t n = byte_size(t.shape, t.dtype);
  if (n < 0 || n != static_cast<int64_t>(t.bytes.size()))
    throw SafetensorsError(fmt::format("tensor {} {} holds {} bytes", dtype_name(t.dtype),
                                       shape_text(t.shape), t.bytes.size()));
  std::vector<T> out(static_cast<size_t>(n) / sizeof(T));
  if (n > 0) std::memcpy(out.data(), t.bytes.data(), static_cast<size_t>(n));
  return out;
}
}  // namespace

TensorData to_tensor_data(const std::vector<float>& values, std::vector<int64_t> shape) {
  return make_typed<float>(DType::F32, std::move(shape), values);
}
TensorData to_tensor_data(const std::vector<double>& values, std::vector<int64_t> shape) {
  return make_typed<double>(DType::F64, std::move(shape), values);
}
TensorData to_tensor_data(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
  return make_typed<int32_t>(DType::I32, std::move(shape), values);
}
TensorData to_tensor_data(const std::vector<int64_t>& values, std::vector<int64_t> shape) {
  return make_typed<int64_t>(DType::I64, std::move(shape), values);
}
std::vector<float> tensor_as_f32(const TensorData& t) {
  return typed_values<float>(DType::F32, t);
}
std::vector<double> tensor_as_f64(const TensorData& t) {
  return typed_values<double>(DType::F64, t);
}
std::vector<int32_t> tensor_as_i32(const TensorData& t) {
  return typed_values<int32_t>(DType::I32, t);
}
std::vector<int64_t> tensor_as_i64(const TensorData& t) {
  return typed_values<int64_t>(DType::I64, t);
}

}  // namespace troupe::model
