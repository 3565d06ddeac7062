// The table and the JSON of a chaos run (report.h).
#include "chaos/report.h"

#include <fmt/format.h>

namespace troupe::chaos {

namespace {

std::string cell(const std::optional<int64_t>& ms) {
  return ms ? fmt::format("{} ms", *ms) : std::string("-");
}

nlohmann::json ms_json(const std::optional<int64_t>& ms) {
  return ms ? nlohmann::json(*ms) : nlohmann::json(nullptr);
}

}  // namespace

bool Report::ok() const {
  for (const Verdict& v : checks)
    if (!v.ok) return false;
  return true;
}

std::string report_text(const Report& r) {
  std::string t = fmt::format("chaos: {} (seed {}), run dir {}\n", r.scenario, r.seed, r.run_dir);
  t += fmt::format("  {:<44} {:>13} {:>15} {:>12} {:>13}\n", "fault", "detected after",
                   "recovered after", "steps redone", "drops seen");
  for (const FaultOutcome& f : r.faults)
    t += fmt::format("  {:<44} {:>13} {:>15} {:>12} {:>13}\n", f.fault.substr(0, 44),
                     cell(f.detected_ms), cell(f.recovered_ms), f.steps_redone, f.drops_seen);
  std::string drops;
  for (const auto& [reason, n] : r.drops) drops += fmt::format(" {} {}", reason, n);
  t += fmt::format("  messages dropped over the job:{}; steps redone (journal): {}\n",
                   drops.empty() ? " none" : drops, r.steps_redone);
  for (const Verdict& v : r.checks)
    t += fmt::format("  {} {}: {}\n", v.ok ? "ok " : "BAD", v.name, v.detail);
  t += fmt::format("chaos: {} {} in {:.1f} s{}\n", r.scenario, r.ok() ? "PASSED" : "FAILED",
                   double(r.wall_ms) / 1000, r.ok() ? "" : "; replay: " + r.replay);
  return t;
}

nlohmann::json report_json(const Report& r) {
  nlohmann::json faults = nlohmann::json::array(), checks = nlohmann::json::array();
  for (const FaultOutcome& f : r.faults)
    faults.push_back({{"fault", f.fault},
                      {"injected", f.injected},
                      {"error", f.error},
                      {"detected_after_ms", ms_json(f.detected_ms)},
                      {"recovered_after_ms", ms_json(f.recovered_ms)},
                      {"steps_redone", f.steps_redone},
                      {"drops_seen", f.drops_seen}});
  for (const Verdict& v : r.checks)
    checks.push_back({{"name", v.name}, {"ok", v.ok}, {"detail", v.detail}});
  return {{"scenario", r.scenario},
          {"seed", r.seed},
          {"run_dir", r.run_dir},
          {"ok", r.ok()},
          {"replay", r.replay},
          {"wall_ms", r.wall_ms},
          {"faults", faults},
          {"checks", checks},
          {"messages_dropped", r.drops},
          {"steps_redone", r.steps_redone}};
}

}  // namespace troupe::chaos
