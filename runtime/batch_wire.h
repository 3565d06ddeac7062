// The records of a batch of small messages (UcxFabric, ucx_fabric_impl.h batch_bytes_max):
// each [u32 frame bytes][u32 payload bytes][frame][payloads], little-endian. Pure: the
// fabric packs and unpacks with these, and tests feed them any bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "runtime/wire.h"

namespace troupe::runtime {

inline constexpr size_t batch_record_header_bytes = 8;

// Appends one record: `frame` (an encoded frame, no token) and its payloads' bytes.
void append_batch_record(std::string* out, std::span<const std::byte> frame,
                         std::span<const std::span<const std::byte>> payloads);

// Calls on_record(frame, payload bytes) for each record in order, each frame decoded and
// checked as a message of its own would be. Stops at the first record that does not decode
// or does not fit (the framing after it cannot be trusted) and returns why; none when every
// byte was a good record. Total: any input gives a reason, never a crash.
RejectReason walk_batch(
    std::span<const std::byte> data,
    const std::function<void(Frame&& frame, std::span<const std::byte> payload)>& on_record);

}  // namespace troupe::runtime
