// bench_gemm: troupe's deterministic sgemm next to OpenBLAS sgemm on the model's shapes,
// both single-threaded, as a ratio from the same run; plus the machine's sgemm peak
// (OpenBLAS 2048³, one thread and all threads) as the anchor for both.
//
// Usage: bench_gemm [--quick]   (--quick: fewer rounds, for smoke runs)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/gemm.h"

namespace {

using troupe::kernels::Trans;

// One timed sample repeats the call until it lasts this long, so the clock's resolution
// and call overheads are small next to it.
constexpr double sample_duration_s = 0.02;
// Samples per variant; the best one is reported (the machine is shared, so the minimum is
// the figure least disturbed by other processes). Variants alternate sample by sample so
// both see the same background load.
constexpr int samples_per_variant = 7;

struct Shape {
  int64_t M, N, K;
  Trans ta, tb;
  const char* role;
};

// Linear layers of the model, (I, O) ∈ {(128,128), (128,384), (384,128), (128,258)} with
// R = 256 tokens: forward y = x·Wᵀ (NT, R×O×I), dx = dy·W (NN, R×I×O), dW = dyᵀ·x (TN,
// O×I×R). Plus the TT form once, for coverage.
const std::vector<Shape>& model_shapes() {
  static const std::vector<Shape> shapes = {
      {256, 128, 128, Trans::N, Trans::T, "fwd"},  {256, 384, 128, Trans::N, Trans::T, "fwd"},
      {256, 128, 384, Trans::N, Trans::T, "fwd"},  {256, 258, 128, Trans::N, Trans::T, "fwd"},
      {256, 128, 128, Trans::N, Trans::N, "dx"},   {256, 128, 384, Trans::N, Trans::N, "dx"},
      {256, 384, 128, Trans::N, Trans::N, "dx"},   {256, 128, 258, Trans::N, Trans::N, "dx"},
      {128, 128, 256, Trans::T, Trans::N, "dW"},   {384, 128, 256, Trans::T, Trans::N, "dW"},
      {128, 384, 256, Trans::T, Trans::N, "dW"},   {258, 128, 256, Trans::T, Trans::N, "dW"},
      {256, 128, 128, Trans::T, Trans::T, "tt"},   {32, 128, 128, Trans::N, Trans::T, "fwd"},
      {512, 512, 512, Trans::N, Trans::T, "fwd"},
  };
  return shapes;
}

const char* trans_name(Trans ta, Trans tb) {
  if (ta == Trans::N) return tb == Trans::N ? "NN" : "NT";
  return tb == Trans::N ? "TN" : "TT";
}

// Deterministic fill in [-1, 1) (a 64-bit LCG; no global random state).
void fill(std::vector<float>& v, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : v) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    f = float(int64_t(x >> 40) - (int64_t(1) << 23)) / float(1 << 23);
  }
}

using Clock = std::chrono::steady_clock;

// Seconds per call: calibrates a repeat count for one sample, then returns the best of
// `samples` samples of each variant, alternating variants.
std::vector<double> best_seconds(const std::vector<std::function<void()>>& variants, int samples) {
  std::vector<int64_t> reps(variants.size(), 1);
  for (size_t v = 0; v < variants.size(); ++v) {
    for (;;) {
      auto t0 = Clock::now();
      for (int64_t r = 0; r < reps[v]; ++r) variants[v]();
      double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (s >= sample_duration_s / 4) {
        reps[v] = std::max<int64_t>(1, int64_t(double(reps[v]) * sample_duration_s / s));
        break;
      }
      reps[v] *= 4;
    }
  }
  std::vector<double> best(variants.size(), 1e30);
  for (int s = 0; s < samples; ++s) {
    for (size_t v = 0; v < variants.size(); ++v) {
      auto t0 = Clock::now();
      for (int64_t r = 0; r < reps[v]; ++r) variants[v]();
      double t = std::chrono::duration<double>(Clock::now() - t0).count() / double(reps[v]);
      best[v] = std::min(best[v], t);
    }
  }
  return best;
}

struct Operands {
  std::vector<float> a, b, c;
  int64_t lda, ldb, ldc;
  explicit Operands(const Shape& s) {
    lda = s.ta == Trans::N ? s.K : s.M;
    ldb = s.tb == Trans::N ? s.N : s.K;
    ldc = s.N;
    a.resize(size_t(s.M * s.K));
    b.resize(size_t(s.K * s.N));
    c.resize(size_t(s.M * s.N));
    fill(a, 1);
    fill(b, 2);
  }
};

double gflops(const Shape& s, double seconds) {
  return 2.0 * double(s.M) * double(s.N) * double(s.K) / seconds * 1e-9;
}

double blas_peak_gflops(int threads, int samples) {
  const Shape s{2048, 2048, 2048, Trans::N, Trans::N, "peak"};
  Operands o(s);
  troupe::kernels::blas_set_num_threads(threads);
  auto run = [&] {
    troupe::kernels::blas_sgemm(s.ta, s.tb, s.M, s.N, s.K, o.a.data(), o.lda, o.b.data(), o.ldb,
                                0.0f, o.c.data(), o.ldc);
  };
  run();  // warm-up: page faults, OpenBLAS thread start
  double best = 1e30;
  for (int i = 0; i < samples; ++i) {
    auto t0 = Clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return gflops(s, best);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int samples = quick ? 2 : samples_per_variant;
  const int hw_threads = int(std::max(1u, std::thread::hardware_concurrency()));

  const double peak1 = blas_peak_gflops(1, quick ? 1 : 3);
  const double peak_all = blas_peak_gflops(hw_threads, quick ? 1 : 3);
  std::printf("peak: openblas sgemm 2048x2048x2048  1 thread %.1f GFLOP/s  %d threads %.1f "
              "GFLOP/s\n",
              peak1, hw_threads, peak_all);

  troupe::kernels::blas_set_num_threads(1);
  double log_ratio_sum = 0;
  double worst = 1e30;
  for (const Shape& s : model_shapes()) {
    Operands ours(s), theirs(s);
    auto run_ours = [&] {
      troupe::kernels::gemm<float>(s.ta, s.tb, s.M, s.N, s.K, ours.a.data(), ours.lda,
                                   ours.b.data(), ours.ldb, 0.0f, ours.c.data(), ours.ldc);
    };
    auto run_blas = [&] {
      troupe::kernels::blas_sgemm(s.ta, s.tb, s.M, s.N, s.K, theirs.a.data(), theirs.lda,
                                  theirs.b.data(), theirs.ldb, 0.0f, theirs.c.data(),
                                  theirs.ldc);
    };
    std::vector<double> t = best_seconds({run_ours, run_blas}, samples);
    const double g_ours = gflops(s, t[0]), g_blas = gflops(s, t[1]);
    const double ratio = g_ours / g_blas;
    log_ratio_sum += std::log(ratio);
    worst = std::min(worst, ratio);
    std::printf("shape %4ldx%4ldx%4ld %s %-3s: troupe %6.1f GFLOP/s  openblas %6.1f GFLOP/s  "
                "ratio %.2f  (of 1-thread peak: %.2f)\n",
                long(s.M), long(s.N), long(s.K), trans_name(s.ta, s.tb), s.role, g_ours, g_blas,
                ratio, g_ours / peak1);
  }
  std::printf("summary: troupe/openblas geometric mean %.2f, worst %.2f over %zu shapes\n",
              std::exp(log_ratio_sum / double(model_shapes().size())), worst,
              model_shapes().size());
  return 0;
}
