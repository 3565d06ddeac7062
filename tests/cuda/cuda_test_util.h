#pragma once
// Helpers for tests/cuda: host <-> device copies that fail the test loudly, and the error
// measure the GPU-vs-CPU comparisons use.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "tests/kernels/test_util.h"

namespace troupe::kernels::cuda::test {

// A device copy of v (GoogleTest reports the exception as a failure).
template <typename T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b;
  if (Status s = b.allocate(v.size() * sizeof(T)); !s.ok()) throw std::runtime_error(s.error);
  if (Status s = b.upload(v.data(), v.size() * sizeof(T)); !s.ok()) {
    throw std::runtime_error(s.error);
  }
  return b;
}

// The whole buffer back on the host, after the queued work (and its errors) are done.
template <typename T>
std::vector<T> download(const DeviceBuffer& b) {
  if (Status s = synchronize(); !s.ok()) throw std::runtime_error(s.error);
  std::vector<T> v(b.size() / sizeof(T));
  if (Status s = b.download(v.data(), v.size() * sizeof(T)); !s.ok()) {
    throw std::runtime_error(s.error);
  }
  return v;
}

// max_i |got_i − want_i| / max(|want_i|, 1): relative, with an absolute floor near zero.
// NaN anywhere, or a size mismatch, gives +inf.
inline double max_rel_diff(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d / std::max(std::fabs(double(want[i])), 1.0));
  }
  return worst;
}

}  // namespace troupe::kernels::cuda::test
