#include "runtime/router.h"

#include <fmt/format.h>

#include <array>
#include <caf/all.hpp>
#include <deque>
#include <map>
#include <optional>
#include <span>

#include "runtime/control.pb.h"
#include "runtime/direct_inbound.h"
#include "runtime/log.h"
#include "runtime/refusals.h"

namespace troupe::runtime {

namespace {

using flush_refusals_atom = caf::atom_constant<caf::atom("flushref")>;
using sweep_unclaimed_atom = caf::atom_constant<caf::atom("sweepunc")>;

// A node the view evicted (evict_atom), remembered by the peer it was bound to.
struct Evicted {
  std::string node, address;
  uint64_t epoch = 0;
};

// A connection we opened; the fabric runs its handshake (bootstrap.h).
struct Outgoing {
  std::string target;  // the node we meant to reach ("" : the coordinator, id unknown)
  std::string address;
};

// A message for a local name not registered yet (router.h, unclaimed_messages_max).
struct Unclaimed {
  caf::actor_clock::time_point deadline;
  size_t bytes = 0;
  ActorMessage m;
};

struct RouterState {
  RouterConfig cfg;
  uint64_t epoch = 0;
  std::map<std::string, caf::actor> locals;       // "role.index" → actor
  std::map<std::string, PeerId> peer_of;          // admitted node → peer
  std::map<PeerId, std::string> node_of_peer;     // peer → admitted node
  std::map<std::string, std::string> address_of;  // node → host:port
  std::map<PeerId, Outgoing> outgoing;
  std::map<std::string, std::deque<ActorMessage>> waiting;  // node → messages until admitted
  std::map<std::string, std::deque<Unclaimed>> unclaimed;   // local name → held, oldest first
  size_t unclaimed_count = 0, unclaimed_bytes = 0;
  bool unclaimed_sweep_due = false;  // a sweep_unclaimed_atom is on its way
  std::vector<caf::actor> watchers;
  std::map<PeerId, Evicted> evicted;  // at most evicted_peers_max, the newest (ids grow)
  std::vector<caf::actor> refusal_watchers;
  RefusalThrottle refusals;
  bool refusal_flush_due = false;  // a flush_refusals_atom is on its way
  RouterCounters counters;
  static inline const char* name = "router";
};

using Self = caf::stateful_actor<RouterState>;

// node_of_peer and the fabric thread's copy of it (direct_inbound.h) change together.
void bind(RouterState& s, PeerId peer, const std::string& node) {
  s.node_of_peer[peer] = node;
  if (s.cfg.direct) s.cfg.direct->bind(peer, node);
}
void unbind(RouterState& s, PeerId peer) {
  s.node_of_peer.erase(peer);
  if (s.cfg.direct) s.cfg.direct->unbind(peer);
}

// An event the fabric's thread handed the router (Host counts it out) is handled when this
// goes out of scope, after what it changed was published (direct_inbound.h).
struct FromFabric {
  explicit FromFabric(Self* self) : direct(self->state.cfg.direct.get()) {}
  ~FromFabric() {
    if (direct) direct->handled();
  }
  FromFabric(const FromFabric&) = delete;
  FromFabric& operator=(const FromFabric&) = delete;
  DirectInbound* direct;
};

std::string local_part(const std::string& address) {
  const size_t slash = address.find('/');
  return slash == std::string::npos ? address : address.substr(slash + 1);
}

// Sends `m`, consuming it: its strings move into the envelope and its payloads' owners into
// the completion, so that a message costs no copy of its header and few allocations.
void send_raw(Self* self, PeerId peer, ActorMessage&& m) {
  Envelope e;
  e.epoch = m.epoch != 0 ? m.epoch : self->state.epoch;  // a role's own stamp wins
  e.from = std::move(m.from), e.to = std::move(m.to), e.type = m.type;
  e.header = std::move(m.header);
  constexpr size_t on_stack = 8;
  std::array<std::span<const std::byte>, on_stack> few;
  std::vector<std::span<const std::byte>> many;
  if (m.payloads.size() > on_stack) many.reserve(m.payloads.size());
  for (size_t i = 0; i < m.payloads.size(); ++i)
    (m.payloads.size() > on_stack ? many.emplace_back() : few[i]) = m.payloads[i].bytes;
  const std::span<const std::span<const std::byte>> spans =
      m.payloads.size() > on_stack ? std::span(many) : std::span(few.data(), m.payloads.size());
  const Status st = self->state.cfg.fabric->send(
      peer, e, spans, [keep = std::move(m.payloads)](const Status&) mutable { keep.clear(); });
  if (!st.ok()) {
    ++self->state.counters.send_errors;
    if (st.code() == Code::closed)  // this process is shutting down: expected, not a fault
      log::debug("router: send to {} failed: {}", e.to, st.to_string());
    else
      log::warn("router: send to {} failed: {}", e.to, st.to_string());
  } else {
    ++self->state.counters.sent_remote;
  }
}

void notify_down(Self* self, const std::string& node, const std::string& why) {
  for (const caf::actor& w : self->state.watchers) self->send(w, node_down_atom::value, node, why);
}

// The next summary of held refusals goes out when its window closes.
void schedule_refusal_flush(Self* self) {
  auto& s = self->state;
  const auto next = s.refusals.next_flush();
  if (!next || s.refusal_flush_due) return;
  s.refusal_flush_due = true;
  self->delayed_send(self, std::max(*next - self->clock().now(), caf::timespan::zero()),
                     flush_refusals_atom::value);
}

void tell_refusals(Self* self, const std::vector<ConnectionRefusal>& list) {
  for (const ConnectionRefusal& r : list)
    for (const caf::actor& w : self->state.refusal_watchers) self->send(w, refused_atom::value, r);
}

// A refused connection or message, to the refusal watchers through the throttle.
void report_refusal(Self* self, const ConnectionRefusal& r) {
  tell_refusals(self, self->state.refusals.note(r, self->clock().now()));
  schedule_refusal_flush(self);
}

void evict(Self* self, const std::string& node, uint64_t epoch) {
  auto& s = self->state;
  auto it = s.peer_of.find(node);
  if (it == s.peer_of.end()) return;  // its endpoint is down already: nothing can come from it
  const auto address = s.address_of.find(node);
  s.evicted[it->second] = {node, address == s.address_of.end() ? "" : address->second, epoch};
  while (s.evicted.size() > evicted_peers_max) s.evicted.erase(s.evicted.begin());
}

// The node is no longer one of the view's: unbound, its address and what waited for it gone.
void forget(Self* self, const std::string& node) {
  auto& s = self->state;
  // The endpoint stays open (not Fabric::disconnect): force-closing one with sends pending
  // to a hung peer over shared memory was followed, once in 30 chaos jobs, by other peers'
  // messages never leaving this node (UCX 1.13; see fabric.h).
  if (auto it = s.peer_of.find(node); it != s.peer_of.end()) {
    unbind(s, it->second);
    s.peer_of.erase(it);
  }
  s.address_of.erase(node);
  s.waiting.erase(node);
}

void admit(Self* self, const std::string& node, PeerId peer) {
  auto& s = self->state;
  s.peer_of[node] = peer;
  bind(s, peer, node);
  auto it = s.waiting.find(node);
  if (it == s.waiting.end()) return;
  for (ActorMessage& m : it->second) send_raw(self, peer, std::move(m));
  s.waiting.erase(it);
}

Result<PeerId> open(Self* self, const std::string& address, const std::string& target) {
  Result<PeerId> peer = self->state.cfg.fabric->connect(address);
  if (peer.ok()) self->state.outgoing[peer.value()] = Outgoing{target, address};
  return peer;
}

void drop_unclaimed(Self* self, const ActorMessage& m, const char* why) {
  if (++self->state.counters.dropped_no_actor <= 5)
    log::warn("router: no actor '{}' here (message type {} from {}): {}", m.to, m.type, m.from,
              why);
}

// Held messages past their wait are dropped; the next sweep is due at the oldest left.
void sweep_unclaimed(Self* self) {
  auto& s = self->state;
  s.unclaimed_sweep_due = false;
  const auto now = self->clock().now();
  std::optional<caf::actor_clock::time_point> next;
  for (auto it = s.unclaimed.begin(); it != s.unclaimed.end();) {
    auto& queue = it->second;
    while (!queue.empty() && queue.front().deadline <= now) {
      drop_unclaimed(self, queue.front().m, "nothing registered that name in time");
      --s.unclaimed_count, s.unclaimed_bytes -= queue.front().bytes;
      queue.pop_front();
    }
    if (queue.empty()) {
      it = s.unclaimed.erase(it);
      continue;
    }
    if (!next || queue.front().deadline < *next) next = queue.front().deadline;
    ++it;
  }
  if (!next) return;
  s.unclaimed_sweep_due = true;
  self->delayed_send(self, *next - now, sweep_unclaimed_atom::value);
}

// Held until `name` registers: a role still starting (router.h).
void hold_unclaimed(Self* self, std::string name, ActorMessage&& m) {
  auto& s = self->state;
  size_t bytes = m.header.size();
  for (const Payload& p : m.payloads) bytes += p.bytes.size();
  if (s.unclaimed_count >= unclaimed_messages_max ||
      s.unclaimed_bytes + bytes > unclaimed_bytes_max)
    return drop_unclaimed(self, m, "too many messages wait for names not registered yet");
  ++s.unclaimed_count, s.unclaimed_bytes += bytes;
  const auto deadline = self->clock().now() + s.cfg.unclaimed_wait_ms;
  s.unclaimed[std::move(name)].push_back({deadline, bytes, std::move(m)});
  if (s.unclaimed_sweep_due) return;
  s.unclaimed_sweep_due = true;
  self->delayed_send(self, s.cfg.unclaimed_wait_ms, sweep_unclaimed_atom::value);
}

void deliver_local(Self* self, ActorMessage&& m) {
  auto& s = self->state;
  std::string name = local_part(m.to);
  auto it = s.locals.find(name);
  if (it == s.locals.end()) return hold_unclaimed(self, std::move(name), std::move(m));
  ++s.counters.delivered_local;
  self->send(it->second, std::move(m));
}

// `name` is registered: what waited for it goes first, in the order it came.
void claim(Self* self, const std::string& name, const caf::actor& a) {
  auto& s = self->state;
  s.locals[name] = a;
  if (auto it = s.unclaimed.find(name); it != s.unclaimed.end()) {
    for (Unclaimed& u : it->second) {
      --s.unclaimed_count, s.unclaimed_bytes -= u.bytes;
      ++s.counters.held_unclaimed, ++s.counters.delivered_local;
      self->send(a, std::move(u.m));
    }
    s.unclaimed.erase(it);
  }
  if (s.cfg.direct) s.cfg.direct->register_name(name, a);  // after what waited (direct_inbound.h)
}

void route(Self* self, ActorMessage&& m) {
  auto& s = self->state;
  if (m.epoch == 0) m.epoch = s.epoch;  // a role may stamp its own (the epoch it acts in)
  if (m.peer != peer_none) {
    send_raw(self, m.peer, std::move(m));
    return;
  }
  const std::string node(node_of(m.to));
  if (node.empty() || node == s.cfg.node_id) {
    deliver_local(self, std::move(m));
    return;
  }
  if (auto it = s.peer_of.find(node); it != s.peer_of.end()) {
    send_raw(self, it->second, std::move(m));
    return;
  }
  auto addr = s.address_of.find(node);
  if (addr == s.address_of.end()) {
    ++s.counters.send_errors;
    log::warn("router: no route to {} (node not in the view)", m.to);
    return;
  }
  const bool connecting = s.waiting.count(node) > 0;
  auto& queue = s.waiting[node];
  if (queue.size() >= waiting_messages_max) {
    if (++s.counters.send_errors <= 5)
      log::warn("router: {} messages wait for {}: dropping {} (type {})", queue.size(), node, m.to,
                m.type);
    return;
  }
  queue.push_back(std::move(m));
  if (connecting) return;
  if (Result<PeerId> p = open(self, addr->second, node); !p.ok()) {
    ++s.counters.send_errors;
    log::warn("router: cannot connect to {} at {}: {}", node, addr->second, p.status().to_string());
    s.waiting.erase(node);
  }
}

// A peer passed the fabric's handshake. One that connected to us is a node we know (it
// claims its id: bound now) or a new node (the local coordinator admits it, as a Join);
// one we connected to is the node we meant, and what waited for it goes out.
void peer_up(Self* self, PeerId peer, const PeerInfo& info) {
  auto& s = self->state;
  if (!info.accepted) {
    auto it = s.outgoing.find(peer);
    if (it == s.outgoing.end()) return;
    const std::string node = it->second.target.empty() ? info.node : it->second.target;
    s.outgoing.erase(it);
    return admit(self, node, peer);
  }
  if (!info.node.empty()) {
    if (!info.listen_address.empty()) s.address_of[info.node] = info.listen_address;
    return admit(self, info.node, peer);
  }
  ActorMessage join;
  join.peer = peer;
  join.to = "coordinator.0";
  join.type = join_type;
  control::Join j;
  j.set_address(info.listen_address);
  j.set_pid(info.pid);
  j.set_role(info.role);
  join.header = j.SerializeAsString();
  deliver_local(self, std::move(join));
}

void inbound(Self* self, ActorMessage&& m) {
  auto& s = self->state;
  ++s.counters.received_remote;
  auto bound = s.node_of_peer.find(m.peer);
  if (auto ev = s.evicted.find(m.peer); bound == s.node_of_peer.end() && ev != s.evicted.end()) {
    const std::string why = fmt::format(
        "evicted at epoch {}: the view dropped {} as lost (missed heartbeats, a dead endpoint "
        "or fenced); its late messages change nothing",
        ev->second.epoch, ev->second.node);
    if (++s.counters.dropped_evicted <= 5)
      log::warn("router: dropped message type {} from {}: {}", m.type, m.from, why);
    return report_refusal(
        self, {ev->second.address, ev->second.node, 0, "evicted", why, ev->second.epoch});
  }
  if (bound == s.node_of_peer.end()) {
    const std::string why = fmt::format(
        "peer {} passed the handshake but is bound to no node (not admitted as a node yet, or "
        "it left the job); message type {} from '{}'",
        m.peer, m.type, m.from);
    if (++s.counters.dropped_unauthenticated <= 5) log::warn("router: dropped a message: {}", why);
    return report_refusal(self, {"", "", 0, "unbound", why});
  }
  if (node_of(m.from) != bound->second) {
    const std::string why = fmt::format("peer {}, bound to {}, sent a message claiming to be {}",
                                        m.peer, bound->second, m.from);
    if (++s.counters.dropped_spoofed <= 5) log::warn("router: dropped a message: {}", why);
    return report_refusal(self, {"", bound->second, 0, "spoofed", why});
  }
  deliver_local(self, std::move(m));
}

// A peer's endpoint is gone: its node, if it was bound, is down for the watchers.
void peer_down(Self* self, PeerId peer, const std::string& why) {
  auto& s = self->state;
  std::string node;
  if (auto it = s.node_of_peer.find(peer); it != s.node_of_peer.end()) {
    node = it->second;
    s.peer_of.erase(node);
    unbind(s, peer);
  } else if (auto o = s.outgoing.find(peer); o != s.outgoing.end()) {
    node = o->second.target;  // the handshake failed: `why` says how
    s.waiting.erase(node);
    s.outgoing.erase(o);
  } else {
    return;  // a peer that was never bound (a new node not admitted): no news
  }
  notify_down(self, node, why);
}

// The router's counters with what the fabric thread's shortcut delivered.
RouterCounters counters_of(const RouterState& s) {
  RouterCounters c = s.counters;
  if (s.cfg.direct) {
    c.delivered_direct = s.cfg.direct->delivered();
    c.delivered_local += c.delivered_direct;
    c.received_remote += c.delivered_direct;
  }
  return c;
}

caf::behavior router(Self* self, RouterConfig cfg) {
  self->state.cfg = std::move(cfg);
  return {
      [=](ActorMessage& m) { route(self, std::move(m)); },
      [=](inbound_atom, ActorMessage& m) {
        FromFabric handled(self);
        inbound(self, std::move(m));
      },
      [=](register_atom, const std::string& name, const caf::actor& a) { claim(self, name, a); },
      [=](sweep_unclaimed_atom) { sweep_unclaimed(self); },
      [=](bind_atom, const std::string& node, PeerId peer) { admit(self, node, peer); },
      [=](address_atom, const std::string& node, const std::string& address) {
        self->state.address_of[node] = address;
      },
      [=](node_id_atom, const std::string& id) {
        self->state.cfg.node_id = id;
        self->state.cfg.fabric->set_node_id(id);  // claimed in its handshakes from now on
      },
      [=](peer_up_atom, PeerId peer, const PeerInfo& info) {
        FromFabric handled(self);
        peer_up(self, peer, info);
      },
      [=](epoch_atom, uint64_t epoch) {
        if (epoch <= self->state.epoch) return;
        self->state.epoch = epoch;
        self->state.cfg.fabric->set_epoch(epoch);
      },
      [=](watch_atom, const caf::actor& a) { self->state.watchers.push_back(a); },
      [=](refusals_atom, const caf::actor& a) { self->state.refusal_watchers.push_back(a); },
      [=](refused_atom, const ConnectionRefusal& r) {
        FromFabric handled(self);
        report_refusal(self, r);
      },
      [=](flush_refusals_atom) {
        self->state.refusal_flush_due = false;
        tell_refusals(self, self->state.refusals.flush(self->clock().now()));
        schedule_refusal_flush(self);
      },
      [=](counters_atom) { return counters_of(self->state); },
      [=](connect_atom, const std::string& address) {
        if (Result<PeerId> p = open(self, address, ""); !p.ok())
          notify_down(self, "", "cannot connect to " + address + ": " + p.status().to_string());
      },
      [=](evict_atom, const std::string& node, uint64_t epoch) {
        evict(self, node, epoch);
        forget(self, node);
      },
      [=](forget_atom, const std::string& node) { forget(self, node); },
      [=](peer_down_atom, PeerId peer, const std::string& why) {
        FromFabric handled(self);
        peer_down(self, peer, why);
      },
  };
}

}  // namespace

caf::actor spawn_router(caf::actor_system& system, RouterConfig config) {
  return system.spawn(router, std::move(config));
}

ActorMessage to_actor_message(Message&& m) {
  ActorMessage out;
  out.peer = m.peer;
  out.epoch = m.envelope.epoch;
  out.from = std::move(m.envelope.from);
  out.to = std::move(m.envelope.to);
  out.type = m.envelope.type;
  out.header = std::move(m.envelope.header);
  auto storage = std::make_shared<ByteBuffer>(std::move(m.storage));
  for (const auto& p : m.payloads) out.payloads.push_back({storage, p});
  return out;
}

bool parse_address(std::string_view text, Address* out) {
  const size_t slash = text.find('/'), dot = text.rfind('.');
  if (slash == std::string_view::npos || dot == std::string_view::npos || dot < slash ||
      slash == 0 || dot == slash + 1 || dot + 1 == text.size())
    return false;
  int64_t index = 0;
  for (char c : text.substr(dot + 1)) {
    if (c < '0' || c > '9' || index > (int64_t{1} << 40)) return false;
    index = index * 10 + (c - '0');
  }
  out->node = std::string(text.substr(0, slash));
  out->role = std::string(text.substr(slash + 1, dot - slash - 1));
  out->index = index;
  return true;
}

std::string make_address(std::string_view node, std::string_view role, int64_t index) {
  return fmt::format("{}/{}.{}", node, role, index);
}

}  // namespace troupe::runtime
