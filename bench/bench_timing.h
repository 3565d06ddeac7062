// What the CPU benchmarks share: thread CPU time, the best time per call over samples, and
// reproducible inputs from the counter RNG.
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "model/rng.h"

namespace troupe::bench {

// CPU time of the calling thread, in seconds.
inline double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Best time per call over `samples` samples of about `sample_s` seconds each (thread CPU
// time: the machine is shared; the best discounts other processes' cache disturbance).
inline double best_seconds(const std::function<void()>& fn, int samples, double sample_s) {
  fn();
  double best = 1e30;
  for (int s = 0; s < samples; ++s) {
    int calls = 0;
    const double t0 = thread_seconds();
    double t = t0;
    while (t - t0 < sample_s) {
      fn();
      ++calls;
      t = thread_seconds();
    }
    best = std::min(best, (t - t0) / calls);
  }
  return best;
}

// n standard normal values, the same in every run.
inline std::vector<float> normal(int64_t n, uint64_t purpose) {
  const model::CounterRng rng(7, purpose);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(rng.normal(uint64_t(i)));
  return v;
}

}  // namespace troupe::bench
