// The pieces of the one rule for bad input (actors/dispatch.h, actors/receipts.h): a set of
// senders per round refuses a second copy, an outsider and another round; the dispatcher
// drops what does not decode, what the phase does not take and what is not ours, and the
// drop log counts every drop but logs each reason once.
#include "actors/dispatch.h"

#include <gtest/gtest.h>

#include "actors/protocol.h"

namespace troupe::actors {
namespace {

TEST(Receipts, OneAnswerPerSenderPerRound) {
  Receipts r;
  r.open(3, 7, 3);
  EXPECT_FALSE(r.complete());
  EXPECT_EQ(r.add(3, 7, 1), Receipts::Add::fresh);
  EXPECT_EQ(r.add(3, 7, 1), Receipts::Add::duplicate);
  EXPECT_EQ(r.add(3, 6, 0), Receipts::Add::other_round);
  EXPECT_EQ(r.add(2, 7, 0), Receipts::Add::other_round);
  EXPECT_EQ(r.add(3, 7, 3), Receipts::Add::unknown_sender);
  EXPECT_EQ(r.add(3, 7, -1), Receipts::Add::unknown_sender);
  EXPECT_EQ(r.missing(), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(r.check(3, 7, 0), Receipts::Add::fresh);
  EXPECT_FALSE(r.has(0));  // check notes nothing
  r.add(3, 7, 0);
  r.add(3, 7, 2);
  EXPECT_TRUE(r.complete());
  r.open(4, 7, 2);  // a new round forgets the last
  EXPECT_FALSE(r.has(1));
  EXPECT_EQ(r.add(4, 7, 1), Receipts::Add::fresh);
}

TEST(Receipts, WaivedSendersAreOutsiders) {
  Receipts r;
  r.open(1, 0, 3);
  r.waive(0);
  r.waive(0);  // twice changes nothing
  EXPECT_EQ(r.add(1, 0, 0), Receipts::Add::unknown_sender);
  r.add(1, 0, 1);
  EXPECT_FALSE(r.complete());
  r.add(1, 0, 2);
  EXPECT_TRUE(r.complete());
  Receipts none;
  none.open(1, 0, 1);
  none.waive(0);
  EXPECT_TRUE(none.complete());  // a round that expects nobody
}

runtime::ActorMessage message(uint32_t type, std::string header) {
  runtime::ActorMessage m;
  m.from = "n2/worker.1", m.type = type, m.header = std::move(header);
  return m;
}

TEST(Dispatcher, DecodesThenHandsOver) {
  Dispatcher d(type_name);
  int64_t seen = -1;
  d.on<train::StepDone>(step_done_type, [&](const train::StepDone& sd, runtime::ActorMessage&) {
    seen = sd.step();
    return sd.step() < 0 ? drop(Drop::wrong_step, "negative") : Verdict{};
  });
  train::StepDone sd;
  sd.set_step(4);
  auto m = message(step_done_type, sd.SerializeAsString());
  EXPECT_FALSE(d.dispatch(m));
  EXPECT_EQ(seen, 4);
  sd.set_step(-2);
  m = message(step_done_type, sd.SerializeAsString());
  ASSERT_TRUE(d.dispatch(m));
  EXPECT_EQ(d.dispatch(m)->reason, Drop::wrong_step);

  m = message(step_done_type, "\xff\xff\xff");  // not a protobuf message
  ASSERT_TRUE(d.dispatch(m));
  EXPECT_EQ(d.dispatch(m)->reason, Drop::undecodable);
  m = message(apply_type, "");  // ours, but not taken by this table
  EXPECT_EQ(d.dispatch(m)->reason, Drop::wrong_phase);
  m = message(9999, "");
  EXPECT_EQ(d.dispatch(m)->reason, Drop::unknown_type);
}

TEST(DropLog, CountsEveryDropLogsEachReasonOnce) {
  DropLog log("test", type_name);
  const auto m = message(stats_type, "");
  EXPECT_NE(log.record({Drop::duplicate, "again"}, m), "");
  EXPECT_EQ(log.record({Drop::duplicate, "again"}, m), "");
  EXPECT_NE(log.record({Drop::stale_epoch, ""}, m).find("Stats from n2/worker.1"),
            std::string::npos);
  log.add("duplicate", 3);  // a worker's counts, from its Final
  log.add("malformed", 0);
  EXPECT_EQ(log.count(Drop::duplicate), 2u);
  EXPECT_EQ(log.total(), 6u);
  EXPECT_EQ(log.counts(), (std::map<std::string, uint64_t>{{"duplicate", 5}, {"stale_epoch", 1}}));
  EXPECT_EQ(log.summary(), "duplicate 5, stale_epoch 1");
}

TEST(Protocol, EveryTypeHasAName) {
  for (uint32_t t = step_begin_type; t < train_types_end; ++t) EXPECT_NE(type_name(t), "unknown");
  EXPECT_EQ(type_name(commit_type), "Commit");
  EXPECT_EQ(type_name(runtime::join_type), "Join");
  EXPECT_EQ(type_name(train_types_end), "unknown");
}

}  // namespace
}  // namespace troupe::actors
