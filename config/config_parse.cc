// Reading a job's config: the key registry, the TOML file, --set, the troupe_config JSON
// and config_to_toml. The rules on values are in config_validate.cc.
#include "config/config_parse.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <variant>

#include "config/config_fields.h"
#include "config/toml.h"
#include "config/toml_text.h"

namespace troupe::model {
using namespace config_detail;
namespace {

// ---- The key registry: every config key, its section and the field it sets ---------------

template <class C, class S, class T>
Field make_field(std::string name, S C::*section, T S::*member) {
  return {std::move(name),
          [section, member](JobConfig& c) -> FieldRef { return &((c.*section).*member); }};
}

// The key's name is the member's name, so the two cannot drift apart.
#define KEY(section, key) make_field(#key, &JobConfig::section, &decltype(JobConfig::section)::key)
#define M(key) KEY(model, key)
#define T(key) KEY(train, key)

// clang-format off
std::vector<Section> build_sections() {
  return {
      {"model", {M(vocab_size), M(seq_len), M(d_model), M(n_layers), M(n_heads), M(q_lora_rank),
                 M(kv_lora_rank), M(qk_nope_head_dim), M(qk_rope_head_dim), M(v_head_dim),
                 M(rope_theta), M(rms_norm_eps), M(hc_mult), M(sinkhorn_iters), M(first_k_dense),
                 M(dense_inter), M(n_routed_experts), M(n_shared_experts), M(moe_inter),
                 M(top_k), M(n_group), M(topk_group), M(routed_scaling), M(bias_update_speed),
                 M(gate_bias_init), M(seq_aux_alpha), M(mtp_depth), M(mtp_lambda), M(engram_layers),
                 M(engram_orders), M(engram_heads), M(engram_head_dim), M(engram_table_rows),
                 M(engram_conv_kernel), M(engram_conv_dilation), M(residual), M(ffn)}},
      {"data", {KEY(data, source), KEY(data, corpus_dir), KEY(data, val_modulus),
                KEY(data, val_rows_max), KEY(data, shuffle), KEY(data, mode),
                KEY(data, max_doc_tokens), KEY(data, arith_max_operand), KEY(data, arith_ops),
                KEY(data, arith_documents)}},
      {"train", {T(steps), T(batch_size), T(micro_batch_rows), T(tokens_per_microbatch), T(lr),
                 T(warmup_steps), T(min_lr_ratio), T(weight_decay), T(grad_clip), T(seed),
                 T(eval_every), T(threads)}},
      {"optimizer", {KEY(optimizer, name), KEY(optimizer, beta1), KEY(optimizer, beta2),
                     KEY(optimizer, eps)}},
      {"fp8", {KEY(fp8, enabled)}},
      {"memory", {KEY(memory, recompute), KEY(memory, offload_optimizer)}},
      {"checkpoint", {KEY(checkpoint, every_steps), KEY(checkpoint, keep)}},
      {"fault_tolerance", {KEY(fault_tolerance, heartbeat_interval_ms),
                           KEY(fault_tolerance, heartbeat_timeout_ms),
                           KEY(fault_tolerance, start_timeout_ms),
                           KEY(fault_tolerance, recover),
                           KEY(fault_tolerance, recovery_timeout_ms),
                           KEY(fault_tolerance, step_timeout_ms),
                           KEY(fault_tolerance, coordinator_timeout_ms),
                           KEY(fault_tolerance, buddy_copies),
                           KEY(fault_tolerance, replace_lost)}},
      {"parallel",
       {KEY(parallel, experts), KEY(parallel, schedule), KEY(parallel, pull_pieces_per_worker),
        KEY(parallel, node_groups)}},
      {"eplb", {KEY(eplb, window_steps), KEY(eplb, rebalance_every_steps)}},
      {"engram", {KEY(engram, placement), KEY(engram, shards), KEY(engram, host_cache_bytes)}},
      {"grpo", {KEY(grpo, enabled), KEY(grpo, prompts_per_step), KEY(grpo, group_size),
                KEY(grpo, max_new_tokens), KEY(grpo, temperature), KEY(grpo, clip_eps),
                KEY(grpo, kl_beta), KEY(grpo, init_weights), KEY(grpo, overlap)}},
  };
}
// clang-format on
#undef T
#undef M
#undef KEY

}  // namespace

const std::vector<Section>& config_detail::sections() {
  static const std::vector<Section> all = build_sections();
  return all;
}

const Section* config_detail::find_section(std::string_view name) {
  for (const Section& s : sections())
    if (s.name == name) return &s;
  return nullptr;
}

const Field* config_detail::find_field(const Section& s, std::string_view key) {
  for (const Field& f : s.fields)
    if (f.name == key) return &f;
  return nullptr;
}

namespace {

// ---- Registries: a component chosen by name (STYLE.md: an unknown name lists the known) ---

// Each enum key: its names, from the layer that owns the enum, and what a message calls it.
template <class E>
struct Registry;
template <>
struct Registry<Residual> {
  static constexpr const auto& names = kResidualNames;
  static constexpr std::string_view what = "residual";
};
template <>
struct Registry<Ffn> {
  static constexpr const auto& names = kFfnNames;
  static constexpr std::string_view what = "ffn";
};
template <>
struct Registry<Recompute> {
  static constexpr const auto& names = kRecomputeNames;
  static constexpr std::string_view what = "recompute mode";
};
template <>
struct Registry<OptimizerKind> {
  static constexpr const auto& names = kOptimizerNames;
  static constexpr std::string_view what = "optimizer";
};
template <>
struct Registry<ExpertsAt> {
  static constexpr const auto& names = kExpertsAtNames;
  static constexpr std::string_view what = "place for the experts";
};

template <>
struct Registry<Schedule> {
  static constexpr const auto& names = kScheduleNames;
  static constexpr std::string_view what = "schedule";
};

template <>
struct Registry<EngramAt> {
  static constexpr const auto& names = kEngramAtNames;
  static constexpr std::string_view what = "place for the Engram tables";
};

template <>
struct Registry<DataSource> {
  static constexpr const auto& names = kDataSourceNames;
  static constexpr std::string_view what = "data source";
};
template <>
struct Registry<DataMode> {
  static constexpr const auto& names = kDataModeNames;
  static constexpr std::string_view what = "data mode";
};

template <class E>
std::string name_of(E value) {
  for (const auto& [e, name] : Registry<E>::names)
    if (e == value) return std::string(name);
  throw std::logic_error(fmt::format("{} {} has no name", Registry<E>::what, int(value)));
}

template <class E>
std::string known_names() {
  std::string out;
  for (const auto& [e, name] : Registry<E>::names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

// Sets *p to the value named `name`; returns "" on success, else the known names.
template <class E>
std::string assign_name(E* p, const std::string& name) {
  for (const auto& [e, known] : Registry<E>::names)
    if (known == name) return *p = e, "";
  return fmt::format("unknown {}; known: {}", Registry<E>::what, known_names<E>());
}

// ---- Text helpers ---------------------------------------------------------------------------

std::string join(const std::vector<std::string>& v, std::string_view sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? std::string(sep) : "") + v[i];
  return out;
}

std::string known_sections_text() {
  std::vector<std::string> names;
  for (const Section& s : sections()) names.push_back(s.name);
  return join(names);
}

// "unknown section [X]", or, for a section DESIGN §8 plans but troupe does not have yet,
// that it is not there yet: a user who read the design gets told, not puzzled.
std::string unknown_section_text(const std::string& name) {
  static const std::vector<std::pair<std::string, std::string>> planned = {
      {"pipeline", "pipeline parallelism"}};
  for (const auto& [section, what] : planned)
    if (name == section)
      return fmt::format(
          "section [{}] is not implemented yet: troupe has no {} so far; known "
          "sections: {}",
          name, what, known_sections_text());
  return fmt::format("unknown section [{}]; known sections: {}", name, known_sections_text());
}

std::vector<std::string> key_names(const Section& s) {
  std::vector<std::string> names;
  for (const Field& f : s.fields) names.push_back(f.name);
  return names;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "unknown key 'model.d_modle' in [model]; did you mean 'd_model'? known keys: ..."
std::string unknown_key_text(const Section& s, std::string_view key) {
  std::string hint;
  size_t best = 3;  // suggest only near misses (≤ 2 edits)
  for (const Field& f : s.fields) {
    size_t d = edit_distance(key, f.name);
    if (d < best) best = d, hint = fmt::format("did you mean '{}'? ", f.name);
  }
  return fmt::format("unknown key '{}.{}' in [{}]; {}known keys: {}", s.name, key, s.name, hint,
                     join(key_names(s)));
}

// ---- Values: TOML and our JSON export both go through nlohmann::json -----------------------

using json = nlohmann::json;

// A TOML value as JSON. A table becomes an object and a date/time a binary value: no key
// takes either, and the messages name them by json_type_name.
json toml_to_json(const toml::node& v) {
  if (v.is_string()) return v.as_string()->get();
  if (v.is_integer()) return v.as_integer()->get();
  if (v.is_floating_point()) return v.as_floating_point()->get();
  if (v.is_boolean()) return v.as_boolean()->get();
  if (const toml::array* a = v.as_array()) {
    json out = json::array();
    for (const toml::node& x : *a) out.push_back(toml_to_json(x));
    return out;
  }
  return v.is_table() ? json::object() : json::binary({});
}

std::string json_type_name(const json& v) {
  if (v.is_string()) return "a string";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a float";
  if (v.is_boolean()) return "a boolean";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "a table";
  return v.is_binary() ? "a date/time" : "null";
}

std::string toml_quoted(const std::string& s) {  // JSON string escapes are valid TOML
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

// A double as TOML writes it: always with a '.', an exponent, or inf/nan.
std::string real_text(double v) {
  std::string t = fmt::format("{}", v);
  if (t.find_first_of(".eEn") == std::string::npos) t += ".0";
  return t;
}

// A value as TOML text: for messages and config_to_toml.
std::string json_text(const json& v) {
  if (v.is_string()) return toml_quoted(v.get<std::string>());
  if (v.is_number_float()) return real_text(v.get<double>());
  if (v.is_array()) {
    std::vector<std::string> items;
    for (const json& x : v) items.push_back(json_text(x));
    return "[" + join(items) + "]";
  }
  if (v.is_object()) return "{...}";
  return v.is_binary() ? "<date/time>" : v.dump();
}

json field_json(const FieldRef& ref) {
  return std::visit(
      [](auto* p) {
        if constexpr (std::is_enum_v<std::remove_pointer_t<decltype(p)>>)
          return json(name_of(*p));
        else
          return json(*p);
      },
      ref);
}

// A key whose value is a name (a string, or an enum by its registry's names): --set takes
// a bare word for it.
bool takes_name(const FieldRef& ref) {
  return std::visit(
      [](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        return std::is_same_v<T, std::string> || std::is_enum_v<T>;
      },
      ref);
}

}  // namespace

std::string config_detail::value_text(const FieldRef& ref) {
  return json_text(field_json(ref));
}

namespace {

bool is_int64(const json& v) {
  return v.is_number_integer() &&
         (!v.is_number_unsigned() ||
          v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
}

// Sets the field a FieldRef points to from a JSON value; each returns "" on success, else
// what the value must be.
struct Assign {
  const json& v;
  const std::string& got;
  std::string operator()(int64_t* p) const {
    if (!is_int64(v)) return "must be an integer" + got;
    return *p = v.get<int64_t>(), "";
  }
  std::string operator()(uint64_t* p) const {
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
      return "must be a non-negative integer";
    return *p = v.get<uint64_t>(), "";
  }
  std::string operator()(double* p) const {
    if (!v.is_number()) return "must be a number" + got;
    return *p = v.get<double>(), "";
  }
  std::string operator()(bool* p) const {
    if (!v.is_boolean()) return "must be true or false" + got;
    return *p = v.get<bool>(), "";
  }
  std::string operator()(std::string* p) const {
    if (!v.is_string()) return "must be a string (in quotes)" + got;
    return *p = v.get<std::string>(), "";
  }
  std::string operator()(std::vector<int64_t>* p) const {
    return list(p, "must be a list of integers like [1, 2]", is_int64);
  }
  std::string operator()(std::vector<double>* p) const {
    return list(p, "must be a list of numbers like [0.5, 0.0]",
                [](const json& x) { return x.is_number(); });
  }
  template <class X, class Ok>
  std::string list(std::vector<X>* p, const std::string& want, Ok ok) const {
    if (!v.is_array()) return want + got;
    std::vector<X> out;
    for (const json& x : v) {
      if (!ok(x)) return want;
      out.push_back(x.get<X>());
    }
    return *p = std::move(out), "";
  }
  // A registry's enum: Residual, Ffn, OptimizerKind, ExpertsAt, EngramAt, DataMode, Schedule,
  // DataSource, Recompute.
  template <class E>
  std::string operator()(E* p) const {
    static_assert(std::is_enum_v<E>);
    if (!v.is_string()) return "must be a string (in quotes)" + got;
    return assign_name(p, v.get<std::string>());
  }
};

// Sets *ref from v; returns "" on success, else what the value must be.
std::string assign(const FieldRef& ref, const json& v) {
  const std::string got = ", not " + json_type_name(v);
  return std::visit(Assign{v, got}, ref);
}

// ---- The file ----------------------------------------------------------------------------

toml::table parse_text(const std::string& text, const std::string& name) {
  if (const int line = bare_non_ascii_line(text); line > 0)
    throw ConfigError(
        fmt::format("{}:{}: TOML syntax error: a character outside ASCII that is "
                    "not inside a \"string\" or a # comment",
                    name, line));
  try {
    return toml::parse(text, std::string_view(name));
  } catch (const toml::parse_error& e) {
    throw ConfigError(toml_error_text(e, name));
  }
}

toml::table parse_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw ConfigError(fmt::format("config file '{}' not found", path));
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(fmt::format("config file '{}' is a directory; pass a .toml file", path));
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw ConfigError(fmt::format("config file '{}' cannot be read", path));
  return parse_text(text.str(), path);
}

struct Entry {  // one key = value of the file, with its line
  uint32_t line;
  const Section* section;
  std::string key;
  const toml::node* value;
};

// Every [section] key of the file, in line order (toml::table iterates by name).
std::vector<Entry> file_entries(const toml::table& root, const std::string& path) {
  std::vector<Entry> entries;
  for (auto&& [name, node] : root) {
    const uint32_t line = name.source().begin.line;
    const Section* s = find_section(name.str());
    if (!node.is_table() && !s)
      throw ConfigError(
          fmt::format("{}:{}: key '{}' is outside any section; put it under the "
                      "section it belongs to ({})",
                      path, line, name.str(), known_sections_text()));
    if (!s)
      throw ConfigError(
          fmt::format("{}:{}: {}", path, line, unknown_section_text(std::string(name.str()))));
    if (!node.is_table())
      throw ConfigError(fmt::format("{}:{}: '{}' must be a section: write [{}] and its keys below",
                                    path, line, name.str(), name.str()));
    for (auto&& [key, value] : *node.as_table())
      entries.push_back({key.source().begin.line, s, std::string(key.str()), &value});
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.line < b.line; });
  return entries;
}

void apply_table(JobConfig& cfg, const toml::table& root, const std::string& path) {
  for (const Entry& e : file_entries(root, path)) {
    const Field* f = find_field(*e.section, e.key);
    if (!f)
      throw ConfigError(
          fmt::format("{}:{}: {}", path, e.line, unknown_key_text(*e.section, e.key)));
    const std::string full = e.section->name + "." + e.key;
    const json value = toml_to_json(*e.value);
    std::string err = assign(f->ref(cfg), value);
    if (!err.empty())
      throw ConfigError(
          fmt::format("{}:{}: {} = {}: {}", path, e.line, full, json_text(value), err));
    cfg.origins[full] = fmt::format("{}:{}", path, e.line);
  }
}

// ---- --set section.key=value ------------------------------------------------------------

std::string trim(std::string_view s) {
  const auto* ws = " \t";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

void apply_set(JobConfig& cfg, const std::string& arg) {
  const std::string where = "--set " + arg;
  const size_t eq = arg.find('=');
  const std::string path = trim(std::string_view(arg).substr(0, eq));
  const size_t dot = path.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 || dot + 1 == path.size())
    throw ConfigError(fmt::format("{}: expected section.key=value, e.g. train.steps=30", where));
  const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
  const Section* s = find_section(section);
  if (!s) throw ConfigError(fmt::format("{}: {}", where, unknown_section_text(section)));
  const Field* f = find_field(*s, key);
  if (!f) throw ConfigError(fmt::format("{}: {}", where, unknown_key_text(*s, key)));

  const std::string text = arg.substr(eq + 1);
  const FieldRef ref = f->ref(cfg);
  toml::table doc;
  bool parsed = false;
  try {
    if (bare_non_ascii_line("v = " + text) == 0) {  // else the message below is clearer
      doc = toml::parse("v = " + text, std::string_view("--set"));
      parsed = doc.size() == 1 && doc.contains("v");
    }
  } catch (const toml::parse_error&) {
  }
  json value;
  if (takes_name(ref) && !(parsed && doc["v"].is_string()))
    value = trim(text);  // a bare word for a name: adamw
  else if (parsed)
    value = toml_to_json(*doc.get("v"));
  else
    throw ConfigError(where +
                      ": not a TOML value (strings need quotes, lists brackets: "
                      "\"adamw\", [1, 2])");
  std::string err = assign(ref, value);
  if (!err.empty()) throw ConfigError(fmt::format("{}: {}", where, err));
  cfg.origins[path] = where;
}

// What every way of reading a config ends with: --set, the FP8 switch, validation.
JobConfig finish_config(JobConfig cfg, const std::vector<std::string>& sets) {
  for (const std::string& s : sets) apply_set(cfg, s);
  cfg.model.fp8 = cfg.fp8.enabled;  // the layers read the switch from their ModelConfig
  cfg.model.recompute = cfg.memory.recompute;
  validate(cfg);
  return cfg;
}
}  // namespace

JobConfig load_config(const std::string& path, const std::vector<std::string>& sets) {
  JobConfig cfg;
  cfg.source = path;
  apply_table(cfg, parse_file(path), path);
  return finish_config(std::move(cfg), sets);
}

JobConfig config_from_text(const std::string& text, const std::string& name,
                           const std::vector<std::string>& sets) {
  JobConfig cfg;
  cfg.source = name;
  apply_table(cfg, parse_text(text, name), name);
  return finish_config(std::move(cfg), sets);
}

JobConfig config_from_sets(const std::vector<std::string>& sets) {
  return finish_config(JobConfig{}, sets);
}

nlohmann::json model_config_to_json(const ModelConfig& m, uint64_t seed) {
  JobConfig view;
  view.model = m;
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : find_section("model")->fields) j[f.name] = field_json(f.ref(view));
  // Written only when set, so that the text (and the hash) of every config from before the
  // key existed stays what it was (Config.TroupeConfigJsonTextIsUnchanged).
  if (m.gate_bias_init.empty()) j.erase("gate_bias_init");
  j["seed"] = seed;
  return j;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  const Section& model = *find_section("model");
  if (!j.is_object())
    throw ConfigError("troupe_config: the model config must be a JSON object, not " +
                      std::string(j.type_name()));
  JobConfig cfg;
  cfg.source = "troupe_config";
  for (const auto& [key, value] : j.items()) {
    if (key == "seed") continue;
    const Field* f = find_field(model, key);
    if (!f) throw ConfigError("troupe_config: " + unknown_key_text(model, key));
    std::string err = assign(f->ref(cfg), value);
    if (!err.empty())
      throw ConfigError(
          fmt::format("troupe_config: model.{} = {}: {}", key, json_text(value), err));
    cfg.origins["model." + key] = "troupe_config field '" + key + "'";
  }
  validate(cfg);
  return cfg.model;
}

std::string config_to_toml(const JobConfig& cfg) {
  JobConfig view = cfg;
  std::string out;
  for (const Section& s : sections()) {
    out += (out.empty() ? "[" : "\n[") + s.name + "]\n";
    for (const Field& f : s.fields) out += f.name + " = " + value_text(f.ref(view)) + "\n";
  }
  return out;
}

std::vector<std::string> config_sections() {
  std::vector<std::string> names;
  for (const Section& s : sections()) names.push_back(s.name);
  return names;
}

std::vector<std::string> config_keys(const std::string& section) {
  const Section* s = find_section(section);
  return s ? key_names(*s) : std::vector<std::string>{};
}

}  // namespace troupe::model
