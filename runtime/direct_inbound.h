// The fabric thread's way past the router (issue 15, item 1). A message from a remote node
// went fabric thread → router's mailbox → router → the actor's mailbox: two CAF mailbox
// hops and a resume of the router for every message. The router now publishes what its
// inbound check reads (which node each admitted peer is, which local names are registered)
// into a DirectInbound that the fabric's thread reads: a message whose peer is bound to the
// node its `from` names, for a registered name, goes straight to that actor's mailbox.
// Everything else (unbound, evicted or spoofing peers, names not registered yet, the
// fabric's peer events) still goes to the router, which refuses, holds or counts it as before.
//
// Order. A sender's messages reach an actor in the order the fabric delivered them: the
// fabric thread takes the shortcut only while nothing it handed the router is still
// unhandled (`pending`), and the router publishes a change before it counts the event that
// made it handled. So a message held for a name that registers later, or one queued behind
// a peer's admission, reaches its actor before any message that came after it.
//
// A simulation (a Host on CAF's test coordinator) has none: its event trace stays the
// router's.
#pragma once

#include <atomic>
#include <caf/actor.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "runtime/actor_message.h"

namespace troupe::runtime {

class DirectInbound {
 public:
  // Fabric thread: delivers `m` to its local actor and returns true where the router would
  // have delivered it at once; otherwise leaves `m` as it was and returns false, and the
  // caller hands it (and every other fabric event) to the router through to_router().
  bool deliver(ActorMessage& m);
  // Fabric thread, before it hands the router an event (a message, a peer up or down, a
  // refusal); the router calls handled() once it has acted on it.
  void to_router() { pending_.fetch_add(1, std::memory_order_acq_rel); }
  void handled() { pending_.fetch_sub(1, std::memory_order_acq_rel); }

  // Router: what its inbound check reads, after every change.
  void bind(PeerId peer, const std::string& node);
  void unbind(PeerId peer);
  void register_name(const std::string& name, const caf::actor& actor);

  // Messages this shortcut delivered (the router adds them to its counters).
  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::atomic<int64_t> pending_{0};
  std::atomic<uint64_t> delivered_{0};
  std::mutex mutex_;  // the fabric thread's reads against the router's writes
  std::unordered_map<PeerId, std::string> node_of_peer_;
  std::unordered_map<std::string, caf::actor, Hash, std::equal_to<>> locals_;
};

}  // namespace troupe::runtime
