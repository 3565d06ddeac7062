// safetensors: round trip, a file as Python writes it, and every malformed input rejected.
#include "storage/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "model/rng.h"

namespace troupe::model {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir() {
  fs::path dir =
      fs::path(::testing::TempDir()) / ("troupe_safetensors_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

SafetensorsFile sample() {
  SafetensorsFile f;
  const std::vector<float> w = {1.0f, -2.5f, 3.25f, 0.0f, 1e-30f, -0.0f};
  const std::vector<double> s = {3.141592653589793};
  const std::vector<int32_t> i = {7, -8, 9};
  const std::vector<int64_t> big = {1ll << 40, -1};
  const std::vector<float> none;
  f.tensors["model.layers.0.mlp.gate.weight"] = to_tensor_data(w, {2, 3});
  f.tensors["scalar"] = to_tensor_data(s, {});
  f.tensors["ids"] = to_tensor_data(i, {3});
  f.tensors["big"] = to_tensor_data(big, {2, 1});
  f.tensors["empty"] = to_tensor_data(none, {0, 4});
  f.metadata["troupe_config"] = R"({"d_model": 128, "seed": 1234})";
  f.metadata["format"] = "pt";
  return f;
}

std::vector<uint8_t> bytes_of(const std::string& header, const std::string& data) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

// The SafetensorsError message for parsing `bytes`, or "<no error>".
std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    parse_safetensors(bytes, "f.safetensors");
  } catch (const SafetensorsError& e) {
    return e.what();
  }
  return "<no error>";
}

std::string header_error(const std::string& header, size_t data_bytes = 64) {
  return error_of(bytes_of(header, std::string(data_bytes, '\0')));
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)

TEST(Safetensors, RoundTripThroughAFile) {
  const fs::path path = temp_dir() / "model.safetensors";
  const SafetensorsFile f = sample();
  write_safetensors(path.string(), f);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  const SafetensorsFile back = read_safetensors(path.string());
  EXPECT_EQ(back, f);
  EXPECT_EQ(tensor_as_f32(back.tensors.at("model.layers.0.mlp.gate.weight"))[2], 3.25f);
  EXPECT_EQ(tensor_as_f64(back.tensors.at("scalar")), (std::vector<double>{3.141592653589793}));
  EXPECT_EQ(tensor_as_i32(back.tensors.at("ids")), (std::vector<int32_t>{7, -8, 9}));
  EXPECT_EQ(tensor_as_i64(back.tensors.at("big")), (std::vector<int64_t>{1ll << 40, -1}));
  EXPECT_TRUE(tensor_as_f32(back.tensors.at("empty")).empty());
  EXPECT_THROW(tensor_as_f64(back.tensors.at("ids")), SafetensorsError);

  // The data starts 8-byte aligned: header length is a multiple of 8.
  const auto bytes = serialize_safetensors(f);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(fs::file_size(path), bytes.size());
  // Overwriting works and is atomic (tmp then rename).
  SafetensorsFile g;
  g.tensors["x"] = to_tensor_data(std::vector<float>{2.0f}, {1});
  write_safetensors(path.string(), g);
  EXPECT_EQ(read_safetensors(path.string()), g);
}

TEST(Safetensors, WriteFailuresNameThePathAndLeaveNoFile) {
  const std::string path = (temp_dir() / "no_such_dir" / "x.safetensors").string();
  try {
    write_safetensors(path, sample());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_CONTAINS(e.what(), path);
  }
  EXPECT_FALSE(fs::exists(path));
  SafetensorsFile bad;
  bad.tensors["w"] = TensorData{DType::F32, {2, 2}, std::vector<uint8_t>(12)};  // needs 16
  const std::string path2 = (temp_dir() / "bad.safetensors").string();
  EXPECT_THROW(write_safetensors(path2, bad), std::runtime_error);
  EXPECT_FALSE(fs::exists(path2));
  EXPECT_FALSE(fs::exists(path2 + ".tmp"));
  EXPECT_THROW(to_tensor_data(std::vector<float>(3), {2, 2}), std::invalid_argument);
}

// Bytes as the Python safetensors library lays them out: __metadata__ first, tensors sorted
// by dtype alignment then name (so data order is not name order), header padded with spaces.
TEST(Safetensors, ReadsAFileWrittenByPython) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})"
      "     ";  // 139 bytes of JSON + 5 spaces: the data starts 8-byte aligned
  ASSERT_EQ(header.size(), 144u);
  const uint8_t golden[] = {
      144, 0, 0, 0, 0, 0, 0, 0,  // header length, little-endian u64
  };
  std::vector<uint8_t> bytes(golden, golden + sizeof golden);
  bytes.insert(bytes.end(), header.begin(), header.end());
  const uint8_t data[] = {
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0x3F,  // b: 1.5 (F64)
      0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0,  // a: 1.0, -2.5 (F32)
  };
  bytes.insert(bytes.end(), data, data + sizeof data);
  const SafetensorsFile f = parse_safetensors(bytes, "python.safetensors");
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.tensors.at("a").shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(tensor_as_f32(f.tensors.at("a")), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(tensor_as_f64(f.tensors.at("b")), (std::vector<double>{1.5}));
}

TEST(Safetensors, EveryMalformedFieldIsNamed) {
  const std::string ok = R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  EXPECT_EQ(header_error("{" + ok + "}"), "<no error>");
  EXPECT_CONTAINS(error_of({1, 2, 3}), "f.safetensors: file is 3 bytes, too short");
  std::vector<uint8_t> huge(16, 0);
  huge[6] = 1;  // 2^48
  EXPECT_CONTAINS(error_of(huge), "exceeds header_bytes_max");
  std::vector<uint8_t> past = bytes_of("{}", "");
  past[0] = 200;
  EXPECT_CONTAINS(error_of(past), "header length 200 runs past the end of the file (10 bytes)");
  EXPECT_CONTAINS(header_error("{\"w\": "), "header is not valid JSON");
  EXPECT_CONTAINS(header_error(""), "header is not valid JSON");
  EXPECT_CONTAINS(header_error("[1, 2]"), "header is not a JSON object");
  EXPECT_CONTAINS(header_error(R"({"w":3})"), "tensor 'w': entry is not a JSON object");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})"),
                  "tensor 'w': dtype \"BF16\" is not supported (known: F32, F64, I32, I64)");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":7,"shape":[2],"data_offsets":[0,4]}})"),
                  "tensor 'w': dtype 7 is not supported");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,4]}})"),
                  "tensor 'w': shape is not a list");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,4]}})"),
                  "shape is not a list of non-negative integers");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})"),
                  "shape is not a list of non-negative integers");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})"),
                  "tensor 'w': data_offsets [8, 0] are reversed");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})"),
                  "data_offsets is not [begin, end]");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})"),
                  "data_offsets [0, 12] span 12 bytes but shape [2] of F32 needs 8");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[60,68]}})"),
                  "data_offsets end 68 is past the end of the data (64 bytes): the file is "
                  "truncated");
  EXPECT_CONTAINS(
      header_error(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})"),
      "is too large");
  EXPECT_CONTAINS(header_error(R"({"w":{"dtype":"F32","shape":[2]}})"),
                  "tensor 'w': missing 'data_offsets'");
  EXPECT_CONTAINS(
      header_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})"),
      "tensor 'w': unknown field 'extra'");
  EXPECT_CONTAINS(header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})"),
                  "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
  EXPECT_CONTAINS(header_error(R"({"__metadata__":{"k":1}})"),
                  "__metadata__ value of 'k' is not a string");
  EXPECT_CONTAINS(header_error(R"({"__metadata__":["k"]})"), "__metadata__ is not a JSON object");
  // Zero-size tensors may share offsets; gaps between tensors are allowed.
  EXPECT_EQ(header_error(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                         R"("c":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})"),
            "<no error>");
  EXPECT_CONTAINS(
      [] {
        try {
          read_safetensors("/nonexistent/x.safetensors");
        } catch (const SafetensorsError& e) {
          return std::string(e.what());
        }
        return std::string("<no error>");
      }(),
      "/nonexistent/x.safetensors: cannot open");
}

TEST(Safetensors, TruncatedAtEveryLengthIsRejected) {
  const std::vector<uint8_t> bytes = serialize_safetensors(sample());
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    std::vector<uint8_t> part(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(cut));
    ASSERT_NE(error_of(part), "<no error>") << "cut at " << cut;
  }
  // Through the file system too.
  const fs::path path = temp_dir() / "cut.safetensors";
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size() - 5));
  EXPECT_THROW(read_safetensors(path.string()), SafetensorsError);
}

// Mutated headers and random garbage: every outcome is a parse or a SafetensorsError.
TEST(Safetensors, FuzzedInputNeverCrashes) {
  const std::vector<uint8_t> good = serialize_safetensors(sample());
  uint64_t header_len = 0;
  std::memcpy(&header_len, good.data(), 8);
  const CounterRng rng(2024, purpose_of("test.safetensors.fuzz"));
  uint64_t draw = 0;
  int parsed = 0, rejected = 0;
  const char* interesting = "{}[]\":,-0123456789eE. ";
  for (int iter = 0; iter < 600; ++iter) {
    std::vector<uint8_t> b = good;
    const int edits = 1 + static_cast<int>(rng.bits(draw++) % 4);
    for (int e = 0; e < edits; ++e) {
      const uint64_t where = rng.bits(draw++);
      const uint64_t what = rng.bits(draw++);
      const size_t pos = iter % 10 == 0 ? where % 8 : 8 + where % header_len;  // length or JSON
      b[pos] = (what & 1) ? static_cast<uint8_t>(interesting[(what >> 1) % 22])
                          : static_cast<uint8_t>(what >> 8);
    }
    if (iter % 7 == 0) b.resize(rng.bits(draw++) % b.size());
    try {
      const SafetensorsFile f = parse_safetensors(b, "fuzz");
      for (const auto& [name, t] : f.tensors)
        ASSERT_EQ(static_cast<int64_t>(t.bytes.size()), numel(t.shape) * dtype_bytes(t.dtype));
      ++parsed;
    } catch (const SafetensorsError&) {
      ++rejected;
    }
  }
  for (int iter = 0; iter < 200; ++iter) {  // pure garbage with a plausible length
    std::vector<uint8_t> b(8 + rng.bits(draw++) % 300);
    for (auto& x : b) x = static_cast<uint8_t>(rng.bits(draw++));
    const uint64_t n = rng.bits(draw++) % (b.size() + 4);
    std::memcpy(b.data(), &n, 8);
    try {
      parse_safetensors(b, "garbage");
      ++parsed;
    } catch (const SafetensorsError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 400);
  std::printf("fuzz: %d parsed, %d rejected\n", parsed, rejected);
}

}  // namespace
}  // namespace troupe::model
