// UcxFabric: the Fabric on UCX's ucp active-message API. One context and one worker per
// fabric, driven by one progress thread that owns every UCX object; other threads hand it
// commands through a queue. Peers meet through the bootstrap (bootstrap.h): the handshake
// over the job secret on troupe's own TCP listener, then endpoints made from the worker
// addresses the two sides swapped; no UCX listener exists. Endpoints use
// UCP_ERR_HANDLING_MODE_PEER, and the bootstrap's connection stays open as a peer's
// lifeline, so a peer's death surfaces as on_peer_down within milliseconds (a hung peer
// does not: that needs heartbeats, DESIGN.md §3).
#pragma once

#include <memory>
#include <string>

#include "runtime/fabric.h"

namespace troupe::runtime {

struct UcxOptions {
  // UCX settings, applied to this fabric's context unless the matching UCX_* variable is
  // set in the environment (the environment wins, so an operator can override).
  std::string tls = "shm,tcp";     // UCX_TLS
  std::string net_devices = "lo";  // UCX_NET_DEVICES. lo for local jobs: a second TCP lane
                                   // on eth0 doubles small-message latency
  bool mm_error_handling = true;   // UCX_MM_ERROR_HANDLING: else peer error handling
                                   // silently moves shared-memory peers to TCP (UCX #8477)
  // UCX_CMA_MEMORY_INVALIDATE. With peer error handling, UCX 1.13 takes a rendezvous lane
  // only if it can revoke a peer's access to our buffers when the endpoint fails; cma
  // cannot, so large messages between local processes silently went over TCP loopback
  // (3-5x slower than cma's single copy). y declares cma's revocation a no-op (UCX #7706):
  // a peer we have declared down but that still runs could touch a buffer of a failed
  // transfer through process_vm_readv/writev. Such a peer is a process of the same job
  // and user on this host, which could ptrace us anyway; worth the bandwidth.
  bool cma_memory_invalidate = true;
  std::string rndv_thresh;  // UCX_RNDV_THRESH; empty: UCX's default
  // The progress thread busy-polls this long after the last activity, then sleeps on the
  // worker's event fd. Negative: never sleep (one core per process). 0: sleep when idle.
  int64_t progress_spin_us = 100;
  // A sleep that an event ends within this was a mistake (a ping-pong whose round trip
  // outgrew the spin, e.g. after a preemption: both sides then sleep on every message and
  // an 8 B one-way took 100-300 us here); the spin doubles, up to this. A longer sleep
  // resets it to progress_spin_us. So an idle fabric spins at most this long, then sleeps.
  int64_t progress_spin_us_max = 1000;
  std::string listen_host = "127.0.0.1";  // the address listen() binds (bootstrap.h)
  std::string secret;   // the job secret (load_secret): every peer proves it. Required.
  std::string node_id;  // claimed in handshakes; "" until the coordinator gives one
  std::string role;     // said in handshakes (BootstrapConfig::role)
  // Received-payload buffers kept for reuse (see buffer_pool.h).
  size_t buffer_cache_bytes_max = size_t{512} << 20;
  // A kept buffer unused this long is freed (a recovery's burst does not stay resident).
  int64_t buffer_cache_idle_ms = buffer_idle_ms_default.count();
  // Marks exited shared-memory peers' full FIFOs read, so that UCX 1.13 destroys their
  // endpoints and unmaps their memory (dead_peer_fifos.h). false: UCX as it is (tests).
  bool release_dead_peer_fifos = true;
  // Marks a slot of our own receive FIFO that a writer died in the middle of as done, so
  // that UCX 1.13 reads on (dead_writer_slots.h). false: UCX as it is (tests).
  bool repair_dead_writer_slots = true;
  // Small messages to one peer started together go as one active message (ucx_fabric_impl.h,
  // batch_bytes_max). false: each alone (bench_fabric --no-batch compares).
  bool batch_small_messages = true;
};

class UcxFabric final : public Fabric {
 public:
  // Errors: io_error naming the UCX call that failed (no UCX, no usable transport, or
  // an active-message header limit below frame_bytes_max); invalid_argument: no secret.
  static Result<std::unique_ptr<UcxFabric>> create(const UcxOptions& options,
                                                   FabricHandlers handlers);
  // Closes every endpoint (peers see peer_down), stops the progress thread.
  ~UcxFabric() override;

  Result<uint16_t> listen(uint16_t port) override;
  Result<PeerId> connect(const std::string& host_port) override;
  void set_node_id(const std::string& node_id) override;
  Status send(PeerId peer, const Envelope& envelope,
              std::span<const std::span<const std::byte>> payloads, SendDoneFn done = {}) override;
  void disconnect(PeerId peer) override;
  Status flush(std::chrono::milliseconds timeout) override;
  Result<Message> receive(std::chrono::milliseconds timeout) override;
  void set_epoch(uint64_t epoch) override;
  uint64_t epoch() const override;
  FabricCounters counters() const override;

  // The received-payload buffers kept for reuse now, in bytes (buffer_pool.h). A new epoch
  // frees them all (set_epoch).
  size_t cached_buffer_bytes() const;

  // The transports UCX chose for this peer's endpoint (ucp_ep_print_info), for logs.
  std::string describe_peer(PeerId peer);

  struct Impl;

 private:
  explicit UcxFabric(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace troupe::runtime
