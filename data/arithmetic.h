#pragma once
// The arithmetic task (SPEC-model.md §7): problems "a+b=" / "a*b=" with integer operands,
// drawn from the counter RNG (model/rng.h), their answers, the GRPO reward, and the corpus
// of solved problems that data.source = "arithmetic" trains on.
//
// Draw convention: problem `index` under rng = CounterRng(seed, purpose, step) takes
//   a  = rng.bits(3·index)     mod (arith_max_operand + 1)
//   b  = rng.bits(3·index + 1) mod (arith_max_operand + 1)
//   op = arith_ops[rng.bits(3·index + 2) mod |arith_ops|]
// (the modulo bias is below 2^-40 for any allowed range). The corpus uses purpose
// kArithmeticCorpus and step 0; GRPO's prompts their own purpose and the step.
#include <cstdint>
#include <span>
#include <string>

#include "data/data.h"
#include "data/data_config.h"
#include "model/rng.h"

namespace troupe::model {

inline constexpr uint64_t kArithmeticCorpus = purpose_of("data.arithmetic");

struct ArithmeticProblem {
  int64_t a = 0, b = 0;
  char op = '+';
  std::string prompt;  // "a+b=": the bytes the model is given
  std::string answer;  // the decimal result: the bytes it must produce, then EOS
};

// "" when the arithmetic keys of d are usable (operand range, operator set, document count),
// else one line naming the key and what to do.
std::string check_arithmetic(const DataConfig& d);

// Problem `index` of (seed, purpose, step) as in the draw convention above. Throws
// std::invalid_argument with check_arithmetic's message for unusable keys.
ArithmeticProblem arithmetic_problem(const DataConfig& d, uint64_t seed, uint64_t purpose,
                                     uint64_t step, uint64_t index);

// 1 when completion is exactly the answer's bytes followed by EOS, else 0 (SPEC §7).
double arithmetic_reward(const ArithmeticProblem& p, std::span<const int32_t> completion);

// d.arith_documents problems "a+b=c" (purpose kArithmeticCorpus, step 0, index 0, 1, …) as
// documents, split as fortunes are: validation iff XXH64(text, 0) % val_modulus == 0, so a
// problem's every copy is on one side. Throws std::invalid_argument naming the key when the
// keys are unusable or either split is empty.
Corpus arithmetic_corpus(const DataConfig& d, uint64_t seed);

}  // namespace troupe::model
