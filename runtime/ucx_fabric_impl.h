// UcxFabric's internals, shared by ucx_fabric.cc (setup, progress loop, public calls)
// and ucx_fabric_io.cc (the send, receive and endpoint-error paths). Not a public header.
#pragma once

#include <sys/socket.h>
#include <ucp/api/ucp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/ucx_fabric.h"
#include "runtime/wire.h"

namespace troupe::runtime {

// The one active-message id the fabric uses.
inline constexpr unsigned fabric_am_id = 7;
// How often a rejection reason may log: once per this interval, with a running count.
inline constexpr int64_t reject_log_interval_ms = 1000;
// The progress thread's longest sleep; it also wakes on UCX events and commands.
inline constexpr int progress_sleep_ms_max = 100;
// Empty polls the progress thread makes before it may sleep, however long it spun: a
// thread that was preempted for longer than its spin polls again before it sleeps.
inline constexpr uint32_t progress_idle_polls_min = 64;
// An empty ucp_worker_progress takes ~40 ns here, as does steady_clock::now() (a VM):
// reading the clock every 16 polls keeps the spin's idle test under 5% of its time.
inline constexpr uint32_t progress_clock_polls = 16;
static_assert(progress_idle_polls_min % progress_clock_polls == 0);
// How long the destructor lets endpoints flush before it tears the worker down.
inline constexpr int64_t close_flush_ms_max = 1000;
// Payload bytes of rendezvous receives being fetched at once; later ones wait (their
// senders with them) until earlier ones land. Unbounded, a window of 512 sends of 4 MiB
// made us allocate 2 GiB of fresh buffers that page-faulted on first touch (4 MiB ran at
// a third of ucx_perftest). Shared memory copies one message at a time, so more in flight
// only grows the working set: 4 MiB beat 8 MiB by ~20% and 64 MiB by ~25% at 1-4 MiB
// messages here; a fast network needs about bandwidth x RTT (400 Gb/s x 10 us = 0.5 MB).
// A message larger than this is fetched alone. The limit is per sending peer.
inline constexpr uint64_t rndv_inflight_bytes_max = uint64_t{4} << 20;
static_assert(rndv_inflight_bytes_max <= size_t{512} << 20,
              "the default buffer cache keeps every in-flight rendezvous buffer for reuse");

// A sender waiting for room in the in-flight window is woken when the window has drained
// to this (or when the progress thread goes idle), not at every completion: waking it per
// completion cost a futex round trip per small message, a fifth of 1 KiB bandwidth.
inline constexpr size_t inflight_wake_messages = inflight_messages_max / 2;
static_assert(inflight_wake_messages > 0 && inflight_wake_messages < inflight_messages_max);

struct SendOp;

struct PeerState {
  UcxFabric::Impl* impl = nullptr;
  PeerId id = peer_none;
  ucp_ep_h ep = nullptr;
  bool up = true;
  // UCX 1.13 crashes replaying an iov send queued during wire-up, so sends wait here
  // until a flush of the new endpoint completes (wire-up done), then go in order.
  bool ready = false;
  std::deque<std::unique_ptr<SendOp>> waiting;
};

struct SendOp {
  UcxFabric::Impl* impl = nullptr;
  PeerId peer = peer_none;
  std::string frame;  // UCX 1.13: the AM header must live until the send completes
  size_t nonempty_payloads = 0;
  ucp_dt_iov_t single{};          // the payload, when exactly one is non-empty
  std::vector<ucp_dt_iov_t> iov;  // the non-empty payloads, when more than one
  uint64_t payload_bytes = 0;
  SendDoneFn done;
};

// A rendezvous receive: announced by the sender, fetched when rndv_inflight_bytes_max
// allows. Its storage is taken from the pool only then.
struct RecvOp {
  UcxFabric::Impl* impl = nullptr;
  void* data_desc = nullptr;  // UCX's handle, valid until fetched or released
  Message message;
  std::vector<uint64_t> payload_sizes;
  std::vector<uint64_t> payload_offsets;
  uint64_t storage_bytes = 0;
  uint64_t payload_bytes = 0;
  std::vector<ucp_dt_iov_t> iov;
};

struct AtomicCounters {
  std::atomic<uint64_t> sent_messages{0}, sent_bytes{0}, received_messages{0}, received_bytes{0},
      rejected_malformed{0}, rejected_oversized{0}, dropped_stale_epoch{0}, dropped_queue_full{0},
      send_failed{0}, peers_down{0};
};

struct UcxFabric::Impl {
  explicit Impl(const UcxOptions& o) : options(o), pool(o.buffer_cache_bytes_max) {}

  // ---- setup and the progress loop (ucx_fabric.cc) ----
  Status init();
  void progress_loop();
  bool run_commands();
  bool start_local_sends();
  void sleep_until_event();
  void close_all();
  // Runs fn on the progress thread (inline when already on it).
  void post(std::function<void()> fn);
  bool on_progress_thread() const { return std::this_thread::get_id() == thread_id; }

  // ---- the I/O paths, all on the progress thread (ucx_fabric_io.cc) ----
  Result<uint16_t> do_listen(uint16_t port);
  Result<PeerId> do_connect(const sockaddr_storage& addr, socklen_t len);
  PeerId add_peer(ucp_ep_params_t* params);  // peer_none if UCX refuses
  void post_send(std::unique_ptr<SendOp> op);
  void start_send(PeerState& peer, std::unique_ptr<SendOp> op);
  void flush_new_endpoint(PeerState* peer);
  void on_endpoint_ready(PeerState* peer, ucs_status_t status);
  void finish_send(SendOp* op, ucs_status_t status);
  ucs_status_t on_am(const void* header, size_t header_length, void* data, size_t length,
                     const ucp_am_recv_param_t* param);
  void deliver_eager(PeerId peer, Frame&& frame, const std::byte* data, size_t length);
  void start_waiting_rndv();
  void start_rndv(std::unique_ptr<RecvOp> op);
  void finish_rndv(std::unique_ptr<RecvOp> op, ucs_status_t status);
  void deliver(Message&& message, uint64_t payload_bytes);
  void reject(PeerId peer, RejectReason reason);
  void on_peer_error(PeerState* peer, ucs_status_t status);
  void close_failed_endpoints();

  // ---- window accounting (any thread) ----
  bool take_window();
  void release_inflight();
  Status check_peer_up(PeerId peer);
  void wake_window_waiters();

  UcxOptions options;
  FabricHandlers handlers;
  BufferPool pool;

  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  int event_fd = -1;
  std::thread thread;
  std::thread::id thread_id;
  std::atomic<bool> stop{false};
  std::atomic<bool> sleeping{false};

  std::mutex command_mutex;
  std::vector<std::function<void()>> commands;
  size_t unclosed_endpoints = 0;  // close_all: flushes still running at close_flush_ms_max
  size_t fenced_peers = 0;        // disconnect()ed while they may still be alive
  size_t failed_rndv = 0;         // rendezvous receives that ended in an error
  // Sends made on the progress thread itself (from a receive handler): started right after
  // ucp_worker_progress returns, without the command queue's lock and wake-up, and never
  // from inside a UCX callback.
  std::vector<std::unique_ptr<SendOp>> local_sends;
  std::atomic<bool> commands_pending{false};

  // Progress-thread only.
  ucp_listener_h listener = nullptr;
  std::map<PeerId, std::unique_ptr<PeerState>> peers;
  std::unordered_map<ucp_ep_h, PeerId> peer_by_ep;
  std::vector<PeerState*> to_close;
  std::deque<std::unique_ptr<RecvOp>> rndv_waiting;
  std::vector<uint64_t> eager_offsets;  // deliver_eager's scratch, reused
  // Per sending peer: a peer that stops answering mid-transfer (a hung node) holds up its
  // own rendezvous receives, never the others'.
  std::map<PeerId, uint64_t> rndv_inflight_bytes;
  PeerId next_peer = 1;
  std::array<std::chrono::steady_clock::time_point, reject_reason_count> last_reject_log{};
  std::array<uint64_t, reject_reason_count> reject_counts{};

  // Any thread: which peers are up, for send()'s early answer.
  std::mutex peer_mutex;
  std::unordered_map<PeerId, bool> peer_up;

  // The in-flight window: taken (take_window) and released on any thread; senders that
  // wait for room and flush() wait on window_cv.
  std::atomic<size_t> inflight{0};
  std::atomic<int> window_waiters{0};
  std::mutex window_mutex;
  std::condition_variable window_cv;

  std::atomic<uint64_t> epoch{0};
  AtomicCounters counters;

  std::mutex queue_mutex;
  std::condition_variable queue_cv;
  std::deque<Message> queue;
};

}  // namespace troupe::runtime
