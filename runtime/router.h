// The router: one CAF actor per process that maps addresses "node/role.index" to local
// actors and hands everything else to the fabric (DESIGN §2). It also guards the door:
// every new connection must complete a mutual HMAC-SHA256 handshake over the job secret
// (hello → challenge → proof → verdict, control.proto) before anything else from it is
// delivered, and a message whose sender names another node than the admitted peer is
// dropped and counted. Nodes it has no endpoint for are connected on first use, from the
// addresses the coordinator's view gives it.
//
// Commands (actor_message.h atoms):
//   ActorMessage                    route (local actor, bound peer, or msg.peer if set)
//   (register_atom, name, actor)    local actor "role.index" receives ActorMessages
//   (bind_atom, node, peer)         the peer is that node (the coordinator admits joins)
//   (address_atom, node, host:port) where to connect for that node
//   (epoch_atom, epoch)             stamp outbound messages; older inbound ones are dropped
//   (watch_atom, actor)             receives (node_down_atom, node, why)
//   (counters_atom)                 replies RouterCounters
//   (connect_atom, host:port)       connect and handshake now (a node joining its coordinator)
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <string>

#include "runtime/actor_message.h"
#include "runtime/fabric.h"

namespace troupe::runtime {

using connect_atom = caf::atom_constant<caf::atom("connect")>;
// (node id): the view dropped this node; forget it (its messages are then dropped as
// unauthenticated, besides their stale epoch) and its address.
using forget_atom = caf::atom_constant<caf::atom("forget")>;
using node_id_atom = caf::atom_constant<caf::atom("nodeid")>;  // (id): this process's node id
using listen_atom = caf::atom_constant<caf::atom("listen")>;   // (host:port) we accept on

// Messages held for a node while its connection is being opened and authenticated. A
// handshake takes a few round trips; past this the node is not answering and messages
// are dropped and counted (send_errors) rather than growing without bound.
inline constexpr size_t waiting_messages_max = 4096;

struct RouterConfig {
  Fabric* fabric = nullptr;    // outlives the router
  std::string node_id;         // "" until the coordinator assigns one
  std::string secret;          // the job secret (auth.h)
  std::string listen_address;  // host:port where this process accepts connections
};

// Spawns the router. The fabric's handlers must forward to it: see Host (host.h).
caf::actor spawn_router(caf::actor_system& system, RouterConfig config);

// Converts a fabric message to an ActorMessage whose payloads keep its storage alive.
ActorMessage to_actor_message(Message&& m);

}  // namespace troupe::runtime
