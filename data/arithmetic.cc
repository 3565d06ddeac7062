#include "data/arithmetic.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <stdexcept>

#include "model/batch.h"

namespace troupe::model {

std::string check_arithmetic(const DataConfig& d) {
  if (d.arith_max_operand < 0 || d.arith_max_operand > kArithOperandMax)
    return fmt::format("data.arith_max_operand = {}: must be in [0, {}]", d.arith_max_operand,
                       kArithOperandMax);
  if (d.arith_ops.empty()) return "data.arith_ops is empty: give operators, e.g. \"+*\"";
  for (char c : d.arith_ops)
    if (c != '+' && c != '*')
      return fmt::format("data.arith_ops = \"{}\": '{}' is not an operator; known: '+', '*'",
                         d.arith_ops, c);
  if (d.arith_documents <= 0)
    return fmt::format("data.arith_documents = {}: must be positive", d.arith_documents);
  return "";
}

ArithmeticProblem arithmetic_problem(const DataConfig& d, uint64_t seed, uint64_t purpose,
                                     uint64_t step, uint64_t index) {
  if (const std::string bad = check_arithmetic(d); !bad.empty()) throw std::invalid_argument(bad);
  const CounterRng rng(seed, purpose, step);
  const uint64_t range = uint64_t(d.arith_max_operand) + 1;
  ArithmeticProblem p;
  p.a = int64_t(rng.bits(3 * index) % range);
  p.b = int64_t(rng.bits(3 * index + 1) % range);
  p.op = d.arith_ops[rng.bits(3 * index + 2) % d.arith_ops.size()];
  p.prompt = fmt::format("{}{}{}=", p.a, p.op, p.b);
  p.answer = std::to_string(p.op == '+' ? p.a + p.b : p.a * p.b);
  return p;
}

double arithmetic_reward(const ArithmeticProblem& p, std::span<const int32_t> completion) {
  if (completion.size() != p.answer.size() + 1 || completion.back() != kEos) return 0.0;
  for (size_t i = 0; i < p.answer.size(); ++i)
    if (completion[i] != int32_t(static_cast<uint8_t>(p.answer[i]))) return 0.0;
  return 1.0;
}

Corpus arithmetic_corpus(const DataConfig& d, uint64_t seed) {
  if (const std::string bad = check_arithmetic(d); !bad.empty()) throw std::invalid_argument(bad);
  if (d.val_modulus <= 0)
    throw std::invalid_argument(
        fmt::format("data.val_modulus = {}: must be positive", d.val_modulus));
  Corpus corpus;
  for (int64_t i = 0; i < d.arith_documents; ++i) {
    const ArithmeticProblem p = arithmetic_problem(d, seed, kArithmeticCorpus, 0, uint64_t(i));
    std::string doc = p.prompt + p.answer;
    const uint64_t h = XXH64(doc.data(), doc.size(), 0);
    (h % uint64_t(d.val_modulus) == 0 ? corpus.val : corpus.train).push_back(std::move(doc));
  }
  if (corpus.train.empty() || corpus.val.empty())
    throw std::invalid_argument(fmt::format(
        "data.source = \"arithmetic\": the {} split is empty ({} documents, operands up to {}, "
        "val_modulus {}); raise data.arith_documents or data.arith_max_operand",
        corpus.train.empty() ? "training" : "validation", d.arith_documents, d.arith_max_operand,
        d.val_modulus));
  return corpus;
}

}  // namespace troupe::model
