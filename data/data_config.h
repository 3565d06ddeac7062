#pragma once
// [data]: which corpus and how it is split and shuffled. Parsed by config/.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace troupe::model {

// data.mode: how documents become rows (SPEC-model.md §1).
enum class DataMode {
  packed,  // documents back to back in rows of seq_len, crossing rows (pretraining)
  mixed,   // documents whole (≤ max_doc_tokens), one row of tokens_per_microbatch per
           // micro-batch, document masking (data/mixed_batch.h)
};
inline constexpr std::array<std::pair<DataMode, std::string_view>, 2> kDataModeNames = {
    {{DataMode::packed, "packed"}, {DataMode::mixed, "mixed"}}};

// data.source: where the documents come from.
enum class DataSource {
  fortunes,    // the Debian fortunes files under corpus_dir (SPEC-model.md §1)
  arithmetic,  // generated "a+b=c" / "a*b=c" problems (data/arithmetic.h; SPEC §7's task)
};
inline constexpr std::array<std::pair<DataSource, std::string_view>, 2> kDataSourceNames = {
    {{DataSource::fortunes, "fortunes"}, {DataSource::arithmetic, "arithmetic"}}};

// The largest arithmetic operand allowed: a·b ≤ 10^12 has 13 digits, so an answer and its EOS
// fit GRPO's 16 new tokens, and int64 never overflows.
inline constexpr int64_t kArithOperandMax = 1000000;

struct DataConfig {  // [data]
  DataSource source = DataSource::fortunes;
  std::string corpus_dir = "/usr/share/games/fortunes";  // path: the fortunes files
  int64_t val_modulus = 20;   // a document is validation when xxh64(text,0) % val_modulus == 0
  int64_t val_rows_max = 64;  // rows of T evaluated at each validation (0 = all)
  bool shuffle = true;        // shuffle training documents, a new order each epoch
  DataMode mode = DataMode::packed;
  // mode = "mixed": tokens of a document at most (BOS text EOS, truncated): T_max; 0 = the
  // model's seq_len.
  int64_t max_doc_tokens = 0;
  // source = "arithmetic": operands uniform in [0, arith_max_operand] (≤ kArithOperandMax),
  // operators uniform over the characters of arith_ops ('+' and '*'), arith_documents
  // problems generated (train and validation together, split as fortunes are).
  int64_t arith_max_operand = 9;
  std::string arith_ops = "+*";
  int64_t arith_documents = 20000;
  bool operator==(const DataConfig&) const = default;
};

}  // namespace troupe::model
