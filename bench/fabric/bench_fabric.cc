// bench_fabric: troupe's UCX fabric between two node processes. Started twice by
// bench/fabric/run_bench_fabric.sh (serve, then client); the script runs ucx_perftest on
// the same transports in the same run and prints the ratios.
//   bench_fabric serve --port-file F [--spin-us N] [--batch 0|1]
//   bench_fabric client --connect HOST:PORT [--spin-us N] [--batch 0|1] [--lat-iters N]
//                [--sizes B,B,...]   (--batch 0: small messages each alone, UcxOptions)
// The client prints "bw <bytes> <MiB/s> <iters>" per size (sent from its main thread), the
// same as "bwf" sent from the fabric's own thread (as an actor that thread runs sends), and
// "lat 8 <median one-way us> <mean one-way us> <iters>".
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/ucx_fabric.h"

namespace rt = troupe::runtime;
using Clock = std::chrono::steady_clock;

namespace {

enum : uint32_t { kData = 1, kAck = 2, kPing = 3, kPong = 4, kQuit = 5, kKick = 6 };
constexpr auto wait_ms_max = std::chrono::milliseconds(120000);  // a loaded box is slow

// A counter that one thread bumps and another awaits.
struct Counter {
  std::mutex m;
  std::condition_variable cv;
  uint64_t n = 0;
  void bump() {
    {
      std::lock_guard<std::mutex> l(m);
      ++n;
    }
    cv.notify_all();
  }
  bool wait_for(uint64_t target) {
    std::unique_lock<std::mutex> l(m);
    return cv.wait_for(l, wait_ms_max, [&] { return n >= target; });
  }
};

rt::Envelope envelope(uint32_t type, std::string header = {}) {
  rt::Envelope e;
  e.type = type;
  e.header = std::move(header);
  return e;
}

std::string u64_bytes(uint64_t v) {
  return std::string(reinterpret_cast<char*>(&v), 8);
}
uint64_t bytes_u64(const std::string& s) {
  uint64_t v = 0;
  std::memcpy(&v, s.data(), std::min<size_t>(8, s.size()));
  return v;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& dflt) {
  for (int i = 2; i + 1 < argc; ++i) {
    if (name == argv[i]) return argv[i + 1];
  }
  return dflt;
}

rt::UcxOptions options(int argc, char** argv) {
  rt::UcxOptions o;
  o.secret = "bench-fabric-secret-0123456789ab";  // both sides run this binary
  o.progress_spin_us = std::stoll(arg(argc, argv, "--spin-us", "100"));
  o.batch_small_messages = arg(argc, argv, "--batch", "1") != "0";  // UcxOptions
  return o;
}

void check(const rt::Status& s, const char* what) {
  if (s.ok()) return;
  fmt::print(stderr, "bench_fabric: {}: {}\n", what, s.to_string());
  std::exit(1);
}

int serve(int argc, char** argv) {
  rt::Fabric* fabric = nullptr;
  uint64_t received = 0;
  Counter quit;
  const std::vector<std::byte> pong_payload(8);
  const rt::Envelope pong_envelope = envelope(kPong);
  rt::FabricHandlers h;
  h.on_receive = [&](rt::Message&& m) {
    const uint32_t type = m.envelope.type;
    if (type == kData && ++received == bytes_u64(m.envelope.header)) {
      received = 0;
      check(fabric->send(m.peer, envelope(kAck), {}), "send ack");
    } else if (type == kPing) {  // like ucp_am_lat: the reply comes from our own buffer
      const size_t bytes = m.payloads.empty() ? 0 : m.payloads[0].size();
      std::span<const std::byte> p[1] = {std::span(pong_payload).first(std::min<size_t>(bytes, 8))};
      check(fabric->send(m.peer, pong_envelope, p), "send pong");
    } else if (type == kQuit) {
      quit.bump();
    }
  };
  auto made = rt::UcxFabric::create(options(argc, argv), std::move(h));
  check(made.status(), "create");
  fabric = made.value().get();
  auto port = fabric->listen(0);
  check(port.status(), "listen");
  std::ofstream(arg(argc, argv, "--port-file", "port.txt")) << port.value() << "\n";
  quit.wait_for(1);
  return 0;
}

// Sends a stream from the fabric's own thread, as an actor the fabric's thread runs (the lent
// scheduler) sends: the fabric calls run() between two polls while its window has room.
struct StreamGuest : rt::FabricGuest {
  rt::Fabric* fabric = nullptr;
  rt::PeerId peer = rt::peer_none;
  rt::Envelope env;
  std::span<const std::byte> payload;
  std::atomic<uint64_t> left{0};
  bool run() override {
    uint64_t n = left.load(std::memory_order_acquire);
    if (n == 0) return false;
    std::span<const std::byte> p[1] = {payload};
    for (int i = 0; i < 64 && n > 0; ++i, --n) check(fabric->send(peer, env, p), "send data");
    left.store(n, std::memory_order_release);
    return true;
  }
  void step_in() override {}
  void step_aside() override {}
};

struct Client {
  rt::Fabric* fabric = nullptr;
  std::shared_ptr<StreamGuest> guest = std::make_shared<StreamGuest>();
  rt::PeerId peer = rt::peer_none;
  Counter acks;
  Counter pings_done;
  std::vector<std::byte> ping_payload = std::vector<std::byte>(8);
  const rt::Envelope ping_envelope = envelope(kPing);
  std::vector<double> rtt_us;
  uint64_t pings_left = 0;
  Clock::time_point ping_sent;

  void send_ping() {
    ping_sent = Clock::now();
    std::span<const std::byte> p[1] = {ping_payload};
    check(fabric->send(peer, ping_envelope, p), "send ping");
  }
  void on_receive(rt::Message&& m) {  // on the fabric thread
    if (m.envelope.type == kAck) {
      acks.bump();
    } else if (m.envelope.type == kPong) {
      rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - ping_sent).count());
      if (--pings_left > 0) {
        send_ping();
      } else {
        pings_done.bump();
      }
    }
  }
  double bandwidth_mib_s(size_t bytes, uint64_t iters, const rt::ByteBuffer& buf,
                         bool from_fabric_thread) {
    std::span<const std::byte> p[1] = {std::span<const std::byte>(buf.data(), bytes)};
    const rt::Envelope env = envelope(kData, u64_bytes(iters));
    const uint64_t target = acks.n + 1;
    const auto t0 = Clock::now();
    if (from_fabric_thread) {  // the guest sends them; a kick wakes the fabric's thread
      guest->fabric = fabric, guest->peer = peer, guest->env = env, guest->payload = p[0];
      guest->left.store(iters, std::memory_order_release);
      check(fabric->send(peer, envelope(kKick), {}), "send kick");
    } else {
      for (uint64_t i = 0; i < iters; ++i) check(fabric->send(peer, env, p), "send data");
    }
    if (!acks.wait_for(target)) check({rt::Code::timeout, "no ack"}, "bandwidth");
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    return static_cast<double>(bytes) * static_cast<double>(iters) / s / (1 << 20);
  }
  void latency(uint64_t iters) {
    rtt_us.clear();
    rtt_us.reserve(iters);
    pings_left = iters;
    const uint64_t target = pings_done.n + 1;
    post_ping();
    if (!pings_done.wait_for(target)) check({rt::Code::timeout, "pings"}, "latency");
  }
  void post_ping() { send_ping(); }
};

int client(int argc, char** argv) {
  Client c;
  rt::FabricHandlers h;
  h.on_receive = [&c](rt::Message&& m) { c.on_receive(std::move(m)); };
  h.guest = c.guest;
  auto made = rt::UcxFabric::create(options(argc, argv), std::move(h));
  check(made.status(), "create");
  auto* fabric = made.value().get();
  c.fabric = fabric;
  auto peer = fabric->connect(arg(argc, argv, "--connect", "127.0.0.1:13337"));
  check(peer.status(), "connect");
  c.peer = peer.value();
  const uint64_t lat_iters = std::stoull(arg(argc, argv, "--lat-iters", "100000"));
  c.latency(1000);  // wire-up and warm-up
  fmt::print(stderr, "{}", made.value()->describe_peer(c.peer));
  std::vector<size_t> sizes;
  std::stringstream size_list(arg(argc, argv, "--sizes", "1024,65536,1048576,4194304,67108864"));
  for (std::string item; std::getline(size_list, item, ',');) sizes.push_back(std::stoull(item));
  // Sent from the kind of memory the fabric receives into (pooled, huge pages), as
  // ucx_perftest sends from memory UCX allocated (ucp_mem_map: shared memory or THP).
  rt::BufferPool send_pool(0);
  const rt::ByteBuffer buf =
      send_pool.get(sizes.empty() ? 1 : *std::max_element(sizes.begin(), sizes.end()));
  std::memset(buf.data(), 1, buf.size());
  for (size_t size : sizes) {
    const uint64_t iters = std::clamp<uint64_t>((uint64_t{2} << 30) / size, 32, 200000);
    for (bool fabric_thread : {false, true}) {
      c.bandwidth_mib_s(size, std::max<uint64_t>(iters / 10, 8), buf, fabric_thread);  // warm-up
      fmt::print("{} {} {:.1f} {}\n", fabric_thread ? "bwf" : "bw", size,
                 c.bandwidth_mib_s(size, iters, buf, fabric_thread), iters);
    }
  }
  c.latency(lat_iters / 10);
  c.latency(lat_iters);
  std::vector<double> r = c.rtt_us;
  std::sort(r.begin(), r.end());
  double sum = 0;
  for (double v : r) sum += v;
  fmt::print("lat 8 {:.3f} {:.3f} {}\n", r[r.size() / 2] / 2, sum / r.size() / 2, r.size());
  check(fabric->send(c.peer, envelope(kQuit), {}), "send quit");
  check(fabric->flush(wait_ms_max), "flush");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve") return serve(argc, argv);
  if (mode == "client") return client(argc, argv);
  fmt::print(stderr, "usage: bench_fabric serve --port-file F | client --connect HOST:PORT\n");
  return 2;
}
