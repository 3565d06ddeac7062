// Document masking (mixed-length mode, model/batch.h): one document per row is today's
// behaviour bit for bit; a row of documents gives each document what it gets alone (loss and
// every gradient, FP64); the whole model's backward with documents against FP64 finite
// differences; the document-run check of Batch.doc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "config/config_parse.h"
#include "model/model.h"
#include "model/rng.h"
#include "tests/model/small_model.h"

namespace troupe::model {
namespace {

using small_model::small_config;
template <typename T>
std::vector<T> random_params(const ParamTable& table, uint64_t seed) {
  return small_model::random_params<T>(table, seed, "doc_mask_test");
}

// Documents of the given lengths end to end in one row, then `pad` padding positions.
Batch documents_row(const std::vector<int64_t>& lens, int64_t pad, std::vector<Batch>* alone) {
  Batch b;
  b.rows = 1;
  int32_t id = 0;
  uint64_t k = 0;
  CounterRng rng(3, purpose_of("doc_mask_test.tokens"));
  for (int64_t n : lens) {
    Batch one;
    one.rows = 1, one.seq_len = n;
    std::vector<int32_t> toks{kBos};
    for (int64_t i = 0; i < n; ++i) toks.push_back(int32_t(32 + rng.bits(k++) % 90));
    for (int64_t i = 0; i < n; ++i) {
      one.inputs.push_back(toks[size_t(i)]);
      one.targets.push_back(i + 1 < n ? toks[size_t(i + 1)] : kNoTarget);
    }
    b.inputs.insert(b.inputs.end(), one.inputs.begin(), one.inputs.end());
    b.targets.insert(b.targets.end(), one.targets.begin(), one.targets.end());
    b.doc.insert(b.doc.end(), size_t(n), id++);
    if (alone) alone->push_back(one);
  }
  b.inputs.insert(b.inputs.end(), size_t(pad), kEos);
  b.targets.insert(b.targets.end(), size_t(pad), kNoTarget);
  b.doc.insert(b.doc.end(), size_t(pad), id);
  b.seq_len = int64_t(b.inputs.size());
  return b;
}

template <typename T>
struct Result {
  LossParts<T> parts;
  std::vector<T> grads;
  std::map<std::pair<size_t, int64_t>, std::vector<T>> rows;  // (table, row) -> gradient
};

template <typename T>
Result<T> run(const ModelConfig& cfg, const ParamTable& table, const std::vector<T>& params,
              const InProcessEngramStore<T>& store, const Batch& b, const LossScale& scale) {
  Model<T> model(cfg, table, 7);
  Result<T> r;
  r.grads.assign(params.size(), T(0));
  EngramGrad<T> eg;
  r.parts = model.step(params.data(), r.grads.data(), b, scale, true, &store, &eg);
  for (size_t t = 0; t < eg.size(); ++t)
    for (size_t i = 0; i < eg[t].ids.size(); ++i) {
      const int64_t D = cfg.engram_head_dim;
      r.rows[{t, eg[t].ids[i]}].assign(eg[t].values.begin() + int64_t(i) * D,
                                       eg[t].values.begin() + int64_t(i + 1) * D);
    }
  return r;
}

TEST(DocMask, OneDocumentPerRowIsBitIdentical) {
  const ModelConfig cfg = small_config(true);
  const ParamTable table(cfg);
  const auto params = random_params<float>(table, 1);
  const InProcessEngramStore<float> store(cfg, 5);
  std::vector<Batch> alone;
  Batch plain = documents_row({9, 11}, 0, nullptr);
  plain.rows = 2, plain.seq_len = 10;  // 20 tokens as two rows of 10
  plain.doc.clear();
  Batch with = plain;
  with.doc = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};  // ids per row
  const LossScale s = loss_scale_of(plain, true);
  EXPECT_EQ(s.mtp_targets, loss_scale_of(with, true).mtp_targets);
  const Result<float> a = run(cfg, table, params, store, plain, s);
  const Result<float> b = run(cfg, table, params, store, with, s);
  EXPECT_EQ(a.parts.total(), b.parts.total());
  EXPECT_EQ(a.grads, b.grads);
  EXPECT_EQ(a.rows, b.rows);
}

// Loss and gradients of a packed row = the sums over its documents computed alone, with the
// packed batch's normalisers (FP64; padding contributes nothing).
TEST(DocMask, EachDocumentAsIfAlone) {
  const ModelConfig cfg = small_config(false);
  const ParamTable table(cfg);
  const auto params = random_params<double>(table, 2);
  const InProcessEngramStore<double> store(cfg, 5);
  std::vector<Batch> alone;
  const Batch row = documents_row({4, 7, 1, 5}, 3, &alone);
  const LossScale s = loss_scale_of(row, true);
  EXPECT_EQ(s.ce_targets, 3 + 6 + 0 + 4);
  EXPECT_EQ(s.mtp_targets, 2 + 5 + 0 + 3);
  const Result<double> packed = run(cfg, table, params, store, row, s);
  Result<double> sum;
  sum.grads.assign(params.size(), 0.0);
  for (const Batch& one : alone) {
    const Result<double> r = run(cfg, table, params, store, one, s);
    sum.parts.ce += r.parts.ce, sum.parts.mtp += r.parts.mtp;
    for (size_t i = 0; i < params.size(); ++i) sum.grads[i] += r.grads[i];
    for (const auto& [key, g] : r.rows) {
      auto& dst = sum.rows[key];
      dst.resize(g.size(), 0.0);
      for (size_t d = 0; d < g.size(); ++d) dst[d] += g[d];
    }
  }
  EXPECT_NEAR(packed.parts.ce, sum.parts.ce, 1e-12);
  EXPECT_NEAR(packed.parts.mtp, sum.parts.mtp, 1e-12);
  EXPECT_GT(sum.parts.mtp, 0.0);
  double worst = 0, gmax = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    worst = std::max(worst, std::abs(packed.grads[i] - sum.grads[i]));
    gmax = std::max(gmax, std::abs(sum.grads[i]));
  }
  std::printf("  dense gradient: max |packed − alone| %.2e, max |g| %.3e\n", worst, gmax);
  EXPECT_LE(worst, 1e-12 * std::max(1.0, gmax));
  for (const auto& [key, g] : packed.rows) {  // padding's rows are present, with zeros
    const auto it = sum.rows.find(key);
    for (size_t d = 0; d < g.size(); ++d)
      EXPECT_NEAR(g[d], it == sum.rows.end() ? 0.0 : it->second[d], 1e-12);
  }
  for (const auto& [key, g] : sum.rows) EXPECT_TRUE(packed.rows.count(key)) << key.second;
}

// The whole model's backward with documents against fourth-order central differences.
TEST(DocMask, GradientsMatchFiniteDifferences) {
  const ModelConfig cfg = small_config(false);
  const ParamTable table(cfg);
  auto params = random_params<double>(table, 3);
  const InProcessEngramStore<double> store(cfg, 5);
  const Batch row = documents_row({5, 6, 4}, 2, nullptr);
  const LossScale s = loss_scale_of(row, true);
  const Result<double> g = run(cfg, table, params, store, row, s);
  Model<double> model(cfg, table, 7);
  auto loss = [&] { return model.step(params.data(), nullptr, row, s, true, &store).total(); };
  const double h = 1e-3;
  double worst = 0;
  char at_worst[160] = "";
  int64_t checked = 0;
  for (const ParamInfo& info : table.all()) {
    if (info.group == OptGroup::Rule) continue;
    const int64_t stride = std::max<int64_t>(1, info.numel / 12);  // ~12 entries a tensor
    for (int64_t i = 0; i < info.numel; i += stride) {
      double& v = params[size_t(info.offset + i)];
      const double keep = v;
      auto at = [&](double d) { return v = keep + d, loss(); };
      const double fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
      v = keep;
      const double ad = g.grads[size_t(info.offset + i)];
      // Floor 1e-5: entries that are ~0 by construction (saturated mHC biases) compare
      // absolutely, at 1e-11, above the differences' rounding noise (~1e-12).
      const double e = std::abs(fd - ad) / std::max({std::abs(fd), std::abs(ad), 1e-5});
      EXPECT_LE(e, 1e-6) << info.name << "[" << i << "] autograd " << ad << " fd " << fd;
      if (e > worst)
        std::snprintf(at_worst, sizeof at_worst, "%s[%lld]", info.name.c_str(), (long long)i);
      worst = std::max(worst, e), ++checked;
    }
  }
  std::printf("  %lld entries, worst relative error %.2e (%s)\n", (long long)checked, worst,
              at_worst);
}

TEST(DocMask, DocumentsMustBeContiguousRuns) {
  const ModelConfig cfg = small_config(false);
  const ParamTable table(cfg);
  const auto params = random_params<double>(table, 1);
  const InProcessEngramStore<double> store(cfg, 5);
  Batch b = documents_row({3, 3}, 0, nullptr);
  b.doc = {0, 0, 1, 1, 0, 0};
  Model<double> model(cfg, table, 7);
  EXPECT_THROW(model.step(params.data(), nullptr, b, loss_scale_of(b, true), true, &store),
               std::invalid_argument);
  b.doc = {0, 0};
  EXPECT_THROW(model.step(params.data(), nullptr, b, loss_scale_of(b, false), true, &store),
               std::invalid_argument);
}

}  // namespace
}  // namespace troupe::model
