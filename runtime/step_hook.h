// The step this process is on, for the layers that must not know what a step is (a fault
// plan's `steps` window, chaos/fault_plan.h). One process-wide atomic: the worker sets it when
// a training step begins on it, the coordinator's driver when it begins one. -1 until the
// first step. Relaxed: it selects faults, it orders nothing.
#pragma once

#include <atomic>
#include <cstdint>

namespace troupe::runtime {

inline std::atomic<int64_t>& current_step_slot() {
  static std::atomic<int64_t> step{-1};
  return step;
}
inline int64_t current_step() {
  return current_step_slot().load(std::memory_order_relaxed);
}
// Called where a step begins (actors/worker.cc, actors/coordinator_driver.cc).
inline void set_current_step(int64_t step) {
  current_step_slot().store(step, std::memory_order_relaxed);
}

}  // namespace troupe::runtime
