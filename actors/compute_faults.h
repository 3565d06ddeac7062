#pragma once
// The compute fault hook (chaos at the compute seam): one worker computes slower, as on a
// busy or older machine, so that the scheduler's answer to a straggler can be measured
// (make bench-sched, docs/schedule.md). Read from the environment variable
// TROUPE_SLOW_COMPUTE, `worker.I:F`: the worker at view index I sleeps (F − 1) times what
// each of its computes took after it, so it takes F times as long (F ≥ 1; its compute_ms
// counts the sleep: to the scheduler it was busy). Sleeping, not spinning, leaves the other
// processes the cores they would have with a slow machine elsewhere. Empty or unset: none.
// Every node process inherits it from `troupe launch`.
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace troupe::actors {

struct ComputeFaults {
  int64_t worker = -1;  // the view index slowed; -1: none
  double factor = 1;

  // Throws std::invalid_argument naming the variable, the spec and the accepted form.
  static ComputeFaults parse(const std::string& spec) {
    ComputeFaults f;
    if (spec.empty()) return f;
    const std::string form = "' is not worker.I:F (I >= 0: the worker's view index; F >= 1)";
    const size_t colon = spec.find(':');
    size_t used_i = 0, used_f = 0;
    try {
      if (spec.rfind("worker.", 0) != 0 || colon == std::string::npos) throw std::exception();
      f.worker = std::stoll(spec.substr(7, colon - 7), &used_i);
      f.factor = std::stod(spec.substr(colon + 1), &used_f);
    } catch (const std::exception&) {
      throw std::invalid_argument("TROUPE_SLOW_COMPUTE: '" + spec + form);
    }
    if (7 + used_i != colon || colon + 1 + used_f != spec.size() || f.worker < 0 ||
        !(f.factor >= 1) || f.factor > 1000)
      throw std::invalid_argument("TROUPE_SLOW_COMPUTE: '" + spec + form);
    return f;
  }
  static ComputeFaults from_env() {
    const char* spec = std::getenv("TROUPE_SLOW_COMPUTE");
    return spec ? parse(spec) : ComputeFaults{};
  }
  // The extra milliseconds worker `me` waits after a compute of `ms` milliseconds.
  double extra_ms(int64_t me, double ms) const { return me == worker ? (factor - 1) * ms : 0; }
};

}  // namespace troupe::actors
