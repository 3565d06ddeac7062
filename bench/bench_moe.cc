// bench_moe: one DeepSeekMoE layer (model/ffn.h) forward + backward at tiny's size (2 rows of
// 128 tokens, C 128, 8 experts of width 96 plus the shared one, top-2) in FP32 on one
// thread, next to its anchor from the same run: the Linears the layer cannot avoid, each
// expert's three on the rows routed to it (the counts of this very routing) and the shared
// expert's on every row. The ratio is the price of routing, gathering, scattering and
// SwiGLU on top of the GEMMs. (Was the disabled test Moe.DISABLED_TimingTinyFp32.)
//
// Usage: bench_moe [--quick]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "kernels/cpu/gemm.h"
#include "model/ffn.h"
#include "model/params.h"
#include "model/rng.h"

namespace {

using namespace troupe::model;

using troupe::bench::normal;

// Best time per call over `samples` samples of ~20 ms each (bench_timing.h).
double best_seconds(const std::function<void()>& fn, int samples) {
  return troupe::bench::best_seconds(fn, samples, 0.02);
}

// One SwiGLU expert's three Linears on `rows` rows, forward and backward (C -> I -> C).
void expert_linears(int64_t rows, int64_t C, int64_t I, const std::vector<float>& x,
                    const std::vector<float>& w, std::vector<float>& h, std::vector<float>& dW) {
  using troupe::kernels::linear_backward;
  using troupe::kernels::linear_forward;
  if (rows == 0) return;
  float* hg = h.data();
  float* hu = h.data() + rows * I;
  float* y = h.data() + 2 * rows * I;
  linear_forward<float>(x.data(), w.data(), hg, rows, C, I);          // gate
  linear_forward<float>(x.data(), w.data() + C * I, hu, rows, C, I);  // up
  linear_forward<float>(hg, w.data() + 2 * C * I, y, rows, I, C);     // down
  linear_backward<float>(y, hg, w.data() + 2 * C * I, hu, dW.data(), rows, I, C);
  linear_backward<float>(hu, x.data(), w.data(), hg, dW.data(), rows, C, I);
  linear_backward<float>(hg, x.data(), w.data() + C * I, hu, dW.data(), rows, C, I);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int samples = quick ? 3 : 15;
  ModelConfig cfg;  // tiny (configs/tiny.toml)
  cfg.mtp_depth = 0;
  const ParamTable table(cfg);
  const std::string prefix = "model.layers.1.mlp.";
  const MoeLayout L = MoeLayout::from(table, cfg, prefix);
  const int64_t R = 2, Tlen = 128, C = cfg.d_model, N = R * Tlen, I = cfg.moe_inter;
  std::vector<float> p(size_t(table.total())), g(p.size());
  init_params(table, 1234, p.data());
  const std::vector<float> x = normal(N * C, 3), dout = normal(N * C, 4);
  std::vector<float> out(size_t(N * C)), dx(size_t(N * C));
  MoeCache<float> c;
  const double layer = best_seconds(
      [&] {
        moe_forward(cfg, L, p.data(), x.data(), R, Tlen, 1e-4f, out.data(), c);
        moe_backward(cfg, L, p.data(), g.data(), dout.data(), dx.data(), c);
      },
      samples);

  // The anchor: the same Linears on the rows this routing gives each expert.
  const std::vector<int64_t> counts = c.counts;
  const int64_t shared_width = cfg.n_shared_experts * I;
  const std::vector<float> xs = normal(N * C, 5), w = normal(3 * C * shared_width, 6);
  std::vector<float> h(size_t(3 * N * std::max(shared_width, C))), dW(w.size());
  const double linears = best_seconds(
      [&] {
        for (const int64_t rows : counts) expert_linears(rows, C, I, xs, w, h, dW);
        if (L.has_shared) expert_linears(N, C, shared_width, xs, w, h, dW);
      },
      samples);
  int64_t routed = 0;
  for (const int64_t n : counts) routed += n;
  std::printf("MoE layer, tiny, FP32, N = %lld tokens (%lld routed rows over %zu experts):\n",
              static_cast<long long>(N), static_cast<long long>(routed), counts.size());
  std::printf("  forward + backward %.3f ms; its Linears alone %.3f ms; ratio %.2fx\n", 1e3 * layer,
              1e3 * linears, layer / linears);
  return 0;
}
