// The lent scheduler (runtime/lent_scheduler.h): a thread that lends itself runs actors'
// messages on itself; once it steps aside, CAF's own worker runs them; a system with another
// scheduler gets no guest. And a UcxFabric with a guest: the guest runs on the progress
// thread, its sends may go past the window without being refused, and a link keeps its order
// when its sender moves between another thread and the progress thread.
#include "runtime/lent_scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <caf/all.hpp>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/ucx_fabric.h"

namespace troupe::runtime {
namespace {

using namespace std::chrono_literals;
constexpr auto wait_max = 20s;  // generous: the machine is shared and loaded

caf::actor_system_config& lent_config(caf::actor_system_config& config) {
  config.set("scheduler.max-threads", 1);
  config.set("logger.console", caf::atom("none"));
  use_lent_scheduler(config);
  return config;
}

// Replies to every message with the id of the thread that handled it.
caf::behavior thread_teller(caf::event_based_actor*) {
  return {[](int) { return std::hash<std::thread::id>()(std::this_thread::get_id()); }};
}

size_t ask_thread(caf::actor_system& system, const caf::actor& a, FabricGuest* lent) {
  caf::scoped_actor self{system};
  self->send(a, 1);
  if (lent != nullptr) {  // this thread plays the fabric's: it polls until the job ran
    const auto deadline = std::chrono::steady_clock::now() + wait_max;
    while (!lent->run() && std::chrono::steady_clock::now() < deadline) {
    }
  }
  size_t id = 0;
  self->receive([&](size_t t) { id = t; }, caf::after(wait_max) >> [] {});
  return id;
}

TEST(LentScheduler, ALentThreadRunsActorsUntilItStepsAside) {
  caf::actor_system_config config;
  caf::actor_system system{lent_config(config)};
  std::shared_ptr<FabricGuest> guest = make_scheduler_guest(system);
  ASSERT_NE(guest, nullptr);
  const caf::actor a = system.spawn(thread_teller);
  // CAF's one worker is held in a handler, so only this thread can run `a` meanwhile.
  std::promise<void> held, release;
  std::shared_future<void> released = release.get_future().share();
  const caf::actor holder = system.spawn([&](caf::event_based_actor*) -> caf::behavior {
    return {[&, released](int) {
      held.set_value();
      released.wait();
    }};
  });
  caf::anon_send(holder, 1);
  held.get_future().wait();
  const size_t here = std::hash<std::thread::id>()(std::this_thread::get_id());
  guest->step_in();
  EXPECT_EQ(ask_thread(system, a, guest.get()), here);
  EXPECT_EQ(ask_thread(system, a, guest.get()), here);
  release.set_value();
  guest->step_aside();  // CAF's worker runs it now, woken by the enqueue
  const size_t there = ask_thread(system, a, nullptr);
  EXPECT_NE(there, 0u);
  EXPECT_NE(there, here);
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(holder, caf::exit_reason::user_shutdown);
}

TEST(LentScheduler, AJobWaitingForALentThreadGoesToAWorkerWhenItStepsAside) {
  caf::actor_system_config config;
  caf::actor_system system{lent_config(config)};
  std::shared_ptr<FabricGuest> guest = make_scheduler_guest(system);
  ASSERT_NE(guest, nullptr);
  const caf::actor a = system.spawn(thread_teller);
  guest->step_in();
  caf::scoped_actor self{system};
  self->send(a, 1);  // waits for this thread, which does not run it
  guest->step_aside();
  size_t id = 0;
  self->receive([&](size_t t) { id = t; }, caf::after(wait_max) >> [] {});
  EXPECT_NE(id, 0u);
  EXPECT_NE(id, std::hash<std::thread::id>()(std::this_thread::get_id()));
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

TEST(LentScheduler, NoGuestForAnotherScheduler) {
  caf::actor_system_config config;
  config.set("scheduler.policy", caf::atom("sharing"));
  config.set("scheduler.max-threads", 1);
  config.set("logger.console", caf::atom("none"));
  caf::actor_system system{config};
  EXPECT_EQ(make_scheduler_guest(system), nullptr);
}

// ---- a UcxFabric lending its thread ----

const std::string test_secret = "lent-scheduler-test-secret-0123456789";

Envelope numbered(uint32_t type, uint64_t n) {
  Envelope e;
  e.from = "n1/test.0";
  e.to = "n2/test.0";
  e.type = type;
  e.header = std::to_string(n);
  return e;
}

// Sends `burst` messages each time run() is called with a burst pending, from the thread
// that calls run(): the fabric's.
struct SendingGuest final : FabricGuest {
  Fabric* fabric = nullptr;
  PeerId peer = peer_none;
  std::atomic<uint64_t> next{0}, burst_end{0};
  std::atomic<uint64_t> refused{0}, ran_here{0};
  std::thread::id fabric_thread;
  std::atomic<bool> in{false};
  bool run() override {
    const uint64_t end = burst_end.load();
    if (next.load() >= end) return false;
    // Only in a run that sends: its next.fetch_add orders this write before the test's read
    // (TSan found the write in every idle run racing with it).
    fabric_thread = std::this_thread::get_id();
    while (next.load() < end) {
      if (!fabric->send(peer, numbered(1, next.load()), {}).ok()) ++refused;
      next.fetch_add(1);
    }
    ++ran_here;
    return true;
  }
  void step_in() override { in = true; }
  void step_aside() override { in = false; }
};

TEST(LentScheduler, AFabricGuestSendsPastTheWindowAndTheLinkKeepsItsOrder) {
  auto guest = std::make_shared<SendingGuest>();
  FabricHandlers gh;
  gh.guest = guest;
  UcxOptions o;
  o.secret = test_secret;
  auto server = UcxFabric::create(o, {});
  auto client = UcxFabric::create(o, gh);
  ASSERT_TRUE(server.ok() && client.ok());
  auto port = server.value()->listen(0);
  ASSERT_TRUE(port.ok());
  auto peer = client.value()->connect("127.0.0.1:" + std::to_string(port.value()));
  ASSERT_TRUE(peer.ok());
  guest->fabric = client.value().get();
  guest->peer = peer.value();
  uint64_t sent = 0;
  auto from_here = [&](uint64_t n) {  // queued for the fabric's thread, not yet sent
    for (uint64_t end = sent + n; sent < end; ++sent)
      ASSERT_TRUE(client.value()->send(peer.value(), numbered(1, sent), {}).ok());
  };
  auto from_guest = [&](uint64_t n) {
    guest->next = sent;
    guest->burst_end = sent + n;
    const auto deadline = std::chrono::steady_clock::now() + wait_max;
    while (guest->next.load() < sent + n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    sent += n;
    ASSERT_EQ(guest->next.load(), sent);
  };
  // One sender moving between this thread and the fabric's, and one run of the guest that
  // sends more than the window holds (with none in flight when it starts).
  for (int round = 0; round < 3; ++round) {
    from_here(100);
    from_guest(100);
  }
  ASSERT_TRUE(client.value()->flush(wait_max).ok());
  from_guest(inflight_messages_max + 1);
  from_here(100);
  from_guest(100);
  EXPECT_EQ(guest->refused.load(), 0u);
  EXPECT_NE(guest->fabric_thread, std::this_thread::get_id());
  for (uint64_t n = 0; n < sent; ++n) {
    auto m = server.value()->receive(wait_max);
    ASSERT_TRUE(m.ok()) << "message " << n << ": " << m.status().to_string();
    ASSERT_EQ(m.value().envelope.header, std::to_string(n));
  }
  EXPECT_TRUE(client.value()->flush(wait_max).ok());
}

}  // namespace
}  // namespace troupe::runtime
