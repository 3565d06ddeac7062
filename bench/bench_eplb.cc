// The EPLB placement's own time (train/eplb.h, what `troupe eplb` runs between reading its
// JSON and printing it), for make bench-eplb-offline: the best thread-CPU time per call of
// rebalance_experts with the improved and the published policy, and their balances, as one
// JSON line. bench/run_bench_eplb.py sets it next to eplb.py under torch.
//
//   bench_eplb LOADS.json R G N P     LOADS.json: {"loads": [[...], ...]}
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench/bench_timing.h"
#include "train/eplb.h"

namespace {

// Samples of at least sample_s thread-CPU seconds each; the best one counts.
constexpr int samples = 5;
constexpr double sample_s = 0.2;

}  // namespace

int main(int argc, char** argv) {
  using namespace troupe::model;
  if (argc != 6) {
    std::fprintf(stderr, "usage: bench_eplb LOADS.json REPLICAS GROUPS NODES GPUS\n");
    return 2;
  }
  std::ifstream in(argv[1]);
  const nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  if (doc.is_discarded() || !doc.contains("loads")) {
    std::fprintf(stderr, "bench_eplb: %s is not {\"loads\": [[...]]}\n", argv[1]);
    return 2;
  }
  const EplbProblem problem{doc["loads"].get<std::vector<std::vector<double>>>(),
                            std::atol(argv[2]), std::atol(argv[3]), std::atol(argv[4]),
                            std::atol(argv[5])};
  nlohmann::json out;
  for (const auto& [name, policy] : {std::pair{"improved", EplbPolicy::improved},
                                     std::pair{"published", EplbPolicy::published}}) {
    EplbPlacement placement;
    out[std::string(name) + "_s"] = troupe::bench::best_seconds(
        [&] { placement = rebalance_experts(problem, policy); }, samples, sample_s);
    out[std::string("balance_") + name] = placement_balance(problem, placement);
    if (!check_placement(problem, placement).empty()) {
      std::fprintf(stderr, "bench_eplb: invalid placement: %s\n",
                   check_placement(problem, placement).c_str());
      return 1;
    }
  }
  out["balance_before"] = static_balance(problem);
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
