#pragma once
// Weights <-> safetensors with the SPEC §9 names and the config under `troupe_config`.
#include <string>
#include <vector>

#include "model/config.h"
#include "model/engram.h"
#include "model/params.h"
#include "storage/safetensors.h"

namespace troupe::model {

// Every tensor of the table as F32 (or F64 when T is double), plus the config metadata,
// plus every Engram table (model.layers.{l}.engram.tables.{order}.{j}, (R, D)) read from
// `engram` — required when cfg has Engram layers (throws std::invalid_argument otherwise).
template <typename T>
SafetensorsFile weights_to_safetensors(const ParamTable& table, const T* params,
                                       const ModelConfig& cfg, uint64_t seed,
                                       const EngramStore<T>* engram = nullptr);

struct LoadedWeights {
  ModelConfig model;
  uint64_t seed = 0;
  std::vector<float> params;                      // laid out by ParamTable(model)
  std::vector<std::vector<float>> engram_tables;  // (R·D) each, in engram_tables(model) order
};

// Reads a weights file written by weights_to_safetensors (or `troupe export`). Throws
// std::runtime_error naming the file and the tensor or field that is wrong or missing.
LoadedWeights load_weights(const std::string& path);

}  // namespace troupe::model
