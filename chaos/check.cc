// The invariants of a chaos run (check.h).
#include "chaos/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "chaos/fault_plan.h"

namespace troupe::chaos {

namespace {

using json = nlohmann::json;

int64_t unix_ms(const json& e) {
  return e.value("unix_ms", int64_t(0));
}

// The first event at or after `from_ms` (index from `start`) of `kind` for which `match`
// holds; events.size() when none.
template <typename Match>
size_t first_event(const std::vector<json>& events, size_t start, int64_t from_ms,
                   const std::string& kind, Match match) {
  for (size_t i = start; i < events.size(); ++i)
    if (events[i].value("kind", "") == kind && unix_ms(events[i]) >= from_ms && match(events[i]))
      return i;
  return events.size();
}

// A partition's smallest group: the nodes it cuts off, which the job must evict.
const std::vector<std::string>& minority(const FabricRule& r) {
  return *std::min_element(r.groups.begin(), r.groups.end(),
                           [](const auto& a, const auto& b) { return a.size() < b.size(); });
}

// The event that shows the job saw the fault, and the one that shows it trains again.
void measure(const Fault& f, const FaultRecord& r, const std::vector<json>& ev, FaultOutcome& o) {
  const int64_t t = r.injected_unix_ms;
  const auto any = [](const json&) { return true; };
  size_t seen = ev.size();
  if (f.kind == FaultKind::kill || f.kind == FaultKind::hang || f.kind == FaultKind::slow) {
    seen = first_event(ev, 0, t, "recover",
                       [&](const json& e) { return e.value("node", "") == f.node; });
    if (seen < ev.size()) o.detected_ms = ev[seen].value("detected_unix_ms", unix_ms(ev[seen])) - t;
  } else if (f.triggered && f.rule.action == "partition") {  // the minority's eviction
    const std::vector<std::string>& g = minority(f.rule);
    seen = first_event(ev, 0, t, "recover", [&](const json& e) {
      return std::count(g.begin(), g.end(), e.value("node", "")) > 0;
    });
    if (seen < ev.size()) o.detected_ms = ev[seen].value("detected_unix_ms", unix_ms(ev[seen])) - t;
  } else if (f.kind == FaultKind::kill_coordinator) {
    seen = first_event(ev, 0, t, "coordinator_restarted", any);
    if (seen < ev.size()) o.detected_ms = unix_ms(ev[seen]) - t;
  }
  size_t done = ev.size();
  // A scale down ends as its leavers are drained: the coordinator writes `drained` for it.
  if (f.kind == FaultKind::scale)
    done = std::min(first_event(ev, 0, t, "scaled", any), first_event(ev, 0, t, "drained", any));
  if (f.kind == FaultKind::drain) done = first_event(ev, 0, t, "drained", any);
  if (seen < ev.size()) {
    done = first_event(ev, seen, t, "recovered", any);
    for (size_t i = seen; i < std::min(done, ev.size()); ++i)
      if (ev[i].value("kind", "") == "rollback")
        o.steps_redone += ev[i].value("from_step", int64_t(0)) - ev[i].value("step", int64_t(0));
  }
  if (done < ev.size()) o.recovered_ms = unix_ms(ev[done]) - t;
  const int64_t end = done < ev.size() ? unix_ms(ev[done]) : INT64_MAX;
  for (const json& e : ev)
    if (e.value("kind", "") == "dropped" && unix_ms(e) >= t && unix_ms(e) <= end) ++o.drops_seen;
}

std::string ms_text(const std::optional<int64_t>& v) {
  return v ? fmt::format("{} ms", *v) : std::string("none");
}

}  // namespace

std::vector<FaultOutcome> fault_outcomes(const Scenario& s, const LiveRun& run) {
  std::vector<FaultOutcome> rows;
  for (size_t i = 0; i < s.faults.size(); ++i) {
    FaultOutcome o;
    o.fault = s.faults[i].describe();
    o.injected = run.faults[i].injected;
    o.error = run.faults[i].error;
    if (o.injected && s.faults[i].live()) measure(s.faults[i], run.faults[i], run.events, o);
    rows.push_back(o);
  }
  return rows;
}

std::vector<Verdict> check_faults(const Scenario& s, const std::vector<FaultOutcome>& rows) {
  std::vector<Verdict> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Fault& f = s.faults[i];
    const FaultOutcome& o = rows[i];
    const std::string name = "fault " + std::to_string(i + 1) + " (" + o.fault + ")";
    if (!o.injected) {
      out.push_back({name + " injected", false, o.error});
      continue;
    }
    if (f.recovers)
      out.push_back({name + " recovered", o.recovered_ms.has_value(),
                     o.recovered_ms ? "after " + ms_text(o.recovered_ms)
                                    : "no recovered/scaled/drained event after it"});
    const auto bound = [&](const char* what, const std::optional<int64_t>& v,
                           const std::optional<int64_t>& max) {
      if (!max || !v) return;
      out.push_back({fmt::format("{} {} <= {} ms", name, what, *max), *v <= *max, ms_text(v)});
    };
    bound("detected", o.detected_ms, s.bounds.detection_ms_max);
    bound("recovered", o.recovered_ms, s.bounds.recovery_ms_max);
    if (s.bounds.steps_redone_max)
      out.push_back({fmt::format("{} steps redone <= {}", name, *s.bounds.steps_redone_max),
                     o.steps_redone <= *s.bounds.steps_redone_max, std::to_string(o.steps_redone)});
  }
  return out;
}

namespace {

bool has_event(const std::vector<json>& events, const std::string& kind, const std::string& text) {
  for (const json& e : events)
    if (e.value("kind", "") == kind && e.dump().find(text) != std::string::npos) return true;
  return false;
}

// One item of a storage spec ("full@4") and whether the events show it.
std::optional<Verdict> storage_item(const std::string& item, const std::vector<json>& events) {
  const size_t at = item.find('@');
  const std::string what = item.substr(0, at), step = item.substr(at + 1);
  const std::string name = "storage fault " + item + " took effect";
  if (what == "full" || what == "sync")
    return Verdict{name, has_event(events, "checkpoint_skipped", "\"step\":" + step + ","),
                   "a checkpoint_skipped event for step " + step};
  if (what == "corrupt" && has_event(events, "rollback", ""))
    return Verdict{name, has_event(events, "checkpoint_corrupt", "checkpoint of step " + step),
                   "a checkpoint_corrupt event for step " + step + " (the job rolled back)"};
  return std::nullopt;  // file-full, or a corrupt checkpoint never read: nothing to see
}

// A drop rule that names only step messages: each such fault stalls a step, which the
// coordinator redoes after step_timeout_ms (a "recover" event that says so).
bool drops_step_messages(const Fault& f) {
  static const std::set<std::string> step = {"StepBegin", "Stats",    "GradSlices",  "NormParts",
                                             "Apply",     "StepDone", "EngramSlices"};
  if (f.kind != FaultKind::fabric || f.rule.action != "drop" || f.rule.types.empty()) return false;
  for (const std::string& t : f.rule.types)
    if (!step.count(t)) return false;
  return true;
}

// A partition took effect when a node of its smallest group was evicted (a recover for it).
Verdict partition_item(const FabricRule& r, const std::vector<json>& events) {
  const std::vector<std::string>& cut = minority(r);
  std::string names;
  for (const std::string& n : cut) names += (names.empty() ? "" : ", ") + n;
  bool evicted = false;
  for (const json& e : events)
    if (e.value("kind", "") == "recover" &&
        std::count(cut.begin(), cut.end(), e.value("node", "")) > 0)
      evicted = true;
  return {"fabric partition took effect: the minority (" + names + ") was evicted", evicted,
          evicted ? "a recover event for it" : "no recover event names a node of it"};
}

}  // namespace

std::vector<Verdict> check_configured(const Scenario& s, const std::vector<json>& events) {
  std::vector<Verdict> out;
  int64_t step_drops = 0;
  for (const Fault& f : s.faults) {
    if (f.kind == FaultKind::transfer) {
      const auto drops = job_drops(events);
      const auto it = drops.find("malformed");
      out.push_back({"transfer fault " + f.spec + " caught", it != drops.end() && it->second > 0,
                     fmt::format("malformed drops: {}", it == drops.end() ? 0 : it->second)});
    }
    if (drops_step_messages(f)) ++step_drops;
    if (f.kind == FaultKind::fabric && f.rule.action == "partition")
      out.push_back(partition_item(f.rule, events));
    if (f.kind != FaultKind::storage) continue;
    std::istringstream items(f.spec);
    std::string item;
    while (std::getline(items, item, ','))
      if (auto v = storage_item(item, events)) out.push_back(*v);
  }
  for (const std::string& kind : s.expect_events) {
    const auto n = std::count_if(events.begin(), events.end(),
                                 [&](const json& e) { return e.value("kind", "") == kind; });
    out.push_back({fmt::format("a {} event, as the scenario expects", kind), n > 0,
                   fmt::format("{} in events.jsonl", n)});
  }
  if (step_drops > 0) {
    int64_t redone = 0;
    for (const json& e : events)
      if (e.value("kind", "") == "recover" &&
          e.value("text", "").find("step_timeout_ms") != std::string::npos)
        ++redone;
    out.push_back(
        {fmt::format("{} dropped step message(s) each stalled a step, redone", step_drops),
         redone >= step_drops,
         fmt::format("{} recover event(s) for a step past step_timeout_ms", redone)});
  }
  return out;
}

std::vector<Verdict> check_fabric_rules_acted(const Scenario& s, const std::string& plan_path,
                                              const std::string& logs) {
  if (std::none_of(s.faults.begin(), s.faults.end(),
                   [](const Fault& f) { return f.kind == FaultKind::fabric; }))
    return {};
  const auto plan = load_fault_plan(plan_path);  // the lines its rules are logged by
  if (!plan.ok()) return {{"the fabric plan reads back", false, plan.status().to_string()}};
  std::vector<Verdict> out;
  size_t i = 0;
  for (const Fault& f : s.faults) {
    if (f.kind != FaultKind::fabric) continue;
    const std::string needle =
        fmt::format("fabric faults: rule at {}:{} (", plan_path, plan.value().rules.at(i++).line);
    const bool acted = logs.find(needle) != std::string::npos;
    out.push_back({fmt::format("fabric fault of line {} ({}) acted", f.line, f.rule.action), acted,
                   acted ? "a process logged its first action"
                         : fmt::format("no process logged \"{}...\": the rule matched no message "
                                       "(see its from, to, types, steps and time window)",
                                       needle)});
  }
  return out;
}

Verdict check_epochs(const std::vector<json>& journal) {
  int64_t view = -1, last_commit = -1;
  int64_t commits = 0;
  for (const json& r : journal) {
    const std::string kind = r.value("kind", "");
    const int64_t epoch = r.value("epoch", int64_t(-1));
    if (kind == "view") view = std::max(view, epoch);
    if (kind != "commit") continue;
    ++commits;
    const int64_t step = r.value("step", int64_t(-1));
    if (epoch != view)
      return {"no old epoch applied", false,
              fmt::format("step {} committed under epoch {} while the newest journaled view "
                          "was epoch {}",
                          step, epoch, view)};
    if (epoch < last_commit)
      return {"no old epoch applied", false,
              fmt::format("step {} committed under epoch {} after a commit of epoch {}", step,
                          epoch, last_commit)};
    last_commit = epoch;
  }
  return {"no old epoch applied", true,
          fmt::format("{} commits, each under the newest journaled view's epoch", commits)};
}

int64_t steps_redone(const std::vector<json>& journal) {
  std::set<int64_t> seen;
  int64_t again = 0;
  for (const json& r : journal)
    if (r.value("kind", "") == "commit" && !seen.insert(r.value("step", int64_t(-1))).second)
      ++again;
  return again;
}

std::map<std::string, int64_t> job_drops(const std::vector<json>& events) {
  std::map<std::string, int64_t> out;
  const std::string head = "messages dropped over the job";
  for (const json& e : events) {
    const std::string text = e.value("text", "");
    if (e.value("kind", "") != "dropped" || text.rfind(head, 0) != 0) continue;
    std::istringstream in(text.substr(text.find(": ") + 2));
    std::string reason, n;
    while (in >> reason >> n) out[reason] += std::stoll(n);  // "stale_epoch 3, wrong_phase 1"
  }
  return out;
}

Verdict same_bytes(const std::string& name, const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return {name, false, fmt::format("cannot read {}", !fa ? a : b)};
  const std::string x((std::istreambuf_iterator<char>(fa)), std::istreambuf_iterator<char>());
  const std::string y((std::istreambuf_iterator<char>(fb)), std::istreambuf_iterator<char>());
  if (x == y) return {name, true, fmt::format("{} bytes, identical", x.size())};
  size_t at = 0;
  while (at < std::min(x.size(), y.size()) && x[at] == y[at]) ++at;
  return {name, false,
          fmt::format("{} ({} bytes) and {} ({} bytes) differ from byte {}", a, x.size(), b,
                      y.size(), at)};
}

}  // namespace troupe::chaos
