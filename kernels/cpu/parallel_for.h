#pragma once
// Fork-join over independent work items: the one threading primitive of the compute code.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace troupe::kernels {

// Runs fn(i, worker) for i in [0, n) on `threads` threads (worker in [0, threads)).
// Items are claimed dynamically: which thread runs an item never affects its result,
// because an item's computation reads only its own inputs and writes only its outputs.
inline void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int)>& fn) {
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n)));
  if (threads == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w)
    pool.emplace_back([&, w] {
      for (int64_t i = next++; i < n; i = next++) fn(i, w);
    });
  for (auto& t : pool) t.join();
}

}  // namespace troupe::kernels
