// `troupe launch`'s arguments, shared by the job (cmd_launch.cc: the coordinator, in this
// process or in one of its own) and the supervisor of --coordinator-process (launcher.cc).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "config/job_config.h"
#include "launch/control.h"
#include "runtime/host.h"
#include "storage/run_lock.h"

namespace troupe::launch {

struct LaunchArgs {
  std::string config, run_dir;
  std::vector<std::string> sets;
  int64_t nodes = 1, steps = -1;
  int threads_per_node = 0;
  int64_t local_nodes = -1;  // -1: all of --nodes
  std::string listen_host = "127.0.0.1", secret_file;
  uint16_t port = 0;
  int64_t kill_node_at = -1;  // chaos: SIGKILL one local node process after this step
  bool resume = false;        // continue the run in run_dir from its newest checkpoint
  int64_t min_nodes = 1, max_nodes = 64;
  int64_t engram_nodes = 0;           // memory nodes started here besides --nodes (--role engram)
  int64_t rollout_nodes = 0;          // GRPO rollout nodes started here (--role rollout)
  int64_t kill_rollout_at = -1;       // chaos: SIGKILL the last rollout node after this step
  std::vector<std::string> scale_at;  // "STEP:N": scale to N node processes after STEP
  // "STEP:attach:NAME[:PATH]" or "STEP:detach": a table set swapped after STEP steps
  std::vector<std::string> engram_at;
  ControlOptions control;  // --control-host, --control-port
  std::string log_level = "info";
  // The coordinator runs in a process of its own, restarted from the journal when it dies
  // (launcher.cc; --coordinator-in-process: in `troupe launch` itself, not restarted). Its
  // process gets the hidden --as-coordinator (it starts no node itself: it asks the launcher
  // over --launcher-link) and, once restarted, --restart.
  bool coordinator_process = true, as_coordinator = false, restart = false;
  std::string launcher_link;
};

// --scale-at STEP:N, checked (UsageError naming the bad item).
std::map<int64_t, int64_t> parse_scale_at(const LaunchArgs& a);
// --engram-at items, checked for their form (UsageError naming the bad item): by step count,
// in the order given. The sets themselves are checked by the coordinator when they are due.
std::map<int64_t, std::vector<actors::EngramOp>> parse_engram_at(
    const std::vector<std::string>& items, const std::string& command);
inline constexpr int64_t engram_nodes_max = 16;
// --engram-nodes, --scale-at, --engram-at, --kill-node-at: what the job does besides training.
void add_plan_options(CLI::App* cmd, LaunchArgs* args);
// --local-nodes defaulted and checked against --nodes, --min/max-nodes and --kill-node-at.
int64_t checked_local_nodes(const LaunchArgs& a);
// Where the troupe processes started on this host (its `local_nodes` node processes, the
// Engram and rollout nodes, the coordinator) outnumber its cores,
// the fabrics' progress threads spin 20 us at most before they sleep, instead of up to
// 1 ms (runtime/ucx_fabric.h): a spinning thread takes the core that another process's
// compute waits for. Sets TROUPE_PROGRESS_SPIN_US and _MAX for this process and the ones it
// starts, unless either is set already; says so on the log.
void spare_oversubscribed_cores(const LaunchArgs& a, int64_t local_nodes);
inline constexpr int64_t oversubscribed_spin_us = 20;
// The coordinator's runtime host (node n0) on --listen-host and --port, with the fabric
// faults of TROUPE_FABRIC_FAULTS; a UsageError naming what failed.
std::unique_ptr<runtime::Host> start_host(const LaunchArgs& a, const std::string& secret);
// grpo.enabled against --rollout-nodes, --kill-rollout-at, resume and checkpoints.
void checked_grpo_launch(const LaunchArgs& a, const model::JobConfig& cfg);

// The --set list with --steps folded in (so the nodes read the same job).
std::vector<std::string> job_sets(const LaunchArgs& a);
// Every check `troupe launch` makes before it starts anything (UsageError naming what is
// wrong): the config with --set and --steps, --scale-at, --local-nodes, --kill-node-at.
// Returns the job's config.
model::JobConfig checked_launch(const LaunchArgs& a);

// The run directory, this job's for its life (flock); one that holds a run already is refused
// unless --resume. UsageError saying which.
storage::RunLock claim_run_dir(const LaunchArgs& a);
// --secret-file, or RUN_DIR/secret.
std::string job_secret_file(const LaunchArgs& a);
// A file's bytes (UsageError naming it when it cannot be read).
std::string read_file(const std::string& path);
// The job secret: --secret-file, or DIR/secret, created (0600) on the first launch of this
// run directory when `create`.
std::string job_secret(const std::string& path, bool create);

// The exit status of a coordinator process restarted with --restart to which no node came
// back: the launcher then starts the job from its newest checkpoint instead (--resume).
constexpr int nothing_rejoined_exit = 75;

// Runs the job with its coordinator in a process of its own (launcher.cc).
int run_coordinator_process(const LaunchArgs& a);
// Runs the job's coordinator in this process: `troupe launch --coordinator-in-process`, or
// the coordinator process that run_coordinator_process starts (cmd_launch.cc).
int run_launch(const LaunchArgs& a);
// The coordinator process's command line for `a` (restart: after the last one died, on the
// port it listened on).
std::vector<std::string> coordinator_argv(const LaunchArgs& a, const std::string& link,
                                          bool restart, uint16_t port);

}  // namespace troupe::launch
