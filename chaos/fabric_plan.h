#pragma once
// The fabric-fault plan of a scenario: its `fabric` faults as the TOML file that the
// fault-injecting Fabric decorator reads from the file named by TROUPE_FABRIC_FAULTS
// (docs/chaos.md, "Fabric faults"). Empty when the scenario has no fabric fault.
#include <string>

#include "chaos/scenario.h"

namespace troupe::chaos {

// The env variable naming the plan file, read by every node process.
inline constexpr const char* fabric_faults_env = "TROUPE_FABRIC_FAULTS";

// "seed = S" and one [[rule]] per fabric fault, in file order; "" without any.
std::string fabric_plan_text(const Scenario& s, uint64_t seed);

}  // namespace troupe::chaos
