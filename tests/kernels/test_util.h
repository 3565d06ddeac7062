#pragma once
// Shared helpers for tests/kernels: deterministic test data from the project's counter
// RNG (model/rng.h, header-only), so the same seed always gives the same values.
#include <cstdint>
#include <vector>

#include "model/rng.h"

namespace troupe::kernels::test {

// n values uniform in [-1, 1), a pure function of (n, seed).
template <typename T>
std::vector<T> random_values(int64_t n, uint64_t seed) {
  const model::CounterRng rng(seed, model::purpose_of("tests/kernels"));
  std::vector<T> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = T(2.0 * rng.uniform(i) - 1.0);
  return v;
}

}  // namespace troupe::kernels::test
