#pragma once
// Fork-join over independent work items: the one threading primitive of the compute code.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace troupe::kernels {

// Runs fn(i, worker) for i in [0, n) on `threads` threads (worker in [0, threads)).
// Items are claimed dynamically: which thread runs an item never affects its result,
// because an item's computation reads only its own inputs and writes only its outputs.
// An item that throws ends the loop: no item is claimed after it, and the first exception
// is rethrown on the calling thread once every thread has stopped (never std::terminate).
inline void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int)>& fn) {
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n)));
  if (threads == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr first;
  std::mutex first_mu;
  std::vector<std::thread> pool;
  for (int w = 0; w < threads; ++w)
    pool.emplace_back([&, w] {
      try {
        for (int64_t i = next++; i < n; i = next++) fn(i, w);
      } catch (...) {
        next = n;  // the others stop after their current item
        std::lock_guard<std::mutex> lock(first_mu);
        if (!first) first = std::current_exception();
      }
    });
  for (auto& t : pool) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace troupe::kernels
