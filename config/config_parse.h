#pragma once
// Reading a job's configuration: a TOML file, then --set overrides, then validation.
// Precedence (stated once, also in configs/README.md): --set > file > defaults.
//
// Every error is a ConfigError whose message is ONE line naming where (file:line, or the
// --set argument), the key, and what to do, e.g.
//   configs/x.toml:12: unknown key 'model.d_modle' in [model]; known keys: vocab_size, ...
//   configs/x.toml:3: model.n_heads = -2: must be a positive integer
//   --set model.top_k=abc: not a TOML value
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/job_config.h"

namespace troupe::model {

struct GrpoConfig;  // train/grpo.h

struct ConfigError : std::runtime_error {
  using runtime_error::runtime_error;
};

// Reads the TOML file at `path`, applies `sets` ("section.key=value", value parsed as a TOML
// value: 30, 3e-3, true, "adamw", [1, 2]; a string key also takes a bare word, adamw),
// validates. Later --set of the same key wins. Throws ConfigError.
JobConfig load_config(const std::string& path, const std::vector<std::string>& sets);

// As load_config, from the file's text (what a node process receives from the
// coordinator); `name` stands for the file in messages. Throws ConfigError.
JobConfig config_from_text(const std::string& text, const std::string& name,
                           const std::vector<std::string>& sets);

// Defaults + --set only (no file). Throws ConfigError.
JobConfig config_from_sets(const std::vector<std::string>& sets);

// Checks ranges, cross-key constraints, registry names and not-yet-implemented features.
// Messages use cfg.origins for where a key was set. Throws ConfigError on the first problem.
void validate(const JobConfig& cfg);

// The GRPO runner's settings (train/grpo.h) from cfg's [grpo] section.
GrpoConfig grpo_runner_config(const JobConfig& cfg);

// The [model] section as JSON (SPEC §2 snake_case keys, every ModelConfig key) plus "seed":
// what goes into the safetensors metadata under "troupe_config" (SPEC §9).
nlohmann::json model_config_to_json(const ModelConfig& m, uint64_t seed);

// Inverse of model_config_to_json: missing keys keep their defaults, "seed" is ignored
// (read it from the JSON yourself), an unknown key or a wrong type is a ConfigError naming
// the field; the result is validated.
ModelConfig model_config_from_json(const nlohmann::json& j);

// The settings of cfg as a TOML document with every key of every section written out
// (for the run directory). load_config of it gives back the same settings.
std::string config_to_toml(const JobConfig& cfg);

// The known sections, in file order, and the known keys of one section (empty if unknown).
std::vector<std::string> config_sections();
std::vector<std::string> config_keys(const std::string& section);

}  // namespace troupe::model
