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
// How long the destructor lets endpoints flush before it tears the worker down.
inline constexpr int64_t close_flush_ms_max = 1000;

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
  std::string frame;              // UCX 1.13: the AM header must live until the send completes
  std::vector<ucp_dt_iov_t> iov;  // non-empty payloads only
  uint64_t payload_bytes = 0;
  SendDoneFn done;
};

struct RecvOp {
  UcxFabric::Impl* impl = nullptr;
  Message message;
  std::vector<ucp_dt_iov_t> iov;
  uint64_t payload_bytes = 0;
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
  void start_rndv(void* data_desc, std::unique_ptr<RecvOp> op);
  void deliver(Message&& message, uint64_t payload_bytes);
  void reject(PeerId peer, RejectReason reason);
  void on_peer_error(PeerState* peer, ucs_status_t status);
  void close_failed_endpoints();

  // ---- window accounting (any thread) ----
  void release_inflight();

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
  std::atomic<bool> commands_pending{false};

  // Progress-thread only.
  ucp_listener_h listener = nullptr;
  std::map<PeerId, std::unique_ptr<PeerState>> peers;
  std::unordered_map<ucp_ep_h, PeerId> peer_by_ep;
  std::vector<PeerState*> to_close;
  PeerId next_peer = 1;
  std::array<std::chrono::steady_clock::time_point, reject_reason_count> last_reject_log{};
  std::array<uint64_t, reject_reason_count> reject_counts{};

  // Any thread: which peers are up, for send()'s early answer.
  std::mutex peer_mutex;
  std::unordered_map<PeerId, bool> peer_up;

  // The in-flight window: incremented under window_mutex, decremented anywhere.
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
