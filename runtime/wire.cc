#include "runtime/wire.h"

#include <fmt/format.h>

#include <cstring>

#include "runtime/envelope.pb.h"

namespace troupe::runtime {

const char* reject_reason_name(RejectReason reason) {
  switch (reason) {
    case RejectReason::none:
      return "none";
    case RejectReason::truncated_prefix:
      return "truncated length prefix";
    case RejectReason::length_mismatch:
      return "length prefix disagrees with header bytes";
    case RejectReason::envelope_too_large:
      return "envelope larger than envelope_bytes_max";
    case RejectReason::parse_failed:
      return "envelope does not parse";
    case RejectReason::too_many_payloads:
      return "more payloads than payloads_max";
    case RejectReason::message_too_large:
      return "payloads larger than message_bytes_max";
    case RejectReason::payload_size_mismatch:
      return "declared payload sizes disagree with data";
    case RejectReason::no_sender_endpoint:
      return "no sender endpoint";
    case RejectReason::count_:
      break;
  }
  return "unknown";
}

bool reject_is_oversized(RejectReason reason) {
  return reason == RejectReason::envelope_too_large || reason == RejectReason::too_many_payloads ||
         reason == RejectReason::message_too_large;
}

Status encode_frame(const Envelope& envelope, std::span<const std::span<const std::byte>> payloads,
                    std::string* out) {
  if (payloads.size() > payloads_max) {
    return {Code::too_large,
            fmt::format("payloads: {} > payloads_max {}", payloads.size(), payloads_max)};
  }
  // One message object per thread, cleared and refilled: its string and repeated-field
  // capacity is reused, so a small envelope encodes without touching the allocator.
  thread_local wire::Envelope pb;
  pb.Clear();
  pb.set_epoch(envelope.epoch);
  pb.set_from(envelope.from);
  pb.set_to(envelope.to);
  pb.set_type(envelope.type);
  pb.set_header(envelope.header);
  uint64_t total = 0;
  for (const auto& p : payloads) {
    total += p.size();
    pb.add_payload_bytes(p.size());
  }
  if (total > message_bytes_max) {
    return {Code::too_large,
            fmt::format("payload bytes {} > message_bytes_max {}", total, message_bytes_max)};
  }
  const size_t n = pb.ByteSizeLong();
  if (n > envelope_bytes_max) {
    return {Code::too_large,
            fmt::format("envelope bytes {} > envelope_bytes_max {}", n, envelope_bytes_max)};
  }
  out->resize(frame_prefix_bytes + n);
  auto* bytes = reinterpret_cast<uint8_t*>(out->data());
  for (size_t i = 0; i < frame_prefix_bytes; ++i) bytes[i] = static_cast<uint8_t>(n >> (8 * i));
  if (!pb.SerializeToArray(bytes + frame_prefix_bytes, static_cast<int>(n))) {
    return {Code::invalid_argument, "envelope failed to serialize"};
  }
  return {};
}

namespace {

// Checks the declared sizes against the limits and the data that arrived.
RejectReason check_payload_sizes(const wire::Envelope& pb, uint64_t data_bytes) {
  if (static_cast<size_t>(pb.payload_bytes_size()) > payloads_max) {
    return RejectReason::too_many_payloads;
  }
  uint64_t total = 0;
  for (uint64_t size : pb.payload_bytes()) {
    if (size > message_bytes_max) return RejectReason::message_too_large;
    total += size;  // cannot overflow: at most payloads_max terms, each under 2^30
    if (total > message_bytes_max) return RejectReason::message_too_large;
  }
  return total == data_bytes ? RejectReason::none : RejectReason::payload_size_mismatch;
}

}  // namespace

RejectReason decode_frame(std::span<const std::byte> frame, uint64_t data_bytes, Frame* out) {
  if (frame.size() < frame_prefix_bytes) return RejectReason::truncated_prefix;
  uint64_t n = 0;
  for (size_t i = 0; i < frame_prefix_bytes; ++i) {
    n |= static_cast<uint64_t>(std::to_integer<uint8_t>(frame[i])) << (8 * i);
  }
  if (n > envelope_bytes_max) return RejectReason::envelope_too_large;
  if (frame.size() != frame_prefix_bytes + n) return RejectReason::length_mismatch;
  thread_local wire::Envelope pb;  // reused per thread, as in encode_frame
  pb.Clear();
  if (!pb.ParseFromArray(frame.data() + frame_prefix_bytes, static_cast<int>(n))) {
    return RejectReason::parse_failed;
  }
  const RejectReason sizes = check_payload_sizes(pb, data_bytes);
  if (sizes != RejectReason::none) return sizes;
  out->envelope.epoch = pb.epoch();
  out->envelope.from = pb.from();  // copies: moving out would drop the reused capacity
  out->envelope.to = pb.to();
  out->envelope.type = pb.type();
  out->envelope.header = pb.header();
  out->payload_bytes.assign(pb.payload_bytes().begin(), pb.payload_bytes().end());
  return RejectReason::none;
}

uint64_t layout_payloads(std::span<const uint64_t> payload_bytes, std::vector<uint64_t>* offsets) {
  offsets->clear();
  uint64_t at = 0;
  for (uint64_t size : payload_bytes) {
    offsets->push_back(at);
    at += (size + buffer_alignment_bytes - 1) / buffer_alignment_bytes * buffer_alignment_bytes;
  }
  return at;
}

}  // namespace troupe::runtime
