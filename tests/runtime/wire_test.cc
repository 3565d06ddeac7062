// The envelope decoder is total: every input gives a frame or a reason, never a crash.
#include "runtime/wire.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace troupe::runtime {
namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// splitmix64: a counter-based stream for the fuzz loop, never a stateful generator.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Envelope sample_envelope() {
  Envelope e;
  e.epoch = 7;
  e.from = "n1/worker.0";
  e.to = "n2/expert.3";
  e.type = 42;
  e.header = std::string("\x00\x01typed", 7);
  return e;
}

std::string prefix(uint32_t n) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// One payload_bytes entry (field 6, varint) of a hand-made Envelope.
std::string size_field(uint64_t v) {
  std::string s = "\x30";
  do {
    s += static_cast<char>((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    v >>= 7;
  } while (v != 0);
  return s;
}

TEST(Wire, RoundTrip) {
  std::vector<std::byte> a(1000), b(0), c(77);
  const std::span<const std::byte> payloads[] = {a, b, c};
  std::string frame;
  ASSERT_TRUE(encode_frame(sample_envelope(), payloads, &frame).ok());
  Frame out;
  ASSERT_EQ(decode_frame(as_bytes(frame), 1077, &out), RejectReason::none);
  EXPECT_EQ(out.envelope.epoch, 7u);
  EXPECT_EQ(out.envelope.from, "n1/worker.0");
  EXPECT_EQ(out.envelope.to, "n2/expert.3");
  EXPECT_EQ(out.envelope.type, 42u);
  EXPECT_EQ(out.envelope.header, sample_envelope().header);
  EXPECT_EQ(out.payload_bytes, (std::vector<uint64_t>{1000, 0, 77}));
  std::vector<uint64_t> offsets;
  EXPECT_EQ(layout_payloads(out.payload_bytes, &offsets), 1024u + 0 + 128);
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, 1024, 1024}));
}

TEST(Wire, EncodeRefusesWhatTheDecoderWouldReject) {
  std::string frame;
  Envelope big = sample_envelope();
  big.header.assign(envelope_bytes_max, 'x');
  EXPECT_EQ(encode_frame(big, {}, &frame).code(), Code::too_large);
  std::vector<std::span<const std::byte>> many(payloads_max + 1);
  EXPECT_EQ(encode_frame(sample_envelope(), many, &frame).code(), Code::too_large);
}

TEST(Wire, EachReason) {
  Frame out;
  std::string valid;
  ASSERT_TRUE(encode_frame(sample_envelope(), {}, &valid).ok());
  for (size_t n = 0; n < frame_prefix_bytes; ++n) {
    EXPECT_EQ(decode_frame(as_bytes(valid.substr(0, n)), 0, &out), RejectReason::truncated_prefix);
  }
  EXPECT_EQ(decode_frame(as_bytes(valid.substr(0, valid.size() - 1)), 0, &out),
            RejectReason::length_mismatch);
  EXPECT_EQ(decode_frame(as_bytes(valid + "x"), 0, &out), RejectReason::length_mismatch);
  EXPECT_EQ(decode_frame(as_bytes(prefix(1 << 20) + "abc"), 0, &out),
            RejectReason::envelope_too_large);
  EXPECT_EQ(decode_frame(as_bytes(prefix(0xffffffffu)), 0, &out), RejectReason::envelope_too_large);
  EXPECT_EQ(decode_frame(as_bytes(prefix(3) + "\xff\xff\xff"), 0, &out),
            RejectReason::parse_failed);
  EXPECT_EQ(decode_frame(as_bytes(valid), 1, &out), RejectReason::payload_size_mismatch);
  // Hand-made envelopes: field 6 (payload_bytes) repeated, as varints (tag 0x30).
  std::string sizes;
  for (size_t i = 0; i <= payloads_max; ++i) sizes += "\x30\x01";
  EXPECT_EQ(decode_frame(as_bytes(prefix(sizes.size()) + sizes), payloads_max + 1, &out),
            RejectReason::too_many_payloads);
  const std::string huge = size_field(uint64_t{1} << 62);
  EXPECT_EQ(decode_frame(as_bytes(prefix(huge.size()) + huge), 0, &out),
            RejectReason::message_too_large);
  // Each size within the limit, their sum beyond it.
  const std::string halves = size_field(1u << 29) + size_field(1u << 29) + size_field(1u << 29);
  EXPECT_EQ(decode_frame(as_bytes(prefix(halves.size()) + halves), 3ull << 29, &out),
            RejectReason::message_too_large);
}

TEST(Wire, FuzzedFramesNeverCrash) {
  std::vector<std::byte> a(300), b(5);
  const std::span<const std::byte> payloads[] = {a, b};
  std::string valid;
  ASSERT_TRUE(encode_frame(sample_envelope(), payloads, &valid).ok());
  size_t accepted = 0, rejected = 0;
  for (uint64_t i = 0; i < 5000; ++i) {
    std::string f = valid;
    const uint64_t r = mix(i);
    switch (r % 4) {
      case 0:
        f[(r >> 8) % f.size()] ^= static_cast<char>(1u << ((r >> 40) % 8));
        break;
      case 1:
        f.resize((r >> 8) % f.size());
        break;
      case 2:
        f[(r >> 8) % f.size()] = static_cast<char>(r >> 48);
        break;
      default:
        for (size_t k = 0; k < f.size(); ++k) f[k] = static_cast<char>(mix(r + k));
    }
    Frame out;
    const uint64_t data_bytes = (r >> 20) % 2 == 0 ? 305 : (r >> 24) % 4096;
    const RejectReason why = decode_frame(as_bytes(f), data_bytes, &out);
    if (why == RejectReason::none) {
      ++accepted;
      uint64_t sum = 0;
      for (uint64_t s : out.payload_bytes) sum += s;
      EXPECT_EQ(sum, data_bytes);  // accepted frames are consistent with their data
      EXPECT_LE(out.payload_bytes.size(), payloads_max);
    } else {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 2500u);
  EXPECT_GT(accepted, 0u);  // some flips land in the names: still a well-formed frame
}

}  // namespace
}  // namespace troupe::runtime
