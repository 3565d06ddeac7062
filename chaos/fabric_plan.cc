// A scenario's fabric faults as the TROUPE_FABRIC_FAULTS plan (fabric_plan.h).
#include "chaos/fabric_plan.h"

#include <fmt/format.h>

namespace troupe::chaos {

namespace {

std::string quoted_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += fmt::format("{}\"{}\"", i ? ", " : "", v[i]);
  return out + "]";
}

}  // namespace

std::string fabric_rule_text(const FabricRule& r) {
  std::string t = fmt::format("[[rule]]\naction = \"{}\"\n", r.action);
  if (!r.from.empty()) t += "from = " + quoted_list(r.from) + "\n";
  if (!r.to.empty()) t += "to = " + quoted_list(r.to) + "\n";
  if (!r.types.empty()) t += "types = " + quoted_list(r.types) + "\n";
  if (r.steps) t += fmt::format("steps = [{}, {}]\n", r.steps->first, r.steps->second);
  if (r.after_ms) t += fmt::format("after_ms = {}\n", *r.after_ms);
  if (r.for_ms) t += fmt::format("for_ms = {}\n", *r.for_ms);
  if (r.lasts_ms) t += fmt::format("lasts_ms = {}\n", *r.lasts_ms);
  if (r.probability) t += fmt::format("probability = {}\n", *r.probability);
  if (r.delay_ms) t += fmt::format("delay_ms = {}\n", *r.delay_ms);
  if (!r.groups.empty()) {
    t += "groups = [";
    for (size_t i = 0; i < r.groups.size(); ++i)
      t += fmt::format("{}{}", i ? ", " : "", quoted_list(r.groups[i]));
    t += "]\n";
  }
  if (!r.target.empty()) t += fmt::format("target = \"{}\"\n", r.target);
  if (!r.switch_file.empty()) t += fmt::format("switch_file = \"{}\"\n", r.switch_file);
  return t;
}

std::string fabric_switch_file(const std::string& run_dir, size_t fault) {
  return fmt::format("{}/chaos-fabric-switch-{}", run_dir, fault + 1);
}

std::string fabric_plan_text(const Scenario& s, uint64_t seed, const std::string& run_dir) {
  std::string rules;
  for (size_t i = 0; i < s.faults.size(); ++i) {
    if (s.faults[i].kind != FaultKind::fabric) continue;
    FabricRule r = s.faults[i].rule;
    if (s.faults[i].triggered) r.switch_file = fabric_switch_file(run_dir, i);
    rules += fmt::format("\n{}", fabric_rule_text(r));
  }
  if (rules.empty()) return "";
  return fmt::format("# {} (chaos scenario {})\nseed = {}\n", s.description, s.name, seed) + rules;
}

}  // namespace troupe::chaos
