#pragma once
// The V4-mini model (SPEC-model.md §3): forward and backward over one logical
// micro-batch. A Model owns the activation workspace of one micro-batch; the parameters
// and gradients are flat buffers laid out by the ParamTable. Templated on the scalar:
// float trains, double backs the reference-parity tests.
//
// Document masking (mixed-length mode, SPEC §1): a Batch with document ids (model/batch.h)
// restarts RoPE positions at 0 per document, masks attention (main blocks and the MTP block)
// to the query's document, hashes Engram n-grams with BOS before the document start, and
// keeps Engram's conv from reading before it (zero, as before a row start). MTP position t
// has no target when t+1 is in another document; loss_scale_of counts MTP targets alike.
// Choices where the SPEC is open: MoE routing, expert counts and the balance loss see every
// position of a row, padding included (a row is the "sequence" of §3.3); the MTP block's
// position for t is t's position in its document.
#include <cstdint>
#include <memory>
#include <vector>

#include "model/batch.h"
#include "model/config.h"
#include "model/engram.h"
#include "model/ffn.h"
#include "model/params.h"

namespace troupe::model {

// Global normalisers of the loss (SPEC §3.5): a micro-batch's loss terms are divided by
// the counts of the whole global batch, so that any split gives the same loss.
struct LossScale {
  int64_t ce_targets = 0;   // valid main-head targets in the global batch
  int64_t mtp_targets = 0;  // valid MTP targets in the global batch
  int64_t rows = 0;         // rows in the global batch (balance loss is a mean over rows)
};

// Counts the valid targets of a batch for LossScale.
LossScale loss_scale_of(const Batch& global_batch, bool with_mtp);

template <typename T>
struct LossParts {
  T ce = 0;              // Σ CE / ce_targets
  T mtp = 0;             // mtp_lambda · Σ CE_mtp / mtp_targets
  T bal = 0;             // Σ_rows,layers L_bal_row / rows
  T ce_sum = 0;          // raw Σ CE of the main head (for evaluation)
  int64_t ce_count = 0;  // valid main targets in this micro-batch
  T head = 0;            // a HeadLoss's value, when one replaced CE (else 0)
  // ce + mtp + bal (+ head, which adds an exact 0 on the cross-entropy path: same bits).
  T total() const { return ce + mtp + bal + head; }
};

// A loss on the main head's logits that takes the place of cross-entropy in Model::step
// (GRPO's: model/grpo_loss.h). The model runs its forward as usual, hands the logits of
// every position of the micro-batch to apply(), and backpropagates the dlogits it writes;
// the MoE balance loss stays (it trains the router whatever the head loss), MTP is off and
// Batch.targets are not read.
template <typename T>
class HeadLoss {
 public:
  virtual ~HeadLoss() = default;
  // logits (rows,V), rows = the micro-batch's rows·seq_len -> the loss. With dlogits non-null
  // (rows,V, zero on entry), writes d loss / d logits there.
  virtual T apply(const T* logits, int64_t rows, int64_t V, T* dlogits) = 0;
};

// What a training step keeps from its forward for its backward, in bytes (the memory
// accountant; memory.recompute chooses how much). Buffers as allocated after a step.
struct HeldBytes {
  std::vector<int64_t> block;  // (L) each block's own activations, kept until its backward
  int64_t shared = 0;   // one set every block reuses (recompute "block": all; "attention": MLA's)
  int64_t streams = 0;  // the 2L+1 residual streams between sublayers, always kept
  int64_t rest = 0;     // embeddings, head, logits, the MTP module and backward scratch
  int64_t total() const;
};

template <typename T>
class Model {
 public:
  // seed: the job seed, which keys Engram's hash multipliers (unused without Engram).
  Model(const ModelConfig& cfg, const ParamTable& table, uint64_t seed = 0);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Forward over micro-batch mb; if grads is non-null, backward too, accumulating into
  // grads (the caller zeroes them). with_mtp=false skips the MTP head (evaluation).
  // With Engram layers, `engram` supplies the table rows (required; throws without it) and,
  // with grads, engram_grad receives the micro-batch's sparse table gradient (one entry
  // per table of engram_tables(cfg), replaced, not accumulated; required with grads).
  // head: a loss that replaces the main head's cross-entropy (LossParts::head; ce, ce_sum
  // and ce_count stay 0); with it, with_mtp must be false (std::invalid_argument) and only
  // scale.rows is read (the balance loss's mean).
  LossParts<T> step(const T* params, T* grads, const Batch& mb, const LossScale& scale,
                    bool with_mtp, const EngramStore<T>* engram = nullptr,
                    EngramGrad<T>* engram_grad = nullptr, HeadLoss<T>* head = nullptr);

  // From now on the routed experts of every MoE block are computed by `routed` (not owned;
  // nullptr: here again). Their weights and gradients in params and grads are then neither
  // read nor written: they live where `routed` computes them (model/ffn.h RoutedExperts).
  void set_routed_experts(RoutedExperts<T>* routed);
  // The logical id of the micro-batch the next step() computes, for `routed` (which replica
  // computes its tokens may depend on it). 0 until set.
  void set_micro_batch(int64_t mb);

  // The main head's logits (rows·seq_len, V) of the last step(), at every position (valid
  // target or not): what generation's recompute path reads (model/generate.h).
  const std::vector<T>& logits() const;

  // The bytes this model's workspace holds for a backward, as sized by the last step().
  HeldBytes held_bytes() const;

  // Tokens routed to each expert in the last step(), per layer (empty for dense layers).
  const std::vector<std::vector<int64_t>>& expert_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace troupe::model
