// Engram (SPEC-model.md §4, §11): hashing golden values, table sizes, the module's backward
// against FP64 finite differences (every dense tensor, the input streams, the touched table
// rows), the sparse gradient's reduction, sparse Adam and the conv's causality.
#include "model/engram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "config/config_parse.h"
#include "model/rng.h"

namespace troupe::model {
namespace {

TEST(Engram, SplitmixAndMultipliersGolden) {
  // splitmix64(0) is the published first output of the standard generator.
  EXPECT_EQ(splitmix64(0), 16294208416658607535ull);
  EXPECT_EQ(splitmix64(1234), 13478418381427711195ull);
  // m_k for job seed 1234, layer 1 (tests/reference/README.md lists the same values).
  EXPECT_EQ(engram_multiplier(1234, 1, 0), 371562323ull);
  EXPECT_EQ(engram_multiplier(1234, 1, 1), 1194080917ull);
  EXPECT_EQ(engram_multiplier(1234, 1, 2), 2174628627ull);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(engram_multiplier(1234, 1, k) % 2, 1u);
}

TEST(Engram, Compression) {
  EXPECT_EQ(engram_compress('A'), uint64_t('a'));
  EXPECT_EQ(engram_compress('Z'), uint64_t('z'));
  EXPECT_EQ(engram_compress('a'), uint64_t('a'));
  for (int ws : {9, 10, 11, 12, 13, 32}) EXPECT_EQ(engram_compress(ws), 32u);
  EXPECT_EQ(engram_compress('@'), uint64_t('@'));
  EXPECT_EQ(engram_compress('['), uint64_t('['));
  EXPECT_EQ(engram_compress(8), 8u);
  EXPECT_EQ(engram_compress(256), 256u);  // BOS
  EXPECT_EQ(engram_compress(257), 257u);  // EOS
  EXPECT_EQ(engram_compress(200), 200u);
}

TEST(Engram, RowIdsGolden) {
  // Values from tests/reference/reference.py (engram_row_ids) for seed 1234, tiny sizes.
  ModelConfig cfg;
  cfg.engram_layers = {1};
  const auto tables = engram_tables(cfg);
  const std::vector<int32_t> tokens = {72, 105, 32, 116, 10, 84};  // "Hi t\nT"
  std::vector<int64_t> ids(tables.size() * tokens.size());
  engram_row_ids(cfg, 1234, 1, tables, tokens.data(), 1, 6, ids.data());
  const std::vector<int64_t> t20 = {4960, 5498, 7504, 4203, 7965, 4203};
  const std::vector<int64_t> t33 = {5202, 5798, 6340, 1084, 9714, 4904};
  EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.begin() + 6), t20);
  EXPECT_EQ(std::vector<int64_t>(ids.end() - 6, ids.end()), t33);
  // " t" and "\nT" compress to the same bigram.
  EXPECT_EQ(ids[3], ids[5]);
}

TEST(Engram, TableSizesAreDistinctPrimes) {
  ModelConfig cfg;
  cfg.n_layers = 4;
  cfg.engram_layers = {0, 2};
  const auto t = engram_tables(cfg);
  ASSERT_EQ(t.size(), 16u);
  EXPECT_EQ(t[0].rows, 10007);
  EXPECT_EQ(t[1].rows, 10009);
  EXPECT_EQ(t[0].name, "model.layers.0.engram.tables.2.0");
  EXPECT_EQ(t[15].name, "model.layers.2.engram.tables.3.3");
  std::set<int64_t> seen;
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(next_prime_at_least(t[i].rows), t[i].rows);
    if (i > 0) {
      EXPECT_GT(t[i].rows, t[i - 1].rows);
      EXPECT_EQ(t[i].rows, next_prime_at_least(t[i - 1].rows + 1));  // the next unused prime
    }
    seen.insert(t[i].rows);
  }
  EXPECT_EQ(seen.size(), t.size());
  EXPECT_EQ(engram_table_params(cfg), [&] {
    int64_t s = 0;
    for (const auto& x : t) s += x.rows * 16;
    return s;
  }());
}

// ---------------------------------------------------------------------- module checks

ModelConfig small_config() {
  ModelConfig c = config_from_sets({"model.n_layers=2", "model.d_model=8", "model.hc_mult=3",
                                    "model.engram_layers=[1]", "model.engram_orders=[2, 3]",
                                    "model.engram_heads=2", "model.engram_head_dim=3",
                                    "model.engram_table_rows=5", "model.engram_conv_kernel=3",
                                    "model.engram_conv_dilation=2", "model.rms_norm_eps=0.01"})
                      .model;
  return c;
}

struct Problem {
  ModelConfig cfg = small_config();
  ParamTable table{cfg};
  EngramLayout layout;
  std::vector<double> params, x, w;  // params, X (N,S,C), loss weights (N,S,C)
  std::vector<int32_t> tokens;
  InProcessEngramStore<double> store{cfg, 99};
  int64_t R = 2, Tn = 9, N = R * Tn, S = cfg.hc_mult, C = cfg.d_model;

  Problem() : layout(EngramLayout::from(table, cfg, 7, 1)) {
    CounterRng rng(5, purpose_of("engram_test"));
    uint64_t k = 0;
    params.resize(size_t(table.total()));
    for (auto& p : params) p = 0.5 * rng.normal(k++);
    for (int64_t m = 0; m < S; ++m)
      for (int64_t off : {layout.norm_q[m], layout.norm_k[m], layout.norm_c[m]})
        for (int64_t c = 0; c < C; ++c) params[off + c] = 1.0 + 0.2 * rng.normal(k++);
    x.resize(size_t(N * S * C)), w.resize(size_t(N * S * C));
    for (auto& v : x) v = rng.normal(k++);
    for (auto& v : w) v = rng.normal(k++);
    for (size_t t = 0; t < store.tables().size(); ++t) {
      const auto& info = store.tables()[t];
      double* d = store.data(int64_t(t));
      for (int64_t i = 0; i < info.rows * info.dim; ++i) d[i] = rng.normal(k++);
    }
    // Tiny tables (prime sizes from 5) make rows collide: a row sums several positions.
    const char* text = "The cat\tsat. the Cat sat";
    for (int64_t i = 0; i < N; ++i) tokens.push_back(int32_t(uint8_t(text[i % 24])));
    tokens[0] = 256;
  }

  double loss(std::vector<double>* xout_copy = nullptr) {
    EngramCache<double> cache;
    std::vector<double> xout(x.size());
    engram_forward<double>(cfg, layout, params.data(), store, tokens.data(), R, Tn, x.data(),
                           xout.data(), cache);
    double l = 0;
    for (size_t i = 0; i < xout.size(); ++i) l += w[i] * xout[i];
    if (xout_copy) *xout_copy = xout;
    return l;
  }
};

struct Grads {
  std::vector<double> params, dx;
  EngramGrad<double> tables;
};

Grads backward(Problem& p) {
  EngramCache<double> cache;
  std::vector<double> xout(p.x.size());
  engram_forward<double>(p.cfg, p.layout, p.params.data(), p.store, p.tokens.data(), p.R, p.Tn,
                         p.x.data(), xout.data(), cache);
  Grads g;
  g.params.assign(p.params.size(), 0.0);
  g.dx.assign(p.x.size(), 0.0);
  g.tables.resize(p.store.tables().size());
  engram_backward<double>(p.cfg, p.layout, p.params.data(), g.params.data(), p.w.data(),
                          g.dx.data(), g.tables, cache);
  return g;
}

// Fourth-order central differences in FP64; returns the worst relative error.
double fd_worst(Problem& p, double* v, int64_t n, const double* g, double* gmax) {
  const double h = 1e-3, floor = 1e-8;
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double keep = v[i];
    auto at = [&](double s) {
      v[i] = keep + s;
      return p.loss();
    };
    const double fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    v[i] = keep;
    worst = std::max(worst, std::abs(fd - g[i]) / (std::max(std::abs(fd), std::abs(g[i])) + floor));
    *gmax = std::max(*gmax, std::abs(g[i]));
  }
  return worst;
}

TEST(Engram, GradientsMatchFiniteDifferences) {
  Problem p;
  const Grads g = backward(p);
  for (const ParamInfo& info : p.table.all()) {
    if (info.name.find(".engram.") == std::string::npos) continue;
    double gmax = 0;
    const double worst = fd_worst(p, p.params.data() + info.offset, info.numel,
                                  g.params.data() + info.offset, &gmax);
    std::printf("  %-36s worst rel err %.2e  max|g| %.3e\n", info.name.c_str(), worst, gmax);
    EXPECT_LE(worst, 1e-6) << info.name;
    EXPECT_GT(gmax, 1e-3) << info.name << ": gradient too small for a meaningful check";
  }
  double gmax = 0;
  const double wx = fd_worst(p, p.x.data(), int64_t(p.x.size()), g.dx.data(), &gmax);
  std::printf("  %-36s worst rel err %.2e  max|g| %.3e\n", "X (input streams)", wx, gmax);
  EXPECT_LE(wx, 1e-6);
  // Table rows: every touched row's entries; untouched rows must be absent (zero gradient).
  int64_t touched = 0, shared = 0;
  for (size_t t = 0; t < p.store.tables().size(); ++t) {
    const auto& info = p.store.tables()[t];
    const SparseRows<double>& sg = g.tables[t];
    ASSERT_EQ(sg.values.size(), sg.ids.size() * size_t(info.dim));
    for (size_t r = 0; r < sg.ids.size(); ++r) {
      if (r > 0) {
        ASSERT_LT(sg.ids[r - 1], sg.ids[r]);
      }
      double gm = 0;
      const double worst = fd_worst(p, p.store.data(int64_t(t)) + sg.ids[r] * info.dim, info.dim,
                                    sg.values.data() + r * info.dim, &gm);
      EXPECT_LE(worst, 1e-6) << info.name << " row " << sg.ids[r];
      ++touched;
    }
    // An untouched row has zero finite-difference gradient.
    std::set<int64_t> ids(sg.ids.begin(), sg.ids.end());
    for (int64_t row = 0; row < info.rows; ++row) {
      if (ids.count(row)) continue;
      std::vector<double> zero(size_t(info.dim), 0.0);
      double gm = 0;
      EXPECT_LE(fd_worst(p, p.store.data(int64_t(t)) + row * info.dim, info.dim, zero.data(), &gm),
                1e-6);
    }
    shared += int64_t(p.N) - int64_t(sg.ids.size());
  }
  std::printf("  %lld touched table rows checked (%lld positions share a row)\n",
              (long long)touched, (long long)shared);
  EXPECT_GT(shared, 0);  // collisions exercised the per-row sum
}

TEST(Engram, ConvIsCausalAndRowsAreIndependent) {
  Problem p;
  std::vector<double> base, moved;
  p.loss(&base);
  const int64_t t0 = 3, S = p.S, C = p.C;
  for (int64_t m = 0; m < S; ++m)
    for (int64_t c = 0; c < C; ++c) p.x[((0 * p.Tn + t0) * S + m) * C + c] += 0.7;
  p.tokens[t0] = 'Q';
  p.loss(&moved);
  for (int64_t n = 0; n < p.N; ++n) {
    const bool same = n < t0 || n >= p.Tn;  // earlier positions of row 0, all of row 1
    for (int64_t i = 0; i < S * C; ++i) {
      if (same) {
        ASSERT_EQ(base[n * S * C + i], moved[n * S * C + i]) << "position " << n;
      }
    }
  }
  // ... and the conv carries information forward: its last tap reaches t0 + (K−1)·dilation,
  // beyond the hash window (t0 … t0 + max order − 1).
  const int64_t later = t0 + p.cfg.engram_conv_dilation * (p.cfg.engram_conv_kernel - 1);
  bool changed = false;
  for (int64_t i = 0; i < S * C; ++i)
    changed |= base[later * S * C + i] != moved[later * S * C + i];
  EXPECT_TRUE(changed);
}

TEST(Engram, SparseRowsAddMergesInOrder) {
  SparseRows<double> a{{1, 4}, {1, 2, 3, 4}}, b{{0, 4, 9}, {5, 6, 7, 8, 9, 10}};
  sparse_rows_add(a, b, 2);
  EXPECT_EQ(a.ids, (std::vector<int64_t>{0, 1, 4, 9}));
  EXPECT_EQ(a.values, (std::vector<double>{5, 6, 1, 2, 3 + 7, 4 + 8, 9, 10}));
  SparseRows<double> empty;
  sparse_rows_add(empty, a, 2);
  EXPECT_EQ(empty.ids, a.ids);
  EXPECT_EQ(engram_grad_sumsq(EngramGrad<double>{b}), 25 + 36 + 49 + 64 + 81 + 100.0);
}

TEST(Engram, SparseAdamTouchesOnlyTouchedRows) {
  ModelConfig cfg = small_config();
  InProcessEngramStore<float> store(cfg, 3);
  std::vector<std::vector<float>> before;
  for (size_t t = 0; t < store.tables().size(); ++t) {
    const auto& info = store.tables()[t];
    before.emplace_back(store.data(int64_t(t)), store.data(int64_t(t)) + info.rows * info.dim);
  }
  EngramGrad<float> g(store.tables().size());
  g[1].ids = {0, 3};
  g[1].values.assign(size_t(2 * cfg.engram_head_dim), 0.5f);
  EngramAdamStep s;
  s.lr = 0.01, s.step = 0;
  store.apply(g, s);
  for (size_t t = 0; t < store.tables().size(); ++t) {
    const auto& info = store.tables()[t];
    for (int64_t r = 0; r < info.rows; ++r)
      for (int64_t d = 0; d < info.dim; ++d) {
        const float now = store.data(int64_t(t))[r * info.dim + d];
        const float was = before[t][r * info.dim + d];
        if (t == 1 && (r == 0 || r == 3))
          EXPECT_NEAR(now, was - 0.01f, 1e-6f);  // Adam's first step moves by lr·sign(g)
        else
          EXPECT_EQ(now, was) << "table " << t << " row " << r;
      }
  }
  // Lookup returns what apply wrote.
  std::vector<float> row(size_t(cfg.engram_head_dim));
  const int64_t id = 3;
  store.lookup(1, &id, 1, row.data());
  EXPECT_EQ(row[0], store.data(1)[3 * cfg.engram_head_dim]);
}

}  // namespace
}  // namespace troupe::model
