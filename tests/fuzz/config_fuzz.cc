// The job config parser (config/config_parse.cc) and its validation (config_validate.cc):
// what a node receives from the coordinator as text (config_from_text), with --set
// overrides. Any input is a config or a ConfigError, never a crash. An accepted config
// written back (config_to_toml) reads again to the same settings, and its [model] section
// survives the safetensors metadata's JSON (model_config_to_json / _from_json).
// Input: the TOML text, then optionally a NUL byte and --set arguments, one per line. An
// input that is a JSON object also goes through model_config_from_json.
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_parse.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using troupe::model::ConfigError;
using troupe::model::JobConfig;

void check_written_back(const JobConfig& cfg) {
  namespace m = troupe::model;
  const std::string toml = m::config_to_toml(cfg);
  JobConfig again;
  try {
    again = m::config_from_text(toml, "written-back.toml", {});
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "%s\n--- written back:\n%s\n", e.what(), toml.c_str());
    FUZZ_CHECK(false, "an accepted config, written back, reads again");
  }
  FUZZ_CHECK(again.same_settings(cfg), "written back, a config keeps its settings");
  FUZZ_CHECK(m::config_to_toml(again) == toml, "and writes back to the same text");
  const m::ModelConfig model = m::model_config_from_json(m::model_config_to_json(cfg.model, 1));
  FUZZ_CHECK(model == cfg.model, "[model] survives its JSON");
}

void json_model(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  try {
    troupe::model::model_config_from_json(j);
  } catch (const ConfigError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string text(all.substr(0, nul));
  std::vector<std::string> sets;
  if (nul != std::string_view::npos) {
    std::string_view rest = all.substr(nul + 1);
    while (!rest.empty()) {
      const size_t eol = rest.find('\n');
      sets.emplace_back(rest.substr(0, eol));
      rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    }
  }
  JobConfig cfg;
  try {
    cfg = troupe::model::config_from_text(text, "fuzz.toml", sets);
  } catch (const ConfigError& e) {
    FUZZ_CHECK(std::string_view(e.what()).find('\n') == std::string_view::npos ||
                   std::string_view(e.what()).empty(),
               "a ConfigError is one line");
    json_model(text);
    return 0;
  }
  check_written_back(cfg);
  return 0;
}
