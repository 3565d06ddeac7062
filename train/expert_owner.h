#pragma once
// What the owner of some routed experts keeps and does (issue 15, item 2; docs/eplb.md, "The
// plan for the shards' own experts"), without the network: each owned expert's weights and
// optimizer state (Muon momentum included), the step's per-micro-batch weight gradients as
// the replicas that computed them send them, in any order, and which micro-batches routed
// rows to which experts as their workers say; then the reduction, the clipping parts, the
// update and the state a migration moves. The expert_shard actor will hold one.
//
// The bits (DESIGN §5). Exactly one replica computes each (micro-batch, expert) pair and
// sends its weight gradient from zero; the owner folds the step's leaves in the canonical
// tree over micro-batch ids (TreeStream: as they arrive), a micro-batch that routed the
// expert no row counting as a leaf of zeros — what the in-worker reduction adds, so the
// sum is its bits for any placement. The update is Optimizer::update on the expert's slice
// alone, which has the bits of the whole table's (OptimizerTest.AnExpertsOwnerUpdates…).
// The clipping parts of an expert's three tensors are grad_norm_parts' chunks of them,
// keyed by where they lie in the table (grad_norm_from_runs), so the global norm keeps its
// bits whoever owns what.
//
// Why a worker must say which experts a micro-batch routed rows to: a replica with no row of
// an expert computes nothing and sends nothing, so an owner waiting for every leaf would wait
// forever; the worker that ran the micro-batch knows. Bad input — a gradient of an expert not
// owned here, of the wrong size, twice, or of a pair the micro-batch's note says had no row,
// a micro-batch outside the step — is refused with what is wrong and changes nothing.
#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/ffn.h"
#include "model/params.h"
#include "optim/optim.h"
#include "train/schedule.h"
#include "train/train_config.h"
#include "train/tree_stream.h"

namespace troupe::model {

// A logical routed expert: expert `expert` of MoE layer `moe_layer` (block moe_layer +
// first_k_dense).
struct ExpertId {
  int64_t moe_layer = 0, expert = 0;
  auto operator<=>(const ExpertId&) const = default;
};
std::string to_string(ExpertId id);

class ExpertOwner {
 public:
  // The job's model, optimizer and weight decay: those of the workers' update.
  explicit ExpertOwner(const TrainJobConfig& cfg);
  ExpertOwner(const ExpertOwner&) = delete;  // the optimizers refer to table_
  ExpertOwner& operator=(const ExpertOwner&) = delete;

  // Floats of an expert's weights (3·I·C: gate, up, down, as a slot holds them) and of its
  // whole state run (the weights, then each of its three tensors' optimizer state).
  int64_t weight_floats() const { return 3 * part_; }
  int64_t state_floats() const { return state_floats_; }

  // Owns `id` from here on with weights w and a fresh optimizer state (a job's start).
  // std::invalid_argument on an expert outside the model, one owned already or a wrong size;
  // std::logic_error between begin_step and apply (experts move between steps, as release).
  void own(ExpertId id, std::span<const float> w);
  // Owns `id` with a state run another owner gave away (state_run): a migration.
  void own_state(ExpertId id, std::span<const float> run);
  // The expert's weights and optimizer state as one run (weights first), and giving it up.
  std::vector<float> state_run(ExpertId id) const;
  void release(ExpertId id);
  bool owns(ExpertId id) const { return experts_.count(id) > 0; }
  std::vector<ExpertId> owned() const;
  std::span<const float> weights(ExpertId id) const;

  // A step of `micro_batches` micro-batches begins: the last step's leaves are forgotten.
  void begin_step(int64_t step, int64_t micro_batches);
  int64_t step() const { return step_; }  // the last begun (-1: none yet)
  bool in_step() const { return micro_batches_ > 0; }
  int64_t micro_batches() const { return micro_batches_; }
  // Gives the step in flight up (a view change aborted it): its leaves go, nothing changes.
  void abandon_step();
  // Micro-batch mb routed rows to `routed` among this owner's experts (the others get a leaf
  // of zeros). "" or what is wrong (nothing changed then).
  std::string note_rows(int64_t mb, std::span<const ExpertId> routed);
  // A replica's weight gradient of `id` in micro-batch mb (weight_floats(), from zero).
  // "" or what is wrong (nothing changed then).
  std::string add_grad(int64_t mb, ExpertId id, std::vector<float> g);
  // Every micro-batch's note and every gradient the notes announce are in.
  bool complete() const;
  // What complete() still waits for, for a timeout's message ("" when complete).
  std::string missing() const;

  // The step's clipping parts: every owned expert's three tensors' grad_norm_parts, keyed by
  // the first one's table offset. std::logic_error before complete().
  std::vector<NormRun> norm_runs() const;
  // The update of every owned expert with the step's reduced gradient (Optimizer::update:
  // learning rate lr, gradients times grad_scale, 0-based step). std::logic_error before
  // complete().
  void apply(double lr, double grad_scale);

 private:
  struct Owned {
    FlatRange range;             // its three tensors in the table
    std::vector<float> weights;  // 3·I·C
    std::optional<Optimizer> opt;
    std::unique_ptr<TreeStream> tree;         // the step's fold over micro-batch ids
    std::vector<std::vector<float>> buffers;  // by micro-batch id: its leaf, then its fold
    std::vector<char> arrived;                // by micro-batch id
  };
  Owned& make(ExpertId id);
  const Owned& at(ExpertId id) const;
  void arrive(Owned& o, int64_t mb, std::vector<float> g);
  const std::vector<float>& reduced(const Owned& o) const;
  std::vector<size_t> tensors_of(const Owned& o) const;

  TrainJobConfig cfg_;
  ParamTable table_;
  int64_t part_ = 0;                // moe_inter · d_model
  std::vector<MoeLayout> layouts_;  // per MoE layer
  int64_t state_floats_ = 0;        // an expert's state run
  std::map<ExpertId, Owned> experts_;
  int64_t step_ = -1, micro_batches_ = 0;
  std::vector<char> noted_;  // by micro-batch id
};

}  // namespace troupe::model
