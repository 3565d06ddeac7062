#include "actors/grpo_weights.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "config/config_parse.h"
#include "storage/weights_io.h"

namespace troupe::actors {

namespace {

// The keys of [model] whose values differ between a and b, "key (file X, config Y)" each.
std::string model_differences(const model::ModelConfig& file, const model::ModelConfig& job) {
  const nlohmann::json f = model::model_config_to_json(file, 0);
  const nlohmann::json j = model::model_config_to_json(job, 0);
  std::string out;
  for (const auto& [key, value] : j.items()) {
    if (f.contains(key) && f[key] == value) continue;
    if (!out.empty()) out += ", ";
    out += "model." + key + " (file " + (f.contains(key) ? f[key].dump() : "none") + ", config " +
           value.dump() + ")";
  }
  return out;
}

}  // namespace

std::vector<float> grpo_start_weights(const model::JobConfig& cfg, const model::ParamTable& table) {
  std::vector<float> params(size_t(table.total()));
  model::init_params(table, cfg.train.seed, params.data());
  const std::string& path = cfg.grpo.init_weights;
  if (path.empty()) return params;
  const std::string where = "grpo.init_weights = \"" + path + "\"";
  const char* hint =
      "point it at the weights.safetensors a supervised `troupe train --run-dir D` wrote into "
      "D (relative paths are from the working directory)";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw std::invalid_argument(where + " is not a file: " + hint);
  model::LoadedWeights w;
  try {
    w = model::load_weights(path);
  } catch (const std::exception& e) {
    throw std::invalid_argument(where + ": " + e.what() + "; " + hint);
  }
  if (!(w.model == cfg.model))
    throw std::invalid_argument(
        where + " holds weights of another model: " + model_differences(w.model, cfg.model) +
        "; start from weights trained with this config's [model]");
  if (w.params.size() != params.size())
    throw std::invalid_argument(where + ": " + std::to_string(w.params.size()) +
                                " parameters, the model has " + std::to_string(params.size()));
  return std::move(w.params);
}

}  // namespace troupe::actors
