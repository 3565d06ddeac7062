#include "storage/weights_io.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "config/config_parse.h"

namespace troupe::model {

template <typename T>
SafetensorsFile weights_to_safetensors(const ParamTable& table, const T* params,
                                       const ModelConfig& cfg, uint64_t seed,
                                       const EngramStore<T>* engram) {
  SafetensorsFile f;
  for (const ParamInfo& p : table.all()) {
    TensorData t;
    t.dtype = sizeof(T) == 4 ? DType::F32 : DType::F64;
    t.shape = p.shape;
    t.bytes.resize(static_cast<size_t>(p.numel) * sizeof(T));
    std::memcpy(t.bytes.data(), params + p.offset, t.bytes.size());
    f.tensors.emplace(p.name, std::move(t));
  }
  if (!cfg.engram_layers.empty()) {
    if (!engram)
      throw std::invalid_argument("weights: the config has Engram layers, no tables given");
    const auto& tables = engram->tables();
    for (size_t j = 0; j < tables.size(); ++j) {
      const EngramTableInfo& info = tables[j];
      std::vector<int64_t> ids(static_cast<size_t>(info.rows));
      for (int64_t r = 0; r < info.rows; ++r) ids[r] = r;
      TensorData t;
      t.dtype = sizeof(T) == 4 ? DType::F32 : DType::F64;
      t.shape = {info.rows, info.dim};
      t.bytes.resize(static_cast<size_t>(info.rows * info.dim) * sizeof(T));
      engram->lookup(int64_t(j), ids.data(), info.rows, reinterpret_cast<T*>(t.bytes.data()));
      f.tensors.emplace(info.name, std::move(t));
    }
  }
  f.metadata["troupe_config"] = model_config_to_json(cfg, seed).dump();
  f.metadata["format"] = "troupe-weights-v1";
  return f;
}

template SafetensorsFile weights_to_safetensors<float>(const ParamTable&, const float*,
                                                       const ModelConfig&, uint64_t,
                                                       const EngramStore<float>*);
template SafetensorsFile weights_to_safetensors<double>(const ParamTable&, const double*,
                                                        const ModelConfig&, uint64_t,
                                                        const EngramStore<double>*);

namespace {
// Copies tensor t (F32 or F64, numel values) into dst as float.
void tensor_to_float(const std::string& path, const std::string& name, const TensorData& t,
                     int64_t numel, float* dst) {
  if (t.dtype == DType::F32) {
    std::memcpy(dst, t.bytes.data(), static_cast<size_t>(numel) * 4);
  } else if (t.dtype == DType::F64) {
    const double* src = reinterpret_cast<const double*>(t.bytes.data());
    for (int64_t i = 0; i < numel; ++i) dst[i] = static_cast<float>(src[i]);
  } else {
    throw std::runtime_error(path + ": tensor '" + name + "' must be F32 or F64");
  }
}
}  // namespace

LoadedWeights load_weights(const std::string& path) {
  SafetensorsFile f = read_safetensors(path);
  auto meta = f.metadata.find("troupe_config");
  if (meta == f.metadata.end())
    throw std::runtime_error(path +
                             ": no 'troupe_config' in the safetensors metadata; "
                             "is this a troupe weights file (troupe export)?");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(meta->second);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": metadata 'troupe_config' is not valid JSON: " + e.what());
  }
  LoadedWeights w;
  try {
    w.model = model_config_from_json(j);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": metadata 'troupe_config': " + e.what());
  }
  w.seed = j.value("seed", uint64_t{0});
  ParamTable table(w.model);
  w.params.assign(static_cast<size_t>(table.total()), 0.0f);
  for (const ParamInfo& p : table.all()) {
    auto it = f.tensors.find(p.name);
    if (it == f.tensors.end())
      throw std::runtime_error(path + ": tensor '" + p.name + "' is missing");
    const TensorData& t = it->second;
    if (t.shape != p.shape)
      throw std::runtime_error(path + ": tensor '" + p.name + "' has the wrong shape");
    tensor_to_float(path, p.name, t, p.numel, w.params.data() + p.offset);
  }
  std::set<std::string> table_names;
  for (const EngramTableInfo& info : engram_tables(w.model)) {
    auto it = f.tensors.find(info.name);
    if (it == f.tensors.end())
      throw std::runtime_error(path + ": Engram table '" + info.name + "' is missing");
    if (it->second.shape != std::vector<int64_t>{info.rows, info.dim})
      throw std::runtime_error(path + ": Engram table '" + info.name + "' has the wrong shape");
    w.engram_tables.emplace_back(static_cast<size_t>(info.rows * info.dim));
    tensor_to_float(path, info.name, it->second, info.rows * info.dim,
                    w.engram_tables.back().data());
    table_names.insert(info.name);
  }
  for (const auto& [name, t] : f.tensors)
    if (!table.has(name) && !table_names.count(name))
      throw std::runtime_error(path + ": unexpected tensor '" + name +
                               "' (not part of the model its troupe_config describes)");
  return w;
}

}  // namespace troupe::model
