// The worker role's state and the pieces its two files share (worker.cc: the step protocol;
// worker_recovery.cc: buddy copies and recovery). Internal to actors/.
#pragma once

#include <caf/all.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "actors/compute_faults.h"
#include "actors/dispatch.h"
#include "actors/engram_client.h"
#include "actors/expert_client.h"
#include "actors/protocol.h"
#include "actors/transfer_faults.h"
#include "config/job_config.h"
#include "runtime/roles.h"
#include "storage/faults.h"
#include "storage/journal.h"
#include "train/trainer.h"
#include "train/tree.h"

namespace troupe::actors::worker_impl {

using model::FlatRange;
using model::TreeNode;
using runtime::ActorMessage;
using runtime::Payload;

// Messages from a newer epoch held until its Recover: a few per survivor, at most.
inline constexpr size_t early_messages_max = 4096;

// The optimizer state of one owner's share, as its buddy keeps it (BuddyState).
struct BuddyCopy {
  int64_t owner = -1;
  FlatRange range;
  Payload runs;  // Optimizer::read_state runs of the range's tensors, in table order
};

// The view a recovery started from, kept until the next step begins: a further loss during
// the recovery restarts it from here, with every lost node left out.
struct RecoveryBase {
  int64_t version = 0, workers = 0, me = 0;
  std::vector<FlatRange> owners;
  std::map<size_t, std::vector<float>> own;  // this worker's share's optimizer state
  std::map<int64_t, BuddyCopy> buddies;      // owner → its share, of the predecessors it had
};

// A recovery in flight: the state transfers this worker still waits for.
struct Recovery {
  bool active = false;
  int64_t version = 0;
  std::map<size_t, const float*> sources;  // tensor → its state (buffers kept below)
  std::vector<std::vector<float>> local;   // zero state of the shares taken over at step 0
  std::vector<Payload> received;           // keeps the transfers' runs alive
  Receipts transfers;                      // StateTransfer, by the sender's new index
  Receipts buddies;  // the predecessors' copies of the new layout, once resharded
  bool resharded = false;
  // A reshape's (worker_reshape.cc): the transfers come from the old view, by old index;
  // a newcomer also waits for old worker 0's Replica (weights, Engram tables and moments).
  bool reshape = false;
  std::vector<std::string> old_workers;
  bool need_replica = false;
  std::vector<Payload> replica;
};

// What this worker sent in a recovery or a reshape, by (receiver, replica?), until the next
// step begins: a receiver that finds a CRC32C wrong asks for it again (FetchAgain).
using SentTransfers = std::map<std::pair<std::string, bool>, ActorMessage>;

struct WorkerState {
  runtime::RoleContext ctx;
  // Shared with the fabric: payloads view its memory (view_payload) until their sends end.
  std::shared_ptr<model::Trainer> trainer;
  int64_t buddy_copies = 1;        // [fault_tolerance] buddy_copies of the job
  uint64_t epoch = 0;              // the epoch it acts in; stamped on what it sends
  std::vector<std::string> peers;  // the workers, by current index
  int64_t workers = 0, me = 0, total_pieces = 0;
  std::vector<TreeNode> ranges, val_ranges;
  std::vector<TreeNode> step_pieces;  // every worker's canonical pieces: a partition of the batch
  // parallel.schedule = "pull": ranges are unused; step_pieces are plan_pull_pieces, handed
  // out by the coordinator (StepBegin.pull_first, then Take). pulled: the pieces computed in
  // the step begun so far (the engine's list, appended to).
  bool pull = false;
  // grpo.enabled (worker_grpo.cc): the loss's settings, and where the weights are streamed.
  bool grpo = false;
  int64_t grpo_group_size = 0;
  model::GrpoLossConfig grpo_loss;
  std::vector<std::string> rollout_actors;
  int64_t pull_pieces_per_worker = 4;
  size_t pulled = 0;
  std::vector<FlatRange> owners;
  int64_t version = 0;         // train steps applied to this worker's weights
  int64_t committed = 0;       // train steps the coordinator announced as committed (Commit)
  int64_t saved_for = -1;      // the step whose begin saved the version before it, until Commit
  uint64_t recover_epoch = 0;  // the epoch of the last Recover taken (a second copy is dropped)
  uint64_t final_epoch = 0;    // the epoch of the last Finish answered
  // (version, owner) → the share of one of the `buddy_copies` predecessors after that version.
  std::map<std::pair<int64_t, int64_t>, BuddyCopy> buddy;
  std::optional<RecoveryBase> recovery_base;  // from a Recover to the next StepBegin
  // The step in flight.
  int64_t step = -1;
  int64_t begun = -1;      // the train step whose StepBegin was taken
  int64_t validated = -1;  // the step whose validation was sent
  std::vector<TreeNode> slice_nodes;
  std::vector<Payload> slice_payloads;  // received (kept alive) or my own pieces (views)
  // Engram: the step's sparse table gradients by piece (this worker's own point into its
  // engine until the step is reduced; received ones are kept here).
  std::vector<TreeNode> engram_nodes;
  std::vector<const model::EngramGrad<float>*> engram_grads;
  std::vector<std::unique_ptr<model::EngramGrad<float>>> engram_received;
  bool reduced = false, applied = false, done = false;
  Receipts buddies;  // BuddyState of the step's update, by predecessor (the others waived)
  Receipts weights;  // Weights of the step, by owner (owners of nothing waived)
  Recovery recovery;
  SentTransfers sent;
  // Left the view in a reshape (scale down, drain): it sent its state and waits for its
  // node's Shutdown; a Recover (the reshape aborted) takes it back.
  bool left = false;
  TransferFaults transfer_faults;   // chaos: corrupt the k-th transfer sent
  ComputeFaults compute_faults;     // chaos: one worker computes slower
  std::vector<ActorMessage> early;  // from a newer epoch, waiting for its Recover
  DropLog drops{"", type_name};
  // Checkpoints (worker_checkpoint.cc): the write in flight, the fault hook, the time spent
  // copying state out, and the checkpoint this worker was loaded from (resume, rollback).
  std::thread checkpoint_writer;
  storage::StorageFaults storage_faults;
  double snapshot_seconds = 0;
  std::shared_ptr<std::vector<model::StateTensor>> snapshot =  // reused from one to the next
      std::make_shared<std::vector<model::StateTensor>>();
  std::optional<storage::Manifest> loaded;
  // `[parallel] experts = "shards"`: the routed experts' client (worker_experts.cc); null
  // when the worker computes them itself.
  std::unique_ptr<ExpertClient> experts;
  ExpertRoute uniform_route;  // the view's placement without a rebalance (route_experts)
  // `[engram] placement = "shards"`: the tables' client (worker_engram.cc); null when the
  // worker holds the tables itself. engram_version: the version the next compute reads.
  std::unique_ptr<EngramClient> engram;
  int64_t engram_version = 0;
  static inline const char* name = "worker";
  WorkerState() = default;
  WorkerState(const WorkerState&) = delete;
  WorkerState& operator=(const WorkerState&) = delete;
  ~WorkerState() {
    if (checkpoint_writer.joinable()) checkpoint_writer.join();
  }
};
using Self = caf::stateful_actor<WorkerState>;

// Plans ranges and owners for `workers` workers with this one at index `me`.
void plan(WorkerState& s, int64_t workers, int64_t me);

void send_to(Self* self, ActorMessage m);  // stamps the worker's epoch
// The coordinator committed `step` (Commit, or implied by a later StepBegin, validation or
// Reshape): the version before it is released.
Verdict accept_commit(Self* self, int64_t step);
template <class Proto>
void reply(Self* self, const std::string& to, uint32_t type, const Proto& body,
           std::vector<Payload> payloads = {}) {
  ActorMessage m = make_message(self->state.ctx.address, to, type, body);
  m.payloads = std::move(payloads);
  send_to(self, std::move(m));
}
void try_done(Self* self);
// Resets the per-step state when a message of a later step arrives.
void enter(WorkerState& s, int64_t step);
// Opens a round of the BuddyStates of `version` from this worker's buddy_count predecessors.
void open_buddies(const WorkerState& s, int64_t version, Receipts* round);

// Computes micro-batches `range` of train step `step` (after the pieces pulled in it so far)
// and sends what they give: the pieces' Stats, their gradient slices to the owners, their
// Engram gradients. A static share sends Stats even when empty (the coordinator waits for
// every worker's); a view change cutting the compute short sends nothing.
void compute_and_send(Self* self, int64_t step, TreeNode range);

// worker_pull.cc (`[parallel] schedule = "pull"`): the step begun computes the first piece the
// StepBegin hands this worker; each Take, the next.
Verdict begin_pulled(Self* self, const train::StepBegin& b);
Verdict on_take(Self* self, const train::Take& t, const ActorMessage& m);

// worker_experts.cc (`[parallel] experts = "shards"`; each a no-op without it)
// The slots' placement on the shards beside `workers` (by view position).
ExpertRoute shard_placement(const model::ModelConfig& cfg, const std::vector<std::string>& workers);
void start_experts(Self* self, const model::JobConfig& cfg);  // at start, after plan
void route_experts(WorkerState& s);                           // after a view change's plan
// The placement a StepBegin carries (none: the uniform one); a bad one is dropped.
Verdict take_placement(WorkerState& s, const train::StepBegin& b);
// Before a step's (or a validation's) compute: the version the requests name, and this
// worker's shard gets the weights of its slots.
void prepare_experts(Self* self, int64_t version, bool evaluate);
// Runs compute; false when a view change cut it short (StepAborted): the step is dropped.
bool computed(Self* self, const std::function<void()>& compute);

// worker_grpo.cc (grpo.enabled; each a no-op without it)
void start_grpo(WorkerState& s, const model::JobConfig& cfg);  // after the trainer: π_ref
// A train StepBegin's rollout groups, made the trainer's GRPO step; a bad one is dropped.
Verdict take_rollouts(WorkerState& s, const train::StepBegin& b, const ActorMessage& m);
// An owner's updated range, to every rollout actor the step's StepBegin named.
void stream_to_rollouts(Self* self, const train::Weights& w);

// worker_engram.cc (`[engram] placement = "shards"`; each a no-op without it)
void start_engram(Self* self, const model::JobConfig& cfg);  // before the trainer is made
void hook_engram(WorkerState& s);                            // after: the prefetch hook
// The shards a StepBegin names, and the version the step (or validation) reads.
Verdict take_engram_shards(WorkerState& s, const train::StepBegin& b, int64_t version);
// The pieces' sparse gradients to the shards of their tables (instead of EngramSlices to
// every worker): pieces [first, end).
void send_engram_to_shards(Self* self, int64_t step, const std::vector<model::Piece<float>>& pieces,
                           size_t first);
// Every worker's Final: the time its forwards waited for Engram rows is logged; worker 0's
// gets every table from the shards appended. False when a view change cut the fetch short
// (the Final waits for the next Finish).
bool final_engram_tables(Self* self, const train::Finish& f, std::vector<Payload>* payloads);
// A table set swapped between steps (EngramSwap: SAVE by worker 0, LOAD by every worker that
// holds the tables; storage/engram_set.h), answered with EngramSwapped.
Verdict on_engram_swap(Self* self, const train::EngramSwap& w, const ActorMessage& m);

// worker_checkpoint.cc
// After the Commit that made `version` steps: this owner's share is copied and written on a
// thread, and reported to the coordinator (CheckpointWritten), when the job checkpoints.
void maybe_checkpoint(Self* self, int64_t version, bool forced = false);
// An operator's checkpoint, between steps (POST /checkpoint).
Verdict on_checkpoint_now(Self* self, const train::CheckpointNow& c, const ActorMessage& m);
// Loads checkpoint m into the trainer for this worker's share (owners planned already);
// the version becomes m.step. Throws naming the shard that could not be read.
void load_checkpoint(WorkerState& s, const storage::Manifest& m);
// The optimizer state of `tensors` (one run each, appended to *out) as the checkpoint this
// worker loaded holds it: a lost owner's share at the version a job resumed with, before any
// buddy holds a copy. Throws naming the shard that could not be read.
void read_loaded_state(const WorkerState& s, const std::vector<size_t>& tensors,
                       std::vector<std::vector<float>>* out);

// worker_recovery.cc
// The tensors of `range` that have optimizer state, in table order, and their total floats.
std::vector<size_t> state_tensors(const model::Trainer& t, FlatRange range, int64_t* floats);
// After an update: the owned share's optimizer state to the buddies (the next workers), or
// to the one named `only`.
void send_buddy_copy(Self* self, int64_t version, const std::string& only = "");
// A buddy's FetchAgain of the copy sent at the end of a recovery or reshape: sent again while
// nothing changed it (no step began since).
Verdict send_buddy_copy_again(Self* self, const train::FetchAgain& f, const ActorMessage& m);
// The coordinator sent the Recover or Reshape this worker took again: answered Recovered
// again, or what it still waits for asked for again (FetchAgain).
void answer_resend(Self* self);
// How many buddies each owner has among `workers` workers: buddy_copies, at most workers - 1.
int64_t buddy_count(const WorkerState& s, int64_t workers);
Verdict on_buddy_state(Self* self, const train::BuddyState& b, const ActorMessage& m);
Verdict on_recover(Self* self, const train::Recover& r, const ActorMessage& m);
Verdict on_state_transfer(Self* self, const train::StateTransfer& t, const ActorMessage& m);
// The view before a recovery or reshape: back to version c (the step in flight, if any, is
// dropped), and the optimizer state this worker holds there (its own and its buddy copies).
RecoveryBase base_of(WorkerState& s, int64_t c, int64_t old_n);
// Once every transfer is in: reshard (or, for a reshape, take the new share), send the
// buddies their copies; once theirs are in, answer Recovered.
void finish_recovery(Self* self);
// Sends a StateTransfer or Replica with its CRC32C set, kept for a FetchAgain; the chaos
// hook may corrupt the bytes on the wire (not the kept copy).
void send_checked(Self* self, const std::string& to, uint32_t type, ActorMessage m);
// Whether payload p's bytes have CRC32C crc.
bool crc_ok(const Payload& p, uint32_t crc);

// worker_reshape.cc
Verdict on_reshape(Self* self, const train::Reshape& r, const ActorMessage& m);
Verdict on_replica(Self* self, const train::Replica& r, const ActorMessage& m);
Verdict on_fetch_again(Self* self, const train::FetchAgain& f, const ActorMessage& m);
// A reshape's transfers are in: a stayer reshards, a newcomer loads its whole state.
void take_reshape_state(Self* self);

}  // namespace troupe::actors::worker_impl
