// runtime/wire.cc reads and writes the Envelope's protobuf encoding by hand. These tests
// hold it to libprotobuf (envelope.proto compiled): the same bytes out, and the same
// verdict and fields on input, valid or not, over a differential fuzz.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "runtime/envelope.pb.h"
#include "runtime/wire.h"

namespace troupe::runtime {
namespace {

uint64_t mix(uint64_t x) {  // splitmix64, counter-based
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string prefix(size_t n) {
  std::string s(frame_prefix_bytes, '\0');
  for (size_t i = 0; i < frame_prefix_bytes; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

std::string random_bytes(uint64_t r, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(mix(r + i));
  return s;
}

// A random envelope; about one field in four keeps its default value.
Envelope random_envelope(uint64_t r) {
  Envelope e;
  auto pick = [&](int k) { return (mix(r * 16 + uint64_t(k)) % 4) != 0; };
  if (pick(0)) e.epoch = mix(r + 1) >> (mix(r + 2) % 64);
  if (pick(1)) e.from = random_bytes(r + 3, mix(r + 4) % 24);
  if (pick(2)) e.to = random_bytes(r + 5, mix(r + 6) % 24);
  if (pick(3)) e.type = uint32_t(mix(r + 7) >> (32 + mix(r + 8) % 32));
  if (pick(4)) e.header = random_bytes(r + 9, mix(r + 10) % 300);
  return e;
}

// The oracle: decode_frame as it was written over libprotobuf.
RejectReason oracle_decode(const std::string& frame, uint64_t data_bytes, Frame* out) {
  if (frame.size() < frame_prefix_bytes) return RejectReason::truncated_prefix;
  uint64_t n = 0;
  for (size_t i = 0; i < frame_prefix_bytes; ++i) n |= uint64_t(uint8_t(frame[i])) << (8 * i);
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

TEST(WireProtobuf, EncodingIsLibprotobufs) {
  for (uint64_t i = 0; i < 2000; ++i) {
    const Envelope e = random_envelope(i);
    std::vector<std::vector<std::byte>> data(mix(i + 11) % (payloads_max + 1));
    for (size_t k = 0; k < data.size(); ++k) data[k].resize(mix(i * 64 + k) % 3000);
    std::vector<std::span<const std::byte>> payloads(data.begin(), data.end());
    std::string ours;
    ASSERT_TRUE(encode_frame(e, payloads, &ours).ok());
    wire::Envelope pb;
    pb.set_epoch(e.epoch), pb.set_from(e.from), pb.set_to(e.to), pb.set_type(e.type);
    pb.set_header(e.header);
    for (const auto& d : data) pb.add_payload_bytes(d.size());
    const std::string theirs = pb.SerializeAsString();
    ASSERT_EQ(ours, prefix(theirs.size()) + theirs) << "envelope " << i;
  }
}

// What a peer built on another protobuf library may send: fields out of order, repeated,
// unknown fields of every wire type (groups too), payload sizes unpacked.
std::string unusual_envelope(uint64_t r, uint64_t* data_bytes) {
  wire::Envelope a;
  a.set_epoch(mix(r)), a.set_from("n1/w.0"), a.set_type(9), a.set_header("hh");
  std::string out;
  const std::vector<std::string> parts = {
      "\x1a\x05n2/x.",  // to
      "\x12\x03old",    // a from that a later one overrides
      std::string("\x30\x07", 2),
      std::string("\x30\x00", 2),                       // unpacked sizes 7, 0
      std::string("\x32\x02\x05\x01", 4),               // packed sizes 5, 1
      std::string("\x58\x96\x01", 3),                   // unknown field 11, varint
      std::string("\x61", 1) + std::string(8, '\x01'),  // unknown field 12, fixed64
      std::string("\x6d", 1) + std::string(4, '\x02'),  // unknown field 13, fixed32
      std::string("\x72\x03xyz", 5),                    // unknown field 14, bytes
      std::string("\x7b\x08\x01\x7c", 4),               // unknown group 15 {field 1 = 1}
      std::string("\x22\x01z", 3),                      // type (4) as bytes: unknown, skipped
  };
  *data_bytes = 7 + 5 + 1;
  for (size_t k = 0; k < parts.size(); ++k) {  // a rotation of the parts, then `a`
    out += parts[(k + r) % parts.size()];
  }
  out += a.SerializeAsString();
  return out;
}

std::string hex(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out += "0123456789abcdef"[c >> 4], out += "0123456789abcdef"[c & 15];
  return out;
}

void expect_same(const std::string& frame, uint64_t data_bytes, uint64_t i) {
  Frame ours, theirs;
  const RejectReason a = decode_frame(as_bytes(frame), data_bytes, &ours);
  const RejectReason b = oracle_decode(frame, data_bytes, &theirs);
  ASSERT_EQ(a, b) << "case " << i << ": ours " << reject_reason_name(a) << ", libprotobuf "
                  << reject_reason_name(b) << "; frame " << hex(frame);
  if (a != RejectReason::none) return;
  EXPECT_EQ(ours.envelope.epoch, theirs.envelope.epoch) << i;
  EXPECT_EQ(ours.envelope.from, theirs.envelope.from) << i;
  EXPECT_EQ(ours.envelope.to, theirs.envelope.to) << i;
  EXPECT_EQ(ours.envelope.type, theirs.envelope.type) << i;
  EXPECT_EQ(ours.envelope.header, theirs.envelope.header) << i;
  EXPECT_EQ(ours.payload_bytes, theirs.payload_bytes) << i;
}

TEST(WireProtobuf, UnusualButValidEncodingsDecodeAsLibprotobufDoes) {
  for (uint64_t i = 0; i < 11; ++i) {
    uint64_t data_bytes = 0;
    const std::string body = unusual_envelope(i, &data_bytes);
    expect_same(prefix(body.size()) + body, data_bytes, i);
    Frame out;
    ASSERT_EQ(decode_frame(as_bytes(prefix(body.size()) + body), data_bytes, &out),
              RejectReason::none);
    EXPECT_EQ(out.envelope.from, "n1/w.0");
  }
}

TEST(WireProtobuf, FuzzedFramesGetLibprotobufsVerdict) {
  size_t accepted = 0;
  for (uint64_t i = 0; i < 40000; ++i) {
    const uint64_t r = mix(i ^ 0x5eed);
    uint64_t data_bytes = 0;
    std::string body;
    if (r % 3 == 0) {
      body = unusual_envelope(r >> 8, &data_bytes);
    } else {
      std::vector<std::byte> d0(r >> 10 & 63), d1(r >> 16 & 7);
      const std::span<const std::byte> payloads[] = {d0, d1};
      std::string frame;
      EXPECT_TRUE(encode_frame(random_envelope(r), payloads, &frame).ok());
      body = frame.substr(frame_prefix_bytes);
      data_bytes = d0.size() + d1.size();
    }
    const int edits = int(r >> 20 & 3);  // 0: the valid body itself
    for (int k = 0; k < edits && !body.empty(); ++k) {
      const uint64_t m = mix(r + uint64_t(k));
      const size_t at = m % body.size();
      switch (m >> 32 & 3) {
        case 0:
          body[at] = static_cast<char>(body[at] ^ (1 << (m >> 40 & 7)));
          break;
        case 1:
          body[at] = static_cast<char>(m >> 48);
          break;
        case 2:
          body.resize(at);
          break;
        default:
          body.insert(at, 1, static_cast<char>(m >> 48));
      }
    }
    const std::string frame = prefix(body.size()) + body;
    expect_same(frame, data_bytes, i);
    Frame out;
    if (decode_frame(as_bytes(frame), data_bytes, &out) == RejectReason::none) ++accepted;
  }
  EXPECT_GT(accepted, 10000u);  // the fuzz reaches the accepting paths, not only rejections
}

}  // namespace
}  // namespace troupe::runtime
