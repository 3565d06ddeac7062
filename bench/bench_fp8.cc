// bench_fp8: the emulated FP8 Linear (kernels/cpu/fp8.h: quantise every operand to E4M3 and
// back, then the FP32 GEMM) next to the FP32 Linear on the model's shapes, forward and
// backward, single-threaded, as a ratio from the same run. The emulation's price is the
// quantisation: the GEMMs are the same.
//
// Usage: bench_fp8 [--quick]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <vector>

#include "bench/bench_timing.h"
#include "kernels/cpu/fp8.h"
#include "kernels/cpu/gemm.h"
#include "model/rng.h"

namespace {

using troupe::bench::normal;

// Best time per call over `samples` samples of ~3 ms each (bench_timing.h).
double best_seconds(const std::function<void()>& fn, int samples) {
  return troupe::bench::best_seconds(fn, samples, 0.003);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int samples = quick ? 3 : 30;
  struct Shape {
    int64_t R, I, O;
  };
  // A micro-batch of 2 rows × 128 tokens through tiny's Linears: attention (128→128),
  // dense FFN (128→384, 384→128), an expert (128→96).
  const Shape shapes[] = {{256, 128, 128}, {256, 128, 384}, {256, 384, 128}, {256, 128, 96}};
  std::printf("%-16s %12s %12s %8s   %12s %12s %8s\n", "R×I→O", "fp32 fwd us", "fp8 fwd us",
              "ratio", "fp32 bwd us", "fp8 bwd us", "ratio");
  double sum32 = 0, sum8 = 0;
  for (const Shape& s : shapes) {
    const auto x = normal(s.R * s.I, 1), W = normal(s.O * s.I, 2), dy = normal(s.R * s.O, 3);
    std::vector<float> y(size_t(s.R * s.O)), dx(size_t(s.R * s.I)), dW(size_t(s.O * s.I));
    using namespace troupe::kernels;
    double f32 = 0, f8 = 0, b32 = 0, b8 = 0;
    for (int round = 0; round < 2; ++round) {  // alternate, so both see the same load
      f32 = best_seconds(
          [&] { linear_forward<float>(x.data(), W.data(), y.data(), s.R, s.I, s.O); }, samples);
      f8 = best_seconds([&] { fp8_linear_forward(x.data(), W.data(), y.data(), s.R, s.I, s.O); },
                        samples);
      b32 = best_seconds(
          [&] {
            linear_backward<float>(dy.data(), x.data(), W.data(), dx.data(), dW.data(), s.R, s.I,
                                   s.O);
          },
          samples);
      b8 = best_seconds(
          [&] {
            fp8_linear_backward(dy.data(), x.data(), W.data(), dx.data(), dW.data(), s.R, s.I, s.O);
          },
          samples);
    }
    sum32 += f32 + b32, sum8 += f8 + b8;
    char name[32];
    std::snprintf(name, sizeof name, "%ldx%ld->%ld", long(s.R), long(s.I), long(s.O));
    std::printf("%-16s %12.1f %12.1f %7.2fx   %12.1f %12.1f %7.2fx\n", name, f32 * 1e6, f8 * 1e6,
                f8 / f32, b32 * 1e6, b8 * 1e6, b8 / b32);
  }
  std::printf("all shapes, forward + backward: emulated FP8 %.2fx the FP32 Linear's time\n",
              sum8 / sum32);
  return 0;
}
