// The arithmetic task (data/arithmetic.h): problems are pure functions of their key and
// within the configured range, answers and rewards are exact, the corpus splits every copy
// of a problem to one side, and data.source = "arithmetic" feeds the ordinary packing.
#include "data/arithmetic.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "data/data.h"

namespace troupe::model {
namespace {

std::vector<int32_t> bytes_then_eos(const std::string& s) {
  std::vector<int32_t> t(s.begin(), s.end());
  t.push_back(kEos);
  return t;
}

TEST(Arithmetic, ProblemsArePureAndInRange) {
  DataConfig d;
  d.arith_max_operand = 12;
  std::set<char> ops;
  std::set<std::string> prompts;
  for (uint64_t i = 0; i < 400; ++i) {
    const ArithmeticProblem p = arithmetic_problem(d, 7, kArithmeticCorpus, 3, i);
    EXPECT_EQ(p.prompt, arithmetic_problem(d, 7, kArithmeticCorpus, 3, i).prompt);
    ASSERT_GE(p.a, 0);
    ASSERT_LE(p.a, 12);
    ASSERT_GE(p.b, 0);
    ASSERT_LE(p.b, 12);
    EXPECT_EQ(p.prompt, std::to_string(p.a) + p.op + std::to_string(p.b) + "=");
    EXPECT_EQ(p.answer, std::to_string(p.op == '+' ? p.a + p.b : p.a * p.b));
    ops.insert(p.op);
    prompts.insert(p.prompt);
  }
  EXPECT_EQ(ops, (std::set<char>{'+', '*'}));
  EXPECT_GT(prompts.size(), 150u);  // 338 possible problems: draws spread over them
  // Every part of the key matters.
  auto differs = [&](uint64_t seed, uint64_t purpose, uint64_t step) {
    int same = 0;
    for (uint64_t i = 0; i < 20; ++i)
      same += arithmetic_problem(d, seed, purpose, step, i).prompt ==
              arithmetic_problem(d, 7, kArithmeticCorpus, 3, i).prompt;
    return same < 10;
  };
  EXPECT_TRUE(differs(8, kArithmeticCorpus, 3));
  EXPECT_TRUE(differs(7, purpose_of("grpo.prompt"), 3));
  EXPECT_TRUE(differs(7, kArithmeticCorpus, 4));
  d.arith_ops = "*";
  EXPECT_EQ(arithmetic_problem(d, 7, kArithmeticCorpus, 3, 5).op, '*');
}

TEST(Arithmetic, RewardIsExactAnswerThenEos) {
  ArithmeticProblem p;
  p.answer = "42";
  EXPECT_EQ(arithmetic_reward(p, bytes_then_eos("42")), 1.0);
  EXPECT_EQ(arithmetic_reward(p, bytes_then_eos("43")), 0.0);
  EXPECT_EQ(arithmetic_reward(p, bytes_then_eos("420")), 0.0);
  EXPECT_EQ(arithmetic_reward(p, bytes_then_eos("4")), 0.0);
  EXPECT_EQ(arithmetic_reward(p, std::vector<int32_t>{'4', '2'}), 0.0);  // no EOS
  EXPECT_EQ(arithmetic_reward(p, std::vector<int32_t>{'4', '2', kEos, kEos}), 0.0);
  EXPECT_EQ(arithmetic_reward(p, std::vector<int32_t>{}), 0.0);
}

TEST(Arithmetic, CorpusSplitsEachProblemToOneSide) {
  DataConfig d;
  d.source = DataSource::arithmetic;
  d.arith_documents = 3000;
  const Corpus c = load_corpus(d, 11);
  EXPECT_EQ(int64_t(c.train.size() + c.val.size()), 3000);
  EXPECT_FALSE(c.val.empty());
  const std::set<std::string> val(c.val.begin(), c.val.end());
  for (const std::string& doc : c.train) ASSERT_EQ(val.count(doc), 0u) << doc;
  for (const std::string& doc : c.train) {  // "a+b=c", c right
    const size_t op = doc.find_first_of("+*"), eq = doc.find('=');
    ASSERT_NE(eq, std::string::npos) << doc;
    const int64_t a = std::stoll(doc.substr(0, op)), b = std::stoll(doc.substr(op + 1, eq - op));
    EXPECT_EQ(std::stoll(doc.substr(eq + 1)), doc[op] == '+' ? a + b : a * b) << doc;
  }
  // The ordinary packing takes it: rows of BOS text EOS documents.
  const PackedStream stream(&c.train, 11, true, 16);
  const Batch b = stream.rows(0, 2);
  EXPECT_EQ(b.inputs[0], kBos);
  EXPECT_EQ(b.targets[0], c.train[size_t(stream.epoch_order(0)[0])][0]);
}

TEST(Arithmetic, BadKeysAreNamed) {
  DataConfig d;
  d.arith_ops = "+-";
  EXPECT_NE(check_arithmetic(d).find("data.arith_ops"), std::string::npos);
  EXPECT_THROW(arithmetic_problem(d, 1, kArithmeticCorpus, 0, 0), std::invalid_argument);
  d = DataConfig{}, d.arith_max_operand = -1;
  EXPECT_NE(check_arithmetic(d).find("data.arith_max_operand"), std::string::npos);
  d = DataConfig{}, d.arith_documents = 0;
  EXPECT_NE(check_arithmetic(d).find("data.arith_documents"), std::string::npos);
  d = DataConfig{}, d.arith_max_operand = 0, d.arith_ops = "+";  // one problem: "0+0=0"
  try {
    arithmetic_corpus(d, 1);
    ADD_FAILURE() << "a one-problem corpus has an empty split";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("split is empty"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace troupe::model
