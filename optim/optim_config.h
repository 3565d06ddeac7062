#pragma once
// [optimizer]: which optimizer and its constants. Parsed by config/.
#include <string>

namespace troupe::model {

struct OptimizerConfig {       // [optimizer]
  std::string name = "adamw";  // registry: adamw | muon (Muon for the block matrices)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  bool operator==(const OptimizerConfig&) const = default;
};

}  // namespace troupe::model
