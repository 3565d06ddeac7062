// bench_mhc: one mHC instance (model/mhc.h, n = 4 streams, 20 Sinkhorn rounds) forward and
// backward on one micro-batch (256 tokens) at tiny's width (C 128) and small's (C 256), FP32,
// one thread; each call's time next to its anchor from the same run: the deterministic GEMMs
// of its coefficient projections (φ x̂ forward; dφ and dx̂ backward), the only matmul FLOPs
// mHC has. The ratio is what the elementwise work (RMSNorm, Sinkhorn, stream mixing) costs
// on top of them. Then the same call cold: 24 instances in turn, as a model's layers run.
//
// Usage: bench_mhc [--quick]
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "kernels/cpu/gemm.h"
#include "model/mhc.h"
#include "model/params.h"

namespace {

using namespace troupe::model;
using troupe::bench::normal;
using troupe::kernels::Trans;

// Instances the cold figure cycles through.
constexpr int kColdInstances = 24;

// One instance's forward+backward, cold: kColdInstances instances in turn, forward all then
// backward all in reverse, as a model's layers run, so each call finds its streams out of
// cache. Seconds per instance.
double cold_seconds(const ModelConfig& cfg, const MhcLayout& L, const std::vector<float>& params,
                    const std::vector<float>& du, int64_t N, int samples) {
  const int64_t C = cfg.d_model, D = cfg.hc_mult * C;
  struct Instance {
    std::vector<float> X, f, dY, u, Xout, dX, df;
    MhcCache<float> cache;
  };
  std::vector<Instance> in(kColdInstances);
  for (int i = 0; i < kColdInstances; ++i) {
    Instance& c = in[size_t(i)];
    c.X = normal(N * D, 10 + i), c.f = normal(N * C, 40 + i), c.dY = normal(N * D, 70 + i);
    c.u.resize(N * C), c.Xout.resize(N * D), c.dX.resize(N * D), c.df.resize(N * C);
  }
  std::vector<float> grads(params.size());
  const float* P = params.data();
  auto run = [&] {
    for (Instance& c : in) {
      mhc_pre_forward(cfg, L, P, c.X.data(), N, c.u.data(), c.cache);
      mhc_post_forward(cfg, L, P, c.X.data(), c.f.data(), c.Xout.data(), c.cache);
    }
    for (auto c = in.rbegin(); c != in.rend(); ++c) {
      mhc_post_backward(cfg, L, P, grads.data(), c->dY.data(), c->dX.data(), c->df.data(), c->cache,
                        false);
      mhc_pre_backward(cfg, L, P, grads.data(), du.data(), c->dX.data(), c->cache);
    }
  };
  return troupe::bench::best_seconds(run, std::max(2, samples / 2), 0.2) / kColdInstances;
}

void one_width(int64_t C, int64_t N, int samples) {
  ModelConfig cfg;
  cfg.hc_mult = 4;
  cfg.d_model = C;
  cfg.sinkhorn_iters = 20;
  cfg.n_layers = 1;
  cfg.ffn = Ffn::dense;
  cfg.mtp_depth = 0;
  const ParamTable table(cfg);
  const MhcLayout L = MhcLayout::from(table, "model.layers.0.attn_hc.");
  const int64_t S = cfg.hc_mult, D = S * C, P = 2 * S + S * S;
  std::vector<float> params = normal(table.total(), 1);
  for (float& v : params) v *= 0.05f;
  const std::vector<float> X = normal(N * D, 2), f = normal(N * C, 3), dY = normal(N * D, 4);
  const std::vector<float> du = normal(N * C, 5);
  std::vector<float> u(N * C), Xout(N * D), dX(N * D), df(N * C), grads(table.total());
  MhcCache<float> cache;
  auto seconds = [&](auto fn) { return troupe::bench::best_seconds(fn, samples, 0.02); };
  const double t_pre =
      seconds([&] { mhc_pre_forward(cfg, L, params.data(), X.data(), N, u.data(), cache); });
  const double t_post =
      seconds([&] {
        mhc_pre_forward(cfg, L, params.data(), X.data(), N, u.data(), cache);
        mhc_post_forward(cfg, L, params.data(), X.data(), f.data(), Xout.data(), cache);
      }) -
      t_pre;
  const double t_fwd_bwd = seconds([&] {
    mhc_pre_forward(cfg, L, params.data(), X.data(), N, u.data(), cache);
    mhc_post_forward(cfg, L, params.data(), X.data(), f.data(), Xout.data(), cache);
    mhc_post_backward(cfg, L, params.data(), grads.data(), dY.data(), dX.data(), df.data(), cache);
    mhc_pre_backward(cfg, L, params.data(), grads.data(), du.data(), dX.data(), cache);
  });
  const double t_bwd = t_fwd_bwd - t_pre - t_post;
  // The anchor: the projection GEMMs alone, on the same shapes (x̂ (N,D), φ (P,D)).
  std::vector<float> xh = normal(N * D, 6), proj(N * P), dproj = normal(N * P, 7);
  std::vector<float> dphi(P * D), dxh(N * D);
  const float* phi = params.data() + L.phi_pre;
  const double g_fwd = seconds([&] {
    troupe::kernels::gemm<float>(Trans::N, Trans::T, N, P, D, xh.data(), D, phi, D, 0.f,
                                 proj.data(), P);
  });
  const double g_bwd = seconds([&] {
    troupe::kernels::gemm<float>(Trans::T, Trans::N, P, D, N, dproj.data(), P, xh.data(), D, 1.f,
                                 dphi.data(), D);
    troupe::kernels::gemm<float>(Trans::N, Trans::N, N, D, P, dproj.data(), P, phi, D, 0.f,
                                 dxh.data(), D);
  });
  const double t_cold = cold_seconds(cfg, L, params, du, N, samples);
  const double us = 1e6;
  std::printf(
      "C %4lld, %lld tokens: pre_forward %7.1f us  post_forward %7.1f us  backward %7.1f "
      "us\n",
      (long long)C, (long long)N, t_pre * us, t_post * us, t_bwd * us);
  std::printf(
      "C %4lld: mHC forward+backward %7.1f us   its projection GEMMs %7.1f us   ratio "
      "%.2fx\n",
      (long long)C, t_fwd_bwd * us, (g_fwd + g_bwd) * us, t_fwd_bwd / (g_fwd + g_bwd));
  std::printf(
      "C %4lld: mHC forward+backward cold (%d instances in turn) %7.1f us per instance, "
      "%.2fx the hot call\n",
      (long long)C, kColdInstances, t_cold * us, t_cold / t_fwd_bwd);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int samples = quick ? 2 : 7;
  one_width(128, 256, samples);
  one_width(256, 256, samples);
  return 0;
}
