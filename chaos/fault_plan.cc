#include "chaos/fault_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "actors/protocol.h"
#include "config/toml.h"

namespace troupe::chaos {

namespace {

// A refusal, carrying its full text ("FILE:LINE: key 'K': ..."); becomes a Status below.
struct PlanError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Whoever is reading the plan, naming the file and where in it.
struct Reader {
  const std::string& file;

  [[noreturn]] void fail(const toml::node* at, std::string_view key,
                         const std::string& what) const {
    const uint32_t line = at ? at->source().begin.line : 0;
    throw PlanError(fmt::format("{}:{}: key '{}': {}", file, line, key, what));
  }

  int64_t integer(const toml::node& v, std::string_view key, int64_t lo, int64_t hi) const {
    const auto* i = v.as_integer();
    if (!i || i->get() < lo || i->get() > hi)
      fail(&v, key, fmt::format("wants an integer in [{}, {}]", lo, hi));
    return i->get();
  }

  std::string text(const toml::node& v, std::string_view key, std::string_view accepted) const {
    const auto* s = v.as_string();
    if (!s) fail(&v, key, fmt::format("wants a string; accepted: {}", accepted));
    return s->get();
  }

  std::vector<std::string> texts(const toml::node& v, std::string_view key,
                                 std::string_view accepted) const {
    const auto* a = v.as_array();
    if (!a || a->empty()) fail(&v, key, fmt::format("wants a non-empty array of {}", accepted));
    std::vector<std::string> out;
    for (const toml::node& x : *a) out.push_back(text(x, key, accepted));
    return out;
  }

  // Node ids as the coordinator gives them (n1, n2, ...; n0 or "coordinator": the
  // coordinator process).
  std::vector<std::string> nodes(const toml::node& v, std::string_view key) const {
    constexpr std::string_view accepted = "node ids n0, n1, n2, ... (\"coordinator\" = n0)";
    std::vector<std::string> out = texts(v, key, accepted);
    for (std::string& n : out) {
      if (n == "coordinator") n = coordinator_node_id;
      const bool digits =
          n.size() > 1 && n[0] == 'n' &&
          std::all_of(n.begin() + 1, n.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits) fail(&v, key, fmt::format("'{}' is not a node id; accepted: {}", n, accepted));
    }
    return out;
  }
};

Action parse_action(const Reader& r, const toml::node& v) {
  const std::string accepted = "drop, delay, duplicate, reorder, corrupt, partition, slow";
  const std::string name = r.text(v, "action", accepted);
  for (size_t i = 0; i < std::size(action_names); ++i)
    if (name == action_names[i]) return Action(i);
  r.fail(&v, "action", fmt::format("unknown action '{}'; accepted: {}", name, accepted));
}

std::vector<uint32_t> parse_types(const Reader& r, const toml::node& v) {
  const std::string accepted =
      "message type names of actors/protocol.h (StepBegin, GradSlices, "
      "Recover, Heartbeat, ...; see docs/chaos.md)";
  std::vector<uint32_t> out;
  for (const std::string& name : r.texts(v, "types", accepted)) {
    const uint32_t t = actors::type_of_name(name);
    if (t == 0)
      r.fail(&v, "types", fmt::format("unknown message type '{}'; accepted: {}", name, accepted));
    out.push_back(t);
  }
  return out;
}

void parse_steps(const Reader& r, const toml::node& v, FaultRule* rule) {
  const auto* a = v.as_array();
  if (!a || a->size() != 2) r.fail(&v, "steps", "wants [first, last], an inclusive step window");
  rule->step_lo = r.integer(*a->get(0), "steps", 0, INT64_MAX);
  rule->step_hi = r.integer(*a->get(1), "steps", *rule->step_lo, INT64_MAX);
}

double parse_probability(const Reader& r, const toml::node& v) {
  std::optional<double> p;
  if (const auto* f = v.as_floating_point()) p = f->get();
  if (const auto* i = v.as_integer()) p = double(i->get());
  if (!p || !(*p >= 0.0 && *p <= 1.0)) r.fail(&v, "probability", "wants a number in [0, 1]");
  return *p;
}

void parse_groups(const Reader& r, const toml::node& v, FaultRule* rule) {
  const auto* a = v.as_array();
  if (!a || a->size() < 2)
    r.fail(&v, "groups",
           "wants at least two groups of node ids, e.g. [[\"n1\"], [\"n0\", \"n2\"]]");
  std::set<std::string> seen;
  for (const toml::node& g : *a) {
    rule->groups.push_back(r.nodes(g, "groups"));
    for (const std::string& n : rule->groups.back())
      if (!seen.insert(n).second)
        r.fail(&g, "groups", fmt::format("node {} is in two groups; a node is in at most one", n));
  }
}

// One key of a [[rule]] table into the rule.
void parse_rule_key(const Reader& r, const std::string& key, const toml::node& v, FaultRule* rule) {
  if (key == "action")
    rule->action = parse_action(r, v);
  else if (key == "from")
    rule->from = r.nodes(v, key);
  else if (key == "to")
    rule->to = r.nodes(v, key);
  else if (key == "types")
    rule->types = parse_types(r, v);
  else if (key == "steps")
    parse_steps(r, v, rule);
  else if (key == "after_ms")
    rule->after_ms = r.integer(v, key, 0, INT64_MAX / 2);
  else if (key == "for_ms")
    rule->for_ms = r.integer(v, key, 1, INT64_MAX / 2);
  else if (key == "lasts_ms")
    rule->lasts_ms = r.integer(v, key, 1, INT64_MAX / 2);
  else if (key == "probability")
    rule->probability = parse_probability(r, v);
  else if (key == "delay_ms")
    rule->delay_ms = r.integer(v, key, 1, delay_ms_max);
  else if (key == "groups")
    parse_groups(r, v, rule);
  else if (key == "target") {
    const std::string t = r.text(v, key, "header, payload");
    if (t != "header" && t != "payload")
      r.fail(&v, key, fmt::format("unknown target '{}'; accepted: header, payload", t));
    rule->target = t == "header" ? CorruptTarget::header : CorruptTarget::payload;
  } else if (key == "switch_file") {
    rule->switch_file = r.text(v, key, "a file's path");
    if (rule->switch_file.empty()) r.fail(&v, key, "wants a file's path, not \"\"");
  } else {
    r.fail(&v, key,
           "unknown key in [[rule]]; accepted: action, from, to, types, steps, after_ms, "
           "for_ms, lasts_ms, probability, delay_ms, groups (partition), target (corrupt), "
           "switch_file");
  }
}

// Keys that only some actions take, and what each action needs.
void check_rule(const Reader& r, const toml::table& t, const FaultRule& rule) {
  const auto has = [&](const char* k) { return t.contains(k); };
  const std::string_view name = action_names[size_t(rule.action)];
  const bool timed =
      rule.action == Action::delay || rule.action == Action::reorder || rule.action == Action::slow;
  if (timed && !has("delay_ms")) r.fail(&t, "delay_ms", fmt::format("{} needs delay_ms", name));
  if (!timed && has("delay_ms"))
    r.fail(t.get("delay_ms"), "delay_ms",
           fmt::format("only delay, reorder and slow take it, not {}", name));
  const bool partition = rule.action == Action::partition;
  if (partition && !has("groups")) r.fail(&t, "groups", "partition needs groups");
  if (!partition && has("groups")) r.fail(t.get("groups"), "groups", "only partition takes it");
  if (partition && (has("from") || has("to")))
    r.fail(t.get(has("from") ? "from" : "to"), has("from") ? "from" : "to",
           "partition takes groups, not from/to: messages between groups are dropped both ways");
  if (rule.action != Action::corrupt && has("target"))
    r.fail(t.get("target"), "target", "only corrupt takes it");
  if (rule.action != Action::corrupt || rule.target != CorruptTarget::payload) return;
  // Only these payloads carry a CRC32C; a flipped gradient byte would be caught by nothing
  // but the bitwise end check, so such a plan is refused rather than run silently.
  const uint32_t checked[] = {actors::state_transfer_type, actors::replica_type};
  const bool ok =
      !rule.types.empty() && std::all_of(rule.types.begin(), rule.types.end(), [&](uint32_t x) {
        return std::find(std::begin(checked), std::end(checked), x) != std::end(checked);
      });
  if (!ok)
    r.fail(has("types") ? t.get("types") : &t, "types",
           "corrupt with target = \"payload\" is offered only for the CRC32C-checked payloads: "
           "types = [\"StateTransfer\", \"Replica\"] or a part of it (docs/chaos.md)");
}

FaultRule parse_rule(const Reader& r, const toml::node& v) {
  const toml::table* t = v.as_table();
  if (!t) r.fail(&v, "rule", "wants [[rule]] tables");
  if (!t->contains("action"))
    r.fail(&v, "action",
           "every [[rule]] needs one; accepted: drop, delay, duplicate, reorder, "
           "corrupt, partition, slow");
  FaultRule rule;
  rule.line = int(t->source().begin.line);
  parse_rule_key(r, "action", *t->get("action"), &rule);  // first: target and types depend on it
  for (const auto& [k, value] : *t)
    if (k.str() != "action") parse_rule_key(r, std::string(k.str()), value, &rule);
  check_rule(r, *t, rule);
  return rule;
}

FaultPlan parse_table(const toml::table& root, const std::string& name) {
  const Reader r{name};
  FaultPlan plan;
  plan.source = name;
  for (const auto& [k, v] : root) {
    if (k.str() == "seed") {
      plan.seed = uint64_t(r.integer(v, "seed", 0, INT64_MAX));
    } else if (k.str() == "rule") {
      const toml::array* rules = v.as_array();
      if (!rules) r.fail(&v, "rule", "wants [[rule]] tables");
      if (rules->size() > rules_max)
        r.fail(&v, "rule",
               fmt::format("{} rules; at most rules_max = {}", rules->size(), rules_max));
      for (const toml::node& x : *rules) plan.rules.push_back(parse_rule(r, x));
    } else {
      r.fail(&v, k.str(), "unknown key; accepted at the top: seed, [[rule]]");
    }
  }
  return plan;
}

std::string joined(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const std::string& x : v) {
    if (!out.empty()) out.append(sep);
    out.append(x);
  }
  return out;
}

std::string list(const std::vector<std::string>& v) {
  return v.empty() ? std::string("*") : joined(v, ",");
}

}  // namespace

runtime::Result<FaultPlan> parse_fault_plan(const std::string& text, const std::string& name) {
  try {
    return parse_table(toml::parse(text, std::string_view(name)), name);
  } catch (const toml::parse_error& e) {
    return runtime::Status(runtime::Code::invalid_argument, model::toml_error_text(e, name));
  } catch (const PlanError& e) {
    return runtime::Status(runtime::Code::invalid_argument, e.what());
  }
}

runtime::Result<FaultPlan> load_fault_plan(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return runtime::Status(runtime::Code::invalid_argument,
                           fmt::format("fabric fault plan '{}' ({}) is not a file; set {} to a "
                                       "TOML plan (docs/chaos.md) or unset it",
                                       path, fabric_faults_env, fabric_faults_env));
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in)
    return runtime::Status(runtime::Code::io_error,
                           fmt::format("fabric fault plan '{}' cannot be read", path));
  return parse_fault_plan(text.str(), path);
}

runtime::Result<std::optional<FaultPlan>> fault_plan_from_env() {
  const char* path = std::getenv(fabric_faults_env);
  if (!path || !*path) return std::optional<FaultPlan>();
  runtime::Result<FaultPlan> plan = load_fault_plan(path);
  if (!plan.ok()) return plan.status();
  return std::optional<FaultPlan>(std::move(plan).value());
}

std::string describe(const FaultPlan& plan) {
  std::vector<std::string> rules;
  for (const FaultRule& r : plan.rules) {
    std::string s(action_names[size_t(r.action)]);
    if (r.action == Action::partition) {
      std::vector<std::string> groups;
      for (const auto& g : r.groups) groups.push_back(fmt::format("[{}]", list(g)));
      s.append(fmt::format(" {}", joined(groups, " | ")));
    } else {
      s.append(fmt::format(" {}->{}", list(r.from), list(r.to)));
    }
    std::vector<std::string> names;
    for (uint32_t t : r.types) names.emplace_back(actors::type_name(t));
    if (!names.empty()) s.append(fmt::format(" {}", list(names)));
    if (r.step_lo) s.append(fmt::format(" steps {}-{}", *r.step_lo, *r.step_hi));
    if (r.after_ms > 0 || r.for_ms) s.append(fmt::format(" from {} ms", r.after_ms));
    if (r.for_ms) s.append(fmt::format(" for {} ms", *r.for_ms));
    if (r.lasts_ms) s.append(fmt::format(" lasting {} ms", *r.lasts_ms));
    if (r.probability < 1.0) s.append(fmt::format(" p={}", r.probability));
    if (r.delay_ms > 0) s.append(fmt::format(" {} ms", r.delay_ms));
    if (!r.switch_file.empty()) s.append(fmt::format(" while {} exists", r.switch_file));
    rules.push_back(std::move(s));
  }
  return fmt::format("{}: seed {}, {} rule(s) ({})", plan.source, plan.seed, plan.rules.size(),
                     joined(rules, "; "));
}

}  // namespace troupe::chaos
