// What actors exchange: an addressed message with a typed header and raw payloads. Actors
// hand it to their process's router (runtime/router.h), which delivers it to a local actor
// or sends it over the fabric; actors never touch the fabric. Addresses are
// "node/role.index" (DESIGN §2), e.g. "n3/worker.2"; "n0" is the coordinator's process.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/fabric.h"

namespace troupe::runtime {

// Message types below control_types_end (fabric.h) are the runtime's own (membership:
// control.proto); roles number theirs from there up. The handshake's four never travel
// as envelopes any more (bootstrap.h runs it on its own connection); their numbers stay
// reserved so that the others keep theirs.
enum ControlType : uint32_t {
  hello_type = 1,
  challenge_type,
  proof_type,
  verdict_type,
  welcome_type,
  view_type,
  heartbeat_type,
  shutdown_type,
  join_type,  // router → local coordinator: a peer passed the handshake as a new node
  node_error_type,
  rejoin_type,  // node agent → a restarted coordinator: this node is back, with its roles
};

// Raw bytes that travel beside the header, uncopied between local actors. `keep` holds the
// memory alive (null when the sender guarantees its lifetime by protocol: say so there).
struct Payload {
  std::shared_ptr<const void> keep;
  std::span<const std::byte> bytes;
};

// Text as a message payload (an envelope holds at most envelope_bytes_max: a checkpoint
// manifest travels beside it), and back.
inline Payload text_payload(std::string text) {
  auto keep = std::make_shared<std::string>(std::move(text));
  return {keep, std::as_bytes(std::span<const char>(keep->data(), keep->size()))};
}
inline std::string payload_text(const Payload& p) {
  return std::string(reinterpret_cast<const char*>(p.bytes.data()), p.bytes.size());
}

struct ActorMessage {
  // Inbound: the fabric peer it came from (peer_none if local). Outbound: when set, the
  // router sends to this peer instead of resolving `to` (replies during bootstrap).
  PeerId peer = peer_none;
  // The sender's epoch: stamped by its router when 0; a role that acts in a given epoch
  // (a worker between a view change and its recovery) stamps that one itself.
  uint64_t epoch = 0;
  std::string from, to;
  uint32_t type = 0;
  std::string header;
  std::vector<Payload> payloads;
};

// "n3/worker.2" → node "n3", role "worker", index 2. False for anything else.
struct Address {
  std::string node, role;
  int64_t index = 0;
};
bool parse_address(std::string_view text, Address* out);
std::string make_address(std::string_view node, std::string_view role, int64_t index);
inline std::string_view node_of(std::string_view address) {
  return address.substr(0, address.find('/'));
}

// Router commands (CAF atoms, at most 10 characters).
using inbound_atom = caf::atom_constant<caf::atom("inbound")>;     // from the fabric thread
using register_atom = caf::atom_constant<caf::atom("register")>;   // (name, actor)
using bind_atom = caf::atom_constant<caf::atom("bind")>;           // (node id, peer)
using address_atom = caf::atom_constant<caf::atom("address")>;     // (node id, host:port)
using epoch_atom = caf::atom_constant<caf::atom("epoch")>;         // (epoch)
using peer_down_atom = caf::atom_constant<caf::atom("peerdown")>;  // (peer, why)
using peer_up_atom = caf::atom_constant<caf::atom("peerup")>;      // (peer, PeerInfo)
using node_down_atom = caf::atom_constant<caf::atom("nodedown")>;  // to watchers: (node, why)
using watch_atom = caf::atom_constant<caf::atom("watch")>;         // (actor)
using counters_atom = caf::atom_constant<caf::atom("counters")>;   // → RouterCounters
using tick_atom = caf::atom_constant<caf::atom("tick")>;           // timers
// (actor): it receives (refused_atom, ConnectionRefusal) for every connection the door and
// message the router refused, throttled per source and cause (refusals.h).
using refusals_atom = caf::atom_constant<caf::atom("refusals")>;
using refused_atom = caf::atom_constant<caf::atom("refused")>;

struct RouterCounters {
  uint64_t delivered_local = 0, sent_remote = 0, received_remote = 0;
  uint64_t dropped_no_actor = 0;  // no local actor by that name registered in time
  uint64_t held_unclaimed = 0;    // held until their name registered (router.h), then delivered
  // Of delivered_local: by the fabric thread straight to the actor (direct_inbound.h).
  uint64_t delivered_direct = 0;
  // A message from a peer not bound to a node (admitted by the handshake, but not, or no
  // longer, a node of the view). Refused handshakes are the fabric's (FabricCounters).
  uint64_t dropped_unauthenticated = 0;
  uint64_t dropped_evicted = 0;  // from a node the view dropped as lost (evict_atom)
  uint64_t dropped_spoofed = 0;  // `from` names another node than the admitted peer
  uint64_t send_errors = 0;
};

}  // namespace troupe::runtime

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::ActorMessage)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::RouterCounters)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::PeerInfo)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(troupe::runtime::ConnectionRefusal)
