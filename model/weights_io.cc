#include "model/weights_io.h"

#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "model/config_parse.h"

namespace troupe::model {

template <typename T>
SafetensorsFile weights_to_safetensors(const ParamTable& table, const T* params,
                                       const ModelConfig& cfg, uint64_t seed) {
  SafetensorsFile f;
  for (const ParamInfo& p : table.all()) {
    TensorData t;
    t.dtype = sizeof(T) == 4 ? DType::F32 : DType::F64;
    t.shape = p.shape;
    t.bytes.resize(static_cast<size_t>(p.numel) * sizeof(T));
    std::memcpy(t.bytes.data(), params + p.offset, t.bytes.size());
    f.tensors.emplace(p.name, std::move(t));
  }
  f.metadata["troupe_config"] = model_config_to_json(cfg, seed).dump();
  f.metadata["format"] = "troupe-weights-v1";
  return f;
}

template SafetensorsFile weights_to_safetensors<float>(const ParamTable&, const float*,
                                                       const ModelConfig&, uint64_t);
template SafetensorsFile weights_to_safetensors<double>(const ParamTable&, const double*,
                                                        const ModelConfig&, uint64_t);

LoadedWeights load_weights(const std::string& path) {
  SafetensorsFile f = read_safetensors(path);
  auto meta = f.metadata.find("troupe_config");
  if (meta == f.metadata.end())
    throw std::runtime_error(path + ": no 'troupe_config' in the safetensors metadata; "
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
    float* dst = w.params.data() + p.offset;
    if (t.dtype == DType::F32) {
      std::memcpy(dst, t.bytes.data(), static_cast<size_t>(p.numel) * 4);
    } else if (t.dtype == DType::F64) {
      const double* src = reinterpret_cast<const double*>(t.bytes.data());
      for (int64_t i = 0; i < p.numel; ++i) dst[i] = static_cast<float>(src[i]);
    } else {
      throw std::runtime_error(path + ": tensor '" + p.name + "' must be F32 or F64");
    }
  }
  for (const auto& [name, t] : f.tensors)
    if (!table.has(name))
      throw std::runtime_error(path + ": unexpected tensor '" + name +
                               "' (not part of the model its troupe_config describes)");
  return w;
}

}  // namespace troupe::model
