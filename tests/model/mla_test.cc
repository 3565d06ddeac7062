// MLA (model/mla.h): an independent loop-by-loop forward from SPEC §3.2/§11, FP64 central
// finite differences for every parameter and input element, causality and document
// masking, float/double agreement, and row independence (bitwise).
#include "model/mla.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "model/rng.h"

namespace troupe::model {
namespace {

const char* const kPrefix = "model.layers.0.self_attn.";
const char* const kMlaTensors[] = {
    "q_a_proj.weight",       "q_a_layernorm.weight", "q_b_proj.weight", "kv_a_proj_with_mqa.weight",
    "kv_a_layernorm.weight", "kv_b_proj.weight",     "o_proj.weight"};

// One layer, plain residual, dense FFN, no MTP: a parameter table holding one MLA block
// and little else.
ModelConfig one_block(ModelConfig c) {
  c.n_layers = 1;
  c.residual = Residual::plain;
  c.ffn = Ffn::dense;
  c.mtp_depth = 0;
  return c;
}

ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 8;
  c.d_model = 16;
  c.n_heads = 2;
  c.q_lora_rank = 8;
  c.kv_lora_rank = 6;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 4;
  c.dense_inter = 8;
  return one_block(c);
}

// configs/tiny.toml sizes.
ModelConfig tiny_config() {
  return one_block(ModelConfig{});
}

std::vector<double> normals(uint64_t seed, uint64_t purpose, int64_t n, double scale) {
  CounterRng rng(seed, purpose);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = scale * rng.normal(i);
  return v;
}

// Every MLA tensor random: matrices N(0, 1.5²/fan_in), norm weights 1 + N(0, 0.3²) (so a
// wrong norm-weight gradient cannot hide behind all-ones weights). Everything else 0.
std::vector<double> random_params(const ParamTable& table, uint64_t seed) {
  std::vector<double> p(table.total(), 0.0);
  for (const char* name : kMlaTensors) {
    const ParamInfo& info = table.at(std::string(kPrefix) + name);
    const bool is_norm = info.shape.size() == 1;
    const double scale = is_norm ? 0.3 : 1.5 / std::sqrt(double(info.shape[1]));
    std::vector<double> v = normals(seed, purpose_of(info.name), info.numel, scale);
    for (int64_t i = 0; i < info.numel; ++i) p[info.offset + i] = (is_norm ? 1.0 : 0.0) + v[i];
  }
  return p;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// How documents lie in the rows. Packed: row 0 has a boundary at Tlen/2, row 1 at 1 and
// Tlen/2 + 1, positions restarting at 0 at each. Interleaved: two document ids alternate
// irregularly inside a row (the mask is "same id", whatever the order), positions 0…T−1.
enum class Docs { None, Packed, Interleaved };

struct Problem {
  ModelConfig cfg;
  ParamTable table;
  MlaLayout layout;
  int64_t R, Tlen;
  std::vector<int32_t> pos, doc;  // doc empty: no document mask
  std::vector<double> params, u, proj;

  Problem(const ModelConfig& c, int64_t rows, int64_t len, Docs docs, uint64_t seed)
      : cfg(c), table(c), layout(MlaLayout::from(table, kPrefix)), R(rows), Tlen(len) {
    for (int64_t r = 0; r < R; ++r) {
      int32_t id = 0, start = 0;
      for (int64_t t = 0; t < Tlen; ++t) {
        if (docs == Docs::Packed && t > 0 && (t == Tlen / 2 + r || (r == 1 && t == 1))) {
          ++id;
          start = static_cast<int32_t>(t);
        }
        if (docs == Docs::Interleaved) id = (t * 5 + r) % 3 == 1 ? 1 : 0;
        pos.push_back(static_cast<int32_t>(t) - start);
        if (docs != Docs::None) doc.push_back(static_cast<int32_t>(10 * r + id));
      }
    }
    params = random_params(table, seed);
    u = normals(seed, 1, R * Tlen * cfg.d_model, 1.0);
    proj = normals(seed, 2, R * Tlen * cfg.d_model, 1.0);
  }
  const int32_t* doc_ptr() const { return doc.empty() ? nullptr : doc.data(); }
  int64_t N() const { return R * Tlen; }
};

template <typename T>
std::vector<T> forward(const Problem& pb, const std::vector<T>& params, const std::vector<T>& u,
                       MlaCache<T>& cache) {
  std::vector<T> out(pb.N() * pb.cfg.d_model);
  mla_forward<T>(pb.cfg, pb.layout, params.data(), u.data(), pb.R, pb.Tlen, pb.pos.data(),
                 pb.doc_ptr(), out.data(), cache);
  return out;
}

double loss(const Problem& pb, const std::vector<double>& params, const std::vector<double>& u,
            MlaCache<double>& cache) {
  std::vector<double> out = forward(pb, params, u, cache);
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * pb.proj[i];
  return s;
}

// The SPEC written out loop by loop, sharing no code with model/mla.cc or kernels/.
std::vector<double> reference_forward(const Problem& pb) {
  const ModelConfig& c = pb.cfg;
  const int64_t C = c.d_model, H = c.n_heads, QL = c.q_lora_rank, KL = c.kv_lora_rank,
                DN = c.qk_nope_head_dim, DR = c.qk_rope_head_dim, DV = c.v_head_dim, DQ = DN + DR,
                N = pb.N();
  const double* P = pb.params.data();
  const MlaLayout& L = pb.layout;
  auto matvec = [](const double* W, const double* x, int64_t O, int64_t I) {
    std::vector<double> y(O, 0.0);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) y[o] += W[o * I + i] * x[i];
    return y;
  };
  auto rmsnorm = [&](std::vector<double> x, const double* w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(x.size()) + c.rms_norm_eps);
    for (size_t i = 0; i < x.size(); ++i) x[i] *= r * w[i];
    return x;
  };
  auto rope = [&](double* x, int32_t p) {  // rotate half: i pairs with i + DR/2
    for (int64_t i = 0; i < DR / 2; ++i) {
      const double a = std::pow(c.rope_theta, -2.0 * double(i) / double(DR)) * p;
      const double x1 = x[i], x2 = x[i + DR / 2];
      x[i] = x1 * std::cos(a) - x2 * std::sin(a);
      x[i + DR / 2] = x2 * std::cos(a) + x1 * std::sin(a);
    }
  };
  std::vector<std::vector<double>> q(N), k(N * H), v(N * H);  // k, v: per (token, head)
  for (int64_t n = 0; n < N; ++n) {
    const double* un = pb.u.data() + n * C;
    q[n] =
        matvec(P + L.q_b, rmsnorm(matvec(P + L.q_a, un, QL, C), P + L.q_a_norm).data(), H * DQ, QL);
    std::vector<double> kva = matvec(P + L.kv_a, un, KL + DR, C);
    std::vector<double> ckv =
        rmsnorm(std::vector<double>(kva.begin(), kva.begin() + KL), P + L.kv_a_norm);
    rope(kva.data() + KL, pb.pos[n]);
    std::vector<double> kv = matvec(P + L.kv_b, ckv.data(), H * (DN + DV), KL);
    for (int64_t h = 0; h < H; ++h) {
      rope(q[n].data() + h * DQ + DN, pb.pos[n]);
      const double* kvh = kv.data() + h * (DN + DV);
      k[n * H + h].assign(kvh, kvh + DN);
      k[n * H + h].insert(k[n * H + h].end(), kva.begin() + KL, kva.end());
      v[n * H + h].assign(kvh + DN, kvh + DN + DV);
    }
  }
  std::vector<double> o(N * H * DV, 0.0), out(N * C, 0.0);
  for (int64_t r = 0; r < pb.R; ++r)
    for (int64_t t = 0; t < pb.Tlen; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = r * pb.Tlen + t;
        std::vector<double> w(t + 1, 0.0);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          if (!pb.doc.empty() && pb.doc[r * pb.Tlen + j] != pb.doc[n]) continue;
          double s = 0;
          for (int64_t i = 0; i < DQ; ++i) s += q[n][h * DQ + i] * k[(n - t + j) * H + h][i];
          w[j] = s / std::sqrt(double(DQ));
          mx = std::max(mx, w[j]);
        }
        for (int64_t j = 0; j <= t; ++j) {
          const bool on = pb.doc.empty() || pb.doc[r * pb.Tlen + j] == pb.doc[n];
          w[j] = on ? std::exp(w[j] - mx) : 0.0;
          sum += w[j];
        }
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < DV; ++i)
            o[n * H * DV + h * DV + i] += w[j] / sum * v[(n - t + j) * H + h][i];
      }
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> y = matvec(P + L.o, o.data() + n * H * DV, C, H * DV);
    std::copy(y.begin(), y.end(), out.begin() + n * C);
  }
  return out;
}

// Short rows and rows longer than the core's query block (32).
TEST(Mla, ForwardMatchesLoopReference) {
  for (int64_t Tlen : {7, 70})
    for (Docs docs : {Docs::None, Docs::Packed, Docs::Interleaved}) {
      Problem pb(small_config(), 2, Tlen, docs, 11);
      MlaCache<double> cache;
      std::vector<double> out = forward(pb, pb.params, pb.u, cache), ref = reference_forward(pb);
      double worst = 0, scale = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        worst = std::max(worst, std::abs(out[i] - ref[i]));
        scale = std::max(scale, std::abs(ref[i]));
      }
      EXPECT_LE(worst, 1e-12 * scale) << "Tlen " << Tlen << " docs " << int(docs);
      EXPECT_GT(scale, 0.1);
    }
}

// |num − ana| ≤ 1e-6·max(|num|, |ana|) + 1e-9, reported per tensor as the worst ratio.
struct GradCheck {
  double worst_ratio = 0, worst_abs = 0;
  void add(double num, double ana) {
    const double err = std::abs(num - ana);
    worst_abs = std::max(worst_abs, err);
    worst_ratio =
        std::max(worst_ratio, err / (1e-6 * std::max(std::abs(num), std::abs(ana)) + 1e-9));
  }
};

// Every element of every MLA tensor, and of u (every 7th when u is large: 7 is coprime with
// d_model, so the sample still covers every feature).
void check_gradients(Docs docs, int64_t Tlen) {
  Problem pb(small_config(), 2, Tlen, docs, 5 + int(docs) + Tlen);
  MlaCache<double> cache;
  const int64_t total = pb.table.total();
  forward(pb, pb.params, pb.u, cache);
  // Buffers start at 1 (not 0) to check that the backward accumulates.
  constexpr double kBase = 1.0;
  std::vector<double> grads(total, kBase), du(pb.u.size(), kBase);
  mla_backward<double>(pb.cfg, pb.layout, pb.params.data(), grads.data(), pb.proj.data(), du.data(),
                       cache);

  // Central differences at h and 2h, combined (Richardson) so the truncation error is
  // O(h⁴): (8 (L(x+h) − L(x−h)) − (L(x+2h) − L(x−2h))) / 12h.
  constexpr double h = 1e-4;
  auto numeric = [&](std::vector<double>& x, int64_t i) {
    const double x0 = x[i];
    auto at = [&](double v) {
      x[i] = v;
      return loss(pb, pb.params, pb.u, cache);
    };
    const double d1 = at(x0 + h) - at(x0 - h), d2 = at(x0 + 2 * h) - at(x0 - 2 * h);
    x[i] = x0;
    return (8 * d1 - d2) / (12 * h);
  };
  std::vector<bool> is_mla(total, false);
  for (const char* name : kMlaTensors) {
    const ParamInfo& info = pb.table.at(std::string(kPrefix) + name);
    GradCheck gc;
    for (int64_t i = 0; i < info.numel; ++i) {
      is_mla[info.offset + i] = true;
      gc.add(numeric(pb.params, info.offset + i), grads[info.offset + i] - kBase);
    }
    std::printf("  docs=%d %-28s %4lld elems  max|num-ana| %.2e  worst/tol %.3f\n", int(docs), name,
                static_cast<long long>(info.numel), gc.worst_abs, gc.worst_ratio);
    EXPECT_LE(gc.worst_ratio, 1.0) << name << " docs " << int(docs);
  }
  GradCheck gu;
  const int64_t nu = static_cast<int64_t>(pb.u.size()), step = nu > 600 ? 7 : 1;
  for (int64_t i = 0; i < nu; i += step) gu.add(numeric(pb.u, i), du[i] - kBase);
  std::printf("  docs=%d %-28s %4lld elems  max|num-ana| %.2e  worst/tol %.3f\n", int(docs), "u",
              static_cast<long long>((nu + step - 1) / step), gu.worst_abs, gu.worst_ratio);
  EXPECT_LE(gu.worst_ratio, 1.0) << "u docs " << int(docs);
  for (int64_t i = 0; i < total; ++i) {
    if (!is_mla[i]) {
      ASSERT_EQ(grads[i], kBase) << "backward wrote outside MLA at " << i;
    }
  }
}

TEST(Mla, GradientsMatchFiniteDifferences) {
  check_gradients(Docs::None, 5);
}
TEST(Mla, GradientsMatchFiniteDifferencesPackedDocuments) {
  check_gradients(Docs::Packed, 5);
}
TEST(Mla, GradientsMatchFiniteDifferencesInterleavedDocuments) {
  check_gradients(Docs::Interleaved, 5);
}
// Rows longer than the core's query block (32), the last block partial, documents
// straddling block edges.
TEST(Mla, GradientsMatchFiniteDifferencesLongRows) {
  check_gradients(Docs::Packed, 70);
}

// Changing u at (row r, position t) changes exactly the outputs that may attend to it:
// same row, position ≥ t, same document. Everything else keeps its bits.
TEST(Mla, CausalAndDocumentMasked) {
  for (Docs docs : {Docs::None, Docs::Packed, Docs::Interleaved}) {
    Problem pb(small_config(), 2, 8, docs, 3);
    const int64_t C = pb.cfg.d_model;
    MlaCache<double> cache;
    const std::vector<double> base = forward(pb, pb.params, pb.u, cache);
    for (int64_t src = 0; src < pb.N(); ++src) {
      std::vector<double> u = pb.u;
      for (int64_t i = 0; i < C; ++i) u[src * C + i] += 0.5;
      const std::vector<double> out = forward(pb, pb.params, u, cache);
      for (int64_t n = 0; n < pb.N(); ++n) {
        const bool same_row = n / pb.Tlen == src / pb.Tlen;
        const bool visible = same_row && n >= src && (pb.doc.empty() || pb.doc[n] == pb.doc[src]);
        bool changed = false;
        for (int64_t i = 0; i < C; ++i) changed |= out[n * C + i] != base[n * C + i];
        EXPECT_EQ(changed, visible) << "source " << src << " output " << n << " docs " << int(docs);
      }
    }
  }
}

template <typename T>
struct MlaRun {
  std::vector<T> out, du, grads;
};

template <typename T>
MlaRun<T> forward_backward(const Problem& pb, MlaCache<T>& cache) {
  const std::vector<T> params = cast<T>(pb.params), u = cast<T>(pb.u), dout = cast<T>(pb.proj);
  MlaRun<T> run;
  run.out = forward(pb, params, u, cache);
  run.du.assign(u.size(), T(0));
  run.grads.assign(params.size(), T(0));
  mla_backward<T>(pb.cfg, pb.layout, params.data(), run.grads.data(), dout.data(), run.du.data(),
                  cache);
  return run;
}

template <typename A, typename B>
double max_rel_diff(const std::vector<A>& a, const std::vector<B>& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return worst / scale;
}

TEST(Mla, FloatMatchesDoubleAtTinySize) {
  Problem pb(tiny_config(), 2, 128, Docs::None, 21);
  MlaCache<float> fcache;
  MlaCache<double> dcache;
  const MlaRun<float> f = forward_backward(pb, fcache);
  const MlaRun<double> d = forward_backward(pb, dcache);
  const double out_rel = max_rel_diff(f.out, d.out), du_rel = max_rel_diff(f.du, d.du);
  std::printf("  float vs double: out %.2e, du %.2e (relative to the largest value)\n", out_rel,
              du_rel);
  EXPECT_LE(out_rel, 1e-5);
  EXPECT_LE(du_rel, 1e-4);
  EXPECT_LE(max_rel_diff(f.grads, d.grads), 1e-4);
}

// Rows {0,1} together and row 0 alone give the same bits for row 0 — output and input
// gradient — and a reused cache gives the same bits again.
TEST(Mla, RowsAreIndependentBitwise) {
  Problem both(tiny_config(), 2, 128, Docs::Packed, 33);
  Problem one = both;
  one.R = 1;
  const int64_t n0 = one.N() * one.cfg.d_model;
  one.pos.resize(one.N());
  one.doc.resize(one.N());
  one.u.resize(n0);
  one.proj.resize(n0);

  MlaCache<float> cache;
  const MlaRun<float> a = forward_backward(both, cache);
  const MlaRun<float> b = forward_backward(one, cache);
  const MlaRun<float> again = forward_backward(both, cache);
  for (int64_t i = 0; i < n0; ++i) {
    ASSERT_EQ(a.out[i], b.out[i]) << "out element " << i;
    ASSERT_EQ(a.du[i], b.du[i]) << "du element " << i;
  }
  EXPECT_EQ(a.out, again.out);
  EXPECT_EQ(a.du, again.du);
  EXPECT_EQ(a.grads, again.grads);
}

TEST(Mla, LayoutNamesTheBlocksTensors) {
  const ModelConfig cfg = small_config();
  const ParamTable table(cfg);
  const MlaLayout L = MlaLayout::from(table, kPrefix);
  EXPECT_EQ(L.q_a, table.offset(std::string(kPrefix) + "q_a_proj.weight"));
  EXPECT_EQ(L.kv_a_norm, table.offset(std::string(kPrefix) + "kv_a_layernorm.weight"));
  EXPECT_EQ(L.o, table.offset(std::string(kPrefix) + "o_proj.weight"));
  EXPECT_THROW(MlaLayout::from(table, "model.layers.9.self_attn."), std::out_of_range);
}

}  // namespace
}  // namespace troupe::model
