// The model with a head loss in place of cross-entropy (Model::step's HeadLoss): a head that
// computes the same cross-entropy gives the CE path's bits; the GRPO loss's whole-model
// gradient (documents packed in one row, Engram and mHC on) against FP64 central
// differences; a head loss with MTP on is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "config/config_parse.h"
#include "kernels/cpu/ops.h"
#include "model/grpo_loss.h"
#include "model/model.h"
#include "model/rng.h"
#include "tests/model/small_model.h"

namespace troupe::model {
namespace {

using small_model::small_config;
template <typename T>
std::vector<T> random_params(const ParamTable& table, uint64_t seed) {
  return small_model::random_params<T>(table, seed, "grpo_model_test");
}

// Cross-entropy over the batch's targets as a head loss: the CE path by another door.
template <typename T>
struct CeHead final : HeadLoss<T> {
  const std::vector<int32_t>* targets;
  T inv;
  T apply(const T* logits, int64_t rows, int64_t V, T* dlogits) override {
    return inv * kernels::cross_entropy(logits, targets->data(), rows, V, inv, dlogits);
  }
};

// Sequences "BOS prompt completion" (prompt_len + completion lengths below) packed in one
// row with document ids, then padding. The head's positions are those whose logits predict
// a completion token: the position before it, in the same document.
struct Packed {
  Batch batch;
  std::vector<int64_t> position;
  GrpoTokens<double> tokens;
};

Packed packed_sequences(const std::vector<int64_t>& completion_lens, int64_t prompt_len,
                        int64_t pad) {
  Packed p;
  Batch& b = p.batch;
  b.rows = 1;
  CounterRng rng(5, purpose_of("grpo_model_test.tokens"));
  uint64_t k = 0;
  for (size_t s = 0; s < completion_lens.size(); ++s) {
    std::vector<int32_t> seq{kBos};
    for (int64_t i = 0; i < prompt_len + completion_lens[s]; ++i)
      seq.push_back(int32_t(40 + rng.bits(k++) % 20));
    const int64_t start = int64_t(b.inputs.size());
    // The last token is never an input: nothing is predicted from it.
    for (size_t i = 0; i + 1 < seq.size(); ++i) {
      b.inputs.push_back(seq[i]);
      b.targets.push_back(kNoTarget);
      b.doc.push_back(int32_t(s));
    }
    for (int64_t j = 1 + prompt_len; j < int64_t(seq.size()); ++j) {
      p.position.push_back(start + j - 1);
      p.tokens.token.push_back(seq[size_t(j)]);
      p.tokens.completion.push_back(int32_t(s));
    }
  }
  b.inputs.insert(b.inputs.end(), size_t(pad), kEos);
  b.targets.insert(b.targets.end(), size_t(pad), kNoTarget);
  b.doc.insert(b.doc.end(), size_t(pad), int32_t(completion_lens.size()));
  b.seq_len = int64_t(b.inputs.size());
  p.tokens.completions = int64_t(completion_lens.size());
  return p;
}

TEST(GrpoModel, CrossEntropyHeadGivesTheCePathBits) {
  const ModelConfig cfg = small_config(true);
  const ParamTable table(cfg);
  const auto params = random_params<float>(table, 1);
  const InProcessEngramStore<float> store(cfg, 5);
  Packed p = packed_sequences({3, 4}, 2, 2);
  for (size_t i = 0; i + 1 < p.batch.inputs.size(); ++i) p.batch.targets[i] = p.batch.inputs[i + 1];
  const LossScale s = loss_scale_of(p.batch, false);
  Model<float> model(cfg, table, 7);
  std::vector<float> g_ce(params.size(), 0.f), g_head(params.size(), 0.f);
  EngramGrad<float> eg_ce, eg_head;
  const LossParts<float> ce =
      model.step(params.data(), g_ce.data(), p.batch, s, false, &store, &eg_ce);
  CeHead<float> head;
  head.targets = &p.batch.targets;
  head.inv = 1.f / float(s.ce_targets);
  const LossParts<float> hl =
      model.step(params.data(), g_head.data(), p.batch, s, false, &store, &eg_head, &head);
  EXPECT_GT(ce.ce, 0.f);
  EXPECT_EQ(hl.ce, 0.f);
  EXPECT_EQ(ce.total(), hl.total());
  EXPECT_EQ(g_ce, g_head);
  for (size_t t = 0; t < eg_ce.size(); ++t) EXPECT_EQ(eg_ce[t].values, eg_head[t].values);
  EXPECT_THROW(model.step(params.data(), nullptr, p.batch, s, true, &store, nullptr, &head),
               std::invalid_argument);
}

// The GRPO loss through the whole model against fourth-order central differences (FP64),
// with tokens on both clip branches, A of both signs.
TEST(GrpoModel, GradientsMatchFiniteDifferences) {
  const ModelConfig cfg = small_config(false);
  const ParamTable table(cfg);
  auto params = random_params<double>(table, 3);
  const InProcessEngramStore<double> store(cfg, 5);
  Packed p = packed_sequences({3, 4, 2}, 3, 2);
  const LossScale s = loss_scale_of(p.batch, false);
  Model<double> model(cfg, table, 7);
  // π_θ's log-probabilities now, then π_old and π_ref at set ratios (away from 1 ± ε).
  model.step(params.data(), nullptr, p.batch, s, false, &store);
  const int64_t N = int64_t(p.position.size()), V = cfg.vocab_size;
  std::vector<double> rows(static_cast<size_t>(N * V)), lp(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t)
    std::copy_n(model.logits().begin() + p.position[size_t(t)] * V, V, rows.begin() + t * V);
  token_logprobs(rows.data(), p.tokens.token.data(), N, V, lp.data());
  const double rhos[] = {1.4, 0.95, 0.6, 1.1, 0.7};
  for (int64_t t = 0; t < N; ++t) {
    p.tokens.logp_old.push_back(lp[size_t(t)] - std::log(rhos[t % 5]));
    p.tokens.logp_ref.push_back(lp[size_t(t)] + 0.2 * std::sin(double(t)));
  }
  p.tokens.advantage = {1.2, -0.8, 0.5};
  GrpoHead<double> head(GrpoLossConfig{}, p.position, p.tokens);
  std::vector<double> grads(params.size(), 0.0);
  EngramGrad<double> eg;
  model.step(params.data(), grads.data(), p.batch, s, false, &store, &eg, &head);
  EXPECT_GT(head.cache().clipped_fraction, 0.0);
  EXPECT_LT(head.cache().clipped_fraction, 1.0);
  auto loss = [&] {
    return model.step(params.data(), nullptr, p.batch, s, false, &store, nullptr, &head).total();
  };
  const double h = 1e-3;
  double worst = 0;
  int64_t checked = 0;
  for (const ParamInfo& info : table.all()) {
    if (info.group == OptGroup::Rule || info.name.rfind("mtp.", 0) == 0) continue;
    const int64_t stride = std::max<int64_t>(1, info.numel / 12);  // ~12 entries a tensor
    for (int64_t i = 0; i < info.numel; i += stride) {
      double& v = params[size_t(info.offset + i)];
      const double keep = v;
      auto at = [&](double d) { return v = keep + d, loss(); };
      const double fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
      v = keep;
      const double ad = grads[size_t(info.offset + i)];
      // Floor 1e-5 as in doc_mask_test: entries ~0 by construction compare absolutely.
      const double e = std::abs(fd - ad) / std::max({std::abs(fd), std::abs(ad), 1e-5});
      EXPECT_LE(e, 1e-6) << info.name << "[" << i << "] autograd " << ad << " fd " << fd;
      worst = std::max(worst, e), ++checked;
    }
  }
  std::printf("  %lld entries, worst relative error %.2e, clipped fraction %.2f\n",
              (long long)checked, worst, head.cache().clipped_fraction);
}

}  // namespace
}  // namespace troupe::model
