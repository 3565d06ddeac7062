#pragma once
// The fabric-fault plan of a scenario: its `fabric` faults as the TOML file that the
// fault-injecting Fabric decorator reads from the file named by TROUPE_FABRIC_FAULTS
// (docs/chaos.md, "Fabric faults"). Empty when the scenario has no fabric fault.
#include <string>

#include "chaos/fault_plan.h"  // fabric_faults_env: the variable naming the plan file
#include "chaos/scenario.h"

namespace troupe::chaos {

// "seed = S" and one [[rule]] per fabric fault, in file order; "" without any. A triggered
// fault's rule acts while its switch file in run_dir exists (fabric_switch_file).
std::string fabric_plan_text(const Scenario& s, uint64_t seed, const std::string& run_dir = ".");
// The file that turns the triggered fabric fault s.faults[fault] on: the runner creates it
// when the fault's trigger holds and removes it after its for_ms.
std::string fabric_switch_file(const std::string& run_dir, size_t fault);
// One fabric fault as its "[[rule]]" table.
std::string fabric_rule_text(const FabricRule& r);

}  // namespace troupe::chaos
