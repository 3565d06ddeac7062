#pragma once
// The counter-based generator of SPEC §8: splitmix64 over a key. A draw is a pure
// function of (seed, purpose, step, micro_batch, index) — there is no stream state, so
// any process can reproduce any draw. Documented convention:
//   key  = mix(mix(mix(mix(seed) ^ purpose) ^ step) ^ micro_batch)   (mix = splitmix64)
//   u64  = mix(key ^ mix(index))
//   uniform in [0,1): (u64 >> 11) · 2^-53;  normal: Box–Muller on uniforms of indices
//   2i and 2i+1 (cos branch), so normal(i) never shares draws with normal(j≠i).
#include <cmath>
#include <cstdint>
#include <string_view>

namespace troupe::model {

constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// FNV-1a of a name: the `purpose` of a parameter tensor's initialisation.
constexpr uint64_t purpose_of(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t purpose, uint64_t step = 0, uint64_t micro_batch = 0)
      : key_(splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ purpose) ^ step) ^ micro_batch)) {}
  uint64_t bits(uint64_t index) const { return splitmix64(key_ ^ splitmix64(index)); }
  double uniform(uint64_t index) const {
    return static_cast<double>(bits(index) >> 11) * 0x1.0p-53;
  }
  double normal(uint64_t index) const {
    double u1 = uniform(2 * index), u2 = uniform(2 * index + 1);
    if (u1 < 0x1.0p-60) u1 = 0x1.0p-60;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t key_;
};

}  // namespace troupe::model
