// The fault-injecting fabric: a runtime::Fabric decorator that, following a fault plan
// (fault_plan.h), drops, delays, duplicates, reorders, corrupts, partitions or slows the
// messages this process sends, and hands everything else to the fabric it wraps (the
// UcxFabric). Faults act on the send side only: every process of a job reads the same plan,
// so a rule on the link a→b acts in a's process, and a partition drops both directions
// because both sides drop what they send across it. Receiving, connecting and the handshake
// pass through untouched. docs/chaos.md ("Fabric faults") gives each action's semantics.
//
// Replay: every draw is a hash of (the plan's seed, this process's node id, the rule, the
// receiving node, the message type, and how many messages of that type this process sent to
// that node before) — not of the interleaving of threads or of the wall clock, so the same
// seed makes the same decisions for the same sequence of sends on each link.
//
// Delivery: `done` of a send runs exactly once, also for a dropped (inline), delayed (after the
// held message went out) or duplicated (after both copies went out) message, and for held
// messages when the fabric closes (Code::closed). A held message keeps pointing at the
// caller's payload memory: `done` is delayed with it, so the memory contract of Fabric::send
// holds unchanged. A corrupted payload is a copy: the caller's memory is never written.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chaos/fault_plan.h"
#include "runtime/fabric.h"
#include "runtime/host.h"

namespace troupe::chaos {

// Messages held for later (delay, reorder, slow) at once. Past this a message that a rule
// would hold goes out at once and is counted (held_overflow): a plan holding a whole send
// window (inflight_messages_max) of four peers is already far past a fault worth injecting.
inline constexpr size_t held_messages_max = 4 * runtime::inflight_messages_max;
static_assert(held_messages_max >= runtime::inflight_messages_max);

// What the plan did to this process's messages so far.
struct FaultCounters {
  uint64_t passed = 0;             // matched no rule (or lost its draw): sent untouched
  uint64_t dropped = 0;            // drop
  uint64_t partitioned = 0;        // partition: dropped for crossing groups
  uint64_t delayed = 0;            // delay
  uint64_t reordered = 0;          // reorder: held so that later messages overtake it
  uint64_t slowed = 0;             // slow
  uint64_t duplicated = 0;         // duplicate: sent twice
  uint64_t corrupted = 0;          // corrupt
  uint64_t held_overflow = 0;      // would have been held, went out at once (held_messages_max)
  uint64_t closed_while_held = 0;  // held when the fabric closed: done(closed)
  uint64_t held_send_failed = 0;   // the wrapped fabric refused a held message when it was due
};
// "dropped=N partitioned=N ..." (every counter, always the same order: for scripts).
std::string format_counts(const FaultCounters& c);

// Who each peer proved to be in the handshake (on_peer_up), for messages whose address does
// not name a node. Shared by the wrapped handlers and the decorator.
class PeerNames {
 public:
  void set(runtime::PeerId peer, const std::string& node);
  std::string get(runtime::PeerId peer) const;
  // The handlers with on_peer_up also recording here.
  static runtime::FabricHandlers learning(runtime::FabricHandlers handlers,
                                          const std::shared_ptr<PeerNames>& names);

 private:
  mutable std::mutex mutex_;
  std::map<runtime::PeerId, std::string> names_;
};

struct FaultyFabricOptions {
  // The clock of the plan's time windows (after_ms, for_ms); steady_clock when empty.
  std::function<std::chrono::steady_clock::time_point()> now;
  // The step this process is on; runtime::current_step() when empty.
  std::function<int64_t()> step;
};

class FaultyFabric final : public runtime::Fabric {
 public:
  FaultyFabric(std::unique_ptr<runtime::Fabric> inner, FaultPlan plan,
               std::shared_ptr<PeerNames> names = {}, FaultyFabricOptions options = {});
  // Stops the timer thread, completes held messages' `done` with Code::closed, logs the
  // counts, then closes the wrapped fabric.
  ~FaultyFabric() override;
  FaultyFabric(const FaultyFabric&) = delete;
  FaultyFabric& operator=(const FaultyFabric&) = delete;

  runtime::Result<uint16_t> listen(uint16_t port) override { return inner_->listen(port); }
  runtime::Result<runtime::PeerId> connect(const std::string& host_port) override {
    return inner_->connect(host_port);
  }
  void set_node_id(const std::string& node_id) override;
  // Fabric::send, with the plan applied (the header's comment above).
  runtime::Status send(runtime::PeerId peer, const runtime::Envelope& envelope,
                       std::span<const std::span<const std::byte>> payloads,
                       runtime::SendDoneFn done = {}) override;
  void disconnect(runtime::PeerId peer) override { inner_->disconnect(peer); }
  // Waits for the held messages to go out, then for the wrapped fabric's flush.
  runtime::Status flush(std::chrono::milliseconds timeout) override;
  runtime::Result<runtime::Message> receive(std::chrono::milliseconds timeout) override {
    return inner_->receive(timeout);
  }
  void set_epoch(uint64_t epoch) override { inner_->set_epoch(epoch); }
  uint64_t epoch() const override { return inner_->epoch(); }
  runtime::FabricCounters counters() const override { return inner_->counters(); }

  FaultCounters fault_counters() const;

 private:
  struct Held;
  struct Match;
  Match decide(runtime::PeerId peer, const runtime::Envelope& envelope, uint64_t bytes);
  runtime::Status hold(runtime::PeerId peer, const runtime::Envelope& envelope,
                       std::span<const std::span<const std::byte>> payloads,
                       runtime::SendDoneFn done, std::chrono::steady_clock::time_point due);
  runtime::Status duplicate(runtime::PeerId peer, const runtime::Envelope& envelope,
                            std::span<const std::span<const std::byte>> payloads,
                            runtime::SendDoneFn done);
  runtime::Status corrupt(runtime::PeerId peer, const runtime::Envelope& envelope,
                          std::span<const std::span<const std::byte>> payloads,
                          runtime::SendDoneFn done, const FaultRule& rule, uint64_t draw);
  void timer_loop();
  void note_first(size_t rule, const runtime::Envelope& envelope, const std::string& to);
  // Under mutex_: whether rule i's switch_file exists (looked at again after switch_poll_ms).
  bool switched_on(size_t i, std::chrono::steady_clock::time_point now);

  std::unique_ptr<runtime::Fabric> inner_;
  const FaultPlan plan_;
  std::shared_ptr<PeerNames> names_;
  FaultyFabricOptions options_;
  std::chrono::steady_clock::time_point started_;

  mutable std::mutex mutex_;  // everything below
  std::condition_variable changed_;
  std::string node_id_;
  uint64_t node_key_ = 0;  // hash of node_id_, mixed into every draw
  std::map<std::pair<std::string, uint32_t>, uint64_t> sent_;  // (to node, type) → messages
  std::map<std::string, std::chrono::steady_clock::time_point> link_free_;  // slow: per node
  std::multimap<std::pair<std::chrono::steady_clock::time_point, uint64_t>, Held> held_;
  uint64_t held_seq_ = 0;
  int sending_held_ = 0;     // held messages the timer thread is handing on now
  std::vector<bool> noted_;  // per rule: its first action was logged
  // Per rule: when it first acted (lasts_ms counts from there); time_point{} not yet.
  std::vector<std::chrono::steady_clock::time_point> first_acted_;
  // Per rule with a switch_file: when it was last looked at, and whether it existed then.
  std::vector<std::pair<std::chrono::steady_clock::time_point, bool>> switch_seen_;
  FaultCounters counts_;
  bool stop_ = false;
  std::thread timer_;
};

// A Host's fabric factory: the default UcxFabric of `options` wrapped in a FaultyFabric with
// `plan`. Logs one line naming the plan when the fabric is made.
runtime::FabricFactory faulty_fabric_factory(const runtime::HostOptions& options, FaultPlan plan);

// Where a process creates its Host: with TROUPE_FABRIC_FAULTS set, installs the factory
// above on `options` and returns true; unset: leaves them (the plain UcxFabric, no cost) and
// returns false. Errors: the plan's (file, line, key), for the caller to refuse to start.
runtime::Result<bool> install_fabric_faults(runtime::HostOptions* options);

}  // namespace troupe::chaos
