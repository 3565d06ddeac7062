// A fabric fault plan: which messages the fault-injecting fabric (faulty_fabric.h) drops,
// delays, duplicates, reorders, corrupts, partitions or slows. Every process of a job reads
// the same TOML file, named by the environment variable TROUPE_FABRIC_FAULTS, at start; the
// format and each action's meaning are in docs/chaos.md ("Fabric faults"). A plan with an
// unknown key, action, type or node name, or a bad value, is refused before anything starts,
// naming the file, the line, the key and what is accepted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace troupe::chaos {

inline constexpr const char* fabric_faults_env = "TROUPE_FABRIC_FAULTS";

// ---- Limits on what a plan may ask for (each refused past it, naming the limit). ----
// A plan is written by people or drawn by the soak; hundreds of rules is a mistake.
inline constexpr size_t rules_max = 256;
// Holding a message longer than the heartbeat timeout (1 s) already loses its node; a
// minute is far past any fault worth injecting and keeps a held message's memory bounded.
inline constexpr int64_t delay_ms_max = 60'000;

enum class Action { drop, delay, duplicate, reorder, corrupt, partition, slow };
inline constexpr const char* action_names[] = {"drop",    "delay",     "duplicate", "reorder",
                                               "corrupt", "partition", "slow"};

// What `corrupt` flips: the typed header (protobuf; the receiver's decode rejects it) or a
// payload byte (only of the types whose payloads carry a CRC32C: StateTransfer, Replica).
enum class CorruptTarget { header, payload };

struct FaultRule {
  Action action = Action::drop;
  int line = 0;                    // in the plan file, for messages
  std::vector<std::string> from;   // sender node ids; empty: any
  std::vector<std::string> to;     // receiver node ids; empty: any
  std::vector<uint32_t> types;     // message types (actors/protocol.h); empty: any
  std::optional<int64_t> step_lo;  // inclusive step window; absent: any step
  std::optional<int64_t> step_hi;
  int64_t after_ms = 0;           // time window since the process started
  std::optional<int64_t> for_ms;  // absent: forever
  // Optional: the rule acts for this long from the first message it acted on in this process
  // (a fault that starts at a step and heals after a time: the processes' clocks do not line
  // up, their steps do). Absent: as long as the other selectors say.
  std::optional<int64_t> lasts_ms;
  double probability = 1.0;                      // per message
  int64_t delay_ms = 0;                          // delay, reorder, slow
  std::vector<std::vector<std::string>> groups;  // partition
  CorruptTarget target = CorruptTarget::header;  // corrupt
  // Optional: the rule acts only while this file exists (checked at most every
  // switch_poll_ms). `troupe chaos run` creates it when a fault's trigger holds (a step, a
  // time, an event such as "reshape") and removes it after the fault's for_ms, so that every
  // process of the job starts and ends the fault within a few ms of each other.
  std::string switch_file;
};

// How stale a process's view of a rule's switch_file may be.
inline constexpr int64_t switch_poll_ms = 5;

struct FaultPlan {
  std::string source;  // the file it came from (for the log line naming it)
  uint64_t seed = 1;
  std::vector<FaultRule> rules;
};

// The coordinator process's node id (launch/cmd_launch.cc). A plan may name it
// "coordinator" as well; both mean this id.
inline constexpr const char* coordinator_node_id = "n0";

// Parses a plan from TOML text; `name` is the file named in errors. Errors:
// invalid_argument "NAME:LINE: key 'K': what is wrong; accepted: ...".
runtime::Result<FaultPlan> parse_fault_plan(const std::string& text, const std::string& name);
// Reads and parses the file. Errors: not_found / invalid_argument, naming the file.
runtime::Result<FaultPlan> load_fault_plan(const std::string& path);
// The plan named by TROUPE_FABRIC_FAULTS; nullopt when it is unset or empty.
runtime::Result<std::optional<FaultPlan>> fault_plan_from_env();

// One line for logs: "PATH: seed S, N rules (drop n1->*, partition [n1] | [n2,n3], ...)".
std::string describe(const FaultPlan& plan);

}  // namespace troupe::chaos
