// bench_wire: the fabric's envelope codec (runtime/wire.cc, protobuf encoding written by
// hand) next to its anchor, libprotobuf on the same envelope.proto with a reused message
// (the codec wire.cc had before), on a typical small control message. Prints ns per
// encode and per decode, and ratios anchor/ours (above 1: ours is faster).
// Usage: bench_wire [iterations]   (default 2000000)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/envelope.pb.h"
#include "runtime/wire.h"

namespace rt = troupe::runtime;
using Clock = std::chrono::steady_clock;

namespace {

volatile uint64_t sink = 0;  // keeps the loops' results alive
void keep(uint64_t v) {
  sink = sink + v;
}

template <class Fn>
double ns_per_call(uint64_t iterations, Fn fn) {  // the best of 5 runs
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    for (uint64_t i = 0; i < iterations; ++i) fn(i);
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    best = std::min(best, ns / double(iterations));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t iterations = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2000000;
  rt::Envelope e;
  e.epoch = 3;
  e.from = "n1/worker.0";
  e.to = "n2/worker.1";
  e.type = 70;
  e.header = std::string(24, 'h');
  std::vector<std::byte> payload(8);
  const std::span<const std::byte> payloads[] = {payload};

  std::string frame;
  const double enc = ns_per_call(iterations, [&](uint64_t i) {
    e.epoch = i;
    (void)rt::encode_frame(e, payloads, &frame);
    keep(frame.size());
  });
  troupe::wire::Envelope pb;
  std::string pb_frame;
  const double enc_pb = ns_per_call(iterations, [&](uint64_t i) {
    pb.Clear();
    pb.set_epoch(i), pb.set_from(e.from), pb.set_to(e.to), pb.set_type(e.type);
    pb.set_header(e.header);
    pb.add_payload_bytes(payload.size());
    pb_frame.resize(4 + pb.ByteSizeLong());
    pb.SerializeToArray(pb_frame.data() + 4, int(pb_frame.size() - 4));
    keep(pb_frame.size());
  });

  (void)rt::encode_frame(e, payloads, &frame);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(frame.data()),
                                         frame.size());
  rt::Frame out;
  const double dec = ns_per_call(iterations, [&](uint64_t) {
    keep(uint64_t(rt::decode_frame(bytes, payload.size(), &out)) + out.envelope.epoch);
  });
  troupe::wire::Envelope parsed;
  rt::Frame pb_out;
  const double dec_pb = ns_per_call(iterations, [&](uint64_t) {
    parsed.Clear();
    parsed.ParseFromArray(frame.data() + 4, int(frame.size() - 4));
    pb_out.envelope.epoch = parsed.epoch();
    pb_out.envelope.from = parsed.from(), pb_out.envelope.to = parsed.to();
    pb_out.envelope.type = parsed.type(), pb_out.envelope.header = parsed.header();
    pb_out.payload_bytes.assign(parsed.payload_bytes().begin(), parsed.payload_bytes().end());
    keep(pb_out.envelope.epoch);
  });
  fmt::print("envelope codec, {}-byte frame, best of 5 x {} calls\n", frame.size(), iterations);
  fmt::print("  encode  troupe {:6.1f} ns   libprotobuf (anchor) {:6.1f} ns   ratio {:.2f}x\n", enc,
             enc_pb, enc_pb / enc);
  fmt::print("  decode  troupe {:6.1f} ns   libprotobuf (anchor) {:6.1f} ns   ratio {:.2f}x\n", dec,
             dec_pb, dec_pb / dec);
  return 0;
}
