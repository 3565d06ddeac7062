// chaos::FaultyFabric over a fake inner fabric: each action does what docs/chaos.md says, the
// selectors pick the right messages, the same seed makes the same decisions, the probability
// holds, every `done` runs exactly once, and no rule means untouched passthrough.
#include "chaos/faulty_fabric.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include "actors/protocol.h"
#include "actors/train.pb.h"
#include "tests/chaos/fake_fabric.h"

namespace troupe::chaos {
namespace {

using testing::FakeFabric;
using namespace std::chrono_literals;

FaultPlan plan_of(const std::string& toml) {
  auto plan = parse_fault_plan(toml, "test.toml");
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  return plan.ok() ? std::move(plan).value() : FaultPlan{};
}

// The decorator over a FakeFabric, with a clock and a step the test moves.
struct Rig {
  explicit Rig(const std::string& toml, const std::string& node = "n1") {
    FaultyFabricOptions o;
    o.now = [this] { return clock; };
    o.step = [this] { return step.load(); };
    fabric = std::make_unique<FaultyFabric>(std::make_unique<FakeFabric>(log), plan_of(toml),
                                            nullptr, o);
    fabric->set_node_id(node);
  }
  // Sends one message of `type` to `to` with the one payload `data`; counts its `done` calls.
  runtime::Status send(const std::string& to, uint32_t type, const std::vector<std::byte>& data,
                       std::string header = "") {
    runtime::Envelope e;
    e.from = "n1/worker.0", e.to = to + "/worker.0", e.type = type, e.header = std::move(header);
    const std::span<const std::byte> p(data.data(), data.size());
    return fabric->send(1, e, std::span(&p, 1), [this](const runtime::Status& st) {
      ++done_calls;
      if (!st.ok()) last_error = st.code();
    });
  }
  std::atomic<int64_t> step{0};
  std::chrono::steady_clock::time_point clock = std::chrono::steady_clock::now();
  std::shared_ptr<FakeFabric::Log> log = std::make_shared<FakeFabric::Log>();
  std::unique_ptr<FaultyFabric> fabric;
  std::atomic<int> done_calls{0};
  std::atomic<runtime::Code> last_error{runtime::Code::ok};
};

const std::vector<std::byte> bytes16(16, std::byte{7});
constexpr uint32_t grads = actors::grad_slices_type;

TEST(FaultyFabric, NoRulePassesThroughUntouchedWithoutCopy) {
  Rig r("seed = 3\n");
  ASSERT_TRUE(r.send("n2", grads, bytes16, "hdr").ok());
  ASSERT_EQ(r.log->size(), 1u);
  EXPECT_EQ(r.log->sent[0].spans[0].data(), bytes16.data());  // the caller's memory, not a copy
  EXPECT_EQ(r.log->sent[0].envelope.header, "hdr");
  EXPECT_EQ(r.log->node_id, "n1");  // set_node_id reaches the wrapped fabric
  EXPECT_EQ(r.done_calls, 0);       // `done` is the wrapped fabric's to run
  r.log->complete(0);
  EXPECT_EQ(r.done_calls, 1);
}

TEST(FaultyFabric, UnmatchedMessagesPassAndAreCounted) {
  Rig r("[[rule]]\naction = \"drop\"\ntypes = [\"Recover\"]\n");
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());
  EXPECT_EQ(r.log->size(), 1u);
  EXPECT_EQ(r.fabric->fault_counters().passed, 1u);
  EXPECT_EQ(r.fabric->fault_counters().dropped, 0u);
}

TEST(FaultyFabric, DropSendsNothingAndRunsDoneOnce) {
  Rig r("[[rule]]\naction = \"drop\"\n");
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());  // the sender cannot tell
  EXPECT_EQ(r.log->size(), 0u);
  EXPECT_EQ(r.done_calls, 1);
  EXPECT_EQ(r.fabric->fault_counters().dropped, 1u);
}

TEST(FaultyFabric, DelayHoldsTheCallersMemoryAndDelaysDone) {
  Rig r("[[rule]]\naction = \"delay\"\ndelay_ms = 60\n");
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());
  EXPECT_EQ(r.log->size(), 0u);
  EXPECT_EQ(r.done_calls, 0);  // the caller keeps its payload until the held message went out
  ASSERT_TRUE(r.fabric->flush(2000ms).ok());
  ASSERT_EQ(r.log->size(), 1u);
  EXPECT_GE(r.log->sent[0].at - t0, 60ms);
  EXPECT_EQ(r.log->sent[0].spans[0].data(), bytes16.data());
  r.log->complete(0);
  EXPECT_EQ(r.done_calls, 1);
  EXPECT_EQ(r.fabric->fault_counters().delayed, 1u);
}

TEST(FaultyFabric, EqualDelaysKeepTheirOrder) {
  Rig r("[[rule]]\naction = \"delay\"\ndelay_ms = 20\n");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(r.send("n2", grads, bytes16, std::to_string(i)).ok());
  ASSERT_TRUE(r.fabric->flush(2000ms).ok());
  ASSERT_EQ(r.log->size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(r.log->sent[size_t(i)].envelope.header, std::to_string(i));
}

TEST(FaultyFabric, ReorderLetsLaterMessagesOvertake) {
  Rig r("seed = 5\n[[rule]]\naction = \"reorder\"\ndelay_ms = 100\n");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(r.send("n2", grads, bytes16, std::to_string(i)).ok());
  ASSERT_TRUE(r.fabric->flush(2000ms).ok());
  ASSERT_EQ(r.log->size(), 20u);
  std::vector<int> order;
  for (const auto& m : r.log->sent) order.push_back(std::stoi(m.envelope.header));
  EXPECT_FALSE(std::is_sorted(order.begin(), order.end()));  // 1 in 20! if holds were random
  std::sort(order.begin(), order.end());
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[size_t(i)], i);  // every one, once
  EXPECT_EQ(r.fabric->fault_counters().reordered, 20u);
}

TEST(FaultyFabric, SlowSerializesTheLinkPerMessage) {
  Rig r("[[rule]]\naction = \"slow\"\ndelay_ms = 15\nto = [\"n2\"]\n");
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(r.send("n2", grads, bytes16, std::to_string(i)).ok());
  ASSERT_TRUE(r.send("n3", grads, bytes16, "other link").ok());
  EXPECT_EQ(r.log->size(), 1u);  // the other link is not slowed
  ASSERT_TRUE(r.fabric->flush(2000ms).ok());
  ASSERT_EQ(r.log->size(), 6u);
  EXPECT_GE(r.log->sent.back().at - t0, 5 * 15ms);  // one after the other, not all at 15 ms
  EXPECT_EQ(r.log->sent.back().envelope.header, "4");
}

TEST(FaultyFabric, DuplicateSendsTwiceAndRunsDoneOnceAfterBoth) {
  Rig r("[[rule]]\naction = \"duplicate\"\n");
  ASSERT_TRUE(r.send("n2", grads, bytes16, "x").ok());
  ASSERT_EQ(r.log->size(), 2u);
  EXPECT_EQ(r.log->sent[0].envelope.header, r.log->sent[1].envelope.header);
  r.log->complete(1);
  EXPECT_EQ(r.done_calls, 0);  // the caller's memory is still being sent
  r.log->complete(0);
  EXPECT_EQ(r.done_calls, 1);
}

TEST(FaultyFabric, CorruptHeaderIsRefusedByTheDecoder) {
  Rig r("seed = 9\n[[rule]]\naction = \"corrupt\"\n");
  for (int64_t step = 0; step < 50; ++step) {
    train::StepBegin b;
    b.set_step(step * 7919);
    b.set_kind(train::TRAIN);
    ASSERT_TRUE(r.send("n2", actors::step_begin_type, bytes16, b.SerializeAsString()).ok());
    train::StepBegin got;
    EXPECT_FALSE(got.ParseFromString(r.log->sent.back().envelope.header)) << "step " << step;
  }
  EXPECT_EQ(r.log->sent[0].bytes[0], bytes16);  // the payload is left alone
  EXPECT_EQ(r.fabric->fault_counters().corrupted, 50u);
}

TEST(FaultyFabric, CorruptPayloadFlipsOneByteOfACopy) {
  Rig r("[[rule]]\naction = \"corrupt\"\ntarget = \"payload\"\ntypes = [\"StateTransfer\"]\n");
  const std::vector<std::byte> data(4096, std::byte{0x55});
  ASSERT_TRUE(r.send("n2", actors::state_transfer_type, data).ok());
  ASSERT_EQ(r.log->size(), 1u);
  const auto& sent = r.log->sent[0];
  EXPECT_NE(sent.spans[0].data(), data.data());  // a copy: the caller's memory is never written
  EXPECT_TRUE(
      std::all_of(data.begin(), data.end(), [](std::byte b) { return b == std::byte{0x55}; }));
  size_t differ = 0;
  for (size_t i = 0; i < data.size(); ++i) differ += sent.bytes[0][i] != data[i];
  EXPECT_EQ(differ, 1u);
  r.log->complete(0);
  EXPECT_EQ(r.done_calls, 1);
  // A transfer without payload bytes has nothing to flip: it passes whole (its header
  // flipped instead would make it a lost message, which its receiver cannot ask again).
  ASSERT_TRUE(r.send("n2", actors::state_transfer_type, {}, "hdr").ok());
  ASSERT_EQ(r.log->size(), 2u);
  EXPECT_EQ(r.log->sent[1].envelope.header, "hdr");
  EXPECT_EQ(r.fabric->fault_counters().corrupted, 1u);
  EXPECT_EQ(r.fabric->fault_counters().passed, 1u);
}

TEST(FaultyFabric, PartitionDropsBetweenGroupsBothWays) {
  const std::string plan =
      "[[rule]]\naction = \"partition\"\ngroups = [[\"n1\"], [\"n0\", \"n2\"]]\n";
  Rig minority(plan, "n1"), majority(plan, "n2");
  ASSERT_TRUE(minority.send("n0", grads, bytes16).ok());
  ASSERT_TRUE(minority.send("n2", grads, bytes16).ok());
  ASSERT_TRUE(minority.send("n3", grads, bytes16).ok());  // in no group: not partitioned
  EXPECT_EQ(minority.log->size(), 1u);
  EXPECT_EQ(minority.fabric->fault_counters().partitioned, 2u);
  ASSERT_TRUE(majority.send("n1", grads, bytes16).ok());
  ASSERT_TRUE(majority.send("n0", grads, bytes16).ok());  // the same group
  EXPECT_EQ(majority.log->size(), 1u);
  EXPECT_EQ(majority.log->sent[0].envelope.to, "n0/worker.0");
}

TEST(FaultyFabric, LinksAndTypesSelect) {
  Rig r("[[rule]]\naction = \"drop\"\nfrom = [\"n1\"]\nto = [\"n3\"]\ntypes = [\"GradSlices\"]\n");
  ASSERT_TRUE(r.send("n3", grads, bytes16).ok());               // dropped
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());               // another receiver
  ASSERT_TRUE(r.send("n3", actors::apply_type, bytes16).ok());  // another type
  EXPECT_EQ(r.log->size(), 2u);
  Rig other("[[rule]]\naction = \"drop\"\nfrom = [\"n1\"]\n", "n2");  // another sender
  ASSERT_TRUE(other.send("n3", grads, bytes16).ok());
  EXPECT_EQ(other.log->size(), 1u);
}

TEST(FaultyFabric, AnAddressWithoutANodeIsNamedByThePeersHandshake) {
  auto log = std::make_shared<FakeFabric::Log>();
  auto names = std::make_shared<PeerNames>();
  int ups = 0;
  runtime::FabricHandlers handlers;
  handlers.on_peer_up = [&](runtime::PeerId, const runtime::PeerInfo&) { ++ups; };
  const runtime::FabricHandlers learning = PeerNames::learning(handlers, names);
  learning.on_peer_up(5, runtime::PeerInfo{"n0", "", 0, false, ""});
  EXPECT_EQ(ups, 1);  // the Host's handler still runs
  FaultyFabric f(std::make_unique<FakeFabric>(log),
                 plan_of("[[rule]]\naction = \"drop\"\nto = [\"coordinator\"]\n"), names);
  runtime::Envelope e;
  e.to = "coordinator.0";  // no node part: the peer it goes to says who it is
  ASSERT_TRUE(f.send(5, e, {}, {}).ok());
  ASSERT_TRUE(f.send(6, e, {}, {}).ok());  // a peer that named no node: not n0
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ(log->sent[0].peer, 6u);
}

TEST(FaultyFabric, StepWindowIsInclusive) {
  Rig r("[[rule]]\naction = \"drop\"\nsteps = [3, 4]\n");
  for (int64_t s : {2, 3, 4, 5}) {
    r.step = s;
    ASSERT_TRUE(r.send("n2", grads, bytes16, std::to_string(s)).ok());
  }
  ASSERT_EQ(r.log->size(), 2u);
  EXPECT_EQ(r.log->sent[0].envelope.header, "2");
  EXPECT_EQ(r.log->sent[1].envelope.header, "5");
}

TEST(FaultyFabric, TimeWindowIsHalfOpen) {
  Rig r("[[rule]]\naction = \"drop\"\nafter_ms = 100\nfor_ms = 50\n");
  const auto start = r.clock;
  for (int ms : {0, 99, 100, 149, 150, 400}) {
    r.clock = start + std::chrono::milliseconds(ms);
    ASSERT_TRUE(r.send("n2", grads, bytes16, std::to_string(ms)).ok());
  }
  std::vector<std::string> passed;
  for (const auto& m : r.log->sent) passed.push_back(m.envelope.header);
  EXPECT_EQ(passed, (std::vector<std::string>{"0", "99", "150", "400"}));
}

TEST(FaultyFabric, LastsFromTheFirstMessageItActedOn) {
  Rig r("[[rule]]\naction = \"drop\"\nsteps = [3, 9]\nlasts_ms = 100\n");
  const auto start = r.clock;
  const auto at = [&](int64_t step, int ms) {
    r.step = step;
    r.clock = start + std::chrono::milliseconds(ms);
    EXPECT_TRUE(r.send("n2", grads, bytes16, std::to_string(ms)).ok());
  };
  at(2, 0);     // before its steps: passes, and does not start the clock
  at(3, 1000);  // the first it acts on
  at(3, 1099);  // dropped
  at(4, 1100);  // healed
  at(5, 5000);  // still healed
  std::vector<std::string> passed;
  for (const auto& m : r.log->sent) passed.push_back(m.envelope.header);
  EXPECT_EQ(passed, (std::vector<std::string>{"0", "1100", "5000"}));
}

// A rule with a switch_file acts only while the file exists, as this process last saw it: it
// looks again once switch_poll_ms passed on the plan's clock (what `troupe chaos run` uses
// to start and end a fault in every process at once, at an event).
TEST(FaultyFabric, ASwitchedRuleActsWhileItsFileExists) {
  const std::string file = ::testing::TempDir() + "/troupe-switch-test";
  std::remove(file.c_str());
  Rig r(fmt::format("[[rule]]\naction = \"drop\"\nswitch_file = \"{}\"\n", file));
  const auto start = r.clock;
  std::vector<std::string> passed_when;
  const auto at = [&](int ms) {
    r.clock = start + std::chrono::milliseconds(ms);
    EXPECT_TRUE(r.send("n2", grads, bytes16, std::to_string(ms)).ok());
  };
  at(0);                          // no file: passes
  std::ofstream(file) << "on\n";  // switched on; seen at the next look
  at(switch_poll_ms - 1);         // still the old look: passes
  at(switch_poll_ms);             // looked again: dropped
  at(2 * switch_poll_ms + 1);     // dropped
  std::remove(file.c_str());
  at(2 * switch_poll_ms + 2);  // not looked again yet: dropped
  at(4 * switch_poll_ms);      // off
  for (const auto& m : r.log->sent) passed_when.push_back(m.envelope.header);
  EXPECT_EQ(passed_when, (std::vector<std::string>{"0", std::to_string(switch_poll_ms - 1),
                                                   std::to_string(4 * switch_poll_ms)}));
  EXPECT_EQ(r.fabric->fault_counters().dropped, 3u);
}

// Which of n messages a probability-p drop rule drops, for a seed and node id.
std::vector<int> dropped_of(uint64_t seed, const std::string& node, int n, double p) {
  Rig r(fmt::format("seed = {}\n[[rule]]\naction = \"drop\"\nprobability = {}\n", seed, p), node);
  std::vector<int> dropped;
  for (int i = 0; i < n; ++i) {
    const size_t before = r.log->size();
    EXPECT_TRUE(r.send(i % 2 ? "n2" : "n3", grads, bytes16).ok());
    if (r.log->size() == before) dropped.push_back(i);
  }
  return dropped;
}

TEST(FaultyFabric, SameSeedSameDecisionsOtherSeedOrNodeOthers) {
  const auto a = dropped_of(42, "n1", 400, 0.5);
  EXPECT_EQ(a, dropped_of(42, "n1", 400, 0.5));
  EXPECT_NE(a, dropped_of(43, "n1", 400, 0.5));
  EXPECT_NE(a, dropped_of(42, "n2", 400, 0.5));  // the node id is mixed in
}

TEST(FaultyFabric, ProbabilityHoldsStatistically) {
  const int n = 20000;
  for (double p : {0.05, 0.3, 0.9}) {
    const double got = double(dropped_of(7, "n1", n, p).size()) / n;
    // 6 standard deviations of a binomial: fails by chance about once in 10^9 runs.
    EXPECT_NEAR(got, p, 6 * std::sqrt(p * (1 - p) / n)) << "p = " << p;
  }
  EXPECT_TRUE(dropped_of(7, "n1", 1000, 0.0).empty());
}

TEST(FaultyFabric, HeldMessagesCompleteWithClosedWhenTheFabricCloses) {
  Rig r("[[rule]]\naction = \"delay\"\ndelay_ms = 60000\n");
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());
  r.fabric.reset();
  EXPECT_EQ(r.done_calls, 1);
  EXPECT_EQ(r.last_error, runtime::Code::closed);
  EXPECT_EQ(r.log->size(), 0u);
}

TEST(FaultyFabric, AHeldMessageTheInnerRefusesRunsDoneWithItsError) {
  Rig r("[[rule]]\naction = \"delay\"\ndelay_ms = 10\n");
  r.log->refuse = runtime::Status(runtime::Code::peer_down, "gone");
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());
  ASSERT_TRUE(r.fabric->flush(2000ms).ok());
  EXPECT_EQ(r.done_calls, 1);
  EXPECT_EQ(r.last_error, runtime::Code::peer_down);
  EXPECT_EQ(r.fabric->fault_counters().held_send_failed, 1u);
}

TEST(FaultyFabric, FirstMatchingRuleActsAlone) {
  Rig r(
      "[[rule]]\naction = \"duplicate\"\ntypes = [\"GradSlices\"]\n"
      "[[rule]]\naction = \"drop\"\n");
  ASSERT_TRUE(r.send("n2", grads, bytes16).ok());               // duplicated, not dropped
  ASSERT_TRUE(r.send("n2", actors::apply_type, bytes16).ok());  // dropped
  EXPECT_EQ(r.log->size(), 2u);
  const auto c = r.fabric->fault_counters();
  EXPECT_EQ(c.duplicated, 1u);
  EXPECT_EQ(c.dropped, 1u);
  EXPECT_NE(format_counts(c).find("dropped=1 "), std::string::npos);
}

}  // namespace
}  // namespace troupe::chaos
