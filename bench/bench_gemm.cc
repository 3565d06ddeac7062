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
#include <ctime>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "model/rng.h"

namespace {

using troupe::kernels::Trans;

// The machine is shared (2 cores, several engineers building), so single-threaded runs
// are timed in this thread's CPU time, which excludes the time other processes hold the
// core; each sample is short and the best of many is reported, which also discounts the
// caches they disturb. Variants alternate sample by sample so both see the same load.
constexpr double sample_duration_s = 0.003;
constexpr int samples_per_variant = 40;
// The 2048³ peak runs take ~0.2 s each, so fewer of them. The all-threads peak can only
// be timed on the wall clock, so it is low whenever other processes run.
constexpr int peak_samples = 5;

struct Shape {
  int64_t M, N, K;
  Trans ta, tb;
  const char* role;
};

// Linear layers of the model, (I, O) ∈ {(128,128), (128,384), (384,128), (128,258)} with
// R = 256 tokens: forward y = x·Wᵀ (NT, R×O×I), dx = dy·W (NN, R×I×O), dW = dyᵀ·x (TN,
// O×I×R). Plus the TT form once for coverage, a 32-token call (small M: packing B
// dominates) and 512³.
const std::vector<Shape>& model_shapes() {
  static const std::vector<Shape> shapes = {
      {256, 128, 128, Trans::N, Trans::T, "fwd"}, {256, 384, 128, Trans::N, Trans::T, "fwd"},
      {256, 128, 384, Trans::N, Trans::T, "fwd"}, {256, 258, 128, Trans::N, Trans::T, "fwd"},
      {256, 128, 128, Trans::N, Trans::N, "dx"},  {256, 128, 384, Trans::N, Trans::N, "dx"},
      {256, 384, 128, Trans::N, Trans::N, "dx"},  {256, 128, 258, Trans::N, Trans::N, "dx"},
      {128, 128, 256, Trans::T, Trans::N, "dW"},  {384, 128, 256, Trans::T, Trans::N, "dW"},
      {128, 384, 256, Trans::T, Trans::N, "dW"},  {258, 128, 256, Trans::T, Trans::N, "dW"},
      {256, 128, 128, Trans::T, Trans::T, "tt"},  {32, 128, 128, Trans::N, Trans::T, "fwd"},
      {512, 512, 512, Trans::N, Trans::T, "fwd"},
  };
  return shapes;
}

const char* trans_name(Trans ta, Trans tb) {
  if (ta == Trans::N) return tb == Trans::N ? "NN" : "NT";
  return tb == Trans::N ? "TN" : "TT";
}

// Values uniform in [-1, 1) from the counter RNG: the same data in every run.
void fill(std::vector<float>& v, uint64_t seed) {
  const troupe::model::CounterRng rng(seed, troupe::model::purpose_of("bench_gemm"));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(2.0 * rng.uniform(i) - 1.0);
}

// CPU time of the calling thread, in seconds.
double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per call: calibrates a repeat count for one sample, then returns the best of
// `samples` samples of each variant, alternating variants.
std::vector<double> best_seconds(const std::vector<std::function<void()>>& variants, int samples) {
  std::vector<int64_t> reps(variants.size(), 1);
  for (size_t v = 0; v < variants.size(); ++v) {
    for (;;) {
      const double t0 = thread_seconds();
      for (int64_t r = 0; r < reps[v]; ++r) variants[v]();
      const double s = thread_seconds() - t0;
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
      const double t0 = thread_seconds();
      for (int64_t r = 0; r < reps[v]; ++r) variants[v]();
      const double t = (thread_seconds() - t0) / double(reps[v]);
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

// max |x − y| / max |y|: float GEMMs of K ≤ 512 values in [-1, 1) agree to ~1e-6.
constexpr double results_rel_diff_max = 1e-4;
double max_relative_difference(const std::vector<float>& x, const std::vector<float>& y) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::fabs(double(x[i]) - double(y[i])));
    scale = std::max(scale, std::fabs(double(y[i])));
  }
  return diff / std::max(scale, 1e-30);
}

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
  // One thread runs in this thread: its CPU time. More: the wall clock.
  auto clock = threads == 1 ? thread_seconds : wall_seconds;
  run();  // warm-up: page faults, OpenBLAS thread start
  double best = 1e30;
  for (int i = 0; i < samples; ++i) {
    const double t0 = clock(), t = (run(), clock() - t0);
    best = std::min(best, t);
  }
  return gflops(s, best);
}

// The first field of /proc/loadavg, to read the all-threads figure against.
std::string load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return "unknown";
  char buf[64] = {0};
  const bool ok = std::fscanf(f, "%63s", buf) == 1;
  std::fclose(f);
  return ok ? buf : "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int samples = quick ? 4 : samples_per_variant;
  const int hw_threads = int(std::max(1u, std::thread::hardware_concurrency()));

  const double peak1 = blas_peak_gflops(1, quick ? 1 : peak_samples);
  const double peak_all = blas_peak_gflops(hw_threads, quick ? 1 : peak_samples);
  std::printf(
      "peak: openblas sgemm 2048x2048x2048  1 thread %.1f GFLOP/s (CPU time)  "
      "%d threads %.1f GFLOP/s (wall clock; load average %s)\n",
      peak1, hw_threads, peak_all, load_average().c_str());

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
                                  theirs.b.data(), theirs.ldb, 0.0f, theirs.c.data(), theirs.ldc);
    };
    std::vector<double> t = best_seconds({run_ours, run_blas}, samples);
    // Both computed the same product (up to rounding), or the timing compares nothing.
    const double diff = max_relative_difference(ours.c, theirs.c);
    if (diff > results_rel_diff_max) {
      std::printf("shape %ldx%ldx%ld %s: troupe and openblas differ by %.2e (max %.0e)\n",
                  long(s.M), long(s.N), long(s.K), trans_name(s.ta, s.tb), diff,
                  results_rel_diff_max);
      return 1;
    }
    const double g_ours = gflops(s, t[0]), g_blas = gflops(s, t[1]);
    const double ratio = g_ours / g_blas;
    log_ratio_sum += std::log(ratio);
    worst = std::min(worst, ratio);
    std::printf(
        "shape %4ldx%4ldx%4ld %s %-3s: troupe %6.1f GFLOP/s  openblas %6.1f GFLOP/s  "
        "ratio %.2f  (of 1-thread peak: %.2f)\n",
        long(s.M), long(s.N), long(s.K), trans_name(s.ta, s.tb), s.role, g_ours, g_blas, ratio,
        g_ours / peak1);
  }
  std::printf("summary: troupe/openblas geometric mean %.2f, worst %.2f over %zu shapes\n",
              std::exp(log_ratio_sum / double(model_shapes().size())), worst,
              model_shapes().size());
  return 0;
}
