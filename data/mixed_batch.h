#pragma once
// Mixed-length mode's global batch (issue 17; SPEC-model.md §1): the planner's plan of a
// step (data/mixed_plan.h) laid out as rows the model consumes, one row per micro-batch.
//
// Row i holds micro-batch i's documents end to end, each with a document id of its own
// (0, 1, … in plan order; Batch.doc, model/batch.h), then padding up to the budget. A planned
// document of n tokens is the first n of [BOS text EOS] (n < len + 2 when truncated at
// max_doc_tokens); its inputs are those n tokens and position k's target is token k + 1 of
// the document, none for its last token (a truncated document does not predict the byte it
// lost: targets never leave the document). Padding: inputs kEos, targets kNoTarget, one more
// document id. The batch is a pure function of (documents, seed, shuffle, plan config,
// step): every process builds the same micro-batch for the same id.
#include <cstdint>
#include <string>
#include <vector>

#include "data/mixed_plan.h"
#include "model/batch.h"

namespace troupe::model {

// The rows of a plan: plan.micro_batches.size() rows of plan.budget tokens.
Batch mixed_rows(const StepPlan& plan, const std::vector<std::string>& docs);

// The global batch of optimizer step `step`: mixed_rows(planner.step(step), docs), docs the
// planner's documents.
Batch mixed_batch(const MixedPlanner& planner, const std::vector<std::string>& docs, int64_t step);

}  // namespace troupe::model
