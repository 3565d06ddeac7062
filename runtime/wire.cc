#include "runtime/wire.h"

#include <fmt/format.h>

#include <cstdint>
#include <cstring>

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

// The Envelope's protobuf encoding, written and read by hand: the bytes are exactly what
// libprotobuf writes for envelope.proto (tests/runtime/wire_protobuf_test.cc checks both ways and
// fuzzes the two decoders against each other), without its per-message bookkeeping. On
// the fabric's small-message path that is most of the CPU time (see bench/fabric/bench_wire).
namespace {

enum WireType : uint32_t {
  varint = 0,
  fixed64 = 1,
  length_delimited = 2,
  group_start = 3,
  group_end = 4,
  fixed32 = 5
};
enum Field : uint32_t {
  f_epoch = 1,
  f_from = 2,
  f_to = 3,
  f_type = 4,
  f_header = 5,
  f_payload_bytes = 6
};

size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, ++n;
  return n;
}
uint8_t* put_varint(uint8_t* at, uint64_t v) {
  while (v >= 0x80) *at++ = uint8_t(v | 0x80), v >>= 7;
  *at++ = uint8_t(v);
  return at;
}
size_t bytes_field_size(const std::string& b) {
  return b.empty() ? 0 : 1 + varint_size(b.size()) + b.size();
}
uint8_t* put_bytes_field(uint8_t* at, Field f, const std::string& b) {
  if (b.empty()) return at;  // proto3: a default value is not written
  *at++ = uint8_t(f << 3 | length_delimited);
  at = put_varint(at, b.size());
  std::memcpy(at, b.data(), b.size());
  return at + b.size();
}

// A bounded reader over the envelope bytes; every read says whether it fit.
struct Reader {
  const uint8_t* at;
  const uint8_t* end;
  // libprotobuf's rules: a value at most 10 bytes long, bits past 64 dropped; tags and
  // lengths at most 5 bytes long, a tag's bits past 32 dropped.
  bool read_varint(uint64_t* v, int bytes_max = 10) {
    uint64_t r = 0;
    for (int i = 0; i < bytes_max; ++i) {
      if (at == end) return false;
      const uint8_t b = *at++;
      r |= uint64_t(b & 0x7f) << (7 * i);
      if (b < 0x80) return *v = r, true;
    }
    return false;
  }
  bool read_tag(uint64_t* tag) {  // field 0 is no field
    if (!read_varint(tag, 5)) return false;
    *tag &= UINT32_MAX;
    return (*tag >> 3) != 0;
  }
  bool read_length(uint64_t* n) {
    return read_varint(n, 5) && *n <= uint64_t(INT32_MAX) && *n <= uint64_t(end - at);
  }
  bool skip(uint64_t n) {
    if (n > uint64_t(end - at)) return false;
    at += n;
    return true;
  }
  // Skips one field's value of `wire` type; groups nest (depth-limited, as libprotobuf).
  bool skip_value(uint32_t wire, uint32_t field, int depth) {
    uint64_t v;
    switch (wire) {
      case varint:
        return read_varint(&v);
      case fixed64:
        return skip(8);
      case fixed32:
        return skip(4);
      case length_delimited:
        return read_length(&v) && skip(v);
      case group_start:
        if (depth >= 100) return false;
        while (true) {
          uint64_t tag;
          if (!read_tag(&tag)) return false;
          if ((tag & 7) == group_end) return (tag >> 3) == field;
          if (!skip_value(uint32_t(tag & 7), uint32_t(tag >> 3), depth + 1)) return false;
        }
      default:
        return false;  // group_end outside a group, or wire types 6 and 7
    }
  }
};

// Parses the serialized Envelope in [at, end) as libprotobuf would (last value wins for
// singular fields, packed or unpacked payload sizes, unknown fields skipped). Keeps at most
// payloads_max + 1 sizes: one more is enough to reject the frame.
bool parse_envelope(Reader r, Frame* out) {
  Envelope& e = out->envelope;
  e.epoch = 0, e.type = 0;
  e.from.clear(), e.to.clear(), e.header.clear();
  out->payload_bytes.clear();
  size_t sizes_seen = 0;
  auto add_size = [&](uint64_t v) {
    if (sizes_seen++ <= payloads_max) out->payload_bytes.push_back(v);
  };
  while (r.at != r.end) {
    uint64_t tag, v;
    if (!r.read_tag(&tag)) return false;
    const uint32_t field = uint32_t(tag >> 3), wire = uint32_t(tag & 7);
    if (wire == varint && (field == f_epoch || field == f_type || field == f_payload_bytes)) {
      if (!r.read_varint(&v)) return false;
      if (field == f_epoch) e.epoch = v;
      if (field == f_type) e.type = uint32_t(v);
      if (field == f_payload_bytes) add_size(v);
    } else if (wire == length_delimited && field >= f_from && field <= f_payload_bytes &&
               field != f_type) {
      if (!r.read_length(&v)) return false;
      const char* bytes = reinterpret_cast<const char*>(r.at);
      if (field == f_from) e.from.assign(bytes, v);
      if (field == f_to) e.to.assign(bytes, v);
      if (field == f_header) e.header.assign(bytes, v);
      if (field == f_payload_bytes) {
        Reader packed{r.at, r.at + v};
        while (packed.at != packed.end) {
          uint64_t size;
          if (!packed.read_varint(&size)) return false;
          add_size(size);
        }
      }
      r.at += v;
    } else if (wire == group_end || !r.skip_value(wire, field, 0)) {
      return false;
    }
  }
  if (sizes_seen > out->payload_bytes.size()) out->payload_bytes.push_back(0);  // > max anyway
  return true;
}

}  // namespace

Status encode_frame(const Envelope& envelope, std::span<const std::span<const std::byte>> payloads,
                    std::string* out) {
  if (payloads.size() > payloads_max) {
    return {Code::too_large,
            fmt::format("payloads: {} > payloads_max {}", payloads.size(), payloads_max)};
  }
  uint64_t total = 0;
  size_t packed = 0;
  for (const auto& p : payloads) total += p.size(), packed += varint_size(p.size());
  if (total > message_bytes_max) {
    return {Code::too_large,
            fmt::format("payload bytes {} > message_bytes_max {}", total, message_bytes_max)};
  }
  const size_t n =
      (envelope.epoch ? 1 + varint_size(envelope.epoch) : 0) + bytes_field_size(envelope.from) +
      bytes_field_size(envelope.to) + (envelope.type ? 1 + varint_size(envelope.type) : 0) +
      bytes_field_size(envelope.header) + (packed ? 1 + varint_size(packed) + packed : 0);
  if (n > envelope_bytes_max) {
    return {Code::too_large,
            fmt::format("envelope bytes {} > envelope_bytes_max {}", n, envelope_bytes_max)};
  }
  out->resize(frame_prefix_bytes + n);
  auto* at = reinterpret_cast<uint8_t*>(out->data());
  for (size_t i = 0; i < frame_prefix_bytes; ++i) *at++ = static_cast<uint8_t>(n >> (8 * i));
  if (envelope.epoch) *at++ = uint8_t(f_epoch << 3 | varint), at = put_varint(at, envelope.epoch);
  at = put_bytes_field(at, f_from, envelope.from);
  at = put_bytes_field(at, f_to, envelope.to);
  if (envelope.type) *at++ = uint8_t(f_type << 3 | varint), at = put_varint(at, envelope.type);
  at = put_bytes_field(at, f_header, envelope.header);
  if (packed) {
    *at++ = uint8_t(f_payload_bytes << 3 | length_delimited);
    at = put_varint(at, packed);
    for (const auto& p : payloads) at = put_varint(at, p.size());
  }
  return {};
}

namespace {

// Checks the declared sizes against the limits and the data that arrived.
RejectReason check_payload_sizes(const std::vector<uint64_t>& sizes, uint64_t data_bytes) {
  if (sizes.size() > payloads_max) return RejectReason::too_many_payloads;
  uint64_t total = 0;
  for (uint64_t size : sizes) {
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
  const auto* at = reinterpret_cast<const uint8_t*>(frame.data()) + frame_prefix_bytes;
  if (!parse_envelope(Reader{at, at + n}, out)) return RejectReason::parse_failed;
  return check_payload_sizes(out->payload_bytes, data_bytes);
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
