#pragma once
// [fault_tolerance]: how the runtime notices and handles failures. Parsed by config/.
#include <cstdint>

namespace troupe::runtime {

// How failures are noticed (DESIGN §4). Never changes a job's result.
struct FaultToleranceConfig {
  int64_t heartbeat_interval_ms = 100;  // each node process heartbeats the coordinator
  int64_t heartbeat_timeout_ms = 1000;  // silent this long: declared dead (a hang, SIGSTOP)
  int64_t start_timeout_ms = 120000;    // every node joined and every worker ready, or stop
  // A lost node (crash, hang) mid-run: the survivors return to the last committed step,
  // take over its share (optimizer state from the lost owner's buddy) and go on, with the
  // same bits as a run that lost nothing. false: the job stops instead.
  bool recover = true;
  int64_t recovery_timeout_ms = 30000;  // survivors not recovered within this: the job stops
  // A step not committed this long after it began: one of its messages was lost (a dropped
  // message, a one-way cut that healed). Every worker goes back to the committed step and
  // redoes it, keeping every node, with the same bits. The coordinator waits at least 4x
  // the slowest step committed so far, whatever this says.
  int64_t step_timeout_ms = 30000;
  // A node that hears nothing from the coordinator this long (a hung coordinator; it sends
  // every node a heartbeat each heartbeat_interval_ms) leaves with an error: never a hang.
  int64_t coordinator_timeout_ms = 60000;
  // How many following workers keep a copy of each owner's optimizer state: up to this many
  // neighbouring workers lost together are recovered from (more memory and traffic per step).
  int64_t buddy_copies = 1;
  // troupe launch starts a fresh node process for each lost local one; it joins the running
  // job as a new member (a new node id) by the scale-up path, at a step boundary.
  bool replace_lost = false;
  bool operator==(const FaultToleranceConfig&) const = default;
};

}  // namespace troupe::runtime
