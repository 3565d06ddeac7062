// The door of a node process (DESIGN §3 "Bootstrap"): a TCP listener of troupe's own
// (Boost.Asio) on the node's port. Every connection runs the mutual HMAC-SHA256 handshake
// over the job secret first (auth.h; hello → challenge → proof → verdict); only then do the
// two sides swap their transport addresses (UCX worker addresses, opaque here), each sent
// after its sender has checked the other's proof. No UCX listener faces the network: UCX
// 1.13's connection manager aborts the process on 64 crafted bytes (openucx/ucx#4525).
//
// Wire: frames of [u32 little-endian N][N bytes: a control.proto message], in the fixed
// order Hello (connector), Challenge (acceptor), Proof (connector), Verdict (acceptor).
// Anything else — garbage, an oversized frame, a wrong secret, a peer that is slow, holds
// a connection half-open or opens too many — is closed, counted and logged (once per
// reason per second), and never stops the process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "runtime/fabric.h"
#include "runtime/status.h"

namespace troupe::runtime {

// ---- Limits. A stranger can make us hold at most handshakes_pending_max connections, each
// with at most handshake_frame_bytes_max buffered, for at most handshake_deadline_ms. ----

// The whole handshake, TCP connect included: two round trips and one endpoint made. On
// loopback it takes about a millisecond, across a LAN a few; 5 s covers a process that is
// still starting on a loaded machine. It is also how long a silent or half-open connection
// holds one of handshakes_pending_max.
inline constexpr int64_t handshake_deadline_ms = 5000;
// Connections in their handshake at once, accepted side. A job's nodes connect once each
// at start, and to each other after a view change: 64 lets a 64-node job join at one
// instant. Past it a new connection is closed at once and counted, so a flood costs an
// accept and a close each, never memory or a stuck process.
inline constexpr size_t handshakes_pending_max = 64;
// One handshake frame. The largest is a Proof or Verdict carrying a UCX worker address:
// ~0.3 KiB with shared memory and tcp here, a few KiB with many RDMA devices.
inline constexpr size_t handshake_frame_bytes_max = 16384;
inline constexpr size_t handshake_prefix_bytes = 4;  // the frame's u32 length
// How often one kind of refusal may log: once per this, with a running count, so that a
// flood of garbage is not also a flood of log lines.
inline constexpr int64_t refusal_log_interval_ms = 1000;

static_assert(handshakes_pending_max * handshake_frame_bytes_max <= (size_t{4} << 20),
              "a flood of pending handshakes buffers at most 4 MiB");
static_assert(handshake_frame_bytes_max < UINT32_MAX, "the length prefix is a u32");

// A peer that passed the handshake, and the transport address it gave.
struct Admitted {
  PeerInfo info;
  std::string transport_address;
};

// Called on the bootstrap's thread when a connecting peer proved the secret, before the
// verdict goes back: the transport makes the peer's endpoint and returns its own address
// for this peer (or an error: then the peer is refused with it).
using AdmitFn = std::function<Result<std::string>(const Admitted& peer)>;
// Called on the bootstrap's thread when an admitted peer is gone: the verdict that admitted
// it could not be delivered, or its connection closed later. The connection stays open for
// as long as both processes live, so its close is a peer's death, seen in milliseconds
// (the kernel closes a dead process's sockets), where UCX alone notices an idle endpoint's
// loss only by keepalive. The peer is named by the transport address we gave it.
using LostFn = std::function<void(const std::string& our_address, const std::string& why)>;
// The end of one connect(): the acceptor that proved the secret, or why not.
using ConnectDoneFn = std::function<void(Result<Admitted> result)>;

struct BootstrapConfig {
  std::string secret;       // the job secret (load_secret); never empty
  std::string node_id;      // "" until the coordinator gives one (set_node_id)
  std::string listen_host;  // the address listen() binds (an IPv4 or IPv6 address)
  // The limits above; tests shorten them to see them act.
  int64_t deadline_ms = handshake_deadline_ms;
  size_t pending_max = handshakes_pending_max;
  std::string role = {};  // said in our Hello: "" a worker node, "engram" a memory node
};

class Bootstrap {
 public:
  // Starts the bootstrap's thread. Errors: invalid_argument for an empty secret.
  // `on_refused` (may be empty) hears of every connection made to us that ended before it
  // was admitted, on the bootstrap's thread, unthrottled (the caller throttles: refusals.h);
  // not of those stop_handshakes() closes.
  static Result<std::unique_ptr<Bootstrap>> create(BootstrapConfig config, AdmitFn on_admit,
                                                   LostFn on_lost, RefusedFn on_refused = {});
  // Closes the listener and every connection and joins the thread: no callback runs after.
  // Peers see their connection to us close (on_lost there).
  ~Bootstrap();
  Bootstrap(const Bootstrap&) = delete;
  Bootstrap& operator=(const Bootstrap&) = delete;

  // Binds listen_host:port (0: any free port) and accepts. Returns the bound port. Errors
  // (io_error or invalid_argument) name the address and the fix: in use, not an address of
  // this machine, not an address at all.
  Result<uint16_t> listen(uint16_t port);

  // Connects to host:port and runs the handshake, offering `transport_address` once the
  // acceptor has proved the secret. `done` runs once, on the bootstrap's thread, within
  // handshake_deadline_ms. Any thread.
  void connect(const std::string& host_port, std::string transport_address, ConnectDoneFn done);

  // Closes the listener and every connection still in its handshake; no AdmitFn or
  // ConnectDoneFn runs after it returns. Admitted peers keep their connection. Any thread
  // but the bootstrap's.
  void stop_handshakes();

  void set_node_id(const std::string& node_id);  // any thread
  // Adds the handshake counters to `out` (the fabric's).
  void add_counters(FabricCounters* out) const;

  struct Impl;

 private:
  explicit Bootstrap(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port"; false unless the port is a number in 1..65535 and the host is not
// empty ("[::1]:80" gives "::1").
bool split_host_port(const std::string& host_port, std::string* host, uint16_t* port);

}  // namespace troupe::runtime
