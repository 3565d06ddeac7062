// Batches of small sends (ucx_fabric_impl.h, batch_bytes_max): the progress thread packs the
// small messages it starts to one peer in one pass into one active message, and the
// receiver unpacks them in order. Everything here runs on the progress thread.
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
  auto batch = std::make_unique<BatchOp>();
  batch->impl = this;
  batch->ops.swap(peer.batch);
  for (size_t i = 0; i < am_token_bytes; ++i)
    batch->header.push_back(char((peer.send_token >> (8 * i)) & 0xff));
  batch->data.reserve(total);
  std::vector<std::span<const std::byte>> payloads;
  for (const auto& op : batch->ops) {
    payloads.clear();
    if (op->nonempty_payloads == 1)
      payloads.emplace_back(static_cast<const std::byte*>(op->single.buffer), op->single.length);
    else
      for (const ucp_dt_iov_t& v : op->iov)
        payloads.emplace_back(static_cast<const std::byte*>(v.buffer), v.length);
    append_batch_record(&batch->data, std::as_bytes(std::span(op->frame)).subspan(am_token_bytes),
                        payloads);
  }
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                   UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_AM_SEND_FLAG_EAGER;  // the receiver unpacks it in its callback
  p.datatype = ucp_dt_make_contig(1);
  p.cb.send = [](void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    std::unique_ptr<BatchOp> b(static_cast<BatchOp*>(user_data));
    for (auto& op : b->ops) b->impl->finish_send(op.release(), status);
  };
  p.user_data = batch.get();
  ucs_status_ptr_t r =
      ucp_am_send_nbx(peer.ep, fabric_batch_am_id, batch->header.data(), batch->header.size(),
                      batch->data.data(), batch->data.size(), &p);
  if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
    batch.release();  // the request's callback finishes it
    return;
  }
  const ucs_status_t status = r == nullptr ? UCS_OK : UCS_PTR_STATUS(r);
  for (auto& op : batch->ops) finish_send(op.release(), status);
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
