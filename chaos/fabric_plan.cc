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

std::string rule_text(const FabricRule& r) {
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
  return t;
}

}  // namespace

std::string fabric_plan_text(const Scenario& s, uint64_t seed) {
  std::string rules;
  for (const Fault& f : s.faults)
    if (f.kind == FaultKind::fabric) rules += fmt::format("\n{}", rule_text(f.rule));
  if (rules.empty()) return "";
  return fmt::format("# {} (chaos scenario {})\nseed = {}\n", s.description, s.name, seed) + rules;
}

}  // namespace troupe::chaos
