// The fabric's frame decoder (runtime/wire.cc decode_frame) on any bytes, held to
// libprotobuf: the same verdict and the same fields as envelope.proto's own parser (the
// decoder is hand-written and claims to read exactly what libprotobuf reads). An accepted
// frame re-encodes (encode_frame) to a frame that decodes to the same envelope.
// Input: [u64 little-endian data_bytes][the frame]; shorter inputs use data_bytes 0.
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "runtime/envelope.pb.h"
#include "runtime/wire.h"
#include "tests/fuzz/fuzz_check.h"

namespace troupe::runtime {
namespace {

// decode_frame as it would be written over libprotobuf (as tests/runtime/wire_protobuf_test).
RejectReason oracle_decode(std::span<const std::byte> frame, uint64_t data_bytes, Frame* out) {
  if (frame.size() < frame_prefix_bytes) return RejectReason::truncated_prefix;
  uint64_t n = 0;
  for (size_t i = 0; i < frame_prefix_bytes; ++i)
    n |= uint64_t(std::to_integer<uint8_t>(frame[i])) << (8 * i);
  if (n > envelope_bytes_max) return RejectReason::envelope_too_large;
  if (frame.size() != frame_prefix_bytes + n) return RejectReason::length_mismatch;
  wire::Envelope pb;
  if (!pb.ParseFromArray(frame.data() + frame_prefix_bytes, int(n)))
    return RejectReason::parse_failed;
  if (size_t(pb.payload_bytes_size()) > payloads_max) return RejectReason::too_many_payloads;
  uint64_t total = 0;
  for (uint64_t size : pb.payload_bytes()) {
    if (size > message_bytes_max) return RejectReason::message_too_large;
    total += size;
    if (total > message_bytes_max) return RejectReason::message_too_large;
  }
  if (total != data_bytes) return RejectReason::payload_size_mismatch;
  out->envelope = {pb.epoch(), pb.from(), pb.to(), pb.type(), pb.header()};
  out->payload_bytes.assign(pb.payload_bytes().begin(), pb.payload_bytes().end());
  return RejectReason::none;
}

bool same(const Frame& a, const Frame& b) {
  return a.envelope.epoch == b.envelope.epoch && a.envelope.from == b.envelope.from &&
         a.envelope.to == b.envelope.to && a.envelope.type == b.envelope.type &&
         a.envelope.header == b.envelope.header && a.payload_bytes == b.payload_bytes;
}

// encode_frame takes the payloads themselves; only their sizes are written, so views of
// one zeroed buffer of the largest size stand in for them.
void check_reencodes(const Frame& f) {
  uint64_t largest = 0;
  for (uint64_t s : f.payload_bytes) largest = std::max(largest, s);
  if (largest > (uint64_t{1} << 20)) return;  // keep each run small; sizes are not the point
  const std::vector<std::byte> zeros(largest);
  std::vector<std::span<const std::byte>> payloads;
  uint64_t total = 0;
  for (uint64_t s : f.payload_bytes) payloads.emplace_back(zeros.data(), s), total += s;
  std::string again;
  const Status encoded = encode_frame(f.envelope, payloads, &again);
  FUZZ_CHECK(encoded.ok(), "an accepted frame must encode again");
  Frame back;
  const auto* p = reinterpret_cast<const std::byte*>(again.data());
  FUZZ_CHECK(decode_frame({p, again.size()}, total, &back) == RejectReason::none,
             "a re-encoded frame must decode");
  FUZZ_CHECK(same(f, back), "a re-encoded frame must decode to the same envelope");
}

}  // namespace
}  // namespace troupe::runtime

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace troupe::runtime;
  uint64_t data_bytes = 0;
  if (size >= 8) {
    for (int i = 0; i < 8; ++i) data_bytes |= uint64_t(data[i]) << (8 * i);
    data += 8, size -= 8;
  }
  const std::span<const std::byte> frame(reinterpret_cast<const std::byte*>(data), size);
  Frame ours, theirs;
  const RejectReason a = decode_frame(frame, data_bytes, &ours);
  const RejectReason b = oracle_decode(frame, data_bytes, &theirs);
  FUZZ_CHECK(size_t(a) < reject_reason_count, "a reason in range");
  FUZZ_CHECK(a == b, "decode_frame's verdict is libprotobuf's");
  if (a != RejectReason::none) return 0;
  FUZZ_CHECK(same(ours, theirs), "decode_frame's fields are libprotobuf's");
  check_reencodes(ours);
  return 0;
}
