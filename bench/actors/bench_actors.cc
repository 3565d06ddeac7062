// bench_actors: the fabric's figures measured through the actor layer (issue 5 §6): an
// actor on one node process sends ActorMessages to an actor on another, through both
// processes' routers (CAF) and the UcxFabric. run_bench_fabric.sh prints these next to the
// raw fabric and ucx_perftest, so the difference is the actor layer's cost.
//   bench_actors serve --port-file F
//   bench_actors client --connect HOST:PORT [--lat-iters N] [--sizes B,B,...]
// The client prints "bw <bytes> <MiB/s> <iters>" per size and
// "lat 8 <median one-way us> <mean one-way us> <iters>", like bench_fabric: ping-pong between
// two event-based actors, as roles talk. "lat_scoped 8 ..." is the same from a scoped_actor
// (a thread outside CAF, which each reply has to wake): the bench's figure before issue 15.
#include <fmt/format.h>

#include <algorithm>
#include <caf/all.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/buffer_pool.h"
#include "runtime/host.h"

namespace rt = troupe::runtime;
using Clock = std::chrono::steady_clock;

namespace {

enum : uint32_t { kPing = rt::control_types_end, kPong, kData, kDone, kAck, kQuit };
const std::string kSecret = "bench-actors-secret-0123456789abcdef";

std::unique_ptr<rt::Host> host(const std::string& id) {
  rt::HostOptions o;
  o.node_id = id;
  o.secret = kSecret;
  auto h = rt::Host::create(o);
  if (!h.ok()) {
    fmt::print(stderr, "bench_actors: {}\n", h.status().to_string());
    std::exit(1);
  }
  return std::move(h).value();
}

rt::ActorMessage message(const std::string& from, const std::string& to, uint32_t type,
                         std::string header = {}) {
  rt::ActorMessage m;
  m.from = from, m.to = to, m.type = type, m.header = std::move(header);
  return m;
}

// The serving side: echoes pings, counts data bytes, acknowledges a batch once all arrived.
caf::behavior echo(caf::event_based_actor* self, caf::actor router,
                   std::shared_ptr<std::promise<void>> quit) {
  auto got = std::make_shared<uint64_t>(0), want = std::make_shared<uint64_t>(~0ull);
  auto reply_to = std::make_shared<std::string>();
  self->send(router, rt::register_atom::value, std::string("echo.0"), caf::actor(self));
  auto maybe_ack = [=] {
    if (*got < *want) return;
    self->send(router, message("n0/echo.0", *reply_to, kAck));
    *got = 0, *want = ~0ull;
  };
  return {[=](rt::ActorMessage& m) {
    switch (m.type) {
      case kPing:
        self->send(router, message("n0/echo.0", m.from, kPong));
        break;
      case kData:
        *got += 1;
        maybe_ack();
        break;
      case kDone:
        *want = std::stoull(m.header);
        *reply_to = m.from;
        maybe_ack();
        break;
      case kQuit:  // acknowledged, so the client knows it arrived before it shuts down
        self->send(router, message("n0/echo.0", m.from, kAck));
        // The router answers after it handed the ack to the fabric (one sender, in order).
        self->request(router, caf::infinite, rt::counters_atom::value)
            .then([=](const rt::RouterCounters&) { quit->set_value(); });
        break;
    }
  }};
}

// Pings echo.0 `iters` times, one at a time, and hands the round trips (us) to `out`.
caf::behavior pinger(caf::event_based_actor* self, caf::actor router, int64_t iters,
                     std::shared_ptr<std::promise<std::vector<double>>> out) {
  struct Run {
    std::vector<double> rtt_us;
    Clock::time_point sent;
  };
  auto run = std::make_shared<Run>();
  run->rtt_us.reserve(size_t(iters));
  self->send(router, rt::register_atom::value, std::string("pinger.0"), caf::actor(self));
  auto ping = [=] {
    run->sent = Clock::now();
    self->send(router, message("n1/pinger.0", "n0/echo.0", kPing));
  };
  ping();  // after the registration: one sender, in order
  return {[=](rt::ActorMessage& m) {
    if (m.type != kPong) return;
    run->rtt_us.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - run->sent).count());
    if (int64_t(run->rtt_us.size()) < iters) return ping();
    out->set_value(std::move(run->rtt_us));
    self->quit();
  }};
}

// "NAME 8 <median one-way us> <mean one-way us> <iters>" from round trips.
void print_latency(const char* name, std::vector<double> rtt_us) {
  std::sort(rtt_us.begin(), rtt_us.end());
  const double mean = std::accumulate(rtt_us.begin(), rtt_us.end(), 0.0) / double(rtt_us.size());
  fmt::print("{} 8 {:.3f} {:.3f} {}\n", name, rtt_us[rtt_us.size() / 2] / 2, mean / 2,
             rtt_us.size());
}

int serve(const std::string& port_file) {
  auto h = host("n0");
  auto quit = std::make_shared<std::promise<void>>();
  auto done = quit->get_future();
  h->actor_system().spawn(echo, h->router(), quit);
  const std::string a = h->listen_address();
  std::ofstream(port_file + ".tmp") << a.substr(a.rfind(':') + 1) << "\n";
  std::rename((port_file + ".tmp").c_str(), port_file.c_str());
  done.wait();
  (void)h->fabric().flush(std::chrono::milliseconds(2000));
  return 0;
}

int client(const std::string& address, int64_t lat_iters, const std::vector<uint64_t>& sizes) {
  auto h = host("n1");
  const caf::actor router = h->router();
  caf::anon_send(router, rt::address_atom::value, std::string("n0"), address);
  caf::scoped_actor self{h->actor_system()};
  caf::anon_send(router, rt::register_atom::value, std::string("driver.0"), caf::actor(self));
  auto await = [&](uint32_t type) {
    bool ok = false;
    self->receive([&](rt::ActorMessage& m) { ok = m.type == type; },
                  caf::after(std::chrono::seconds(120)) >> [] {});
    if (!ok) {
      fmt::print(stderr, "bench_actors: no reply (type {})\n", type);
      std::exit(1);
    }
  };
  // Sent from the memory bench_fabric sends from, the first bytes of one pooled buffer on
  // huge pages: a node's tensors live in its heap on huge pages (launch/node_heap.h), and
  // cma reads 4 KiB pages markedly slower (run_bench_fabric.sh).
  rt::BufferPool send_pool(0);
  auto buf = std::make_shared<rt::ByteBuffer>(
      send_pool.get(sizes.empty() ? 1 : *std::max_element(sizes.begin(), sizes.end())));
  std::memset(buf->data(), 1, buf->size());
  // Warm up the connection (handshake) and CAF.
  for (int i = 0; i < 1000; ++i) {
    self->send(router, message("n1/driver.0", "n0/echo.0", kPing));
    await(kPong);
  }
  // Each size timed as bench_fabric times it: the same number of messages, after a tenth of
  // them untimed (a new size's first messages page-fault the receiver's new buffers).
  const auto bandwidth_mib_s = [&](uint64_t size, int64_t iters) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      rt::ActorMessage m = message("n1/driver.0", "n0/echo.0", kData);
      m.payloads.push_back({buf, std::span<const std::byte>(buf->data(), size)});
      self->send(router, std::move(m));
    }
    self->send(router, message("n1/driver.0", "n0/echo.0", kDone, std::to_string(iters)));
    await(kAck);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    return double(size) * double(iters) / s / (1 << 20);
  };
  for (uint64_t size : sizes) {
    const int64_t iters = std::clamp<int64_t>(int64_t((uint64_t(2) << 30) / size), 32, 200000);
    bandwidth_mib_s(size, std::max<int64_t>(iters / 10, 8));
    fmt::print("bw {} {:.1f} {}\n", size, bandwidth_mib_s(size, iters), iters);
  }
  auto actor_rtts = std::make_shared<std::promise<std::vector<double>>>();
  auto actor_done = actor_rtts->get_future();
  h->actor_system().spawn(pinger, router, lat_iters, actor_rtts);
  print_latency("lat", actor_done.get());
  std::vector<double> rtt_us;
  for (int64_t i = 0; i < lat_iters; ++i) {
    const auto t0 = Clock::now();
    self->send(router, message("n1/driver.0", "n0/echo.0", kPing));
    await(kPong);
    rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  print_latency("lat_scoped", std::move(rtt_us));
  self->send(router, message("n1/driver.0", "n0/echo.0", kQuit));
  await(kAck);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto opt = [&](const std::string& name, const std::string& def) {
    for (size_t i = 0; i + 1 < args.size(); ++i)
      if (args[i] == name) return args[i + 1];
    return def;
  };
  if (!args.empty() && args[0] == "serve" && !opt("--port-file", "").empty())
    return serve(opt("--port-file", ""));
  if (!args.empty() && args[0] == "client" && !opt("--connect", "").empty()) {
    std::vector<uint64_t> sizes;
    std::stringstream list(opt("--sizes", "1024,65536,1048576,4194304,67108864"));
    for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoull(item));
    return client(opt("--connect", ""), std::stoll(opt("--lat-iters", "20000")), sizes);
  }
  fmt::print(stderr,
             "usage: bench_actors serve --port-file F | client --connect HOST:PORT "
             "[--lat-iters N] [--sizes B,B,...]\n");
  return 2;
}
