// The router's door (DESIGN §3): a node joins only after the mutual HMAC-SHA256 handshake
// over the job secret (run by the fabric's bootstrap); a wrong secret is refused and
// counted on both sides; garbage and messages from peers that are not bound to a node are
// rejected and counted, and the node keeps admitting honest peers afterwards.
#include "runtime/router.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <caf/all.hpp>

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
