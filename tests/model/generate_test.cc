// Generation (model/generate.h): the KV-cache decoder against the model's own full forward
// ("recompute") on the tiny config with random weights and Engram on — the same tokens and,
// at every step, the same logits to 1e-5 relative; the sampler's keying and ties; the
// decoder's limits; and the checks `troupe generate` makes of its options.
#include "model/generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "model/batch.h"
#include "model/rng.h"

namespace troupe::model {
namespace {

constexpr double kLogitsRelMax = 1e-5;  // the bar: max |a−b| / max(max |b|, floor)
constexpr double kLogitsFloor = 1e-6;   // the floor of that denominator

// A model with random weights: the tiny config unless changed, Engram's conv weights (zero
// at init) drawn too, so that the conv's kept history matters.
struct RandomModel {
  ModelConfig cfg;
  std::unique_ptr<ParamTable> table;
  std::vector<float> params;
  std::unique_ptr<InProcessEngramStore<float>> store;
  uint64_t seed = 1234;

  explicit RandomModel(ModelConfig c = ModelConfig{}) : cfg(std::move(c)) {
    table = std::make_unique<ParamTable>(cfg);
    params.resize(static_cast<size_t>(table->total()));
    init_params(*table, seed, params.data());
    const CounterRng rng(seed, purpose_of("generate_test.conv"));
    for (const ParamInfo& p : table->all())
      if (p.name.ends_with(".engram.conv"))
        for (int64_t i = 0; i < p.numel; ++i)
          params[size_t(p.offset + i)] = float(0.3 * rng.normal(uint64_t(p.offset + i)));
    if (!cfg.engram_layers.empty())
      store = std::make_unique<InProcessEngramStore<float>>(cfg, seed);
  }
  const EngramStore<float>* engram() const { return store.get(); }
};

double rel_diff(const float* a, const float* b, size_t n) {
  double diff = 0, scale = kLogitsFloor;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / scale;
}

std::vector<int32_t> tokens_of(const char* text) {
  return prompt_tokens(text);
}

TEST(Generate, PrefillLogitsMatchTheFullForwardAtEveryPosition) {
  RandomModel m;
  const std::vector<int32_t> prompt = tokens_of("Hello, world! The quick brown fox jumps.");
  const int64_t n = int64_t(prompt.size()), V = m.cfg.vocab_size;
  FullForward<float> full(m.cfg, *m.table, m.seed);
  const std::vector<float> want = full.logits(m.params.data(), m.engram(), prompt);
  ASSERT_EQ(int64_t(want.size()), n * V);
  Decoder<float> dec(m.cfg, *m.table, m.seed, m.cfg.seq_len);
  const std::vector<float> prefill = dec.append(m.params.data(), m.engram(), prompt);
  EXPECT_LE(rel_diff(prefill.data(), want.data(), want.size()), kLogitsRelMax);
  // The same positions one token per call: each row as the prefill's.
  dec.reset();
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<float>& row =
        dec.append(m.params.data(), m.engram(), std::span(prompt).subspan(size_t(t), 1));
    EXPECT_LE(rel_diff(row.data(), want.data() + t * V, size_t(V)), kLogitsRelMax) << "pos " << t;
  }
  EXPECT_EQ(dec.len(), n);
}

// Greedy or sampled, the cache and the recompute give the same tokens; the logits each
// token was drawn from agree to kLogitsRelMax. Returns the cache's tokens.
std::vector<int32_t> expect_same_both_ways(const RandomModel& m, const char* text, int64_t max_new,
                                           const Sampler& sampler) {
  const std::vector<int32_t> prompt = tokens_of(text);
  const GenerateOptions opts{max_new, false};
  Decoder<float> dec(m.cfg, *m.table, m.seed, m.cfg.seq_len);
  FullForward<float> full(m.cfg, *m.table, m.seed);
  std::vector<std::vector<float>> by_cache, by_recompute;
  const std::vector<int32_t> a =
      generate<float>(cached_next(dec, m.params.data(), m.engram()), m.cfg.vocab_size, prompt, opts,
                      sampler, &by_cache);
  const std::vector<int32_t> b =
      generate<float>(recompute_next(full, m.params.data(), m.engram()), m.cfg.vocab_size, prompt,
                      opts, sampler, &by_recompute);
  EXPECT_EQ(a, b);
  EXPECT_EQ(int64_t(a.size()), max_new);
  EXPECT_EQ(dec.len(), int64_t(prompt.size()) + max_new - 1);
  double worst = 0;
  for (size_t s = 0; s < std::min(by_cache.size(), by_recompute.size()); ++s) {
    const double d = rel_diff(by_cache[s].data(), by_recompute[s].data(), by_cache[s].size());
    EXPECT_LE(d, kLogitsRelMax) << "decode step " << s;
    worst = std::max(worst, d);
  }
  std::printf("max relative logits difference over %zu steps: %.3g\n", by_cache.size(), worst);
  return a;
}

TEST(Generate, GreedyKvCacheGivesTheRecomputeTokensAndLogits) {
  RandomModel m;
  ASSERT_FALSE(m.cfg.engram_layers.empty());  // tiny has Engram at layer 1
  const std::vector<int32_t> out = expect_same_both_ways(m, "Fortune favours the", 48, Sampler(0));
  // Random weights still give more than one distinct token: the check is not vacuous.
  EXPECT_GT(std::count_if(out.begin(), out.end(), [&](int32_t t) { return t != out[0]; }), 0);
}

TEST(Generate, SampledKvCacheGivesTheRecomputeTokensAndIsDeterministic) {
  RandomModel m;
  const std::vector<int32_t> a = expect_same_both_ways(m, "A day", 40, Sampler(1.0, 7));
  Decoder<float> dec(m.cfg, *m.table, m.seed, m.cfg.seq_len);
  const GenerateOptions opts{40, false};
  auto sample = [&](uint64_t seed) {
    return generate<float>(cached_next(dec, m.params.data(), m.engram()), m.cfg.vocab_size,
                           tokens_of("A day"), opts, Sampler(1.0, seed));
  };
  EXPECT_EQ(sample(7), a);  // the same seed, the same tokens
  EXPECT_NE(sample(8), a);  // another seed, other tokens (40 draws from a wide distribution)
}

TEST(Generate, PlainResidualDenseFfnWithoutEngramAlsoMatches) {
  ModelConfig c;
  c.residual = Residual::plain;
  c.ffn = Ffn::dense;
  c.engram_layers = {};
  RandomModel m(c);
  expect_same_both_ways(m, "x", 24, Sampler(0));
}

TEST(Generate, Fp8ConfigRunsTheFp32PathOnTheSameWeights) {
  RandomModel m;
  ModelConfig fp8 = m.cfg;
  fp8.fp8 = true;
  const std::vector<int32_t> prompt = tokens_of("fp8");
  Decoder<float> plain(m.cfg, *m.table, m.seed, 16), quant(fp8, *m.table, m.seed, 16);
  EXPECT_EQ(plain.append(m.params.data(), m.engram(), prompt),
            quant.append(m.params.data(), m.engram(), prompt));
}

TEST(Decoder, RefusesBeyondCapacityABadTokenAndAMissingStore) {
  RandomModel m;
  Decoder<float> dec(m.cfg, *m.table, m.seed, 4);
  const std::vector<int32_t> five = tokens_of("abcd");
  EXPECT_THROW(dec.append(m.params.data(), m.engram(), five), std::length_error);
  EXPECT_EQ(dec.len(), 0);  // refused before anything changed
  const std::vector<int32_t> bad = {kBos, int32_t(m.cfg.vocab_size)};
  EXPECT_THROW(dec.append(m.params.data(), m.engram(), bad), std::invalid_argument);
  EXPECT_THROW(dec.append(m.params.data(), nullptr, tokens_of("a")), std::invalid_argument);
  EXPECT_THROW(dec.append(m.params.data(), m.engram(), std::span<const int32_t>{}),
               std::invalid_argument);
}

TEST(Sampler, GreedyTiesGoToTheLowestId) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  EXPECT_EQ(Sampler(0).pick(logits.data(), 5, 0), 1);
  EXPECT_EQ(Sampler(0, 99).pick(logits.data(), 5, 17), 1);  // seed and position play no part
}

TEST(Sampler, DrawsAreKeyedBySeedStepPromptSampleAndPosition) {
  std::vector<double> flat(258, 0.0);  // uniform: the draw is the key's uniform alone
  auto draw = [&](Sampler s, int64_t pos) { return s.pick(flat.data(), 258, pos); };
  const int32_t base = draw(Sampler(1.0, 5, 0, 0, 0), 3);
  EXPECT_EQ(draw(Sampler(1.0, 5, 0, 0, 0), 3), base);
  int differ = 0;  // each key part changes the draw (1/258 chance each to collide)
  differ += draw(Sampler(1.0, 6, 0, 0, 0), 3) != base;
  differ += draw(Sampler(1.0, 5, 1, 0, 0), 3) != base;
  differ += draw(Sampler(1.0, 5, 0, 1, 0), 3) != base;
  differ += draw(Sampler(1.0, 5, 0, 0, 1), 3) != base;
  differ += draw(Sampler(1.0, 5, 0, 0, 0), 4) != base;
  EXPECT_GE(differ, 4);
  // A very low temperature is greedy in effect; a very peaked distribution too.
  std::vector<double> peaked(258, 0.0);
  peaked[42] = 100.0;
  EXPECT_EQ(Sampler(1.0, 5).pick(peaked.data(), 258, 9), 42);
  EXPECT_THROW(Sampler(-0.5), std::invalid_argument);
  EXPECT_THROW(Sampler(std::numeric_limits<double>::infinity()), std::invalid_argument);
  EXPECT_THROW(Sampler(std::nan("")), std::invalid_argument);
}

TEST(GenerateRequest, RefusesBadOptionsByName) {
  const ModelConfig cfg;  // seq_len 128
  auto error = [&](GenerateRequest r) { return check_generate_request(cfg, r); };
  EXPECT_EQ(error({"Hello", 64, 1.0}), "");
  EXPECT_EQ(error({std::string(127, 'a'), 1, 0.0}), "");  // BOS + 127 bytes: 128 positions
  EXPECT_EQ(request_positions({"abc", 5, 1.0}), 8);
  const auto has = [](const std::string& s, const char* what) {
    return s.find(what) != std::string::npos;
  };
  EXPECT_TRUE(has(error({"", 8, 1.0}), "--prompt is empty"));
  EXPECT_TRUE(has(error({"a", -3, 1.0}), "--max-new must be at least 1"));
  EXPECT_TRUE(has(error({"a", 0, 1.0}), "--max-new must be at least 1"));
  EXPECT_TRUE(has(error({"a", 8, -1.0}), "--temperature must be a finite number >= 0"));
  EXPECT_TRUE(has(error({"a", 8, std::nan("")}), "--temperature"));
  const std::string long_run = error({std::string(100, 'a'), 64, 1.0});
  EXPECT_TRUE(has(long_run, "seq_len 128") && has(long_run, "use --max-new 28")) << long_run;
  EXPECT_TRUE(has(error({std::string(128, 'a'), 1, 1.0}), "shorten the prompt"));
  ModelConfig small_vocab;
  small_vocab.vocab_size = 200;
  EXPECT_TRUE(has(check_generate_request(small_vocab, {"a", 1, 1.0}), "vocab_size 200"));
  EXPECT_EQ(check_generate_options({"", 1, 1.0}), error({"", 1, 1.0}));
}

}  // namespace
}  // namespace troupe::model
