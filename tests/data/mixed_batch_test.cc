// Mixed mode's rows (data/mixed_batch.h): a plan laid out one row per micro-batch, documents
// whole or truncated, targets inside their document, padding with no target, document ids in
// runs, and the same batch from any planner built from the same inputs.
#include "data/mixed_batch.h"

#include <gtest/gtest.h>

namespace troupe::model {
namespace {

TEST(MixedBatch, RowsFollowThePlan) {
  const std::vector<std::string> docs = {"ab", "Hello", "xyz"};
  StepPlan plan;
  plan.budget = 8;
  plan.micro_batches.resize(2);
  plan.micro_batches[0].docs = {{0, 4}, {2, 3}};  // "ab" whole (4), "xyz" truncated to 3
  plan.micro_batches[0].tokens = 7;
  plan.micro_batches[1].docs = {{1, 7}};  // "Hello" whole
  plan.micro_batches[1].tokens = 7;
  const Batch b = mixed_rows(plan, docs);
  ASSERT_EQ(b.rows, 2);
  ASSERT_EQ(b.seq_len, 8);
  const int32_t X = kNoTarget;
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{kBos, 'a', 'b', kEos, kBos, 'x', 'y', kEos,  //
                                            kBos, 'H', 'e', 'l', 'l', 'o', kEos, kEos}));
  // The last token of a document has no target (a truncated one does not predict the byte
  // it lost); padding has none.
  EXPECT_EQ(b.targets, (std::vector<int32_t>{'a', 'b', kEos, X, 'x', 'y', X, X,  //
                                             'H', 'e', 'l', 'l', 'o', kEos, X, X}));
  EXPECT_EQ(b.doc, (std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1, 2,  //
                                         0, 0, 0, 0, 0, 0, 0, 1}));
}

TEST(MixedBatch, PureFunctionOfDocumentsSeedAndStep) {
  std::vector<std::string> docs;
  for (int i = 0; i < 60; ++i) docs.push_back(std::string(size_t(3 + (i * 7) % 40), 'a' + i % 26));
  MixedPlanConfig c;
  c.max_doc_tokens = 32, c.tokens_per_microbatch = 64, c.micro_batches_per_step = 4;
  const MixedPlanner p1(&docs, 9, true, c), p2(&docs, 9, true, c);
  p1.step(3);  // a planner that has seen later steps gives the same earlier ones
  for (int64_t s : {2, 0, 1}) {
    const Batch a = mixed_batch(p1, docs, s), b = mixed_batch(p2, docs, s);
    EXPECT_EQ(a.inputs, b.inputs) << "step " << s;
    EXPECT_EQ(a.targets, b.targets);
    EXPECT_EQ(a.doc, b.doc);
    ASSERT_EQ(a.rows, 4);
    ASSERT_EQ(a.seq_len, 64);
    int64_t valid = 0, tokens = 0;
    for (size_t i = 0; i < a.inputs.size(); ++i) {
      valid += a.targets[i] >= 0;
      tokens += a.inputs[i] == kBos;
    }
    const StepPlan plan = p1.step(s);
    int64_t docs_in = 0;
    for (const auto& m : plan.micro_batches) docs_in += int64_t(m.docs.size());
    EXPECT_EQ(tokens, docs_in);                 // one BOS per document
    EXPECT_EQ(valid, plan.tokens() - docs_in);  // n − 1 targets per document of n tokens
  }
}

}  // namespace
}  // namespace troupe::model
