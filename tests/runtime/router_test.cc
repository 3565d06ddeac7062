// The router's door (DESIGN §3): a node joins only after the mutual HMAC-SHA256 handshake
// over the job secret (run by the fabric's bootstrap); a wrong secret is refused and
// counted on both sides; garbage and messages from peers that are not bound to a node are
// rejected and counted, and the node keeps admitting honest peers afterwards.
#include "runtime/router.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <cstdlib>
#include <thread>
#include <vector>

#include "runtime/control.pb.h"
#include "runtime/host.h"
#include "runtime/wire.h"
#include "tests/runtime/raw_ucx_client.h"
#include "tests/runtime/test_hosts.h"

namespace troupe::runtime {
namespace {

using test::make_host;

constexpr auto wait_for = std::chrono::seconds(10);
const std::string good_secret = "0123456789abcdef0123456789abcdef";

RouterCounters counters(caf::scoped_actor& self, const caf::actor& router) {
  RouterCounters out;
  self->request(router, caf::infinite, counters_atom::value)
      .receive([&](const RouterCounters& c) { out = c; },
               [&](const caf::error& e) { ADD_FAILURE() << "counters: " << to_string(e); });
  return out;
}

uint16_t port_of(const Host& h) {
  const std::string a = h.listen_address();
  return uint16_t(std::stoi(a.substr(a.rfind(':') + 1)));
}

// The coordinator's side sees a join; the node's side is admitted.
void expect_join(Host& coordinator, Host& node, caf::scoped_actor& c_self) {
  caf::anon_send(node.router(), connect_atom::value, coordinator.listen_address());
  bool joined = false;
  c_self->receive(
      [&](ActorMessage& m) {
        EXPECT_EQ(m.type, uint32_t(join_type));
        control::Join j;
        ASSERT_TRUE(j.ParseFromString(m.header));
        EXPECT_EQ(j.address(), node.listen_address());  // where the node accepts connections
        EXPECT_EQ(j.pid(), uint32_t(getpid()));         // both hosts live in this process
        joined = true;
      },
      caf::after(wait_for) >> [] {});
  EXPECT_TRUE(joined) << "no join delivered to the coordinator";
}

// `node` joins `coordinator` (whose coordinator.0 is c_self) as n1 and is bound; returns once
// a heartbeat of n1's reached c_self, with `hb`, the heartbeat, for the test to send again.
void join_as_n1(Host& coordinator, Host& node, caf::scoped_actor& c_self, ActorMessage* hb) {
  caf::anon_send(node.router(), connect_atom::value, coordinator.listen_address());
  PeerId peer = peer_none;
  c_self->receive([&](ActorMessage& m) { peer = m.peer; },
                  caf::after(wait_for) >> [] { ADD_FAILURE() << "no join"; });
  ASSERT_NE(peer, peer_none);
  caf::anon_send(coordinator.router(), bind_atom::value, std::string("n1"), peer);
  caf::anon_send(coordinator.router(), address_atom::value, std::string("n1"),
                 node.listen_address());
  caf::anon_send(node.router(), node_id_atom::value, std::string("n1"));
  hb->from = "n1/agent.0", hb->to = "n0/coordinator.0", hb->type = heartbeat_type;
  bool delivered = false;  // once the node has the verdict too (it routes to n0 from then)
  for (auto until = std::chrono::steady_clock::now() + wait_for;
       !delivered && std::chrono::steady_clock::now() < until;) {
    caf::anon_send(node.router(), *hb);
    c_self->receive([&](ActorMessage&) { delivered = true; },
                    caf::after(std::chrono::milliseconds(100)) >> [] {});
  }
  ASSERT_TRUE(delivered) << "a bound node's message must arrive";
}

TEST(Router, RightSecretJoins) {
  auto coordinator = make_host("n0", good_secret);
  auto node = make_host("", good_secret);
  caf::scoped_actor c_self{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(c_self));
  expect_join(*coordinator, *node, c_self);
  // The join is delivered before the verdict goes back, and counted after it went.
  const auto deadline = std::chrono::steady_clock::now() + wait_for;
  while (coordinator->fabric().counters().handshakes_admitted < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_EQ(coordinator->fabric().counters().handshakes_admitted, 1u);
  EXPECT_EQ(coordinator->fabric().counters().handshakes_refused, 0u);
}

TEST(Router, WrongSecretIsRefusedAndCounted) {
  auto coordinator = make_host("n0", good_secret);
  auto intruder = make_host("", "a-different-secret-of-32-bytes!!");
  caf::scoped_actor c_self{coordinator->actor_system()};
  caf::scoped_actor n_self{intruder->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(c_self));
  caf::anon_send(intruder->router(), watch_atom::value, caf::actor(n_self));
  caf::anon_send(intruder->router(), connect_atom::value, coordinator->listen_address());
  std::string why;
  n_self->receive([&](node_down_atom, const std::string&, const std::string& w) { why = w; },
                  caf::after(wait_for) >> [] {});
  EXPECT_NE(why.find("wrong job secret"), std::string::npos) << why;
  EXPECT_EQ(intruder->fabric().counters().handshakes_refused, 1u);
  // The intruder found the coordinator's challenge wrong and said so (an empty proof, never
  // its MAC): the coordinator counted the refusal too.
  const auto deadline = std::chrono::steady_clock::now() + wait_for;
  while (coordinator->fabric().counters().handshakes_refused < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_EQ(coordinator->fabric().counters().handshakes_refused, 1u);
  // Nothing reached the coordinator actor.
  bool delivered = false;
  c_self->receive([&](ActorMessage&) { delivered = true; },
                  caf::after(std::chrono::milliseconds(0)) >> [] {});
  EXPECT_FALSE(delivered);
}

TEST(Router, GarbageAndUnauthenticatedMessagesAreCountedAndTheNodeKeepsWorking) {
  auto coordinator = make_host("n0", good_secret);
  caf::scoped_actor c_self{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(c_self));
  // It knows the secret and claims no node: a new node, announced to the coordinator as a
  // Join, but not bound to a node until the coordinator says so.
  RawUcxClient raw("127.0.0.1", port_of(*coordinator), good_secret);
  ASSERT_TRUE(raw.ok()) << raw.error();
  c_self->receive([&](ActorMessage& m) { EXPECT_EQ(m.type, uint32_t(join_type)); },
                  caf::after(wait_for) >> [] { ADD_FAILURE() << "no join for the raw client"; });
  Envelope e;
  e.from = "n1/worker.0";
  e.to = "n0/coordinator.0";
  e.type = control_types_end + 5;  // a role message from a peer bound to no node
  std::string valid;
  ASSERT_TRUE(encode_frame(e, {}, &valid).ok());
  ASSERT_TRUE(raw.send(7, valid.substr(0, valid.size() - 2), ""));               // truncated
  ASSERT_TRUE(raw.send(7, std::string("\x03\x00\x00\x00\xff\xff\xff", 7), ""));  // garbled
  ASSERT_TRUE(raw.send(7, valid, ""));
  const auto deadline = std::chrono::steady_clock::now() + wait_for;
  while (counters(c_self, coordinator->router()).dropped_unauthenticated < 1 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_EQ(counters(c_self, coordinator->router()).dropped_unauthenticated, 1u);
  EXPECT_EQ(coordinator->fabric().counters().rejected_malformed, 2u);
  // An honest node still joins.
  auto node = make_host("", good_secret);
  expect_join(*coordinator, *node, c_self);
}

// The next refusal a watcher hears of, or a failure.
ConnectionRefusal next_refusal(caf::scoped_actor& watcher) {
  ConnectionRefusal out;
  watcher->receive([&](refused_atom, const ConnectionRefusal& r) { out = r; },
                   caf::after(wait_for) >> [] { ADD_FAILURE() << "no refusal reported"; });
  return out;
}

TEST(Router, ARefusedConnectionIsReportedToTheRefusalWatchers) {
  auto coordinator = make_host("n0", good_secret);
  caf::scoped_actor watcher{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), refusals_atom::value, caf::actor(watcher));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port_of(*coordinator));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  const std::string garbage(64, '\xff');  // a frame longer than handshake_frame_bytes_max
  ASSERT_EQ(::write(fd, garbage.data(), garbage.size()), ssize_t(garbage.size()));
  const ConnectionRefusal r = next_refusal(watcher);
  ::close(fd);
  EXPECT_EQ(r.cause, "malformed");
  EXPECT_EQ(r.peer_address.rfind("127.0.0.1:", 0), 0u) << r.peer_address;
  EXPECT_NE(r.reason.find("handshake_frame_bytes_max"), std::string::npos) << r.reason;
  EXPECT_EQ(r.more, 0u);
}

// A node the view evicted (missed heartbeats) that wakes up and sends again: its messages
// are dropped as an evicted node's, naming the epoch, never as a stranger's.
TEST(Router, AnEvictedNodesLateMessagesAreRefusedAsEvicted) {
  auto coordinator = make_host("n0", good_secret);
  auto node = make_host("", good_secret);
  caf::scoped_actor c_self{coordinator->actor_system()};
  caf::scoped_actor watcher{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(c_self));
  caf::anon_send(coordinator->router(), refusals_atom::value, caf::actor(watcher));
  ActorMessage hb;
  join_as_n1(*coordinator, *node, c_self, &hb);
  if (testing::Test::HasFatalFailure()) return;
  for (bool more = true; more;) {  // the retries' copies, delivered before the eviction
    more = false;
    c_self->receive([&](ActorMessage&) { more = true; },
                    caf::after(std::chrono::milliseconds(200)) >> [] {});
  }
  caf::anon_send(coordinator->router(), evict_atom::value, std::string("n1"), uint64_t{7});
  counters(c_self, coordinator->router());  // the eviction is in effect from here
  caf::anon_send(node->router(), hb);
  const ConnectionRefusal r = next_refusal(watcher);
  EXPECT_EQ(r.cause, "evicted");
  EXPECT_EQ(r.node, "n1");
  EXPECT_EQ(r.evicted_epoch, 7u);
  EXPECT_EQ(r.peer_address, node->listen_address());
  EXPECT_NE(r.reason.find("evicted at epoch 7"), std::string::npos) << r.reason;
  EXPECT_EQ(r.reason.find("unauthenticated"), std::string::npos) << r.reason;
  const RouterCounters c = counters(c_self, coordinator->router());
  EXPECT_EQ(c.dropped_evicted, 1u);
  EXPECT_EQ(c.dropped_unauthenticated, 0u);
  bool delivered = false;
  c_self->receive([&](ActorMessage&) { delivered = true; },
                  caf::after(std::chrono::milliseconds(0)) >> [] {});
  EXPECT_FALSE(delivered) << "an evicted node's message reached the coordinator";
}

// A role still starting (a rollout registers from its own thread): what is sent to it
// before it registers waits, in order, and is delivered when it does; what no one claims
// within the wait is dropped and counted.
TEST(Router, MessagesForANameNotRegisteredYetWaitForIt) {
  auto host = make_host("n0", good_secret);
  RouterConfig rc;
  rc.fabric = &host->fabric();
  rc.node_id = "n0";
  rc.unclaimed_wait_ms = std::chrono::milliseconds(300);
  caf::actor router = spawn_router(host->actor_system(), rc);
  caf::scoped_actor self{host->actor_system()};
  for (uint32_t type : {11u, 12u, 13u}) {
    ActorMessage m;
    m.from = "n0/coordinator.0", m.to = "n0/rollout.0", m.type = type;
    caf::anon_send(router, m);
  }
  ActorMessage lost;
  lost.from = "n0/coordinator.0", lost.to = "n0/nobody.0", lost.type = 14;
  caf::anon_send(router, lost);
  counters(self, router);  // all four are held from here
  caf::anon_send(router, register_atom::value, std::string("rollout.0"), caf::actor(self));
  std::vector<uint32_t> got;
  for (int i = 0; i < 3; ++i)
    self->receive([&](ActorMessage& m) { got.push_back(m.type); },
                  caf::after(wait_for) >> [&] { ADD_FAILURE() << "a held message was lost"; });
  EXPECT_EQ(got, (std::vector<uint32_t>{11, 12, 13}));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // past the wait
  const RouterCounters c = counters(self, router);
  EXPECT_EQ(c.held_unclaimed, 3u);
  EXPECT_EQ(c.delivered_local, 3u);
  EXPECT_EQ(c.dropped_no_actor, 1u) << "the message no one claimed must be dropped after the wait";
  caf::anon_send(router, register_atom::value, std::string("nobody.0"), caf::actor(self));
  bool late = false;
  self->receive([&](ActorMessage&) { late = true; },
                caf::after(std::chrono::milliseconds(200)) >> [] {});
  EXPECT_FALSE(late) << "a message dropped after its wait was still delivered";
  caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
}

// The fabric thread's shortcut past the router (direct_inbound.h): a bound node's messages
// to a registered name go straight to the actor, and a name that registers while a node's
// messages stream to it gets them all, in the order sent: those held for it first, none
// overtaken by one that took the shortcut.
TEST(Router, ANodesMessagesKeepTheirOrderWhenTheirNameRegistersMidStream) {
  auto coordinator = make_host("n0", good_secret);
  auto node = make_host("", good_secret);
  caf::scoped_actor c_self{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(c_self));
  ActorMessage hb;
  join_as_n1(*coordinator, *node, c_self, &hb);
  if (testing::Test::HasFatalFailure()) return;
  for (bool more = true; more;) {  // the retries' copies
    more = false;
    c_self->receive([&](ActorMessage&) { more = true; },
                    caf::after(std::chrono::milliseconds(200)) >> [] {});
  }
  const uint64_t received_before = counters(c_self, coordinator->router()).received_remote;
  // 1000 messages before the name registers (held), 3000 racing its registration, 100 after.
  constexpr int before = 1000, racing = 3000, after = 100, count = before + racing + after;
  auto send = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      ActorMessage m;
      m.from = "n1/agent.0", m.to = "n0/late.0", m.type = 100, m.header = std::to_string(i);
      caf::anon_send(node->router(), std::move(m));
    }
  };
  send(0, before);
  for (auto until = std::chrono::steady_clock::now() + wait_for;
       counters(c_self, coordinator->router()).received_remote < received_before + before &&
       std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread sender([&] { send(before, before + racing); });
  caf::scoped_actor late{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("late.0"),
                 caf::actor(late));
  std::vector<int> got;
  auto take = [&](int n) {
    for (int i = 0; i < n; ++i) {
      bool ok = false;
      late->receive([&](ActorMessage& m) { ok = true, got.push_back(std::stoi(m.header)); },
                    caf::after(wait_for) >> [] {});
      if (!ok) return;
    }
  };
  take(before + racing);
  sender.join();
  send(before + racing, count);  // the router is idle now: these take the shortcut
  take(after);
  ASSERT_EQ(got.size(), size_t(count)) << "messages were lost";
  for (int i = 0; i < count; ++i) ASSERT_EQ(got[size_t(i)], i) << "out of order at " << i;
  const RouterCounters c = counters(c_self, coordinator->router());
  EXPECT_GE(c.held_unclaimed, uint64_t(before));
  EXPECT_GE(c.delivered_direct, uint64_t(after)) << "the shortcut was not taken";
  EXPECT_EQ(c.dropped_no_actor, 0u);
}

TEST(Router, ABadProgressSpinIsRefusedByName) {
  for (const char* name : {"TROUPE_PROGRESS_SPIN_US", "TROUPE_PROGRESS_SPIN_US_MAX"}) {
    for (const char* bad : {"abc", "12x", "-5", "2000000"}) {
      ::setenv(name, bad, 1);
      HostOptions o;
      o.secret = "s";
      Result<std::unique_ptr<Host>> h = Host::create(o);
      ::unsetenv(name);
      ASSERT_FALSE(h.ok()) << name << "=" << bad;
      EXPECT_NE(h.status().to_string().find(std::string(name) + "=" + bad + ": give microseconds"),
                std::string::npos)
          << h.status().to_string();
    }
  }
  ::setenv("TROUPE_PROGRESS_SPIN_US", "20", 1);  // what troupe launch sets on a busy host
  ::setenv("TROUPE_PROGRESS_SPIN_US_MAX", "20", 1);
  std::unique_ptr<Host> h = test::make_host("n1", "s");
  ::unsetenv("TROUPE_PROGRESS_SPIN_US");
  ::unsetenv("TROUPE_PROGRESS_SPIN_US_MAX");
  EXPECT_TRUE(h->fabric_thread_lent());
}

TEST(Router, AnUnknownSchedulerPolicyIsRefusedByName) {
  ::setenv("TROUPE_CAF_POLICY", "fast", 1);
  Result<std::unique_ptr<Host>> h = Host::create(HostOptions{});
  ::unsetenv("TROUPE_CAF_POLICY");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().to_string().find("TROUPE_CAF_POLICY=fast: not a scheduler policy"),
            std::string::npos)
      << h.status().to_string();
  ::setenv("TROUPE_CAF_POLICY", "sharing", 1);
  std::unique_ptr<Host> sharing = test::make_host("n1", "s");
  ::unsetenv("TROUPE_CAF_POLICY");
  EXPECT_FALSE(sharing->fabric_thread_lent());
  EXPECT_TRUE(test::make_host("n2", "s")->fabric_thread_lent());  // unset: lent, the default
}

TEST(Router, AddressesParse) {
  Address a;
  ASSERT_TRUE(parse_address("n3/worker.2", &a));
  EXPECT_EQ(a.node, "n3");
  EXPECT_EQ(a.role, "worker");
  EXPECT_EQ(a.index, 2);
  EXPECT_EQ(make_address("n1", "expert", 7), "n1/expert.7");
  for (const char* bad : {"", "n3", "n3/worker", "/worker.1", "n3/.1", "n3/worker.", "n3/w.x1"})
    EXPECT_FALSE(parse_address(bad, &a)) << bad;
}

}  // namespace
}  // namespace troupe::runtime
