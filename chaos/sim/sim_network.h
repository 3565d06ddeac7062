// The simulated network of a whole job in one process (DESIGN §9, FoundationDB's way): a
// SimFabric per simulated process, all of them on one SimNetwork that holds every message
// and connection event in flight with its delivery time on the simulated clock. Latencies,
// duplicates, reorderings, connection losses and partitions are drawn from one seed, so a
// seed names one interleaving; the driver (sim_job.h) delivers the earliest event, runs the
// actors until they are idle, and repeats. Nothing here reads a real clock or spawns a
// thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "runtime/fabric.h"

namespace troupe::chaos {

using SimTime = std::chrono::steady_clock::time_point;  // CAF's test clock's time

struct SimNetworkOptions {
  uint64_t seed = 1;
  // One-way latency of a message, uniform in [min, max]; with spike_probability a message
  // is late by up to spike_us_max more (a congested link), which reorders it past others.
  int64_t latency_us_min = 20, latency_us_max = 400;
  double spike_probability = 0.02;
  int64_t spike_us_max = 30000;
  // Messages on one link keep their order (UCX active messages on one endpoint) unless
  // this draw lets one overtake (rendezvous vs eager lanes).
  double reorder_probability = 0.0;
  double duplicate_probability = 0.0;  // a message delivered twice (a retransmission)
  // After a process dies, each peer's endpoint reports it within [min, max] (UCX: 3.5-5.5 ms).
  int64_t peer_down_us_min = 1000, peer_down_us_max = 10000;
  // A partition holds the messages that cross it (TCP retransmits them once it heals); one
  // that lasts longer than this breaks the endpoints across it (both sides see them down,
  // and what was held is lost), as a transport's keepalive would.
  int64_t endpoint_timeout_ms = 2000;
};

struct SimCounters {
  uint64_t delivered = 0, duplicated = 0, reordered = 0;
  uint64_t dropped_dead = 0;         // to or from a killed process
  uint64_t held_partition = 0;       // held at a partition until it healed
  uint64_t dropped_partition = 0;    // lost with the endpoints a long partition broke
  uint64_t dropped_stale_epoch = 0;  // the receiver's fabric dropped it (older epoch)
  uint64_t lost = 0;                 // lost on the way (lose())
};

class SimNetwork {
 public:
  SimNetwork(SimNetworkOptions options, std::function<SimTime()> now);
  ~SimNetwork();

  // A fabric for one simulated process (Host's FabricFactory); pid is what it says in
  // handshakes. The network keeps it by listen port once it listens.
  std::unique_ptr<runtime::Fabric> make_fabric(const runtime::FabricHandlers& handlers,
                                               uint32_t pid);

  // The time of the earliest event in flight; nullopt when nothing is.
  std::optional<SimTime> next_time() const;
  // Delivers the earliest event (a message, a peer up or down, a scheduled kill): hands it to
  // the receiving fabric's handler (which queues it for its router). The clock must already
  // read its time.
  void deliver_next();

  // Kills the process listening on `port` at time `at`: from then on nothing reaches it or
  // leaves it, and every peer's endpoint reports it down after a drawn delay.
  void kill_at(uint16_t port, SimTime at);
  // Cuts `nodes` (node ids) off from every other process in [from, until): what crosses is
  // held until then, or lost with the endpoints if the cut outlasts endpoint_timeout_ms.
  void partition(std::set<std::string> nodes, SimTime from, SimTime until);
  // The next `count` messages of one of `types` sent by any process are lost on the way.
  void lose(std::set<uint32_t> types, int64_t count);
  bool dead(uint16_t port) const;
  // The listen port of the live process whose node id is `node_id` (0: none).
  uint16_t port_of_node(const std::string& node_id) const;

  // Every delivered message (time, link, type, epoch, header and payload bytes) hashed in
  // order: the same seed gives the same value.
  uint64_t fingerprint() const { return fingerprint_; }
  const SimCounters& counters() const { return counters_; }

  struct Endpoint;  // one simulated process's fabric state (sim_network.cc)
  struct Event;

 private:
  friend class SimFabric;
  int64_t draw_us(int64_t lo, int64_t hi);
  bool chance(double p);
  void schedule(Event event, bool fifo);  // after a drawn latency
  void enqueue(SimTime at, Event event);  // at `at`, after what is already queued for it
  void connect(Endpoint& from, uint16_t port, runtime::PeerId local);
  void send(Endpoint& from, runtime::PeerId peer, const runtime::Envelope& envelope,
            std::span<const std::span<const std::byte>> payloads);
  void deliver_message(Event& e);
  void kill_now(uint16_t port);
  struct Partition;
  const Partition* partitioned(const std::string& a, const std::string& b, SimTime t) const;
  void cut(size_t partition);
  void mix(const void* data, size_t bytes);

  SimNetworkOptions options_;
  std::function<SimTime()> now_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;  // by creation; never shrinks
  std::map<uint16_t, Endpoint*> by_port_;
  std::multimap<std::pair<SimTime, uint64_t>, std::unique_ptr<Event>> queue_;
  std::map<std::pair<Endpoint*, Endpoint*>, SimTime> link_last_;  // FIFO per link
  std::map<std::pair<Endpoint*, Endpoint*>, SimTime> link_up_;    // its peer_up: never overtaken
  struct Partition {
    std::set<std::string> nodes;
    SimTime from, until;
  };
  std::vector<Partition> partitions_;
  std::set<uint32_t> lose_types_;
  int64_t lose_left_ = 0;
  uint64_t seq_ = 0;
  uint16_t next_port_ = 30001;
  uint64_t fingerprint_ = 1469598103934665603ull;
  SimCounters counters_;
  runtime::BufferPool pool_{size_t{64} << 20};
};

}  // namespace troupe::chaos
