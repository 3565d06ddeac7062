// A peer killed with SIGKILL surfaces as on_peer_down within a bound, and a peer that hung
// with its shared-memory FIFO full and was then killed leaves nothing mapped here. The peer
// is this test binary re-executed with TROUPE_FABRIC_TEST_CHILD_FD set: a static initializer
// turns it into a fabric node (listen, report the port, echo messages) before gtest runs.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runtime/dead_peer_fifos.h"
#include "runtime/ucx_fabric.h"

namespace troupe::runtime {
namespace {

constexpr const char* child_fd_env = "TROUPE_FABRIC_TEST_CHILD_FD";
constexpr const char* blast_port_env = "TROUPE_FABRIC_TEST_BLAST_PORT";

UcxOptions test_options() {
  UcxOptions o;
  o.secret = "peer-down-test-secret-0123456789";
  return o;
}
// UCX reported kill -9 in 3.5–5.5 ms here (DESIGN.md §3); 5 s leaves room for a loaded box.
constexpr auto peer_down_ms_max = std::chrono::milliseconds(5000);

[[noreturn]] void run_child(int fd) {
  auto made = UcxFabric::create(test_options(), {});
  if (!made.ok()) _exit(3);
  UcxFabric& fabric = *made.value();
  auto port = fabric.listen(0);
  if (!port.ok()) _exit(4);
  const uint16_t p = port.value();
  if (write(fd, &p, sizeof(p)) != static_cast<ssize_t>(sizeof(p))) _exit(5);
  close(fd);
  for (;;) {  // echo until killed
    auto m = fabric.receive(std::chrono::milliseconds(1000));
    if (m.ok()) (void)fabric.send(m.value().peer, m.value().envelope, {});
  }
}

// Sends 4 KiB messages to the fabric at 127.0.0.1:`port` as fast as it can, until killed.
[[noreturn]] void run_blaster(int port) {
  auto made = UcxFabric::create(test_options(), {});
  if (!made.ok()) _exit(3);
  UcxFabric& fabric = *made.value();
  auto peer = fabric.connect("127.0.0.1:" + std::to_string(port));
  if (!peer.ok()) _exit(4);
  std::vector<std::byte> bytes(4096, std::byte{7});
  const std::span<const std::byte> payload[] = {bytes};
  Envelope e;
  e.type = 2;
  for (;;) (void)fabric.send(peer.value(), e, payload);
}

// Runs before main(): the child never reaches gtest.
const bool child_started = [] {
  if (const char* fd = std::getenv(child_fd_env)) run_child(std::atoi(fd));
  if (const char* port = std::getenv(blast_port_env)) run_blaster(std::atoi(port));
  return false;
}();

pid_t spawn_blaster(uint16_t port) {
  const std::string env = std::string(blast_port_env) + "=" + std::to_string(port);
  const pid_t pid = fork();
  if (pid == 0) {
    putenv(const_cast<char*>(env.c_str()));
    char* argv[] = {const_cast<char*>("/proc/self/exe"), nullptr};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  return pid;
}

pid_t spawn_child(int* read_fd) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const std::string env = std::string(child_fd_env) + "=" + std::to_string(fds[1]);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    putenv(const_cast<char*>(env.c_str()));
    char* argv[] = {const_cast<char*>("/proc/self/exe"), nullptr};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  close(fds[1]);
  *read_fd = fds[0];
  return pid;
}

// An echo child, killed and reaped when this goes, and the port it reported (0: none).
struct EchoChild {
  pid_t pid = -1;
  uint16_t port = 0;
  EchoChild() {
    int fd = -1;
    pid = spawn_child(&fd);
    if (pid <= 0) return;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 20000) != 1 || read(fd, &port, sizeof(port)) != ssize_t(sizeof(port)))
      port = 0;
    close(fd);
  }
  ~EchoChild() {
    if (pid > 0) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
  }
};

TEST(UcxFabricPeerDown, KilledPeerSurfacesWithinBound) {
  ASSERT_FALSE(child_started);
  EchoChild echo;
  ASSERT_GT(echo.pid, 0);
  ASSERT_NE(echo.port, 0) << "child did not report its port";
  const pid_t child = echo.pid;
  const uint16_t port = echo.port;

  std::promise<std::chrono::steady_clock::time_point> down;
  FabricHandlers h;
  h.on_peer_down = [&](PeerId, const Status&) { down.set_value(std::chrono::steady_clock::now()); };
  auto made = UcxFabric::create(test_options(), std::move(h));
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  UcxFabric& fabric = *made.value();
  auto peer = fabric.connect("127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(peer.ok()) << peer.status().to_string();
  Envelope e;
  e.type = 1;
  ASSERT_TRUE(fabric.send(peer.value(), e, {}).ok());
  ASSERT_TRUE(fabric.receive(std::chrono::milliseconds(20000)).ok()) << "no echo";

  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(child, SIGKILL), 0);
  auto when = down.get_future();
  ASSERT_EQ(when.wait_for(peer_down_ms_max), std::future_status::ready);
  const auto ms = std::chrono::duration<double, std::milli>(when.get() - killed).count();
  std::printf("peer_down %.1f ms after SIGKILL\n", ms);
  EXPECT_EQ(fabric.counters().peers_down, 1u);
  EXPECT_EQ(fabric.send(peer.value(), e, {}).code(), Code::peer_down);
}

// The SysV segments mapped in this process that `creator` made.
int segments_of(pid_t creator) {
  const std::map<int64_t, pid_t> cpid = sysv_creators();
  std::set<int64_t> ids;
  for (const SysvMapping& m : sysv_mappings()) {
    const auto it = cpid.find(m.shmid);
    if (it != cpid.end() && it->second == creator) ids.insert(m.shmid);
  }
  return int(ids.size());
}

// Whether process `pid` is stopped (SIGSTOP taken: state T).
bool stopped(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'T';
}

// The unread elements of `creator`'s FIFO as this process maps it (UCX 1.13's control
// block: dead_peer_fifos.h), or -1.
int64_t unread_in_fifo_of(pid_t creator) {
  for (const SysvMapping& m : sysv_mappings()) {
    if (m.end - m.start > mm_fifo_segment_bytes_max) continue;  // receive buffers
    auto* base = reinterpret_cast<unsigned char*>(m.start);
    pid_t owner = 0;
    std::memcpy(&owner, base + mm_fifo_pid_offset, sizeof owner);
    if (owner != creator) continue;
    // Atomic, as the fabric's sweep writes the tail (release_dead_peer_fifos) and UCX the head.
    const uint64_t head =
        std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(base + mm_fifo_head_offset)).load();
    const uint64_t tail =
        std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(base + mm_fifo_tail_offset)).load();
    return int64_t((head & ~mm_fifo_head_armed_bit) - tail);
  }
  return -1;
}

// A peer stops (SIGSTOP) while we send to it, so that its FIFO fills, and is then killed.
// Returns how many of its segments this process still maps `linger` after its loss.
int segments_left_by_a_hung_peer(bool release, std::chrono::milliseconds linger) {
  int fd = -1;
  const pid_t child = spawn_child(&fd);
  EXPECT_GT(child, 0);
  if (child <= 0) return -1;  // never signal pid -1 or 0: that is every process, or ours
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0) kill(pid, SIGKILL), waitpid(pid, nullptr, 0);
    }
  } reaper{child};
  pollfd pfd{fd, POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 20000), 1) << "child did not report its port";
  uint16_t port = 0;
  const bool reported = read(fd, &port, sizeof(port)) == static_cast<ssize_t>(sizeof(port));
  close(fd);
  EXPECT_TRUE(reported) << "child did not report its port";
  if (!reported) return -1;
  std::promise<void> down;
  FabricHandlers h;
  h.on_peer_down = [&](PeerId, const Status&) { down.set_value(); };
  UcxOptions o = test_options();
  o.release_dead_peer_fifos = release;
  o.batch_small_messages = false;  // one message per FIFO element: 64 sends fill it
  auto made = UcxFabric::create(o, std::move(h));
  EXPECT_TRUE(made.ok()) << made.status().to_string();
  if (!made.ok()) return -1;
  UcxFabric& fabric = *made.value();
  const PeerId peer = fabric.connect("127.0.0.1:" + std::to_string(port)).value();
  Envelope e;
  e.type = 1;
  e.header = std::string(200, 'h');  // past the FIFO element's inline bytes: a buffer too
  EXPECT_TRUE(fabric.send(peer, e, {}).ok());
  EXPECT_TRUE(fabric.receive(std::chrono::milliseconds(20000)).ok()) << "no echo";
  EXPECT_GT(segments_of(child), 0) << "not over shared memory: UCX_TLS?";
  EXPECT_EQ(kill(child, SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  while (!stopped(child) && std::chrono::steady_clock::now() < t0 + peer_down_ms_max)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (int i = 0; i < 300; ++i) (void)fabric.send(peer, e, {});  // 64 fill its FIFO
  while (unread_in_fifo_of(child) < 64 && std::chrono::steady_clock::now() < t0 + peer_down_ms_max)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(unread_in_fifo_of(child), 64) << "the hung peer's FIFO never filled";
  EXPECT_EQ(kill(child, SIGKILL), 0);
  EXPECT_EQ(waitpid(child, nullptr, 0), child);
  reaper.pid = 0;  // reaped
  EXPECT_EQ(down.get_future().wait_for(peer_down_ms_max), std::future_status::ready);
  const auto lost = std::chrono::steady_clock::now();
  while (segments_of(child) > 0 && std::chrono::steady_clock::now() < lost + linger)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - lost);
  std::printf("%d segment(s) of the dead peer mapped %.0f ms after its loss (release %s)\n",
              segments_of(child), ms.count(), release ? "on" : "off");
  return segments_of(child);
}

// UCX 1.13 alone keeps them: the endpoint's discard waits for room in the dead reader's
// FIFO (runtime/dead_peer_fifos.h). Shown so that the next test means something.
TEST(UcxFabricPeerDown, UcxKeepsAHungPeersFullFifoMapped) {
  ASSERT_FALSE(child_started);
  EXPECT_GT(segments_left_by_a_hung_peer(false, std::chrono::milliseconds(6000)), 0);
}

TEST(UcxFabricPeerDown, AHungPeersFullFifoIsLetGoOnceItIsDead) {
  ASSERT_FALSE(child_started);
  EXPECT_EQ(segments_left_by_a_hung_peer(true, std::chrono::milliseconds(15000)), 0);
}

// A peer killed while it writes into our shared-memory FIFO: UCX 1.13's writer claims a
// slot (moves the FIFO's head), fills it, and only then marks it ready; our reader takes the
// slots in order and waits at one not marked ready. Killed in between, the writer leaves a
// slot that never becomes ready, and nothing any other peer sends is read from then on.
// Each round kills a peer that floods us with 4 KiB messages, then asks another peer for an
// echo through the same FIFO. Without the repair (TROUPE_TEST_NO_SLOT_REPAIR=1), 2 of 3 runs
// of 400 rounds (TROUPE_TEST_MID_WRITE_ROUNDS=400) stopped receiving here (2026-12-06); with
// it, 3 of 3 went through, one after repairing a slot.
// What the receiving thread of the next test counts.
struct Tally {
  std::atomic<uint64_t> flood{0}, echoes{0};
  std::atomic<int> downs{0};
};

template <class Done>
bool wait_until(Done done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  return done();
}

// A peer floods us and is killed `delay` after 200 of its messages arrived; true if the
// echo peer is heard after its loss.
bool echo_heard_after_a_flooder_dies(UcxFabric& fabric, uint16_t port, PeerId echo_peer, Tally& t,
                                     std::chrono::microseconds delay) {
  const pid_t flooder = spawn_blaster(port);
  EXPECT_GT(flooder, 0);
  if (flooder <= 0) return false;
  const uint64_t before = t.flood.load();
  const int downs = t.downs.load();
  const bool flooded = wait_until([&] { return t.flood.load() >= before + 200; }, peer_down_ms_max);
  EXPECT_TRUE(flooded) << "the flooding peer sent nothing";
  std::this_thread::sleep_for(delay);
  kill(flooder, SIGKILL);
  waitpid(flooder, nullptr, 0);
  EXPECT_TRUE(wait_until([&] { return t.downs.load() > downs; }, peer_down_ms_max));
  const uint64_t echoed = t.echoes.load();
  Envelope ping;
  ping.type = 1;
  EXPECT_TRUE(fabric.send(echo_peer, ping, {}).ok());
  return wait_until([&] { return t.echoes.load() > echoed; }, peer_down_ms_max);
}

TEST(UcxFabricPeerDown, APeerKilledMidWriteDoesNotStopOurReceives) {
  ASSERT_FALSE(child_started);
  EchoChild echo;
  ASSERT_GT(echo.pid, 0);
  ASSERT_NE(echo.port, 0) << "child did not report its port";
  const uint16_t echo_port = echo.port;
  Tally t;
  FabricHandlers h;
  h.on_peer_down = [&](PeerId, const Status&) { t.downs.fetch_add(1); };
  UcxOptions o = test_options();
  o.repair_dead_writer_slots = std::getenv("TROUPE_TEST_NO_SLOT_REPAIR") == nullptr;
  auto made = UcxFabric::create(o, std::move(h));
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  UcxFabric& fabric = *made.value();
  const uint16_t port = fabric.listen(0).value();
  const PeerId echo_peer = fabric.connect("127.0.0.1:" + std::to_string(echo_port)).value();
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    while (!stop.load()) {
      auto m = fabric.receive(std::chrono::milliseconds(50));
      if (m.ok()) (m.value().peer == echo_peer ? t.echoes : t.flood).fetch_add(1);
    }
  });
  const char* rounds_env = std::getenv("TROUPE_TEST_MID_WRITE_ROUNDS");
  const int rounds = rounds_env != nullptr ? std::atoi(rounds_env) : 100;
  std::minstd_rand delays{uint32_t(getpid())};
  int round = 0;
  bool heard = true;
  for (; round < rounds && heard; ++round)
    heard = echo_heard_after_a_flooder_dies(fabric, port, echo_peer, t,
                                            std::chrono::microseconds(delays() % 3000));
  stop = true;
  drain.join();
  EXPECT_TRUE(heard) << "round " << round << ": a peer killed mid-write stopped our receives";
  std::printf("%d rounds, %llu slot(s) repaired\n", round,
              (unsigned long long)fabric.counters().dead_writer_slots_repaired);
}

}  // namespace
}  // namespace troupe::runtime
