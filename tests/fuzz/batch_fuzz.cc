// A batch of small messages as the fabric receives it (runtime/batch_wire.cc walk_batch) on
// any bytes: a reason in range; every record handed over lies inside the input, after the
// one before, with as many payload bytes as its frame declares; a batch walked to the end
// (reason none) was consumed to its last byte; an accepted record re-packs (append_batch_record)
// into a record that walks to the same envelope.
// Input: the batch's bytes, as the AM's data.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "runtime/batch_wire.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace troupe::runtime;
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  const std::byte* end_of_last = in.data();
  std::vector<Frame> frames;
  const RejectReason reason = walk_batch(in, [&](Frame&& f, std::span<const std::byte> p) {
    uint64_t declared = 0;
    for (uint64_t s : f.payload_bytes) declared += s;
    FUZZ_CHECK(declared == p.size(), "a record's payload is what its frame declares");
    FUZZ_CHECK(p.data() >= end_of_last && p.data() + p.size() <= in.data() + in.size(),
               "a record lies inside the input, after the one before");
    end_of_last = p.data() + p.size();
    frames.push_back(std::move(f));
  });
  FUZZ_CHECK(size_t(reason) < reject_reason_count, "a reason in range");
  if (reason == RejectReason::none)
    FUZZ_CHECK(end_of_last == in.data() + in.size(), "a good batch is consumed to its end");
  for (const Frame& f : frames) {  // re-packed alone, each walks back to the same envelope
    uint64_t total = 0;
    for (uint64_t s : f.payload_bytes) total += s;
    if (total > (uint64_t{1} << 16)) continue;  // inside a fuzz input: never, but cheap
    const std::vector<std::byte> zeros(total);
    const std::span<const std::byte> payload[] = {zeros};
    std::string frame;
    // One payload of the total: the record's frame must then declare one payload.
    Envelope e = f.envelope;
    FUZZ_CHECK(encode_frame(e, payload, &frame).ok(), "an accepted envelope encodes again");
    std::string record;
    append_batch_record(&record, {reinterpret_cast<const std::byte*>(frame.data()), frame.size()},
                        payload);
    int seen = 0;
    const RejectReason again = walk_batch(
        {reinterpret_cast<const std::byte*>(record.data()), record.size()},
        [&](Frame&& back, std::span<const std::byte>) {
          ++seen;
          FUZZ_CHECK(back.envelope.from == e.from && back.envelope.to == e.to &&
                         back.envelope.type == e.type && back.envelope.epoch == e.epoch &&
                         back.envelope.header == e.header,
                     "a re-packed record walks to the same envelope");
        });
    FUZZ_CHECK(again == RejectReason::none && seen == 1, "a re-packed record walks");
  }
  return 0;
}
