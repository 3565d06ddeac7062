// Roles are added by adding a file to actors/ that registers a factory here; the runtime
// spawns whatever the coordinator's view places on this node by name, without knowing
// what a role does (DESIGN §1: runtime/ is not touched to add a role).
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <functional>
#include <string>
#include <vector>

namespace troupe::runtime {

// The job as the coordinator sent it: opaque to the runtime, parsed by the roles.
struct JobSpec {
  std::string config_text, config_name;
  std::vector<std::string> config_sets;
  std::string run_dir;  // where checkpoints are written (a file system every node sees)
  // A resumed job: the manifest (JSON) of the checkpoint every worker starts from; empty:
  // a fresh start from the job seed.
  std::string resume_manifest;
};

struct RoleContext {
  caf::actor router;               // send ActorMessages here
  std::string node_id;             // this process, e.g. "n2"
  std::string address;             // this actor, e.g. "n2/worker.1"
  int64_t index = 0;               // its index within its role
  std::vector<std::string> peers;  // every instance of this role, by index
  std::string coordinator;         // the coordinator's address
  JobSpec job;
  uint64_t epoch = 0;
  int threads = 0;  // compute threads for this node's roles (0: as the job says)
};

// Spawns the role's actor; it must register itself with the router under
// "role.index" before returning (so no message to it is lost).
using RoleFactory = std::function<caf::actor(caf::actor_system&, const RoleContext&)>;

void register_role(const std::string& name, RoleFactory factory);
const RoleFactory* find_role(const std::string& name);  // null if unknown

}  // namespace troupe::runtime
