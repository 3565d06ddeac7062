#pragma once
// Weights <-> safetensors with the SPEC §9 names and the config under `troupe_config`.
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"
#include "model/safetensors.h"

namespace troupe::model {

// Every tensor of the table as F32 (or F64 when T is double), plus the config metadata.
template <typename T>
SafetensorsFile weights_to_safetensors(const ParamTable& table, const T* params,
                                       const ModelConfig& cfg, uint64_t seed);

struct LoadedWeights {
  ModelConfig model;
  uint64_t seed = 0;
  std::vector<float> params;  // laid out by ParamTable(model)
};

// Reads a weights file written by weights_to_safetensors (or `troupe export`). Throws
// std::runtime_error naming the file and the tensor or field that is wrong or missing.
LoadedWeights load_weights(const std::string& path);

}  // namespace troupe::model
