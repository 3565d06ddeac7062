#include "storage/engram_set.h"

#include <xxhash.h>

#include <charconv>
#include <set>
#include <stdexcept>

#include "model/engram.h"
#include "storage/safetensors.h"

namespace troupe::storage {

namespace {

using json = nlohmann::json;

constexpr const char* kNameKey = "troupe_engram_set";
constexpr const char* kStepKey = "troupe_engram_step";
constexpr const char* kConfigKey = "troupe_engram_config";
// The identity's keys in the order a mismatch is looked for: the first that differs is the
// one the error names, so a set made for other tables names its table keys before the seed.
constexpr const char* kIdentityKeys[] = {
    "engram_layers",     "engram_orders", "engram_heads", "engram_head_dim",
    "engram_table_rows", "vocab_size",    "seed"};

// A table's tensors as the config has them: engram_tables(cfg) order, values, m, v of each.
struct Expected {
  std::string name;
  int64_t rows = 0, dim = 0;
};

std::vector<Expected> expected_tensors(const model::ModelConfig& cfg) {
  std::vector<Expected> out;
  for (const model::EngramTableInfo& t : model::engram_tables(cfg))
    for (model::EngramPart part : model::kEngramParts)
      out.push_back({model::engram_state_name(t.name, part), t.rows, t.dim});
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// The step text of the metadata: decimal digits only, as write_engram_set writes it.
int64_t parse_step(const std::string& path, const std::string& text) {
  int64_t step = -1;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, step);
  if (text.empty() || text[0] == '-' || ec != std::errc() || p != end)
    fail(path, std::string(kStepKey) + " '" + text + "' is not a step (a count of train steps)");
  return step;
}

// The file's identity against the job's, key by key in kIdentityKeys order.
void check_identity(const std::string& path, const std::string& text, const json& job) {
  const json file = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!file.is_object())
    fail(path, std::string(kConfigKey) + " is not a JSON object: the file is not a table set");
  for (const char* key : kIdentityKeys) {
    if (!file.contains(key))
      fail(path,
           std::string("made for a config without ") + key + ", this job has " + job[key].dump());
    if (file[key] != job[key])
      fail(path, std::string("made for ") + key + " = " + file[key].dump() + ", this job has " +
                     job[key].dump());
  }
}

// The set's tensors in the config's order, each checked against its table; then no tensor
// that is not one of them (a set of more tables than this config's is not this config's).
std::vector<model::StateTensor> checked_tensors(const std::string& path,
                                                const model::SafetensorsFile& f,
                                                const model::ModelConfig& cfg) {
  std::vector<model::StateTensor> out;
  std::set<std::string> known;
  for (const Expected& e : expected_tensors(cfg)) {
    known.insert(e.name);
    const auto it = f.tensors.find(e.name);
    if (it == f.tensors.end()) fail(path, "no tensor " + e.name);
    const model::TensorData& t = it->second;
    const std::vector<int64_t> shape = {e.rows, e.dim};
    if (t.dtype != model::DType::F32 || t.shape != shape)
      fail(path, "tensor " + e.name + " is " + model::dtype_name(t.dtype) + " " +
                     shape_text(t.shape) + ", this job's table is F32 " + shape_text(shape));
    out.push_back(
        {e.name, shape, t.bytes.empty() ? std::vector<float>() : model::tensor_as_f32(t)});
  }
  std::string extra;
  for (const auto& [name, t] : f.tensors)
    if (!known.count(name)) extra += (extra.empty() ? "" : ", ") + name;
  if (!extra.empty()) fail(path, "tensors that are not this job's Engram tables: " + extra);
  return out;
}

}  // namespace

std::string engram_set_name_error(const std::string& name) {
  if (name.empty()) return "a table set's name must not be empty";
  if (name.size() > engram_set_name_bytes_max)
    return "a table set's name is at most " + std::to_string(engram_set_name_bytes_max) +
           " bytes, '" + name.substr(0, 16) + "...' has " + std::to_string(name.size());
  if (name[0] == '.') return "a table set's name must not start with '.' (got '" + name + "')";
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok)
      return "a table set's name holds only A-Z, a-z, 0-9, '.', '_' and '-' (got '" + name + "')";
  }
  return "";
}

json engram_set_identity(const model::ModelConfig& cfg, uint64_t seed) {
  return json{{"engram_layers", cfg.engram_layers},
              {"engram_orders", cfg.engram_orders},
              {"engram_heads", cfg.engram_heads},
              {"engram_head_dim", cfg.engram_head_dim},
              {"engram_table_rows", cfg.engram_table_rows},
              {"vocab_size", cfg.vocab_size},
              {"seed", seed}};
}

void write_engram_set(const std::string& path, const EngramSet& set, const model::ModelConfig& cfg,
                      uint64_t seed) {
  if (const std::string why = engram_set_name_error(set.name); !why.empty())
    throw std::invalid_argument(path + ": " + why);
  if (set.step < 0)
    throw std::invalid_argument(path + ": step " + std::to_string(set.step) + " is negative");
  const std::vector<Expected> want = expected_tensors(cfg);
  if (set.tensors.size() != want.size())
    throw std::invalid_argument(path + ": " + std::to_string(set.tensors.size()) +
                                " tensors, the config's tables have " +
                                std::to_string(want.size()) + " (values, m, v of each)");
  model::SafetensorsFile f;
  for (size_t i = 0; i < want.size(); ++i) {
    const model::StateTensor& t = set.tensors[i];
    const std::vector<int64_t> shape = {want[i].rows, want[i].dim};
    if (t.name != want[i].name || t.shape != shape ||
        int64_t(t.data.size()) != want[i].rows * want[i].dim)
      throw std::invalid_argument(path + ": tensor " + std::to_string(i) + " is " + t.name + " " +
                                  shape_text(t.shape) + " of " + std::to_string(t.data.size()) +
                                  " floats, the config wants " + want[i].name + " " +
                                  shape_text(shape));
    f.tensors.emplace(t.name, model::to_tensor_data(t.data, shape));
  }
  f.metadata[kNameKey] = set.name;
  f.metadata[kStepKey] = std::to_string(set.step);
  f.metadata[kConfigKey] = engram_set_identity(cfg, seed).dump();
  model::write_safetensors(path, f);
}

namespace {

EngramSet checked_set(const std::string& path, const model::SafetensorsFile& f,
                      const model::ModelConfig& cfg, uint64_t seed) {
  const auto name = f.metadata.find(kNameKey);
  if (name == f.metadata.end())
    fail(path, std::string("not an Engram table set (no ") + kNameKey + " metadata)");
  if (const std::string why = engram_set_name_error(name->second); !why.empty())
    fail(path, "its name is not valid: " + why);
  const auto step = f.metadata.find(kStepKey);
  if (step == f.metadata.end()) fail(path, std::string("no ") + kStepKey + " metadata");
  EngramSet set;
  set.name = name->second;
  set.step = parse_step(path, step->second);
  const auto config = f.metadata.find(kConfigKey);
  if (config == f.metadata.end()) fail(path, std::string("no ") + kConfigKey + " metadata");
  check_identity(path, config->second, engram_set_identity(cfg, seed));
  set.tensors = checked_tensors(path, f, cfg);
  return set;
}

}  // namespace

EngramSet read_engram_set(const std::string& path, const model::ModelConfig& cfg, uint64_t seed) {
  // A SafetensorsError already reads "<path>: <what is wrong>": it passes through as it is.
  return checked_set(path, model::read_safetensors(path), cfg, seed);
}

EngramSet check_engram_set(const std::string& path, const model::ModelConfig& cfg, uint64_t seed) {
  return checked_set(path, model::read_safetensors_header(path), cfg, seed);
}

uint64_t engram_set_hash(const std::vector<model::StateTensor>& tensors) {
  uint64_t h = 0;
  for (const model::StateTensor& t : tensors)
    h = XXH64(t.data.data(), t.data.size() * sizeof(float), h);
  return h;
}

std::string engram_set_path(const std::string& run_dir, const std::string& name) {
  return run_dir + "/engram/sets/" + name + ".safetensors";
}

}  // namespace troupe::storage
