// The node agent's join: a coordinator that admits the connection but never welcomes the
// node (still starting, or not a troupe coordinator) must not leave `troupe node` waiting
// forever: the agent gives up after join_timeout with status 1 and says why. A node told it
// was evicted exits with its own status (runtime/exit_status.h).
#include "runtime/node_agent.h"

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <future>

#include "runtime/control.pb.h"
#include "runtime/router.h"
#include "tests/runtime/test_hosts.h"

namespace troupe::runtime {
namespace {

using test::make_host;

const std::string secret = "0123456789abcdef0123456789abcdef";

TEST(NodeAgent, GivesUpWhenNoWelcomeComes) {
  auto coordinator = make_host("n0", secret);
  auto node = make_host("", secret);
  // A silent coordinator: it receives the join and never answers.
  caf::scoped_actor silent{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(silent));
  std::promise<std::pair<int, std::string>> exited;
  NodeAgentOptions o;
  o.coordinator_address = coordinator->listen_address();
  o.join_timeout = std::chrono::milliseconds(200);
  o.on_exit = [&](int code, const std::string& why) { exited.set_value({code, why}); };
  spawn_node_agent(*node, o);
  bool joined = false;
  silent->receive([&](ActorMessage& m) { joined = m.type == join_type; },
                  caf::after(std::chrono::seconds(10)) >> [] {});
  EXPECT_TRUE(joined) << "the handshake did not complete";
  auto done = exited.get_future();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the agent is still waiting 10 s after a 200 ms join timeout";
  const auto [code, why] = done.get();
  EXPECT_EQ(code, 1);
  EXPECT_NE(why.find("no welcome within 200 ms"), std::string::npos) << why;
}

// A coordinator that says this node was evicted (a Shutdown with the epoch that dropped it):
// the node leaves with exit_status_evicted, not 0, so that launch replaces it.
TEST(NodeAgent, AnEvictedNodeExitsWithItsOwnStatus) {
  auto coordinator = make_host("n0", secret);
  auto node = make_host("", secret);
  caf::scoped_actor c_self{coordinator->actor_system()};
  caf::anon_send(coordinator->router(), register_atom::value, std::string("coordinator.0"),
                 caf::actor(c_self));
  std::promise<std::pair<int, std::string>> exited;
  NodeAgentOptions o;
  o.coordinator_address = coordinator->listen_address();
  o.on_exit = [&](int code, const std::string& why) { exited.set_value({code, why}); };
  spawn_node_agent(*node, o);
  PeerId peer = peer_none;
  c_self->receive([&](ActorMessage& m) { peer = m.type == join_type ? m.peer : peer_none; },
                  caf::after(std::chrono::seconds(10)) >> [] {});
  ASSERT_NE(peer, peer_none) << "the handshake did not complete";
  control::Shutdown sd;
  sd.set_reason("this node was declared lost; the job goes on without it");
  sd.set_evicted_epoch(5);
  ActorMessage m;
  m.peer = peer, m.from = "n0/coordinator.0", m.to = "agent.0", m.type = shutdown_type;
  m.header = sd.SerializeAsString();
  caf::anon_send(coordinator->router(), std::move(m));
  auto done = exited.get_future();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const auto [code, why] = done.get();
  EXPECT_EQ(code, exit_status_evicted);
  EXPECT_NE(code, 0);
  EXPECT_NE(why.find("evicted at epoch 5: this node was declared lost"), std::string::npos) << why;
}

}  // namespace
}  // namespace troupe::runtime
