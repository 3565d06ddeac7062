#pragma once
// Single-process training (the library the worker actors will call): the global batch of
// each step is split into logical micro-batches, computed on a thread pool, and reduced
// in the canonical tree — so the result is independent of the thread count (DESIGN §5).
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "data/data.h"
#include "data/mixed_plan.h"
#include "model/config.h"
#include "model/engram.h"
#include "model/grpo_loss.h"
#include "model/model.h"
#include "model/params.h"
#include "optim/optim.h"
#include "train/schedule.h"
#include "train/train_config.h"
#include "train/tree.h"
#include "train/tree_stream.h"

namespace troupe::model {

struct GrpoStep;  // train/grpo_step.h

struct StepStats {
  int64_t step = 0;
  double loss = 0, ce = 0, mtp = 0, bal = 0;
  // grad_norm: the global norm clipped to grad_clip, over the dense gradient and the Engram
  // tables' sparse gradient together: sqrt(‖dense‖² + Σ_tables Σ_rows ‖g_row‖²).
  double lr = 0, grad_norm = 0;
  int64_t tokens = 0;  // valid main-head targets of the step
  // Mixed mode: the step's padding fraction of its micro-batches' tokens (StepPlan); -1 where
  // it is not known (packed mode, and the coordinator, which holds no corpus).
  double padding_waste = -1;
  // troupe launch: the workers' idle share of the step's wall time, 1 − Σ compute /
  // (workers · wall), what a slow worker costs the others; -1 where not measured.
  double idle_fraction = -1;
  // GRPO: the mean reward of the step's completions; -1 for a supervised step.
  double reward = -1;
};

// The reduced contribution of one canonical-tree node [lo, hi) of micro-batches.
// One named run of a checkpoint's state, copied out of the trainer (storage/checkpoint.h
// names: "param/<tensor>", "optim/<tensor>", "engram/<table>/values|m|v").
struct StateTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// The parts of an Engram table's state, in the order every writer and reader keeps them.
enum class EngramPart { values = 0, m = 1, v = 2 };
constexpr EngramPart kEngramParts[] = {EngramPart::values, EngramPart::m, EngramPart::v};
// "engram/<table>/values|m|v": the one spelling of a table part's state name.
inline std::string engram_state_name(const std::string& table, EngramPart part) {
  static constexpr const char* kNames[] = {"values", "m", "v"};
  return "engram/" + table + "/" + kNames[int(part)];
}

template <typename T>
struct Piece {
  TreeNode node;
  LossParts<T> parts;  // scalars summed over the node in tree order
  // Tokens per expert per layer over the node (integers: order-free).
  std::vector<std::vector<int64_t>> counts;
};

// dst += src, per layer and expert (integers: order-free), growing dst as needed.
void add_counts(std::vector<std::vector<int64_t>>& dst,
                const std::vector<std::vector<int64_t>>& src);

// Forward (+ backward) of a global batch split into logical micro-batches of mb_rows,
// computed on a thread pool and reduced in the canonical tree over micro-batch ids. The
// result depends on the batch and the weights alone, not on the thread count.
template <typename T>
class GradEngine {
 public:
  // seed keys Engram's hashing; engram supplies its tables (both unused without Engram;
  // engram is required with it and must outlive the engine).
  GradEngine(const ModelConfig& mcfg, const ParamTable& table, int threads, uint64_t seed = 0,
             const EngramStore<T>* engram = nullptr);
  ~GradEngine();
  // Returns the reduced loss parts; with backward, grad() holds the reduced gradient.
  LossParts<T> run(const T* params, const Batch& batch, int64_t mb_rows, bool backward,
                   bool with_mtp);
  // Data parallelism's half of run: computes only micro-batches [lo, hi) of the global
  // batch (the loss is still normalised by the whole batch) and reduces them into the
  // nodes tree_pieces(n, lo, hi). piece_grad(k) holds piece k's gradient (with backward).
  // append: keep the pieces (and their buffers) of the runs since the last one without it and
  // add this range's after them (a worker pulling piece after piece of one step); the
  // returned list, and piece_grad's k, then count from the first of those runs.
  const std::vector<Piece<T>>& run_range(const T* params, const Batch& batch, int64_t mb_rows,
                                         int64_t lo, int64_t hi, bool backward, bool with_mtp,
                                         bool append = false);
  const std::vector<T>& piece_grad(size_t k) const;
  const std::vector<Piece<T>>& pieces() const { return pieces_; }
  // From now on the routed experts of every micro-batch are computed by `routed` (not owned;
  // nullptr: in-process again), called from the engine's threads at once (model/ffn.h).
  void set_routed_experts(RoutedExperts<T>* routed);
  // From now on micro-batch m's loss on the main head is head_of(m) (a HeadLoss replacing
  // cross-entropy, e.g. GRPO's; called from the engine's threads at once, each m once per
  // run; nullptr from it, or an empty function: cross-entropy).
  void set_head_losses(std::function<HeadLoss<T>*(int64_t)> head_of) {
    head_of_ = std::move(head_of);
  }
  // Piece k's sparse Engram table gradient (with backward; empty tables without Engram).
  const EngramGrad<T>& piece_engram_grad(size_t k) const;
  // Frees the gradient buffers (kept from step to step, as many as a run held at once): the
  // next run allocates what it needs. Only when no piece_grad is still being read (a send in
  // flight).
  void release_grads() {
    std::vector<std::vector<T>>().swap(grads_);
    free_.clear();
  }
  const std::vector<T>& grad() const { return piece_grad(0); }
  // The gradient buffers allocated: at most the largest cap of the runs so far (claim_leaf).
  size_t grad_buffers() const {
    return size_t(std::count_if(grads_.begin(), grads_.end(), [](auto& g) { return !g.empty(); }));
  }
  // The reduced sparse Engram table gradient (one entry per table; empty without Engram).
  const EngramGrad<T>& engram_grad() const { return egrads_.front(); }
  // Tokens per expert per layer over the whole batch (integers: order-free).
  const std::vector<std::vector<int64_t>>& counts() const { return pieces_.front().counts; }
  // What one micro-batch in flight holds for its backward (Model::held_bytes of the first
  // thread's workspace, as the last run sized it); threads() of them are held at once.
  HeldBytes held_bytes() const { return workers_.front()->held_bytes(); }

 private:
  const ModelConfig& mcfg_;
  const ParamTable& table_;
  int threads_;
  std::vector<std::unique_ptr<Model<T>>> workers_;  // one activation workspace per thread
  // Gradient buffers: a micro-batch takes a free one, and the canonical tree's merges
  // (TreeStream) give the right half's back, so log2(micro-batches) + threads − 1 at most are
  // allocated (the claims' cap), not one per micro-batch. Never resized while a run computes.
  std::vector<std::vector<T>> grads_;
  std::vector<size_t> free_;  // slots of grads_ no piece holds, allocated ones last
  std::mutex free_mu_;
  std::condition_variable slot_freed_;
  // A backward run claims its micro-batches in order, each with a slot, and holds at most
  // slot_cap_ slots at once (start_claims): a fixed peak of buffers, whatever the order in
  // which the threads finish.
  int64_t next_leaf_ = 0, leaves_ = 0, held_ = 0, slot_cap_ = 0;
  bool claims_stopped_ = false;
  void start_claims(int64_t leaves, int64_t cap);
  std::optional<std::pair<int64_t, size_t>> claim_leaf();
  void stop_claims();
  void give_slot(size_t slot);
  void reserve_slots(int64_t n, bool append);
  const EngramStore<T>* engram_ = nullptr;
  std::vector<EngramGrad<T>> egrads_;  // one sparse table gradient per micro-batch
  int64_t slots_used_ = 0;             // egrads_ the runs since the last non-append one fill
  std::vector<Piece<T>> pieces_;
  void add_pieces(const std::vector<TreeNode>& nodes, int64_t lo, int64_t base, bool backward,
                  const TreeStream& stream, const std::vector<LossParts<T>>& parts,
                  const std::vector<std::vector<std::vector<int64_t>>>& counts);
  std::vector<size_t> piece_slot_;   // pieces_[k]'s reduced gradient: grads_[piece_slot_[k]]
  std::vector<size_t> piece_eslot_;  // pieces_[k]'s sparse table gradient: egrads_[...]
  std::function<HeadLoss<T>*(int64_t)> head_of_;  // set_head_losses
};

// The stats of train step `step` from its combined loss parts and global gradient norm (the
// learning rate from the schedule): one definition for troupe train and the coordinator.
StepStats step_stats(const TrainConfig& t, int64_t step, const LossParts<float>& lp,
                     double grad_norm);

// Sums pieces covering [0, n) in canonical tree order: the scalars as tree_sum does, the
// counts (per layer, per expert) when counts is non-null. Throws naming a missing piece.
LossParts<float> combine_pieces(const std::vector<Piece<float>>& pieces, int64_t n,
                                std::vector<std::vector<int64_t>>* counts);

// Trainer::weights_hash of these parameters and Engram tables (in table order).
uint64_t weights_hash_of(const std::vector<float>& params,
                         const std::vector<std::vector<float>>& tables);

class Trainer {
 public:
  // Members first, as a table of contents.
  const TrainJobConfig cfg;
  const ParamTable table;
  std::vector<float> params;  // the one contiguous parameter buffer

 private:
  int threads_;
  std::unique_ptr<Corpus> corpus_;
  std::unique_ptr<PackedStream> train_stream_;
  std::unique_ptr<MixedPlanner> planner_;  // data.mode = "mixed": the steps' plans
  Batch val_batch_;  // the validation rows: the same every time, so built once
  std::unique_ptr<InProcessEngramStore<float>> engram_;  // Engram tables (null without Engram)
  std::unique_ptr<GradEngine<float>> engine_;
  std::optional<Optimizer> optimizer_;  // always set; re-made by keep_optimizer_state
  bool optimizer_stepped_ = false;
  std::vector<float> saved_params_;
  std::optional<Optimizer> saved_optimizer_;
  std::vector<float> owned_grad_;                // data parallelism: the owned slice, reduced
  const float* owned_grad_view_ = nullptr;       // or the one piece's slice, used in place
  std::vector<std::vector<float>> combine_tmp_;  // one scratch slice per tree level
  EngramGrad<float> engram_grad_;                // data parallelism: the step's, reduced
  // The Engram rows the step in flight changed, as they were (restore_version puts them back).
  std::optional<EngramRowsBackup<float>> engram_backup_;

  void engram_adam(const EngramGrad<float>& grad, int64_t step, double clip_scale);

  void apply_bias_rule(const std::vector<std::vector<int64_t>>& counts, FlatRange owned);
  std::function<void(const Batch&)> before_compute_;
  std::shared_ptr<const GrpoStep> grpo_;  // set_grpo_step
  // The last step's batch and padding waste: a worker pulling piece after piece of a step
  // builds them once (compute_range, padding_waste).
  std::optional<std::pair<int64_t, Batch>> batch_cache_;
  mutable std::pair<int64_t, double> waste_cache_{-1, 0.0};
  std::vector<std::unique_ptr<GrpoHead<float>>> heads_;  // the GRPO step's, by micro-batch
  const std::vector<Piece<float>>& compute_grpo_range(int64_t step, TreeNode range, bool append);
  void before_compute(const Batch& batch, TreeNode range, int64_t mb_rows) const;

 public:
  // Loads the corpus and initialises the weights from the job seed. With Engram layers the
  // tables are this trainer's own, or, given engram_elsewhere (not owned; it must outlive
  // the trainer), read through it: engram() is then null, and the tables' reduction, update,
  // checkpoint and hash are the holder's (data parallelism with engram_shard actors).
  explicit Trainer(const TrainJobConfig& cfg, const EngramStore<float>* engram_elsewhere = nullptr);
  ~Trainer();

  // Runs step s (0-based) of the job: forward, backward, reduce, clip, update, rebalance.
  StepStats train_step(int64_t step);
  // The global batch of step s: rows of the packed stream, or in mixed mode the planner's
  // plan (data/mixed_batch.h), one row of tokens_per_microbatch per micro-batch. A pure
  // function of the config and s: every worker builds the same micro-batch for an id.
  Batch step_batch(int64_t step) const;
  // GRPO (train/grpo_step.h): from now on the train steps are GRPO steps, and step
  // `g->step` computes g's micro-batches with their GRPO head losses (compute_range and
  // train_step of any other step throw std::logic_error: its rollouts are not here).
  void set_grpo_step(std::shared_ptr<const GrpoStep> g);
  // Micro-batch m's head loss after the GRPO step computed it (its KL and clipping).
  const GrpoHead<float>& grpo_head(size_t m) const;
  // Mixed mode: 1 − tokens placed / (micro-batches · budget) of step s; 0 in packed mode.
  double padding_waste(int64_t step) const;
  // Mean main-head cross-entropy (nats per byte) over the validation rows.
  double validate();

  // ---- Data parallelism (DESIGN §5): train_step split into one worker's shares. Any
  // placement of micro-batches on workers and of tensors on owners gives train_step's bits.
  // Workers: the gradients of micro-batches [range] of step s, reduced into the canonical
  // tree nodes tree_pieces(micro_batches(), range); piece_grad(k) is piece k's gradient.
  // append: after the pieces computed for this step so far (schedule = "pull": one range
  // per pulled piece), which stay; piece k then counts from the first of them.
  const std::vector<Piece<float>>& compute_range(int64_t step, TreeNode range, bool append = false);
  const float* piece_grad(size_t k) const { return engine_->piece_grad(k).data(); }
  // The pieces compute_range gave in this step so far (with append, all of them).
  const std::vector<Piece<float>>& computed_pieces() const { return engine_->pieces(); }
  // After the share of micro-batches changed, between steps (no piece being sent): frees the
  // gradient buffers of the old share (GradEngine::release_grads).
  void release_grads() { engine_->release_grads(); }
  // The validation rows' micro-batches [range], forward only (pieces carry ce_sum, ce_count).
  const std::vector<Piece<float>>& validate_range(TreeNode range);
  // From now on the routed experts of compute_range and validate_range are computed by
  // `routed` (not owned; nullptr: in-process again). The bits stay (GradEngine's).
  void set_routed_experts(RoutedExperts<float>* routed) { engine_->set_routed_experts(routed); }
  // Called by compute_range and validate_range with the range's rows before they compute
  // (an Engram store elsewhere fetches the rows they read: actors/engram_client.h).
  void set_before_compute(std::function<void(const Batch&)> hook) {
    before_compute_ = std::move(hook);
  }
  int64_t val_micro_batches() const { return val_batch_.rows / cfg.train.micro_batch_rows; }
  // Owners: sums, in tree order, the slices [owned.lo, owned.hi) of the pieces covering the
  // whole step (nodes in any order; slices[i] belongs to nodes[i]). Returns the owned
  // tensors' grad-norm parts (grad_norm_parts). The slices must stay valid until
  // apply_owned: one piece covering the whole step for an owner of everything (one worker)
  // is used in place, not copied.
  std::vector<double> reduce_owned(FlatRange owned, const std::vector<TreeNode>& nodes,
                                   const std::vector<const float*>& slices);
  // Owners (ZeRO-1): from now on keep optimizer state for the `owned` tensors alone. Call
  // before the first step; apply_owned then takes only that range (std::logic_error else).
  void keep_optimizer_state(FlatRange owned);
  int64_t optimizer_state_floats() const { return optimizer_->state_floats(); }
  // Recovery (DESIGN §4). save_version keeps a copy of the weights and the optimizer (the
  // version before a step; for the Engram tables, the rows apply_engram changes);
  // restore_version returns to it (std::logic_error if none).
  void save_version();
  void restore_version();
  // Tensor t's optimizer state as one run of floats (Optimizer::read_state).
  int64_t optimizer_state_floats_of(size_t t) const { return optimizer_->state_floats_of(t); }
  void read_optimizer_state(size_t t, float* out) const { optimizer_->read_state(t, out); }
  // A new share after the owners change: keeps the state of the tensors inside `owned`,
  // each read from state_of(t) (optimizer_state_floats_of(t) floats), which may point into
  // the current optimizer. A null for a tensor that has state throws, naming it.
  void reshard_optimizer(FlatRange owned, const std::function<const float*(size_t)>& state_of);
  // Owners: the optimizer and the balancing rule on the owned tensors, with the step's
  // global clip scale and expert counts (per layer; empty vectors for dense layers).
  void apply_owned(FlatRange owned, int64_t step, double clip_scale,
                   const std::vector<std::vector<int64_t>>& counts);

  // Engram (data parallelism): every worker keeps all the tables and applies the same sparse
  // update, so the replicas stay equal with no owner. piece_engram_grad(k): piece k's sparse
  // gradient after compute_range. reduce_engram combines the pieces covering the whole step
  // (nodes in any order; grads[i] belongs to nodes[i]) in tree order, train_step's bits, and
  // returns their Σ g² (engram_grad_sumsq); apply_engram then runs train_step's sparse Adam.
  const EngramGrad<float>& piece_engram_grad(size_t k) const {
    return engine_->piece_engram_grad(k);
  }
  double reduce_engram(const std::vector<TreeNode>& nodes,
                       const std::vector<const EngramGrad<float>*>& grads);
  void apply_engram(int64_t step, double clip_scale);

  // ---- Checkpoints (storage/checkpoint.h). A copy of the state an owner of `owned` writes:
  // its tensors' weights and optimizer state, and with `engram` every Engram table and its
  // moments. Taken between steps; training may go on while it is written.
  std::vector<StateTensor> snapshot_state(FlatRange owned, bool engram) const;
  // The same into `out`, reusing its buffers by tensor name (a checkpoint every N steps
  // copies into the memory of the last one: no allocation, no page faults while the share
  // stays; a changed share frees what it lost and allocates what it gained).
  void snapshot_state_into(FlatRange owned, bool engram, std::vector<StateTensor>* out) const;
  // The shard names snapshot_state would give an owner of `owned` (with engram).
  std::vector<std::string> state_names(FlatRange owned, bool engram) const;
  // Loads a checkpoint: read(name, out) fills every param/ tensor, the optim/ runs of the
  // tensors in `owned` (keep_optimizer_state(owned) after), and the Engram tables and
  // moments. Throws std::runtime_error naming a shard of the wrong size. A saved version is
  // dropped (it belongs to the state before).
  void load_state(FlatRange owned,
                  const std::function<void(const std::string&, std::vector<float>*)>& read);

  // The Engram tables and moments alone, read(name, out) as load_state does (a table set
  // attached between steps: storage/engram_set.h); all are read and checked before any is
  // changed. The rows kept to undo the last Engram update are dropped.
  void load_engram_state(const std::function<void(const std::string&, std::vector<float>*)>& read);

  int threads() const { return threads_; }
  // The memory accountant: what each compute thread holds for a backward (GradEngine).
  HeldBytes held_bytes() const { return engine_->held_bytes(); }
  // The Engram tables, or null when the config has no Engram layer.
  const InProcessEngramStore<float>* engram() const { return engram_.get(); }
  int64_t micro_batches() const { return cfg.train.batch_size / cfg.train.micro_batch_rows; }
  // Fingerprint of the weights: xxh64 of the raw parameter bytes, then of each Engram
  // table's bytes in table order (seeded with the running hash).
  uint64_t weights_hash() const;
};

}  // namespace troupe::model
