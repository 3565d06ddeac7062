// The CAF scheduler a Host runs by default (TROUPE_CAF_POLICY=sharing or =stealing picks
// another; docs/architecture.md, "Threads"): CAF's work sharing (one job queue, worker threads that
// block on it), plus the fabric's progress thread lent to it while that thread polls anyway
// (FabricGuest, fabric.h). A message from the network then reaches its actor, and the
// actor's reply reaches the transport, on the thread that received it: no other thread is
// woken on the way. Measured with bench_actors before this (8 B ping-pong between two node
// processes, 2 loaded cores): of a 21 us one-way, 9.5 us went to waking the CAF worker for
// each received message and 3.4 us to handing each send to the progress thread's queue.
//
// While the progress thread is lent, new jobs wait for it instead of waking a worker; while
// it sleeps, or its send window is full, or it closes, it steps aside and jobs wake a worker
// as under plain work sharing. Either thread may run any event-based actor; CAF still runs
// each actor on one thread at a time, and each sender's messages arrive in order.
#pragma once

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <cstddef>
#include <memory>

#include "runtime/fabric.h"

namespace troupe::runtime {

// Messages one actor may handle each time the lent thread resumes it, and actors it resumes
// before it polls the transport again. An actor handler here takes about a microsecond (the
// router's); 32 x 8 keeps the transport polled every few hundred microseconds under a burst
// (UCX's shared-memory receive queue drains only while polled) while a burst of small
// messages to one actor still goes through in batches.
inline constexpr size_t lent_messages_per_resume = 32;
inline constexpr size_t lent_jobs_per_poll = 8;

// Makes `config`'s actor system use this scheduler. Call before the system is made.
void use_lent_scheduler(caf::actor_system_config& config);

// The guest that lends a fabric's thread to `system`'s scheduler, for FabricHandlers::guest.
// Null when the system runs another scheduler (a simulation's deterministic one).
std::shared_ptr<FabricGuest> make_scheduler_guest(caf::actor_system& system);

}  // namespace troupe::runtime
