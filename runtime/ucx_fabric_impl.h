// UcxFabric's internals, shared by ucx_fabric.cc (setup, progress loop, public calls)
// and ucx_fabric_io.cc (the send, receive and endpoint-error paths). Not a public header.
#pragma once

#include <ucp/api/ucp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/batch_wire.h"
#include "runtime/bootstrap.h"
#include "runtime/dead_writer_slots.h"
#include "runtime/ucx_fabric.h"
#include "runtime/wire.h"

namespace troupe::runtime {

// The active-message ids the fabric uses: one message, or a batch of small ones.
inline constexpr unsigned fabric_am_id = 7;
inline constexpr unsigned fabric_batch_am_id = 8;
// Small messages to one peer go as one active message when UcxOptions::batch_small_messages:
// each as [u32 frame bytes][u32 payload bytes][frame][payloads], the peer's token once in
// the header. A message of at most batch_message_bytes_max (frame and payloads) goes into a
// batch, up to batch_bytes_max in all: one element of UCX's shared-memory FIFO (8 KiB) with
// room to spare. Two ways in (ucx_fabric_batch.cc):
// - sent from another thread: the sending thread copies it into the batch at the tail of the
//   command queue (stage_send), so the progress thread takes a burst as a few commands, and
//   neither thread allocates per message. Measured (bench_fabric, 1 KiB, 2 loaded cores):
//   handing each message over as a command of its own left 17% of the CPU idle in futex
//   waits on malloc's arena lock (allocated by the sender, freed by the progress thread);
// - sent on the progress thread (an actor it runs, a handler): the small messages to one
//   peer started in one pass are packed when the pass ends (add_to_batch); a batch of one
//   goes as a message of its own.
// Either way a message holds its slot of the in-flight window until its batch completes.
inline constexpr size_t batch_message_bytes_max = 2048;
inline constexpr size_t batch_bytes_max = 7168;
// Every active-message header starts with the token its receiver gave the sender in the
// handshake (u64, little-endian): it names the sending peer, and a message without a known
// token is rejected. Tokens are random, so no peer can pass as another.
inline constexpr size_t am_token_bytes = 8;
// Writes `token` at `out` (am_token_bytes, little-endian); reads one back.
inline void put_token(char* out, uint64_t token) {
  for (size_t i = 0; i < am_token_bytes; ++i) out[i] = char((token >> (8 * i)) & 0xff);
}
inline uint64_t get_token(const void* in) {
  const auto* p = static_cast<const unsigned char*>(in);
  uint64_t token = 0;
  for (size_t i = 0; i < am_token_bytes; ++i) token |= uint64_t(p[i]) << (8 * i);
  return token;
}
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
// After a peer fails, this process's mappings are swept for exited peers' full FIFOs
// (dead_peer_fifos.h) every fifo_sweep_interval for fifo_sweep_window: a hung peer is
// declared down first and killed (by its launcher) later.
inline constexpr std::chrono::milliseconds fifo_sweep_interval{2000};
inline constexpr std::chrono::milliseconds fifo_sweep_window{180000};
// In the same window, our own receive FIFOs are looked at this often for a slot that a
// writer died in the middle of (dead_writer_slots.h), and one unready this long while no
// process that maps the FIFO is stopped is repaired. A live writer fills a slot in
// microseconds once it runs; the longest a runnable thread was seen waiting for a core here
// is 1.6 s (docs/operations.md, "Late heartbeats"), and a writer that waited longer would
// lose its message and, if it wrote its slot after a later writer did, that one's too. A
// coordinator that hears no node at all waits three heartbeat timeouts (3 s at the least)
// before it declares one dead, so the repair comes before that.
inline constexpr std::chrono::milliseconds dead_writer_check_interval{250};
inline constexpr std::chrono::milliseconds dead_writer_stuck_ms_min{2000};
// How long the destructor lets endpoints flush (deliver what was sent: a Shutdown) before
// it force-closes them. A peer that answers flushes in microseconds; one that stopped
// answering (a hung node) never does.
inline constexpr int64_t close_flush_ms_max = 1000;
// How long a force close may take to complete (it purges locally; milliseconds at most).
// Past it the worker is left to the process's exit rather than destroyed with requests on it.
inline constexpr int64_t close_force_ms_max = 1000;
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

// What UCX callbacks (endpoint errors, the wire-up flush) are given to name a peer: never a
// PeerState, which is freed once the peer is gone, but this, which lives as long as the
// fabric (16 bytes per peer ever made) and is looked up in `peers` by id.
struct PeerHandle {
  UcxFabric::Impl* impl = nullptr;
  PeerId id = peer_none;
};

struct PeerState {
  PeerId id = peer_none;
  const PeerHandle* handle = nullptr;  // for UCX callbacks
  ucp_ep_h ep = nullptr;               // null while the handshake runs, and once closed
  uint64_t send_token = 0;             // the peer's token for us: the head of our messages to it
  uint64_t recv_token = 0;             // ours for it
  PeerInfo info;
  bool up = true;
  // UCX 1.13 crashes replaying an iov send queued during wire-up, so sends wait here
  // until a flush of the new endpoint completes (wire-up done), then go in order.
  bool ready = false;
  std::deque<std::unique_ptr<SendOp>> waiting;
  // Whether on_peer_up has run for it. A peer we connected to may send before its Verdict
  // reaches us (it made its endpoint when it admitted us): what it sends waits here, in
  // order, and is delivered right after on_peer_up, so the layer above never sees a
  // message from a peer it has not been told of. At most early_messages_max.
  bool announced = false;
  std::deque<Message> early;
  // Small sends started in this pass, sent as one batch when it ends (flush_batches).
  std::vector<std::unique_ptr<SendOp>> batch;
  size_t batch_bytes = 0;
};
// Messages held per peer until it is announced: a handshake's worth of a peer's first
// messages (a Welcome, a View, heartbeats); more means the Verdict is lost, and the peer
// fails on its handshake deadline anyway.
inline constexpr size_t early_messages_max = 1024;

// A batch of small sends in flight: its ops finish when it does.

// A command for the progress thread: a send to start, or any other function.
struct Command {
  SendOp* send = nullptr;  // owned: post_send takes it
  std::function<void()> fn;
};

struct SendOp {
  UcxFabric::Impl* impl = nullptr;
  PeerId peer = peer_none;
  // [am_token_bytes: filled at start][the frame]. UCX 1.13: the AM header must live until
  // the send completes.
  std::string frame;
  size_t nonempty_payloads = 0;
  ucp_dt_iov_t single{};          // the payload, when exactly one is non-empty
  std::vector<ucp_dt_iov_t> iov;  // the non-empty payloads, when more than one
  uint64_t payload_bytes = 0;
  SendDoneFn done;
  // A batch staged by sending threads (UcxFabric::send of a small message from a thread other
  // than the progress thread; stage_send): `frame` holds only the token, `records` the
  // messages (batch_wire.h), `dones` the completions of those that have one. It goes as one
  // fabric_batch_am_id message, and completes each of its messages with its status.
  size_t staged = 0;  // messages in `records` (0: an ordinary send)
  std::string records;
  std::vector<SendDoneFn> dones;
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
      send_failed{0}, peers_down{0}, peers_held{0}, dead_fifos_released{0},
      dead_writer_slots_repaired{0};
};

struct UcxFabric::Impl {
  explicit Impl(const UcxOptions& o)
      : options(o),
        pool(o.buffer_cache_bytes_max, std::chrono::milliseconds(o.buffer_cache_idle_ms)) {}

  // ---- setup and the progress loop (ucx_fabric.cc) ----
  Status init();
  void progress_loop();
  bool run_commands();
  bool start_local_sends();
  void sleep_until_event();
  void lend(bool on);  // lends the thread to handlers.guest, or takes it back
  void close_all();
  // Runs fn on the progress thread (inline when already on it).
  void post(std::function<void()> fn);
  bool on_progress_thread() const { return std::this_thread::get_id() == thread_id; }

  void close_endpoints(std::chrono::steady_clock::time_point flush_deadline);
  void reap_closed();
  void progress_until(const std::vector<void*>& requests,
                      std::chrono::steady_clock::time_point deadline);
  bool worker_destroyable() const;

  // ---- peers and their handshakes (ucx_fabric_peers.cc) ----
  PeerState* new_peer(const PeerInfo& info);
  std::string transport_address(const PeerState& peer) const;
  Status open_endpoint(PeerState* peer, const std::string& their_address);
  void on_connected(PeerId id, Result<Admitted> result);
  Result<std::string> admit(const Admitted& peer);                    // bootstrap thread
  void lost(const std::string& our_address, const std::string& why);  // bootstrap thread
  void fail_lost_peers();
  void fail_peer(PeerState* peer, const Status& why);
  void forget_peer(PeerState* peer);

  // ---- the I/O paths, all on the progress thread (ucx_fabric_io.cc) ----
  void post_send(std::unique_ptr<SendOp> op);
  void start_send(PeerState& peer, std::unique_ptr<SendOp> op);  // may hold it for a batch
  void send_now(PeerState& peer, std::unique_ptr<SendOp> op);
  ucp_request_param_t send_params(SendOp* op);
  void finish_or_wait(std::unique_ptr<SendOp> op, ucs_status_ptr_t r);
  void flush_new_endpoint(PeerState* peer);
  void on_endpoint_ready(PeerState* peer, ucs_status_t status);
  void start_ready_peers();
  void finish_send(SendOp* op, ucs_status_t status);
  ucs_status_t on_am(const void* header, size_t header_length, void* data, size_t length,
                     const ucp_am_recv_param_t* param);
  PeerId peer_of_header(const void* header, size_t header_length) const;
  void accept_eager(PeerId peer, Frame&& frame, const std::byte* data, size_t length);
  void deliver_eager(PeerId peer, Frame&& frame, const std::byte* data, size_t length);

  // ---- batches of small sends (ucx_fabric_batch.cc) ----
  // send() of a small message on another thread: appended to the batch at the tail of the
  // command queue when that is one to the same peer with room, else a new one (taking a
  // window slot, waiting for it as send() does). The bytes are copied here.
  Status stage_send(PeerId peer, std::span<const std::byte> frame,
                    std::span<const std::span<const std::byte>> payloads, uint64_t payload_bytes,
                    SendDoneFn done);
  void send_staged(PeerState& peer, std::unique_ptr<SendOp> op);
  bool batchable(const SendOp& op) const;
  void add_to_batch(PeerState& peer, std::unique_ptr<SendOp> op);
  void flush_batch(PeerState& peer);
  void flush_batches();  // every peer's: call after anything that may start sends
  ucs_status_t on_batch_am(const void* header, size_t header_length, void* data, size_t length,
                           const ucp_am_recv_param_t* param);
  void start_waiting_rndv();
  void start_rndv(std::unique_ptr<RecvOp> op);
  void finish_rndv(std::unique_ptr<RecvOp> op, ucs_status_t status);
  void deliver(Message&& message, uint64_t payload_bytes);
  void announce(PeerState* peer);
  void reject(PeerId peer, RejectReason reason);
  void on_peer_error(PeerId peer, ucs_status_t status);  // an endpoint's error callback
  void close_failed_endpoints();

  // ---- window accounting (any thread) ----
  bool take_window();
  Status wait_for_window();  // take_window, waiting up to send_wait_ms_max for room
  Status send_here(std::unique_ptr<SendOp> op);  // send() on the progress thread
  void release_inflight(size_t messages = 1);
  Status check_peer_up(PeerId peer);
  void wake_window_waiters();

  UcxOptions options;
  FabricHandlers handlers;
  BufferPool pool;

  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::string worker_address;            // ucp_worker_get_address, given to admitted peers
  std::unique_ptr<Bootstrap> bootstrap;  // the door; destroyed before the progress thread stops
  int event_fd = -1;
  std::thread thread;
  std::thread::id thread_id;
  std::atomic<bool> stop{false};
  std::atomic<bool> sleeping{false};

  std::mutex command_mutex;
  std::vector<Command> commands;
  size_t unclosed_endpoints = 0;  // close_all: closes still running at close_force_ms_max
  size_t fenced_peers = 0;        // disconnect()ed while they may still be alive
  size_t failed_rndv = 0;         // rendezvous receives that ended in an error
  // Sends made on the progress thread itself (from a receive handler): started right after
  // ucp_worker_progress returns, without the command queue's lock and wake-up, and never
  // from inside a UCX callback.
  std::vector<std::unique_ptr<SendOp>> local_sends;
  std::atomic<bool> commands_pending{false};
  bool lent = false;  // the thread runs handlers.guest's work between polls (lend)

  // Progress-thread only.
  std::map<PeerId, std::unique_ptr<PeerState>> peers;
  std::deque<PeerHandle> handles;  // one per peer ever made (a deque: their addresses stay)
  std::unordered_map<uint64_t, PeerId> peer_by_token;  // recv_token → peer
  std::vector<PeerState*> to_close;
  std::vector<PeerId> batched;  // peers with a non-empty batch
  // Peers whose new endpoint's flush completed (a UCX callback): their waiting sends start
  // after ucp_worker_progress returns, never from inside the callback.
  std::vector<std::pair<PeerId, ucs_status_t>> ready_peers;
  // Force-close requests of failed endpoints, progressed to completion (and freed) by the
  // loop; close_all waits for those still running before the worker may be destroyed.
  std::vector<void*> closing;
  // Peers whose endpoint is closed: their state is freed once no close request is open and
  // no wire-up completion is queued (UCX callbacks hold handles, never the state). Only
  // `peer_up` and `handles` remember them, so that a send to a departed peer still says
  // peer_down. Without this, a long job's coordinator kept every departed node's state.
  std::vector<PeerId> retired;
  void free_retired_peers();
  // Until when, and when next, exited peers' full FIFOs are swept (UcxOptions::
  // release_dead_peer_fifos); armed by a peer's failure.
  std::chrono::steady_clock::time_point fifo_sweep_until{}, next_fifo_sweep{};
  uint32_t fifo_sweep_polls = 0;
  std::chrono::steady_clock::time_point next_slot_check{};
  std::map<int64_t, UnreadySlot> unready_slots;  // repair_dead_writer_slots's memory
  std::set<int64_t> own_fifo_segments;  // made with our worker: its receive FIFO among them
  void arm_fifo_sweep();
  void check_dead_writer_slots(std::chrono::steady_clock::time_point now);
  void sweep_dead_fifos();
  // Peers whose bootstrap connection closed (token, why): failed after the worker has
  // delivered what they sent before they went, so that a Shutdown precedes the loss.
  std::vector<std::pair<uint64_t, std::string>> lost_peers;
  // Rendezvous receives not started yet, per sending peer in arrival order (a peer with no
  // entry has none waiting). Per peer, so that a pass starts what fits in O(peers): one
  // queue for all was scanned whole on every poll, thousands of entries when a peer streams
  // 64 KiB messages (a tenth of the progress thread's time in bench_actors).
  std::map<PeerId, std::deque<std::unique_ptr<RecvOp>>> rndv_waiting;
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

// Runs fn on the progress thread and waits for its answer (inline when already on it).
template <class T>
T call_on_progress(UcxFabric::Impl& impl, std::function<T()> fn) {
  if (impl.on_progress_thread()) return fn();
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  impl.post([promise, fn = std::move(fn)] { promise->set_value(fn()); });
  return future.get();
}

}  // namespace troupe::runtime
