#include "data/mixed_batch.h"

#include <stdexcept>

namespace troupe::model {

namespace {

// One document's n tokens from offset `at` of row `row`: inputs, targets, document id.
void place(const std::string& text, int64_t n, int32_t id, int64_t at, Batch& b) {
  auto token = [&](int64_t k) -> int32_t {  // token k of [BOS text EOS]
    if (k == 0) return kBos;
    if (k <= int64_t(text.size())) return int32_t(static_cast<unsigned char>(text[size_t(k - 1)]));
    return kEos;
  };
  for (int64_t k = 0; k < n; ++k) {
    b.inputs[size_t(at + k)] = token(k);
    b.targets[size_t(at + k)] = k + 1 < n ? token(k + 1) : kNoTarget;
    b.doc[size_t(at + k)] = id;
  }
}

}  // namespace

Batch mixed_rows(const StepPlan& plan, const std::vector<std::string>& docs) {
  Batch b;
  b.rows = int64_t(plan.micro_batches.size());
  b.seq_len = plan.budget;
  const auto N = size_t(b.rows * b.seq_len);
  b.inputs.assign(N, kEos);
  b.targets.assign(N, kNoTarget);
  b.doc.assign(N, 0);
  for (int64_t r = 0; r < b.rows; ++r) {
    const MicroBatchPlan& mb = plan.micro_batches[size_t(r)];
    if (mb.tokens > plan.budget)
      throw std::logic_error("mixed_rows: a micro-batch holds more tokens than the budget");
    int64_t at = r * b.seq_len;
    int32_t id = 0;
    for (const PlannedDoc& d : mb.docs) {
      place(docs.at(size_t(d.doc)), d.tokens, id++, at, b);
      at += d.tokens;
    }
    for (; at < (r + 1) * b.seq_len; ++at) b.doc[size_t(at)] = id;  // padding: one more id
  }
  return b;
}

Batch mixed_batch(const MixedPlanner& planner, const std::vector<std::string>& docs, int64_t step) {
  return mixed_rows(planner.step(step), docs);
}

}  // namespace troupe::model
