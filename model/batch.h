#pragma once
// A batch of rows of T tokens: the unit the model consumes. A micro-batch is a Batch too.
#include <cstdint>
#include <vector>

namespace troupe::model {

constexpr int32_t kBos = 256;
constexpr int32_t kEos = 257;
constexpr int32_t kNoTarget = -1;  // a position that contributes no loss

struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> inputs;   // (rows, seq_len) token ids in [0, V)
  std::vector<int32_t> targets;  // (rows, seq_len) next token, or kNoTarget

  // Rows [first, first+count) as a Batch of their own.
  Batch slice(int64_t first, int64_t count) const {
    Batch b;
    b.rows = count;
    b.seq_len = seq_len;
    b.inputs.assign(inputs.begin() + first * seq_len, inputs.begin() + (first + count) * seq_len);
    b.targets.assign(targets.begin() + first * seq_len,
                     targets.begin() + (first + count) * seq_len);
    return b;
  }
};

}  // namespace troupe::model
