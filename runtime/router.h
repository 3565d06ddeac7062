// The router: one CAF actor per process that maps addresses "node/role.index" to local
// actors and hands everything else to the fabric (DESIGN §2). It keeps the door's word:
// the fabric admits a peer only after the mutual HMAC-SHA256 handshake over the job secret
// (runtime/bootstrap.h) and says who it proved to be (on_peer_up, handed here by Host as
// peer_up_atom); a message from a peer not bound to a node, or whose sender names another
// node than the bound one, is dropped and counted. Nodes it has no endpoint for are
// connected on first use, from the addresses the coordinator's view gives it.
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
//   (peer_up_atom, peer, PeerInfo)  the fabric admitted a peer: bind it, or a Join for a new node
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

// Messages held for a node while its connection is being opened and authenticated. A
// handshake takes two round trips (bootstrap.h); past this the node is not answering and messages
// are dropped and counted (send_errors) rather than growing without bound.
inline constexpr size_t waiting_messages_max = 4096;

struct RouterConfig {
  Fabric* fabric = nullptr;  // outlives the router; it runs the handshakes
  std::string node_id;       // "" until the coordinator assigns one
};

// Spawns the router. The fabric's handlers must forward to it: see Host (host.h).
caf::actor spawn_router(caf::actor_system& system, RouterConfig config);

// Converts a fabric message to an ActorMessage whose payloads keep its storage alive.
ActorMessage to_actor_message(Message&& m);

}  // namespace troupe::runtime
