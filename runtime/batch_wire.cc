#include "runtime/batch_wire.h"

namespace troupe::runtime {

namespace {

void put_u32(std::string* out, uint64_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(char((v >> (8 * i)) & 0xff));
}

uint64_t get_u32(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

}  // namespace

void append_batch_record(std::string* out, std::span<const std::byte> frame,
                         std::span<const std::span<const std::byte>> payloads) {
  uint64_t payload_bytes = 0;
  for (const auto& p : payloads) payload_bytes += p.size();
  put_u32(out, frame.size());
  put_u32(out, payload_bytes);
  out->append(reinterpret_cast<const char*>(frame.data()), frame.size());
  for (const auto& p : payloads) out->append(reinterpret_cast<const char*>(p.data()), p.size());
}

RejectReason walk_batch(
    std::span<const std::byte> data,
    const std::function<void(Frame&& frame, std::span<const std::byte> payload)>& on_record) {
  while (!data.empty()) {
    if (data.size() < batch_record_header_bytes) return RejectReason::payload_size_mismatch;
    const uint64_t frame_bytes = get_u32(data.data()), payload_bytes = get_u32(data.data() + 4);
    data = data.subspan(batch_record_header_bytes);
    if (frame_bytes > data.size() || payload_bytes > data.size() - frame_bytes)
      return RejectReason::payload_size_mismatch;
    Frame frame;
    const RejectReason reason = decode_frame(data.first(frame_bytes), payload_bytes, &frame);
    if (reason != RejectReason::none) return reason;
    on_record(std::move(frame), data.subspan(frame_bytes, payload_bytes));
    data = data.subspan(frame_bytes + payload_bytes);
  }
  return RejectReason::none;
}

}  // namespace troupe::runtime
