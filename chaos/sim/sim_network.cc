#include "chaos/sim/sim_network.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace troupe::chaos {

using runtime::Code;
using runtime::PeerId;
using runtime::Status;

struct SimNetwork::Endpoint {
  runtime::FabricHandlers handlers;
  uint32_t pid = 0;
  uint16_t port = 0;
  std::string node_id;
  bool dead = false;
  uint64_t epoch = 0;
  struct Peer {
    Endpoint* remote = nullptr;
    PeerId remote_id = runtime::peer_none;
    bool down = false;
  };
  std::map<PeerId, Peer> peers;
  PeerId next_peer = 1;
  runtime::FabricCounters counters;
  std::string address() const { return fmt::format("127.0.0.1:{}", port); }
};

struct SimNetwork::Event {
  enum class Kind { message, peer_up, peer_down, kill, cut } kind = Kind::message;
  Endpoint* from = nullptr;
  Endpoint* to = nullptr;            // the receiver
  PeerId peer = runtime::peer_none;  // the receiver's id for the sender
  runtime::Envelope envelope;        // message
  std::vector<std::byte> bytes;      // message: the payloads, back to back
  std::vector<size_t> sizes;         // message: each payload's size
  runtime::PeerInfo info;            // peer_up
  std::string why;                   // peer_down
  uint16_t port = 0;                 // kill
  size_t partition = 0;              // cut
};

// One simulated process's fabric: every call goes to its network, on the driver's thread.
class SimFabric final : public runtime::Fabric {
 public:
  SimFabric(SimNetwork* net, SimNetwork::Endpoint* ep) : net_(net), ep_(ep) {}
  ~SimFabric() override { ep_->dead = true; }  // a host torn down is a process gone

  runtime::Result<uint16_t> listen(uint16_t port) override {
    if (port == 0) port = net_->next_port_++;
    if (net_->by_port_.count(port))
      return Status(Code::invalid_argument, fmt::format("port {} is taken", port));
    ep_->port = port;
    net_->by_port_[port] = ep_;
    return port;
  }
  runtime::Result<PeerId> connect(const std::string& host_port) override {
    const size_t colon = host_port.rfind(':');
    int port = 0;
    if (colon == std::string::npos ||
        std::sscanf(host_port.c_str() + colon + 1, "%d", &port) != 1 || port <= 0 || port > 65535)
      return Status(Code::invalid_argument, "not host:port: '" + host_port + "'");
    if (ep_->dead) return Status(Code::closed, "this process is gone");
    const PeerId local = ep_->next_peer++;
    ep_->peers[local] = {};
    net_->connect(*ep_, uint16_t(port), local);
    return local;
  }
  void set_node_id(const std::string& node_id) override { ep_->node_id = node_id; }
  Status send(PeerId peer, const runtime::Envelope& envelope,
              std::span<const std::span<const std::byte>> payloads,
              runtime::SendDoneFn done) override {
    if (ep_->dead) return {Code::closed, "this process is gone"};
    auto it = ep_->peers.find(peer);
    if (it == ep_->peers.end()) return {Code::unknown_peer, fmt::format("no peer {}", peer)};
    if (it->second.down || !it->second.remote)
      return {Code::peer_down, fmt::format("peer {} is down", peer)};
    net_->send(*ep_, peer, envelope, payloads);
    ++ep_->counters.sent_messages;
    if (done) done(Status{});  // the network copied the payloads
    return {};
  }
  void disconnect(PeerId peer) override {
    if (auto it = ep_->peers.find(peer); it != ep_->peers.end()) it->second.down = true;
  }
  Status flush(std::chrono::milliseconds) override { return {}; }
  runtime::Result<runtime::Message> receive(std::chrono::milliseconds) override {
    return Status(Code::invalid_argument, "a SimFabric delivers through on_receive only");
  }
  void set_epoch(uint64_t epoch) override { ep_->epoch = std::max(ep_->epoch, epoch); }
  uint64_t epoch() const override { return ep_->epoch; }
  runtime::FabricCounters counters() const override { return ep_->counters; }

 private:
  SimNetwork* net_;
  SimNetwork::Endpoint* ep_;
};

namespace {

SimNetwork::Event peer_down_event(SimNetwork::Endpoint* to, PeerId peer, std::string why) {
  SimNetwork::Event down;
  down.kind = SimNetwork::Event::Kind::peer_down;
  down.to = to;
  down.peer = peer;
  down.why = std::move(why);
  return down;
}

}  // namespace

void SimNetwork::enqueue(SimTime at, Event event) {
  queue_.emplace(std::make_pair(at, seq_++), std::make_unique<Event>(std::move(event)));
}

SimNetwork::SimNetwork(SimNetworkOptions options, std::function<SimTime()> now)
    : options_(options), now_(std::move(now)), rng_(options.seed) {}

SimNetwork::~SimNetwork() = default;

std::unique_ptr<runtime::Fabric> SimNetwork::make_fabric(const runtime::FabricHandlers& handlers,
                                                         uint32_t pid) {
  endpoints_.push_back(std::make_unique<Endpoint>());
  Endpoint* ep = endpoints_.back().get();
  ep->handlers = handlers;
  ep->pid = pid;
  return std::make_unique<SimFabric>(this, ep);
}

int64_t SimNetwork::draw_us(int64_t lo, int64_t hi) {
  return lo + int64_t(rng_() % uint64_t(std::max<int64_t>(1, hi - lo + 1)));
}

bool SimNetwork::chance(double p) {
  return p > 0 && double(rng_() >> 11) * 0x1.0p-53 < p;
}

void SimNetwork::schedule(Event event, bool fifo) {
  int64_t us = draw_us(options_.latency_us_min, options_.latency_us_max);
  if (chance(options_.spike_probability)) us += draw_us(0, options_.spike_us_max);
  SimTime t = now_() + std::chrono::microseconds(us);
  if (event.from && event.to) {
    const std::pair<Endpoint*, Endpoint*> link{event.from, event.to};
    SimTime& last = link_last_[link];
    if (fifo)
      t = std::max(t, last + std::chrono::nanoseconds(1));
    else if (t < last)
      ++counters_.reordered;
    if (event.kind == Event::Kind::peer_up)
      link_up_[link] = t;
    else if (auto up = link_up_.find(link); up != link_up_.end())
      t = std::max(t, up->second + std::chrono::nanoseconds(1));  // the handshake comes first
    last = std::max(last, t);
  }
  enqueue(t, std::move(event));
}

void SimNetwork::connect(Endpoint& from, uint16_t port, PeerId local) {
  auto it = by_port_.find(port);
  if (it == by_port_.end() || it->second->dead) {
    return schedule(peer_down_event(&from, local,
                                    fmt::format("Connection refused (simulated: nothing listens at "
                                                "127.0.0.1:{})",
                                                port)),
                    false);
  }
  Endpoint& target = *it->second;
  const PeerId remote = target.next_peer++;
  target.peers[remote] = {&from, local, false};
  from.peers[local] = {&target, remote, false};
  Event up;  // the accepting side learns of the connection first, then its messages
  up.kind = Event::Kind::peer_up;
  up.from = &from, up.to = &target, up.peer = remote;
  up.info = {from.node_id, from.address(), from.pid, true, ""};
  schedule(std::move(up), true);
  Event back;
  back.kind = Event::Kind::peer_up;
  back.from = &target, back.to = &from, back.peer = local;
  back.info = {target.node_id, target.address(), target.pid, false, ""};
  schedule(std::move(back), true);
}

void SimNetwork::send(Endpoint& from, PeerId peer, const runtime::Envelope& envelope,
                      std::span<const std::span<const std::byte>> payloads) {
  const Endpoint::Peer& p = from.peers.at(peer);
  if (lose_left_ > 0 && lose_types_.count(envelope.type)) {
    --lose_left_, ++counters_.lost;
    return;
  }
  Event e;
  e.kind = Event::Kind::message;
  e.from = &from, e.to = p.remote, e.peer = p.remote_id;
  e.envelope = envelope;
  for (const auto& s : payloads) {
    e.sizes.push_back(s.size());
    e.bytes.insert(e.bytes.end(), s.begin(), s.end());
  }
  if (chance(options_.duplicate_probability)) {
    ++counters_.duplicated;
    schedule(Event(e), false);
  }
  schedule(std::move(e), !chance(options_.reorder_probability));
}

void SimNetwork::lose(std::set<uint32_t> types, int64_t count) {
  lose_types_ = std::move(types);
  lose_left_ = count;
}

std::optional<SimTime> SimNetwork::next_time() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.begin()->first.first;
}

bool SimNetwork::dead(uint16_t port) const {
  auto it = by_port_.find(port);
  return it != by_port_.end() && it->second->dead;
}

uint16_t SimNetwork::port_of_node(const std::string& node_id) const {
  for (const auto& ep : endpoints_)
    if (!ep->dead && ep->node_id == node_id && ep->port != 0) return ep->port;
  return 0;
}

void SimNetwork::kill_at(uint16_t port, SimTime at) {
  Event e;
  e.kind = Event::Kind::kill;
  e.port = port;
  enqueue(at, std::move(e));
}

void SimNetwork::partition(std::set<std::string> nodes, SimTime from, SimTime until) {
  partitions_.push_back({std::move(nodes), from, until});
  const auto timeout = std::chrono::milliseconds(options_.endpoint_timeout_ms);
  if (until - from <= timeout) return;
  Event e;
  e.kind = Event::Kind::cut;
  e.partition = partitions_.size() - 1;
  enqueue(from + timeout, std::move(e));
}

const SimNetwork::Partition* SimNetwork::partitioned(const std::string& a, const std::string& b,
                                                     SimTime t) const {
  for (const Partition& p : partitions_)
    if (t >= p.from && t < p.until && p.nodes.count(a) != p.nodes.count(b)) return &p;
  return nullptr;
}

// A partition outlasted the transport's patience: every endpoint across it fails, both ends.
void SimNetwork::cut(size_t partition) {
  const Partition& p = partitions_[partition];
  for (auto& ep : endpoints_) {
    if (ep->dead) continue;
    for (auto& [id, peer] : ep->peers) {
      if (peer.down || !peer.remote ||
          p.nodes.count(ep->node_id) == p.nodes.count(peer.remote->node_id))
        continue;
      enqueue(now_(), peer_down_event(ep.get(), id, "Connection timed out (simulated partition)"));
    }
  }
}

void SimNetwork::kill_now(uint16_t port) {
  auto it = by_port_.find(port);
  if (it == by_port_.end() || it->second->dead) return;
  Endpoint* gone = it->second;
  gone->dead = true;
  for (auto& ep : endpoints_) {
    if (ep->dead) continue;
    for (auto& [id, peer] : ep->peers) {
      if (peer.remote != gone || peer.down) continue;
      // Drawn per peer, not FIFO: the error surfaces on its own (UCX's endpoint callback).
      const SimTime t = now_() + std::chrono::microseconds(
                                     draw_us(options_.peer_down_us_min, options_.peer_down_us_max));
      enqueue(t,
              peer_down_event(ep.get(), id, "Connection reset by remote peer (simulated kill -9)"));
    }
  }
}

void SimNetwork::mix(const void* data, size_t bytes) {
  fingerprint_ = XXH64(data, bytes, fingerprint_);
}

void SimNetwork::deliver_message(Event& e) {
  Endpoint& to = *e.to;
  if (to.dead || e.from->dead) {  // an in-flight rendezvous dies with either end
    ++counters_.dropped_dead;
    return;
  }
  auto peer = to.peers.find(e.peer);
  if (peer == to.peers.end() || peer->second.down) {
    ++counters_.dropped_partition;  // its endpoint failed (a long partition) or was closed
    return;
  }
  if (const Partition* p = partitioned(e.from->node_id, to.node_id, now_())) {
    ++counters_.held_partition;  // delivered when it heals, in the order it was sent
    const SimTime at = p->until + (now_() - p->from);
    enqueue(at, std::move(e));
    return;
  }
  const runtime::Envelope& env = e.envelope;
  if (env.type >= runtime::control_types_end && env.epoch < to.epoch) {
    ++counters_.dropped_stale_epoch;
    ++to.counters.dropped_stale_epoch;
    return;
  }
  const int64_t t = now_().time_since_epoch().count();
  const uint64_t head[] = {uint64_t(t), e.from->port, to.port, env.type, env.epoch};
  mix(head, sizeof head);
  mix(env.from.data(), env.from.size());
  mix(env.to.data(), env.to.size());
  mix(env.header.data(), env.header.size());
  mix(e.bytes.data(), e.bytes.size());
  runtime::Message m;
  m.peer = e.peer;
  m.envelope = std::move(e.envelope);
  size_t total = 0;
  for (size_t s : e.sizes) total += (s + 63) / 64 * 64;
  m.storage = pool_.get(std::max<size_t>(total, 1));
  size_t at = 0, off = 0;
  for (size_t s : e.sizes) {
    if (s > 0) std::memcpy(m.storage.data() + at, e.bytes.data() + off, s);  // empty: maybe null
    m.payloads.push_back({m.storage.data() + at, s});
    at += (s + 63) / 64 * 64, off += s;
  }
  ++counters_.delivered;
  ++to.counters.received_messages;
  to.counters.received_bytes += off;
  if (to.handlers.on_receive) to.handlers.on_receive(std::move(m));
}

void SimNetwork::deliver_next() {
  if (queue_.empty()) return;
  auto node = queue_.extract(queue_.begin());
  Event& e = *node.mapped();
  switch (e.kind) {
    case Event::Kind::kill:
      return kill_now(e.port);
    case Event::Kind::cut:
      return cut(e.partition);
    case Event::Kind::peer_up:
      if (e.to->dead || e.from->dead) return;
      if (e.to->handlers.on_peer_up) e.to->handlers.on_peer_up(e.peer, e.info);
      return;
    case Event::Kind::peer_down: {
      if (e.to->dead) return;
      auto& p = e.to->peers[e.peer];
      if (p.down) return;
      p.down = true;
      ++e.to->counters.peers_down;
      if (e.to->handlers.on_peer_down)
        e.to->handlers.on_peer_down(e.peer, {Code::peer_down, e.why});
      return;
    }
    case Event::Kind::message:
      return deliver_message(e);
  }
}

}  // namespace troupe::chaos
