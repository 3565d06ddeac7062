// The router: one CAF actor per process that maps addresses "node/role.index" to local
// actors and hands everything else to the fabric (DESIGN §2). It keeps the door's word:
// the fabric admits a peer only after the mutual HMAC-SHA256 handshake over the job secret
// (runtime/bootstrap.h) and says who it proved to be (on_peer_up, handed here by Host as
// peer_up_atom); a message from a peer not bound to a node, or whose sender names another
// node than the bound one, is dropped and counted; so is one from a node the view evicted,
// named as such. Every refusal, the door's and these, goes to the refusal watchers (the
// coordinator: events.jsonl), at most one per source and cause a second and a summary of
// the rest (refusals.h). Nodes it has no endpoint for are
// connected on first use, from the addresses the coordinator's view gives it.
//
// Commands (actor_message.h atoms):
//   ActorMessage                    route (local actor, bound peer, or msg.peer if set)
//   (register_atom, name, actor)    local actor "role.index" receives ActorMessages, and
//                                   first those held for it (unclaimed_messages_max)
//   (bind_atom, node, peer)         the peer is that node (the coordinator admits joins)
//   (address_atom, node, host:port) where to connect for that node
//   (epoch_atom, epoch)             stamp outbound messages; older inbound ones are dropped
//   (watch_atom, actor)             receives (node_down_atom, node, why)
//   (refusals_atom, actor)          receives (refused_atom, ConnectionRefusal), throttled
//   (refused_atom, ConnectionRefusal) the fabric's door refused a connection (Host hands it)
//   (evict_atom, node, epoch)       as forget_atom; its later messages are refused as evicted
//   (counters_atom)                 replies RouterCounters
//   (connect_atom, host:port)       connect and handshake now (a node joining its coordinator)
//   (peer_up_atom, peer, PeerInfo)  the fabric admitted a peer: bind it, or a Join for a new node
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "runtime/actor_message.h"
#include "runtime/fabric.h"

namespace troupe::runtime {

using connect_atom = caf::atom_constant<caf::atom("connect")>;
// (node id): the view dropped this node; forget it (its messages are then dropped as
// unauthenticated, besides their stale epoch) and its address.
using forget_atom = caf::atom_constant<caf::atom("forget")>;
// (node id, epoch): the view of that epoch dropped this node as lost (missed heartbeats, a
// dead endpoint, fenced): forgotten as by forget_atom, and its late messages are refused as
// an evicted node's, naming the epoch, rather than as a stranger's.
using evict_atom = caf::atom_constant<caf::atom("evict")>;
using node_id_atom = caf::atom_constant<caf::atom("nodeid")>;  // (id): this process's node id

// Evicted peers remembered to name their late messages (evict_atom). A job loses a few nodes
// in its life; past this the oldest are forgotten and their messages count as unbound.
inline constexpr size_t evicted_peers_max = 1024;

// Messages held for a node while its connection is being opened and authenticated. A
// handshake takes two round trips (bootstrap.h); past this the node is not answering and messages
// are dropped and counted (send_errors) rather than growing without bound.
inline constexpr size_t waiting_messages_max = 4096;

// Messages for a local name no actor has registered yet: a role still starting (a rollout
// registers from its own thread once its model is built) may be asked for work before it
// can answer, and a message dropped then is never asked again. They are held, at most this
// many and unclaimed_bytes_max of payload in all, and delivered in order when the name registers;
// one not claimed within the wait (RouterConfig::unclaimed_wait_ms) is dropped and counted
// (dropped_no_actor).
inline constexpr size_t unclaimed_messages_max = 4096;
inline constexpr size_t unclaimed_bytes_max = size_t{256} << 20;

class DirectInbound;

struct RouterConfig {
  Fabric* fabric = nullptr;  // outlives the router; it runs the handshakes
  // The fabric thread's shortcut to local actors that the router keeps current
  // (direct_inbound.h); null: every message goes through the router.
  std::shared_ptr<DirectInbound> direct;
  std::string node_id;                                 // "" until the coordinator assigns one
  std::chrono::milliseconds unclaimed_wait_ms{30000};  // see unclaimed_messages_max
};

// Spawns the router. The fabric's handlers must forward to it: see Host (host.h).
caf::actor spawn_router(caf::actor_system& system, RouterConfig config);

// Converts a fabric message to an ActorMessage whose payloads keep its storage alive.
ActorMessage to_actor_message(Message&& m);

}  // namespace troupe::runtime
