// A batch of small messages (runtime/batch_wire.h): records packed by append_batch_record
// come back in order, bit-exact; garbage gives a reason and stops the walk at the first bad
// record, keeping the good ones before it; no input crashes it.
#include "runtime/batch_wire.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace troupe::runtime {
namespace {

std::string frame_of(uint32_t type, std::span<const std::span<const std::byte>> payloads) {
  Envelope e;
  e.from = std::string("n1/test.0");
  e.to = std::string("n2/test.0");
  e.type = type;
  std::string f;
  EXPECT_TRUE(encode_frame(e, payloads, &f).ok());
  return f;
}

std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string record(uint32_t type, const std::string& data) {
  const std::span<const std::byte> payloads[] = {bytes(data)};
  std::string out;
  append_batch_record(&out, bytes(frame_of(type, payloads)), payloads);
  return out;
}

struct Walked {
  RejectReason reason;
  std::vector<std::pair<uint32_t, std::string>> records;  // type, payload bytes
};

Walked walk(const std::string& data) {
  Walked w;
  w.reason = walk_batch(bytes(data), [&](Frame&& f, std::span<const std::byte> payload) {
    w.records.emplace_back(
        f.envelope.type,
        std::string(reinterpret_cast<const char*>(payload.data()), payload.size()));
  });
  return w;
}

TEST(BatchWire, RecordsComeBackInOrderBitExact) {
  std::string data;
  std::vector<std::string> sent = {"abc", "", std::string(1500, '\xff'), "z"};
  for (uint32_t i = 0; i < sent.size(); ++i) data.append(record(30 + i, sent[i]));
  // Two payloads in one record arrive as one span, in order.
  const std::string a = "first", b = "second";
  const std::span<const std::byte> two[] = {bytes(a), bytes(b)};
  append_batch_record(&data, bytes(frame_of(40, two)), two);
  const Walked w = walk(data);
  EXPECT_EQ(w.reason, RejectReason::none);
  ASSERT_EQ(w.records.size(), sent.size() + 1);
  for (uint32_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(w.records[i].first, 30 + i);
    EXPECT_EQ(w.records[i].second, sent[i]);
  }
  EXPECT_EQ(w.records.back(), std::make_pair(40u, std::string("firstsecond")));
}

TEST(BatchWire, ABadRecordEndsTheWalkAfterTheGoodOnesBeforeIt) {
  const std::string good = record(21, "abc");
  const std::string bad_frame = [] {
    std::string r;
    append_batch_record(&r, bytes(std::string("\x03\x00\x00\x00\xff\xff\xff", 7)), {});
    return r;
  }();
  const auto cat = [](std::initializer_list<std::string> parts) {
    std::string out;
    for (const std::string& p : parts) out.append(p);
    return out;
  };
  const std::vector<std::pair<std::string, size_t>> cases = {
      {cat({good, good.substr(0, good.size() - 1)}), 1},  // the second is truncated
      {cat({good, bad_frame, good}), 1},                  // a frame that does not parse
      {cat({good, std::string("\x05\x00", 2)}), 1},       // a record header cut short
      {cat({std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8), good}), 0},  // past the end
  };

  for (const auto& [data, before] : cases) {
    const Walked w = walk(data);
    EXPECT_NE(w.reason, RejectReason::none);
    EXPECT_EQ(w.records.size(), before);
  }
  EXPECT_EQ(walk("").reason, RejectReason::none);
}

// splitmix64: a counter-based stream, as wire_test's fuzz loop uses.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

TEST(BatchWire, RandomBytesNeverCrashIt) {
  uint64_t n = 7;
  const auto rng = [&n] { return mix(n++); };
  std::string good = record(21, "abc");
  good.append(record(22, std::string(100, 'x')));
  for (int i = 0; i < 20000; ++i) {
    std::string data = good;
    for (int k = 0; k < 1 + i % 4; ++k) data[rng() % data.size()] = char(rng());
    data.resize(rng() % (data.size() + 1));
    const Walked w = walk(data);
    for (const auto& r : w.records) EXPECT_LE(r.second.size(), data.size());
  }
}

}  // namespace
}  // namespace troupe::runtime
