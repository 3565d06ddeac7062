// Framing of the fabric's wire envelope, kept pure so that tests (and a fuzz loop) call
// it without a network. A frame is [u32 little-endian N][N bytes: serialized
// troupe.wire.Envelope]; the payloads travel as the message's data, back to back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/fabric.h"
#include "runtime/status.h"

namespace troupe::runtime {

enum class RejectReason : uint8_t {
  none,
  truncated_prefix,       // fewer bytes than the length prefix
  length_mismatch,        // the prefix disagrees with the bytes that arrived
  envelope_too_large,     // the prefix declares more than envelope_bytes_max
  parse_failed,           // the bytes are not a serialized Envelope
  too_many_payloads,      // more than payloads_max declared sizes
  message_too_large,      // declared payloads sum beyond message_bytes_max
  payload_size_mismatch,  // declared sizes disagree with the data that arrived
  no_sender_endpoint,     // the transport gave no endpoint to attribute it to
  count_,
};
inline constexpr size_t reject_reason_count = static_cast<size_t>(RejectReason::count_);

const char* reject_reason_name(RejectReason reason);
// Oversized rejections are counted apart from malformed ones: they point at a peer
// configured with other limits rather than at corruption.
bool reject_is_oversized(RejectReason reason);

struct Frame {
  Envelope envelope;
  std::vector<uint64_t> payload_bytes;
};

// Writes the frame for `envelope` and the payloads' sizes into `out` (replacing it).
// Errors (nothing written): too_large naming the limit, when the envelope exceeds
// envelope_bytes_max, the payloads exceed payloads_max or message_bytes_max.
Status encode_frame(const Envelope& envelope, std::span<const std::span<const std::byte>> payloads,
                    std::string* out);

// Decodes a frame that arrived with `data_bytes` bytes of payload data. Total: any input
// gives a reason, never a crash or an allocation beyond envelope_bytes_max. On
// RejectReason::none, `out` holds the envelope and its declared payload sizes.
RejectReason decode_frame(std::span<const std::byte> frame, uint64_t data_bytes, Frame* out);

// Where each payload goes in one receive buffer: offsets aligned to
// buffer_alignment_bytes. Returns the buffer size. Sizes must already be validated.
uint64_t layout_payloads(std::span<const uint64_t> payload_bytes, std::vector<uint64_t>* offsets);

}  // namespace troupe::runtime
