#pragma once
// The fabric-fault plan of a scenario: its `fabric` faults as the TOML file that the
// fault-injecting Fabric decorator reads from the file named by TROUPE_FABRIC_FAULTS
// (docs/chaos.md, "Fabric faults"). Empty when the scenario has no fabric fault.
#include <string>

#include "chaos/fault_plan.h"  // fabric_faults_env: the variable naming the plan file
#include "chaos/scenario.h"

namespace troupe::chaos {

// "seed = S" and one [[rule]] per fabric fault, in file order; "" without any.
std::string fabric_plan_text(const Scenario& s, uint64_t seed);

}  // namespace troupe::chaos
