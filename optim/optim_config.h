#pragma once
// [optimizer]: which optimizer and its constants (SPEC-model.md §5). Parsed by config/.
#include <array>
#include <string_view>
#include <utility>

namespace troupe::model {

// optimizer.name: which update the block matrices (OptGroup::Muon) get.
enum class OptimizerKind {
  adamw,  // AdamW for every gradient-trained tensor
  muon,   // Muon (μ 0.95 Nesterov, NS5, Moonlight scaling) for the block matrices, AdamW else
};

// The registry's names in the config (TOML, --set), in the order an "unknown name" message
// lists them. config/ reads and writes optimizer.name only through this table.
inline constexpr std::array<std::pair<OptimizerKind, std::string_view>, 2> kOptimizerNames = {
    {{OptimizerKind::adamw, "adamw"}, {OptimizerKind::muon, "muon"}}};

struct OptimizerConfig {                      // [optimizer]
  OptimizerKind name = OptimizerKind::adamw;  // registry (kOptimizerNames): adamw | muon
  double beta1 = 0.9;                         // AdamW β1, the first-moment decay; in [0, 1)
  double beta2 = 0.95;                        // AdamW β2, the second-moment decay; in [0, 1)
  double eps = 1e-8;                          // AdamW ε, added to the second moment's root
  bool operator==(const OptimizerConfig&) const = default;
};

}  // namespace troupe::model
