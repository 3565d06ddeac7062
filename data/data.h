#pragma once
// The fortunes corpus and the token streams cut from it (SPEC-model.md §1).
//
// Tokens: bytes 0–255, BOS = 256, EOS = 257. A document is BOS bytes… EOS.
// Shuffle convention (the PyTorch reference follows it): the training documents of epoch e
// are the file-order list permuted by Fisher–Yates with rng = CounterRng(seed,
// purpose_of("data.shuffle"), e):
//   order = [0, 1, …, n−1];  for i = n−1 down to 1: j = rng.bits(i) % (i+1); swap(order[i],
//   order[j])
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/data_config.h"
#include "model/batch.h"

namespace troupe::model {

struct Corpus {
  std::vector<std::string> train, val;  // document texts (bytes), in file order
};

// The corpus files of `dir`: regular files (not symlinks) whose name has no '.', sorted by
// name. Throws std::runtime_error naming the directory if it is missing or holds none.
std::vector<std::string> fortune_files(const std::string& dir);

// Splits one file's bytes into documents on lines holding only '%' ("%\n", or "%" at the
// end); a document keeps its lines' trailing '\n'. Empty documents are skipped.
std::vector<std::string> split_fortunes(const std::string& bytes);

// Every document of fortune_files(dir), in file order; a document goes to validation iff
// XXH64(text, 0) % val_modulus == 0. Throws std::runtime_error naming the dir or file.
Corpus load_fortunes(const std::string& dir, int64_t val_modulus);

// The corpus data.source names: load_fortunes(corpus_dir, val_modulus), or
// arithmetic_corpus(d, seed) (data/arithmetic.h). Throws as they do.
Corpus load_corpus(const DataConfig& d, uint64_t seed);

// Pretraining stream: documents packed back to back, BOS doc EOS BOS doc EOS …, cut into
// rows of T. Row r: inputs = stream[r·T, r·T+T), targets = stream[r·T+1, r·T+T+1) with a
// BOS target replaced by kNoTarget. The stream is infinite: epoch e+1 (a new shuffle when
// `shuffle`, else the same order) follows epoch e. Copies share a cache of epoch layouts;
// every method is const and thread-safe.
class PackedStream {
 public:
  // docs must outlive the stream and be non-empty; seq_len > 0. Throws std::invalid_argument.
  PackedStream(const std::vector<std::string>* docs, uint64_t seed, bool shuffle, int64_t seq_len);

  // Rows [first_row, first_row+count) of the stream: a pure function of the arguments and
  // the constructor's, O(count·T + log n) once the epochs touched are cached.
  Batch rows(int64_t first_row, int64_t count) const;

  int64_t seq_len() const { return seq_len_; }
  int64_t epoch_tokens() const { return epoch_tokens_; }  // Σ (len + 2) over the documents
  // The document order of an epoch (indices into docs).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  struct Layout;  // one epoch: the order and the cumulative token offsets
  struct Cache;
  std::shared_ptr<const Layout> layout(int64_t epoch) const;
  void fill(int64_t position, int64_t count, int32_t* out) const;  // stream[position, +count)

  const std::vector<std::string>* docs_;
  uint64_t seed_;
  bool shuffle_;
  int64_t seq_len_;
  int64_t epoch_tokens_ = 0;
  std::shared_ptr<Cache> cache_;
};

// Rows [step·B, step·B + B) of the stream: the global batch of optimizer step `step`.
Batch train_batch(const PackedStream& stream, int64_t step, int64_t batch_size);

// One text for evaluation: stream = [BOS] + bytes + [EOS]; row i has inputs
// stream[i·T, i·T+T) and targets stream[i·T+1, i·T+T+1); the last row is padded with
// inputs kEos and targets kNoTarget. Exactly len(bytes)+1 valid targets (BOS never is one).
Batch eval_rows_from_text(const std::string& bytes, int64_t seq_len);

}  // namespace troupe::model
