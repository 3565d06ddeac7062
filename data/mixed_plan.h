#pragma once
// Mixed-length mode's planner (issue 17; SPEC-model.md §1): documents kept whole (truncated at
// max_doc_tokens), packed into the micro-batches of each optimizer step under a token budget
// (tokens_per_microbatch), so that a micro-batch is one row of documents laid end to end,
// each attending only to itself (document masking, positions restarting per document). The
// planner only says which documents go where; the model's document masking and the
// scheduler that hands these micro-batches to workers are not built yet.
//
// The plan of step s is a pure function of the documents, the seed and s. Each step fills
// micro_batches_per_step bins of `budget` tokens: first the documents the previous step could
// not place (in stream order: none waits more than one step), then fresh documents of the
// training stream (the epoch orders of data.h's shuffle convention) until they hold
// `window_percent` % more tokens than the bins do, placed longest first, each into the bin
// with the least room that fits it (best-fit decreasing); what does not fit waits for the
// next step. Padding waste = 1 − tokens placed / (bins · budget).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/data.h"

namespace troupe::model {

struct MixedPlanConfig {
  int64_t max_doc_tokens = 128;         // a document's tokens (BOS text EOS) at most: T_max
  int64_t tokens_per_microbatch = 256;  // the budget of one micro-batch
  int64_t micro_batches_per_step = 8;
  int64_t window_percent = 15;  // fresh documents beyond the bins' room, in %
};

struct PlannedDoc {
  int64_t doc = 0;     // index into the documents
  int64_t tokens = 0;  // min(len + 2, max_doc_tokens)
};

struct MicroBatchPlan {
  std::vector<PlannedDoc> docs;  // laid end to end in this order
  int64_t tokens = 0;            // Σ docs' tokens, ≤ the budget
};

struct StepPlan {
  std::vector<MicroBatchPlan> micro_batches;
  int64_t budget = 0;
  int64_t tokens() const;
  double padding_waste() const;  // 1 − tokens / (micro-batches · budget)
};

class MixedPlanner {
 public:
  // docs must outlive the planner and be non-empty. Throws std::invalid_argument naming the
  // key when a size is not positive or max_doc_tokens exceeds the budget.
  MixedPlanner(const std::vector<std::string>* docs, uint64_t seed, bool shuffle,
               const MixedPlanConfig& cfg);

  // The plan of step `step` (>= 0). Thread-safe; the states of the steps before it are
  // computed once and kept (a few hundred bytes a step).
  StepPlan step(int64_t step) const;

  // What the same documents cost padded one per row of max_doc_tokens (the fixed-length
  // alternative): 1 − Σ tokens / (documents · max_doc_tokens) over the documents of `steps`
  // steps' plans.
  double fixed_length_waste(int64_t steps) const;

 private:
  struct State {                   // before a step
    int64_t next = 0;              // position in the training stream (epoch · n + k)
    std::vector<int64_t> carried;  // positions the step before could not place
  };
  StepPlan plan(const State& before, State* after) const;
  PlannedDoc at(int64_t position) const;

  const std::vector<std::string>* docs_;
  PackedStream orders_;  // the shuffle convention (its rows are not used)
  MixedPlanConfig cfg_;
  mutable std::mutex mutex_;
  mutable std::vector<State> states_;  // states_[s]: before step s
  mutable std::vector<std::pair<int64_t, std::vector<int64_t>>> epochs_;  // cached orders
};

}  // namespace troupe::model
