// The coordinator role (DESIGN §4), in two layers. The membership core
// (coordinator_membership.cc) admits nodes (after the router's handshake), owns the view
// (epoch, nodes, placement), watches heartbeats and endpoint failures, and moves through the
// job's lifecycle phases. The training driver (coordinator_driver.cc) runs the data-parallel
// steps on top: it collects the workers' loss pieces and the owners' grad-norm parts and
// hands them to model/step_rules.h, so the loss lines and the clip scale are the same bits
// for any number of nodes; it records each commit (CommitLog) before announcing it. A node
// lost mid-run ([fault_tolerance] recover): the survivors return to the committed step under
// a new epoch, take over its share and re-run the step, so the bits are those of a run that
// lost nothing (worker_recovery.cc).
#pragma once

#include <caf/actor.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "actors/commit_log.h"
#include "actors/journal_log.h"
#include "config/job_config.h"
#include "runtime/host.h"
#include "runtime/roles.h"
#include "train/trainer.h"

namespace troupe::actors {

// When every node is silent at once (none heard for half a heartbeat_timeout_ms), the stall is
// more likely this coordinator's or the whole machine's (CPU starvation, a stalled VM) than
// every node dying together: a node is then declared dead only after this many
// heartbeat_timeout_ms. A node silent while another is heard is declared dead after one.
inline constexpr int64_t all_silent_timeout_factor = 3;

struct StepReport {
  model::StepStats stats;
  double seconds = 0;  // wall time of the step, StepBegin to the last StepDone
  bool has_val = false;
  double val_loss = 0;
  // Tokens routed to each expert in the step, per layer (empty for dense layers).
  std::vector<std::vector<int64_t>> expert_counts;
  // The Engram shards' cold tiers in the step, summed over the holders (all 0 without).
  struct EngramTier {
    int64_t hits = 0, misses = 0, bytes_read = 0, bytes_written = 0;
    double miss_ms = 0;
  } engram_tier;
};

struct JobResult {
  bool ok = false;
  std::string error;  // why the job stopped, when !ok
  // A restarted coordinator (CoordinatorOptions::restart) to which no node came back.
  bool nothing_rejoined = false;
  int64_t steps_done = 0;
  uint64_t weights_hash = 0;
  int64_t recoveries = 0;      // nodes lost and recovered from
  std::vector<float> weights;  // worker 0's final parameters (every worker agreed on the hash)
  std::vector<std::vector<float>> engram_tables;  // and its Engram tables (table order)
  // Messages the coordinator and the workers dropped (dispatch.h), by reason.
  std::map<std::string, uint64_t> dropped;
};

// A table set swapped between two steps (docs/engram.md "Table sets"): attach `name` (from
// `path`, or "" for the set of that name kept in the run directory), or detach the set
// attached last (back to the one under it).
struct EngramOp {
  bool attach = true;
  std::string name, path;
};

struct CoordinatorOptions {
  int64_t nodes = 1;  // node processes to wait for; one worker is placed on each
  runtime::JobSpec job;
  // The job, parsed: steps, eval_every, batch; [fault_tolerance] for heartbeats and the
  // start timeout.
  model::JobConfig config;
  // Called on the coordinator's thread; must not block for long.
  std::function<void(const StepReport&)> on_step;
  // kind, text, and typed fields (epoch, step, and by kind node, pid, reason, *_ms durations).
  std::function<void(const std::string& kind, const std::string& text,
                     const nlohmann::json& fields)>
      on_event;
  std::function<void(const JobResult&)> on_done;  // exactly once, whatever happens
  // Where commits and view changes are recorded before they are announced (null: in memory).
  std::shared_ptr<CommitLog> commit_log;
  // A resumed job starts at this step (job.resume_manifest is its checkpoint); 0: fresh.
  int64_t resume_step = 0;
  // A loss that would leave fewer nodes stops the job; scale and drain below it are refused.
  int64_t min_nodes = 1;
  // Memory nodes to wait for besides `nodes` (`troupe node --role engram`): they hold the
  // Engram shards' holders and no worker (coordinator_engram.cc).
  int64_t engram_nodes = 0;
  // Rollout nodes to wait for besides `nodes` (`troupe node --role rollout`): they sample the
  // GRPO groups and run no worker (coordinator_rollout.cc).
  int64_t rollout_nodes = 0;
  // A coordinator restarted after the last one died: the view and the committed step from
  // the journal; it waits for the members to rejoin, then recovers them (no rollback when
  // every one of them is back).
  std::optional<RestartState> restart;
  // A thread of its own (a detached actor). Its synced journal writes and on_step/on_event
  // then hold up only itself, never the fabric's thread that the process's other actors
  // (the router that delivers heartbeats) run on (runtime/lent_scheduler.h). troupe launch
  // sets it when the fabric's thread is lent; a deterministic scheduler (the simulation,
  // tests) needs it off.
  bool own_thread = false;
  // Table sets swapped after the step count given (--engram-at), in order; ops asked through
  // the control endpoint (kind "engram_attach"/"engram_detach") queue behind them.
  std::map<int64_t, std::vector<EngramOp>> engram_at;
  // The table sets attached when the job starts (resume, restart: engram_stack_at); empty:
  // the job's own tables, "initial".
  std::vector<StackedSet> engram_stack;
};

// Spawns the coordinator as "coordinator.0" on the host's router.
caf::actor spawn_coordinator(runtime::Host& host, CoordinatorOptions options);
// The same on any actor system and router (tests: CAF's test coordinator and a recording
// actor in the router's place).
caf::actor spawn_coordinator(caf::actor_system& system, caf::actor router,
                             CoordinatorOptions options);

// Asks the coordinator to stop the job (Ctrl-C): nodes are shut down, on_done reports it.
void request_stop(const caf::actor& coordinator, const std::string& why);
// Tells the coordinator that node `node` is gone (its parent saw the process end): handled as
// a loss found by the fabric; a node lost already is old news.
void tell_node_lost(const caf::actor& coordinator, const std::string& node, const std::string& why);

// An operator's request (the control endpoint), answered by the coordinator: kind is
// "scale" (nodes), "drain" (node), "replace" (one lost local node process is restarted),
// "pause", "resume", "checkpoint", "engram_attach" (node: {"name": …, "path": …} as JSON
// text) or "engram_detach". Blocks up to 5 s; call it off the actor threads.
struct ControlAnswer {
  std::string error;        // empty: accepted; else why not (the request changed nothing)
  int64_t start_nodes = 0;  // node processes the launcher starts for it (scale up, replace)
};
ControlAnswer ask_coordinator(caf::actor_system& system, const caf::actor& coordinator,
                              const std::string& kind, int64_t nodes = 0,
                              const std::string& node = "");
// The same request from an actor of its own: done(answer) runs on it once the coordinator
// answers (or fails to, within 5 s). Never blocks: for a caller on the actor threads, or on
// CAF's deterministic test scheduler (the simulation's launcher).
void ask_coordinator_then(caf::actor_system& system, const caf::actor& coordinator,
                          const std::string& kind, int64_t nodes, const std::string& node,
                          std::function<void(const ControlAnswer&)> done);
// The job as the coordinator sees it (GET /status): JSON.
std::string coordinator_status(caf::actor_system& system, const caf::actor& coordinator);

}  // namespace troupe::actors
