// The node agent: the first actor of a `troupe node` process. It joins the coordinator
// (the router runs the handshake), learns its node id and the job from the Welcome,
// heartbeats, follows the coordinator's View (epoch, node addresses, placement) and spawns
// the roles placed on its node from the role registry (roles.h). It ends the process's
// run, through on_exit, on Shutdown, on losing the coordinator for good (it waits
// coordinator_timeout_ms for a restarted one, rejoining with its roles), or when a role
// fails.
#pragma once

#include <caf/actor.hpp>
#include <chrono>
#include <functional>
#include <string>

#include "runtime/exit_status.h"
#include "runtime/fault_tolerance.h"
#include "runtime/host.h"
#include "runtime/roles.h"
#include "runtime/status.h"

namespace troupe::runtime {

struct NodeAgentOptions {
  std::string coordinator_address;  // host:port of the coordinator's process
  // Until the Welcome: then the job's [fault_tolerance] heartbeat_interval_ms.
  std::chrono::milliseconds heartbeat_interval{100};
  // Reads the job's [fault_tolerance] section from the job the Welcome carries (config/
  // parses it; runtime/ does not know the file format). An error ends the node (status 1).
  std::function<Result<FaultToleranceConfig>(const JobSpec& job)> read_fault_tolerance;
  // No Welcome within this long (a coordinator that accepts the connection but never
  // answers): the node gives up with status 1 instead of waiting forever.
  std::chrono::milliseconds join_timeout{30000};
  int role_threads = 0;  // RoleContext::threads for the roles placed here
  // A coordinator lost after the Welcome: the node keeps its roles and tries to rejoin a
  // coordinator restarted at the same address (every rejoin_interval), up to the job's
  // coordinator_timeout_ms; false: it leaves at once.
  bool rejoin = true;
  std::chrono::milliseconds rejoin_interval{200};
  std::string listen_address;  // this node's, said in its Rejoin
  uint32_t pid = 0;
  // Called once, from an actor thread: exit code (0: the job ended normally or this node was
  // drained; 1: an error; exit_status_evicted) and why.
  std::function<void(int code, const std::string& why)> on_exit;
};

caf::actor spawn_node_agent(Host& host, NodeAgentOptions options);

}  // namespace troupe::runtime
