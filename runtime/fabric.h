// The fabric moves envelopes and raw tensor payloads between node processes. It knows
// nothing of the model or of actors: an Envelope names its sender and receiver by address
// string, and the payloads are opaque bytes. A peer is admitted only after a mutual
// handshake over the job secret (runtime/bootstrap.h), before any byte reaches the
// transport. Implementations: UcxFabric (real processes, runtime/ucx_fabric.h); SimFabric
// (one process, simulated clock) later.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/buffer_pool.h"
#include "runtime/status.h"

namespace troupe::runtime {

// ---- Limits. Every size a peer can ask us to hold is bounded by one of these. ----

// The serialized Envelope (addresses, type, the typed header, the payload size list).
// It travels as the UCX active-message header, which UCX 1.13 requires to fit in the
// first fragment (ucp worker attribute max_am_header, checked at start); control
// messages are a few hundred bytes, and anything bigger belongs in a payload.
inline constexpr size_t envelope_bytes_max = 4096;
// The length prefix in front of the serialized Envelope: a u32, little-endian.
inline constexpr size_t frame_prefix_bytes = 4;
inline constexpr size_t frame_bytes_max = frame_prefix_bytes + envelope_bytes_max;
// Raw payloads per message: a message carries a handful of tensors (a gradient bucket's
// shards); 64 bounds the iov we build and the size list a peer can declare.
inline constexpr size_t payloads_max = 64;
// All payload bytes of one message. 1 GiB is a 256 M-float shard, larger than any single
// tensor of the configs we run; bigger state is chunked by the sender. It also bounds the
// one allocation a (possibly malicious) peer's declared sizes can make us do.
inline constexpr uint64_t message_bytes_max = uint64_t{1} << 30;
// Sends accepted but not yet completed by UCX. 1024 keeps rendezvous pipelines and bursts
// of small eager sends flowing (bandwidth flattens past ~32 in flight) while bounding the
// headers and caller buffers we pin; send() waits up to send_wait_ms_max for room.
inline constexpr size_t inflight_messages_max = 1024;
inline constexpr int64_t send_wait_ms_max = 1000;
// Sends made on the fabric's own thread (a receive handler, FabricGuest::run) cannot wait
// for room: only that thread makes room. They may go this far past the window before send()
// refuses them (busy). The fabric lends itself to its guest only while the window has room,
// so a guest goes past it by at most what it sends in one run.
inline constexpr size_t inflight_overcommit_max = inflight_messages_max;
// Delivered messages waiting in receive()'s queue (only when no receive handler is set).
// Past this the consumer is not keeping up: messages are dropped and counted rather than
// letting memory grow. It holds a full send window of four peers.
inline constexpr size_t recv_queue_messages_max = 4096;

static_assert(frame_bytes_max <= UINT32_MAX, "the length prefix is a u32");
// The declared size list (varints of at most 10 bytes plus a tag byte) must leave room
// for addresses and the typed header inside the envelope.
static_assert(payloads_max * 11 <= envelope_bytes_max / 4);
static_assert(recv_queue_messages_max >= 4 * inflight_messages_max);
static_assert(message_bytes_max <= (uint64_t{1} << 40), "sizes stay far from overflow");

// Envelope types below this are the runtime's handshake and membership messages. They are
// never dropped as stale: a node that has not joined yet has no epoch to send. The router
// admits them from unauthenticated peers and nothing else (runtime/router.h).
inline constexpr uint32_t control_types_end = 64;

using PeerId = uint32_t;
inline constexpr PeerId peer_none = 0;  // ids start at 1

// The header fields of a message. The payloads travel beside it, uncopied.
struct Envelope {
  uint64_t epoch = 0;  // the sender's epoch; older than the receiver's means dropped
  std::string from;    // sender address, e.g. "n3/worker.2"
  std::string to;      // receiver address
  uint32_t type = 0;   // meaningful to the layer above
  std::string header;  // the typed message's serialized header
};

// A received message. Payloads are views into `storage` (each 64-byte aligned).
struct Message {
  PeerId peer = peer_none;
  Envelope envelope;
  std::vector<std::span<const std::byte>> payloads;
  ByteBuffer storage;
};

struct FabricCounters {
  uint64_t sent_messages = 0;
  uint64_t sent_bytes = 0;  // payload bytes of completed sends
  uint64_t received_messages = 0;
  uint64_t received_bytes = 0;  // payload bytes delivered
  uint64_t rejected_malformed = 0;
  uint64_t rejected_oversized = 0;
  uint64_t dropped_stale_epoch = 0;
  uint64_t dropped_queue_full = 0;
  uint64_t send_failed = 0;  // sends whose completion reported an error
  uint64_t peers_down = 0;
  // Not a counter: the peers whose state the fabric holds now, up or not yet freed. It
  // returns to the live peers once departed ones are freed (a long job's churn leaves none).
  uint64_t peers_held = 0;
  // Full FIFOs of exited shared-memory peers marked read so that UCX lets them go
  // (runtime/dead_peer_fifos.h).
  uint64_t dead_fifos_released = 0;
  // Slots of this process's receive FIFO that a writer died in the middle of, marked done
  // so that the reader goes on (runtime/dead_writer_slots.h).
  uint64_t dead_writer_slots_repaired = 0;
  // The door (runtime/bootstrap.h): handshakes that admitted a peer, and every connection
  // closed before that, by reason.
  uint64_t handshakes_admitted = 0;
  uint64_t handshakes_refused = 0;     // a wrong job secret, either side
  uint64_t handshakes_malformed = 0;   // bytes that are not a handshake frame, or too many
  uint64_t handshakes_timed_out = 0;   // slow or half-open past handshake_deadline_ms
  uint64_t handshakes_closed = 0;      // the other side hung up, or could not be reached
  uint64_t handshakes_over_limit = 0;  // closed at once: handshakes_pending_max were open
};

// Who a peer proved to be in the handshake.
struct PeerInfo {
  std::string node;            // its node id; "" for a node that has not joined yet
  std::string listen_address;  // where it accepts connections, host:port ("" if none)
  uint32_t pid = 0;            // its process id, as it says (for operators)
  bool accepted = false;       // it connected to us; false: we connected to it
  std::string role = {};       // as its Hello says: "" a worker node, "engram" a memory node
};

// A connection, or a message, that this process refused, said so that an operator (or a
// machine reading the coordinator's events.jsonl, kind connection_refused) sees who knocked
// and why. The fabric reports the connections its door refused before admitting them; the
// router adds the messages of admitted peers it drops for who they are (refusals.h).
struct ConnectionRefusal {
  std::string peer_address;  // where it came from, host:port ("" unknown)
  std::string node;          // the node id it claimed or was bound to ("" none)
  uint32_t pid = 0;          // its process id, as it said (0: not said)
  // What refused it, for machines: one of refusal_causes (refusals.h).
  std::string cause;
  std::string reason;          // the details, for people
  uint64_t evicted_epoch = 0;  // cause "evicted": the epoch whose view dropped the node
  // A summary (RefusalThrottle): this many more were refused from the same source for the
  // same cause within window_ms after the one reported; the other fields are the last one's.
  uint64_t more = 0;
  int64_t window_ms = 0;
};

// Called on the fabric's own thread; must not block (hand the message on and return).
using ReceiveFn = std::function<void(Message&& message)>;
using PeerDownFn = std::function<void(PeerId peer, const Status& why)>;
// A peer passed the handshake: messages from it follow, never before this call.
using PeerUpFn = std::function<void(PeerId peer, const PeerInfo& info)>;
// A connection the door refused (it never reached the transport). Counted either way.
using RefusedFn = std::function<void(const ConnectionRefusal& refusal)>;
// Completion of one send: after it runs, the payload memory may be reused.
using SendDoneFn = std::function<void(const Status& status)>;

// Work a fabric may run on its own thread between two polls of its transport: Host lends
// the thread to the CAF scheduler (lent_scheduler.h), so that a received message reaches its
// actor, and the actor's reply the transport, without waking another thread. The fabric
// calls these on its own thread only, never from inside a transport callback.
class FabricGuest {
 public:
  virtual ~FabricGuest() = default;
  // Runs some ready work, a bounded amount (the fabric polls again after it); true if any.
  // Sends it makes (Fabric::send on the fabric's thread) are never refused for a full
  // window: the fabric lends itself only while the window has room.
  virtual bool run() = 0;
  // The thread polls, and calls run(), from now on: new work may wait for it.
  virtual void step_in() = 0;
  // The thread stops polling for a while (it sleeps, its send window is full, it closes):
  // work ready now, and what comes later, goes to the guest's own threads.
  virtual void step_aside() = 0;
};

struct FabricHandlers {
  ReceiveFn on_receive;                // empty: messages queue for receive()
  PeerDownFn on_peer_down;             // empty: peer loss is only counted
  PeerUpFn on_peer_up;                 // empty: admission is only counted
  RefusedFn on_refused;                // empty: refused connections are only counted and logged
  std::shared_ptr<FabricGuest> guest;  // empty: the fabric's thread only moves messages
};

class Fabric {
 public:
  virtual ~Fabric() = default;

  // Accepts connections on `port` (0: any free port). Returns the bound port. Call once.
  // Every connection must pass the mutual handshake over the job secret before the
  // transport hears of it; then on_peer_up(accepted = true). Errors name the address: in
  // use (another process listens there), not an address of this machine.
  virtual Result<uint16_t> listen(uint16_t port) = 0;

  // Connects to "host:port" and returns the peer id at once. The handshake and the
  // endpoint complete asynchronously: on_peer_up when the peer proved the job secret,
  // on_peer_down (why: wrong job secret, refused, unreachable, timed out) otherwise. Sends
  // before on_peer_up are queued. Errors here: invalid_argument (not host:port), closed.
  virtual Result<PeerId> connect(const std::string& host_port) = 0;

  // The node id this process claims in handshakes from now on ("" until a node has joined;
  // the coordinator gives it). Any thread.
  virtual void set_node_id(const std::string& node_id) = 0;

  // Sends `envelope` plus `payloads` (not copied). Returns once the send is accepted;
  // `done` runs (on the fabric's thread, or inline) when the payload memory may be
  // reused — the caller keeps it alive and unchanged until then. Errors: too_large or
  // invalid_argument (limits; nothing sent), unknown_peer, peer_down, busy (in-flight
  // window full for send_wait_ms_max; on the fabric's own thread, which never waits: past
  // inflight_overcommit_max), closed. After an ok return, a transport failure
  // is reported to `done` only. May be called from any thread, including handlers.
  virtual Status send(PeerId peer, const Envelope& envelope,
                      std::span<const std::span<const std::byte>> payloads,
                      SendDoneFn done = {}) = 0;

  // Drops the endpoint to `peer` now, without flushing (a node the view dropped, which may
  // be hung rather than dead): its unfinished sends complete with an error (their `done`
  // runs), its announced rendezvous messages are declined, later sends to it fail with
  // peer_down. on_peer_down is not called: the caller knows. Unknown or down peers: no-op.
  // Caution, UCX 1.13: after force-closing the endpoint of a hung peer with sends pending
  // over shared memory, one chaos job in 30 saw another peer's messages stall; the router
  // does not use this yet (next: reproduce with ucx_perftest-like isolation).
  virtual void disconnect(PeerId peer) = 0;

  // Waits until every accepted send has completed, or `timeout` (then Code::timeout).
  virtual Status flush(std::chrono::milliseconds timeout) = 0;

  // Pops the next delivered message when no receive handler is set; Code::timeout if
  // none arrives within `timeout`.
  virtual Result<Message> receive(std::chrono::milliseconds timeout) = 0;

  // The receiver's epoch. Never decreases (asserted); messages with an older epoch are
  // dropped and counted.
  virtual void set_epoch(uint64_t epoch) = 0;
  virtual uint64_t epoch() const = 0;

  virtual FabricCounters counters() const = 0;
};

}  // namespace troupe::runtime
