// The step and the epoch this process is on, for the layers that must not know what a step is (a
// fault plan's `steps` window, chaos/fault_plan.h). One process-wide atomic: the worker sets it
// when a training step begins on it, the coordinator's driver when it begins one. -1 until the
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

// The newest epoch this process's node agent has heard of (its Welcome, each View): compute
// blocked on other nodes (actors/expert_client.cc) gives up its step when a view change
// makes that step moot. 0 until the Welcome, and in processes without an agent.
inline std::atomic<uint64_t>& node_epoch_slot() {
  static std::atomic<uint64_t> epoch{0};
  return epoch;
}
inline uint64_t node_epoch() {
  return node_epoch_slot().load(std::memory_order_acquire);
}
// Called by runtime/node_agent.cc; never lowers it.
inline void raise_node_epoch(uint64_t epoch) {
  uint64_t have = node_epoch_slot().load(std::memory_order_relaxed);
  while (have < epoch && !node_epoch_slot().compare_exchange_weak(have, epoch)) {
  }
}

}  // namespace troupe::runtime
