// The door (runtime/bootstrap.h): the handshake admits a peer that knows the job secret and
// swaps the transport addresses only then; a wrong secret, garbage, an oversized frame, a
// slow or half-open connection and too many connections at once are closed and counted,
// and the listener keeps admitting honest peers afterwards. Short limits (deadline 300 ms,
// 4 pending) let the tests see them act without long waits.
#include "runtime/bootstrap.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

namespace troupe::runtime {
namespace {

const std::string secret = "bootstrap-test-secret-0123456789ab";
constexpr int64_t test_deadline_ms = 300;
constexpr size_t test_pending_max = 4;
constexpr int closed_wait_ms = 10000;  // generous: the machine is shared and loaded

struct Door {
  std::unique_ptr<Bootstrap> bootstrap;
  uint16_t port = 0;
  std::vector<Admitted> admitted;  // bootstrap thread only while it runs
};

std::unique_ptr<Door> make_door(const std::string& key = secret) {
  auto door = std::make_unique<Door>();
  BootstrapConfig c{key, "n0", "127.0.0.1", test_deadline_ms, test_pending_max};
  Door* raw = door.get();
  auto made = Bootstrap::create(
      c,
      [raw](const Admitted& a) -> Result<std::string> {
        raw->admitted.push_back(a);
        return std::string("acceptor-address");
      },
      [](const std::string&, const std::string&) {});
  EXPECT_TRUE(made.ok()) << made.status().to_string();
  door->bootstrap = std::move(made).value();
  auto port = door->bootstrap->listen(0);
  EXPECT_TRUE(port.ok()) << port.status().to_string();
  door->port = port.value();
  return door;
}

FabricCounters counters(const Bootstrap& b) {
  FabricCounters c;
  b.add_counters(&c);
  return c;
}

Result<Admitted> connect(const std::string& key, uint16_t port, const std::string& node = "") {
  auto client = Bootstrap::create(
      {key, node, "127.0.0.1", test_deadline_ms, test_pending_max},
      [](const Admitted&) { return std::string(); }, [](const std::string&, const std::string&) {});
  EXPECT_TRUE(client.ok());
  std::promise<Result<Admitted>> done;
  client.value()->connect("127.0.0.1:" + std::to_string(port), "connector-address",
                          [&](Result<Admitted> r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

int raw_connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return fd;
}

// True when the other side closes `fd` within `ms` (whatever it sent first is read away).
bool closed_by_peer(int fd, int ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return true;
  }
  return false;
}

bool wait_until(const std::function<bool()>& pred) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(closed_wait_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling another thread
  }
  return true;
}

TEST(Bootstrap, RightSecretAdmitsAndSwapsTransportAddresses) {
  auto door = make_door();
  Result<Admitted> r = connect(secret, door->port, "n7");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().transport_address, "acceptor-address");
  EXPECT_EQ(r.value().info.node, "n0");
  ASSERT_TRUE(wait_until([&] { return counters(*door->bootstrap).handshakes_admitted == 1; }));
  ASSERT_EQ(door->admitted.size(), 1u);
  EXPECT_EQ(door->admitted[0].transport_address, "connector-address");
  EXPECT_EQ(door->admitted[0].info.node, "n7");
  EXPECT_EQ(door->admitted[0].info.pid, uint32_t(getpid()));
}

TEST(Bootstrap, WrongSecretIsRefusedOnBothSidesAndNoAddressTravels) {
  auto door = make_door();
  Result<Admitted> r = connect("a-different-secret-of-32-bytes!!", door->port);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("did not prove the job secret"), std::string::npos)
      << r.status().message();
  ASSERT_TRUE(wait_until([&] { return counters(*door->bootstrap).handshakes_refused == 1; }));
  EXPECT_TRUE(door->admitted.empty());
}

TEST(Bootstrap, GarbageAndOversizedFramesAreClosedAndCounted) {
  auto door = make_door();
  const std::vector<std::string> attacks = {
      std::string(64, '\xff'),                                       // a length of 4 GiB
      std::string("\x01\0\0\0\0\0\0\0", 8) + std::string(200, 'A'),  // 1 byte said, more sent
      std::string("\x05\0\0\0", 4) + "\x08\x96\x01\xff\xff",         // not a protobuf Hello
  };
  for (const std::string& bytes : attacks) {
    const int fd = raw_connect(door->port);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), ssize_t(bytes.size()));
    EXPECT_TRUE(closed_by_peer(fd, closed_wait_ms));
    close(fd);
  }
  ASSERT_TRUE(wait_until(
      [&] { return counters(*door->bootstrap).handshakes_malformed == attacks.size(); }));
  EXPECT_TRUE(connect(secret, door->port).ok()) << "the door no longer admits honest peers";
}

TEST(Bootstrap, SlowAndHalfOpenConnectionsTimeOut) {
  auto door = make_door();
  const int silent = raw_connect(door->port);
  const int slow = raw_connect(door->port);
  ASSERT_EQ(write(slow, "\x40\0", 2), 2);  // half a length prefix, then nothing
  const int half_open = raw_connect(door->port);
  shutdown(half_open, SHUT_WR);  // our side is done writing, theirs waits for a hello
  for (int fd : {silent, slow, half_open}) {
    EXPECT_TRUE(closed_by_peer(fd, closed_wait_ms));
    close(fd);
  }
  ASSERT_TRUE(wait_until([&] {
    const FabricCounters c = counters(*door->bootstrap);
    return c.handshakes_timed_out + c.handshakes_closed == 3;
  }));
  EXPECT_GE(counters(*door->bootstrap).handshakes_timed_out, 2u);  // the silent and the slow
  EXPECT_TRUE(connect(secret, door->port).ok());
}

TEST(Bootstrap, TooManyPendingConnectionsAreRefusedAtOnce) {
  auto door = make_door();
  std::vector<int> held;
  for (size_t i = 0; i < test_pending_max; ++i) held.push_back(raw_connect(door->port));
  std::vector<int> extra;
  for (int i = 0; i < 8; ++i) extra.push_back(raw_connect(door->port));
  for (int fd : extra) {
    EXPECT_TRUE(closed_by_peer(fd, test_deadline_ms / 2)) << "not refused at once";
    close(fd);
  }
  ASSERT_TRUE(wait_until([&] { return counters(*door->bootstrap).handshakes_over_limit == 8; }));
  for (int fd : held) close(fd);
  // The held ones end (closed or timed out), and the door admits again.
  ASSERT_TRUE(wait_until([&] {
    const FabricCounters c = counters(*door->bootstrap);
    return c.handshakes_closed + c.handshakes_timed_out == test_pending_max;
  }));
  EXPECT_TRUE(connect(secret, door->port).ok());
}

TEST(Bootstrap, APortInUseIsOneClearError) {
  auto door = make_door();
  auto other = Bootstrap::create({secret, "", "127.0.0.1"}, {}, {});
  ASSERT_TRUE(other.ok());
  Result<uint16_t> r = other.value()->listen(door->port);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is in use"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(std::to_string(door->port)), std::string::npos);
  auto bad = Bootstrap::create({secret, "", "10.255.255.1"}, {}, {});
  Result<uint16_t> b = bad.value()->listen(0);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("10.255.255.1"), std::string::npos) << b.status().message();
  auto junk = Bootstrap::create({secret, "", "not-an-address"}, {}, {});
  EXPECT_FALSE(junk.value()->listen(0).ok());
}

TEST(Bootstrap, SplitHostPort) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(split_host_port("127.0.0.1:80", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 80);
  ASSERT_TRUE(split_host_port("[::1]:65535", &host, &port));
  EXPECT_EQ(host, "::1");
  for (const char* bad : {"", "no-port", ":80", "h:", "h:0", "h:65536", "h:8x", "h:99999999999"})
    EXPECT_FALSE(split_host_port(bad, &host, &port)) << bad;
}

}  // namespace
}  // namespace troupe::runtime
