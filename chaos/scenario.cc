// Scenario files: parse (toml++) and validate before anything starts (scenario.h).
#include "chaos/scenario.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "chaos/fabric_plan.h"
#include "chaos/scenario_reader.h"

namespace troupe::chaos {

namespace {

struct KindInfo {
  FaultKind kind;
  const char* name;
  bool live;
};
constexpr KindInfo kinds[] = {
    {FaultKind::kill, "kill", true},        {FaultKind::hang, "hang", true},
    {FaultKind::slow, "slow", true},        {FaultKind::kill_coordinator, "kill_coordinator", true},
    {FaultKind::scale, "scale", true},      {FaultKind::drain, "drain", true},
    {FaultKind::storage, "storage", false}, {FaultKind::transfer, "transfer", false},
    {FaultKind::fabric, "fabric", false},
};

std::string kind_names() {
  std::string out;
  for (const KindInfo& k : kinds) out += fmt::format("{}{}", out.empty() ? "" : ", ", k.name);
  return out;
}

// "nK" -> K, or 0 when it is not a node id.
int64_t node_number(const std::string& id) {
  if (id.size() < 2 || id[0] != 'n' || id.size() > 6) return 0;
  int64_t k = 0;
  for (size_t i = 1; i < id.size(); ++i) {
    if (id[i] < '0' || id[i] > '9') return 0;
    k = k * 10 + (id[i] - '0');
  }
  return k;
}

// A fabric fault's delay_ms is its rule's (how long a message is held), not the trigger's.
Trigger read_trigger(const TableReader& r, int64_t steps, bool delay = true) {
  Trigger t;
  t.at_step = r.integer("at_step", 0, steps, -1);
  t.at_ms = r.integer("at_ms", 0, scenario_fault_ms_max, -1);
  t.after_event = r.string("after_event", "");
  t.event_count = r.integer("event_count", 1, 1000, 1);
  if (delay) t.delay_ms = r.integer("delay_ms", 0, scenario_fault_ms_max, 0);
  const int given = (t.at_step >= 0) + (t.at_ms >= 0) + !t.after_event.empty();
  if (given != 1)
    r.fail("at_step",
           "give exactly one of at_step (steps logged), at_ms (ms since training "
           "started) or after_event (an events.jsonl kind, e.g. \"recover\")");
  if (r.has("event_count") && t.after_event.empty()) r.fail("event_count", "only with after_event");
  return t;
}

FabricRule read_rule(const TableReader& r) {
  FabricRule f;
  f.action = r.string("action", "");  // checked with the rest by the plan parser below
  f.from = r.strings("from"), f.to = r.strings("to"), f.types = r.strings("types");
  const std::vector<int64_t> steps = r.integers("steps");
  if (r.has("steps") && (steps.size() != 2 || steps[0] < 0 || steps[1] < steps[0]))
    r.fail("steps", "must be [first, last], an inclusive window with 0 <= first <= last");
  if (r.has("steps")) f.steps = std::make_pair(steps[0], steps[1]);
  const std::pair<const char*, std::optional<int64_t>*> times[] = {{"after_ms", &f.after_ms},
                                                                   {"for_ms", &f.for_ms},
                                                                   {"delay_ms", &f.delay_ms},
                                                                   {"lasts_ms", &f.lasts_ms}};
  for (const auto& [k, into] : times)
    if (r.has(k)) *into = r.integer(k, 0, scenario_fault_ms_max, 0);
  if (r.has("probability")) f.probability = r.number("probability", 0.0, 1.0, 1.0);
  f.groups = r.string_lists("groups");
  f.target = r.string("target", "");
  // What the decorator would refuse when the job starts (a type name it does not know, a
  // corrupted payload that carries no CRC32C, ...) is refused here, before anything starts:
  // its error "rule:LINE: key 'K': what" is told at the scenario's key K.
  const auto plan = parse_fault_plan(fabric_rule_text(f), "rule");
  if (!plan.ok()) {
    const std::string text = plan.status().message();
    const size_t k = text.find("key '"), end = k == std::string::npos ? k : text.find("': ", k);
    if (end == std::string::npos) r.fail("action", text);
    const std::string key = text.substr(k + 5, end - k - 5);
    r.fail(r.has(key) ? key : "action", text.substr(end + 3));
  }
  return f;
}

// A fabric fault: its rule, and a trigger when it has one (at_step, at_ms or after_event):
// then it acts from the trigger for for_ms, in every process at once (a switch file).
void read_fabric(const TableReader& r, int64_t steps, Fault& f) {
  f.rule = read_rule(r);
  f.triggered = r.has("at_step") || r.has("at_ms") || r.has("after_event");
  if (!f.triggered) {
    if (r.has("event_count")) r.fail("event_count", "only with after_event");
    return;
  }
  f.when = read_trigger(r, steps, /*delay=*/false);
  if (r.has("after_ms"))
    r.fail("after_ms",
           "a triggered fabric fault starts at its trigger: give for_ms (how long) alone");
  if (!f.rule.for_ms) r.fail("at_step", "a triggered fabric fault needs for_ms (how long)");
  f.for_ms = *f.rule.for_ms;
  f.rule.for_ms.reset();  // the switch file's time, not a window since each process started
}

Fault read_fault(const toml::table& t, const std::string& path, int64_t steps) {
  Fault f;
  f.line = t.source().begin.line;
  const std::string what = fmt::format("the [[fault]] of line {}", f.line);
  TableReader r(t, path, what,
                {"kind",        "node",   "at_step",  "at_ms",    "after_event", "event_count",
                 "delay_ms",    "for_ms", "stop_ms",  "run_ms",   "nodes",       "spec",
                 "action",      "from",   "to",       "types",    "steps",       "after_ms",
                 "probability", "groups", "recovers", "lasts_ms", "target"});
  const std::string kind = r.string("kind", "");
  const KindInfo* k = nullptr;
  for (const KindInfo& x : kinds)
    if (kind == x.name) k = &x;
  if (!k) r.fail("kind", fmt::format("unknown fault kind '{}'; known: {}", kind, kind_names()));
  f.kind = k->kind;
  if (k->live) f.when = read_trigger(r, steps);
  f.node = r.string("node", "");
  const bool wants_node = f.kind == FaultKind::kill || f.kind == FaultKind::hang ||
                          f.kind == FaultKind::slow || f.kind == FaultKind::drain;
  if (wants_node != !f.node.empty())
    r.fail("node", wants_node ? "this kind needs node = \"nK\"" : "this kind takes no node");
  if (wants_node && node_number(f.node) == 0)
    r.fail("node", fmt::format("'{}' is not a node id (n1, n2, ...)", f.node));
  const bool timed = f.kind == FaultKind::hang || f.kind == FaultKind::slow;
  f.for_ms = r.integer("for_ms", 1, scenario_fault_ms_max, timed ? -1 : 0);
  if (timed && f.for_ms < 0) r.fail("for_ms", "a " + kind + " fault needs for_ms");
  f.stop_ms = r.integer("stop_ms", 1, 10000, 20);
  f.run_ms = r.integer("run_ms", 1, 10000, 80);
  f.nodes = r.integer("nodes", 1, scenario_nodes_max, 0);
  if ((f.kind == FaultKind::scale) != (f.nodes > 0))
    r.fail("nodes", f.kind == FaultKind::scale ? "a scale fault needs nodes = N" : "only scale");
  f.spec = r.string("spec", "");
  const bool env = f.kind == FaultKind::storage || f.kind == FaultKind::transfer;
  if (env != !f.spec.empty())
    r.fail("spec", env ? "this kind needs spec (e.g. \"full@4\", \"corrupt@1\")" : "not here");
  if (f.kind == FaultKind::fabric) read_fabric(r, steps, f);
  // A minority cut off past the heartbeat timeout is evicted, as a node hung that long.
  const bool long_cut = f.triggered && f.rule.action == "partition" && f.for_ms >= hang_recovers_ms;
  f.recovers = r.boolean(
      "recovers", f.kind == FaultKind::kill || f.kind == FaultKind::kill_coordinator ||
                      f.kind == FaultKind::scale || f.kind == FaultKind::drain ||
                      (f.kind == FaultKind::hang && f.for_ms >= hang_recovers_ms) || long_cut);
  return f;
}

void check_node(const Fault& f, const std::string& id, const std::set<std::string>& gone,
                int64_t id_max, const std::string& path) {
  const int64_t k = node_number(id);
  if (k == 0)
    throw ScenarioError(
        fmt::format("{}:{}: '{}' is not a node id (n1, n2, ...)", path, f.line, id));
  if (k > id_max)
    throw ScenarioError(fmt::format(
        "{}:{}: node {} cannot exist then: the job has node ids n1..n{} by that fault (its "
        "nodes, plus one new id per scale-up or replacement before it)",
        path, f.line, id, id_max));
  if (gone.count(id))
    throw ScenarioError(
        fmt::format("{}:{}: node {} is already gone (killed, hung or drained by an earlier fault)",
                    path, f.line, id));
}

// Walks the faults in file order with the membership they imply: a node must exist and not
// be gone; a job must keep a node; a scale goes to another count.
void check_targets(const Scenario& s) {
  int64_t count = s.nodes, id_max = s.nodes;
  std::set<std::string> gone;
  for (const Fault& f : s.faults) {
    for (const auto* ids : {&f.rule.from, &f.rule.to})
      for (const std::string& id : *ids) check_node(f, id, gone, scenario_nodes_max * 4, s.path);
    if (f.node.empty() && f.kind != FaultKind::scale) continue;
    if (f.kind == FaultKind::scale) {
      id_max += std::max<int64_t>(0, f.nodes - count);
      count = f.nodes;
      continue;
    }
    check_node(f, f.node, gone, id_max, s.path);
    if (f.kind == FaultKind::slow) continue;
    gone.insert(f.node);
    // a lost node may be replaced (fault_tolerance.replace_lost) by one with a new id
    if (f.kind != FaultKind::drain) ++id_max;
    if (f.kind == FaultKind::drain && --count < 1)
      throw ScenarioError(
          fmt::format("{}:{}: draining {} would leave no node", s.path, f.line, f.node));
  }
}

std::string resolve(const std::string& file, const std::string& rel) {
  const std::filesystem::path p(rel);
  if (p.is_absolute()) return rel;
  return (std::filesystem::path(file).parent_path() / p).lexically_normal().string();
}

void read_top(Scenario& s, const TableReader& r) {
  s.description = r.string("description", "");
  if (s.description.empty()) r.fail("description", "say in one line what this scenario does");
  const std::string config = r.string("config", "");
  if (config.empty()) r.fail("config", "name the job's TOML (relative to this file)");
  s.config = resolve(s.path, config);
  if (!std::filesystem::is_regular_file(s.config))
    r.fail("config", fmt::format("'{}' is not a file", s.config));
  s.sets = r.strings("set");
  s.steps = r.integer("steps", 1, scenario_steps_max, 0);
  if (s.steps == 0) r.fail("steps", "give the job's steps");
  s.nodes = r.integer("nodes", 1, scenario_nodes_max, 0);
  if (s.nodes == 0) r.fail("nodes", "give the job's node count");
  s.launch_args = r.strings("launch_args");
  s.timeout_s = r.integer("timeout_s", 10, scenario_timeout_s_max, 300);
  s.fast = r.boolean("fast", false);
  s.expect_events = r.strings("expect_events");
  for (const std::string& e : s.expect_events)
    if (e.empty() || e.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos)
      r.fail("expect_events", fmt::format("'{}' is not an event kind (as events.jsonl writes "
                                          "them: \"recover\", \"scaled\")",
                                          e));
  s.seed = uint64_t(r.integer("seed", 0, INT64_MAX, 1));
}

}  // namespace

const char* fault_kind_name(FaultKind k) {
  for (const KindInfo& x : kinds)
    if (x.kind == k) return x.name;
  return "?";
}

bool injected_live(FaultKind k) {
  for (const KindInfo& x : kinds)
    if (x.kind == k) return x.live;
  return false;
}

Scenario parse_scenario_text(const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(path));
  } catch (const toml::parse_error& e) {
    throw ScenarioError(model::toml_error_text(e, path));
  }
  Scenario s;
  s.path = path;
  s.name = std::filesystem::path(path).stem().string();
  const TableReader r(root, path, "the scenario",
                      {"description", "config", "set", "steps", "nodes", "launch_args", "timeout_s",
                       "fast", "seed", "fault", "bounds", "expect_events"});
  read_top(s, r);
  if (const toml::table* b = r.table("bounds")) {
    const TableReader br(*b, path, "[bounds]",
                         {"detection_ms_max", "recovery_ms_max", "steps_redone_max"});
    if (br.has("detection_ms_max"))
      s.bounds.detection_ms_max = br.integer("detection_ms_max", 1, scenario_fault_ms_max, 0);
    if (br.has("recovery_ms_max"))
      s.bounds.recovery_ms_max = br.integer("recovery_ms_max", 1, scenario_fault_ms_max, 0);
    if (br.has("steps_redone_max"))
      s.bounds.steps_redone_max = br.integer("steps_redone_max", 0, scenario_steps_max, 0);
  }
  if (r.has("fault")) {
    const toml::array* faults = root.get("fault")->as_array();
    if (!faults || !faults->is_array_of_tables()) r.fail("fault", "write each as [[fault]]");
    for (const toml::node& f : *faults)
      s.faults.push_back(read_fault(*f.as_table(), path, s.steps));
  }
  check_targets(s);
  return s;
}

Scenario parse_scenario(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw ScenarioError(fmt::format("scenario file '{}' not found (or not a file)", path));
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw ScenarioError(fmt::format("scenario file '{}' cannot be read", path));
  return parse_scenario_text(text.str(), path);
}

bool Fault::live() const {
  return injected_live(kind) || triggered;
}

std::string Fault::describe() const {
  std::string what = fault_kind_name(kind);
  if (!node.empty()) what += " " + node;
  if (kind == FaultKind::hang || kind == FaultKind::slow) what += fmt::format(" {} ms", for_ms);
  if (kind == FaultKind::slow) what += fmt::format(" ({}/{} ms stop/run)", stop_ms, run_ms);
  if (kind == FaultKind::scale) what += fmt::format(" to {}", nodes);
  if (!spec.empty()) what += " " + spec;
  if (kind == FaultKind::fabric) what += " " + rule.action;
  if (triggered) what += fmt::format(" {} ms", for_ms);
  if (!live()) return what;
  if (when.at_step >= 0) what += fmt::format(" at step {}", when.at_step);
  if (when.at_ms >= 0) what += fmt::format(" at {} ms", when.at_ms);
  if (!when.after_event.empty())
    what += fmt::format(" after {} #{}", when.after_event, when.event_count);
  if (when.delay_ms > 0) what += fmt::format(" +{} ms", when.delay_ms);
  return what;
}

Scenario with_scaled_time_bounds(Scenario s, double scale) {
  for (std::optional<int64_t>* b : {&s.bounds.detection_ms_max, &s.bounds.recovery_ms_max})
    if (*b) **b = int64_t(double(**b) * scale);
  return s;
}

}  // namespace troupe::chaos
