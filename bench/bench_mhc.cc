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
  // Cold: kColdInstances instances in turn, forward all then backward all in reverse, as a
  // model's layers run, so each call finds its streams out of cache.
  constexpr int kColdInstances = 24;
  struct Instance {
    std::vector<float> u, Xout, dX, df;
    MhcCache<float> cache;
  };
  std::vector<Instance> cold(kColdInstances);
  std::vector<std::vector<float>> Xs, fs, dYs;
  for (int i = 0; i < kColdInstances; ++i) {
    Xs.push_back(normal(N * D, 10 + i));
    fs.push_back(normal(N * C, 40 + i));
    dYs.push_back(normal(N * D, 70 + i));
    cold[size_t(i)].u.resize(N * C), cold[size_t(i)].Xout.resize(N * D);
    cold[size_t(i)].dX.resize(N * D), cold[size_t(i)].df.resize(N * C);
  }
  const double t_cold =
      troupe::bench::best_seconds(
          [&] {
            for (int i = 0; i < kColdInstances; ++i) {
              Instance& c = cold[size_t(i)];
              mhc_pre_forward(cfg, L, params.data(), Xs[size_t(i)].data(), N, c.u.data(), c.cache);
              mhc_post_forward(cfg, L, params.data(), Xs[size_t(i)].data(), fs[size_t(i)].data(),
                               c.Xout.data(), c.cache);
            }
            for (int i = kColdInstances - 1; i >= 0; --i) {
              Instance& c = cold[size_t(i)];
              mhc_post_backward(cfg, L, params.data(), grads.data(), dYs[size_t(i)].data(),
                                c.dX.data(), c.df.data(), c.cache, false);
              mhc_pre_backward(cfg, L, params.data(), grads.data(), du.data(), c.dX.data(),
                               c.cache);
            }
          },
          std::max(2, samples / 2), 0.2) /
      kColdInstances;
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
