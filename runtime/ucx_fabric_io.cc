// UcxFabric's I/O paths: listen, connect, send, receive and endpoint errors. Everything
// here except UcxFabric::send runs on the progress thread.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "runtime/log.h"
#include "runtime/ucx_fabric_impl.h"

namespace troupe::runtime {

namespace {

// Gives `op` its pooled storage and points the message's payload views into it.
void take_storage(RecvOp& op, BufferPool* pool) {
  Message& m = op.message;
  if (op.storage_bytes > 0) m.storage = pool->get(op.storage_bytes);
  m.payloads.reserve(op.payload_sizes.size());
  for (size_t i = 0; i < op.payload_sizes.size(); ++i) {
    m.payloads.emplace_back(m.storage.data() + op.payload_offsets[i], op.payload_sizes[i]);
  }
}

}  // namespace

// ---- endpoints ----

// Flushes a new endpoint: when the flush completes, its wire-up is done and the sends that
// waited for it may go (UCX 1.13 crashes replaying an iov send queued during wire-up).
void UcxFabric::Impl::flush_new_endpoint(PeerState* peer) {
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    const auto* h = static_cast<const PeerHandle*>(user_data);
    h->impl->ready_peers.emplace_back(h->id, status);  // started outside the callback
  };
  p.user_data = const_cast<PeerHandle*>(peer->handle);
  ucs_status_ptr_t r = ucp_ep_flush_nbx(peer->ep, &p);
  if (r == nullptr) {
    on_endpoint_ready(peer, UCS_OK);
  } else if (UCS_PTR_IS_ERR(r)) {
    on_endpoint_ready(peer, UCS_PTR_STATUS(r));
  }
}

void UcxFabric::Impl::start_ready_peers() {
  std::vector<std::pair<PeerId, ucs_status_t>> batch;
  batch.swap(ready_peers);
  for (auto [id, status] : batch)
    if (auto it = peers.find(id); it != peers.end()) on_endpoint_ready(it->second.get(), status);
  flush_batches();
}

// The endpoint's wire-up is done (or it failed): release the sends that waited for it.
void UcxFabric::Impl::on_endpoint_ready(PeerState* peer, ucs_status_t status) {
  if (peer->ep != nullptr) peer->ready = true;
  while (!peer->waiting.empty()) {
    std::unique_ptr<SendOp> op = std::move(peer->waiting.front());
    peer->waiting.pop_front();
    if (status == UCS_OK && peer->up && peer->ep != nullptr) {
      start_send(*peer, std::move(op));
    } else {
      finish_send(op.release(), status == UCS_OK ? UCS_ERR_CONNECTION_RESET : status);
    }
  }
}

// ---- send ----

Status UcxFabric::send(PeerId peer, const Envelope& envelope,
                       std::span<const std::span<const std::byte>> payloads, SendDoneFn done) {
  Impl& im = *impl_;
  if (im.stop.load()) return {Code::closed, "send: fabric is shutting down"};
  Status st = im.check_peer_up(peer);
  if (!st.ok()) return st;
  const std::string* encoded = nullptr;  // the frame, where the batch's test encoded it
  if (im.options.batch_small_messages && !im.on_progress_thread()) {
    uint64_t bytes = 0;
    for (const auto& p : payloads) bytes += p.size();
    if (bytes <= batch_message_bytes_max) {  // else too large for a batch whatever its frame
      thread_local std::string frame;        // its capacity is kept from send to send
      st = encode_frame(envelope, payloads, &frame);
      if (!st.ok()) return st;
      if (batch_record_header_bytes + frame.size() + bytes <= batch_message_bytes_max)
        return im.stage_send(peer, std::as_bytes(std::span(frame)), payloads, bytes,
                             std::move(done));
      encoded = &frame;  // its frame pushed it over: it goes alone, with this frame
    }
  }
  auto op = std::make_unique<SendOp>();
  if (encoded != nullptr) {
    op->frame.reserve(am_token_bytes + encoded->size());
    op->frame.assign(am_token_bytes, '\0');
    op->frame += *encoded;
  } else {
    st = encode_frame(envelope, payloads, &op->frame);
    if (!st.ok()) return st;
    op->frame.insert(0, am_token_bytes, '\0');
  }  // the peer's token is filled in at start_send
  op->impl = &im;
  op->peer = peer;
  op->done = std::move(done);
  size_t nonempty = 0;
  for (const auto& p : payloads) {
    op->payload_bytes += p.size();
    if (p.empty()) continue;
    op->single = {const_cast<std::byte*>(p.data()), p.size()};
    ++nonempty;
  }
  if (nonempty > 1) {  // the common single payload needs no vector
    op->iov.reserve(nonempty);
    for (const auto& p : payloads) {
      if (!p.empty()) op->iov.push_back({const_cast<std::byte*>(p.data()), p.size()});
    }
  }
  op->nonempty_payloads = nonempty;
  if (im.on_progress_thread()) return im.send_here(std::move(op));
  if (st = im.wait_for_window(); !st.ok()) return st;
  SendOp* raw = op.release();
  {
    std::lock_guard<std::mutex> lock(im.command_mutex);
    im.commands.push_back({raw, {}});
    im.commands_pending.store(true);
  }
  if (im.sleeping.load()) ucp_worker_signal(im.worker);
  return {};
}

// A send made on the progress thread: from a receive handler, or from an actor that the
// thread runs (FabricGuest). It cannot wait for room (only this thread makes room), so it
// may go past the window (inflight_overcommit_max). It goes behind the commands already
// queued: an actor that ran on another thread before it ran here queued its earlier sends
// there, and a link keeps its order. Otherwise it starts once ucp_worker_progress returns.
Status UcxFabric::Impl::send_here(std::unique_ptr<SendOp> op) {
  size_t n = inflight.load();
  do {
    if (n >= inflight_messages_max + inflight_overcommit_max)
      return {Code::busy, "send: in-flight window full, on the fabric's thread"};
  } while (!inflight.compare_exchange_weak(n, n + 1));
  if (!commands_pending.load()) {
    local_sends.push_back(std::move(op));
    return {};
  }
  SendOp* raw = op.release();
  std::lock_guard<std::mutex> lock(command_mutex);
  commands.push_back({raw, {}});
  return {};
}

Status UcxFabric::Impl::wait_for_window() {
  if (take_window()) return {};
  std::unique_lock<std::mutex> lock(window_mutex);
  window_waiters.fetch_add(1);
  const bool room = window_cv.wait_for(lock, std::chrono::milliseconds(send_wait_ms_max),
                                       [&] { return take_window(); });
  window_waiters.fetch_sub(1);
  if (!room) return {Code::busy, "send: in-flight window full for send_wait_ms_max"};
  return {};
}

// Takes one slot of the in-flight window if there is room. Lock-free: the mutex is only
// for senders that wait (release_inflight wakes them).
bool UcxFabric::Impl::take_window() {
  size_t n = inflight.load();
  while (n < inflight_messages_max) {
    if (inflight.compare_exchange_weak(n, n + 1)) return true;
  }
  return false;
}

Status UcxFabric::Impl::check_peer_up(PeerId peer) {
  bool known = false;
  bool up = false;
  if (auto it = peers.end(); on_progress_thread() && (it = peers.find(peer)) != peers.end()) {
    known = true;  // the progress thread owns `peers`: no lock needed
    up = it->second->up;
  } else {  // elsewhere, or a departed peer whose state is freed (retired)
    std::lock_guard<std::mutex> lock(peer_mutex);
    auto found = peer_up.find(peer);
    known = found != peer_up.end();
    up = known && found->second;
  }
  if (!known) return {Code::unknown_peer, fmt::format("send: peer {}", peer)};
  if (!up) return {Code::peer_down, fmt::format("send: peer {} is down", peer)};
  return {};
}

void UcxFabric::Impl::post_send(std::unique_ptr<SendOp> op) {
  auto it = peers.find(op->peer);
  if (it == peers.end() || !it->second->up) {
    finish_send(op.release(), UCS_ERR_CONNECTION_RESET);
    return;
  }
  if (!it->second->ready) {  // the handshake or the endpoint's wire-up still runs
    it->second->waiting.push_back(std::move(op));
    return;
  }
  start_send(*it->second, std::move(op));
}

void UcxFabric::Impl::start_send(PeerState& peer, std::unique_ptr<SendOp> op) {
  if (op->staged > 0) {
    flush_batch(peer);  // what this thread batched went into the queue before it
    return send_staged(peer, std::move(op));
  }
  if (batchable(*op)) return add_to_batch(peer, std::move(op));
  flush_batch(peer);  // a peer's messages go in the order they were sent
  send_now(peer, std::move(op));
}

// The parameters of a send whose completion finishes `op` (finish_send).
ucp_request_param_t UcxFabric::Impl::send_params(SendOp* op) {
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  p.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    auto* sop = static_cast<SendOp*>(user_data);
    sop->impl->finish_send(sop, status);
  };
  p.user_data = op;
  return p;
}

// What ucp_am_send_nbx returned: done at once (finished here), or a request whose callback
// finishes it.
void UcxFabric::Impl::finish_or_wait(std::unique_ptr<SendOp> op, ucs_status_ptr_t r) {
  if (r == nullptr) {
    finish_send(op.release(), UCS_OK);
  } else if (UCS_PTR_IS_ERR(r)) {
    finish_send(op.release(), UCS_PTR_STATUS(r));
  } else {
    op.release();  // the request's callback finishes it
  }
}

void UcxFabric::Impl::send_now(PeerState& peer, std::unique_ptr<SendOp> op) {
  ucp_request_param_t p = send_params(op.get());
  put_token(op->frame.data(), peer.send_token);
  const void* buffer = nullptr;
  size_t count = 0;
  if (op->nonempty_payloads == 1) {
    p.datatype = ucp_dt_make_contig(1);
    buffer = op->single.buffer;
    count = op->single.length;
  } else if (op->nonempty_payloads == 0) {
    p.datatype = ucp_dt_make_contig(1);
  } else {
    p.datatype = ucp_dt_make_iov();
    buffer = op->iov.data();
    count = op->iov.size();
  }
  ucs_status_ptr_t r =
      ucp_am_send_nbx(peer.ep, fabric_am_id, op->frame.data(), op->frame.size(), buffer, count, &p);
  finish_or_wait(std::move(op), r);
}

void UcxFabric::Impl::finish_send(SendOp* op, ucs_status_t status) {
  std::unique_ptr<SendOp> owned(op);
  const uint64_t messages = std::max<uint64_t>(op->staged, 1);
  if (status == UCS_OK) {
    counters.sent_messages.fetch_add(messages, std::memory_order_relaxed);
    counters.sent_bytes.fetch_add(op->payload_bytes, std::memory_order_relaxed);
  } else {
    counters.send_failed.fetch_add(messages, std::memory_order_relaxed);
  }
  if (op->done || !op->dones.empty()) {
    const Status result = status == UCS_OK
                              ? Status()
                              : Status(Code::peer_down, fmt::format("send to peer {}: {}", op->peer,
                                                                    ucs_status_string(status)));
    if (op->done) op->done(result);
    for (const SendDoneFn& done : op->dones) done(result);
  }
  owned.reset();
  release_inflight(messages);  // a slot per message
}

// ---- receive ----

void UcxFabric::Impl::reject(PeerId peer, RejectReason reason) {
  if (reject_is_oversized(reason)) {
    counters.rejected_oversized.fetch_add(1, std::memory_order_relaxed);
  } else {
    counters.rejected_malformed.fetch_add(1, std::memory_order_relaxed);
  }
  const auto i = static_cast<size_t>(reason);
  ++reject_counts[i];
  const auto now = std::chrono::steady_clock::now();
  if (reject_counts[i] > 1 &&
      now - last_reject_log[i] < std::chrono::milliseconds(reject_log_interval_ms)) {
    return;
  }
  last_reject_log[i] = now;
  log::warn("fabric: rejecting message from peer {}: {} ({} so far)", peer,
            reject_reason_name(reason), reject_counts[i]);
}

// The peer whose token heads an active message's header, or peer_none.
PeerId UcxFabric::Impl::peer_of_header(const void* header, size_t header_length) const {
  if (header_length < am_token_bytes) return peer_none;
  const auto it = peer_by_token.find(get_token(header));
  return it == peer_by_token.end() ? peer_none : it->second;
}

ucs_status_t UcxFabric::Impl::on_am(const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
  const PeerId peer = peer_of_header(header, header_length);
  const auto* head = static_cast<const unsigned char*>(header);
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  Frame frame;
  RejectReason reason = RejectReason::no_sender_endpoint;
  if (peer != peer_none) {
    reason = decode_frame(
        {reinterpret_cast<const std::byte*>(head) + am_token_bytes, header_length - am_token_bytes},
        length, &frame);
  }
  if (reason != RejectReason::none) {
    reject(peer, reason);
    return UCS_OK;  // eager data is dropped; a rendezvous is declined
  }
  if (!rndv) {
    accept_eager(peer, std::move(frame), static_cast<const std::byte*>(data), length);
    return UCS_OK;
  }
  if (frame.envelope.type >= control_types_end &&
      frame.envelope.epoch < epoch.load(std::memory_order_relaxed)) {
    counters.dropped_stale_epoch.fetch_add(1);  // as accept_eager says
    return UCS_OK;
  }
  auto op = std::make_unique<RecvOp>();
  op->impl = this;
  op->data_desc = data;
  op->message.peer = peer;
  op->message.envelope = std::move(frame.envelope);
  op->payload_sizes = std::move(frame.payload_bytes);
  op->storage_bytes = layout_payloads(op->payload_sizes, &op->payload_offsets);
  op->payload_bytes = length;
  rndv_waiting[peer].push_back(std::move(op));
  start_waiting_rndv();
  return UCS_INPROGRESS;
}

// An eager message that decoded: dropped when it is of an old epoch, else delivered.
void UcxFabric::Impl::accept_eager(PeerId peer, Frame&& frame, const std::byte* data,
                                   size_t length) {
  if (frame.envelope.type >= control_types_end &&
      frame.envelope.epoch < epoch.load(std::memory_order_relaxed)) {
    // Counted, not logged: after a view change the messages of the aborted step that were
    // still on their way arrive here, and dropping them is the point of the epoch.
    counters.dropped_stale_epoch.fetch_add(1);
    return;
  }
  deliver_eager(peer, std::move(frame), data, length);
}

// Copies an eager message's payloads out of UCX's buffer (valid only during the
// callback) into pooled storage and delivers it.
void UcxFabric::Impl::deliver_eager(PeerId peer, Frame&& frame, const std::byte* data,
                                    size_t length) {
  const uint64_t storage_bytes = layout_payloads(frame.payload_bytes, &eager_offsets);
  Message m;
  m.peer = peer;
  m.envelope = std::move(frame.envelope);
  if (storage_bytes > 0) m.storage = pool.get(storage_bytes);
  m.payloads.reserve(frame.payload_bytes.size());
  for (size_t i = 0; i < frame.payload_bytes.size(); ++i) {
    std::byte* dst = m.storage.data() + eager_offsets[i];
    m.payloads.emplace_back(dst, frame.payload_bytes[i]);
    if (frame.payload_bytes[i] == 0) continue;
    std::memcpy(dst, data, frame.payload_bytes[i]);
    data += frame.payload_bytes[i];
  }
  deliver(std::move(m), length);
}

// Fetches waiting rendezvous messages, each peer's oldest first, while that peer's
// rndv_inflight_bytes_max allows (always at least one). Runs from the AM handler and from
// the progress loop.
// Each op is taken out before it starts, and the queues are looked up afresh after: a receive
// that completes at once is delivered from inside start_rndv, and its handler may change them
// (a disconnect declines that peer's waiting receives).
void UcxFabric::Impl::start_waiting_rndv() {
  const auto fits = [this](const auto& entry) {
    const auto f = rndv_inflight_bytes.find(entry.first);  // no entry: nothing in flight
    const uint64_t inflight = f == rndv_inflight_bytes.end() ? 0 : f->second;
    return inflight == 0 ||
           inflight + entry.second.front()->payload_bytes <= rndv_inflight_bytes_max;
  };
  for (auto q = std::find_if(rndv_waiting.begin(), rndv_waiting.end(), fits);
       q != rndv_waiting.end(); q = std::find_if(rndv_waiting.begin(), rndv_waiting.end(), fits)) {
    std::unique_ptr<RecvOp> op = std::move(q->second.front());  // a peer's oldest first
    q->second.pop_front();
    if (q->second.empty()) rndv_waiting.erase(q);
    start_rndv(std::move(op));
  }
}

void UcxFabric::Impl::start_rndv(std::unique_ptr<RecvOp> op) {
  take_storage(*op, &pool);
  for (size_t i = 0; i < op->payload_sizes.size(); ++i) {
    if (op->payload_sizes[i] == 0) continue;
    op->iov.push_back({op->message.storage.data() + op->payload_offsets[i], op->payload_sizes[i]});
  }
  rndv_inflight_bytes[op->message.peer] += op->payload_bytes;
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE;
  p.cb.recv_am = [](void* request, ucs_status_t status, size_t, void* user_data) {
    ucp_request_free(request);
    std::unique_ptr<RecvOp> rop(static_cast<RecvOp*>(user_data));
    rop->impl->finish_rndv(std::move(rop), status);
  };
  p.user_data = op.get();
  void* buffer = op->iov.data();
  size_t count = op->iov.size();
  if (op->iov.size() == 1) {
    p.datatype = ucp_dt_make_contig(1);
    buffer = op->iov[0].buffer;
    count = op->iov[0].length;
  } else {
    p.datatype = ucp_dt_make_iov();
  }
  ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker, op->data_desc, buffer, count, &p);
  if (r == nullptr) {
    finish_rndv(std::move(op), UCS_OK);
  } else if (UCS_PTR_IS_ERR(r)) {
    finish_rndv(std::move(op), UCS_PTR_STATUS(r));
  } else {
    op.release();  // the request's callback finishes it
  }
}

void UcxFabric::Impl::finish_rndv(std::unique_ptr<RecvOp> op, ucs_status_t status) {
  if ((rndv_inflight_bytes[op->message.peer] -= op->payload_bytes) == 0)
    rndv_inflight_bytes.erase(op->message.peer);
  if (status != UCS_OK) {  // usually the sender died mid-transfer
    ++failed_rndv;
    log::warn("fabric: rendezvous receive from peer {} failed: {}", op->message.peer,
              ucs_status_string(status));
    return;
  }
  deliver(std::move(op->message), op->payload_bytes);
}

void UcxFabric::Impl::deliver(Message&& message, uint64_t payload_bytes) {
  if (auto it = peers.find(message.peer); it != peers.end() && !it->second->announced) {
    PeerState& peer = *it->second;
    if (peer.early.size() >= early_messages_max) {
      counters.dropped_queue_full.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    peer.early.push_back(std::move(message));
    return;
  }
  if (handlers.on_receive) {
    counters.received_messages.fetch_add(1, std::memory_order_relaxed);
    counters.received_bytes.fetch_add(payload_bytes, std::memory_order_relaxed);
    handlers.on_receive(std::move(message));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(queue_mutex);
    if (queue.size() >= recv_queue_messages_max) {
      const uint64_t n = counters.dropped_queue_full.fetch_add(1) + 1;
      if (n == 1 || n % 1000 == 0) {
        log::warn("fabric: dropping message from peer {}: receive queue full ({} so far)",
                  message.peer, n);
      }
      return;
    }
    counters.received_messages.fetch_add(1, std::memory_order_relaxed);
    counters.received_bytes.fetch_add(payload_bytes, std::memory_order_relaxed);
    queue.push_back(std::move(message));
  }
  queue_cv.notify_one();
}

}  // namespace troupe::runtime
