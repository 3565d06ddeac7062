// Batches of small sends (ucx_fabric_impl.h, batch_bytes_max): the progress thread packs the
// small messages it starts to one peer in one pass into one active message, and the
// receiver unpacks them in order. Everything here runs on the progress thread.
#include <algorithm>
#include <utility>

#include "runtime/ucx_fabric_impl.h"

namespace troupe::runtime {

namespace {

// The bytes a send takes in a batch: its record header, its frame, its payloads.
size_t record_bytes(const SendOp& op) {
  return batch_record_header_bytes + (op.frame.size() - am_token_bytes) + op.payload_bytes;
}

}  // namespace

bool UcxFabric::Impl::batchable(const SendOp& op) const {
  return options.batch_small_messages && record_bytes(op) <= batch_message_bytes_max;
}

void UcxFabric::Impl::add_to_batch(PeerState& peer, std::unique_ptr<SendOp> op) {
  const size_t bytes = record_bytes(*op);
  if (peer.batch_bytes + bytes > batch_bytes_max) flush_batch(peer);
  if (peer.batch.empty()) batched.push_back(peer.id);
  peer.batch_bytes += bytes;
  peer.batch.push_back(std::move(op));
}

void UcxFabric::Impl::flush_batches() {
  std::vector<PeerId> ids;
  ids.swap(batched);
  for (PeerId id : ids)
    if (auto it = peers.find(id); it != peers.end()) flush_batch(*it->second);
}

void UcxFabric::Impl::flush_batch(PeerState& peer) {
  if (peer.batch.empty()) return;
  const size_t total = std::exchange(peer.batch_bytes, 0);
  if (!peer.up || peer.ep == nullptr) {
    for (auto& op : peer.batch) finish_send(op.release(), UCS_ERR_CONNECTION_RESET);
    peer.batch.clear();
    return;
  }
  if (peer.batch.size() == 1) {  // alone: as it would have gone without batching
    std::unique_ptr<SendOp> op = std::move(peer.batch.front());
    peer.batch.clear();
    return send_now(peer, std::move(op));
  }
  auto batch = std::make_unique<SendOp>();
  batch->impl = this;
  batch->peer = peer.id;
  batch->frame.assign(am_token_bytes, '\0');
  batch->records.reserve(total);
  std::vector<std::span<const std::byte>> payloads;
  for (const auto& op : peer.batch) {
    payloads.clear();
    if (op->nonempty_payloads == 1)
      payloads.emplace_back(static_cast<const std::byte*>(op->single.buffer), op->single.length);
    else
      for (const ucp_dt_iov_t& v : op->iov)
        payloads.emplace_back(static_cast<const std::byte*>(v.buffer), v.length);
    append_batch_record(&batch->records,
                        std::as_bytes(std::span(op->frame)).subspan(am_token_bytes), payloads);
    batch->payload_bytes += op->payload_bytes;
    ++batch->staged;
    if (op->done) batch->dones.push_back(std::move(op->done));
  }
  peer.batch.clear();  // each message keeps its slot of the window until the batch completes
  send_staged(peer, std::move(batch));
}

void UcxFabric::Impl::send_staged(PeerState& peer, std::unique_ptr<SendOp> op) {
  if (!peer.up || peer.ep == nullptr) return finish_send(op.release(), UCS_ERR_CONNECTION_RESET);
  put_token(op->frame.data(), peer.send_token);
  ucp_request_param_t p = send_params(op.get());
  p.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_AM_SEND_FLAG_EAGER;  // the receiver unpacks it in its callback
  p.datatype = ucp_dt_make_contig(1);
  ucs_status_ptr_t r =
      ucp_am_send_nbx(peer.ep, fabric_batch_am_id, op->frame.data(), op->frame.size(),
                      op->records.data(), op->records.size(), &p);
  finish_or_wait(std::move(op), r);
}

Status UcxFabric::Impl::stage_send(PeerId peer, std::span<const std::byte> frame,
                                   std::span<const std::span<const std::byte>> payloads,
                                   uint64_t payload_bytes, SendDoneFn done) {
  const size_t bytes = batch_record_header_bytes + frame.size() + payload_bytes;
  const auto append = [&](SendOp& op) {
    append_batch_record(&op.records, frame, payloads);
    op.payload_bytes += payload_bytes;
    ++op.staged;
    if (done) op.dones.push_back(std::move(done));
  };
  if (Status st = wait_for_window(); !st.ok()) return st;  // a slot per message, as unbatched
  {
    std::lock_guard<std::mutex> lock(command_mutex);
    SendOp* last = commands.empty() ? nullptr : commands.back().send;
    if (last != nullptr && last->staged > 0 && last->peer == peer &&
        last->records.size() + bytes <= batch_bytes_max) {
      append(*last);  // still queued: the progress thread has not taken it
      return {};
    }
  }
  auto op = std::make_unique<SendOp>();
  op->impl = this;
  op->peer = peer;
  op->frame.assign(am_token_bytes, '\0');  // the peer's token, filled in at send_staged
  op->records.reserve(std::min(batch_bytes_max, 4 * bytes));
  append(*op);
  SendOp* raw = op.release();
  {
    std::lock_guard<std::mutex> lock(command_mutex);
    commands.push_back({raw, {}});
    commands_pending.store(true);
  }
  if (sleeping.load()) ucp_worker_signal(worker);
  return {};
}

// Unpacks a batch: each record is checked and delivered as a message of its own would be;
// the first that does not decode ends the batch (walk_batch).
ucs_status_t UcxFabric::Impl::on_batch_am(const void* header, size_t header_length, void* data,
                                          size_t length, const ucp_am_recv_param_t* param) {
  const PeerId peer = peer_of_header(header, header_length);
  if (peer == peer_none) {
    reject(peer, RejectReason::no_sender_endpoint);
    return UCS_OK;  // dropped (a rendezvous is declined)
  }
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {  // batches are sent eager
    reject(peer, RejectReason::payload_size_mismatch);
    return UCS_OK;
  }
  const RejectReason reason =
      walk_batch({static_cast<const std::byte*>(data), length},
                 [&](Frame&& frame, std::span<const std::byte> payload) {
                   accept_eager(peer, std::move(frame), payload.data(), payload.size());
                 });
  if (reason != RejectReason::none) reject(peer, reason);
  return UCS_OK;
}

}  // namespace troupe::runtime
