// Engram table sets (issue 16): a set written and read back gives every bit of its tables and
// moments; a set made for another model config, a file missing a table or holding one too
// many, and files that are no set at all are refused with an error that says which.
#include "storage/engram_set.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "model/engram.h"
#include "storage/safetensors.h"
#include "tests/storage/storage_test_dir.h"
#include "tests/tiny_test_job.h"

namespace troupe::storage {
namespace {

model::JobConfig job() {
  return tests::tiny_test_job({"model.engram_layers=[1]", "model.engram_table_rows=211"});
}

// Every table of a fresh store with its moments, m and v filled with values of their own
// (distinct from each other and from the values) so that a mix-up shows.
EngramSet some_set(const model::JobConfig& cfg, const std::string& name = "warm") {
  model::InProcessEngramStore<float> store(cfg.model, cfg.train.seed);
  EngramSet set{name, 42, {}};
  for (size_t i = 0; i < store.tables().size(); ++i) {
    const model::EngramTableInfo& t = store.tables()[i];
    const int64_t n = t.rows * t.dim;
    const float* values = store.data(int64_t(i));
    std::vector<float> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) {
      m[size_t(k)] = 1e-3f * float(k + 1) + float(i);
      v[size_t(k)] = 1e-6f * float(k + 7) + 0.5f * float(i);
    }
    const std::vector<int64_t> shape = {t.rows, t.dim};
    set.tensors.push_back({"engram/" + t.name + "/values", shape, {values, values + n}});
    set.tensors.push_back({"engram/" + t.name + "/m", shape, m});
    set.tensors.push_back({"engram/" + t.name + "/v", shape, v});
  }
  return set;
}

// The message of the std::runtime_error that read_engram_set throws, "" if none.
std::string read_error(const std::string& path, const model::JobConfig& cfg) {
  try {
    read_engram_set(path, cfg.model, cfg.train.seed);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// A set written for `cfg`, then changed as a file (a tensor dropped, added, reshaped).
std::string written_then(const model::JobConfig& cfg,
                         const std::function<void(model::SafetensorsFile&)>& change) {
  const std::string path = fresh_test_dir() + "/changed.safetensors";
  write_engram_set(path, some_set(cfg), cfg.model, cfg.train.seed);
  model::SafetensorsFile f = model::read_safetensors(path);
  change(f);
  model::write_safetensors(path, f);
  return path;
}

TEST(EngramSet, RoundTripKeepsEveryBit) {
  const model::JobConfig cfg = job();
  const EngramSet set = some_set(cfg);
  const std::string path = fresh_test_dir() + "/warm.safetensors";
  write_engram_set(path, set, cfg.model, cfg.train.seed);
  const EngramSet back = read_engram_set(path, cfg.model, cfg.train.seed);
  EXPECT_EQ(back.name, "warm");
  EXPECT_EQ(back.step, 42);
  ASSERT_EQ(back.tensors.size(), set.tensors.size());
  ASSERT_EQ(back.tensors.size(), 3 * model::engram_tables(cfg.model).size());
  for (size_t i = 0; i < set.tensors.size(); ++i) {
    EXPECT_EQ(back.tensors[i].name, set.tensors[i].name);
    EXPECT_EQ(back.tensors[i].shape, set.tensors[i].shape);
    // Bitwise: memcmp, not float ==, so that a NaN or -0 would count too.
    ASSERT_EQ(back.tensors[i].data.size(), set.tensors[i].data.size());
    EXPECT_EQ(0, std::memcmp(back.tensors[i].data.data(), set.tensors[i].data.data(),
                             set.tensors[i].data.size() * sizeof(float)))
        << set.tensors[i].name;
  }
  EXPECT_EQ(engram_set_hash(back.tensors), engram_set_hash(set.tensors));
  const auto meta = model::read_safetensors(path).metadata;
  EXPECT_EQ(meta.at("troupe_engram_set"), "warm");
  EXPECT_EQ(meta.at("troupe_engram_step"), "42");
  EXPECT_EQ(nlohmann::json::parse(meta.at("troupe_engram_config")),
            engram_set_identity(cfg.model, cfg.train.seed));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(EngramSet, HashSeesOneFloatOfAMoment) {
  const model::JobConfig cfg = job();
  EngramSet set = some_set(cfg);
  const uint64_t before = engram_set_hash(set.tensors);
  set.tensors.back().data[17] = std::nextafter(set.tensors.back().data[17], 1.0f);
  EXPECT_NE(engram_set_hash(set.tensors), before);
}

TEST(EngramSet, AnotherConfigIsRefusedNamingTheKey) {
  model::JobConfig cfg = job();
  const std::string path = fresh_test_dir() + "/warm.safetensors";
  write_engram_set(path, some_set(cfg), cfg.model, cfg.train.seed);
  model::JobConfig rows = cfg;
  rows.model.engram_table_rows = 307;
  const std::string e = read_error(path, rows);
  EXPECT_NE(e.find(path + ": "), std::string::npos) << e;
  EXPECT_NE(e.find("made for engram_table_rows = 211, this job has 307"), std::string::npos) << e;
  model::JobConfig seed = cfg;
  seed.train.seed = cfg.train.seed + 1;
  const std::string s = read_error(path, seed);
  EXPECT_NE(s.find("made for seed = " + std::to_string(cfg.train.seed)), std::string::npos) << s;
  model::JobConfig layers = cfg;
  layers.model.engram_layers = {1, 2};
  EXPECT_NE(read_error(path, layers).find("engram_layers = [1], this job has [1,2]"),
            std::string::npos)
      << read_error(path, layers);
}

TEST(EngramSet, AMissingTableIsNamed) {
  const model::JobConfig cfg = job();
  const std::string table = model::engram_tables(cfg.model)[2].name;
  const std::string path = written_then(
      cfg, [&](model::SafetensorsFile& f) { f.tensors.erase("engram/" + table + "/m"); });
  EXPECT_EQ(read_error(path, cfg), path + ": no tensor engram/" + table + "/m");
}

TEST(EngramSet, AWrongShapeNamesBothShapes) {
  const model::JobConfig cfg = job();
  const model::EngramTableInfo t = model::engram_tables(cfg.model)[1];
  const std::string name = "engram/" + t.name + "/v";
  const std::string path = written_then(cfg, [&](model::SafetensorsFile& f) {
    f.tensors[name] =
        model::to_tensor_data(std::vector<float>(size_t(t.rows * t.dim)), {t.dim, t.rows});
  });
  const std::string e = read_error(path, cfg);
  const std::string rows = std::to_string(t.rows), dim = std::to_string(t.dim);
  EXPECT_NE(e.find(name), std::string::npos) << e;
  EXPECT_NE(e.find("[" + dim + ", " + rows + "]"), std::string::npos) << e;
  EXPECT_NE(e.find("[" + rows + ", " + dim + "]"), std::string::npos) << e;
}

TEST(EngramSet, AnExtraTensorIsNamed) {
  const model::JobConfig cfg = job();
  const std::string path = written_then(cfg, [](model::SafetensorsFile& f) {
    f.tensors["engram/model.layers.3.engram.tables.2.0/values"] =
        model::to_tensor_data(std::vector<float>(4), {2, 2});
  });
  const std::string e = read_error(path, cfg);
  EXPECT_NE(e.find("engram/model.layers.3.engram.tables.2.0/values"), std::string::npos) << e;
}

TEST(EngramSet, FilesThatAreNoSetAreRefused) {
  const model::JobConfig cfg = job();
  const std::string dir = fresh_test_dir();
  model::SafetensorsFile plain;
  plain.tensors["w"] = model::to_tensor_data(std::vector<float>{1, 2}, {2});
  model::write_safetensors(dir + "/plain.safetensors", plain);
  EXPECT_EQ(read_error(dir + "/plain.safetensors", cfg),
            dir + "/plain.safetensors: not an Engram table set (no troupe_engram_set metadata)");

  const std::string path = dir + "/cut.safetensors";
  write_engram_set(path, some_set(cfg), cfg.model, cfg.train.seed);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  const std::string cut = read_error(path, cfg);
  EXPECT_EQ(cut.rfind(path + ": ", 0), 0u) << cut;

  model::SafetensorsFile bad_step = model::read_safetensors(dir + "/plain.safetensors");
  bad_step.metadata = {{"troupe_engram_set", "x"}, {"troupe_engram_step", "12a"}};
  model::write_safetensors(dir + "/step.safetensors", bad_step);
  EXPECT_NE(read_error(dir + "/step.safetensors", cfg).find("'12a'"), std::string::npos);
  EXPECT_NE(read_error(dir + "/none.safetensors", cfg).find("none.safetensors"), std::string::npos);
}

TEST(EngramSet, BadNamesAreRefused) {
  const model::JobConfig cfg = job();
  const std::string dir = fresh_test_dir();
  EXPECT_EQ(engram_set_name_error("warm-2.v1_b"), "");
  EXPECT_EQ(engram_set_name_error(std::string(engram_set_name_bytes_max, 'a')), "");
  for (const std::string& bad :
       {std::string(), std::string("../x"), std::string(".hidden"), std::string("a/b"),
        std::string("a b"), std::string(engram_set_name_bytes_max + 1, 'a')}) {
    EXPECT_NE(engram_set_name_error(bad), "") << "'" << bad << "'";
    EXPECT_THROW(
        write_engram_set(dir + "/x.safetensors", some_set(cfg, bad), cfg.model, cfg.train.seed),
        std::invalid_argument)
        << "'" << bad << "'";
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.safetensors"));
}

TEST(EngramSet, WriteRefusesTensorsNotOfTheConfig) {
  const model::JobConfig cfg = job();
  const std::string path = fresh_test_dir() + "/x.safetensors";
  EngramSet set = some_set(cfg);
  std::swap(set.tensors[0], set.tensors[1]);  // m before values
  EXPECT_THROW(write_engram_set(path, set, cfg.model, cfg.train.seed), std::invalid_argument);
  set = some_set(cfg);
  set.tensors.pop_back();
  EXPECT_THROW(write_engram_set(path, set, cfg.model, cfg.train.seed), std::invalid_argument);
  set = some_set(cfg);
  set.tensors[4].data.pop_back();
  EXPECT_THROW(write_engram_set(path, set, cfg.model, cfg.train.seed), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(EngramSet, PathIsUnderTheRunDirectory) {
  EXPECT_EQ(engram_set_path("runs/a", "warm"), "runs/a/engram/sets/warm.safetensors");
}

// What an attach checks while the job runs: the header alone. It names the same keys as a
// full read, and a file cut short (its data truncated) is refused without reading the data.
TEST(EngramSet, TheHeaderCheckSeesTheConfigAndATruncatedFile) {
  const model::JobConfig cfg = job();
  const std::string path = fresh_test_dir() + "/warm.safetensors";
  write_engram_set(path, some_set(cfg), cfg.model, cfg.train.seed);
  const EngramSet head = check_engram_set(path, cfg.model, cfg.train.seed);
  EXPECT_EQ(head.name, "warm");
  EXPECT_EQ(head.tensors.size(), 3 * model::engram_tables(cfg.model).size());
  for (const auto& t : head.tensors) EXPECT_TRUE(t.data.empty()) << t.name;
  model::JobConfig other = cfg;
  other.model.engram_table_rows = 307;
  try {
    (void)check_engram_set(path, other.model, other.train.seed);
    FAIL() << "another config accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("engram_table_rows"), std::string::npos) << e.what();
  }
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  try {
    (void)check_engram_set(path, cfg.model, cfg.train.seed);
    FAIL() << "a truncated file accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  std::filesystem::resize_file(path, 5);
  EXPECT_THROW((void)check_engram_set(path, cfg.model, cfg.train.seed), std::runtime_error);
}

}  // namespace
}  // namespace troupe::storage
