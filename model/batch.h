#pragma once
// A batch of rows of T tokens: the unit the model consumes. A micro-batch is a Batch too.
//
// Document structure (mixed-length mode, SPEC-model.md §1): `doc` is empty (every row is one
// document: positions 0…T−1, today's behaviour bit for bit) or holds (rows, seq_len) document
// ids, each id one contiguous run of its row (ids are compared only within a row). With it,
// a token's position is its offset from the first token of its run (RoPE restarts at 0),
// attention, Engram's n-gram hash and conv, and MTP stay inside the run (model/model.h).
// Padding after the last document is a run of its own whose targets are kNoTarget.
#include <cstdint>
#include <stdexcept>
#include <string>
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
  std::vector<int32_t> doc;      // (rows, seq_len) document ids, or empty: one per row

  // Rows [first, first+count) as a Batch of their own.
  Batch slice(int64_t first, int64_t count) const {
    Batch b;
    b.rows = count;
    b.seq_len = seq_len;
    b.inputs.assign(inputs.begin() + first * seq_len, inputs.begin() + (first + count) * seq_len);
    b.targets.assign(targets.begin() + first * seq_len,
                     targets.begin() + (first + count) * seq_len);
    if (!doc.empty())
      b.doc.assign(doc.begin() + first * seq_len, doc.begin() + (first + count) * seq_len);
    return b;
  }
};

// doc (R,T) or null -> first (R,T): the offset in its row of the first token of each token's
// document (all 0 without doc). Throws std::invalid_argument when a row's document id comes
// back after another one (documents must be contiguous runs).
inline void doc_first_positions(const int32_t* doc, int64_t R, int64_t T, int32_t* first) {
  for (int64_t r = 0; r < R; ++r) {
    int64_t start = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = r * T + t;
      if (doc && t > 0 && doc[n] != doc[n - 1]) {
        for (int64_t u = r * T; u < n - 1; ++u)
          if (doc[u] == doc[n])
            throw std::invalid_argument("Batch.doc: document " + std::to_string(doc[n]) +
                                        " of row " + std::to_string(r) +
                                        " is not one contiguous run");
        start = t;
      }
      first[n] = static_cast<int32_t>(start);
    }
  }
}

}  // namespace troupe::model
