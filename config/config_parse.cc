#include "config/config_parse.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>
#include <variant>

namespace troupe::model {
namespace {

// ---- The key registry: every config key, its section and the field it sets ---------------

using FieldRef = std::variant<int64_t*, uint64_t*, double*, bool*, std::string*,
                              std::vector<int64_t>*, Residual*, Ffn*, OptimizerKind*>;

struct Field {
  std::string name;  // the key inside its section
  std::function<FieldRef(JobConfig&)> ref;
};

struct Section {
  std::string name;
  std::vector<Field> fields;
};

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
                 M(seq_aux_alpha), M(mtp_depth), M(mtp_lambda), M(engram_layers),
                 M(engram_orders), M(engram_heads), M(engram_head_dim), M(engram_table_rows),
                 M(engram_conv_kernel), M(engram_conv_dilation), M(residual), M(ffn)}},
      {"data", {KEY(data, corpus_dir), KEY(data, val_modulus), KEY(data, val_rows_max),
                KEY(data, shuffle)}},
      {"train", {T(steps), T(batch_size), T(micro_batch_rows), T(lr), T(warmup_steps),
                 T(min_lr_ratio), T(weight_decay), T(grad_clip), T(seed), T(eval_every),
                 T(threads)}},
      {"optimizer", {KEY(optimizer, name), KEY(optimizer, beta1), KEY(optimizer, beta2),
                     KEY(optimizer, eps)}},
      {"fp8", {KEY(fp8, enabled)}},
      {"fault_tolerance", {KEY(fault_tolerance, heartbeat_interval_ms),
                           KEY(fault_tolerance, heartbeat_timeout_ms),
                           KEY(fault_tolerance, start_timeout_ms),
                           KEY(fault_tolerance, recover),
                           KEY(fault_tolerance, recovery_timeout_ms),
                           KEY(fault_tolerance, coordinator_timeout_ms),
                           KEY(fault_tolerance, buddy_copies)}},
  };
}
// clang-format on
#undef T
#undef M
#undef KEY

const std::vector<Section>& sections() {
  static const std::vector<Section> all = build_sections();
  return all;
}

const Section* find_section(std::string_view name) {
  for (const Section& s : sections())
    if (s.name == name) return &s;
  return nullptr;
}

const Field* find_field(const Section& s, std::string_view key) {
  for (const Field& f : s.fields)
    if (f.name == key) return &f;
  return nullptr;
}

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
struct Registry<OptimizerKind> {
  static constexpr const auto& names = kOptimizerNames;
  static constexpr std::string_view what = "optimizer";
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
      {"checkpoint", "checkpoints (DESIGN §6)"},
      {"parallel", "expert and pipeline parallelism"},
      {"engram", "Engram shard actors (the model's engram_* keys are in [model])"},
      {"grpo", "GRPO rollouts"}};
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

std::string value_text(const FieldRef& ref) {
  return json_text(field_json(ref));
}

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
    const std::string want = "must be a list of integers like [1, 2]";
    if (!v.is_array()) return want + got;
    std::vector<int64_t> out;
    for (const json& x : v) {
      if (!is_int64(x)) return want;
      out.push_back(x.get<int64_t>());
    }
    return *p = std::move(out), "";
  }
  template <class E>  // a registry's enum: Residual, Ffn, OptimizerKind
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

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// ---- The file ----------------------------------------------------------------------------

toml::table parse_text(const std::string& text, const std::string& name) {
  try {
    return toml::parse(text, std::string_view(name));
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}:{}: TOML syntax error: {}", name, e.source().begin.line,
                                  one_line(std::string(e.description()))));
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
    doc = toml::parse("v = " + text, std::string_view("--set"));
    parsed = doc.size() == 1 && doc.contains("v");
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

// ---- Validation ---------------------------------------------------------------------------

class Checker {
 public:
  explicit Checker(const JobConfig& cfg) : cfg_(cfg), view_(cfg) {}

  int64_t i(const std::string& key) { return *std::get<int64_t*>(ref(key)); }
  double d(const std::string& key) { return *std::get<double*>(ref(key)); }

  // One key's value breaks a rule: "file:line: key = value: what".
  [[noreturn]] void fail(const std::string& key, const std::string& what) {
    auto it = cfg_.origins.find(key);
    const std::string text = value_text(ref(key));
    if (it == cfg_.origins.end()) {  // a default, or set by code rather than config
      JobConfig defaults;
      const bool is_default = value_text(ref(key, defaults)) == text;
      throw ConfigError(fmt::format("{}{} = {}{}: {}", prefix(), key, text,
                                    is_default ? " (default)" : "", what));
    }
    if (it->second.starts_with("--set "))
      throw ConfigError(fmt::format("{}: {}", it->second, what));
    throw ConfigError(fmt::format("{}: {} = {}: {}", it->second, key, text, what));
  }

  // A rule across keys: "where: what", where = the first of `keys` set explicitly.
  [[noreturn]] void fail_across(const std::vector<std::string>& keys, const std::string& what) {
    for (const std::string& k : keys) {
      auto it = cfg_.origins.find(k);
      if (it != cfg_.origins.end()) throw ConfigError(fmt::format("{}: {}", it->second, what));
    }
    throw ConfigError(prefix() + what);
  }

  void positive(const std::string& key) {
    if (i(key) <= 0) fail(key, "must be a positive integer");
  }
  void non_negative(const std::string& key) {
    if (i(key) < 0) fail(key, "must be a non-negative integer");
  }
  void positive_real(const std::string& key) {
    if (!(d(key) > 0)) fail(key, "must be a positive number");
  }
  void non_negative_real(const std::string& key) {
    if (!(d(key) >= 0)) fail(key, "must be a non-negative number");
  }
  void fraction(const std::string& key, bool one_allowed) {
    const double v = d(key);
    if (!(v >= 0) || v > 1 || (!one_allowed && v == 1))
      fail(key, one_allowed ? "must be in [0, 1]" : "must be in [0, 1)");
  }
  // Every float key is finite (TOML allows inf and nan).
  void all_reals_finite() {
    for (const Section& s : sections())
      for (const Field& f : s.fields)
        if (const FieldRef r = f.ref(view_);
            std::holds_alternative<double*>(r) && !std::isfinite(*std::get<double*>(r)))
          fail(s.name + "." + f.name, "must be a finite number");
  }

 private:
  FieldRef ref(const std::string& key) { return ref(key, view_); }
  static FieldRef ref(const std::string& key, JobConfig& cfg) {
    const size_t dot = key.find('.');
    const Section* s = find_section(key.substr(0, dot));
    const Field* f = s ? find_field(*s, key.substr(dot + 1)) : nullptr;
    if (!f) throw std::logic_error("validate: no config key " + key);
    return f->ref(cfg);
  }
  std::string prefix() const { return cfg_.source.empty() ? "" : cfg_.source + ": "; }

  const JobConfig& cfg_;
  JobConfig view_;  // a copy, so that the registry's (mutable) field refs can read it
};

void validate_model(Checker& c, const ModelConfig& m) {
  for (const char* k : {"seq_len",
                        "d_model",
                        "n_layers",
                        "n_heads",
                        "q_lora_rank",
                        "kv_lora_rank",
                        "qk_nope_head_dim",
                        "qk_rope_head_dim",
                        "v_head_dim",
                        "hc_mult",
                        "sinkhorn_iters",
                        "dense_inter",
                        "n_routed_experts",
                        "moe_inter",
                        "top_k",
                        "n_group",
                        "topk_group",
                        "engram_heads",
                        "engram_head_dim",
                        "engram_table_rows",
                        "engram_conv_kernel",
                        "engram_conv_dilation"})
    c.positive(std::string("model.") + k);
  for (const char* k : {"first_k_dense", "n_shared_experts", "mtp_depth"})
    c.non_negative(std::string("model.") + k);
  for (const char* k : {"rope_theta", "rms_norm_eps", "routed_scaling"})
    c.positive_real(std::string("model.") + k);
  for (const char* k : {"bias_update_speed", "seq_aux_alpha", "mtp_lambda"})
    c.non_negative_real(std::string("model.") + k);

  if (m.vocab_size < 258)
    c.fail("model.vocab_size", "must be at least 258 (256 bytes + BOS + EOS)");
  if (m.qk_rope_head_dim % 2 != 0)
    c.fail("model.qk_rope_head_dim", "must be even (RoPE rotates pairs of dimensions)");
  if (m.first_k_dense > m.n_layers)
    c.fail_across({"model.first_k_dense", "model.n_layers"},
                  fmt::format("model.first_k_dense = {} must be at most model.n_layers = {}",
                              m.first_k_dense, m.n_layers));
  if (m.mtp_depth > 1) c.fail("model.mtp_depth", "must be 0 or 1 (SPEC §3.4 defines depth 1)");

  const std::vector<std::string> moe = {"model.top_k", "model.topk_group", "model.n_group",
                                        "model.n_routed_experts"};
  if (m.n_routed_experts % m.n_group != 0)
    c.fail_across({"model.n_routed_experts", "model.n_group"},
                  fmt::format("model.n_routed_experts = {} must be a multiple of model.n_group "
                              "= {}",
                              m.n_routed_experts, m.n_group));
  if (m.n_routed_experts / m.n_group < 2)
    c.fail_across({"model.n_group", "model.n_routed_experts"},
                  fmt::format("model.n_group = {} leaves {} expert(s) per group; a group needs "
                              "at least 2 (its score is the sum of its top 2)",
                              m.n_group, m.n_routed_experts / m.n_group));
  if (m.topk_group > m.n_group)
    c.fail_across({"model.topk_group", "model.n_group"},
                  fmt::format("model.topk_group = {} must be at most model.n_group = {}",
                              m.topk_group, m.n_group));
  const int64_t reachable = m.topk_group * (m.n_routed_experts / m.n_group);
  if (m.top_k > reachable)
    c.fail_across(moe,
                  fmt::format("model.top_k = {} must be at most topk_group·(n_routed_experts"
                              "/n_group) = {}·({}/{}) = {}; lower top_k or raise topk_group",
                              m.top_k, m.topk_group, m.n_routed_experts, m.n_group, reachable));

  std::set<int64_t> seen;
  for (int64_t l : m.engram_layers) {
    if (l < 0 || l >= m.n_layers)
      c.fail("model.engram_layers",
             fmt::format("layer {} is outside 0..n_layers-1 = 0..{}", l, m.n_layers - 1));
    if (!seen.insert(l).second)
      c.fail("model.engram_layers", fmt::format("layer {} is listed twice", l));
  }
  seen.clear();
  for (int64_t n : m.engram_orders) {
    if (n < 1) c.fail("model.engram_orders", "every order must be a positive integer");
    if (!seen.insert(n).second)
      c.fail("model.engram_orders", fmt::format("order {} is listed twice", n));
  }
  if (!m.engram_layers.empty() && m.engram_orders.empty())
    c.fail("model.engram_orders", "must not be empty when model.engram_layers is set");
}

void validate_rest(Checker& c, const JobConfig& cfg) {
  if (cfg.data.corpus_dir.empty()) c.fail("data.corpus_dir", "must name a directory");
  if (cfg.data.val_modulus < 2)
    c.fail("data.val_modulus",
           "must be an integer >= 2 (1 would put every document in "
           "validation)");
  c.non_negative("data.val_rows_max");

  for (const char* k : {"steps", "batch_size", "micro_batch_rows"})
    c.positive(std::string("train.") + k);
  for (const char* k : {"warmup_steps", "eval_every", "threads"})
    c.non_negative(std::string("train.") + k);
  c.positive_real("train.lr");
  c.positive_real("train.grad_clip");
  c.non_negative_real("train.weight_decay");
  c.fraction("train.min_lr_ratio", true);
  if (cfg.train.batch_size % cfg.train.micro_batch_rows != 0)
    c.fail_across({"train.batch_size", "train.micro_batch_rows"},
                  fmt::format("train.batch_size = {} must be a multiple of "
                              "train.micro_batch_rows = {}",
                              cfg.train.batch_size, cfg.train.micro_batch_rows));

  for (const char* k : {"heartbeat_interval_ms", "heartbeat_timeout_ms", "start_timeout_ms",
                        "recovery_timeout_ms", "coordinator_timeout_ms", "buddy_copies"})
    c.positive(std::string("fault_tolerance.") + k);
  const auto& ft = cfg.fault_tolerance;
  if (ft.heartbeat_timeout_ms < 2 * ft.heartbeat_interval_ms)
    c.fail_across({"fault_tolerance.heartbeat_timeout_ms", "fault_tolerance.heartbeat_interval_ms"},
                  fmt::format("fault_tolerance.heartbeat_timeout_ms = {} must be at least twice "
                              "heartbeat_interval_ms = {} (one late heartbeat is not a death)",
                              ft.heartbeat_timeout_ms, ft.heartbeat_interval_ms));
  if (ft.coordinator_timeout_ms < 2 * ft.heartbeat_interval_ms)
    c.fail_across(
        {"fault_tolerance.coordinator_timeout_ms", "fault_tolerance.heartbeat_interval_ms"},
        fmt::format("fault_tolerance.coordinator_timeout_ms = {} must be at least twice "
                    "heartbeat_interval_ms = {} (one late heartbeat is not a hang)",
                    ft.coordinator_timeout_ms, ft.heartbeat_interval_ms));

  c.fraction("optimizer.beta1", false);
  c.fraction("optimizer.beta2", false);
  c.positive_real("optimizer.eps");
}

// Features the config can name but the code cannot run yet. One place, so that the issue
// implementing a feature deletes its line here.
// Nothing is pending at the moment (the parameters are unnamed until something is).
}  // namespace

namespace {
// What every way of reading a config ends with: --set, the FP8 switch, validation.
JobConfig finish_config(JobConfig cfg, const std::vector<std::string>& sets) {
  for (const std::string& s : sets) apply_set(cfg, s);
  cfg.model.fp8 = cfg.fp8.enabled;  // the layers read the switch from their ModelConfig
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

void validate(const JobConfig& cfg) {
  Checker c(cfg);
  c.all_reals_finite();
  validate_model(c, cfg.model);
  validate_rest(c, cfg);
}

nlohmann::json model_config_to_json(const ModelConfig& m, uint64_t seed) {
  JobConfig view;
  view.model = m;
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : find_section("model")->fields) j[f.name] = field_json(f.ref(view));
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
