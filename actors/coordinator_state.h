// The coordinator's state and what its files share (coordinator.cc: the actor, its phases
// and dispatch; coordinator_membership.cc: the role-agnostic membership core;
// coordinator_driver.cc: the training driver's step protocol). Internal to actors/.
#pragma once

#include <caf/all.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "actors/dispatch.h"
#include "actors/protocol.h"
#include "runtime/control.pb.h"

namespace troupe::actors::coordinator_impl {

using runtime::ActorMessage;
// Time comes from the actor system's clock (self->clock()): CAF's test coordinator drives
// it virtually, so heartbeats and timeouts are tested without sleeping.
using time_point = caf::actor_clock::time_point;
using duration = caf::actor_clock::duration_type;
using ms = std::chrono::milliseconds;

struct NodeInfo {
  std::string id, address;
  uint32_t pid = 0;  // the node's process id, as its Hello said (0: not said)
  runtime::PeerId peer = runtime::peer_none;
  time_point last_heard;
};

// The lifecycle phases; each is a behaviour of its own (coordinator.cc, enter_phase).
enum class Phase { joining, starting, running, recovering, resizing, finishing, done, rejoining };
const char* phase_name(Phase p);

// A change of the view that an operator asked for (coordinator_reshape.cc): scale up (the
// joiners are admitted, their workers placed on standby once all are here, and they enter at
// the next step boundary), scale down or drain (the leavers hand their state over at the next
// step boundary). One at a time.
struct ReshapeState {
  std::string what;  // "scale 2 → 4", "drain n2": for events and /status
  int64_t joiners_wanted = 0;
  std::vector<NodeInfo> joiners;        // admitted, in the order they joined
  std::vector<std::string> standby;     // their workers' addresses, once placed
  std::vector<int64_t> standby_index;   // and role indices
  std::set<std::string> standby_ready;  // standby workers that answered Ready
  std::vector<std::string> draining;    // node ids that leave
  bool active = false;                  // Reshape sent: the phase is resizing
  std::vector<NodeInfo> old_nodes;      // the view before, should it be aborted
  std::vector<std::string> old_workers;
  std::vector<int64_t> old_role_index;
  std::vector<NodeInfo> leaving;  // the old view's nodes that leave, until shut down
  time_point asked, boundary;     // the request; the step boundary it began at
  bool pending() const { return joiners_wanted > 0 || !draining.empty() || active; }
};

// The operator's controls (POST /pause, /resume, /checkpoint), and what the last
// recovery and checkpoint were, for /status.
struct Controls {
  bool paused = false, parked = false;  // asked to pause; stopped at a step boundary
  bool checkpoint_now = false;          // write one at the next step boundary
  int64_t next_worker_index = 0;        // role indices are never reused
  std::string last_recovery, last_reshape;
  int64_t last_checkpoint = -1;
};

// The membership core: who is in the job, where the workers are placed, who is alive, and
// the lifecycle phase. It knows nothing of steps or models.
struct Membership {
  Phase phase = Phase::joining;
  uint64_t epoch = 0;
  std::vector<NodeInfo> nodes;
  std::vector<NodeInfo> memory;      // memory nodes (Join.role "engram"): Engram holders only
  std::vector<NodeInfo> rollout;     // rollout nodes (Join.role "rollout"): GRPO sampling only
  int64_t joins = 0;                 // nodes that ever joined: their ids are n1, n2, ...
  std::vector<std::string> workers;  // placement: addresses by index; worker i on nodes[i]
  std::vector<int64_t> role_index;   // worker i's role index (its name; kept across recoveries)
  Receipts ready;                    // Ready, by worker index, while starting
  // Nodes lost while the workers start: recovered from (at step 0) once the others are ready.
  struct StartLoss {
    std::string node, why;
    bool hung = false;
  };
  std::vector<StartLoss> start_losses;
  Receipts recovered;                      // Recovered, by new worker index
  std::vector<std::string> recovery_base;  // the workers of the view a recovery started from
  // The Recover (or Reshape) in flight and when it last went out: sent again every
  // recover_resend_ms to the workers that have not answered, so that a Recover or a Recovered
  // lost on the way (a dropped message, a stalled endpoint) costs a resend, not the job. A
  // worker drops a second copy, answering Recovered again if it has recovered, or asking
  // again for the transfers it still waits for (FetchAgain).
  ActorMessage recover_message;
  time_point recover_sent;
  // The recovery in flight is a rollback to the checkpoint of this step (-1: none): an
  // owner was lost with all its buddies. A further loss during it rolls back again.
  int64_t rollback_to = -1;
  int64_t recoveries = 0;
  time_point started, last_tick, recovery_started;
  uint64_t heartbeats = 0;  // sent to the nodes, one per check (heartbeat_interval_ms)
  bool all_silent = false;  // no node heard for heartbeat_timeout_ms (said once per episode)
  // From the workers' Ready: what the start event reports.
  int64_t state_floats_max = 0, state_floats_total = 0, parameters = 0;
  uint64_t initial_hash = 0;
  std::set<std::string> rejoined;  // a restarted coordinator: the members back (rejoining)
};

// parallel.schedule = "pull" (coordinator_pull.cc): the train step's pieces as handed out.
struct PullRound {
  std::deque<model::TreeNode> queue;                // not handed out yet, in pull_order
  std::vector<std::optional<model::TreeNode>> out;  // by worker: handed out, not reported
  int64_t total = 0, reported = 0;                  // the step's pieces; their Stats in
  std::map<std::string, int64_t> by_worker;         // pieces of committed-or-not steps, by address
};

// The training driver: the step protocol on top of the membership.
struct StepDriver {
  int64_t n_mb = 0;
  int64_t step = 0;       // the step in flight (train, then its validation)
  int64_t committed = 0;  // train steps recorded as committed (StepDone from every worker)
  Receipts stats, norms, done, val, finals;  // by worker index, keyed by (epoch, step)
  bool apply_sent = false;
  std::vector<model::Piece<float>> pieces, val_pieces;
  std::vector<std::pair<int64_t, int64_t>> consumed;  // the step's pieces: the data ledger
  std::vector<std::vector<double>> norm_parts;        // by worker (owner order = table order)
  std::vector<double> engram_sumsq;                   // by worker: each reduced all the tables
  PullRound pull;
  std::vector<double> busy_ms;  // by worker: the step's compute (Stats.compute_ms), for idle
  double padding_waste = -1;    // the step's, from the workers' Stats (mixed mode)
  time_point step_started;
  bool in_flight = false;  // a StepBegin (train or validation) is out, its step not finished
  time_point begun;        // when it went out (step_timeout_ms counts from here)
  int64_t stalled_step = -1, stalls = 0;  // the step last redone for a stall, how many times
  double slowest_step_ms = 0;             // the longest train step committed, begin to commit
  StepReport report;
  JobResult result;
  std::map<std::string, std::vector<train::DropCount>> worker_drops;  // by address, from Final
};

// The expert slots' placement ([eplb], with parallel.experts = "shards";
// coordinator_eplb.cc). Not journaled: a restarted coordinator starts uniform again.
struct ExpertBalance {
  caf::actor rebalancer;         // the eplb_rebalancer (spawned with the first counts)
  int64_t counted = 0;           // steps whose counts it was sent
  std::vector<int64_t> phy2log;  // MoE layers × slots, row-major; empty: the uniform one
  int64_t workers = 0;           // the view size phy2log was placed for
  int64_t placed_at = -1;        // the step before which it was placed
  int64_t asked_step = -1;       // the placement asked for and not answered yet: its step,
  uint64_t asked_epoch = 0;      // and the epoch it was asked in
  time_point asked_at{};
};

// The engram_shard actors ([engram] placement = "shards"; coordinator_engram.cc). Each
// shard's tables are held by 1 + buddy_copies actors on distinct nodes; the first answers
// the lookups. A holder that leaves the view is replaced from a survivor.
struct EngramShards {
  std::vector<std::vector<std::string>> holders;       // node ids by shard; empty: no view yet
  std::set<std::pair<int64_t, std::string>> awaiting;  // (shard, node): not sent its tables yet
  std::vector<std::string> flat;                       // every holder's address, shard by shard
  std::vector<int64_t> flat_shard;                     // the shard of flat[i]
  Receipts norms;                                      // EngramNorm of the step, by flat index
  std::vector<std::vector<double>> parts;  // by flat index: Σ g² per table (0: another's)
  std::map<std::string, train::EngramTierCounts> tier_seen;  // by holder: its last counts
  // A rollback in flight (core.rollback_to >= 0): every holder loads its tables from the
  // checkpoint (this manifest); the recovery ends when all of them and the workers are done.
  std::string rollback_manifest;
  std::set<std::string> rollback_waiting;  // holders that have not confirmed their load
  time_point rollback_sent;
};

// Table sets swapped between steps (coordinator_engram_sets.cc): one op at a time, held at
// a step boundary. Round SAVE: worker 0 writes the set attached now to the run directory;
// round LOAD: every worker (and every Engram holder) loads the next one. A view change
// sends the round again to the new view; a LOAD that fails anywhere is undone by loading
// the saved set everywhere.
struct EngramSets {
  std::vector<StackedSet> stack = {{"initial"}};  // the attached set last; [0] the job's own
  std::deque<EngramOp> queue;                     // asked, not done; front: in flight
  uint64_t op = 0;                                // the front's id (EngramSwap.op)
  bool started = false, sent = false;             // the front began; its round is out
  train::EngramSwap::Round round = train::EngramSwap::SAVE;
  std::set<std::string> waiting;  // who has not answered the round
  uint64_t saved_hash = 0, loaded_hash = 0;
  std::string failed;    // why the LOAD failed somewhere
  bool undoing = false;  // the saved set is being loaded back everywhere
  // What a rollback rewinds: the stack the job started with, the swaps done since (each at
  // its step: after that many commits) and the --engram-at ops already asked, by step.
  struct Done {
    int64_t step = 0;
    bool attach = true;
    std::string name;
    uint64_t saved_hash = 0;  // an attach's: the set it covered, as saved
  };
  std::vector<StackedSet> base = {{"initial"}};
  std::vector<Done> done;
  std::map<int64_t, std::vector<EngramOp>> fired;
};

// A checkpoint being written: each worker of the view reports its shards.
struct PendingCheckpoint {
  uint64_t epoch = 0;
  Receipts written;  // CheckpointWritten: by worker index, then W + Engram shard index
  std::vector<storage::ShardRecord> shards;
  std::string failed;          // the first worker's error: the checkpoint is skipped
  double stall_ms = 0;         // the longest copy-out of any worker: what training waited for it
  int64_t engram_writers = 0;  // Engram shards whose lookup holders write their tables
};

// grpo.enabled (coordinator_rollout.cc): the rollout actors and the groups they sample.
struct RolloutRound {
  struct Actor {
    std::string node, address;  // address: node/rollout.<index>
    int64_t index = 0;
    std::set<std::pair<int64_t, int64_t>> asked;  // (step, prompt) handed out, not answered
  };
  std::vector<Actor> actors;  // the live ones, in their index order
  bool placed = false;
  // By step: each prompt's group once it came (steps not committed yet).
  std::map<int64_t, std::vector<std::optional<train::RolloutGroup>>> groups;
  std::deque<std::pair<int64_t, int64_t>> queue;  // (step, prompt) not handed out, in order
  int64_t dealt = 0;                              // steps [0, dealt) were queued
  bool waiting = false;  // the step's StepBegin waits for its rollouts (since wait_from)
  time_point wait_from;
};

struct CoordinatorState {
  CoordinatorOptions opt;
  caf::actor router;
  std::string self_address = "n0/coordinator.0";
  std::shared_ptr<CommitLog> commit_log;
  Membership core;
  ReshapeState reshape;
  Controls controls;
  StepDriver drv;
  ExpertBalance balance;
  EngramShards engram;
  EngramSets engram_sets;
  RolloutRound rollouts;
  std::map<int64_t, PendingCheckpoint> checkpoints;  // by step, until complete or skipped
  DropLog drops{"n0/coordinator.0", type_name};
  bool ending = false;    // end_job ran (the nodes were told to stop)
  bool reported = false;  // on_done was called
  static inline const char* name = "coordinator";
};
using Self = caf::stateful_actor<CoordinatorState>;

inline time_point now(Self* self) {
  return self->clock().now();
}
// An event for events.jsonl (on_event): its kind, the text for people, and typed fields for
// machines (node, pid, reason, durations in ms); epoch and committed step are added here.
void event(Self* self, const std::string& kind, const std::string& text,
           nlohmann::json fields = nlohmann::json::object());

template <class Proto>
void send_to(Self* self, const std::string& to, uint32_t type, const Proto& body,
             std::vector<runtime::Payload> payloads = {}) {
  ActorMessage m = make_message(self->state.self_address, to, type, body);
  m.payloads = std::move(payloads);
  self->send(self->state.router, std::move(m));
}
inline constexpr int64_t recover_resend_ms = 1000;
void to_all_workers(Self* self, uint32_t type, const google::protobuf::Message& body,
                    const std::vector<runtime::Payload>& payloads = {});
// Stops the job with `why`: the nodes are shut down, on_done reports it.
void fail(Self* self, const std::string& why);
void end_job(Self* self, JobResult result);
// Switches to phase p's behaviour (coordinator.cc).
void enter_phase(Self* self, Phase p);
// Whether message m, claiming to be from worker `index`, comes from that worker's address.
Verdict check_worker(Self* self, int64_t index, const ActorMessage& m);

// coordinator_membership.cc: the core.
void on_join(Self* self, const control::Join& j, const ActorMessage& m);
// A joining node's NodeInfo under a fresh id (n1, n2, ...), bound and addressed in the router.
NodeInfo admit_node(Self* self, const control::Join& j, const ActorMessage& m);
Verdict on_ready(Self* self, const train::Ready& r, const ActorMessage& m);
Verdict on_recovered(Self* self, const train::Recovered& r, const ActorMessage& m);
// Every worker recovered (and, in a rollback, every Engram holder loaded): journaled, and
// training goes on.
void finish_recovery(Self* self);
void lose_node(Self* self, std::string node, const std::string& why, bool hung);
// The view with the reshape's joiners and leavers: published at the current epoch.
void publish_view(Self* self);
// The survivors of the view go back to the committed step under a new epoch; node k (an
// index into nodes) is gone with it, or none (npos: a reshape aborted, a
// restarted coordinator, a stalled step: every worker alive).
void recover_without(Self* self, size_t k, const std::string& what,
                     nlohmann::json fields = nlohmann::json::object());
// recovering: the view of a recovery, journaled with the view it recovers from (its base).
void bump_epoch(Self* self, bool recovering = false);
// Node n left the view of the current epoch as lost (call it after bump_epoch): the router
// forgets it and refuses its late messages as an evicted node's; a hung one, which may wake
// up, is told to leave with that epoch (it exits with exit_status_evicted, node_agent.h).
void evict_node(Self* self, const NodeInfo& n, bool hung);
void welcome(Self* self, const NodeInfo& n, bool running);
void on_tick(Self* self);

// coordinator_driver.cc: the training driver. The core calls start_training once every
// worker is ready, resume_training after a recovery, and reads the version to recover to.
void start_training(Self* self);
// The next step, or the end of the job (after the last).
void start_or_finish(Self* self);
void resume_training(Self* self);
// Every tick while running: a step stalled past step_timeout_ms is redone (recover_without).
void check_step_progress(Self* self, time_point t);
int64_t committed_version(Self* self);
void add_driver_handlers(Self* self, Phase p, Dispatcher& d);

// coordinator_pull.cc: parallel.schedule = "pull".
bool pulling(Self* self);
// Into a train StepBegin: each worker's first piece; the rest wait in the queue.
void begin_pull(Self* self, train::StepBegin* b);
// A worker's Stats of the piece it was handed (got: its one piece, which the caller keeps):
// checked and counted, and the worker handed the next piece (Take), or told none is left.
Verdict take_pulled_stats(Self* self, const train::Stats& st,
                          const std::vector<model::Piece<float>>& got);
bool pull_complete(Self* self);  // every piece of the step reported
// "pieces from n1/worker.0 ([4, 6))": the handed-out pieces not reported yet.
std::string pull_waiting(Self* self);
// At the job's end: the pieces each worker computed, as the event "pulled".
void report_pulls(Self* self);

// coordinator_eplb.cc: the expert slots' placement follows the routing load.
// After the commit of a step: its per-expert counts go to the eplb_rebalancer's window.
void record_expert_counts(Self* self, const std::vector<std::vector<int64_t>>& counts);
// Before a train step: true when its placement is ready. On a step [eplb] says is due it
// asks the eplb_rebalancer and returns false; the answer (an event names the imbalance
// before and after) starts the step.
bool placement_ready(Self* self);
// Into a StepBegin: the placement the step computes with.
void place_experts(Self* self, train::StepBegin* b);

// coordinator_engram.cc: the Engram tables on engram_shard actors (each a no-op without).
bool engram_sharded(Self* self);
// A node of the view (a worker's or a memory node) that may hold Engram shards.
bool engram_home_in_view(Self* self, const std::string& node);
// Into a view: every holder of every shard; a holder that left the view is replaced and a
// survivor told to send the new one its tables (EngramCopy). False, the job failed, when a
// shard lost every holder.
bool place_engram_shards(Self* self, control::View* v);
// Into a StepBegin: the shards' addresses; a train step opens the round of their norms.
void begin_engram_step(Self* self, train::StepBegin* b);
// Each shard's lookup holder (StepBegin.engram_shards, Finish.engram_shards).
void name_engram_shards(Self* self, google::protobuf::RepeatedPtrField<std::string>* into);
// Every shard's norm is in (or there are no shards): *sumsq, Σ g² over the tables.
bool engram_norms_ready(Self* self, double* sumsq);
void apply_to_engram_shards(Self* self, const train::Apply& a,
                            const std::vector<runtime::Payload>& payloads);
Verdict on_engram_norm(Self* self, const train::EngramNorm& n, const ActorMessage& m);
// A checkpoint of `version` with shards: each shard's lookup holder is asked to write its
// tables (as writer e<epoch>-engram<k>); how many were asked (0 without shards).
int64_t ask_engram_checkpoint(Self* self, int64_t version);
// A CheckpointWritten (engram) of shard `shard`: from its lookup holder, or dropped.
Verdict check_engram_writer(Self* self, int64_t shard, const ActorMessage& m);
// coordinator_engram_rollback.cc: a rollback takes the holders back to the checkpoint too.
// "" or which shard lost every holder that had its tables (the view already without the
// lost node): its tables are gone, and only a rollback brings them back.
std::string engram_holders_lost(Self* self);
// After the rollback's view went out: every holder told to load its tables from `manifest`;
// every recover_resend_ms again to those that have not answered (on_tick).
void send_engram_rollback(Self* self, const std::string& manifest);
void resend_engram_rollback(Self* self, time_point t);
bool engram_rollback_done(Self* self);
Verdict on_engram_rollback_loaded(Self* self, const train::EngramSwapped& w, const ActorMessage& m);

// coordinator_engram_sets.cc: table sets attached and detached between steps.
// An operator's (or --engram-at's) op, checked and queued: "" or why it is refused.
std::string ask_engram_op(Self* self, const EngramOp& op);
// At a step boundary: true when a swap holds it (the last answer starts the step).
bool engram_swap_due(Self* self);
// The view changed: the round in flight goes again to the new view at the next boundary.
void abandon_engram_round(Self* self);
// A rollback to the checkpoint of `step`: the stack as it was then, the swaps asked since
// dropped (an event says so), and the --engram-at ops of `step` and later asked again when
// the replay reaches them.
void rewind_engram_sets(Self* self, int64_t step);
Verdict on_engram_swapped(Self* self, const train::EngramSwapped& w, const ActorMessage& m);
nlohmann::json engram_sets_status(Self* self);

// coordinator_rollout.cc: GRPO's rollout actors (each a no-op without grpo.enabled).
bool grpo_job(Self* self);
// Into a view: rollout.k on each rollout node.
void place_rollouts(Self* self, control::View* v);
// Queues the prompts of the steps whose policy version is committed (lag 1; with
// grpo.overlap = false, only the step after the last committed) and hands them out.
void deal_rollouts(Self* self);
// Whether step drv.step's groups are all in; if not, the step waits for them (the last one
// to come starts it).
bool rollouts_ready(Self* self);
// Into a train StepBegin: the step's groups and the rollout actors.
void add_rollouts(Self* self, train::StepBegin* b, std::vector<runtime::Payload>* payloads);
// After the commit of `step`: its groups are dropped, the next steps dealt.
void rollouts_committed(Self* self, int64_t step);
// Into the step's stats: its mean reward and completion tokens (unchanged without GRPO).
void rollout_stats(Self* self, int64_t step, model::StepStats* st);
Verdict on_rollout_group(Self* self, const train::RolloutAsk& head, const ActorMessage& m);
// A rollout node lost: its prompts go to the others. False: not a rollout node.
bool lose_rollout_node(Self* self, const std::string& node, const std::string& why, bool hung);

// coordinator_reshape.cc: scale, drain, pause, checkpoint on request; the step boundary.
// At a step boundary, before the next step begins: true when the coordinator holds it
// (paused, or a reshape begins); it starts the step itself later.
bool hold_at_boundary(Self* self);
// An operator's request: "" when accepted, else why not (a 400 for the endpoint). *start_nodes:
// how many node processes the launcher should start for it.
std::string on_control(Self* self, const std::string& kind, int64_t nodes, const std::string& node,
                       int64_t* start_nodes);
std::string status_json(Self* self);
// A joining node while the job runs: admitted when a scale up waits for it.
bool admit_joiner(Self* self, const control::Join& j, const ActorMessage& m);
Verdict on_standby_ready(Self* self, const train::Ready& r, const ActorMessage& m);
Verdict on_reshaped(Self* self, const train::Recovered& r, const ActorMessage& m);
// Node `node` (a joiner, a leaver or a member during a reshape) is lost: true when the
// reshape took care of it (aborted, the survivors recovering); false: not the reshape's.
bool lose_during_reshape(Self* self, const std::string& node, const std::string& why, bool hung);
// Every recover_resend_ms while recovering or resizing: the Recover or Reshape in flight
// again to the workers that have not answered, and a reshape's to the leavers (a lost
// Recover, Reshape, transfer or Recovered costs a resend; worker_recovery.cc answer_resend).
void resend_in_flight(Self* self, time_point t);
// A reshape not finished within recovery_timeout_ms is aborted: the old view recovers (as
// from a node lost during it) and the newcomers are sent home.
void reshape_past_deadline(Self* self, time_point t);
// The workers of the view that have not answered Recovered yet, "a, b" (for error texts).
std::string waiting_workers(Self* self);
// Every node the coordinator hears from: the view's, the joiners and the leavers.
std::vector<NodeInfo*> heard_nodes(Self* self);

// coordinator_restart.cc: a coordinator restarted from the journal (opt.restart).
void begin_rejoin(Self* self);
// A member's Rejoin, or any message from one, while rejoining.
void note_rejoined(Self* self, const std::string& node, const ActorMessage& m);
void on_rejoin(Self* self, const control::Rejoin& r, const ActorMessage& m);
// The rejoin window passed: the members not back are lost.
bool rejoin_deadline(Self* self, time_point t);

// coordinator_checkpoint.cc: checkpoints, resume and the last fallback.
// After the commit of step s: the checkpoint of s + 1 is expected when the job writes one.
void expect_checkpoint(Self* self, int64_t version, bool forced = false);
// The view changed: the checkpoints being written by the old one are abandoned.
void abandon_checkpoints(Self* self);
Verdict on_checkpoint_written(Self* self, const train::CheckpointWritten& w, const ActorMessage& m);
// Whether losing the workers outside `survivors` (old indices) loses some owner's
// optimizer state with all its buddies, so that only a checkpoint can bring it back: which
// owner, or "" when every share survives.
std::string share_lost(Self* self, int64_t old_workers, const std::vector<int64_t>& survivors);
// The newest complete checkpoint whose shards all verify (events name the ones skipped);
// an error when there is none.
runtime::Result<storage::Manifest> rollback_checkpoint(Self* self);

}  // namespace troupe::actors::coordinator_impl
