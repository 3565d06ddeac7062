// How `troupe launch` speaks of its node processes: by the node id the coordinator gave them
// (n1, n2, ...: the "node" field of events.jsonl), with the pid and the log; a process that
// ended before it joined has no id yet and is named by its log, node-K.log (K counts the
// processes started, and is not a node id).
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>

#include "launch/supervisor.h"

namespace troupe::launch {

// The supervisor's name for the K-th node process started: its log's, never a node id.
std::string node_process_name(const std::string& k);

// Why a node process ended, from its exit status (runtime/exit_status.h): it left on purpose
// (0: the job ended, or it was drained), it was evicted (the job went on without it: declared
// lost, fenced), or it died (a signal, any other status). Evicted and died are lost nodes,
// which [fault_tolerance] replace_lost replaces.
enum class NodeEnd { left, evicted, died };
NodeEnd node_end(const ChildExit& e);

// "n2 (pid 4242) exited (killed by SIGKILL; log node-3.log)"; for an evicted node "...
// (exit status 3: evicted; log ...)"; without an id "the node process of node-3.log (pid
// 4242) exited (exit status 1) before it joined".
std::string node_exit_text(const ChildExit& e, const std::string& id);
// The node_exit event's typed fields: node ("" before it joined), pid, reason, exit_code,
// signal, evicted, log.
nlohmann::json node_exit_fields(const ChildExit& e, const std::string& id);

// The chaos line: "[chaos] kill -9 n3 (pid 4242) after step 30" ("the node process of
// node-3.log" while it has no id yet).
std::string chaos_kill_text(const std::string& id, const std::string& name, pid_t pid,
                            const std::string& when);

}  // namespace troupe::launch
