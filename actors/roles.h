// The roles this binary knows. Each role's file registers its factory (runtime/roles.h);
// a new role adds a file here and one line to register_roles().
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/roles.h"

namespace troupe::actors {

void register_worker_role();
// The worker as register_worker_role spawns it (detached: its compute blocks), or on the
// actor system's scheduler (tests on CAF's deterministic test coordinator).
caf::actor spawn_worker(caf::actor_system& system, const runtime::RoleContext& ctx,
                        bool detached = true);

// expert_shard (issue 15): routed experts on physical slots, for the workers.
void register_expert_shard_role();
caf::actor spawn_expert_shard(caf::actor_system& system, const runtime::RoleContext& ctx,
                              bool detached = true);

// engram_shard (issue 16): whole Engram tables with their update, for the workers.
void register_engram_shard_role();
caf::actor spawn_engram_shard(caf::actor_system& system, const runtime::RoleContext& ctx,
                              bool detached = true);

// rollout (issue 17): GRPO groups sampled on the policy the owners stream to it.
void register_rollout_role();
caf::actor spawn_rollout(caf::actor_system& system, const runtime::RoleContext& ctx,
                         bool detached = true);

// Registers every role; call once at process start, before the node agent runs.
inline void register_roles() {
  register_worker_role();
  register_expert_shard_role();
  register_engram_shard_role();
  register_rollout_role();
}

}  // namespace troupe::actors
